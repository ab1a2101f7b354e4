"""Electron-microscope formats read through RosettaSciIO: Gatan, Velox/EMD, FEI TIA and MRC.

:func:`open_microscope` returns the same :class:`~micro_sym.io.base.Image` as the TIFF and Zarr
readers (``micro_sym.io.open_image`` dispatches here by suffix, so ``micro-sym info``/``segment``
and the napari reader need nothing else). What is read, and how:

==================  ================================  =========================================
suffix              format (``rsciio`` plugin)         lazy?
==================  ================================  =========================================
``.dm3 .dm4``       Gatan DigitalMicrograph            yes (memory-mapped, chunked)
``.emd``            Velox (Thermo Fisher) or Berkeley  yes (HDF5 chunks)
                    EMD (NCEM, tomviz)
``.ser .emi``       FEI TIA (``.emi`` opens its        no: rsciio reads a ``.ser`` whole when
                    ``NAME_1.ser``)                    it opens it
``.mrc .rec``       MRC volume (or single image)       yes (memory-mapped, chunked)
``.mrcs .st .ali``  MRC image stack (particles, tilt   yes
                    series, aligned tilt series)
==================  ================================  =========================================

Rules (docs/design.md §1 conventions):

- **One image per file.** Of the file's signals, the first whose last two axes are signal
  (non-navigation) axes in a length unit (or uncalibrated) is taken: spectra, spectrum images,
  diffraction patterns (reciprocal units) and 4D-STEM data are skipped, and so are complex images
  (FFT, DPC) when a real one follows. ``Image.metadata`` says which one was taken: ``signal`` (its
  title), ``signal_index`` and ``signals`` (how many the file holds), ``format`` and a one-line
  ``source`` summary that ``micro-sym info`` prints.
- **Stacks.** 3D data is a volume only when all three axes are lengths (an EMD tomogram in nm), or
  for MRC volumes (``.mrc``/``.rec`` unless the header marks an image stack: ISPG 0 with MZ 1, or an
  FEI extended header). Otherwise the leading axis is a series (time, tilt, focus, particles) and
  the **first frame** is taken, recorded as ``frame`` = 0 and ``frames`` = N in the metadata.
- **Calibration.** Pixel size per axis in array order (``(y, x)``, ``(z, y, x)``) from the axes
  calibration. Units: Å and pm become nm, µm/um/μm are written ``µm`` (as the TIFF reader does);
  other length units are kept. Uncalibrated axes give ``pixel_size = None``. MRC sizes come from the
  header (cell length / sampling, in Å, so an MRC without a cell has no pixel size).
- **Intensities** keep the file's dtype; complex data raises, as does RGB.
- Problems raise :class:`~micro_sym.errors.MicroSymError` with one line: ``PATH: what is wrong``.

>>> img = open_microscope("example_Au_nanoparticle.emd")      # doctest: +SKIP
>>> img.data.shape, img.data.dtype, img.pixel_size, img.unit  # doctest: +SKIP
((2048, 2048), dtype('uint16'), (0.0074984, 0.0074984), 'nm')
"""

from __future__ import annotations

import logging
import math
import struct
import warnings
from pathlib import Path

import numpy as np

from micro_sym.errors import MicroSymError
from micro_sym.io.base import DEFAULT_CHUNKS, Image

# suffix -> (rsciio plugin, name used in messages)
_FORMATS = {
    ".dm3": ("digitalmicrograph", "Gatan DigitalMicrograph"),
    ".dm4": ("digitalmicrograph", "Gatan DigitalMicrograph"),
    ".emd": ("emd", "EMD (Velox/Berkeley)"),
    ".ser": ("tia", "FEI TIA"),
    ".emi": ("tia", "FEI TIA"),
    ".mrc": ("mrc", "MRC"),
    ".rec": ("mrc", "MRC"),
    ".mrcs": ("mrc", "MRC"),
    ".st": ("mrc", "MRC"),
    ".ali": ("mrc", "MRC"),
}
MICROSCOPE_SUFFIXES = tuple(_FORMATS)
MRC_STACK_SUFFIXES = (".mrcs", ".st", ".ali")

# Length units -> (unit written in Image.unit, factor into it). Keys are lower-cased.
_LENGTH_UNITS = {
    "pm": ("nm", 1e-3),
    "å": ("nm", 0.1),  # U+00C5
    "Å": ("nm", 0.1),  # U+212B ANGSTROM SIGN
    "a": ("nm", 0.1),
    "angstrom": ("nm", 0.1),
    "angstroms": ("nm", 0.1),
    "nm": ("nm", 1.0),
    "nanometer": ("nm", 1.0),
    "nanometers": ("nm", 1.0),
    "µm": ("µm", 1.0),  # U+00B5 MICRO SIGN: the spelling images.py and ebsd.py use
    "μm": ("µm", 1.0),  # U+03BC GREEK MU
    "um": ("µm", 1.0),
    "micron": ("µm", 1.0),
    "microns": ("µm", 1.0),
    "mm": ("mm", 1.0),
    "cm": ("cm", 1.0),
    "m": ("m", 1.0),
    "meters": ("m", 1.0),
    "meter": ("m", 1.0),
}
_NM_PER = {"nm": 1.0, "µm": 1e3, "mm": 1e6, "cm": 1e7, "m": 1e9}
_NO_UNIT = {"", "<undefined>", "undefined", "none", "px", "pixel", "pixels"}
_MRC_MODES = {0: np.uint8, 1: np.int16, 2: np.float32, 6: np.uint16, 12: np.float16}
_MRC_COMPLEX_MODES = (3, 4)


def open_microscope(path) -> Image:
    """Open one 2D image or 3D volume from an electron-microscope file, lazily where possible.

    Parameters
    ----------
    path : str or Path
        A ``.dm3``/``.dm4``, ``.emd``, ``.ser``/``.emi``, or MRC file (``.mrc``, ``.rec``,
        ``.mrcs``, ``.st``, ``.ali``).

    Returns
    -------
    Image
        ``data`` a dask array ``(y, x)`` or ``(z, y, x)`` in the file's dtype; ``pixel_size`` per
        spatial axis in ``unit`` (``"nm"``, ``"µm"``, ...) or None when the file has no
        calibration; ``metadata`` names the format, the signal taken and, for a stack, the frame.

    Raises
    ------
    MicroSymError
        The file cannot be parsed (corrupt, truncated), holds no real-valued spatial image
        (spectra only, complex FFT/DPC data, RGB), or its suffix is not one of
        :data:`MICROSCOPE_SUFFIXES`.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _FORMATS:
        raise MicroSymError(f"{path}: not a microscope file (expected one of {', '.join(MICROSCOPE_SUFFIXES)})")
    plugin, fmt = _FORMATS[suffix]
    if not path.is_file():
        raise MicroSymError(f"{path}: not a file")
    mrc = _mrc_header(path) if plugin == "mrc" else None
    with _quiet() as notes:
        signals = _read(path, plugin, fmt, mrc)
    img = _pick(path, signals, fmt, mrc)
    img.metadata["format"] = fmt
    if notes:
        img.metadata["reader_warnings"] = notes
    return img


# ------------------------------------------------------------------------------------- reading


class _quiet:
    """Collect rsciio's log records and Python warnings instead of letting them reach stderr."""

    def __enter__(self):
        self.notes: list[str] = []
        self._logger = logging.getLogger("rsciio")
        self._saved = (self._logger.level, self._logger.propagate, list(self._logger.handlers))
        handler = logging.Handler(logging.WARNING)
        handler.emit = lambda record: self.notes.append(record.getMessage())
        self._logger.handlers = [handler]
        self._logger.propagate = False
        self._logger.setLevel(logging.WARNING)
        self._warnings = warnings.catch_warnings(record=True)
        self._caught = self._warnings.__enter__()
        warnings.simplefilter("always")
        return self.notes

    def __exit__(self, *exc):
        self._warnings.__exit__(*exc)
        self.notes.extend(str(w.message) for w in self._caught)
        level, propagate, handlers = self._saved
        self._logger.setLevel(level)
        self._logger.propagate = propagate
        self._logger.handlers = handlers
        return False


def _read(path: Path, plugin: str, fmt: str, mrc: dict | None) -> list[dict]:
    """rsciio's signal dictionaries for ``path`` (lazy), any failure as one MicroSymError line."""
    import importlib

    try:
        module = importlib.import_module(f"rsciio.{plugin}")
    except ImportError as err:  # pragma: no cover - rosettasciio is a dependency
        raise MicroSymError(f"{path}: reading {fmt} files needs rosettasciio ({err})") from None
    kwargs = {}
    if plugin == "emd":
        kwargs["select_type"] = "images"  # Velox: never parse EDS spectrum streams (huge, slow)
    elif plugin == "mrc":
        # Known shape: ask for processing-sized chunks straight away (a stack: one frame per chunk).
        kwargs.update(endianness=mrc["endian"], metadata_file=None, chunks=mrc["chunks"])
    try:
        signals = module.file_reader(str(path), lazy=True, **kwargs)
        if plugin == "digitalmicrograph":
            signals = _dm_rechunk(module, path, signals)
    except MicroSymError:
        raise
    except Exception as err:
        raise MicroSymError(f"{path}: not a readable {fmt} file ({_describe(err)})") from None
    if plugin == "mrc" and mrc["endian"] == ">":  # rsciio maps big-endian pixels as native: swap them
        for sig in signals or []:
            if sig["data"].dtype.itemsize > 1:
                sig["data"] = sig["data"].map_blocks(np.ndarray.byteswap, dtype=sig["data"].dtype)
    if plugin == "tia" and not signals:
        raise MicroSymError(f"{path}: no data found (expected {path.stem}_1.ser next to the .emi file)")
    return list(signals or [])


def _describe(err: Exception) -> str:
    text = " ".join(str(err).split())
    if len(text) > 200:
        text = text[:197] + "..."
    if isinstance(err, (struct.error, EOFError)) or "unpack requires a buffer" in text:
        return f"truncated or corrupt: {text}" if text else "truncated or corrupt"
    if "Lazy loading of RGBA" in text:
        return "RGB(A) images are not supported; convert to a single grey channel"
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _dm_rechunk(module, path: Path, signals: list[dict]) -> list[dict]:
    """Re-open a large DM image with tile-sized chunks (rsciio's "auto" chunks reach ~128 MiB)."""
    if len(signals) != 1 or not hasattr(signals[0]["data"], "chunks"):
        return signals  # several images of different shapes: keep rsciio's chunks
    data = signals[0]["data"]
    target = _target_chunks(data.shape, _is_volume_axes(signals[0].get("axes") or [], data.ndim))
    if any(max(c) > 2 * t for c, t in zip(data.chunks, target)):
        return module.file_reader(str(path), lazy=True, chunks=target)
    return signals


def _target_chunks(shape, volume: bool) -> tuple:
    nd = len(shape)
    if nd >= 3 and volume:
        spatial = DEFAULT_CHUNKS[3]
        return (1,) * (nd - 3) + tuple(min(c, s) for c, s in zip(spatial, shape[-3:]))
    spatial = DEFAULT_CHUNKS[2]
    return (1,) * (nd - 2) + tuple(min(c, s) for c, s in zip(spatial, shape[-2:]))


# ----------------------------------------------------------------------------- choosing a signal


def _pick(path: Path, signals: list[dict], fmt: str, mrc: dict | None) -> Image:
    """The first real-valued spatial image among ``signals``, as an Image (one frame of a stack)."""
    seen_complex = seen_rgb = False
    for index, sig in enumerate(signals):
        data = sig.get("data")
        if data is None or not hasattr(data, "shape"):
            continue
        axes = _axes_in_order(sig.get("axes") or [], data.ndim)
        keep = [i for i, s in enumerate(data.shape) if s != 1]  # drop singleton axes (squeeze)
        if len(keep) != data.ndim:
            data = data[tuple(slice(None) if s != 1 else 0 for s in data.shape)]
            axes = [axes[i] for i in keep]
        kind = _classify(axes, data.ndim, mrc)
        if kind is None:
            continue
        dtype = np.dtype(data.dtype)
        if dtype.kind == "c":
            seen_complex = True
            continue
        if dtype.fields is not None:
            seen_rgb = True
            continue
        return _to_image(path, sig, data, axes, kind, index, len(signals), mrc)
    if seen_complex:
        raise MicroSymError(f"{path}: complex-valued data (an FFT or DPC image?); expected a real-valued image")
    if seen_rgb:
        raise MicroSymError(f"{path}: RGB(A) images are not supported; convert to a single grey channel")
    if not signals:
        raise MicroSymError(f"{path}: {fmt} file holds no image data")
    raise MicroSymError(
        f"{path}: no 2D image or 3D volume with spatial axes among the file's {len(signals)} signal(s) "
        "(spectra, diffraction or 4D-STEM data are not supported)"
    )


def _axes_in_order(axes: list[dict], ndim: int) -> list[dict]:
    """rsciio axes dicts sorted into array order (``index_in_array`` when given)."""
    axes = [dict(a) for a in axes]
    if len(axes) != ndim:
        return [{} for _ in range(ndim)]
    if all("index_in_array" in a for a in axes):
        axes.sort(key=lambda a: a["index_in_array"])
    return axes


def _classify(axes: list[dict], ndim: int, mrc: dict | None) -> str | None:
    """``"image"``, ``"stack"``, ``"volume"`` or None (not a spatial image)."""
    if ndim not in (2, 3):
        return None
    y, x = axes[-2], axes[-1]
    if y.get("navigate", False) or x.get("navigate", False):
        return None  # e.g. a line scan or spectrum image: the last axis is the signal, not x
    if _length(y.get("units")) is False or _length(x.get("units")) is False:
        return None  # energy, reciprocal space, time...
    if ndim == 2:
        return "image"
    if mrc is not None:
        return "stack" if mrc["stack"] else "volume"
    return "volume" if _is_volume_axes(axes, ndim) else "stack"


def _is_volume_axes(axes: list[dict], ndim: int) -> bool:
    """All of the last three axes carry length units (a calibrated volume, not a series)."""
    if ndim < 3 or len(axes) < 3:
        return False
    return all(_length(a.get("units")) not in (None, False) for a in axes[-3:])


def _length(unit):
    """``(unit, factor)`` for a length unit, None for no unit, False for a non-length unit."""
    if unit is None:
        return None
    text = str(unit).strip()
    if text.lower() in _NO_UNIT:
        return None
    return _LENGTH_UNITS.get(text, _LENGTH_UNITS.get(text.lower(), False))


def _to_image(path, sig, data, axes, kind, index, n_signals, mrc) -> Image:
    meta = sig.get("metadata") or {}
    title = str((meta.get("General") or {}).get("title") or "").strip()
    if not title:  # Velox files without a display name: the detector (HAADF, BF, ...)
        binary = (sig.get("original_metadata") or {}).get("BinaryResult") or {}
        title = str(binary.get("Detector") or "").strip() if isinstance(binary, dict) else ""
    info = {"signal": title or f"signal {index}", "signal_index": index, "signals": n_signals}
    if kind == "stack":
        info.update(frame=0, frames=int(data.shape[0]))
        data, axes = data[0], axes[1:]
    spatial = axes[-data.ndim :]
    if mrc is not None:
        pixel_size, unit = _mrc_pixel_size(mrc, spatial)
    else:
        pixel_size, unit = _pixel_size(spatial)
    parts = [f"signal '{info['signal']}'" + (f" ({index + 1} of {n_signals})" if n_signals > 1 else "")]
    if kind == "stack":
        parts.append(f"frame 1 of a {info['frames']}-frame stack")
    info["source"] = "; ".join(parts)
    return Image(data, path, pixel_size, unit, "yx" if data.ndim == 2 else "zyx", info)


def _pixel_size(axes: list[dict]):
    """Pixel size per axis in one unit (mixed length units go to nm), or (None, None)."""
    found = []
    for a in axes:
        unit = _length(a.get("units"))
        scale = a.get("scale", 1.0)
        try:
            scale = abs(float(scale))
        except (TypeError, ValueError):
            return None, None
        if not unit or not math.isfinite(scale) or scale == 0:
            return None, None
        found.append((scale * unit[1], unit[0]))
    units = {u for _, u in found}
    if len(units) == 1:
        return tuple(s for s, _ in found), units.pop()
    return tuple(s * _NM_PER[u] for s, u in found), "nm"


# ------------------------------------------------------------------------------------------- MRC


def _mrc_header(path: Path) -> dict:
    """Check an MRC header (size, mode, byte order) and derive stack/volume and pixel size."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        raw = fh.read(1024)
    if len(raw) < 1024:
        raise MicroSymError(f"{path}: not a readable MRC file (truncated: {len(raw)} bytes, the header alone is 1024)")
    machst = raw[212:214]
    endian = ">" if machst[:1] == b"\x11" else "<"
    ints = struct.unpack(endian + "10i", raw[:40])
    nx, ny, nz, mode, _, _, _, mx, my, mz = ints
    if not (0 < nx < 2**31 and 0 < ny < 2**31 and 0 < nz < 2**31) and endian == "<":
        endian = ">"  # old files without MACHST: try the other byte order
        nx, ny, nz, mode, _, _, _, mx, my, mz = struct.unpack(endian + "10i", raw[:40])
    if not (0 < nx < 2**31 and 0 < ny < 2**31 and 0 < nz < 2**31):
        raise MicroSymError(f"{path}: not a readable MRC file (header dimensions {nx} x {ny} x {nz})")
    if mode in _MRC_COMPLEX_MODES:
        raise MicroSymError(f"{path}: complex-valued data (MRC mode {mode}); expected a real-valued image")
    if mode not in _MRC_MODES:
        raise MicroSymError(f"{path}: unsupported MRC mode {mode} (supported: {', '.join(map(str, _MRC_MODES))})")
    xlen, ylen, zlen = struct.unpack(endian + "3f", raw[40:52])
    ispg = struct.unpack(endian + "i", raw[88:92])[0]
    nsymbt = struct.unpack(endian + "i", raw[92:96])[0]
    need = 1024 + max(nsymbt, 0) + nx * ny * nz * np.dtype(_MRC_MODES[mode]).itemsize
    if size < need:
        raise MicroSymError(f"{path}: not a readable MRC file (truncated: {size} bytes, the header promises {need})")
    fei = nsymbt == 131072  # FEI extended header: tilt series, pixel size per frame in metres
    stack = nz > 1 and (path.suffix.lower() in MRC_STACK_SUFFIXES or fei or (ispg == 0 and mz <= 1))

    def step(length, m):  # Å per voxel, or None when the header has no cell
        return float(length) / m if m > 0 and length > 0 and math.isfinite(length) else None

    # rsciio chunks the full (nz, ny, nx) array, before it squeezes a single section to 2D.
    chunks = _target_chunks((nz, ny, nx), volume=nz > 1 and not stack)
    return {
        "endian": endian,
        "stack": stack,
        "fei": fei,
        "angstrom": (step(zlen, mz), step(ylen, my), step(xlen, mx)),
        "chunks": chunks,
    }


def _mrc_pixel_size(mrc: dict, spatial: list[dict]):
    """Pixel size in nm from the header's cell (Å); FEI files: rsciio's y/x axes (from metres)."""
    ndim = len(spatial)
    if mrc["fei"]:
        return _pixel_size(spatial) if ndim == 2 else (None, None)
    steps = mrc["angstrom"][-ndim:]
    if any(s is None for s in steps):
        return None, None
    return tuple(s * 0.1 for s in steps), "nm"

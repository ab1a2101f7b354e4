"""Lazy image I/O: TIFF/BigTIFF, Zarr v2/v3 arrays and OME-Zarr images in; OME-Zarr out.

Every reader returns an :class:`Image` whose ``data`` is a dask array backed directly by the file's
chunks (TIFF through tifffile's zarr store), so nothing is read until a chunk is computed. Problems
with the input raise :class:`~micro_sym.errors.MicroSymError` with one line naming file and problem.

>>> img = open_image("sample_data/micrographs/images/sample_000.tif")  # doctest: +SKIP
>>> img.data.shape, img.pixel_size                                      # doctest: +SKIP
((512, 512), (0.02, 0.02))
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import dask.array as da
import numpy as np

from micro_sym.errors import MicroSymError
from micro_sym.io.base import DEFAULT_CHUNKS, SPATIAL_AXES, TIFF_SUFFIXES, Image

#: Largest image opened, in pixels (2**40 ≈ 1.1e12, 2 TB of uint16): a header declaring more is corrupt or
#: crafted, and even building the lazy array of such a shape would exhaust memory.
MAX_PIXELS = 2**40
#: Largest single compressed TIFF strip or tile, decoded (bytes). It is decoded whole whenever any pixel of it
#: is read, and its size comes from the header alone (compressed data says nothing about it).
MAX_TIFF_CHUNK_BYTES = 2**31


def open_image(path, *, array: str | None = None, level: int = 0, chunks=None, channel: int | None = None) -> Image:
    """Open a 2D or 3D image lazily.

    Parameters
    ----------
    path : str or Path
        A ``.tif``/``.tiff`` file, a Zarr array, a Zarr group plus ``array``, or an OME-Zarr image
        (``path/to/array`` inside a group also works), or an electron-microscope file (``.dm3``,
        ``.dm4``, ``.emd``, ``.ser``/``.emi``, MRC; read by :mod:`micro_sym.io.microscope`).
    array : str, optional
        Name of the array inside a Zarr group.
    level : int
        Multiscale level of an OME-Zarr image (0 = full resolution).
    chunks : tuple, optional
        Dask chunking; defaults to tiles of 1024² (2D) or 128³ (3D) aligned with the storage chunks.
    channel : int, optional
        TIFF only: the channel (RGB sample, or ImageJ/OME channel) to read from a colour or multi-channel
        image. Without it such images are refused, since their channels are not a z axis.

    Raises
    ------
    MicroSymError
        Missing or unreadable files, colour/multi-channel images without ``channel``, and headers that
        declare more data than the file can hold (checked before anything is allocated).
    """
    path = Path(path)
    if not path.exists():
        raise MicroSymError(f"{path}: no such file or directory")
    from micro_sym.io.microscope import MICROSCOPE_SUFFIXES, open_microscope

    if channel is not None and (isinstance(channel, bool) or not isinstance(channel, (int, np.integer))):
        raise MicroSymError(f"{path}: channel must be a whole number, got {channel!r}")
    if channel is not None and not _is_tiff(path):
        raise MicroSymError(f"{path}: choosing a channel is supported for TIFF files only")
    if _is_tiff(path):
        img = _open_tiff(path, channel)
    elif path.is_file() and path.suffix.lower() in MICROSCOPE_SUFFIXES:
        img = open_microscope(path)  # .dm3/.dm4, .emd, .ser/.emi, MRC (micro_sym/io/microscope.py)
    elif path.is_dir():
        img = _open_zarr(path, array, level)
    elif path.suffix.lower() == ".zarr" or path.name in ("zarr.json", ".zarray"):
        raise MicroSymError(f"{path}: a Zarr store must be a directory")
    else:
        raise MicroSymError(
            f"{path}: unsupported file type '{path.suffix or path.name}' (expected .tif/.tiff, .zarr, OME-Zarr "
            "or a microscope file: .dm3/.dm4, .emd, .ser/.emi, .mrc/.mrcs/.rec/.st/.ali)"
        )
    img.data = _squeeze_to_spatial(img, path)
    _check_dtype(img.data.dtype, path)
    img.data = _rechunk(img.data, chunks)
    img.axes = SPATIAL_AXES[img.data.ndim]
    if img.pixel_size is not None and len(img.pixel_size) != img.data.ndim:
        img.pixel_size = img.pixel_size[-img.data.ndim :] if len(img.pixel_size) > img.data.ndim else None
    return img


def value_range(img: Image) -> tuple[float, float]:
    """Finite min and max, computed lazily chunk by chunk; rejects all-NaN and constant images."""
    data = img.data
    try:
        if np.issubdtype(data.dtype, np.floating):
            lo, hi, n_finite = da.compute(da.nanmin(data), da.nanmax(data), da.isfinite(data).sum())
        else:
            (lo, hi), n_finite = da.compute(data.min(), data.max()), data.size
    except MicroSymError:
        raise
    except Exception as err:  # a truncated TIFF or a broken chunk surfaces only when read
        raise MicroSymError(f"{img.path}: cannot read image data ({type(err).__name__}: {err})") from None
    if n_finite == 0:
        raise MicroSymError(f"{img.path}: image has no finite values (all NaN or infinite)")
    if lo == hi:
        raise MicroSymError(f"{img.path}: image is constant (every value is {lo}); nothing to segment")
    return float(lo), float(hi)


def missing_chunks(img: Image) -> tuple[int, int] | None:
    """``(missing, total)`` storage chunks of a Zarr-backed image; None for other formats.

    Zarr reads a chunk that is not stored as the array's fill value, so a deleted or never-written
    chunk looks like real data of that value: callers say so instead of segmenting it silently.
    """
    node = img.store
    if node is None or not hasattr(node, "nchunks_initialized"):
        return None
    try:
        total, stored = int(node.nchunks), int(node.nchunks_initialized)
    except Exception:  # a store that cannot list its keys (e.g. some remote stores): nothing to say
        return None
    return total - stored, total


def locate_bad_chunk(img: Image, region, err) -> str:
    """Name the storage chunk behind a failed read of ``region`` (a tuple of slices) by reading its
    chunks one at a time; the message for a one-line error."""
    import itertools

    node = img.store  # storage chunks (dask chunks may merge several); None for TIFF
    chunks = tuple(node.chunks[-img.ndim:]) if node is not None else tuple(c[0] for c in img.data.chunks)
    lead = (0,) * (node.ndim - img.ndim) if node is not None else ()
    bounds = [np.unique(np.r_[np.arange(0, n, c), n]) for n, c in zip(img.data.shape, chunks)]
    ranges = []
    for sl, b in zip(region, bounds):
        i0 = int(np.searchsorted(b, sl.start, side="right") - 1)
        i1 = int(np.searchsorted(b, sl.stop, side="left"))
        ranges.append(range(i0, i1))
    for idx in itertools.product(*ranges):
        part = tuple(slice(int(b[i]), int(b[i + 1])) for b, i in zip(bounds, idx))
        try:
            if node is not None:
                node[lead + part]
            else:
                img.data[part].compute(scheduler="synchronous")
        except Exception as chunk_err:
            where = ", ".join(f"{a} {r.start}:{r.stop}" for a, r in zip("zyx"[-len(part):], part))
            return (f"cannot read chunk {tuple(idx)} ({where}): {type(chunk_err).__name__}: "
                    f"{str(chunk_err).splitlines()[0] if str(chunk_err) else ''}".rstrip(": "))
    return f"cannot read {tuple((r.start, r.stop) for r in region)}: {type(err).__name__}: {err}"


# ------------------------------------------------------------------------------------- readers


def _is_tiff(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in TIFF_SUFFIXES


def _open_tiff(path: Path, channel: int | None = None) -> Image:
    import tifffile
    import zarr

    try:
        # A corrupt header makes tifffile log multi-line warnings; what is wrong is reported below instead.
        with _quiet_tifffile(), tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            shape, axes = series.shape, series.axes
            _check_tiff_sizes(path, tif, series)
            chan_axis, what = _tiff_channel_axis(series)
            pixel_size, unit = _tiff_pixel_size(tif, axes)
        store = tifffile.imread(path, aszarr=True)
        z = zarr.open(store, mode="r")
        if isinstance(z, zarr.Group):  # pyramidal TIFF: level 0
            z = z[sorted(z.array_keys())[0]]
    except MicroSymError:
        raise
    except Exception as err:
        raise MicroSymError(f"{path}: not a readable TIFF ({type(err).__name__}: {err})") from None
    if tuple(z.shape) != tuple(shape):
        raise MicroSymError(f"{path}: inconsistent TIFF (series shape {shape}, data {z.shape})")
    data, axes = da.from_zarr(z), axes.lower()
    if chan_axis is None:
        if channel not in (None, 0):
            raise MicroSymError(f"{path}: channel {channel} requested, but the image has a single grey channel")
        return Image(data, path, pixel_size, unit, axes)
    n = int(shape[chan_axis])
    if channel is None:
        raise MicroSymError(f"{path}: is {what}; micro_sym segments one grey channel: choose one with --channel "
                            f"(0 to {n - 1}) or convert the image to grey")
    if not 0 <= channel < n:
        raise MicroSymError(f"{path}: channel {channel} does not exist ({what} has channels 0 to {n - 1})")
    data = data[(slice(None),) * chan_axis + (int(channel),)]
    return Image(data, path, pixel_size, unit, axes[:chan_axis] + axes[chan_axis + 1 :])


class _quiet_tifffile:
    """Context manager: tifffile's log messages are dropped (they would reach the user as extra lines)."""

    def __enter__(self):
        import logging

        self._log = logging.getLogger("tifffile")
        self._disabled, self._log.disabled = self._log.disabled, True
        return self

    def __exit__(self, *exc):
        self._log.disabled = self._disabled
        return False


def _check_shape(path: Path, shape, dtype) -> None:
    """Refuse a declared shape of more than :data:`MAX_PIXELS` pixels (before any array is built)."""
    n = math.prod(int(s) for s in shape)
    if n > MAX_PIXELS:
        dims = " x ".join(str(int(s)) for s in shape)
        raise MicroSymError(f"{path}: declares an impossible image size {dims} {dtype} ({n:.3g} pixels, more than "
                            "2**40); the header is corrupt")


def _check_tiff_sizes(path: Path, tif, series) -> None:
    """Refuse a TIFF whose header declares more pixel data than the file can hold, before any allocation.

    tifffile takes the image size from the ImageWidth/ImageLength tags alone, so an 8 KB file can declare
    4294967280² pixels (and a tifffile "shaped" description any number of pages); building the lazy array
    of that shape already exhausts memory. Checks, from the header only: the total size
    (:data:`MAX_PIXELS`); the number of strips/tiles listed against the number the size needs;
    uncompressed data against the file size (per page for OME and Micro-Manager files, whose series may
    span several files); compressed strips/tiles against :data:`MAX_TIFF_CHUNK_BYTES` each (their
    decoded size cannot be bounded by the file size).
    """
    dtype = np.dtype(series.dtype)
    _check_shape(path, series.shape, dtype)
    page = series.keyframe
    needed = math.prod(int(n) for n in page.chunked)
    listed = min(len(page.dataoffsets), len(page.databytecounts))
    if listed != needed:
        dims = " x ".join(str(int(s)) for s in page.shape)
        raise MicroSymError(f"{path}: corrupt TIFF header: an image of {dims} pixels needs {needed} strips/tiles, "
                            f"the header lists {listed}")
    multifile = bool(getattr(tif, "is_ome", False) or getattr(tif, "is_mmstack", False))
    shape = page.shape if multifile else series.shape
    declared = math.prod(int(s) for s in shape) * dtype.itemsize
    size = path.stat().st_size
    if int(page.compression) == 1 and declared > size:  # 1: uncompressed
        dims = " x ".join(str(int(s)) for s in shape)
        raise MicroSymError(f"{path}: truncated or corrupt TIFF: the header declares {dims} {dtype} pixels "
                            f"({declared:,} bytes, uncompressed) but the file holds {size:,} bytes")
    chunk = math.prod(int(n) for n in page.chunks) * dtype.itemsize
    if int(page.compression) != 1 and chunk > MAX_TIFF_CHUNK_BYTES:
        dims = " x ".join(str(int(n)) for n in page.chunks)
        raise MicroSymError(f"{path}: corrupt TIFF header: one compressed strip/tile of {dims} pixels would "
                            f"decode to {chunk / 2**30:.3g} GiB (more than {MAX_TIFF_CHUNK_BYTES / 2**30:g} GiB)")


def _tiff_channel_axis(series):
    """Index of the colour/channel axis of a TIFF series (``None`` for grey images) and what it is.

    From the metadata, not the shape, so a 3-slice grey z-stack stays a volume: photometric RGB/YCbCr or
    several samples per pixel (planar or interleaved; axis ``S``), or an ImageJ/OME channel axis ``C``
    longer than one.
    """
    page = series.keyframe
    axes = series.axes.upper()
    if "S" in axes and series.shape[axes.index("S")] > 1:  # SamplesPerPixel > 1
        i = axes.index("S")
        layout = "planar" if int(page.planarconfig) == 2 else "interleaved"
        kind = {2: "an RGB image", 6: "a YCbCr colour image"}.get(int(page.photometric), "a multi-sample image")
        return i, f"{kind} ({series.shape[i]} samples per pixel, {layout})"
    if "C" in axes and series.shape[axes.index("C")] > 1:
        i = axes.index("C")
        return i, f"a multi-channel image ({series.shape[i]} channels)"
    return None, None


def _tiff_pixel_size(tif, axes: str):
    """Pixel size from OME-XML, then ImageJ metadata, then resolution tags (or None)."""
    try:
        if tif.is_ome:
            import xml.etree.ElementTree as ET

            root = ET.fromstring(tif.ome_metadata)
            pix = next(el for el in root.iter() if el.tag.endswith("Pixels"))
            sizes = [pix.get(f"PhysicalSize{a}") for a in "ZYX"]
            unit = pix.get("PhysicalSizeXUnit", "µm")
            spatial = [float(s) for s in sizes if s is not None]
            if spatial:
                return tuple(spatial), unit
        page = tif.pages[0]
        res = page.tags.get("XResolution")
        if res is None:
            return None, None
        num, den = res.value
        if num == 0:
            return None, None
        x = den / num
        ij = tif.imagej_metadata or {}
        unit = ij.get("unit")
        if not unit:  # TIFF resolution units: 2 = inch, 3 = centimetre, 1 = none (pixel size unknown)
            tag = page.tags.get("ResolutionUnit")
            unit = {2: "inch", 3: "cm"}.get(int(tag.value) if tag is not None else 1)
            if unit is None:
                return None, None
        if unit in ("\\u00B5m", "micron", "um"):
            unit = "µm"
        if "z" in axes.lower() and "spacing" in ij:
            return (float(ij["spacing"]), x, x), unit
        return (x, x), unit
    except Exception:
        return None, None


def _open_zarr(path: Path, array: str | None, level: int) -> Image:
    import zarr

    try:
        node = zarr.open(str(path), mode="r")
    except Exception as err:
        raise MicroSymError(f"{path}: directory is not a Zarr array or group ({type(err).__name__})") from None
    if isinstance(node, zarr.Array):
        if array is not None:
            raise MicroSymError(f"{path}: is a Zarr array, it holds no array named '{array}'")
        _check_shape(path, node.shape, node.dtype)
        return Image(da.from_zarr(node), path, store=node)
    attrs = dict(node.attrs)
    ome = attrs.get("ome", attrs)  # NGFF 0.5 nests under "ome"; 0.4 keeps keys at the top
    multiscales = ome.get("multiscales")
    if array is None and multiscales:
        ms = multiscales[0]
        datasets = ms["datasets"]
        if not 0 <= level < len(datasets):
            raise MicroSymError(f"{path}: OME-Zarr has {len(datasets)} levels, level {level} does not exist")
        array = datasets[level]["path"]
    if array is None:
        names = sorted(node.array_keys())
        raise MicroSymError(f"{path}: is a Zarr group; name one of its arrays ({', '.join(names) or 'none'})")
    if array not in node:
        raise MicroSymError(f"{path}: Zarr group has no array named '{array}'")
    arr = node[array]
    if not isinstance(arr, zarr.Array):
        raise MicroSymError(f"{path}: '{array}' is a group, not an array")
    _check_shape(path, arr.shape, arr.dtype)
    pixel_size, unit, axes = _ngff_scale(multiscales, array)
    return Image(da.from_zarr(arr), path, pixel_size, unit, axes, {"array": array}, store=arr)


def _ngff_scale(multiscales, array: str):
    """Spatial pixel size, unit and axes of ``array`` from NGFF multiscales metadata."""
    for ms in multiscales or []:
        for ds in ms.get("datasets", []):
            if ds.get("path") != array:
                continue
            axes = ms.get("axes", [])
            names = "".join(a["name"] if isinstance(a, dict) else a for a in axes)
            scale = next((t["scale"] for t in ds.get("coordinateTransformations", []) if t["type"] == "scale"), None)
            spatial = [i for i, a in enumerate(axes) if isinstance(a, dict) and a.get("type") == "space"]
            if scale is None or not spatial:
                return None, None, names
            unit = short_unit(axes[spatial[-1]].get("unit"))  # NGFF names ("micrometer") as micro_sym writes units
            return tuple(float(scale[i]) for i in spatial), unit, names
    return None, None, ""


def _squeeze_to_spatial(img: Image, path: Path) -> da.Array:
    """Drop singleton non-spatial axes (t, c, s, ...) so a 2D/3D image remains."""
    data = img.data
    axes = img.axes if len(img.axes) == data.ndim else ""
    while data.ndim > 3 or (axes and data.ndim > 2 and axes[0] not in "z"):
        if data.shape[0] != 1:
            break
        data, axes = data[0], axes[1:]
    if data.ndim == 3 and data.shape[-1] in (3, 4) and axes.endswith("s"):
        raise MicroSymError(f"{path}: RGB(A) images are not supported; convert to a single grey channel")
    if data.ndim not in (2, 3):
        raise MicroSymError(f"{path}: {data.ndim}D data of shape {tuple(data.shape)}; expected a 2D image or a 3D volume")
    img.axes = axes
    return data


def _check_dtype(dtype, path: Path):
    if dtype == bool or not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        raise MicroSymError(f"{path}: unsupported data type {dtype}; expected real integer or floating-point pixels")


def _rechunk(data: da.Array, chunks) -> da.Array:
    if chunks is None:
        target = DEFAULT_CHUNKS[data.ndim]
        # Keep storage chunks when they are already a sensible size; merge strips/small tiles.
        if all(c[0] >= t // 2 or c[0] == s for c, t, s in zip(data.chunks, target, data.shape)):
            return data
        chunks = tuple(min(t, s) for t, s in zip(target, data.shape))
    return data.rechunk(chunks)


# ------------------------------------------------------------------------------------- writers


#: Maps a micro_sym output stores as NGFF label images (``labels/NAME``) rather than as images.
LABEL_MAPS = ("grains",)
#: Length units as NGFF names them (UDUNITS-2), from the spellings micro_sym meets in file metadata.
NGFF_UNITS = {"nm": "nanometer", "µm": "micrometer", "\u03bcm": "micrometer", "um": "micrometer",
              "micron": "micrometer", "microns": "micrometer", "mm": "millimeter", "cm": "centimeter", "m": "meter",
              "pm": "picometer", "\u00c5": "angstrom", "\u212b": "angstrom", "angstrom": "angstrom",
              "angstroms": "angstrom"}
#: The short symbols micro_sym writes in tables and messages, from NGFF unit names.
SHORT_UNITS = {"nanometer": "nm", "micrometer": "µm", "millimeter": "mm", "centimeter": "cm", "meter": "m",
               "picometer": "pm", "angstrom": "\u00c5"}


def ngff_unit(unit: str | None) -> str | None:
    """The NGFF name of a length unit (``"nm"`` -> ``"nanometer"``, ``"µm"`` -> ``"micrometer"``,
    ``"Å"`` -> ``"angstrom"``); None for pixels or no unit; other names unchanged."""
    if unit is None:
        return None
    text = str(unit).strip()
    if text.lower() in ("", "px", "pixel", "pixels", "none"):
        return None
    return NGFF_UNITS.get(text, NGFF_UNITS.get(text.lower(), text))


def short_unit(unit: str | None) -> str | None:
    """The inverse of :func:`ngff_unit` for the units micro_sym knows (``"micrometer"`` -> ``"µm"``)."""
    return SHORT_UNITS.get(unit, unit) if unit is not None else None


def ngff_scale(attrs: dict, ndim: int | None = None) -> tuple[tuple | None, str | None]:
    """Pixel size and short unit (``nm``, ``µm``) of an OME-Zarr group's level 0, from its NGFF multiscales
    (the ``orientation`` image's where there are several; with ``ndim``, only one with that many spatial
    axes); ``(None, None)`` without one."""
    multiscales = (attrs.get("ome") or attrs).get("multiscales") or []
    for ms in sorted(multiscales, key=lambda m: m.get("name") != "orientation"):
        axes = ms.get("axes", [])
        spatial = [i for i, a in enumerate(axes) if isinstance(a, dict) and a.get("type") == "space"]
        for t in (ms.get("datasets") or [{}])[0].get("coordinateTransformations", []):
            if t.get("type") == "scale" and spatial and (ndim is None or len(spatial) == ndim):
                return tuple(float(t["scale"][i]) for i in spatial), short_unit(axes[spatial[-1]].get("unit"))
    return None, None


def map_path(name: str, labels=LABEL_MAPS) -> str:
    """Where an output group keeps map ``name``'s full-resolution array (docs/design.md §1.7).

    Every map is an NGFF image group of its own holding level ``0``; label maps (``grains``) are NGFF
    label images under ``labels/``:

    >>> map_path("boundary"), map_path("grains")
    ('boundary/0', 'labels/grains/0')
    """
    return f"labels/{name}/0" if name in labels else f"{name}/0"


def output_array(group, name: str):
    """Map ``name`` (``boundary``, ``orientation``, ``grains``, ...) of an output group as a zarr array.

    ``group`` is a ``zarr.Group`` or a path. Reads the NGFF layout (:func:`map_path`; the level-0
    dataset named by the image's own metadata) and the flat layout of outputs written before it
    (arrays ``NAME`` at the top of the group). Raises ``KeyError`` if the group holds no such map.
    """
    import zarr

    if not isinstance(group, zarr.Group):
        group = zarr.open_group(str(group), mode="r")
    for where in (f"labels/{name}", name):
        try:
            node = group[where]
        except KeyError:
            continue
        if isinstance(node, zarr.Array):
            return node
        ms = (node.attrs.get("ome") or {}).get("multiscales") or node.attrs.get("multiscales") or []
        path = ms[0]["datasets"][0]["path"] if ms and ms[0].get("datasets") else "0"
        try:
            arr = node[path]
        except KeyError:
            continue
        if isinstance(arr, zarr.Array):
            return arr
    raise KeyError(f"no map '{name}' in {group.store_path}")


def _axes(ndim: int, has_channels: bool, unit) -> list:
    unit = ngff_unit(unit)
    return ([{"name": "c", "type": "channel"}] if has_channels else []) + [
        {"name": a, "type": "space", **({"unit": unit} if unit else {})} for a in SPATIAL_AXES[ndim]]


def _multiscale(name: str, path: str, ndim: int, has_channels: bool, scale, unit) -> dict:
    return {"name": name, "axes": _axes(ndim, has_channels, unit),
            "datasets": [{"path": path, "coordinateTransformations": [
                {"type": "scale", "scale": ([1.0] if has_channels else []) + [float(s) for s in scale]}]}]}


def _check_maps(specs: dict, ndim: int, pixel_size, labels) -> None:
    """What :func:`create_ngff_maps` needs, checked before anything is written."""
    if pixel_size is not None and len(pixel_size) != ndim:
        raise MicroSymError(f"pixel size {tuple(pixel_size)} does not match a {ndim}D image")
    if all(n in labels for n in specs):
        raise MicroSymError(f"an OME-Zarr output needs at least one image besides the labels ({', '.join(specs)})")
    for name, kw in specs.items():
        shape, dtype = tuple(kw["shape"]), np.dtype(kw["dtype"])
        if name in labels and (len(shape) != ndim or not np.issubdtype(dtype, np.integer)):
            raise MicroSymError(f"label map '{name}' must be an integer {ndim}D array, got {dtype} {shape}")


def create_ngff_maps(root, specs: dict, ndim: int, *, pixel_size=None, unit: str | None = None,
                     labels=LABEL_MAPS) -> dict:
    """Lay out maps in an output group as NGFF 0.5 (docs/design.md §1.7); returns ``{name: zarr.Array}``.

    ``root`` is a zarr v3 group; ``specs`` maps names to ``zarr.Group.create_array`` keywords (``shape``,
    ``dtype``, ``chunks``, ...), spatial axes last, at most one leading channel axis. Each array is
    created at :func:`map_path` unless it exists (a resumed run keeps its data), with
    ``dimension_names``; every map's group gets its image (or image-label) metadata, ``labels`` the
    list of label images, and ``root`` one multiscale image per non-label map, in ``specs`` order (the
    first is what a viewer shows for the whole group). Other root attributes are kept.
    """
    _check_maps(specs, ndim, pixel_size, labels)
    scale = list(pixel_size) if pixel_size is not None else [1.0] * ndim
    arrays, root_ms, label_names = {}, [], []
    for name, kw in specs.items():
        shape = tuple(kw["shape"])
        has_channels = len(shape) == ndim + 1
        is_label = name in labels
        group = root.require_group("labels").require_group(name) if is_label else root.require_group(name)
        if "0" in group:
            arr = group["0"]
        else:
            dims = (("c",) if has_channels else ()) + tuple(SPATIAL_AXES[ndim])
            arr = group.create_array("0", dimension_names=dims, **kw)
        arrays[name] = arr
        ome = {"version": "0.5", "multiscales": [_multiscale(name, "0", ndim, has_channels, scale, unit)]}
        if is_label:
            # Label 0 (boundary / unassigned) transparent; the image it labels is the output group.
            ome["image-label"] = {"colors": [{"label-value": 0, "rgba": [0, 0, 0, 0]}], "source": {"image": "../../"}}
            label_names.append(name)
        else:
            root_ms.append(_multiscale(name, f"{name}/0", ndim, has_channels, scale, unit))
        group.attrs["ome"] = ome
    if label_names:
        root["labels"].attrs["ome"] = {"version": "0.5", "labels": label_names}
    root.attrs["ome"] = {"version": "0.5", "multiscales": root_ms}
    return arrays


def write_ome_zarr(
    path,
    arrays: dict,
    *,
    pixel_size=None,
    unit: str | None = None,
    chunks=None,
    overwrite: bool = False,
    labels=LABEL_MAPS,
) -> Path:
    """Write named maps into one OME-Zarr (NGFF 0.5, zarr v3) group, chunk by chunk.

    ``arrays`` maps names to numpy or dask arrays with spatial axes last (``(y, x)``/``(z, y, x)``),
    optionally with one leading channel axis (e.g. ``orientation`` as ``(4, z, y, x)``). All arrays
    must share the spatial shape. Each map becomes an NGFF image group ``NAME/`` (level ``0``), the
    names in ``labels`` (integer maps, default ``grains``) NGFF label images ``labels/NAME/``; the
    group itself is an NGFF image listing the image maps, the first of them its default
    (:func:`create_ngff_maps`, docs/design.md §1.7). Read a map back with :func:`output_array`.
    ``unit`` may be a short symbol (``nm``, ``µm``): it is stored under its NGFF name. Returns the
    group's path.
    """
    import zarr

    path = Path(path)
    if path.exists() and not overwrite:
        raise MicroSymError(f"{path}: already exists (pass overwrite=True to replace it)")
    # The lowest-rank array fixes the spatial shape; others may add one leading channel axis.
    ndim = min(len(arr.shape) for arr in arrays.values())
    if ndim not in (2, 3):
        raise MicroSymError(f"{path}: can only write 2D or 3D images, got {ndim}D")
    spatial = tuple(min(arrays.values(), key=lambda a: len(a.shape)).shape)
    for name, arr in arrays.items():
        shape = tuple(arr.shape)
        if shape[-ndim:] != spatial or len(shape) > ndim + 1:
            raise MicroSymError(f"{path}: array '{name}' has shape {shape}, not matching spatial shape {spatial}")
    spatial_chunks = tuple(chunks or tuple(min(c, s) for c, s in zip(DEFAULT_CHUNKS[ndim], spatial)))
    specs = {}
    for name, arr in arrays.items():
        lead = (arr.shape[0],) if len(arr.shape) == ndim + 1 else ()
        specs[name] = {"shape": tuple(arr.shape), "chunks": lead + spatial_chunks, "dtype": arr.dtype,
                       "fill_value": _fill(arr.dtype)}
    try:
        _check_maps(specs, ndim, pixel_size, labels)
    except MicroSymError as err:
        raise MicroSymError(f"{path}: {err}") from None
    try:
        root = zarr.open_group(str(path), mode="w" if overwrite else "w-", zarr_format=3)
    except Exception as err:
        raise MicroSymError(f"{path}: cannot create output ({type(err).__name__}: {err})") from None
    created = create_ngff_maps(root, specs, ndim, pixel_size=pixel_size, unit=unit, labels=labels)
    for name, arr in arrays.items():
        z = created[name]
        if isinstance(arr, da.Array):
            da.store(arr.rechunk(z.chunks), z, lock=False)
        else:
            z[...] = np.asarray(arr)
    return path


def scratch_folder(out: Path, produced, overwrite: bool) -> Path:
    """A new scratch folder beside (or in) ``out`` for a command's outputs, once they may be written.

    ``out`` must be a folder or not exist yet; an existing output named in ``produced`` is an error
    unless ``overwrite``. Write into the folder, then :func:`move_into_place`.
    """
    import tempfile

    if out.exists() and not out.is_dir():
        raise MicroSymError(f"{out}: exists and is not a directory")
    clash = [p for p in produced if (out / p).exists()]
    if clash and not overwrite:
        raise MicroSymError(f"{out / clash[0]}: already exists (pass --overwrite to replace)")
    parent = out if out.exists() else out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=parent))
        # mkdtemp makes the folder private (0700); the folder may become the output itself, which
        # should get the permissions any new folder gets (the user's umask).
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)
        return tmp
    except OSError as err:
        raise MicroSymError(f"{out}: cannot create output ({err.strerror})") from None


def move_into_place(tmp: Path, out: Path, produced) -> bool:
    """Move finished outputs from a scratch folder into ``out``; True when ``tmp`` itself became ``out``.

    Commands write everything into ``tmp`` first so a failure leaves nothing half-written in ``out``.
    """
    import shutil

    if not out.exists():
        tmp.rename(out)
        return True
    for name in produced:
        target = out / name
        if target.exists():
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        (tmp / name).rename(target)
    return False


def _fill(dtype):
    return float("nan") if np.issubdtype(dtype, np.floating) else 0


def read_json(path) -> dict:
    """A JSON file as a dict, with a one-line error for unreadable or malformed files."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise MicroSymError(f"{path}: no such file") from None
    except (OSError, ValueError) as err:
        raise MicroSymError(f"{path}: not valid JSON ({err})") from None

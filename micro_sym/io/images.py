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
from pathlib import Path

import dask.array as da
import numpy as np

from micro_sym.errors import MicroSymError
from micro_sym.io.base import DEFAULT_CHUNKS, SPATIAL_AXES, TIFF_SUFFIXES, Image

def open_image(path, *, array: str | None = None, level: int = 0, chunks=None) -> Image:
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
    """
    path = Path(path)
    if not path.exists():
        raise MicroSymError(f"{path}: no such file or directory")
    from micro_sym.io.microscope import MICROSCOPE_SUFFIXES, open_microscope

    if _is_tiff(path):
        img = _open_tiff(path)
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


# ------------------------------------------------------------------------------------- readers


def _is_tiff(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in TIFF_SUFFIXES


def _open_tiff(path: Path) -> Image:
    import tifffile
    import zarr

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            shape, axes = series.shape, series.axes
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
    return Image(da.from_zarr(z), path, pixel_size, unit, axes.lower())


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
            unit = axes[spatial[-1]].get("unit")
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


def write_ome_zarr(
    path,
    arrays: dict,
    *,
    pixel_size=None,
    unit: str | None = None,
    chunks=None,
    overwrite: bool = False,
) -> Path:
    """Write named arrays into one OME-Zarr (NGFF 0.5, zarr v3) image group, chunk by chunk.

    ``arrays`` maps names to numpy or dask arrays with spatial axes last (``(y, x)``/``(z, y, x)``),
    optionally with one leading channel axis (e.g. ``orientation`` as ``(4, z, y, x)``). All arrays
    must share the spatial shape. Returns the group's path.
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
    try:
        root = zarr.open_group(str(path), mode="w" if overwrite else "w-", zarr_format=3)
    except Exception as err:
        raise MicroSymError(f"{path}: cannot create output ({type(err).__name__}: {err})") from None
    scale = list(pixel_size) if pixel_size is not None else [1.0] * ndim
    multiscales = []
    for name, arr in arrays.items():
        has_channels = len(arr.shape) == ndim + 1
        spatial_chunks = tuple(chunks or tuple(min(c, s) for c, s in zip(DEFAULT_CHUNKS[ndim], spatial)))
        arr_chunks = ((arr.shape[0],) if has_channels else ()) + spatial_chunks
        z = root.create_array(name, shape=arr.shape, chunks=arr_chunks, dtype=arr.dtype, fill_value=_fill(arr.dtype))
        if isinstance(arr, da.Array):
            da.store(arr.rechunk(arr_chunks), z, lock=False)
        else:
            z[...] = np.asarray(arr)
        axes = ([{"name": "c", "type": "channel"}] if has_channels else []) + [
            {"name": a, "type": "space", **({"unit": unit} if unit else {})} for a in SPATIAL_AXES[ndim]
        ]
        multiscales.append(
            {
                "name": name,
                "axes": axes,
                "datasets": [
                    {"path": name, "coordinateTransformations": [{"type": "scale", "scale": ([1.0] if has_channels else []) + scale}]}
                ],
            }
        )
    root.attrs["ome"] = {"version": "0.5", "multiscales": multiscales}
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
        return Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=parent))
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

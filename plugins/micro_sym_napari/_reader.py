"""napari reader: TIFF, Zarr / OME-Zarr (lazy, multiscale), micro_sym segmentation outputs, EBSD maps.

What a path opens as
--------------------
- ``OUT/NAME.zarr`` written by ``micro-sym segment`` (OME-Zarr maps ``boundary``, ``orientation`` and
  the label image ``labels/grains``, docs/design.md §1.7; or the flat arrays of older outputs): the
  input image (when the run manifest still points at it), the orientation map coloured like the
  widget's output, boundary probability, grains (``features`` from ``OUT/NAME_grains.csv``) and grain
  boundaries -- everything lazy, read chunk by chunk;
- any other OME-Zarr image: one image layer per multiscale image, as a pyramid when it has levels,
  and one labels layer per NGFF label image under ``labels/``;
- a plain Zarr array or a ``.tif``/``.tiff``: an image layer backed by the file's chunks, scaled by
  the pixel size found in its metadata; a TIFF inside a labeled dataset's ``grains/``,
  ``boundary/`` or ``orientation/`` folder (docs/design.md §1) opens as labels or as a coloured orientation map;
- ``.ctf``, ``.cpr``/``.crc``, ``.ang`` EBSD maps: IPF-Z colour map, phases and the band contrast /
  image quality channel when the file has one;
- electron-microscope files (Gatan ``.dm3/.dm4``, Velox ``.emd``, FEI ``.ser``, MRC): an image
  layer scaled by the file's calibration (:mod:`micro_sym.io.microscope`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

EBSD_SUFFIXES = (".ctf", ".cpr", ".crc", ".ang")
TIFF_SUFFIXES = (".tif", ".tiff")


def napari_get_reader(path):
    """npe2 reader hook: a function reading ``path`` (a path or a list of paths), or None if not ours."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if not paths or not all(_kind(Path(p)) for p in paths):
        return None
    return read_paths


def _kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(EBSD_SUFFIXES):
        return "ebsd"
    if name.endswith(TIFF_SUFFIXES):
        return "tiff"
    from micro_sym.io.microscope import MICROSCOPE_SUFFIXES

    if name.endswith(MICROSCOPE_SUFFIXES):
        return "tiff"  # read like a TIFF: open_image gives the lazy image and its pixel size
    if path.is_dir() and ((path / "zarr.json").is_file() or (path / ".zgroup").is_file() or (path / ".zarray").is_file()):
        return "zarr"
    return None


def read_paths(path) -> list[tuple]:
    """Read one or more paths into napari layer-data tuples (errors raise MicroSymError with one line)."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    layers = []
    for p in paths:
        p = Path(p)
        kind = _kind(p)
        if kind == "ebsd":
            layers += read_ebsd_layers(p)
        elif kind == "tiff":
            layers += read_tiff_layers(p)
        elif kind == "zarr":
            layers += read_zarr_layers(p)
    return layers


# ------------------------------------------------------------------------------------------ TIFF


def read_tiff_layers(path: Path) -> list[tuple]:
    from micro_sym.io import open_image

    img = open_image(path)
    kwargs = {"name": img.name, "metadata": {"path": str(path), "unit": img.unit, "pixel_size": img.pixel_size}}
    if img.pixel_size is not None:
        from micro_sym_napari._core import layer_units

        kwargs["scale"] = tuple(img.pixel_size)
        units = layer_units(img.unit, len(img.pixel_size))
        if units is not None:
            kwargs["units"] = units
    folder = path.parent.name
    # Ground truth of a labeled dataset (docs/design.md §1) sits in sibling folders named by content.
    if folder in ("grains", "boundary") and np.issubdtype(img.data.dtype, np.integer):
        return [(img.data, {**kwargs, "name": f"{img.name} {folder} (ground truth)"}, "labels")]
    if folder == "orientation":
        lattice = _dataset_lattice(path.parent.parent)
        return _orientation_layers(img.data, lattice, f"{img.name} orientation (ground truth)", kwargs)
    return [(img.data, kwargs, "image")]


def _dataset_lattice(root: Path) -> str:
    try:
        return json.loads((root / "dataset.json").read_text()).get("lattice", "square")
    except (OSError, ValueError):
        return "square"


def _orientation_layers(data, symmetry: str, name: str, kwargs: dict) -> list[tuple]:
    from micro_sym.orientation.symmetry import SQUARE, lattice
    from micro_sym_napari._core import _napari_cyclic, orientation_3d_layer

    kwargs = {k: v for k, v in kwargs.items() if k != "name"}
    if data.ndim == 4 or symmetry == "cubic":  # (4, z, y, x) quaternions
        return [orientation_3d_layer(data, name, kwargs)]
    period = lattice(symmetry, ndim=2, default=SQUARE).period
    return [(data, {**kwargs, "name": name, "colormap": _napari_cyclic(),
                    "contrast_limits": (0.0, period), "interpolation2d": "nearest"}, "image")]


# ------------------------------------------------------------------------------------------ Zarr


def read_zarr_layers(path: Path) -> list[tuple]:
    import dask.array as da
    import zarr

    from micro_sym.errors import MicroSymError

    try:
        node = zarr.open(str(path), mode="r")
    except Exception as err:
        raise MicroSymError(f"{path}: not a readable Zarr store ({type(err).__name__})") from None
    if isinstance(node, zarr.Array):
        return [(da.from_zarr(node), {"name": _stem(path)}, "image")]
    if _is_segmentation(node):
        return read_segmentation(path)
    layers = [(*_multiscale_layer(node, ms, ms.get("name") or _stem(path)), "image") for ms in _multiscales(node)]
    labels = node.get("labels") if layers else None
    if isinstance(labels, zarr.Group):  # NGFF label images of the image
        for name in _ome(labels).get("labels") or []:
            group = labels.get(name)
            if isinstance(group, zarr.Group) and _multiscales(group):
                data, kwargs = _multiscale_layer(group, _multiscales(group)[0], f"{_stem(path)} {name}")
                kwargs.pop("channel_axis", None)
                layers.append((data, kwargs, "labels"))
    if not layers:
        names = sorted(node.array_keys())
        if not names:
            raise MicroSymError(f"{path}: Zarr group holds no arrays and no OME-Zarr image")
        layers = [(da.from_zarr(node[n]), {"name": f"{_stem(path)} {n}"}, "image") for n in names]
    return layers


def _ome(group) -> dict:
    attrs = dict(group.attrs)
    return attrs.get("ome", attrs)  # NGFF 0.5 nests under "ome"; 0.4 keeps keys at the top


def _multiscales(group) -> list:
    return _ome(group).get("multiscales") or []


def _multiscale_layer(group, ms: dict, name: str):
    """Layer data (a pyramid when there are levels) and keywords of one NGFF multiscale image."""
    import dask.array as da

    levels = [da.from_zarr(group[d["path"]]) for d in ms["datasets"]]
    axes = [a["name"] if isinstance(a, dict) else a for a in ms.get("axes", [])]
    kwargs = {"name": name}
    scale = _level_scale(ms, 0)
    if "c" in axes:
        kwargs["channel_axis"] = axes.index("c")
        scale = [s for a, s in zip(axes, scale or []) if a != "c"] if scale else None
    if scale:
        kwargs["scale"] = tuple(scale)
    if len(levels) > 1:
        kwargs["multiscale"] = True
    return (levels if len(levels) > 1 else levels[0]), kwargs


def _is_segmentation(group) -> bool:
    """A ``micro-sym segment`` output: boundary, orientation and grains maps, in either layout."""
    from micro_sym.io.images import output_array

    try:
        for name in ("grains", "orientation", "boundary"):
            output_array(group, name)
    except (KeyError, IndexError, TypeError):
        return False
    return True


def _map_scale(root, name: str):
    """Spatial scale and unit (micro_sym's short symbol, e.g. ``µm``) of map ``name`` of an output."""
    from micro_sym.io.images import short_unit

    candidates = []
    for where in (f"labels/{name}", name):
        node = root.get(where)
        if node is not None and hasattr(node, "group_keys"):
            candidates += _multiscales(node)[:1]
    candidates += [ms for ms in _multiscales(root) if ms.get("name") == name]  # flat layout of older outputs
    for ms in candidates:
        axes = ms.get("axes", [])
        scale = _level_scale(ms, 0)
        space = [i for i, a in enumerate(axes) if not isinstance(a, dict) or a.get("type") != "channel"]
        unit = next((a.get("unit") for a in axes if isinstance(a, dict) and a.get("unit")), None)
        return ([scale[i] for i in space] if scale else None), short_unit(unit)
    return None, None


def _level_scale(ms: dict, level: int):
    ds = ms["datasets"][level]
    for t in ds.get("coordinateTransformations", []):
        if t.get("type") == "scale":
            return [float(s) for s in t["scale"]]
    return None


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".ome.zarr", ".zarr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def read_segmentation(path: Path) -> list[tuple]:
    """Layers of a ``micro-sym segment`` output, all lazy: input image, orientation, boundary, grains."""
    import dask.array as da
    import zarr

    from micro_sym_napari._core import (boundary_layer, features_frame, key_layers, layer_units, phase_keys,
                                        phase_layers)

    from micro_sym.io.images import output_array

    root = zarr.open_group(str(path), mode="r")
    name = _stem(path)
    attrs = dict(root.attrs)
    run = attrs.get("micro_sym", {})
    grains = da.from_zarr(output_array(root, "grains"))
    boundary = da.from_zarr(output_array(root, "boundary"))
    orientation = da.from_zarr(output_array(root, "orientation"))
    nd = grains.ndim
    scale, unit = _map_scale(root, "grains")
    common = {"scale": tuple(scale)} if scale else {}
    units = layer_units(unit, nd) if scale else None
    if units is not None:
        common["units"] = units
    meta = {"micro_sym": {"path": str(path), "unit": unit or "px", **run}}
    layers = []
    image = _input_image(path)
    if image is not None:
        layers.append((image.data, {**common, "name": f"{name} image", "metadata": meta}, "image"))
    symmetry = "cubic" if nd == 3 else _symmetry_2d(run)
    phases = run.get("phases") or []
    if nd == 2 and len(phases) > 1:  # a fused map: each phase's grains in its own angle period (and key)
        layers += phase_layers(orientation, grains, phases, name, {**common, "metadata": meta}, da.where)
    else:
        layers += _orientation_layers(orientation, symmetry, f"{name} orientation", {**common, "metadata": meta})
    layers.append((boundary, {**common, "name": f"{name} P(boundary)", "colormap": "magma",
                              "contrast_limits": (0.0, 1.0), "visible": False, "metadata": meta}, "image"))
    kw = {**common, "name": f"{name} grains", "opacity": 0.45, "visible": False, "metadata": meta}
    csv = path.with_name(f"{name}_grains.csv")
    if csv.is_file():
        kw["features"] = features_frame(read_grain_csv(csv))
    layers.append((grains, kw, "labels"))
    from micro_sym_napari._core import _lazy_boundary_mask

    edges = _lazy_boundary_mask(grains)
    layers.append(boundary_layer(edges, f"{name} grain boundaries", {**common, "metadata": meta}))
    sc = tuple(scale) if scale else (1.0,) * nd
    if nd == 2 and len(phases) > 1:
        layers += phase_keys(phases, grains.shape, scale=sc, translate=(0.0,) * nd, units=units)
    else:
        layers += key_layers(symmetry, grains.shape, scale=sc, translate=(0.0,) * nd, units=units)
    return layers


def read_grain_csv(path: Path) -> dict:
    """A grain CSV (header names carry units, ``area_nm2``) as ``{column: array}``."""
    import pandas as pd

    df = pd.read_csv(path)
    return {c: df[c].to_numpy() for c in df.columns}


def _input_image(path: Path):
    """The segmented input, found through the run manifest next to the output (None if gone)."""
    from micro_sym.io import open_image

    manifest = path.parent / f".{_stem(path)}.run" / "manifest.json"
    try:
        info = json.loads(manifest.read_text())
        src = info["input"]
        img = open_image(src["path"], array=src.get("array"), level=src.get("level", 0))
    except Exception:  # no manifest, moved input: the segmentation alone is still worth showing
        return None
    return img


def _symmetry_2d(run: dict) -> str:
    """Lattice of a 2D output: stored by newer engines; else the model file's ``k``; else square."""
    from micro_sym.orientation.symmetry import SQUARE, lattice

    stored = lattice(str(run.get("symmetry")), ndim=2, default=None)
    if stored is not None:
        return stored.name
    model = (run.get("model") or {}).get("name")
    if model:
        try:
            import torch

            from micro_sym.models import resolve_model_path

            blob = torch.load(resolve_model_path(model), map_location="cpu", weights_only=True)
            return lattice(int(blob["config"].get("k", 4)), ndim=2, default=SQUARE).name
        except Exception:
            pass
    return "square"


# ------------------------------------------------------------------------------------------ EBSD


def read_ebsd_layers(path: Path) -> list[tuple]:
    from micro_sym.io.ebsd import read_ebsd
    from micro_sym_napari._core import ipf_rgb, key_layers, layer_units

    m = read_ebsd(path)
    name = path.stem
    scale = tuple(float(s) for s in m.step)
    units = layer_units(m.unit, len(scale))
    meta = {"micro_sym": {"path": str(path), "unit": m.unit, "phases": m.phases}}
    layers = []
    for key in ("band_contrast", "bc", "iq", "IQ", "BC"):
        if key in m.extra:
            layers.append((np.asarray(m.extra[key], np.float32), {"name": f"{name} {key}", "scale": scale,
                                                                  "colormap": "gray", "metadata": meta,
                                                                  **({"units": units} if units else {})}, "image"))
            break
    cubic_ids = [i + 1 for i, p in enumerate(m.phases) if p.get("symmetry") == "cubic"]
    q = np.where(np.isin(m.phase, cubic_ids)[None], m.quaternions, np.nan)
    rgb = np.moveaxis(ipf_rgb(q), 0, -1)
    rgba = np.concatenate([rgb, np.isfinite(q[0])[..., None].astype(np.float32)], -1)
    common = {"scale": scale, "metadata": meta, **({"units": units} if units else {})}
    layers.append((rgba, {**common, "name": f"{name} IPF-Z (cubic phases)", "rgb": True}, "image"))
    layers.append((m.phase.astype(np.int32), {**common, "name": f"{name} phases", "opacity": 0.4, "visible": False},
                   "labels"))
    layers += key_layers("cubic", m.shape, scale=scale, translate=(0.0, 0.0), units=units)
    return layers

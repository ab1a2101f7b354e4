"""Layer glue of the napari widgets, free of Qt so it can be tested headlessly.

The computation is micro_sym's (:mod:`micro_sym.inference.interactive`: :func:`iter_segment` yields
progress per tile and returns a :class:`SegmentResult`); what is here turns napari inputs and results
into each other:

- :func:`check_image` turns bad layer choices (4D, RGB, a Labels layer, no pixels) into one-line
  :class:`~micro_sym.errors.MicroSymError` messages *before* anything runs;
- :func:`result_layers` turns a result into napari layer-data tuples (grains with their statistics as
  ``features``, boundaries, orientation with its colour key); nothing is added to a viewer here, so a
  cancelled or failed run can never leave a partial layer behind.
"""

from __future__ import annotations

import math

import numpy as np

from micro_sym.errors import MicroSymError
from micro_sym.inference.interactive import SegmentResult, check_array
from micro_sym.orientation.symmetry import lattice as find_lattice


# ------------------------------------------------------------------------------------ validation


def check_image(data, *, name: str = "image", layer_type: str = "image", rgb: bool = False,
                multiscale: bool = False) -> None:
    """Refuse layers that cannot be segmented, with a message that says what to choose instead.

    Parameters
    ----------
    data : array-like
        The layer's data (level 0 for a multiscale layer).
    name : str
        Layer name, quoted in messages.
    layer_type : str
        napari layer type name (``"image"``, ``"labels"``, ...).
    rgb : bool
        The layer is displayed as RGB(A).

    Raises
    ------
    MicroSymError
    """
    if layer_type != "image":
        raise MicroSymError(f"layer '{name}': is a {layer_type.capitalize()} layer; choose the Image layer of the "
                            f"micrograph or volume to segment")
    if rgb:
        raise MicroSymError(f"layer '{name}': is an RGB(A) image {tuple(data.shape)}; micro_sym segments "
                            f"single-channel intensity images (convert it to greyscale first)")
    check_array(data, f"layer '{name}'")


# ------------------------------------------------------------------------------------ colouring
# Colours and keys are micro_sym's (:mod:`micro_sym.grains.colours`), shared with the CLI's PNG figures so
# that napari and the figures agree; imported inside the functions, as they load matplotlib.


def angle_key_labels(period: float, size: int = 161) -> tuple[np.ndarray, list[str]]:
    """Positions ``(n, 2)`` (row, col in key pixels) and texts of the ticks of the angle key
    (:func:`micro_sym.grains.colours.angle_key`): 0, period/2 and period (= 0 again) on the first
    quarter/sixth of the wheel, where they read in order."""
    c = (size - 1) / 2
    rows, texts = [], []
    for t, text in ((0.0, "0°"), (period / 2, f"{period / 2:g}°"), (period, f"{period:g}° ≡ 0°")):
        r = 1.2 * c
        rows.append((c - r * math.sin(math.radians(t)), c + r * math.cos(math.radians(t))))
        texts.append(text)
    return np.asarray(rows), texts


def ipf_key_labels(size: int = 161) -> tuple[np.ndarray, list[str]]:
    """Corner positions (row, col in key pixels) and names of the :func:`micro_sym.grains.colours.ipf_key` triangle."""
    from micro_sym.grains.colours import IPF_KEY_EXTENT, ipf_key_corners

    xmax, ymax = IPF_KEY_EXTENT
    pos, texts = [], []
    for name, px, py in ipf_key_corners():
        pos.append(((ymax - py) / ymax * (size - 1) + 0.09 * size * (1 if name != "111" else -1),
                    px / xmax * (size - 1)))
        texts.append(f"[{name}]")
    return np.asarray(pos), texts


def ipf_rgb(quaternions, direction=(0.0, 0.0, 1.0)):
    """IPF colours ``(3, *spatial)`` float32 in [0, 1] of cubic quaternions ``(4, *spatial)``; lazy (dask) in, lazy out.

    Undefined orientations (non-finite quaternions) are black.
    """
    from micro_sym.orientation import ipf_colour_cubic

    def colour(q):
        rgb = ipf_colour_cubic(np.moveaxis(np.asarray(q, np.float64), 0, -1), direction)
        bad = ~np.all(np.isfinite(q), axis=0)
        out = np.moveaxis(rgb, -1, 0).astype(np.float32)
        out[:, bad] = 0.0  # black, not white: white is a valid IPF colour
        return out

    try:
        import dask.array as da

        if isinstance(quaternions, da.Array):
            q = quaternions.rechunk({0: 4})
            return q.map_blocks(colour, dtype=np.float32)
    except ImportError:
        pass
    return colour(np.asarray(quaternions))


def ipf_rgb_image(quaternions, direction=(0.0, 0.0, 1.0)):
    """IPF colours as one RGB image ``(*spatial, 3)`` uint8 of cubic quaternions ``(4, *spatial)``; lazy stays lazy.

    The layout napari shows with ``rgb=True``: one layer holds the colour of the key, where three
    additive channel layers would mix with whatever lies below them.
    """
    rgb = ipf_rgb(quaternions, direction)
    try:
        import dask.array as da

        if isinstance(rgb, da.Array):
            return da.moveaxis((rgb * 255.0 + 0.5).astype(np.uint8), 0, -1)
    except ImportError:
        pass
    return np.ascontiguousarray(np.moveaxis((rgb * 255.0 + 0.5).astype(np.uint8), 0, -1))


def orientation_3d_layer(quaternions, name: str, kwargs: dict) -> tuple:
    """The IPF-Z layer of a ``(4, z, y, x)`` quaternion map: one opaque RGB image ``NAME (IPF-Z)``.

    Opaque, so the grey volume under it does not tint the key's colours; rendered ``translucent``
    at full opacity, so 3D view shows the colours of the voxels on the volume's faces (``mip``, the
    default, takes the maximum of each channel along the ray and washes the colours towards white).
    """
    return (ipf_rgb_image(quaternions), {**kwargs, "name": f"{name} (IPF-Z)", "rgb": True, "blending": "opaque",
                                         "rendering": "translucent", "interpolation2d": "nearest",
                                         "interpolation3d": "nearest"}, "image")


def layer_units(unit: str | None, ndim: int) -> tuple | None:
    """napari ``units`` of a layer whose pixel size is in ``unit``; None for pixels or a unit napari cannot read."""
    if not unit or unit == "px":
        return None
    import pint

    try:
        pint.get_application_registry().Unit(unit)
    except (pint.errors.UndefinedUnitError, ValueError, TypeError, AttributeError):
        return None
    return (unit,) * ndim


def grain_headers(columns, unit: str | None) -> list[str]:
    """Table headers with units (``area_nm2``, ``ecd_nm``, ``gos_deg``), as the grain CSV writes them.

    Names that already carry a unit (a table read back from a CSV) or are not grain-table columns stay as they are.
    """
    from micro_sym.grains import table as grain_table

    names = list(columns)
    try:
        ndim, orientation = grain_table.table_kind({c: None for c in names})
    except MicroSymError:
        return names
    docs = {c.name: c for c in grain_table.columns(ndim, orientation)}
    return [grain_table.header(docs[c], unit) if c in docs else c for c in names]


def boundary_mask(grains) -> np.ndarray:
    """uint8 mask of grain-boundary pixels: label 0, or a +axis neighbour in another grain (one-sided,
    so boundaries are one pixel wide; :func:`micro_sym.grains.boundaries.find_boundaries`, ``mode="one_sided"``)."""
    from micro_sym.grains.boundaries import find_boundaries

    return find_boundaries(grains, mode="one_sided").astype(np.uint8)


def _lazy_boundary_mask(grains):
    """:func:`boundary_mask` of a Zarr/dask label map, chunk by chunk (a one-pixel overlap is enough)."""
    import dask.array as da

    lab = grains if isinstance(grains, da.Array) else da.from_zarr(grains)
    return lab.map_overlap(boundary_mask, depth=1, boundary="none", dtype=np.uint8)


# -------------------------------------------------------------------------------------- layers


def features_frame(table: dict):
    """The per-grain table as a pandas DataFrame with napari's ``index`` column (= grain id), so the
    Labels layer shows a grain's statistics under the cursor and widgets can look rows up by id."""
    import pandas as pd

    df = pd.DataFrame({k: np.asarray(v) for k, v in table.items()})
    df.insert(0, "index", df["grain"].to_numpy() if "grain" in df else np.arange(1, len(df) + 1))
    return df


def result_layers(result: SegmentResult, name: str, *, scale=None, translate=None) -> list[tuple]:
    """napari layer-data tuples ``(data, kwargs, layer_type)`` for a result, bottom to top.

    Layers: ``NAME orientation`` (2D: angle with the cyclic colormap, contrast limits = the symmetry
    period; 3D: ``NAME orientation (IPF-Z)``, one opaque RGB image, :func:`orientation_3d_layer`),
    ``NAME P(boundary)`` (hidden), ``NAME grains`` (Labels, ``features`` = per-grain statistics),
    ``NAME grain boundaries`` (yellow one-pixel lines) and the colour key of the orientation map, placed
    to the right of the image. Layers carry the result's length unit (napari ``units``) where it has one.
    """
    nd = result.ndim
    grains = result.grains
    edges = boundary_mask(grains) if isinstance(grains, np.ndarray) else _lazy_boundary_mask(grains)
    scale = tuple(scale) if scale is not None else (1.0,) * nd
    translate = tuple(translate) if translate is not None else (0.0,) * nd
    common = {"scale": scale, "translate": translate}
    units = layer_units(result.unit, nd)
    if units is not None:
        common["units"] = units
    meta = {"micro_sym": {"method": result.method, "symmetry": result.symmetry, "unit": result.unit or "px",
                          "pixel_size": result.pixel_size, "seconds": round(result.seconds, 2), **result.info}}
    layers = []
    phases = result.info.get("phases") or []
    if nd == 2 and len(phases) > 1:  # a fused map: each phase's grains in its own angle period
        layers += phase_layers(result.orientation, result.grains, phases, name, {**common, "metadata": meta}, np.where)
    elif nd == 2:
        layers.append((result.orientation, {**common, "name": f"{name} orientation",
                                            "colormap": _napari_cyclic(), "contrast_limits": (0.0, result.period),
                                            "interpolation2d": "nearest", "metadata": meta}, "image"))
    else:
        ori = result.orientation
        if not isinstance(ori, np.ndarray):  # a disk-backed result stays lazy
            import dask.array as da

            ori = da.from_zarr(ori)
        layers.append(orientation_3d_layer(ori, f"{name} orientation", {**common, "metadata": meta}))
    layers.append((result.boundary, {**common, "name": f"{name} P(boundary)", "colormap": "magma",
                                     "contrast_limits": (0.0, 1.0), "visible": False, "metadata": meta}, "image"))
    layers.append((result.grains, {**common, "name": f"{name} grains", "features": features_frame(result.table),
                                   "opacity": 0.45, "visible": False, "metadata": meta}, "labels"))
    layers.append(boundary_layer(edges, f"{name} grain boundaries", {**common, "metadata": meta}))
    if nd == 2 and len(phases) > 1:
        layers += phase_keys(phases, result.grains.shape, scale=scale, translate=translate, units=units)
    else:
        layers.extend(key_layers(result.symmetry, result.grains.shape, scale=scale, translate=translate, units=units))
    return layers


def phase_layers(orientation, grains, phases: list, name: str, kwargs: dict, where) -> list[tuple]:
    """A 2D map of several phases (``phases``: the output's records, each with its ``grains = [first, last]``):
    one orientation layer per phase, its grains' angles in its own period, NaN elsewhere. ``where``:
    ``numpy.where`` or ``dask.array.where`` (a lazy output stays lazy)."""
    layers = []
    for p in phases:
        lo, hi = p["grains"]
        mine = where((grains >= lo) & (grains <= hi), orientation, np.float32(np.nan))
        layers.append((mine, {**kwargs, "name": f"{name} orientation ({p['name']})", "colormap": _napari_cyclic(),
                              "contrast_limits": (0.0, find_lattice(p["symmetry"]).period),
                              "interpolation2d": "nearest"}, "image"))
    return layers


def phase_keys(phases: list, shape, *, scale, translate, units=None) -> list[tuple]:
    """A colour key per phase (:func:`key_layers`), one below the other."""
    return [layer for row, p in enumerate(phases)
            for layer in key_layers(p["symmetry"], shape, scale=scale, translate=translate, units=units,
                                    phase=p["name"], row=row)]


def boundary_layer(edges, name: str, kwargs: dict) -> tuple:
    """The one-pixel boundary mask (:func:`boundary_mask`) as a yellow Labels layer.

    A one-pixel mask rather than ``contour=1`` on the grains: napari does not draw contours in 3D view.
    Depth-tested (``translucent`` blending), so in 3D only the boundaries on the visible faces of the
    opaque orientation volume show, not every boundary surface inside it.
    """
    return (edges, {**kwargs, "name": name, "colormap": _boundary_colormap(), "opacity": 0.9,
                    "blending": "translucent"}, "labels")


def key_layers(symmetry: str, shape, *, scale, translate, units=None, phase: str | None = None,
               row: int = 0) -> list[tuple]:
    """The orientation colour key as an RGBA image plus text labels, to the right of an image of ``shape``.

    A legend drawn on the canvas (not only in a dock widget) appears in screenshots and exported
    figures, and it scales with the image so it stays readable at any zoom. Both layers are 2D, so a
    volume shows them at every z slice and, in 3D view, together in one plane. ``units`` are the
    image's napari units (the key takes the last two), so the viewer sees one unit across layers.
    ``phase``, ``row``: a map of several phases has a key per phase, named after it, the ``row``-th
    below the first.
    """
    h, w = shape[-2], shape[-1]
    size = int(max(64, min(h, w) * 0.4))
    sy, sx = scale[-2], scale[-1]
    # Key pixels have the image's pixel size: margin of 1/10 of the key, top-aligned with the image.
    off_y, off_x = translate[-2] + row * 1.9 * size * sy, translate[-1] + (w + size * 0.25) * sx
    key_scale = (sy, sx)
    from micro_sym.grains.colours import angle_key, ipf_key

    lat = find_lattice(symmetry, ndim=2, default=None)
    if lat is not None:
        period = lat.period
        rgba, (pos, texts) = angle_key(period, size), angle_key_labels(period, size)
        title = f"lattice angle θ (mod {period:g}°)"
        pad = 0.3 * size  # the key's tick labels sit outside the wheel
        off_y += pad * sy
        off_x += pad * sx
    else:
        rgba, (pos, texts) = ipf_key(size), ipf_key_labels(size)
        title = "IPF-Z key (cubic)"
    key_translate = (off_y, off_x)
    # Title under the key: text has a fixed screen size, and above the wheel it would hit the top tick.
    # Under the triangle it keeps clear of the corner labels also in a tilted 3D view, where the key's
    # plane is foreshortened but the text is not.
    title_pos = np.array([[(1.25 if lat is not None else 1.6) * size, (size - 1) / 2]])
    points = np.concatenate([pos, title_pos]) * np.array(key_scale) + np.array(key_translate)
    texts = list(texts) + [title if phase is None else f"{phase}: {title}"]
    extra = {"units": tuple(units)[-2:]} if units is not None else {}
    named = "orientation colour key" + (f" ({phase})" if phase else "")
    key = (rgba, {"name": named, "rgb": True, "scale": key_scale, "translate": key_translate,
                  "interpolation2d": "linear", **extra}, "image")
    font = 11
    labels = (points, {"name": f"{named} labels", "size": 0, "text": {"string": "{label}", "color": "white",
                                                                                   "size": font, "anchor": "center"},
                       "features": {"label": texts}, "face_color": "transparent", "border_width": 0, **extra},
              "points")
    return [key, labels]


def _napari_cyclic():
    from napari.utils.colormaps import Colormap

    from micro_sym.grains.colours import cyclic_colors

    return Colormap(cyclic_colors(256), name="twilight (cyclic)")


def _boundary_colormap():
    from napari.utils.colormaps import DirectLabelColormap

    # Yellow: the twilight colormap runs from white through blue/red to near-black, so neither black nor
    # white lines would show on every grain; yellow is absent from it and stands out on all of them.
    return DirectLabelColormap(color_dict={0: "transparent", 1: "#ffe119", None: "transparent"})

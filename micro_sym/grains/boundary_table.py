"""The grain boundary table: one row per pair of touching grains (``NAME_boundaries.csv``).

What MTEX calls grain boundary segments and DREAM.3D a feature-face table: for every two grains that
share at least one pixel edge (2D) or voxel face (3D), how much boundary they share and the
misorientation across it, and for cubic quaternion maps whether it is a Σ3 (twin) boundary.

All boundaries are computed at once from the face-neighbour pairs of the label map (one ``np.unique``
over a combined pair key, ``np.bincount`` for sums and a sort for medians), with no Python loop over
grains or boundaries, so maps of ~10^7 points take seconds.

Next to ``NAME_boundaries.csv`` a sidecar ``NAME_boundaries.json`` documents every column (header,
unit, meaning), in the style of the grain table's (:mod:`micro_sym.grains.table`).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from micro_sym.errors import MicroSymError
from micro_sym.grains import table as table_mod
from micro_sym.grains.reconstruct import (
    _shift_slices,
    neighbour_offsets,
    orientation_kind,
)
from micro_sym.grains.stats import (
    SIGMA3_BRANDON_DEG,
    _column_text,
    _pixel_size,
    boundary_misorientations,
    sigma3_deviation,
)

Column = table_mod.Column

_HEAD = (
    Column("grain_a", "", "id of the first grain of the pair (the smaller id; ids as in the grain table)"),
    Column("grain_b", "", "id of the second grain of the pair (grain_b > grain_a)"),
    Column("n_faces", "", "number of face-neighbour {point} pairs with one {point} in each grain (a {point} "
                          "of grain_a next to one of grain_b along an array axis)"),
)
_SIZE = {
    2: Column("length", "L", "boundary length: the pixel edges shared by the two grains, each the pixel size "
                             "along the edge (staircase length)"),
    3: Column("area", "L2", "boundary area: the voxel faces shared by the two grains, each the product of the "
                            "voxel sizes along the face"),
}
_MISORIENTATION = Column(
    "misorientation", "deg",
    "median over the boundary's faces of the symmetry-aware misorientation between the two {points} of each face "
    "(faces with an undefined orientation left out; empty if all are)")
_SIGMA3 = (
    Column("sigma3_deviation", "deg",
           "median over the boundary's faces of the deviation of the face misorientation from the Sigma3 twin, "
           "60 deg about <111> (minimised over cubic symmetry)"),
    Column("sigma3", "", f"1 if sigma3_deviation_deg <= {SIGMA3_BRANDON_DEG:.2f} deg (Brandon criterion for "
                         "Sigma3, 15 deg / sqrt(3)): a twin boundary, else 0 (also 0 where "
                         "sigma3_deviation_deg is empty)"),
)


def boundary_columns(ndim: int, sigma3: bool) -> list[Column]:
    """The documented columns, in CSV order, of a ``ndim``-D boundary table (``sigma3``: cubic quaternions)."""
    if ndim not in _SIZE:
        raise MicroSymError(f"boundary table: expected a 2D or 3D map, got {ndim}D")
    group = (*_HEAD, _SIZE[ndim], _MISORIENTATION, *(_SIGMA3 if sigma3 else ()))
    words = table_mod._WORDS[ndim]
    return [Column(c.name, c.unit, c.meaning.format(**words)) for c in group]


# ------------------------------------------------------------------------------------- table


def boundary_table(labels, orientation, *, symmetry=None, pixel_size=None, unit: str | None = None) -> dict:
    """One row per pair of touching grains, as a dict of equal-length numpy arrays.

    Parameters
    ----------
    labels : ndarray of int, (y, x) or (z, y, x)
        Grain ids (0 = not a grain). Pairs with a 0 on either side are ignored, so grains separated by
        an unassigned band do not share a boundary here (the grain table's ``n_neighbours`` does count
        across narrow bands).
    orientation : ndarray
        The orientation map: 2D angles ``(y, x)`` or quaternions ``(4, ...)``.
    symmetry : str, optional
        As in :func:`~micro_sym.grains.reconstruct_grains`.
    pixel_size : float or sequence, optional
        Pixel size per spatial axis (``(y, x)`` / ``(z, y, x)``), in ``unit``. Default 1 px.
    unit : str, optional
        Length unit of ``pixel_size`` (default ``"px"``); the table holds plain values, the unit goes
        into the CSV headers (:func:`write_boundary_csv`).

    Returns
    -------
    dict of ndarray
        Rows sorted by ``(grain_a, grain_b)``; columns :func:`boundary_columns`:
        ``grain_a < grain_b``, ``n_faces``, ``length`` (2D) or ``area`` (3D), ``misorientation``
        (degrees) and, for cubic quaternion maps, ``sigma3_deviation`` (degrees) and ``sigma3`` (bool).
        Plain names, as in the grain table; the CSV headers add the unit (``misorientation_deg``,
        ``sigma3_deviation_deg``, ``length_um``, ``area_um2``).

    Notes
    -----
    A face between neighbours along axis ``i`` is as long (2D) / large (3D) as the pixel sizes of the
    *other* axes: with pixel size ``(dy, dx)`` a boundary between vertical neighbours (rows ``r`` and
    ``r + 1``) runs horizontally and each of its edges is ``dx`` long.

    ``misorientation`` is the median of the per-face misorientations rather than the
    misorientation of the two grains' mean orientations: it describes the boundary itself (the
    points on either side of it, which can differ from the grain means in deformed grains, as MTEX's
    ``gB.misorientation`` does), and unlike the mean it ignores the few misindexed or noisy points a
    boundary usually has. The Σ3 deviation is the median of the per-face deviations for the same
    reason; ``sigma3`` applies the Brandon criterion (15°/√3 ≈ 8.66°) to it, as
    :func:`~micro_sym.grains.stats.map_summary` does per face for its Σ3 fraction.
    """
    lab = np.asarray(labels)
    nd = lab.ndim
    if nd not in (2, 3):
        raise MicroSymError(f"labels: expected a 2D or 3D label map, got shape {lab.shape}")
    orient = np.asarray(orientation)
    kind = orientation_kind(orient.shape, symmetry)
    spatial = orient.shape[1:] if kind.channel_axis else orient.shape
    if spatial != lab.shape:
        raise MicroSymError(f"orientation: shape {orient.shape} does not match labels {lab.shape}")
    ps = _pixel_size(pixel_size, nd)
    with_sigma3 = kind.kind == "quat" and kind.symmetry == "cubic"
    n = int(lab.max()) if lab.size else 0
    base = np.int64(n + 1)  # key = a * (n + 1) + b is unique per ordered pair a < b

    # Geometry from the labels alone: every face counts, whether or not its orientations are defined.
    keys, sizes = [], []
    for off in neighbour_offsets(nd, 1):
        axis = off.index(1)
        face = float(np.prod([ps[k] for k in range(nd) if k != axis]))  # edge length / face area
        lo, hi = _shift_slices(lab.shape, off)
        a, b = lab[lo], lab[hi]
        sel = (a != b) & (a > 0) & (b > 0)
        a, b = a[sel].astype(np.int64), b[sel].astype(np.int64)
        keys.append(np.minimum(a, b) * base + np.maximum(a, b))
        sizes.append(np.full(len(a), face))
    keys = np.concatenate(keys)
    sizes = np.concatenate(sizes)
    pair_keys, inverse = np.unique(keys, return_inverse=True)
    m = len(pair_keys)
    table = {
        "grain_a": pair_keys // base,
        "grain_b": pair_keys % base,
        "n_faces": np.bincount(inverse, minlength=m).astype(np.int64),
        "length" if nd == 2 else "area": np.bincount(inverse, sizes, minlength=m),
    }
    del keys, sizes, inverse

    # Misorientations of the faces whose two orientations are defined (NaN ones are dropped there).
    mis, pairs, dq = boundary_misorientations(lab, orient, symmetry=symmetry)
    pairs = pairs.astype(np.int64)
    face_rows = np.searchsorted(pair_keys, pairs.min(axis=1) * base + pairs.max(axis=1))
    table["misorientation"] = _group_median(face_rows, mis, m)
    if with_sigma3:
        # Σ3 is its own inverse up to cubic symmetry, so a* ⊗ b and b* ⊗ a deviate equally: the
        # order of the two points of a face does not matter.
        dev = sigma3_deviation(dq) if len(dq) else np.zeros(0)
        table["sigma3_deviation"] = _group_median(face_rows, dev, m)
        with np.errstate(invalid="ignore"):
            table["sigma3"] = table["sigma3_deviation"] <= SIGMA3_BRANDON_DEG
    return table


def _group_median(group, values, n_groups: int) -> np.ndarray:
    """Median of ``values`` per ``group`` id in ``0..n_groups-1`` (NaN for a group without values).

    One sort by (group, value); each group's median is then the middle element (or the mean of the
    two middle ones) of its contiguous run, found from the group counts.
    """
    out = np.full(n_groups, np.nan)
    if len(values) == 0:
        return out
    order = np.lexsort((values, group))
    v = np.asarray(values, np.float64)[order]
    counts = np.bincount(group, minlength=n_groups)
    starts = np.cumsum(counts) - counts
    has = counts > 0
    s, c = starts[has], counts[has]
    out[has] = 0.5 * (v[s + (c - 1) // 2] + v[s + c // 2])
    return out


# ------------------------------------------------------------------------------------ writer


def describe_boundaries(table: dict, unit: str | None = "px", *, pixel_size=None, symmetry: str | None = None,
                        command: str | None = None, csv_name: str | None = None) -> dict:
    """The sidecar document of a boundary table (JSON-ready): every CSV column's header, unit and meaning,
    plus the pixel size, symmetry, Σ3 rule and command that produced it."""
    ndim = 2 if "length" in table else 3
    cols = boundary_columns(ndim, "sigma3" in table)
    u = table_mod.ascii_unit(unit)
    words = table_mod._WORDS[ndim]
    size = "length" if ndim == 2 else "area"
    conventions = {
        "header": f"each header is the quantity plus its unit as a suffix: _{u} a length in {unit or 'px'}, _{u}2 an "
                  f"area in {unit or 'px'}^2, _deg degrees; no suffix: an id, a count or a flag"
                  + (f" (px: the {words['point']} edge length)" if (unit or "px") == "px" else ""),
        "rows": "one row per pair of grains that share at least one face-neighbour pair of "
                f"{words['points']}, sorted by (grain_a, grain_b); {words['points']} of label 0 (no grain) are "
                "ignored, so grains separated by an unassigned band have no row",
        "faces": f"a face between neighbours along one array axis has the {words['point']} sizes of the other "
                 f"axes as its {size}",
        "misorientation": "median over the boundary's faces of the per-face misorientation (robust to the few "
                          "noisy or misindexed points along a boundary; describes the boundary itself, not the "
                          "grains' mean orientations)",
        "empty_cells": "no value: no face of the boundary has both orientations defined",
    }
    if "sigma3" in table:
        conventions["sigma3"] = (f"Sigma3 (twin) boundary: median deviation from 60 deg about <111> at most "
                                 f"{SIGMA3_BRANDON_DEG:.4f} deg (Brandon criterion, 15 deg / sqrt(3))")
    return {
        "table": "micro_sym grain boundary table",
        "csv": csv_name,
        "command": command,
        "dimensions": ndim,
        "n_boundaries": len(np.asarray(table["grain_a"])),
        "pixel_size": [float(p) for p in _pixel_size(pixel_size, ndim)],
        "unit": unit or "px",
        "symmetry": symmetry,
        "sigma3_tolerance_deg": SIGMA3_BRANDON_DEG if "sigma3" in table else None,
        "conventions": conventions,
        "columns": [{"name": table_mod.header(c, unit), "quantity": c.name,
                     "unit": table_mod.doc_unit(c, unit, ndim), "meaning": c.meaning} for c in cols],
    }


def write_boundary_csv(path, table: dict, unit: str | None = "px", *, pixel_size=None, symmetry: str | None = None,
                       command: str | None = None, sidecar: bool = True) -> Path:
    """Write a :func:`boundary_table` as CSV, headers carrying their unit (``length_um``, ``area_um2``,
    ``misorientation_deg``), plus its sidecar ``NAME_boundaries.json`` (:func:`describe_boundaries`).

    Parameters
    ----------
    path : str or Path
        Usually ``NAME_boundaries.csv``.
    table : dict of array_like
        From :func:`boundary_table` (plain column names).
    unit : str
        Length unit of the table (``"px"`` without a pixel size).
    pixel_size, symmetry, command
        Recorded in the sidecar.
    sidecar : bool
        Also write the sidecar JSON (default).
    """
    path = Path(path)
    ndim = 2 if "length" in table else 3
    cols = boundary_columns(ndim, "sigma3" in table)
    if sidecar:
        doc = describe_boundaries(table, unit, pixel_size=pixel_size, symmetry=symmetry, command=command,
                                  csv_name=path.name)
        table_mod.write_sidecar(path, doc)
    # Flags as 0/1, like the grain table's touches_border.
    text = [_column_text(np.asarray(table[c.name]).astype(np.int8) if c.name == "sigma3" else table[c.name])
            for c in cols]
    try:
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow([table_mod.header(c, unit) for c in cols])
            w.writerows(zip(*text))
    except OSError as err:
        raise MicroSymError(f"{path}: cannot write the boundary table ({err.strerror or err})") from None
    return path

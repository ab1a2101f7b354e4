"""Per-grain and per-map statistics (docs/design.md §3), CSV/JSON writers and the KAM map.

All per-grain quantities are computed for all grains at once with ``np.bincount`` over the label
map (no per-grain Python loop over points), so 256³ volumes are handled in seconds.

Units: lengths in the pixel-size unit (``unit``, e.g. µm), areas in unit², volumes in unit³.
Without a pixel size, ``pixel_size=1`` and ``unit="px"``. Coordinates (centroids) are measured from
the centre of the first pixel along the array axes: ``x`` = column, ``y`` = row (downwards, as stored),
``z`` = plane.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from micro_sym import orientation as ori
from micro_sym.errors import MicroSymError
from micro_sym.grains import table as table_mod
from micro_sym.grains.reconstruct import (
    _pair_max_scalar,
    _shift_slices,
    neighbour_offsets,
    orientation_kind,
)

LOW_ANGLE_DEG = 15.0  # low/high-angle boundary limit (docs/design.md §3)
#: Neighbours are counted across the unassigned band (label 0) between grains: every grain grows into it
#: by up to this many face steps first (:func:`grow_into_gaps`), so grains at most 2 x 2 = 4 px apart meet.
#: Segmentations leave such a band (1-4 px, boundary pixels) between grains that touch physically.
NEIGHBOUR_REACH = 2
SIGMA3_BRANDON_DEG = 15.0 / math.sqrt(3.0)  # Brandon criterion for Σ3: 15°/√3 ≈ 8.66°
_TO_MM = {"mm": 1.0, "µm": 1e-3, "um": 1e-3, "micron": 1e-3, "nm": 1e-6, "m": 1e3, "cm": 10.0}
_CHUNK = 1 << 20  # points per chunk for the quaternion averaging (bounds 24-fold temporaries)


def column_units(table: dict, unit: str) -> dict:
    """``{column: unit suffix}`` of a table from :func:`grain_table` (``""``: no suffix), as CSV headers carry it."""
    ndim, orientation = table_mod.table_kind(table)
    docs = {c.name: c for c in table_mod.columns(ndim, orientation)}
    return {k: table_mod.header_unit(docs[k], unit) if k in docs else "" for k in table}


# --------------------------------------------------------------------------------- per grain


def grain_table(labels, orientation=None, *, symmetry=None, pixel_size=None, unit: str | None = None,
                phase=None) -> dict:
    """One row per grain, as a dict of equal-length numpy arrays (``pandas.DataFrame(table)`` works).

    Parameters
    ----------
    labels : ndarray of int, (y, x) or (z, y, x)
        Grain ids from :func:`~micro_sym.grains.reconstruct_grains` (0 = not a grain; ids 1..N).
    orientation : ndarray, optional
        The orientation map the grains came from (angles ``(y, x)`` or quaternions ``(4, ...)``);
        adds the symmetry-aware mean orientation and the grain orientation spread (GOS).
    symmetry : str, optional
        As in :func:`~micro_sym.grains.reconstruct_grains`.
    pixel_size : float or sequence, optional
        Pixel size per spatial axis (``(y, x)`` / ``(z, y, x)``), in ``unit``. Default 1 px.
    unit : str, optional
        Length unit of ``pixel_size`` (default ``"px"``).
    phase : ndarray of int, optional
        Per-point phase ids (EBSD maps, 0 = not indexed), same shape as ``labels``: the ``phase``
        column is each grain's phase. Default: one phase (``phase`` = 1).

    Returns
    -------
    dict of ndarray
        The columns of :func:`micro_sym.grains.table.columns`, in that order (with orientations:
        ``phase``, the mean orientation, Euler angles for quaternions, ``gos``).
        Mean orientation: 2D angles use the circular mean of kθ; quaternions are averaged after
        bringing every point to the symmetry equivalent nearest the grain's first point, then
        refined once against that mean (robust for spreads well below the symmetry's smallest
        rotation).
    """
    lab = np.asarray(labels)
    nd = lab.ndim
    if nd not in (2, 3):
        raise MicroSymError(f"labels: expected a 2D or 3D label map, got shape {lab.shape}")
    ps = _pixel_size(pixel_size, nd)
    unit = unit or "px"
    n = int(lab.max()) if lab.size else 0
    flat = lab.ravel().astype(np.intp)
    counts = np.bincount(flat, minlength=n + 1).astype(np.float64)
    ids = np.arange(1, n + 1)
    cnt = counts[1:]
    if np.any(cnt == 0):
        raise MicroSymError("labels: grain ids must be consecutive from 1 (some ids have no points)")
    t = {"grain": ids, "n_points": cnt.astype(np.int64)}
    cell = float(np.prod(ps))
    size = cnt * cell
    # Coordinates and second moments, one bincount per (product of) axes.
    coords = np.indices(lab.shape, dtype=np.float32).reshape(nd, -1)
    mean = np.stack([np.bincount(flat, coords[i], n + 1)[1:] / cnt for i in range(nd)])
    cov = np.empty((n, nd, nd))
    for i in range(nd):
        for j in range(i, nd):
            m = np.bincount(flat, coords[i].astype(np.float64) * coords[j], n + 1)[1:] / cnt
            cov[:, i, j] = cov[:, j, i] = (m - mean[i] * mean[j]) * ps[i] * ps[j]
    del coords
    evals, evecs = np.linalg.eigh(cov)  # ascending
    evals = np.clip(evals, 0, None)
    faces = _exposed_faces(lab, n, ps)
    border = _touches_border(lab, n)
    n_nb = _neighbour_counts(lab, n)
    if nd == 2:
        t["area"] = size
        t["ecd"] = 2 * np.sqrt(size / np.pi)
        t["perimeter"] = faces
        t["centroid_y"], t["centroid_x"] = mean[0] * ps[0], mean[1] * ps[1]
        major, minor = 4 * np.sqrt(evals[:, 1]), 4 * np.sqrt(evals[:, 0])
        t["major_axis"], t["minor_axis"] = major, minor
        with np.errstate(divide="ignore", invalid="ignore"):
            t["aspect_ratio"] = np.where(minor > 0, major / np.where(minor > 0, minor, 1), np.nan)
        v = evecs[:, :, 1]  # (row, col) components of the major axis
        # Rows increase downwards while y is up on screen, hence -row.
        t["ellipse_angle"] = np.mod(np.rad2deg(np.arctan2(-v[:, 0], v[:, 1])), 180.0)
    else:
        t["volume"] = size
        t["esd"] = np.cbrt(6 * size / np.pi)
        t["surface_area"] = faces
        t["centroid_z"], t["centroid_y"], t["centroid_x"] = (mean[k] * ps[k] for k in range(3))
        ax = 2 * np.sqrt(5 * evals[:, ::-1])
        t["axis_a"], t["axis_b"], t["axis_c"] = ax[:, 0], ax[:, 1], ax[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            t["aspect_ratio"] = np.where(ax[:, 2] > 0, ax[:, 0] / np.where(ax[:, 2] > 0, ax[:, 2], 1), np.nan)
    t["touches_border"] = border.astype(np.int8)
    t["n_neighbours"] = n_nb
    if orientation is not None:
        if phase is not None:
            t["phase"] = table_mod.grain_phase(lab, phase)
        t.update(_orientation_columns(lab, flat, cnt, n, np.asarray(orientation), symmetry))
        t = table_mod.add_derived(t)
    return table_mod.order(t)


def _pixel_size(pixel_size, nd):
    if pixel_size is None:
        return (1.0,) * nd
    ps = np.broadcast_to(np.asarray(pixel_size, dtype=np.float64), (nd,)) if np.ndim(pixel_size) == 0 else np.asarray(pixel_size, float)
    if len(ps) != nd or not np.all(ps > 0):
        raise MicroSymError(f"pixel_size: need {nd} positive values, got {pixel_size}")
    return tuple(float(p) for p in ps)


def _exposed_faces(lab, n, ps):
    """Perimeter (2D) / surface area (3D): pixel edges / voxel faces not shared with the same grain."""
    nd = lab.ndim
    total = np.zeros(n + 1)
    for ax in range(nd):
        face = float(np.prod([ps[k] for k in range(nd) if k != ax]))  # edge length / face area
        a = np.moveaxis(lab, ax, 0)
        diff = a[1:] != a[:-1]
        for side in (a[1:][diff], a[:-1][diff]):
            total += np.bincount(side.ravel(), minlength=n + 1) * face
        # The map edge counts as boundary.
        total += (np.bincount(a[0].ravel(), minlength=n + 1) + np.bincount(a[-1].ravel(), minlength=n + 1)) * face
    return total[1:]


def _touches_border(lab, n):
    hit = np.zeros(n + 1, bool)
    for ax in range(lab.ndim):
        a = np.moveaxis(lab, ax, 0)
        hit[a[0].ravel()] = True
        hit[a[-1].ravel()] = True
    return hit[1:]


def _adjacent_pairs(lab, connectivity=1):
    """Unique unordered grain pairs ``(a < b)`` that touch (both > 0)."""
    n = int(lab.max())
    keys = []
    for off in neighbour_offsets(lab.ndim, connectivity):
        lo, hi = _shift_slices(lab.shape, off)
        a, b = lab[lo].astype(np.int64), lab[hi].astype(np.int64)
        sel = (a != b) & (a > 0) & (b > 0)
        a, b = a[sel], b[sel]
        keys.append(np.minimum(a, b) * (n + 1) + np.maximum(a, b))
    keys = np.unique(np.concatenate(keys)) if keys else np.zeros(0, np.int64)
    return np.stack(np.divmod(keys, n + 1), 1)


def _neighbour_counts(lab, n):
    pairs = _adjacent_pairs(grow_into_gaps(lab, NEIGHBOUR_REACH), 1)
    return (np.bincount(pairs[:, 0], minlength=n + 1) + np.bincount(pairs[:, 1], minlength=n + 1))[1:]


def grow_into_gaps(labels, steps: int = NEIGHBOUR_REACH) -> np.ndarray:
    """Grains grown into the unassigned points (label 0) by up to ``steps`` face steps, for neighbours.

    Each step gives every 0 point that has a labelled face neighbour the smallest such label; grains
    never overwrite each other. Two grains separated by a band of 0 points at most ``2 * steps`` wide
    then touch (the band a segmentation leaves between grains counts as their shared boundary), while
    grains further apart, or across a wide unassigned region, stay apart. Local (a point depends only
    on labels within ``steps`` face steps), so a block with a halo of ``steps + 1`` reproduces the
    whole map's result on its core plus one point (:func:`micro_sym.grains.blockwise.neighbour_pairs`).

    >>> grow_into_gaps(np.array([[1, 0, 0, 0, 2]]), 1)
    array([[1, 1, 0, 2, 2]])
    """
    from micro_sym.grains._kernels import grow_into_gaps as grow

    return grow(labels, steps)


def _orientation_columns(lab, flat, cnt, n, orient, symmetry):
    kind = orientation_kind(orient.shape, symmetry)
    spatial = orient.shape[1:] if kind.channel_axis else orient.shape
    if spatial != lab.shape:
        raise MicroSymError(f"orientation: shape {orient.shape} does not match labels {lab.shape}")
    out = {}
    if kind.kind == "angle":
        k = kind.k
        th = orient.ravel().astype(np.float64)
        ok = np.isfinite(th) & (flat > 0)
        t = np.deg2rad(th[ok]) * k
        c = np.bincount(flat[ok], np.cos(t), n + 1)[1:]
        s = np.bincount(flat[ok], np.sin(t), n + 1)[1:]
        mean = ori.wrap_angle(np.rad2deg(np.arctan2(s, c)) / k, k)
        mis = ori.misorientation_2d(th[ok], mean[flat[ok] - 1], k)
        nok = np.bincount(flat[ok], minlength=n + 1)[1:]
        with np.errstate(invalid="ignore", divide="ignore"):
            out["mean_angle"] = np.where(nok > 0, mean, np.nan)
            out["gos"] = np.bincount(flat[ok], mis, n + 1)[1:] / nok
        return out
    q = orient.reshape(4, -1)
    ok = np.flatnonzero(np.isfinite(q).all(axis=0) & (flat > 0))
    g = flat[ok]
    # Reference per grain: its first valid point.
    ref = np.full((n + 1, 4), np.nan)
    first = np.full(n + 1, -1, np.int64)
    order = np.argsort(g, kind="stable")
    gs = g[order]
    starts = np.r_[0, np.flatnonzero(gs[1:] != gs[:-1]) + 1] if len(gs) else np.zeros(0, np.int64)
    first[gs[starts]] = ok[order[starts]]
    has = first >= 0
    ref[has] = q[:, first[has]].T
    for _ in range(2):  # reduce to the reference, average; then once more against the mean
        acc = np.zeros((n + 1, 4))
        for s0 in range(0, len(ok), _CHUNK):
            idx = ok[s0 : s0 + _CHUNK]
            gi = flat[idx]
            red = ori.reduce_to_reference(q[:, idx].T, ref[gi], kind.symmetry)
            for c in range(4):
                acc[:, c] += np.bincount(gi, red[:, c], n + 1)
        with np.errstate(invalid="ignore"):
            ref = acc / np.linalg.norm(acc, axis=1, keepdims=True)
        ref = np.where(ref[:, :1] < 0, -ref, ref)
    # GOS: misorientation of every point to its grain mean.
    gos = np.zeros(n + 1)
    for s0 in range(0, len(ok), _CHUNK):
        idx = ok[s0 : s0 + _CHUNK]
        gi = flat[idx]
        w = _pair_max_scalar(ref[gi].T.copy(), q[:, idx].astype(np.float64), kind)
        gos += np.bincount(gi, 2 * np.rad2deg(np.arccos(np.clip(w, -1, 1))), n + 1)
    nok = np.bincount(g, minlength=n + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["gos"] = (gos / nok)[1:]
    for c, name in enumerate("wxyz"):
        out[f"mean_q{name}"] = ref[1:, c]
    return out


# ---------------------------------------------------------------------------- boundaries, KAM


def pair_misorientation(a, b, kind):
    """Misorientation angle (degrees) of neighbour pairs; see ``reconstruct.pair_connected``."""
    if kind.kind == "angle":
        return ori.misorientation_2d(a, b, kind.k)
    w = _pair_max_scalar(np.asarray(a, np.float64), np.asarray(b, np.float64), kind)
    return 2 * np.rad2deg(np.arccos(np.clip(w, -1.0, 1.0)))


def boundary_misorientations(labels, orientation, *, symmetry=None):
    """Misorientation (degrees) of every face-neighbour pair that lies in two different grains.

    Each pair is one unit of boundary length (2D) or area (3D), so histograms of this array are
    length-weighted boundary misorientation distributions. Pairs touching label 0 are ignored.

    Returns
    -------
    mis : ndarray of float64
    pairs : ndarray (n, 2) of the grain ids on each side
    dq : ndarray (n, 4) or None
        Misorientation quaternions ``a* ⊗ b`` (quaternion maps), for CSL classification.
    """
    lab = np.asarray(labels)
    orient = np.asarray(orientation)
    kind = orientation_kind(orient.shape, symmetry)
    mis, pairs, dqs = [], [], []
    for off in neighbour_offsets(lab.ndim, 1):
        lo, hi = _shift_slices(lab.shape, off)
        a, b = lab[lo], lab[hi]
        sel = (a != b) & (a > 0) & (b > 0)
        pairs.append(np.stack([a[sel], b[sel]], 1))
        if kind.channel_axis:
            oa = orient[(slice(None),) + lo][:, sel].astype(np.float64)
            ob = orient[(slice(None),) + hi][:, sel].astype(np.float64)
            dqs.append(ori.quat_multiply(ori.quat_conjugate(oa.T), ob.T))
        else:
            oa, ob = orient[lo][sel], orient[hi][sel]
        mis.append(pair_misorientation(oa, ob, kind))
    mis = np.concatenate(mis)
    pairs = np.concatenate(pairs)
    dq = np.concatenate(dqs) if dqs else None
    ok = np.isfinite(mis)
    return mis[ok], pairs[ok], (dq[ok] if dq is not None else None)


def sigma3_deviation(dq):
    """Angular deviation (degrees) of cubic misorientations ``dq`` (``(n, 4)``) from Σ3 (60°<111>).

    Minimises over both-sided cubic symmetry: the 24 left variants ``s ⊗ Σ3`` are compared with
    ``dq`` by the closed-form right-symmetry maximum.
    """
    sig = ori.axis_angle_to_quat(np.array([1.0, 1.0, 1.0]), 60.0)
    kind = orientation_kind((4, 1, 1), "cubic")
    best = np.zeros(len(dq))
    d = np.asarray(dq, np.float64)
    for s in ori.cubic_symmetry_quats():
        v = ori.quat_multiply(s, sig)
        w = _pair_max_scalar(np.broadcast_to(v, d.shape).T.copy(), d.T.copy(), kind)
        best = np.maximum(best, w)
    return 2 * np.rad2deg(np.arccos(np.clip(best, -1, 1)))


def kam_map(orientation, *, symmetry=None, threshold: float = 5.0, connectivity: int = 2, labels=None, mask=None):
    """Kernel average misorientation: mean misorientation (degrees) to first-order neighbours.

    Neighbours whose misorientation exceeds ``threshold`` (grain boundaries), that are invalid
    (NaN, outside ``mask``) or, when ``labels`` is given, that lie in another grain are left out
    (MTEX's ``KAM(..., 'threshold', ...)``). NaN where a point has no such neighbour.

    Parameters
    ----------
    orientation : ndarray
        Angles ``(y, x)`` or quaternions ``(4, ...)``.
    connectivity : {1, 2}
        1: face neighbours; 2 (default): all 8 / 26 neighbours.

    Returns
    -------
    ndarray of float32, spatial shape
    """
    orient = np.asarray(orientation)
    kind = orientation_kind(orient.shape, symmetry)
    spatial = orient.shape[1:] if kind.channel_axis else orient.shape
    connectivity = {4: 1, 6: 1, 8: 2, 26: 2}.get(connectivity, connectivity)
    if mask is not None and np.shape(mask) != spatial:
        raise MicroSymError(f"mask: shape {np.shape(mask)} does not match the orientation map {spatial}")
    total = np.zeros(spatial, np.float64)
    count = np.zeros(spatial, np.int32)
    lab = None if labels is None else np.asarray(labels)
    for off in neighbour_offsets(len(spatial), connectivity):
        lo, hi = _shift_slices(spatial, off)
        if kind.channel_axis:
            m = pair_misorientation(orient[(slice(None),) + lo], orient[(slice(None),) + hi], kind)
        else:
            m = pair_misorientation(orient[lo], orient[hi], kind)
        ok = np.isfinite(m) & (m <= threshold)
        if mask is not None:
            ok &= np.asarray(mask)[lo] & np.asarray(mask)[hi]
        if lab is not None:
            ok &= (lab[lo] == lab[hi]) & (lab[lo] > 0)
        m = np.where(ok, m, 0.0)
        # Each pair contributes to both of its points.
        total[lo] += m
        total[hi] += m
        count[lo] += ok
        count[hi] += ok
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan).astype(np.float32)


# ------------------------------------------------------------------------------------ per map


def map_summary(labels, orientation=None, *, symmetry=None, pixel_size=None, unit=None, table=None,
                bins_deg: float = 1.0) -> dict:
    """Per-map statistics as a JSON-ready dict.

    Contents: number of grains; grain size distribution (mean, median, std, min, max, d10/d50/d90
    of the equivalent diameter, area-weighted mean diameter, histogram of ECD/ESD); for 2D maps the
    ASTM grain size numbers

    * E112 planimetric (Jeffries): ``N_A = (N_inside + N_border/2) / A_map`` grains per mm²,
      ``G = 3.3219 log10(N_A) - 2.954``;
    * E2627: ``G = -3.3223 log10(Ā) - 2.995`` with Ā the mean area (mm²) of grains not touching
      the map edge (E2627 excludes edge grains);

    (both need a physical unit; None with ``unit="px"``); and, with orientations, the boundary
    misorientation distribution (length-weighted histogram), low-angle (< 15°) and high-angle
    fractions, and for cubic quaternions the Σ3 fraction (Brandon criterion, 8.66°) of boundary
    length.
    """
    lab = np.asarray(labels)
    nd = lab.ndim
    unit = unit or "px"
    if table is None:
        table = grain_table(lab, None, pixel_size=pixel_size, unit=unit)
    ps = _pixel_size(pixel_size, nd)
    n = len(table["grain"])
    size_col = "area" if nd == 2 else "volume"
    diam_col = "ecd" if nd == 2 else "esd"
    out = {
        "n_grains": n,
        "dimensions": nd,
        "shape": list(lab.shape),
        "pixel_size": list(ps),
        "unit": unit,
        "assigned_fraction": float((lab > 0).mean()) if lab.size else 0.0,
    }
    if n:
        size = np.asarray(table[size_col], float)
        d = np.asarray(table[diam_col], float)
        hist, edges = np.histogram(d, bins=min(50, max(5, int(np.sqrt(n)))))
        out["size"] = {
            "quantity": size_col,
            "mean": float(size.mean()), "median": float(np.median(size)), "std": float(size.std()),
            "min": float(size.min()), "max": float(size.max()),
        }
        out["diameter"] = {
            "quantity": diam_col,
            "mean": float(d.mean()), "median": float(np.median(d)), "std": float(d.std()),
            "d10": float(np.percentile(d, 10)), "d50": float(np.percentile(d, 50)), "d90": float(np.percentile(d, 90)),
            "area_weighted_mean": float((d * size).sum() / size.sum()),
            "histogram": {"counts": hist.tolist(), "edges": edges.tolist()},
        }
    out["astm"] = _astm(lab, table, ps, unit) if nd == 2 else None
    if orientation is not None:
        orient = np.asarray(orientation)
        kind = orientation_kind(orient.shape, symmetry)
        mis, _, dq = boundary_misorientations(lab, orient, symmetry=symmetry)
        # The largest possible misorientation: 180°/k for k-fold angles, 62.8° cubic (432), 93.9° 622.
        top = 180.0 / kind.k if kind.kind == "angle" else (62.8 if kind.symmetry == "cubic" else 93.9)
        edges = np.arange(0.0, top + bins_deg, bins_deg)
        hist, _ = np.histogram(mis, bins=edges)
        m = len(mis)
        out["boundaries"] = {
            "n_pairs": int(m),
            "unit_length": "one pixel edge (2D) / voxel face (3D) per pair",
            "mean_misorientation_deg": float(mis.mean()) if m else None,
            "low_angle_fraction": float((mis < LOW_ANGLE_DEG).mean()) if m else None,
            "high_angle_fraction": float((mis >= LOW_ANGLE_DEG).mean()) if m else None,
            "low_angle_limit_deg": LOW_ANGLE_DEG,
            "histogram": {"counts": hist.tolist(), "edges": edges.tolist()},
        }
        if kind.kind == "quat" and kind.symmetry == "cubic":
            dev = sigma3_deviation(dq) if m else np.zeros(0)
            out["boundaries"]["sigma3_fraction"] = float((dev <= SIGMA3_BRANDON_DEG).mean()) if m else None
            out["boundaries"]["sigma3_tolerance_deg"] = SIGMA3_BRANDON_DEG
    return out


def _astm(lab, table, ps, unit):
    to_mm = _TO_MM.get(unit)
    res = {"e112_planimetric_G": None, "e2627_G": None, "note": None}
    if to_mm is None:
        res["note"] = f"unit '{unit}' is not a physical length; ASTM numbers need one"
        return res
    n = len(table["grain"])
    if n == 0:
        return res
    border = np.asarray(table["touches_border"]) > 0
    map_area_mm2 = lab.size * ps[0] * ps[1] * to_mm**2
    n_a = (np.sum(~border) + 0.5 * np.sum(border)) / map_area_mm2
    res["e112_planimetric_N_A_per_mm2"] = float(n_a)
    res["e112_planimetric_G"] = float(3.3219 * np.log10(n_a) - 2.954)
    inner = np.asarray(table["area"])[~border] * to_mm**2
    if len(inner):
        res["e2627_mean_area_mm2"] = float(inner.mean())
        res["e2627_G"] = float(-3.3223 * np.log10(inner.mean()) - 2.995)
        res["e2627_n_grains"] = int(len(inner))
    res["note"] = "E2627 uses grains not touching the map edge; it asks for >= 100 px per grain and >= 500 grains"
    return res


# ------------------------------------------------------------------------------------- writers


def write_grain_csv(path, table: dict, unit: str = "px", *, atomic: bool = False, pixel_size=None,
                    symmetry: str | None = None, phases=None, command: str | None = None,
                    grain_rule: dict | None = None, sidecar: bool = True) -> Path:
    """One row per grain; header names carry their unit as a suffix (``area_um2``, ``ecd_um``, ``gos_deg``).

    The columns are :func:`micro_sym.grains.table.columns` of the table's kind, in that order, for
    every command alike (:func:`micro_sym.grains.table.complete`: Euler angles and ``phase`` added
    where missing, a documented column the table lacks written empty). With ``sidecar`` the column
    documentation goes beside it first (``NAME_grains.json``, :func:`micro_sym.grains.table.describe`).

    Parameters
    ----------
    path : str or Path
    table : dict of array_like
        From :func:`grain_table` or the block engine; keys may already carry unit suffixes.
    unit : str
        Length unit of the table (``"px"`` without a pixel size).
    atomic : bool
        Write ``.NAME.tmp`` beside ``path`` and move it into place, so a reader never sees a partial
        table (the streaming engine); a failed write is then a :class:`MicroSymError`.
    pixel_size, symmetry, phases, command, grain_rule
        Recorded in the sidecar: pixel size per axis, the map's symmetry, EBSD phases (list of dicts
        with ``name`` and ``symmetry``, phase id = position + 1), the command, the grain rule's parameters.
    sidecar : bool
        Also write the sidecar JSON (default).
    """
    path = Path(path)
    full, unit, missing = table_mod.complete(table, unit)
    if sidecar:
        doc = table_mod.describe(full, unit, pixel_size=pixel_size, symmetry=symmetry, phases=phases, command=command,
                                 grain_rule=grain_rule, csv_name=path.name, not_computed=missing)
        table_mod.write_sidecar(path, doc)
    if atomic:
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            _write_csv(tmp, full, unit)
            tmp.replace(path)
        except OSError as err:
            raise MicroSymError(f"{path}: cannot write grain table ({err.strerror or err})") from None
        return path
    _write_csv(path, full, unit)
    return path


def _write_csv(path: Path, table: dict, unit: str) -> None:
    units = column_units(table, unit)
    header = [f"{c}_{units[c]}" if units[c] else c for c in table]
    columns = [np.asarray(c) for c in table.values()]
    n = len(columns[0]) if columns else 0
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        # Formatted a column at a time (python scalars from tolist()): ~10x faster than per cell; in
        # rows of 8,192, as the text of a large volume's every cell would take ~2 kB a grain at once.
        for start in range(0, n, 8192):
            w.writerows(zip(*(_column_text(c[start:start + 8192]) for c in columns)))


def _column_text(col) -> list:
    """Cells of one column: integers as integers, floats with 6 significant digits, non-finite empty."""
    col = np.asarray(col)
    if np.issubdtype(col.dtype, np.integer):
        return col.tolist()
    return [f"{v:.6g}" if math.isfinite(v) else "" for v in col.astype(np.float64).tolist()]


def write_summary_json(path, summary: dict, table: dict | None = None, unit: str = "px") -> Path:
    """Write the map summary (plus the CSV column documentation, as in the grain table's sidecar) as JSON."""
    path = Path(path)
    doc = dict(summary)
    if table is not None:
        full, unit, missing = table_mod.complete(table, unit)
        cols = table_mod.describe(full, unit, not_computed=missing)["columns"]
        doc["csv_columns"] = {c["name"]: {"unit": c["unit"], "meaning": c["meaning"]} for c in cols}
    path.write_text(json.dumps(_jsonable(doc), indent=2, allow_nan=False) + "\n")
    return path


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if np.isfinite(x) else None
    return x

"""Split 3D grains that hold two lattices: a Σ3 twin merged with its parent, or any two grains merged
(docs/design.md §6.7).

A segmentation that sees orientation only through a cubic-invariant field may join a twin and its
parent (60° about <111>) into one grain. The volume inside such a grain shows both lattices, so the
grain can be split from the volume itself:

1. **Main lattice.** The grain's first-ring spots are indexed with the volume's family
   (:func:`micro_sym.classical.grain_orientation3d.grain_orientation`) -> q1.
2. **Candidates.** q1's four Σ3 twins (60° about each <111>), and the lattice of the spots q1 leaves
   unexplained (beyond ``MATCH_TOLERANCE_DEG`` of every rotated family direction) when they hold
   :data:`SECOND_SHARE` of the spot excess and their own fit explains :data:`SECOND_QUALITY` of it
   (any relation more than :data:`MIN_MISORIENTATION_DEG` from q1). The Σ3 candidates are needed:
   a twin a tenth of the grain's volume has spots ~1/100 of the parent's peak height (a spot's peak
   grows as the volume squared), lost among the parent's side lobes.
3. **Evidence.** Each spot's Gabor power: the grain's voxels ``v`` filtered by a one-sided Gaussian
   around the spot's frequency ``f0 R g`` (σ = :data:`GABOR_PERIODS` periods in space, by FFT of the
   grain's crop), ``|·|²`` smoothed over :data:`SMOOTH_PERIODS` periods. A lattice's evidence is the
   sum over its spots apart from the other lattice's (more than :data:`UNIQUE_DEG` from each of them;
   a Σ3 pair shares its twin plane's {111} spot). Summed, not normalized spot by spot: a spot the
   missing wedge hides would otherwise be noise blown up to the level of a real one.
4. **Second lattice's region.** For each candidate, the voxels where its evidence beats q1's and
   reaches :data:`MIN_EVIDENCE` of q1's ring power (both in the same units: a lattice that is not
   there reads ~0); the candidate with the largest region is taken, if that region holds
   :data:`~micro_sym.classical.grain_orientation3d.MIN_CELLS` periods³.
5. **Voxels.** Starting from that region, each lattice's evidence is divided by its median over the
   voxels of its part more than a period from the other (~1 where it is) and every voxel goes to the
   larger, twice; connected pieces under :data:`MIN_PIECE_CELLS` periods³ go to the other part.
6. **Check.** Each part is measured again on its own; the split stands when both parts hold
   ``MIN_CELLS`` periods³, both fits reach :data:`~micro_sym.classical.grain_orientation3d.MIN_QUALITY`
   and they are still more than ``MIN_MISORIENTATION_DEG`` apart (noise fails here). Each part is
   then tried again, up to :data:`MAX_DEPTH` levels (a grain may hold three lattices).

On synthetic fcc volumes the split follows the plane between the two lattices to about a voxel
(tests/classical/test_twin_split3d.py). On held-out atomistic volumes
(``bench/studies/twin_split3d.py``, docs/results.md) it recovers most twin boundaries of true grains
merged pairwise with their twin; the predicted boundary sits where the lattice changes, which is
often 2-3 voxels (half a {111} spacing) from where the generator's labels put it.

Frames as :mod:`micro_sym.classical.grain_orientation3d`: arrays ``(z, y, x)``, directions ``(x, y, z)``.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import fft, ndimage

from micro_sym.classical import grain_orientation3d as go
from micro_sym.classical.grain_lattice import window
from micro_sym.orientation import (
    axis_angle_to_quat,
    matrix_to_quat,
    misorientation_cubic,
    quat_to_matrix,
)

__all__ = ["split_grain", "split_grains"]

#: A second lattice is looked for when the spots the first leaves unexplained hold this share of the excess.
SECOND_SHARE = 0.1
#: ... and kept when its fit explains this share of those spots' excess.
SECOND_QUALITY = 0.25
#: Two lattices closer than this (degrees, cubic misorientation) are one.
MIN_MISORIENTATION_DEG = 5.0
#: A spot of one lattice is unique when it is more than this (degrees) from every spot of the other.
UNIQUE_DEG = 12.0
#: Spatial sigma of the Gabor filters, in first-ring periods.
GABOR_PERIODS = 0.7
#: Sigma of the smoothing of the filtered power, in periods.
SMOOTH_PERIODS = 0.5
#: A second lattice's voxels read at least this share of the first lattice's spot power.
MIN_EVIDENCE = 0.1
#: Connected pieces of one lattice smaller than this many periods³ go to the other.
MIN_PIECE_CELLS = 4.0
#: A grain is split at most this many times over (2: up to 4 parts, 3 lattices the common case).
MAX_DEPTH = 2


#: The four Σ3 twin operations (crystal frame): 60° about each <111>.
_TWINS = [quat_to_matrix(axis_angle_to_quat(np.array(a, np.float64), 60.0))
          for a in ([1, 1, 1], [1, 1, -1], [1, -1, 1], [-1, 1, 1])]


def _unique(rot, other, family, unique_deg):
    """Which of ``rot``'s rotated family directions are more than ``unique_deg`` from every one of ``other``'s."""
    cos = np.abs((family @ rot.T) @ (family @ other.T).T).max(axis=1)
    return cos < math.cos(math.radians(unique_deg))


def _spot_powers(crop, mask, f0, directions, *, workers=1):
    """Per direction (rows of ``directions``, unit (x, y, z)): the grain's Gabor power around the spot
    ``f0 d``, smoothed, ``(n, *crop.shape)``."""
    period = 1.0 / f0
    values = np.where(mask & np.isfinite(crop), crop, 0.0).astype(np.float64)
    values = np.where(mask, values - values[mask].mean(), 0.0)
    pad = math.ceil(3 * GABOR_PERIODS * period)
    size = [fft.next_fast_len(n + 2 * pad) for n in crop.shape]
    spec = fft.fftn(values, s=size, workers=workers)
    fz, fy, fx = (fft.fftfreq(n) for n in size)
    sigma_f = 1.0 / (2 * math.pi * GABOR_PERIODS * period)
    cut = tuple(slice(0, n) for n in crop.shape)
    out = np.empty((len(directions),) + crop.shape)
    for k, d in enumerate(directions):
        fc = f0 * d  # (x, y, z); one-sided (its mate -fc is left out): the envelope, not the fringes
        g = (np.exp(-0.5 * ((fz - fc[2]) / sigma_f) ** 2)[:, None, None]
             * np.exp(-0.5 * ((fy - fc[1]) / sigma_f) ** 2)[None, :, None]
             * np.exp(-0.5 * ((fx - fc[0]) / sigma_f) ** 2)[None, None, :])
        power = np.abs(fft.ifftn(spec * g, workers=workers)[cut]) ** 2
        out[k] = ndimage.gaussian_filter(power, SMOOTH_PERIODS * period, mode="constant")
    return out


def _assign(powers, owner, mask, f0, assign):
    """Voxel -> lattice, from a first ``assign`` (-1 outside ``mask``): each lattice's evidence is the sum
    of its spots' powers divided by its median over the voxels of its lattice more than a period from
    the others (~1 where it is); the larger wins; twice. (Summed, not normalized spot by spot: a
    spot the missing wedge hides would be noise blown up to 1.)"""
    n = int(owner.max()) + 1
    sums = np.stack([powers[owner == k].sum(0) for k in range(n)])
    for _ in range(2):
        ev = np.empty_like(sums)
        for k in range(n):
            core = (assign == k) & (ndimage.distance_transform_edt(assign == k) > 1.0 / f0)
            if core.sum() < 8:
                core = assign == k
            ref = np.median(sums[k][core]) if core.any() else 1.0
            ev[k] = sums[k] / max(ref, 1e-300)
        assign = np.where(mask, np.argmax(ev, axis=0), -1)
    return assign


def _clean(assign, mask, min_voxels):
    """Pieces of each part (6-connected) smaller than ``min_voxels`` go to the part around them."""
    assign = assign.copy()
    for _ in range(2):
        changed = False
        for k in np.unique(assign[mask]):
            comp, n = ndimage.label(mask & (assign == k))
            if n == 0:
                continue
            sizes = np.bincount(comp.ravel())
            small = np.flatnonzero(sizes < min_voxels)
            small = small[small > 0]
            if not len(small):
                continue
            sel = np.isin(comp, small)
            # The most common other part around each small piece: nearest other-part voxel.
            other = mask & (assign != k)
            if not other.any():
                continue
            _, idx = ndimage.distance_transform_edt(~other, return_indices=True)
            assign[sel] = assign[tuple(i[sel] for i in idx)]
            changed = True
        if not changed:
            break
    return assign


def _fit(crop, mask, f0, family, workers=1):
    dirs, heights, shell = go._grain_spectrum(crop, mask, f0, workers=workers)
    return dirs, heights, shell, go.index_spots(dirs, heights, family, shell)


def split_grain(crop, mask, ring_frequency: float, family: str, *, depth: int = MAX_DEPTH, workers: int = 1):
    """Split one grain into its lattices.

    Returns a list of ``(mask, fit)`` parts (``fit`` from :func:`~micro_sym.classical.grain_orientation3d.index_spots`):
    one part (the grain, unsplit) or more.
    """
    f0 = float(ring_frequency)
    cells = f0 ** -3
    mask = np.asarray(mask, bool)
    dirs, heights, _, fit1 = _fit(crop, mask, f0, family, workers)
    whole = [(mask, fit1)]
    if depth <= 0 or fit1["family"] is None or mask.sum() < 2 * go.MIN_CELLS * cells:
        return whole
    fam = go.FAMILIES[family]
    r1 = fit1["matrix"]
    # Candidate second lattices: q1's four Σ3 twins, and the lattice of the spots q1 leaves unexplained.
    candidates = [r1 @ t for t in _TWINS]
    cos, _, _ = go._match(r1, fam, dirs)
    rest = cos < math.cos(math.radians(go.MATCH_TOLERANCE_DEG))
    if rest.sum() >= 2 and heights[rest].sum() >= SECOND_SHARE * heights.sum():
        fit2 = go.index_spots(dirs[rest], heights[rest], family)
        if (fit2["family"] is not None and fit2["quality"] >= SECOND_QUALITY
                and misorientation_cubic(fit1["quaternion"], fit2["quaternion"]) > MIN_MISORIENTATION_DEG
                and min(misorientation_cubic(matrix_to_quat(c), fit2["quaternion"]) for c in candidates) > 1.0):
            candidates.append(fit2["matrix"])
    own = [_unique(r1, c, fam, UNIQUE_DEG) for c in candidates]  # q1's spots apart from each candidate's
    theirs = [(c @ fam.T).T[_unique(c, r1, fam, UNIQUE_DEG)] for c in candidates]
    keep = [k for k in range(len(candidates)) if own[k].any() and len(theirs[k])]
    if not keep:
        return whole
    crop = np.asarray(crop, np.float64)
    powers = _spot_powers(crop, mask, f0, np.concatenate([fam @ r1.T] + [theirs[k] for k in keep]), workers=workers)
    p1, pc = powers[:len(fam)], powers[len(fam):]
    # Every lattice's spot power summed, against q1's whole ring where q1 is (same structure: similar
    # spots; a lattice that is not there reads ~0).
    level = np.percentile(p1.sum(0)[mask], 75)
    if level <= 0:
        return whole
    best, start = None, 0
    for k in keep:
        n = len(theirs[k])
        e1, ec = p1[own[k]].sum(0), pc[start:start + n].sum(0)
        region = mask & (ec > e1) & (ec > MIN_EVIDENCE * level)
        if best is None or region.sum() > best[1].sum():
            best = (k, region, slice(start, start + n))
        start += n
    k, region, sl = best
    if region.sum() < go.MIN_CELLS * cells:
        return whole
    sub = np.concatenate([p1[own[k]], pc[sl]])
    owner = np.repeat([0, 1], [int(own[k].sum()), sl.stop - sl.start])
    assign = _assign(sub, owner, mask, f0, np.where(mask, region.astype(np.int64), -1))
    assign = _clean(assign, mask, MIN_PIECE_CELLS * cells)
    parts = []
    for k in (0, 1):
        part = mask & (assign == k)
        if part.sum() < go.MIN_CELLS * cells:
            return whole
        _, _, _, fit = _fit(crop, part, f0, family, workers)
        if fit["family"] is None or fit["quality"] < go.MIN_QUALITY:
            return whole
        parts.append((part, fit))
    if misorientation_cubic(parts[0][1]["quaternion"], parts[1][1]["quaternion"]) <= MIN_MISORIENTATION_DEG:
        return whole
    out = []
    for part, fit in parts:
        out.extend(split_grain(crop, part, f0, family, depth=depth - 1, workers=workers))
    return out


def split_grains(volume, labels, *, ring_frequency: float, family=None, ids=None, workers: int = 1):
    """Split every grain of a label volume that holds two (or more) lattices.

    Parameters
    ----------
    volume : (Z, Y, X) array
        Intensities.
    labels : (Z, Y, X) integer array
        Grain ids, 0 = none.
    ring_frequency : float
        The volume's first lattice ring, cycles/voxel
        (:func:`micro_sym.classical.lattice_measure3d.measure_lattice_3d`).
    family : "100", "110", "111" or None
        The first-ring family; None: chosen for the whole volume as
        :func:`~micro_sym.classical.grain_orientation3d.grain_orientations` does.
    ids : sequence of int, optional
        The grains to try (default: every one).

    Returns
    -------
    new_labels : ndarray (uint32)
        ``labels`` with each split grain's parts under new ids (above the largest id); unsplit
        grains keep theirs.
    info : dict
        Per new grain: ``ids`` (n,), ``parent`` (n,) the grain it came from, ``quaternions`` (n, 4)
        and ``quality`` (n,) measured on the part alone; and ``family``, the family used.
    """
    volume = np.asarray(volume)
    labels = np.asarray(labels)
    f0 = float(ring_frequency)
    if family is None:
        family = go.grain_orientations(volume, labels, ring_frequency=f0, ids=ids, workers=workers)["volume_family"]
    out = labels.astype(np.uint32, copy=True)
    info = {"ids": [], "parent": [], "quaternions": [], "quality": [], "family": family}
    if family is None:
        return out, {k: np.asarray(v) if k != "family" else v for k, v in info.items()}
    found = ndimage.find_objects(labels.astype(np.int64, copy=False)) if labels.size else []
    ids = (np.array([g for g in range(1, len(found) + 1) if found[g - 1] is not None], np.int64)
           if ids is None else np.asarray(ids, np.int64).reshape(-1))
    next_id = int(labels.max()) + 1 if labels.size else 1
    for g in ids:
        box = found[g - 1] if 0 < g <= len(found) else None
        if box is None:
            continue
        mask = labels[box] == g
        if mask.sum() < 2 * go.MIN_CELLS * f0 ** -3:
            continue
        wbox, wmask = window(box, mask, go.MAX_WINDOW)
        parts = split_grain(volume[wbox], wmask, f0, family, workers=workers)
        if len(parts) < 2:
            continue
        # The window is the whole box unless the grain is larger than MAX_WINDOW: voxels outside it
        # go to the nearest part.
        assign = np.full(wmask.shape, -1, np.int64)
        for k, (part, _) in enumerate(parts):
            assign[part] = k
        if wbox != box:
            full = np.full(mask.shape, -1, np.int64)
            inner = tuple(slice(w.start - b.start, w.stop - b.start) for w, b in zip(wbox, box))
            full[inner] = assign
            _, idx = ndimage.distance_transform_edt(full < 0, return_indices=True)
            assign = np.where(mask, full[tuple(idx)], -1)
            region = out[box]
        else:
            region = out[wbox]
        for k, (_, fit) in enumerate(parts):
            region[assign == k] = next_id
            info["ids"].append(next_id)
            info["parent"].append(int(g))
            info["quaternions"].append(fit["quaternion"])
            info["quality"].append(fit["quality"])
            next_id += 1
    return out, {"ids": np.asarray(info["ids"], np.int64), "parent": np.asarray(info["parent"], np.int64),
                 "quaternions": np.asarray(info["quaternions"], np.float64).reshape(-1, 4),
                 "quality": np.asarray(info["quality"], np.float64), "family": family}


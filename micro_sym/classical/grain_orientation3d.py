"""Each grain's 3D cubic orientation, measured from the volume inside the grain (docs/design.md §6.7).

The 3D counterpart of :mod:`micro_sym.classical.grain_lattice`. Once the grains of a volume are known,
the power spectrum of each grain's own voxels shows its lattice's first ring of spots, at the
reciprocal directions of one cubic family: {100} (simple cubic), {110} (bcc) or {111} (fcc,
diamond). Their directions in the volume frame fix the grain's rotation:

1. **Spectrum.** The grain's bounding box (at most :data:`MAX_WINDOW` voxels per side, around its
   centre), mean-subtracted over the grain and tapered as sin² over 2 periods (:func:`~micro_sym.classical.grain_lattice.tapered`)
   inside its outline (the outline's own spectrum then does not leak onto the ring), zero-padded to
   at least twice the crop and 12 periods, ``P = |FFT|²``.
2. **Shell.** The excess ``e(f) = w(|f|) (P(f) − P̄(|f|))`` over the radial mean ``P̄`` (noise,
   gradients, the amorphous halo), ``w`` a Gaussian of σ = :data:`~micro_sym.classical.grain_lattice.RING_WIDTH` · f0 around the first-ring
   frequency f0 given by the caller (:func:`micro_sym.classical.lattice_measure3d.measure_lattice_3d`).
3. **Spots.** Local maxima (3³) of ``e`` within :data:`SPOT_BAND` of f0, strongest first, one per
   direction ±n (a real volume's spectrum is symmetric) and at least :data:`SPOT_SEPARATION_DEG`
   apart; each refined per axis by a parabola through ``log e``.
4. **Index.** For each family and each pair of strong spots whose angle matches a pair of the
   family's directions (within :data:`PAIR_TOLERANCE_DEG`), the rotation taking the family pair onto
   the spot pair (a triad) is a candidate; it scores the excess of every spot within
   :data:`MATCH_TOLERANCE_DEG` of one of its rotated family directions. The best candidate is refined
   by weighted Kabsch fits on its matched spots (re-matching in between), then on the whole band
   (:func:`_refine`): each rotated family direction's spot is the mean direction of the band's excess
   under a Gaussian cone one spot wide around it, re-centred until it settles (a mean shift), so every
   frequency of a spot counts, not just its peak (this halved the error on atomistic volumes).
5. **Quality** = matched spots' excess over all spots' excess (1: every spot of the shell is
   explained by the lattice; pure noise: ~0.1). Orientations are reported from :data:`MIN_QUALITY` on.

Accuracy on held-out atomistic volumes: ``bench/studies/grain_orientation3d.py`` (docs/results.md).

Frames (docs/design.md §1.1, §1.3): arrays are ``(z, y, x)``; a frequency ``(f_z, f_y, f_x)`` of array
axes is the volume-frame vector ``(f_x, f_y, f_z)``. The quaternion rotates crystal vectors into
the volume frame, so the spots lie along ``R g`` for the family's crystal directions ``g``.

A whole volume (:func:`grain_orientations`) shares one lattice: with ``family=None`` every grain is
indexed with all three families, the family that explains the most excess over the volume's
confident grains wins, and every grain is re-indexed with it: on its own, a small grain or one whose
missing wedge hid most of its spots fits another family better now and then (7 of 282 grains of the
held-out volumes, each then off by tens of degrees).
"""

from __future__ import annotations

import collections
import itertools
import math
import threading

import numpy as np
from scipy import fft, ndimage

from micro_sym.classical.grain_lattice import RING_WIDTH, tapered, window
from micro_sym.orientation import matrix_to_quat

__all__ = ["FAMILIES", "MIN_QUALITY", "grain_orientation", "grain_orientations", "grain_spots", "index_spots"]

#: Spots are taken within this fraction of f0 of the ring (fcc's {200} ring lies at 1.155 f0).
SPOT_BAND = 0.08
#: Two spots closer than this (either sign) are one spot; the weaker is dropped.
SPOT_SEPARATION_DEG = 6.0
#: Spots kept per grain, strongest first.
MAX_SPOTS = 40
#: Pairs of spots tried as anchors come from the strongest this many.
ANCHOR_SPOTS = 6
#: A pair of spots anchors a family pair whose angle is within this (degrees).
PAIR_TOLERANCE_DEG = 5.0
#: A spot is explained by a rotated family direction within this (degrees).
MATCH_TOLERANCE_DEG = 4.0
#: Orientations are reported from this quality on.
MIN_QUALITY = 0.4
#: Grains with fewer voxels than this many cubes of the first-ring period are not measured.
MIN_CELLS = 8
#: Angular sigma of a spot (for the final fit), in units of 1 / (grain extent · f0).
SPOT_SIGMA = 0.5
#: Largest crop side (voxels) measured per grain.
MAX_WINDOW = 96


def _family(vectors) -> np.ndarray:
    v = np.asarray(vectors, np.float64)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


#: The first-ring reciprocal directions of each cubic family (one of each ± pair), crystal frame.
FAMILIES = {
    "100": _family([[1, 0, 0], [0, 1, 0], [0, 0, 1]]),
    "110": _family([[1, 1, 0], [1, -1, 0], [1, 0, 1], [1, 0, -1], [0, 1, 1], [0, 1, -1]]),
    "111": _family([[1, 1, 1], [1, 1, -1], [1, -1, 1], [-1, 1, 1]]),
}
#: Lattices whose first ring is each family.
FAMILY_LATTICES = {"100": "simple cubic", "110": "bcc", "111": "fcc, diamond"}


# ------------------------------------------------------------------------------------ spectrum


def grain_spots(crop, mask, ring_frequency: float, *, workers: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The first-ring spots of one grain: unit directions ``(n, 3)`` (volume frame ``(x, y, z)``, one
    of each ± pair) and their excess powers ``(n,)``, strongest first.

    ``crop``: ``(Z, Y, X)`` intensities around the grain; ``mask``: the grain's voxels in it.
    """
    dirs, heights, _ = _grain_spectrum(crop, mask, ring_frequency, workers=workers)
    return dirs, heights


#: Most bytes the shell geometries of recent padded sizes keep (least recently used dropped first):
#: one grows with the padded grid, and a large volume's grains need many sizes.
GEOMETRY_CACHE_BYTES = 64 * 2**20
_geometries: collections.OrderedDict = collections.OrderedDict()
_geometries_lock = threading.Lock()


def _shell_geometry(size: tuple, f0: float) -> dict:
    """:func:`_build_shell_geometry`, cached by ``(size, f0)`` up to :data:`GEOMETRY_CACHE_BYTES`."""
    key = (tuple(size), float(f0))
    with _geometries_lock:
        if key in _geometries:
            _geometries.move_to_end(key)
            return _geometries[key][0]
    geo = _build_shell_geometry(*key)
    nbytes = sum(a.nbytes for a in geo.values() if isinstance(a, np.ndarray))
    with _geometries_lock:
        _geometries[key] = (geo, nbytes)
        while len(_geometries) > 1 and sum(n for _, n in _geometries.values()) > GEOMETRY_CACHE_BYTES:
            _geometries.popitem(last=False)
    return geo


def _build_shell_geometry(size: tuple, f0: float) -> dict:
    """What :func:`_grain_spectrum` needs of a padded grid ``size`` around the ring at ``f0``: the
    ``near`` points (ring weight > 1e-3) as flat indices of the fftshifted grid (C order) and of the
    unshifted FFT, their weight and radial bin, the bins' counts, the spot band and the wider band
    (masks over ``near``), and the shifted frequencies per axis. Grains share a few padded sizes."""
    fz, fy, fx = (fft.fftshift(fft.fftfreq(n)) for n in size)
    radius = np.sqrt(fz[:, None, None] ** 2 + fy[None, :, None] ** 2 + fx[None, None, :] ** 2)
    weight = np.exp(-0.5 * ((radius - f0) / (RING_WIDTH * f0)) ** 2)
    near = np.flatnonzero(weight > 1e-3)
    step = 1.0 / min(size)
    bins = np.minimum((radius / step).astype(np.int64), int(0.9 / step))
    r = radius.ravel()[near]
    shifted = np.unravel_index(near, size)
    unshifted = np.ravel_multi_index(tuple((c - n // 2) % n for c, n in zip(shifted, size)), size)  # fftshift moves 0 to n // 2
    geo = {"near": near, "unshifted": unshifted, "weight": weight.ravel()[near], "bins": bins.ravel()[near],
           "counts": np.bincount(bins.ravel()[near], minlength=bins.max() + 1),
           "band": np.abs(r - f0) <= SPOT_BAND * f0, "inband": np.abs(r - f0) <= 2 * SPOT_BAND * f0,
           "freqs": (fz, fy, fx)}
    for a in geo.values():
        if isinstance(a, np.ndarray):
            a.flags.writeable = False  # shared between grains and threads
    return geo


def _local_maxima(values, idx) -> np.ndarray:
    """Whether each point ``idx`` (rows of indices) is at least every one of its 26 neighbours, points
    beyond the grid counting as 0: ``values == maximum_filter(values, 3, mode="constant")`` there."""
    shape = np.array(values.shape)
    keep = np.ones(len(idx), bool)
    here = values[tuple(idx.T)]
    for off in itertools.product((-1, 0, 1), repeat=3):
        if off == (0, 0, 0):
            continue
        nb = idx + off
        inside = ((nb >= 0) & (nb < shape)).all(1)
        v = np.where(inside, values[tuple(np.clip(nb, 0, shape - 1).T)], 0.0)
        keep &= here >= v
    return keep


def _grain_spectrum(crop, mask, ring_frequency: float, *, workers: int = 1):
    """:func:`grain_spots` and the band's positive excess ``(directions (m, 3), excess (m,), sigma)``,
    ``sigma`` the angular width (radians) of a spot of this grain, for :func:`_refine`."""
    f0 = float(ring_frequency)
    period = 1.0 / f0
    crop = np.asarray(crop, np.float64)
    finite = np.asarray(mask, bool) & np.isfinite(crop)
    empty = np.zeros((0, 3)), np.zeros(0), None
    if finite.sum() < 2:
        return empty
    signal = tapered(crop, finite, period)
    size = tuple(fft.next_fast_len(max(2 * n, math.ceil(12 * period))) for n in crop.shape)
    geo = _shell_geometry(size, f0)
    near = geo["near"]  # flat indices of the fftshifted grid, in C order (as a boolean mask selects them)
    spectrum = fft.fftn(signal, s=size, workers=workers).ravel()[geo["unshifted"]]
    power = np.abs(spectrum) ** 2
    sums = np.bincount(geo["bins"], power, minlength=len(geo["counts"]))
    excess_near = (power - (sums / np.maximum(geo["counts"], 1))[geo["bins"]]) * geo["weight"]
    excess = np.zeros(size)
    excess.ravel()[near] = excess_near
    positive = excess_near > 0
    inband = np.column_stack(np.unravel_index(near[geo["inband"] & positive], size))
    fz, fy, fx = geo["freqs"]
    bfreq = np.stack([fx[inband[:, 2]], fy[inband[:, 1]], fz[inband[:, 0]]], axis=1)
    bdirs = bfreq / np.linalg.norm(bfreq, axis=1, keepdims=True)
    # A spot's angular sigma: the grain's extent L spreads it over ~1/L in frequency.
    extent = float(finite.sum()) ** (1.0 / 3.0)
    shell = (bdirs, excess[tuple(inband.T)], float(np.clip(SPOT_SIGMA / (extent * f0), math.radians(1.0),
                                                             math.radians(8.0))))
    idx = np.column_stack(np.unravel_index(near[geo["band"] & positive], size))
    idx = idx[_local_maxima(excess, idx)]  # the band's local maxima over 3³ (zero beyond the grid)
    if not len(idx):
        return empty
    height = excess[tuple(idx.T)]
    order = np.argsort(-height, kind="stable")
    idx, height = idx[order], height[order]
    # Sub-bin position: a parabola through log e per axis.
    pos = idx.astype(np.float64)
    floor = height.min() * 1e-6

    def loge(points):
        return np.log(np.maximum(excess[tuple(points.T)], floor))

    centre = loge(idx)
    shape = np.array(excess.shape)
    for axis in range(3):
        step_ = np.zeros(3, np.int64)
        step_[axis] = 1
        lo = np.clip(idx - step_, 0, shape - 1)
        hi = np.clip(idx + step_, 0, shape - 1)
        a, c = loge(lo), loge(hi)
        den = a - 2 * centre + c
        pos[:, axis] += np.where(den < 0, np.clip(0.5 * (a - c) / np.where(den < 0, den, -1.0), -0.5, 0.5), 0.0)
    freq = np.stack([(pos[:, 2] - size[2] // 2) / size[2], (pos[:, 1] - size[1] // 2) / size[1],
                     (pos[:, 0] - size[0] // 2) / size[0]], axis=1)  # (x, y, z)
    dirs = freq / np.linalg.norm(freq, axis=1, keepdims=True)
    # One spot per ± direction, at least SPOT_SEPARATION_DEG apart (the mate and side lobes go).
    cos_sep = math.cos(math.radians(SPOT_SEPARATION_DEG))
    keep: list[int] = []
    for i in range(len(dirs)):
        if keep and np.max(np.abs(dirs[keep] @ dirs[i])) > cos_sep:
            continue
        keep.append(i)
        if len(keep) >= MAX_SPOTS:
            break
    return dirs[keep], height[keep], shell


# ------------------------------------------------------------------------------------ indexing


def _triad(a1, a2, b1, b2) -> np.ndarray:
    """The rotation taking ``a1`` onto ``b1`` and the plane (a1, a2) onto (b1, b2)."""
    def cross(u, v):  # np.cross's arithmetic, without its per-call overhead (called per spot pair)
        return np.array([u[1] * v[2] - u[2] * v[1], u[2] * v[0] - u[0] * v[2], u[0] * v[1] - u[1] * v[0]])

    def frame(u, v):
        e1 = u / np.linalg.norm(u)
        e3 = cross(u, v)
        e3 /= np.linalg.norm(e3)
        return np.stack([e1, cross(e3, e1), e3], axis=1)

    return frame(b1, b2) @ frame(a1, a2).T


def _match(rot, family, dirs):
    """Per spot: cosine to the nearest rotated family direction (either sign), its index and sign."""
    dots = dirs @ (rot @ family.T)  # (n_spots, n_family)
    best = np.argmax(np.abs(dots), axis=1)
    d = dots[np.arange(len(dirs)), best]
    return np.abs(d), best, np.sign(d)


def _kabsch(g, p, w) -> np.ndarray:
    """The rotation ``R`` minimising ``Σ w |p − R g|²``."""
    h = (g * w[:, None]).T @ p
    u, _, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(vt.T @ u.T))
    return vt.T @ np.diag([1.0, 1.0, d]) @ u.T


def _refine(rot, family, shell, iterations: int = 20, tolerance_deg: float = 0.005) -> np.ndarray:
    """Refit ``rot`` to the whole band: each rotated family direction's spot is the mean direction of
    the band's excess under a Gaussian cone (sigma = a spot's width) around it, then a Kabsch fit of
    all of them weighted by their excess, repeated (a mean shift) until the rotation moves less than
    ``tolerance_deg``."""
    bdirs, bexcess, sigma = shell
    cos_tol = math.cos(math.radians(tolerance_deg))
    for _ in range(iterations):
        targets = rot @ family.T  # (3, k)
        dots = bdirs @ targets  # (m, k)
        sign = np.sign(dots)
        w = bexcess[:, None] * np.exp(-(1.0 - np.abs(dots)) / (sigma * sigma))  # 1 - cos ≈ θ²/2
        p = np.einsum("mk,mk,mi->ki", w, sign, bdirs)
        mass = w.sum(0)
        good = mass > 1e-6 * max(mass.max(), 1e-300)
        if good.sum() < 2:
            break
        p = p[good] / np.linalg.norm(p[good], axis=1, keepdims=True)
        new = _kabsch(family[good], p, mass[good])
        moved = 0.5 * (np.trace(new @ rot.T) - 1.0)  # cosine of the step's rotation angle
        rot = new
        if moved >= cos_tol:
            break
    return rot


def index_spots(dirs, heights, families=None, shell=None) -> dict:
    """The cubic orientation that explains the most spot excess.

    Returns ``{"matrix" (3, 3) crystal -> volume, "quaternion" (4,), "family", "quality",
    "n_matched", "score"}``; ``family`` None (and NaN orientation, quality 0) when no pair of spots
    matches any family.
    """
    families = list(FAMILIES) if families is None else [families] if isinstance(families, str) else list(families)
    dirs = np.asarray(dirs, np.float64).reshape(-1, 3)
    heights = np.asarray(heights, np.float64).reshape(-1)
    total = float(heights.sum())
    none = {"matrix": np.full((3, 3), np.nan), "quaternion": np.full(4, np.nan), "family": None, "quality": 0.0,
            "n_matched": 0, "score": 0.0}
    if len(dirs) < 2 or total <= 0:
        return none
    cos_match = math.cos(math.radians(MATCH_TOLERANCE_DEG))
    best = None
    n_anchor = min(ANCHOR_SPOTS, len(dirs))
    for name in families:
        fam = FAMILIES[name]
        pairs = [(a, b, abs(float(fam[a] @ fam[b]))) for a, b in itertools.permutations(range(len(fam)), 2)]
        for i, j in itertools.combinations(range(n_anchor), 2):
            c = float(dirs[i] @ dirs[j])
            angle = math.degrees(math.acos(min(abs(c), 1.0)))
            if angle < 20.0:
                continue
            for a, b, cab in pairs:
                if abs(math.degrees(math.acos(min(cab, 1.0))) - angle) > PAIR_TOLERANCE_DEG:
                    continue
                gb = fam[b] * (np.sign(fam[a] @ fam[b]) * np.sign(c) if cab > 1e-9 else 1.0)
                rot = _triad(fam[a], gb, dirs[i], dirs[j])
                cosines, _, _ = _match(rot, fam, dirs)
                score = float(heights[cosines >= cos_match].sum())
                if best is None or score > best[0]:
                    best = (score, name, rot)
    if best is None:
        return none
    score, name, rot = best
    fam = FAMILIES[name]
    for _ in range(3):
        cosines, which, sign = _match(rot, fam, dirs)
        ok = cosines >= cos_match
        if ok.sum() < 2:
            break
        g = fam[which[ok]] * sign[ok, None]
        if np.linalg.matrix_rank(g, tol=0.1) < 2:
            break
        rot = _kabsch(g, dirs[ok], heights[ok])
    if shell is not None:
        rot = _refine(rot, fam, shell)
    cosines, _, _ = _match(rot, fam, dirs)
    ok = cosines >= cos_match
    score = float(heights[ok].sum())
    return {"matrix": rot, "quaternion": matrix_to_quat(rot), "family": name, "quality": score / total,
            "n_matched": int(ok.sum()), "score": score}


def grain_orientation(crop, mask, ring_frequency: float, *, families=None, workers: int = 1) -> dict:
    """One grain's orientation: :func:`index_spots` of :func:`grain_spots`."""
    dirs, heights, shell = _grain_spectrum(crop, mask, ring_frequency, workers=workers)
    return index_spots(dirs, heights, families, shell)


# ------------------------------------------------------------------------------------ volumes


def grain_orientations(volume, labels, *, ring_frequency: float, ids=None, family=None,
                       min_quality: float = MIN_QUALITY, workers: int = 1) -> dict:
    """Every grain's measured orientation: ``{"ids", "quaternions" (n, 4), "quality" (n,), "family"
    (n,) str, "volume_family"}``.

    Parameters
    ----------
    volume : (Z, Y, X) array
        Intensities (non-finite voxels count as the grain's mean).
    labels : (Z, Y, X) integer array
        Grain ids, 0 = none.
    ring_frequency : float
        The volume's first lattice ring, cycles/voxel (``measure_lattice_3d(volume)["ring_frequency"]``).
    ids : sequence of int, optional
        The grains to report, in this order (default: every id present). A grain smaller than
        :data:`MIN_CELLS` periods³ gets NaN, quality 0 and family ``""``.
    family : "100", "110", "111" or None
        The lattice's first-ring family if known; None: chosen for the whole volume (module docstring).
    min_quality : float
        Quaternions below this quality are NaN (their quality is still given).
    """
    volume = np.asarray(volume)
    labels = np.asarray(labels)
    f0 = float(ring_frequency)
    period = 1.0 / f0
    if labels.dtype not in (np.int32, np.uint32, np.int64):
        labels = labels.astype(np.int64)
    found = ndimage.find_objects(labels) if labels.size else []
    ids = (np.array([g for g in range(1, len(found) + 1) if found[g - 1] is not None], np.int64)
           if ids is None else np.asarray(ids, np.int64).reshape(-1))
    spots = []
    for g in ids:
        box = found[g - 1] if 0 < g <= len(found) else None
        if box is None:
            spots.append(None)
            continue
        mask = labels[box] == g
        if mask.sum() < MIN_CELLS * period ** 3:
            spots.append(None)
            continue
        box, mask = window(box, mask, MAX_WINDOW)
        spots.append(_grain_spectrum(volume[box], mask, f0, workers=workers))
    fits = [None if s is None else index_spots(s[0], s[1], family, s[2]) for s in spots]
    chosen = family
    if family is None:
        votes = {name: 0.0 for name in FAMILIES}
        for fit in fits:
            if fit is not None and fit["family"] is not None and fit["quality"] >= min_quality:
                votes[fit["family"]] += fit["quality"]
        if max(votes.values()) > 0:
            chosen = max(votes, key=votes.get)
            fits = [None if s is None else index_spots(s[0], s[1], chosen, s[2]) for s in spots]
    n = len(ids)
    quats = np.full((n, 4), np.nan)
    quality = np.zeros(n)
    fam = np.full(n, "", dtype=object)
    for k, fit in enumerate(fits):
        if fit is None or fit["family"] is None:
            continue
        quality[k] = fit["quality"]
        fam[k] = fit["family"]
        if fit["quality"] >= min_quality:
            quats[k] = fit["quaternion"]
    return {"ids": ids, "quaternions": quats, "quality": quality, "family": fam.astype(str),
            "volume_family": chosen}

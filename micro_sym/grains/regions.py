"""Region merging: grains from the smooth orientation maps that networks predict.

Why a second stage
------------------
The neighbour-pair rule (:func:`micro_sym.grains.reconstruct_grains`) is exact for measured maps
(EBSD), where the orientation jumps from one pixel to the next at a boundary. A network's
orientation output is smooth: across a 6-14° low-angle boundary it turns over 3-5 pixels, so no
pixel pair exceeds 5° and a single short gap in the predicted boundary merges two grains. And the
boundary head also fires on 1-4° sub-grain boundaries, which by the 5° rule are *inside* a grain.
Both are fixed by comparing **regions** instead of pixels:

1. pixel pairs join at a tighter ``pair_threshold`` (a smooth turn of a few degrees per pixel still
   splits, noise inside a grain does not), with the predicted boundary cutting as usual;
2. regions that touch, or face each other across a predicted boundary at most ``reach`` pixels
   wide, are merged greedily, most similar pair first, while the misorientation of their mean
   orientations is at most ``threshold`` (the grain threshold, 5° by default). Means are updated
   after every merge, so a thin transition strip joins one side and the two grains stay apart.

The merge works on the region graph only (:func:`merge_similar_regions`: region sizes, orientation
sums and adjacency), so the block-wise engine (:mod:`micro_sym.grains.blockwise`) applies the very
same function to its global graph and gets the whole-image grains.

>>> import numpy as np
>>> ang = np.zeros((4, 9), np.float32); ang[:, 3:] = 3.0; ang[:, 6:] = 9.0
>>> merge_regions(np.array([[1, 1, 1, 2, 2, 2, 3, 3, 3]] * 4), ang, k=4, threshold=5.0).tolist()[0]
[1, 1, 1, 1, 1, 1, 2, 2, 2]
"""

from __future__ import annotations

import heapq
import math

import numpy as np

from micro_sym.errors import MicroSymError
from micro_sym.orientation.symmetry import lattice as find_lattice

#: Pixel pairs join at this fraction of the grain threshold (3.5° for the 5° rule): chosen on a
#: tuning set (``bench/studies/tune_grain_rule.py``, docs/results.md).
PAIR_FRACTION = 0.7
#: Regions this many pixels apart along an axis are neighbours: bridges predicted boundaries up to
#: 3 px wide, the width the boundary head draws (same tuning run).
REACH = 4
#: Misorientations are compared after rounding to this many decimals, so that sums accumulated in a
#: different order (block-wise vs whole image) cannot reorder near-equal merges.
_DECIMALS = 9


def region_rule(threshold: float) -> dict:
    """The region-merging rule for 2D network maps (the product's rule before the seeded one of
    :mod:`micro_sym.grains.rules`; kept for comparisons): pixel pairs at :data:`PAIR_FRACTION` of
    ``threshold``, then region merging at ``threshold`` within :data:`REACH` px."""
    return {"pair_threshold": PAIR_FRACTION * float(threshold), "merge_threshold": float(threshold), "reach": REACH,
            "core_radius": None, "steps": 0}


def region_orientation_sums(labels, orientation, k: int) -> np.ndarray:
    """Per-label sums of ``(cos kθ, sin kθ)``; row ``i`` is label ``i`` (row 0: label 0, unused)."""
    labels = np.asarray(labels)
    n = int(labels.max()) if labels.size else 0
    flat = labels.ravel().astype(np.int64)
    fg = flat > 0
    t = np.deg2rad(np.asarray(orientation, np.float64).ravel()[fg]) * k
    lab = flat[fg]
    return np.stack([np.bincount(lab, weights=np.cos(t), minlength=n + 1),
                     np.bincount(lab, weights=np.sin(t), minlength=n + 1)], 1)


def near_pairs(labels, reach: int = 2) -> np.ndarray:
    """Pairs ``(a, b)``, ``a < b``, of different labels > 0 at most ``reach`` pixels apart along an axis.

    With ``reach=1`` these are face neighbours; a larger reach also pairs regions that face each
    other across a boundary band (label 0) up to ``reach - 1`` pixels wide.
    """
    from micro_sym.grains._kernels import near_pair_keys

    keys, base = near_pair_keys(np.asarray(labels), reach)
    return _keys_to_pairs(keys, base)


def unique_pairs(a, b) -> np.ndarray:
    """Sorted unique ``(min, max)`` rows of the label pairs ``(a[i], b[i])`` that differ and are > 0."""
    a, b = np.asarray(a, np.int64).ravel(), np.asarray(b, np.int64).ravel()
    base = int(max(a.max(initial=0), b.max(initial=0))) + 1
    return _keys_to_pairs(_pair_keys(a, b, base), base)


def _pair_keys(a, b, base: int) -> np.ndarray:
    """Unique ``min * base + max`` codes of the differing, non-zero label pairs of ``a`` and ``b``."""
    a, b = np.asarray(a, np.int64).ravel(), np.asarray(b, np.int64).ravel()
    sel = (a != b) & (a > 0) & (b > 0)
    a, b = a[sel], b[sel]
    return np.unique(np.minimum(a, b) * base + np.maximum(a, b))


def _keys_to_pairs(keys, base: int) -> np.ndarray:
    return np.stack(np.divmod(keys, base), 1).astype(np.int64)


def merge_similar_regions(n: int, ori_sum, pairs, *, threshold: float, k: int) -> np.ndarray:
    """Greedy merging of adjacent regions by the misorientation of their mean orientations.

    Parameters
    ----------
    n : int
        Regions are ``1..n``.
    ori_sum : (n + 1, 2) array
        Per-region sums of ``(cos kθ, sin kθ)`` (row 0 unused): the mean direction is their angle,
        and a sum weights a region by its size, so merged means stay exact.
    pairs : (m, 2) array of int
        Adjacent regions.
    threshold : float
        Merging stops when the most similar adjacent pair differs by more than this (degrees).
    k : int
        Rotational order of the lattice (4 square, 6 hexagonal, 2 fringes).

    Returns
    -------
    ndarray of int64, shape (n + 1,)
        ``mapping[old]``: consecutive ids in order of each merged set's smallest old id (0 stays 0).
    """
    from micro_sym.grains.reconstruct import resolve_equivalences

    k = find_lattice(k, ndim=2, where="region merging").k
    sums = np.array(ori_sum, np.float64).reshape(n + 1, 2)
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    period = 360.0 / k
    # Plain Python floats: the loop below is scalar work, where numpy scalars are slow.
    cx, cy = sums[:, 0].tolist(), sums[:, 1].tolist()
    angle = [math.degrees(math.atan2(y, x)) / k for x, y in zip(cx, cy)]

    def mis(i, j):
        d = angle[i] - angle[j]
        return round(abs((d + period / 2) % period - period / 2), _DECIMALS)

    neighbours = [set() for _ in range(n + 1)]
    for a, b in pairs.tolist():
        neighbours[a].add(b)
        neighbours[b].add(a)
    version = [0] * (n + 1)
    heap = [(mis(a, b), a, b, 0, 0) for a, b in pairs.tolist()]
    heapq.heapify(heap)
    merged = []
    while heap:
        d, a, b, va, vb = heapq.heappop(heap)
        if d > threshold:
            break
        if va != version[a] or vb != version[b]:
            continue  # one side has merged since this entry was pushed
        # The smaller id absorbs the larger: merged sets keep raster order of their first pixel.
        keep, gone = (a, b) if a < b else (b, a)
        merged.append((keep, gone))
        cx[keep] += cx[gone]
        cy[keep] += cy[gone]
        angle[keep] = math.degrees(math.atan2(cy[keep], cx[keep])) / k
        version[keep] += 1
        version[gone] = -1
        neighbours[keep] |= neighbours[gone]
        neighbours[keep] -= {keep, gone}
        for t in neighbours[gone]:
            if t != keep:
                neighbours[t].discard(gone)
                neighbours[t].add(keep)
        neighbours[gone] = set()
        for t in neighbours[keep]:
            lo, hi = (keep, t) if keep < t else (t, keep)
            heapq.heappush(heap, (mis(lo, hi), lo, hi, version[lo], version[hi]))
    return resolve_equivalences(n, merged)


def merge_regions(labels, orientation, *, k: int, threshold: float = 5.0, reach: int = 2) -> np.ndarray:
    """Merge the regions of a label map whose mean orientations are within ``threshold`` degrees.

    Parameters
    ----------
    labels : ndarray of int
        Regions (0 = boundary / not a region), e.g. from ``reconstruct_grains(..., min_size=0)``.
    orientation : ndarray
        2D lattice angles in degrees, same shape.
    k : int
        4 (square) or 6 (hexagonal).
    threshold : float
        Grain misorientation threshold, degrees.
    reach : int
        Regions up to this many pixels apart along an axis count as adjacent (see :func:`near_pairs`).

    Returns
    -------
    ndarray of uint32
        Merged labels, consecutive from 1 in order of each grain's smallest input label.
    """
    labels = np.asarray(labels)
    if labels.shape != np.shape(orientation):
        raise MicroSymError(f"region merging: labels {labels.shape} and orientation {np.shape(orientation)} differ in shape")
    n = int(labels.max()) if labels.size else 0
    mapping = merge_similar_regions(n, region_orientation_sums(labels, orientation, k), near_pairs(labels, reach),
                                    threshold=threshold, k=k)
    return mapping[labels].astype(np.uint32)

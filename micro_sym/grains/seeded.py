"""Seeded grains: a network's boundary map with holes still separates the grains it outlines.

Why
---
In 3D a predicted boundary must be a closed *surface*: one hole joins two grains under the
neighbour-pair rule, because a network's orientation output turns smoothly across the hole.
Interiors far from any predicted boundary do not leak, so grains are grown from them:

1. **core**: points with no predicted boundary point within ``core_radius`` (Euclidean); holes
   narrower than about twice the radius do not connect two cores;
2. **seeds**: connected components of the core by the pair rule (docs/design.md §3), in 2D optionally
   merged with seeds of similar mean orientation nearby (``reach``), then seeds smaller than
   ``min_size`` points dropped (so no grain ends up smaller than that);
3. **flood**: every other non-boundary point joins the seed it reaches over the lowest boundary
   probability (the highest probability on the path is what counts, as in a watershed), on paths of
   at most ``steps`` points; ties go to the neighbour of most similar orientation, then to the
   smaller label. Points no seed reaches stay 0.

The flood is bounded on purpose: a point's label depends only on the maps within ``steps`` (+ the
core radius) of it, which a block-wise engine can reproduce exactly with that halo; an unbounded
watershed cannot be tiled. ``bench/studies/study_grains3d.py`` measures it against the pair rule.
"""

from __future__ import annotations

import numpy as np

from micro_sym.errors import MicroSymError

#: Defaults chosen on validation volumes of the 3D generator (``bench/studies/study_grains3d.py``).
CORE_RADIUS = 3.5
FLOOD_STEPS = 8


def core_mask(boundary_mask: np.ndarray, radius: float) -> np.ndarray:
    """True where no ``boundary_mask`` point lies within ``radius`` (Euclidean, points)."""
    from micro_sym.grains._kernels import within_radius

    return ~within_radius(boundary_mask, radius)


def pair_similarity(orientation, kind, axis: int, free=None) -> np.ndarray:
    """Similarity of each point to its neighbour at +1 along ``axis`` (larger = closer; NaN -> -inf).

    Quaternions: the largest scalar part over the symmetry rotations (cos of half the
    misorientation); harmonic fields: their inner product; angles: minus the misorientation in degrees. ``free`` (spatial bool, optional):
    angle maps compute only the pairs with a free point, which are all the flood reads; the others
    get -inf.
    """
    from micro_sym.grains.reconstruct import _pair_max_scalar, _shift_slices

    spatial = orientation.shape[1:] if kind.channel_axis else orientation.shape
    off = [0] * len(spatial)
    off[axis] = 1
    lo, hi = _shift_slices(spatial, off)
    if not kind.channel_axis:
        from micro_sym.grains._kernels import angle_similarity

        # -misorientation_2d(...) as float32, NaN -> -inf, in one pass without float64 temporaries.
        need = None if free is None else free[lo] | free[hi]
        return angle_similarity(orientation[lo], orientation[hi], kind.k, need)
    if kind.kind == "field":
        from micro_sym.grains._kernels import field_dots_shifted

        s = field_dots_shifted(orientation, lo, hi)
    else:
        s = _pair_max_scalar(orientation[(slice(None),) + lo], orientation[(slice(None),) + hi], kind)
    return np.nan_to_num(np.asarray(s, np.float32), nan=-np.inf)


def flood(seeds, boundary, free, sims, steps: int = FLOOD_STEPS) -> np.ndarray:
    """Grow ``seeds`` (labels > 0) into the ``free`` points over ``boundary`` probability, ``steps`` rounds.

    Parameters
    ----------
    seeds : ndarray of int
        Seed labels, 0 elsewhere.
    boundary : ndarray
        Boundary probability (the flood level).
    free : ndarray of bool
        Points that may receive a label (not seeds, not boundary, valid orientation).
    sims : sequence of ndarray
        :func:`pair_similarity` along each axis (tie-break).
    """
    from micro_sym.grains._kernels import _as_3d, _flood

    labels = _as_3d(np.array(seeds, np.int64))
    level = np.full(labels.shape, np.inf, np.float32)
    level[labels > 0] = -np.inf
    empty = np.zeros((0,) * 3, np.float32)
    sims3 = [empty] * (3 - len(sims)) + [_as_3d(np.ascontiguousarray(s)) for s in sims]
    _flood(labels, level, _as_3d(np.ascontiguousarray(boundary, np.float32)), _as_3d(np.ascontiguousarray(free)),
           sims3[0], sims3[1], sims3[2], int(steps))
    return labels.reshape(np.shape(seeds))


def grow_seeds(orientation, boundary, seeds, kind, *, boundary_threshold: float = 0.5,
               steps: int = FLOOD_STEPS) -> np.ndarray:
    """Step 3 of the rule: flood ``seeds`` into the other valid, non-boundary points (int64 labels)."""
    from micro_sym.grains.reconstruct import _valid_mask

    free = _valid_mask(orientation, kind, seeds.shape, boundary, boundary_threshold, None) & (seeds == 0)
    sims = [pair_similarity(orientation, kind, ax, free) for ax in range(seeds.ndim)]
    return flood(seeds, boundary, free, sims, steps)


def seeded_grains(orientation, boundary, *, symmetry: str | None = None, threshold: float = 5.0,
                  boundary_threshold: float = 0.5, core_radius: float = CORE_RADIUS, steps: int = FLOOD_STEPS,
                  min_size: int = 32, reach: int = 0) -> np.ndarray:
    """Grains from a predicted boundary probability and orientation map (2D or 3D), grown from seeds.

    Parameters
    ----------
    orientation : ndarray
        As :func:`micro_sym.grains.reconstruct_grains` (angles ``(y, x)`` or quaternions ``(4, ...)``).
    boundary : ndarray
        Boundary probability, spatial shape; ``>= boundary_threshold`` is boundary (label 0).
    threshold : float
        Pair-rule misorientation within a seed, degrees.
    core_radius, steps, min_size :
        See the module docstring.
    reach : int
        2D angle maps: > 0 merges seeds whose mean orientations are within ``threshold`` and that lie
        within ``reach`` px of each other (:func:`micro_sym.grains.regions.merge_regions`), before
        small seeds are dropped and the flood. Seeds of one grain split by a sub-grain boundary that
        the network drew face each other across the boundary band and two core margins.

    Returns
    -------
    ndarray of uint32
        Grain ids consecutive from 1 in raster order of their seeds' first point; 0 = boundary or unreached.
    """
    from micro_sym.grains.reconstruct import _valid_mask, filter_small_grains, orientation_kind, reconstruct_grains

    orientation = np.asarray(orientation)
    boundary = np.asarray(boundary)
    kind = orientation_kind(orientation.shape, symmetry)
    spatial = orientation.shape[1:] if kind.channel_axis else orientation.shape
    if boundary.shape != spatial:
        raise MicroSymError(f"boundary: shape {boundary.shape} does not match the orientation map {spatial}")
    if core_radius < 0 or steps < 0:
        raise MicroSymError(f"seeded grains: core_radius and steps must be >= 0, got {core_radius}, {steps}")
    valid = _valid_mask(orientation, kind, spatial, boundary, boundary_threshold, None)
    core = valid & core_mask(boundary >= boundary_threshold, core_radius)
    seeds = reconstruct_grains(orientation, symmetry=kind.symmetry, threshold=threshold, connectivity=1, mask=core,
                               min_size=0)
    if reach > 0:  # merged before the size filter, the order of the block engine's graph step
        from micro_sym.grains.regions import merge_regions

        if kind.channel_axis:
            raise MicroSymError("seeded grains: merging seeds (reach > 0) needs a 2D angle map")
        seeds = merge_regions(seeds, orientation, k=kind.k, threshold=threshold, reach=reach)
    seeds = filter_small_grains(seeds, min_size, small="drop") if min_size > 1 else seeds
    # The flood only spreads the seeds' ids, which are consecutive already.
    return grow_seeds(orientation, boundary, seeds, kind, boundary_threshold=boundary_threshold,
                      steps=steps).astype(np.uint32)

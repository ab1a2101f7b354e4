"""The grain rule for network maps: which parameters, and applying it to a whole image.

Measured maps (EBSD) use the plain neighbour-pair rule of docs/design.md §3. A network's maps get the
*seeded* rule of :mod:`micro_sym.grains.seeded` (pair-rule seeds of the points well inside the
predicted boundaries, in 2D merged with similar seeds nearby, small seeds dropped, then a bounded
flood), because its boundary map has holes and its orientation turns smoothly across them. One
dict describes a rule, so whole-image segmentation (:func:`grains_by_rule`), the block engine and
the napari plugin apply the same one; a ``core_radius`` of ``None`` means the plain pair rule.
"""

from __future__ import annotations

import numpy as np

#: 2D defaults, lengths in model pixels (:func:`at_scale`): 1.4 times those first chosen on the
#: analytic tuning sets with default-2d (2.5, 4, 12; ``bench/studies/study_grains2d_seeded.py``), the
#: factor chosen on atomistic validation images (``bench/studies/grain_rule_scale.py``; docs/results.md).
SEEDED_2D = {"core_radius": 3.5, "steps": 6, "reach": 17}
#: 3D defaults, lengths in model voxels (:func:`at_scale`), chosen on validation volumes at the model's
#: own sampling (``bench/studies/study_grains3d.py``; docs/results.md).
SEEDED_3D = {"core_radius": 3.5, "steps": 8, "reach": 0}


def pair_rule(threshold: float) -> dict:
    """The plain neighbour-pair rule at ``threshold`` degrees (measured maps, the classical method)."""
    return {"pair_threshold": float(threshold), "merge_threshold": None, "reach": 0, "core_radius": None, "steps": 0}


def network_rule(threshold: float, ndim: int = 2) -> dict:
    """Seeded-grain parameters for network maps at the grain ``threshold`` (degrees).

    Seeds join pixel pairs at ``threshold``; 2D seeds merge while their mean orientations are within
    ``threshold`` and they lie within ``reach`` px; 3D seeds are not merged (region means of
    quaternions are not implemented).
    """
    p = SEEDED_2D if ndim == 2 else SEEDED_3D
    return {"pair_threshold": float(threshold), "merge_threshold": float(threshold) if p["reach"] else None,
            "reach": p["reach"], "core_radius": p["core_radius"], "steps": p["steps"]}


def at_scale(rule: dict, factor: float) -> dict:
    """``rule`` for maps sampled ``factor`` input pixels per model pixel (a network run on the image
    resampled to its training period, its maps brought back to the input grid).

    The seeded rule's lengths (core radius, seed-merge reach, flood steps) were chosen on maps at the
    model's own sampling, so they are lengths in model pixels: on an image at twice the model's
    period the predicted boundaries and the holes in them are twice as wide in input pixels, and a
    core radius left at its model-pixel value finds cores through the widened holes that join the
    grains on either side. Scaled, the rule finds the same grains at any sampling. Angles and the
    pair rule are unchanged.
    """
    if not is_seeded(rule) or factor == 1:
        return rule
    return {**rule, "core_radius": rule["core_radius"] * factor, "reach": int(round(rule["reach"] * factor)),
            "steps": max(1, int(round(rule["steps"] * factor)))}


def is_seeded(rule: dict) -> bool:
    return rule.get("core_radius") is not None


def seed_margin(rule: dict) -> int:
    """How far (points) beyond a block the boundary map must be known to find the block's seed core."""
    return int(np.ceil(rule["core_radius"])) if is_seeded(rule) else 0


def grains_by_rule(orientation, boundary, rule: dict, *, symmetry: str, min_size: int = 32,
                   boundary_threshold: float = 0.5) -> np.ndarray:
    """Grain labels of a whole map by ``rule`` (uint32, 0 = boundary or unassigned).

    Seeded: :func:`micro_sym.grains.seeded.seeded_grains` (seeds under ``min_size`` dropped).
    Pair rule: :func:`micro_sym.grains.reconstruct_grains`, then 2D region merging when
    ``merge_threshold`` is set, then small grains merged into a neighbour.
    """
    from micro_sym.grains.reconstruct import filter_small_grains, orientation_kind, reconstruct_grains
    from micro_sym.grains.regions import merge_regions
    from micro_sym.grains.seeded import seeded_grains

    if is_seeded(rule):
        return seeded_grains(orientation, boundary, symmetry=symmetry, threshold=rule["pair_threshold"],
                             boundary_threshold=boundary_threshold, core_radius=rule["core_radius"],
                             steps=rule["steps"], min_size=min_size, reach=rule["reach"])
    labels = reconstruct_grains(orientation, symmetry=symmetry, threshold=rule["pair_threshold"], connectivity=1,
                                boundary=boundary, boundary_threshold=boundary_threshold, min_size=0)
    if rule.get("merge_threshold") is not None:
        k = orientation_kind(np.shape(orientation), symmetry).k
        labels = merge_regions(labels, orientation, k=k, threshold=rule["merge_threshold"], reach=rule["reach"])
    return filter_small_grains(labels, min_size, small="merge").astype(np.uint32)

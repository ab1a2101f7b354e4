"""Whole-image inference with a :class:`~micro_sym.models.SegModel`: maps, then grains.

>>> from micro_sym.models import load_model                       # doctest: +SKIP
>>> model = load_model("default-2d", export=True)                 # doctest: +SKIP
>>> out = segment_image(model, image)                             # doctest: +SKIP
>>> out["grains"].max(), out["orientation"].dtype                 # doctest: +SKIP
(57, dtype('float32'))

For images larger than memory use the tiled engine (``micro_sym.inference``), which follows the same
normalization (:func:`micro_sym.models.intensity_range` of the whole image) and the model's ``halo``.
"""

from __future__ import annotations

import math

import numpy as np

from micro_sym.errors import MicroSymError
from micro_sym.inference.network import as_network
from micro_sym.inference.tiles import predict_array, predict_raw
from micro_sym.orientation.symmetry import lattice

#: Grains smaller than this (pixels) are merged into a neighbour; a lattice-resolved grain is much
#: larger than the few-pixel specks a noisy boundary map leaves between boundary branches.
DEFAULT_MIN_SIZE = 32
#: Lattice cells a network's grain seed must hold where the image's lattice is known (docs/design.md
#: §6.3; chosen by ``bench/studies/seed_min_cells.py``: the most that keeps the analytic renderer's
#: small grains within 3 points of grain F1).
SEED_MIN_CELLS = 2


def default_min_size(ring_frequency: float | None) -> int:
    """The seeded rule's default smallest seed, in pixels: :data:`SEED_MIN_CELLS` cells of the lattice's
    first-ring spacing ``1 / ring_frequency`` where the lattice mask knows it, else :data:`DEFAULT_MIN_SIZE`.

    Patches of vacuum noise or amorphous speckle that pass the ring-contrast mask, where the network's
    boundary map has holes, give seeds of a cell or two; a grain that shows its lattice holds more.
    """
    if not ring_frequency:
        return DEFAULT_MIN_SIZE
    return max(DEFAULT_MIN_SIZE, int(math.ceil(SEED_MIN_CELLS / float(ring_frequency) ** 2)))


def grain_min_size(min_size: int | None, ring_frequency: float | None = None, *, seeded: bool = True) -> int:
    """The smallest grain a run uses: ``min_size`` where given, else :func:`default_min_size` of the
    lattice mask's ring for the seeded rule of a network's maps, else :data:`DEFAULT_MIN_SIZE`."""
    if min_size is not None:
        return int(min_size)
    return default_min_size(ring_frequency if seeded else None)


def _network(model, image):
    image = np.asarray(image)
    if image.ndim != 2:
        raise MicroSymError(f"expected a 2D image, got shape {image.shape}")
    return as_network(model, export=False), image


def raw_outputs(model, image: np.ndarray, *, device="cpu", value_range=None) -> np.ndarray:
    """Network output ``(3, H, W)`` float32 (boundary logit, cos kθ, sin kθ) for a whole 2D image.

    Parameters
    ----------
    model : SegModel
        Run as it is (an escnn model is not exported first).
    image : (H, W) array
    device : str
    value_range : (lo, hi), optional
        Normalization range; default :func:`~micro_sym.models.intensity_range` of ``image``.
    """
    net, image = _network(model, image)
    return predict_raw(net, image, value_range=value_range, device=device)


def predict_image(model, image: np.ndarray, *, device="cpu", period=None) -> dict:
    """Boundary, orientation and confidence maps of a whole 2D image.

    Parameters
    ----------
    model : SegModel
        Preferably ``model.export()`` (same outputs, faster).
    image : (H, W) array, any real dtype
        Normalized here with robust percentiles of the whole image.
    device : str
    period : float or "measure", optional
        The image's lattice constant in px, or ``"measure"`` to take it from the power spectrum: the
        image is then resampled to the model's training period and the maps back
        (:mod:`micro_sym.inference.rescale`), and the boundary map is 1 where the image shows no
        lattice (:mod:`micro_sym.inference.lattice_mask`), as ``micro-sym segment`` runs it.
        Default: the image runs at its own sampling, every pixel mapped.

    Returns
    -------
    dict
        ``boundary``: float32 probability; ``orientation``: float32 degrees in ``[0, 360/k)``;
        ``confidence``: float32 in ``[0, 1]`` (length of the predicted ``(cos kθ, sin kθ)``).
    """
    return _predict(model, image, device, period)[0]


def _predict(model, image, device, period) -> tuple[dict, float | None, dict | None, object]:
    """:func:`predict_image`'s maps, the lattice mask's ring frequency (None: no mask), how the grains'
    lattices are measured (:func:`~micro_sym.inference.lattice_mask.grain_lattice`; None: not) and the
    network as it ran (its grain rule is the one for these maps)."""
    net, image = _network(model, image)
    ring = setting = None
    if period is not None:
        from micro_sym.inference.lattice_mask import grain_lattice
        from micro_sym.inference.rescale import adapt_to_image

        base = net
        net, scale, ring = adapt_to_image(net, image, period=None if period == "measure" else float(period))
        setting = grain_lattice(base, scale) if ring else None
    return predict_array(net, image, device=device), ring, setting, net


def segment_image(model, image: np.ndarray, *, threshold: float = 5.0, min_size: int | None = None,
                  boundary_threshold: float = 0.5, device="cpu", period=None) -> dict:
    """:func:`predict_image` plus grain labels by the grain rule (docs/design.md §3).

    Parameters
    ----------
    threshold : float
        Misorientation (degrees) above which neighbouring pixels belong to different grains.
    min_size : int, optional
        Smaller grain seeds are dropped (default :func:`default_min_size`: 2 lattice cells where the
        lattice mask runs, else 32 px).
    boundary_threshold : float
        Pixels with boundary probability at or above it separate grains (label 0).
    period : float or "measure", optional
        As :func:`predict_image`.

    Returns
    -------
    dict
        The maps of :func:`predict_image` plus ``grains`` (uint32, 0 = boundary, ids from 1).
    """
    out, ring, setting, net = _predict(model, image, device, period)
    min_size = grain_min_size(min_size, ring)
    out["grains"] = grains_from_maps(out, model.k, threshold=threshold, min_size=min_size, boundary_threshold=boundary_threshold,
                                     rule=net.grain_rule(threshold, 2))
    if setting:  # grains only where the lattice shows, whole grains too (as the block engine)
        from micro_sym.inference.lattice_mask import drop_weak_lattice

        out["grains"] = drop_weak_lattice(image, out["grains"], setting)
    return out


def grains_from_maps(maps: dict, k: int, *, threshold=5.0, min_size=DEFAULT_MIN_SIZE, boundary_threshold=0.5,
                     rule: dict | None = None) -> np.ndarray:
    """Grain labels from predicted ``boundary`` and ``orientation`` maps.

    By default the seeded rule for network maps (:func:`micro_sym.grains.rules.network_rule`: seeds
    well inside the predicted boundaries, merged with similar seeds nearby, grown by a bounded
    flood; seeds under ``min_size`` dropped). ``rule`` (a dict as :mod:`micro_sym.grains.rules`
    describes) replaces it, e.g. :func:`~micro_sym.grains.rules.pair_rule` for the plain
    neighbour-pair rule, for comparisons and tuning.
    """
    from micro_sym.grains.rules import grains_by_rule, network_rule

    rule = network_rule(threshold, 2) if rule is None else rule
    return grains_by_rule(maps["orientation"], maps["boundary"], rule, symmetry=lattice(k, ndim=2).name,
                          min_size=min_size, boundary_threshold=boundary_threshold)

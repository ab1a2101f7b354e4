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

import numpy as np
import torch

from micro_sym.deploy.runtime import cpu_forward
from micro_sym.errors import MicroSymError
from micro_sym.models.normalize import intensity_range, normalize
from micro_sym.orientation import decode_angle

K_TO_SYMMETRY = {4: "square", 6: "hexagonal"}
#: Grains smaller than this (pixels) are merged into a neighbour; a lattice-resolved grain is much
#: larger than the few-pixel specks a noisy boundary map leaves between boundary branches.
DEFAULT_MIN_SIZE = 32


def pad_to_stride(image: np.ndarray, stride: int):
    """Reflect-pad a 2D array so both sides are multiples of ``stride``; returns (padded, crop slices).

    The padding is split between both ends (the extra pixel of an odd amount at the end).
    """
    pads, crop = [], []
    for n in image.shape:
        extra = (-n) % stride
        before = extra // 2
        pads.append((before, extra - before))
        crop.append(slice(before, before + n))
    mode = "reflect" if min(image.shape) > max(max(p) for p in pads) else "edge"
    return np.pad(image, pads, mode=mode), tuple(crop)


def raw_outputs(model, image: np.ndarray, *, device="cpu", value_range=None) -> np.ndarray:
    """Network output ``(3, H, W)`` float32 (boundary logit, cos kθ, sin kθ) for a whole 2D image.

    Parameters
    ----------
    model : SegModel
    image : (H, W) array
    device : str
    value_range : (lo, hi), optional
        Normalization range; default :func:`~micro_sym.models.intensity_range` of ``image``.
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise MicroSymError(f"expected a 2D image, got shape {image.shape}")
    lo, hi = value_range if value_range is not None else intensity_range(image)
    x = normalize(image.astype(np.float32), lo, hi)
    x = np.nan_to_num(x, nan=0.0)
    x, crop = pad_to_stride(x, model.total_stride)
    model.eval()
    with torch.inference_mode():
        t = torch.from_numpy(np.ascontiguousarray(x))[None, None].to(device)
        y = cpu_forward(model, 2, t)
    return y[0].float().cpu().numpy()[(slice(None), *crop)]


def decode_outputs(y: np.ndarray, k: int) -> dict:
    """Raw ``(3, H, W)`` outputs -> ``boundary`` probability, ``orientation`` degrees, ``confidence``."""
    boundary = 1.0 / (1.0 + np.exp(-y[0].astype(np.float64)))
    theta, length = decode_angle(y[1:3], k)
    return {
        "boundary": boundary.astype(np.float32),
        "orientation": theta.astype(np.float32),
        "confidence": np.clip(length, 0.0, 1.0).astype(np.float32),
    }


def predict_image(model, image: np.ndarray, *, device="cpu") -> dict:
    """Boundary, orientation and confidence maps of a whole 2D image.

    Parameters
    ----------
    model : SegModel
        Preferably ``model.export()`` (same outputs, faster).
    image : (H, W) array, any real dtype
        Normalized here with robust percentiles of the whole image.
    device : str

    Returns
    -------
    dict
        ``boundary``: float32 probability; ``orientation``: float32 degrees in ``[0, 360/k)``;
        ``confidence``: float32 in ``[0, 1]`` (length of the predicted ``(cos kθ, sin kθ)``).
    """
    return decode_outputs(raw_outputs(model, image, device=device), model.k)


def segment_image(model, image: np.ndarray, *, threshold: float = 5.0, min_size: int = DEFAULT_MIN_SIZE,
                  boundary_threshold: float = 0.5, device="cpu") -> dict:
    """:func:`predict_image` plus grain labels by the grain rule (DESIGN.md §3).

    Parameters
    ----------
    threshold : float
        Misorientation (degrees) above which neighbouring pixels belong to different grains.
    min_size : int
        Smaller grains are merged into a neighbour.
    boundary_threshold : float
        Pixels with boundary probability at or above it separate grains (label 0).

    Returns
    -------
    dict
        The maps of :func:`predict_image` plus ``grains`` (uint32, 0 = boundary, ids from 1).
    """
    out = predict_image(model, image, device=device)
    out["grains"] = grains_from_maps(out, model.k, threshold=threshold, min_size=min_size, boundary_threshold=boundary_threshold)
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
    return grains_by_rule(maps["orientation"], maps["boundary"], rule, symmetry=K_TO_SYMMETRY[k], min_size=min_size,
                          boundary_threshold=boundary_threshold)

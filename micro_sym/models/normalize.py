"""Intensity normalization shared by training, whole-image and tiled inference.

The network sees ``(x - lo) / (hi - lo)`` mapped to roughly ``[-1, 1]``, where ``lo``/``hi`` are robust
percentiles of the *whole* image. Computing them once per image (never per tile or per crop) is what
makes tiles of one image normalize identically, so tiled inference reproduces whole-image inference.
"""

from __future__ import annotations

import numpy as np

from micro_sym.errors import MicroSymError

#: Percentiles used for ``lo`` and ``hi``; robust to hot pixels and the odd saturated column.
PERCENTILES = (0.5, 99.5)
# Percentiles of a strided subsample are indistinguishable from the full image's for micrographs,
# and keep the cost bounded for gigapixel inputs.
_MAX_SAMPLES = 1 << 22


def intensity_range(image, percentiles=PERCENTILES) -> tuple[float, float]:
    """Robust ``(lo, hi)`` of a whole image, to pass to :func:`normalize` for every tile of it.

    Parameters
    ----------
    image : array-like
        The whole image (numpy or anything ``np.asarray`` accepts; a dask array is subsampled lazily).
    percentiles : (float, float)
        Lower and upper percentile.

    Returns
    -------
    (float, float)

    Raises
    ------
    MicroSymError
        If the image has no finite values or is constant.

    Examples
    --------
    >>> lo, hi = intensity_range(np.arange(1000.0))
    >>> round(lo, 1), round(hi, 1)
    (5.0, 994.0)
    """
    step = 1
    size = int(np.prod(image.shape))
    while size // (step**image.ndim) > _MAX_SAMPLES:
        step += 1
    sub = image[tuple(slice(None, None, step) for _ in range(image.ndim))]
    sub = np.asarray(sub, dtype=np.float64).ravel()
    sub = sub[np.isfinite(sub)]
    if sub.size == 0:
        raise MicroSymError("image has no finite values")
    lo, hi = np.percentile(sub, percentiles)
    if not hi > lo:
        lo, hi = float(sub.min()), float(sub.max())
    if not hi > lo:
        raise MicroSymError("image is constant; nothing to segment")
    return float(lo), float(hi)


def normalize(x, lo: float, hi: float):
    """Map intensities so that ``lo -> -1`` and ``hi -> +1`` (float32; works on numpy and torch).

    No clipping: the map is affine, so it commutes with cropping and with the p4m group action.

    >>> normalize(np.array([0.0, 5.0, 10.0]), 0.0, 10.0).tolist()
    [-1.0, 0.0, 1.0]
    """
    scale = 2.0 / (hi - lo)
    out = (x - lo) * scale - 1.0
    if isinstance(out, np.ndarray):
        return out.astype(np.float32, copy=False)
    return out.float() if hasattr(out, "float") else out


def normalize_by_tag(tag: str, x, lo: float, hi: float) -> np.ndarray:
    """Float32 network input by a model's ``normalization`` tag: ``"pm1"`` (:func:`normalize`) or
    ``"unit"`` (lo -> 0, hi -> 1)."""
    if tag == "unit":
        scale = float(hi) - float(lo) or 1.0
        return ((np.asarray(x, np.float32) - np.float32(lo)) / np.float32(scale)).astype(np.float32)
    return normalize(np.asarray(x, np.float32), lo, hi)

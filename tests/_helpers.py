"""Small helpers several test modules share (fixtures are in conftest.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

#: The arrays of a segmentation output (docs/design.md §1).
OUTPUT_ARRAYS = ("boundary", "orientation", "grains")


def smooth_image(shape, seed=0, sigma=3.0) -> np.ndarray:
    """A smooth random uint8 image or volume (blurred noise stretched to 0-255)."""
    img = ndimage.gaussian_filter(np.random.default_rng(seed).random(shape), sigma)
    return (255 * (img - img.min()) / np.ptp(img)).astype(np.uint8)


def read_output(out: Path, name: str) -> dict:
    """The maps and grains ``micro-sym segment`` wrote for input ``name`` under ``out``."""
    import zarr

    from micro_sym.io.images import output_array

    g = zarr.open_group(str(Path(out) / f"{name}.zarr"), mode="r")
    return {k: output_array(g, k)[:] for k in OUTPUT_ARRAYS}


def same_partition(a, b) -> bool:
    """Same grains up to renumbering (0 = no grain in both)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or not np.array_equal(a == 0, b == 0):
        return False
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]

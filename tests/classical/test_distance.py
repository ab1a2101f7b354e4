"""The grain taper's distance transform: scipy's exact Euclidean distances, bit for bit."""

import numpy as np
import pytest
from scipy import ndimage

from micro_sym.classical._distance import depth_inside


def _scipy_depth(mask):
    return ndimage.distance_transform_edt(np.pad(mask, 1))[(slice(1, -1),) * mask.ndim]


@pytest.mark.parametrize("ndim", [2, 3])
def test_depth_equals_scipy_bit_for_bit(ndim):
    rng = np.random.default_rng(ndim)
    for trial in range(60):
        shape = tuple(int(n) for n in rng.integers(1, 48 if ndim == 2 else 20, size=ndim))
        if trial % 2:
            mask = rng.random(shape) < rng.random()  # scattered points and holes
        else:
            mask = ndimage.gaussian_filter(rng.random(shape), 2.0) > 0.5  # blobs
        assert np.array_equal(depth_inside(mask), _scipy_depth(mask)), shape


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (9, 1), (5, 7), (1, 1, 1), (1, 6, 4), (4, 1, 1)])
def test_depth_of_full_empty_and_thin_masks(shape):
    for mask in (np.ones(shape, bool), np.zeros(shape, bool)):
        assert np.array_equal(depth_inside(mask), _scipy_depth(mask))


def test_depth_is_the_distance_to_the_nearest_point_outside():
    yy, xx = np.mgrid[:23, :31]
    mask = (np.hypot(yy - 11, xx - 14) <= 10) & ~((yy == 11) & (xx > 16))  # a disc with a slit
    outside = np.argwhere(~np.pad(mask, 1)) - 1  # the border counts as outside
    depth = depth_inside(mask)
    for y, x in np.argwhere(mask):
        assert depth[y, x] == pytest.approx(np.hypot(*(outside - (y, x)).T).min(), abs=1e-12)
    assert depth[~mask].max() == 0.0

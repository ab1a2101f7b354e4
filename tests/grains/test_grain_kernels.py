"""The compiled labelling kernels against the plain numpy/scipy computations they replace."""

import numpy as np
import pytest
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from micro_sym import orientation as ori
from micro_sym.grains import _kernels as K
from micro_sym.grains import reconstruct as rec
from micro_sym.inference._kernels import unit_quaternions


def _numpy_cubic_max_scalar(a, b):
    """The numpy closed form the kernel replaced (same operations, same order)."""
    a0, a1, a2, a3 = a
    b0, b1, b2, b3 = b
    w = np.abs(a0 * b0 + a1 * b1 + a2 * b2 + a3 * b3)
    x = np.abs(a0 * b1 - a1 * b0 - a2 * b3 + a3 * b2)
    y = np.abs(a0 * b2 - a2 * b0 - a3 * b1 + a1 * b3)
    z = np.abs(a0 * b3 - a3 * b0 - a1 * b2 + a2 * b1)
    m1 = np.maximum(np.maximum(w, x), np.maximum(y, z))
    top2 = np.maximum(np.maximum(np.maximum(w + x, w + y), np.maximum(w + z, x + y)), np.maximum(x + z, y + z))
    return np.maximum(np.maximum(m1, top2 * w.dtype.type(1 / np.sqrt(2.0))), (w + x + y + z) * w.dtype.type(0.5))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(7,), (9, 11), (6, 8, 10)])
def test_cubic_kernel_is_bit_identical_to_numpy_and_matches_24_rotations(dtype, shape):
    rng = np.random.default_rng(3)
    a = ori.random_quaternions(int(np.prod(shape)), rng).T.reshape((4,) + shape).astype(dtype)
    near = a + rng.normal(0, 0.05, a.shape)  # near pairs (the threshold region) and far ones
    b = np.where(rng.random(shape) < 0.5, near, ori.random_quaternions(int(np.prod(shape)), rng).T.reshape(a.shape))
    b = (b / np.linalg.norm(b, axis=0)).astype(dtype)
    a.reshape(4, -1)[2, 0] = np.nan
    got = K.cubic_max_scalar(a, b)
    assert got.dtype == dtype and got.shape == shape
    np.testing.assert_array_equal(got, _numpy_cubic_max_scalar(a, b))
    # A strided view (what the pair rule passes) gives the same values.
    sl = (slice(None), slice(1, None))
    np.testing.assert_array_equal(K.cubic_max_scalar(a[sl], b[sl]), got[1:])
    # Independent check: brute force over the 24 proper rotations of the cube.
    q1, q2 = a.reshape(4, -1).T.astype(np.float64), b.reshape(4, -1).T.astype(np.float64)
    expected = ori.misorientation_cubic(q1, q2)
    angle = 2 * np.rad2deg(np.arccos(np.clip(got.ravel().astype(np.float64), -1, 1)))
    ok = np.isfinite(expected)
    np.testing.assert_allclose(angle[ok], expected[ok], atol=2e-2 if dtype == np.float32 else 1e-6)
    assert np.isnan(got.ravel()[0])


@pytest.mark.parametrize("ndim,connectivity", [(2, 1), (2, 2), (3, 1), (3, 2)])
def test_union_find_components_equal_scipy_connected_components(ndim, connectivity):
    rng = np.random.default_rng(ndim * 10 + connectivity)
    shape = (23, 31) if ndim == 2 else (9, 12, 14)
    valid = rng.random(shape) < 0.8
    idx = np.arange(valid.size).reshape(shape)
    masks, rows, cols = [], [], []
    for off in rec.neighbour_offsets(ndim, connectivity):
        lo, hi = rec._shift_slices(shape, off)
        ok = valid[lo] & valid[hi] & (rng.random(valid[lo].shape) < (0.5 if connectivity == 1 else 0.15))
        masks.append((off, ok, lo))
        rows.append(idx[lo][ok])
        cols.append(idx[hi][ok])
    labels, n = K.label_components(valid, masks)
    r, c = np.concatenate(rows), np.concatenate(cols)
    g = sparse.csr_matrix((np.ones(len(r), np.int8), (r, c)), shape=(valid.size, valid.size))
    _, comp = connected_components(g, directed=False)
    comp = comp.reshape(shape)
    used = np.zeros(comp.max() + 2, bool)
    used[comp[valid]] = True
    expected = np.cumsum(used)[comp]
    expected[~valid] = 0
    assert n == used.sum() > 10
    np.testing.assert_array_equal(labels, expected)


@pytest.mark.parametrize("ndim", [2, 3])
def test_label_moments_equal_bincount_sums(ndim):
    rng = np.random.default_rng(ndim)
    shape = (17, 19) if ndim == 2 else (7, 9, 11)
    labels = rng.integers(0, 6, shape).astype(np.uint32)
    labels[labels == 3] = 0  # a missing label: zero count
    origin = (5, 40, 7)[-ndim:]
    n = 5
    count, first, m1, m2 = K.label_moments(labels, n, origin)
    flat = labels.ravel().astype(np.int64)
    coords = [c.ravel() + o for c, o in zip(np.indices(shape), origin)]
    np.testing.assert_array_equal(count, np.bincount(flat, minlength=n + 1)[1:])
    for lab in range(1, n + 1):
        sel = flat == lab
        if sel.any():
            assert first[lab - 1] == np.flatnonzero(sel)[0]
        for i in range(ndim):
            assert m1[lab - 1, i] == coords[i][sel].sum()
            for j in range(ndim):
                assert m2[lab - 1, i, j] == (coords[i][sel] * coords[j][sel]).sum()


@pytest.mark.parametrize("symmetry", ["cubic", "hexagonal"])
def test_aligned_sums_equal_reduce_to_reference(symmetry):
    rng = np.random.default_rng(5)
    shape = (6, 7, 8)
    labels = rng.integers(0, 4, shape).astype(np.uint32)
    sym = ori.symmetry_quats(symmetry)
    centre = ori.random_quaternions(3, rng)
    q = centre[np.maximum(labels, 1) - 1] + rng.normal(0, 0.08, shape + (4,))  # some voxels far enough to need the search
    q = ori.quat_multiply(q / np.linalg.norm(q, axis=-1, keepdims=True), sym[rng.integers(0, len(sym), shape)])
    q *= rng.choice([-1.0, 1.0], shape)[..., None]
    q[0, 0, 1] = np.nan
    ref = ori.random_quaternions(3, rng)
    got = K.aligned_quaternion_sums(labels, np.moveaxis(q, -1, 0), ref, sym, ori.nearest_without_search_cos(symmetry))
    for lab in range(1, 4):
        sel = (labels == lab) & np.isfinite(q).all(-1)
        want = ori.reduce_to_reference(q[sel], ref[lab - 1], symmetry).sum(0)
        np.testing.assert_allclose(got[lab - 1], want, rtol=1e-12, atol=1e-12)


def test_unit_quaternions_equal_the_numpy_decode():
    rng = np.random.default_rng(0)
    y = rng.normal(size=(4, 5, 6, 7)).astype(np.float32)
    y[:, 0, 0, 0] = 0  # undefined: NaN, as numpy's 0/0
    q = y.astype(np.float64)
    with np.errstate(invalid="ignore"):
        q = q / np.linalg.norm(q, axis=0, keepdims=True)
    q *= np.where(q[:1] < 0, -1.0, 1.0)
    got = unit_quaternions(y)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, q.astype(np.float32))
    assert np.isnan(got[:, 0, 0, 0]).all() and (got[0][np.isfinite(got[0])] >= 0).all()


@pytest.mark.parametrize("ndim", [2, 3])
def test_shifted_cubic_kernel_equals_the_view_kernel_for_every_offset(ndim):
    rng = np.random.default_rng(ndim)
    shape = (13, 17) if ndim == 2 else (5, 6, 7)
    q = ori.random_quaternions(int(np.prod(shape)), rng).T.reshape((4,) + shape).astype(np.float32)
    for off in rec.neighbour_offsets(ndim, 2):
        lo, hi = rec._shift_slices(shape, off)
        want = K.cubic_max_scalar(q[(slice(None),) + lo], q[(slice(None),) + hi])
        np.testing.assert_array_equal(K.cubic_max_scalar_shifted(q, lo, hi), want)


@pytest.mark.parametrize("shape", [(37, 45, 29), (61, 47)])
def test_within_radius_equals_ball_dilation(shape):
    """The separable kernel marks exactly what a binary dilation by the Euclidean ball marks (image edges included)."""
    from scipy import ndimage

    from micro_sym.grains._kernels import within_radius

    rng = np.random.default_rng(len(shape))
    field = ndimage.gaussian_filter(rng.random(shape), 2)
    for q in (0.97, 0.75):
        mask = field > np.quantile(field, q)
        for radius in (0.0, 1.0, 1.5, 2.5, 3.5, 4.2):
            r = int(np.floor(radius))
            grid = np.mgrid[(slice(-r, r + 1),) * len(shape)]
            ball = (grid**2).sum(0) <= radius * radius
            np.testing.assert_array_equal(within_radius(mask, radius), ndimage.binary_dilation(mask, structure=ball))

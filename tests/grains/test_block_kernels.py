"""The compiled steps of block labelling and the seeded flood against the numpy computations they replace:
the same values, bit for bit (the engine's labels, grains and tables must not move)."""

import numpy as np
import pytest

from micro_sym.grains import _kernels as K
from micro_sym.grains import reconstruct as rec


def _angle_map(rng, shape, dtype, scale):
    """A drifting angle map with NaN, infinities and, with a large ``scale``, differences far beyond a period."""
    a = (np.cumsum(rng.standard_normal(shape), axis=-1) * scale / 10).astype(dtype)
    a[rng.random(shape) < 0.03] = np.nan
    a[rng.random(shape) < 0.01] = np.inf
    a[rng.random(shape) < 0.01] = -np.inf
    return a


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(40, 50), (7, 9, 11)])
def test_angle_pairs_within_equals_pair_connected(dtype, shape):
    rng = np.random.default_rng(1)
    # 3.3 and 1.1 are not float32 numbers: the threshold is rounded as numpy rounds it for the map.
    for scale, k, threshold in [(3, 4, 3.3), (60, 6, 5.0), (1e4, 4, np.float64(1.1)), (1e7, 6, 0.0)]:
        q = _angle_map(rng, shape, dtype, scale)
        kind = rec.orientation_kind(q.shape, "square" if k == 4 else "hexagonal")
        for off in rec.neighbour_offsets(len(shape), 1):
            lo, hi = rec._shift_slices(shape, off)
            np.testing.assert_array_equal(K.angle_pairs_within(q, lo, hi, k, threshold),
                                          rec.pair_connected(q[lo], q[hi], kind, threshold))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(40, 50), (1, 30), (30, 1), (7, 9, 11)])
def test_label_angle_components_equals_pair_masks(dtype, shape):
    rng = np.random.default_rng(2)
    for scale, threshold in [(3, 3.3), (60, 5.0), (1e4, np.float64(1.1))]:
        q = _angle_map(rng, shape, dtype, scale)
        valid = (np.isfinite(q) | (rng.random(shape) < 0.5)) & (rng.random(shape) < 0.9)
        kind = rec.orientation_kind(q.shape, "square")
        masks = []
        for off in rec.neighbour_offsets(len(shape), 1):
            lo, hi = rec._shift_slices(shape, off)
            masks.append((off, valid[lo] & valid[hi] & rec.pair_connected(q[lo], q[hi], kind, threshold), lo))
        want, n_want = K.label_components(valid, masks)
        got, n = K.label_angle_components(q, valid, 4, threshold)
        assert n == n_want and got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


def test_angle_sums_equal_weighted_bincount():
    rng = np.random.default_rng(3)
    labels = np.repeat(rng.integers(0, 6, (30, 20)), 3, axis=1).astype(np.uint32)
    angles = rng.uniform(0, 90, labels.shape).astype(np.float32)
    n = int(labels.max())
    fg = np.flatnonzero(labels)
    lab = labels.ravel()[fg].astype(np.int64) - 1
    t = (np.deg2rad(angles.ravel()[fg].astype(np.float64)) * 4).astype(np.float32)
    want = np.stack([np.bincount(lab, weights=np.cos(t), minlength=n),
                     np.bincount(lab, weights=np.sin(t), minlength=n)], 1)
    assert K.angle_sums(labels, angles, n, 4).tobytes() == want.tobytes()
    exact = np.deg2rad(angles.ravel()[fg].astype(np.float64)) * 4  # float32 terms: within 1e-6 of float64's
    np.testing.assert_allclose(want[:, 0], np.bincount(lab, weights=np.cos(exact), minlength=n), atol=1e-6 * len(fg))


@pytest.mark.parametrize("shape", [(30, 40), (6, 7, 8), (1, 9)])
def test_contact_pairs_equal_unique_label_pairs(shape):
    rng = np.random.default_rng(4)
    labels = np.repeat(rng.integers(0, 5, shape), 2, axis=-1).astype(np.uint32)
    for ax in range(labels.ndim):
        a = np.moveaxis(labels, ax, 0)
        diff = a[:-1] != a[1:]
        want = rec.unique_label_pairs(a[:-1][diff], a[1:][diff], counts=True)
        np.testing.assert_array_equal(K.contact_pairs(labels, ax), want)


def test_touching_pairs_equal_numpy():
    rng = np.random.default_rng(5)
    lab = rng.integers(0, 6, (25, 30)).astype(np.int64)
    lows = [(slice(3, 20), slice(2, 28)), (slice(3, 21), slice(2, 27))]
    keys = []
    for ax, lo in enumerate(lows):
        hi = tuple(slice(s.start + (d == ax), s.stop + (d == ax)) for d, s in enumerate(lo))
        a, b = lab[lo], lab[hi]
        sel = (a != b) & (a > 0) & (b > 0)
        keys.append(np.minimum(a[sel], b[sel]) * (1 << 32) + np.maximum(a[sel], b[sel]))
    np.testing.assert_array_equal(K.touching_pairs(lab, lows), np.unique(np.concatenate(keys)))


def test_compact_ids_and_lookup():
    rng = np.random.default_rng(6)
    labels = (rng.integers(0, 4, (20, 30)) * 7).astype(np.uint32)
    ids, compact = K.compact_ids(labels)
    np.testing.assert_array_equal(ids, [7, 14, 21])
    np.testing.assert_array_equal(compact, labels // 7)
    assert compact.dtype == np.int32
    table = np.arange(100, 130, dtype=np.uint32)
    np.testing.assert_array_equal(K.lookup(table, labels), table[labels])
    with pytest.raises(IndexError):
        K.lookup(table[:5], labels)


@pytest.mark.parametrize("origin", [(0, 0), (5000, 7000), (10**7, 10**7)])
def test_label_moments_equal_point_by_point_sums(origin):
    """In integers, run by run (or point by point, where float64 sums would round), the float64 sums point by point."""
    rng = np.random.default_rng(7)
    labels = np.repeat(rng.integers(0, 5, (30, 12)), 4, axis=1)
    n = int(labels.max())
    count, first, m1, m2 = K.label_moments(labels, n, origin)
    o = np.array((0,) + origin, np.float64)
    c, f, s1, s2 = np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros((n, 3)), np.zeros((n, 6))
    K._moments(K._as_3d(labels), n, o, c, f, s1, s2)
    np.testing.assert_array_equal(count, c)
    np.testing.assert_array_equal(first, f)
    assert m1.tobytes() == np.ascontiguousarray(s1[:, 1:]).tobytes()
    full = s2[:, [0, 1, 2, 1, 3, 4, 2, 4, 5]].reshape(n, 3, 3)[:, 1:, 1:]
    assert m2.tobytes() == np.ascontiguousarray(full).tobytes()


def _flood_reference(seeds, prob, free, sims, steps):
    """The flood rule of :func:`micro_sym.grains.seeded.flood` in whole-array numpy, one Jacobi round at a time."""
    labels = seeds.astype(np.int64)
    level = np.where(labels > 0, -np.inf, np.inf).astype(np.float32)
    nd = labels.ndim
    for _ in range(steps):
        best = np.full(labels.shape, np.inf, np.float32)
        best_sim = np.full(labels.shape, -np.inf, np.float32)
        best_label = np.zeros(labels.shape, np.int64)
        for ax in range(nd):
            for step in (-1, 1):  # the neighbour at -1 first, as the kernel visits them
                dst = [slice(None)] * nd
                src = [slice(None)] * nd
                sim = [slice(None)] * nd
                n = labels.shape[ax]
                dst[ax], src[ax] = (slice(1, n), slice(0, n - 1)) if step < 0 else (slice(0, n - 1), slice(1, n))
                sim[ax] = slice(0, n - 1)
                dst, src, sim = tuple(dst), tuple(src), tuple(sim)
                lab, s = labels[src], sims[ax][sim]
                v = np.maximum(level[src], prob[dst])
                b, bs, bl = best[dst], best_sim[dst], best_label[dst]
                take = (lab != 0) & ((v < b) | ((v == b) & ((s > bs) | ((s == bs) & (lab < bl)))))
                b[take], bs[take], bl[take] = v[take], s[take], lab[take]
        labels = np.where(free, best_label, labels)
        level = np.where(free, best, level)
    return labels


@pytest.mark.parametrize("shape", [(30, 31), (9, 12, 11)])
def test_flood_equals_whole_array_rounds(shape):
    from micro_sym.grains.seeded import flood

    rng = np.random.default_rng(8)
    for trial in range(6):
        seeds = (rng.random(shape) < 0.05) * rng.integers(1, 6, shape)
        prob = (rng.integers(0, 4, shape) / 4).astype(np.float32)  # few levels: many ties
        free = (seeds == 0) & (rng.random(shape) < 0.8)
        sims = [rng.integers(-2, 1, tuple(n - (d == ax) for d, n in enumerate(shape))).astype(np.float32)
                for ax in range(len(shape))]
        for steps in (1, 3, 6):
            np.testing.assert_array_equal(flood(seeds, prob, free, sims, steps),
                                          _flood_reference(seeds, prob, free, sims, steps))


def test_grown_boundary_equals_boundary_of_the_grown_crop():
    """The seed core's boundary map: the decoded core plus the ring from the raw outputs, as the whole crop gives it."""
    from micro_sym.inference.blocks import grown_crop, plan_blocks
    from micro_sym.inference.tiles import TileOutput, grown_boundary

    class Net:
        @staticmethod
        def boundary_of(y):
            return (1 / (1 + np.exp(-y[0].astype(np.float64)))).astype(np.float32)

    rng = np.random.default_rng(9)
    shape = (70, 90)
    plan = plan_blocks(shape, (32, 32), halo=6, stride=1, chunk=(32, 32))
    for block in plan.blocks:
        raw = rng.standard_normal((2, *(s.stop - s.start for s in block.tile))).astype(np.float32)
        out = TileOutput(block, raw, None)
        core = Net.boundary_of(out.core_outputs)
        got, inner = grown_boundary(Net, out, core, 3, shape)
        want = Net.boundary_of(raw[(slice(None), *grown_crop(block, 3, shape))])
        assert got.tobytes() == want.tobytes()
        assert got[inner].tobytes() == core.tobytes()

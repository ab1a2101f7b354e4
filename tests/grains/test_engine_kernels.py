"""The block engine's compiled shortcuts against the definitions they replace (same values, bit for bit)."""

import numpy as np
import pytest
from scipy import ndimage

from micro_sym.grains import _kernels as K
from micro_sym.grains.stats import grow_into_gaps
from micro_sym.orientation import misorientation_2d


def _grow_into_gaps_numpy(labels, steps):
    """The rule of grow_into_gaps written with whole-array numpy steps: each step gives every 0 point the
    smallest label > 0 among its face neighbours of the previous step."""
    lab = np.array(labels, copy=True)
    for _ in range(int(steps)):
        zero = lab == 0
        if not zero.any():
            break
        cand = np.zeros_like(lab)
        for ax in range(lab.ndim):
            a, c = np.moveaxis(lab, ax, 0), np.moveaxis(cand, ax, 0)  # views: writing c writes cand
            for src, dst in ((a[:-1], c[1:]), (a[1:], c[:-1])):
                take = (src > 0) & ((dst == 0) | (src < dst))
                dst[take] = src[take]
        lab[zero] = cand[zero]
    return lab


def _gapped_labels(shape, seed):
    """Voronoi grains with bands and blobs of 0 between them (what seeds and grown grains look like)."""
    rng = np.random.default_rng(seed)
    ids, _ = ndimage.label(rng.random(shape) < 0.03)
    _, idx = ndimage.distance_transform_edt(ids == 0, return_indices=True)
    voronoi = ids[tuple(idx)]
    edges = np.zeros(shape, bool)
    for ax in range(len(shape)):
        edges |= np.diff(voronoi, axis=ax, prepend=np.take(voronoi, [0], axis=ax)) != 0
    widen = int(rng.integers(0, 3))  # bands 1 to 5 points wide
    band = (ndimage.binary_dilation(edges, iterations=widen) if widen else edges) | (rng.random(shape) < 0.05)
    return np.where(band, 0, voronoi).astype(np.uint32)


@pytest.mark.parametrize("shape", [(40, 37), (12, 15, 11), (1, 30)])
@pytest.mark.parametrize("steps", [0, 1, 2, 4])
def test_grow_into_gaps_kernel_equals_the_numpy_rule(shape, steps):
    lab = _gapped_labels(shape, steps)
    np.testing.assert_array_equal(K.grow_into_gaps(lab, steps), _grow_into_gaps_numpy(lab, steps))
    np.testing.assert_array_equal(grow_into_gaps(lab, steps), _grow_into_gaps_numpy(lab, steps))


@pytest.mark.parametrize("k", [2, 4, 6])
def test_angle_similarity_is_bit_identical_to_numpy(k):
    rng = np.random.default_rng(k)
    a = rng.uniform(-400, 400, (50, 61)).astype(np.float32)
    b = rng.uniform(0, 360 / k, a.shape).astype(np.float32)
    a[0, :5] = [np.nan, np.inf, -np.inf, 0.0, -0.0]
    b[1, :3] = [np.nan, np.inf, 45.0]
    a[2] = b[2]  # equal angles
    a[3] = b[3] + 360.0 / k  # equal modulo the period
    a[4] = b[4] + 180.0 / k  # the largest misorientation
    for sl in [(slice(None), slice(None)), (slice(1, None), slice(None, -1)), (slice(None, None, 2), slice(3, None))]:
        want = np.nan_to_num(np.asarray(-misorientation_2d(a[sl], b[sl], k), np.float32), nan=-np.inf)
        got = K.angle_similarity(a[sl], b[sl], k)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


def _near_keys_by_definition(labels, reach):
    base = int(labels.max()) + 1
    keys = [np.zeros(0, np.int64)]
    for ax in range(labels.ndim):
        a = np.moveaxis(labels, ax, 0).astype(np.int64)
        for d in range(1, reach + 1):
            x, y = a[:-d], a[d:]
            sel = (x != y) & (x > 0) & (y > 0)
            keys.append(np.minimum(x[sel], y[sel]) * base + np.maximum(x[sel], y[sel]))
    return np.unique(np.concatenate(keys)), base


@pytest.mark.parametrize("shape,reach", [((60, 70), 3), ((80, 90), 12), ((12, 14, 16), 4), ((1, 30), 5)])
def test_near_pair_keys_equal_every_pair_within_reach(shape, reach):
    rng = np.random.default_rng(reach)
    for lab in (_gapped_labels(shape, reach), rng.integers(0, 6, shape).astype(np.uint32)):
        got, base = K.near_pair_keys(lab, reach)
        want, want_base = _near_keys_by_definition(lab, reach)
        assert base == want_base
        np.testing.assert_array_equal(got, want)


def test_flood_gives_the_neighbour_pairs_of_the_written_grains():
    """flood_region(neighbours=True): the same grains and statistics, plus the pairs that
    neighbour_pairs finds in the whole flooded map, block by block."""
    from micro_sym.grains.blockwise import flood_margin, flood_region, grow, neighbour_counts, neighbour_pairs, seed_parts
    from micro_sym.inference.blocks import plan_blocks

    rng = np.random.default_rng(7)
    shape, steps = (70, 83), 4
    grains = _gapped_labels(shape, 1)
    angles = (grains * 7.3 % 90 + rng.normal(0, 0.3, shape)).astype(np.float32) % 90
    boundary = np.where(grains == 0, 0.9, 0.1).astype(np.float32) + rng.random(shape).astype(np.float32) * 0.2
    seeds = np.where(rng.random(shape) < 0.1, grains, 0).astype(np.uint32)
    plan = plan_blocks(shape, 16, halo=0, stride=1, chunk=16)
    ident = np.arange(int(seeds.max()) + 1, dtype=np.uint32)  # local labels are final ids already
    kw = dict(orientation=angles, boundary=boundary, local_labels=seeds, steps=steps, symmetry="square",
              image_shape=shape)
    whole = np.zeros(shape, np.uint32)
    pairs = []
    for b in plan.blocks:
        plain = flood_region(b, seed_parts(plan, grow(b.core, flood_margin(steps), shape), lambda i: ident), **kw)
        labels, arrays = flood_region(b, seed_parts(plan, grow(b.core, flood_margin(steps, True), shape), lambda i: ident),
                                      neighbours=True, **kw)
        np.testing.assert_array_equal(labels, plain[0])
        for key, value in plain[1].items():
            np.testing.assert_array_equal(arrays[key], value)
        whole[b.core] = labels
        pairs.append(arrays["neighbour_pairs"])
    assert (whole > 0).mean() > 0.5
    n = int(whole.max())
    want = [neighbour_pairs(whole, b.core, shape) for b in plan.blocks]
    for got, ref in zip(pairs, want):
        np.testing.assert_array_equal(got, ref)
    assert neighbour_counts(pairs, n).max() >= 2

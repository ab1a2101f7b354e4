"""Seeded grains (micro_sym.grains.seeded): a hole in a predicted boundary no longer joins two grains."""

import numpy as np
import pytest

from micro_sym.errors import MicroSymError
from micro_sym.grains import reconstruct_grains
from micro_sym.grains.reconstruct import orientation_kind
from micro_sym.grains.seeded import core_mask, flood, pair_similarity, seeded_grains
from micro_sym.orientation import axis_angle_to_quat


def _two_grains_with_a_holed_wall(n=24, ndim=3):
    """Two grains 10° apart meeting at x = 12, the orientation turning smoothly over x = 9..14 (as a
    network's does), a predicted boundary wall at x = 11, 12 with a 2-point hole in its middle."""
    shape = (n,) * ndim
    x = np.indices(shape)[-1]
    angle = np.clip((x - 9) / 5.0, 0.0, 1.0) * 10.0  # 0° ... 10°, steps of 2° per point
    boundary = np.zeros(shape, np.float32)
    boundary[..., 11:13] = 0.9
    mid = tuple(slice(n // 2 - 1, n // 2 + 1) for _ in range(ndim - 1))
    boundary[mid + (slice(11, 13),)] = 0.05
    if ndim == 2:
        return angle.astype(np.float32), boundary, x
    q = axis_angle_to_quat(np.broadcast_to([0.0, 0.0, 1.0], shape + (3,)), angle)
    return np.moveaxis(q, -1, 0).astype(np.float32), boundary, x


@pytest.mark.parametrize("ndim", [2, 3])
def test_a_hole_in_the_boundary_joins_grains_by_the_pair_rule_but_not_seeded(ndim):
    orientation, boundary, x = _two_grains_with_a_holed_wall(ndim=ndim)
    symmetry = "cubic" if ndim == 3 else "square"
    pair = reconstruct_grains(orientation, symmetry=symmetry, boundary=boundary, min_size=0)
    assert pair.max() == 1  # the leak this module exists for
    seeded = seeded_grains(orientation, boundary, symmetry=symmetry, min_size=8)
    assert seeded.max() == 2
    left, right = np.unique(seeded[x <= 9]), np.unique(seeded[x >= 14])
    assert len(left) == 1 and len(right) == 1 and left[0] != right[0] and 0 not in (left[0], right[0])
    assert (seeded[boundary >= 0.5] == 0).all() and (seeded[boundary < 0.5] > 0).all()  # every other point reached


def test_the_flood_is_local_so_a_block_with_a_halo_of_steps_reproduces_it():
    rng = np.random.default_rng(3)
    shape, steps = (20, 22, 24), 5
    boundary = rng.random(shape).astype(np.float32)
    seeds = np.where(rng.random(shape) < 0.04, rng.integers(1, 6, shape), 0)
    q = rng.standard_normal((4,) + shape).astype(np.float32)
    q /= np.linalg.norm(q, axis=0)
    kind = orientation_kind(q.shape, "cubic")
    free = (boundary < 0.8) & (seeds == 0)
    sims = [pair_similarity(q, kind, ax) for ax in range(3)]
    whole = flood(seeds, boundary, free, sims, steps)
    assert (whole[free] > 0).any() and (whole[free] == 0).any()
    inner = (slice(7, 13), slice(6, 15), slice(9, 16))
    outer = tuple(slice(s.start - steps, s.stop + steps) for s in inner)
    part_q = q[(slice(None),) + outer]
    part_sims = [pair_similarity(part_q, kind, ax) for ax in range(3)]
    part = flood(seeds[outer], boundary[outer], free[outer], part_sims, steps)
    crop = tuple(slice(steps, steps + s.stop - s.start) for s in inner)
    np.testing.assert_array_equal(part[crop], whole[inner])


def test_core_mask_keeps_points_farther_than_the_radius():
    b = np.zeros((9, 9), bool)
    b[4, 4] = True
    core = core_mask(b, 2.5)
    d2 = (np.indices(b.shape) - 4) ** 2
    np.testing.assert_array_equal(core, d2.sum(0) > 2.5**2)


def test_bad_arguments_are_one_line_errors():
    orientation, boundary, _ = _two_grains_with_a_holed_wall(n=8, ndim=2)
    with pytest.raises(MicroSymError, match="does not match"):
        seeded_grains(orientation, boundary[:4])
    with pytest.raises(MicroSymError, match=">= 0"):
        seeded_grains(orientation, boundary, steps=-1)


def test_reach_merges_seeds_of_one_grain_split_by_a_drawn_subgrain_boundary():
    # One grain (2° everywhere) with a predicted boundary line across it, e.g. a 1-4° sub-grain
    # boundary the network drew: two seeds that face each other across the band and the core margins.
    angle = np.full((30, 40), 2.0, np.float32)
    boundary = np.zeros((30, 40), np.float32)
    boundary[:, 19:21] = 0.9
    apart = seeded_grains(angle, boundary, symmetry="square", core_radius=2.5, min_size=8)
    joined = seeded_grains(angle, boundary, symmetry="square", core_radius=2.5, min_size=8, reach=10)
    assert apart.max() == 2 and joined.max() == 1
    other = angle.copy()
    other[:, 20:] = 30.0  # a real grain boundary: the seeds stay apart
    assert seeded_grains(other, boundary, symmetry="square", core_radius=2.5, min_size=8, reach=10).max() == 2
    q = np.zeros((4, 4, 4, 4), np.float32)
    q[0] = 1.0
    with pytest.raises(MicroSymError, match="2D angle map"):
        seeded_grains(q, np.zeros((4, 4, 4), np.float32), reach=4)


def test_rule_lengths_in_model_pixels_find_the_same_grains_on_maps_at_twice_the_sampling():
    # The maps of a network run on an image at twice its training period come back on a grid twice
    # as fine: the wall and its hole twice as wide. With the rule's lengths left in input pixels the
    # seed core passes through the widened hole and joins the two grains; at_scale (lengths in model
    # pixels) finds the grains of the model's own sampling.
    from micro_sym.grains.rules import at_scale, grains_by_rule, network_rule

    n = 32
    x = np.indices((n, n))[-1]
    angle = (np.clip((x - 9) / 5.0, 0.0, 1.0) * 10.0).astype(np.float32)
    boundary = np.zeros((n, n), np.float32)
    boundary[:, 11:13] = 0.9
    boundary[n // 2 - 2:n // 2 + 2, 11:13] = 0.05  # a hole 4 points tall: no point of it is 2.5 from the wall
    rule = network_rule(5.0, 2)
    once = grains_by_rule(angle, boundary, rule, symmetry="square", min_size=8)
    assert once.max() == 2
    twice = [np.repeat(np.repeat(a, 2, 0), 2, 1) for a in (angle, boundary)]
    assert grains_by_rule(*twice, rule, symmetry="square", min_size=32).max() == 1  # the leak
    scaled = grains_by_rule(*twice, at_scale(rule, 2.0), symmetry="square", min_size=32)
    assert scaled.max() == 2
    np.testing.assert_array_equal(scaled[::2, ::2] > 0, once > 0)
    assert len(np.unique(scaled[::2, ::2][x <= 9])) == 1 and len(np.unique(scaled[::2, ::2][x >= 14])) == 1


def test_at_scale_multiplies_the_seeded_lengths_only():
    from micro_sym.grains.rules import at_scale, network_rule, pair_rule

    rule = network_rule(5.0, 2)
    assert at_scale(rule, 1.0) == rule and at_scale(pair_rule(5.0), 2.0) == pair_rule(5.0)
    half, double = at_scale(rule, 0.5), at_scale(rule, 2.0)
    assert (double["core_radius"], double["reach"], double["steps"]) == (2 * rule["core_radius"], 2 * rule["reach"], 2 * rule["steps"])
    assert (half["core_radius"], half["reach"], half["steps"]) == (rule["core_radius"] / 2, rule["reach"] // 2, rule["steps"] // 2)
    for r in (half, double):
        assert (r["pair_threshold"], r["merge_threshold"]) == (rule["pair_threshold"], rule["merge_threshold"])

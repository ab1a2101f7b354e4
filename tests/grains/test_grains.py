"""Grain reconstruction: the DefDAP reference maps, the rule itself, slab/block merging, bad input."""

from __future__ import annotations


import numpy as np
import pytest

from micro_sym import orientation as ori
from micro_sym.io.ebsd import read_ebsd
from micro_sym.errors import MicroSymError
from micro_sym.grains import (
    face_equivalences,
    filter_small_grains,
    orientation_kind,
    reconstruct_grains,
    resolve_equivalences,
)
from micro_sym.grains import reconstruct as rec

from _shared import shared_path

from _helpers import same_partition



@pytest.fixture(scope="module")
def defdap_map():
    return read_ebsd(shared_path("defdap_ebsd", "testDataEBSD.cpr"))


# ----------------------------------------------------------------------------- DefDAP reference


@pytest.mark.parametrize("min_size", [0, 10, 100])
def test_matches_defdap_partition(defdap_map, min_size):
    """DefDAP's rule: 5°, 4-connected, pairwise (neighbour-to-neighbour) test, small grains dropped."""
    ref = np.load(shared_path("defdap_ebsd", f"ebsd_grains_5deg_{min_size}.npz"))["grains"]
    m = defdap_map
    lab = reconstruct_grains(m.quaternions, symmetry="cubic", threshold=5.0, connectivity=1, mask=m.mask,
                             phase=m.phase, min_size=min_size, small="drop")
    ref_grains = np.where(ref > 0, ref, 0)  # -2 = dropped small grain, 0 = non-indexed
    assert lab.max() == ref.max() == {0: 141, 10: 109, 100: 76}[min_size]
    assert same_partition(lab, ref_grains)
    # Same numbering too: both number grains by their first point in row-major order.
    np.testing.assert_array_equal(lab, ref_grains)


def test_defdap_boundary_points(defdap_map):
    """Points whose +x / +y neighbour is across a >5° boundary equal DefDAP's boundary lists."""
    b = np.load(shared_path("defdap_ebsd", "ebsd_grain_boundaries_5deg.npz"))
    q = defdap_map.quaternions
    kind = orientation_kind(q.shape, "cubic")
    cut_x = ~rec.pair_connected(q[:, :, :-1], q[:, :, 1:], kind, 5.0)
    cut_y = ~rec.pair_connected(q[:, :-1], q[:, 1:], kind, 5.0)
    ours_x = {(int(x), int(y)) for y, x in zip(*np.nonzero(cut_x))}
    ours_y = {(int(x), int(y)) for y, x in zip(*np.nonzero(cut_y))}
    assert ours_x == {tuple(p) for p in b["points_x"].tolist()}
    assert ours_y == {tuple(p) for p in b["points_y"].tolist()}


def test_float32_input_gives_the_same_grains(defdap_map):
    m = defdap_map
    a = reconstruct_grains(m.quaternions, mask=m.mask, min_size=10, small="drop")
    b = reconstruct_grains(m.quaternions.astype(np.float32), mask=m.mask, min_size=10, small="drop")
    np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------------- the rule


def test_closed_form_cubic_matches_orientation_module():
    rng = np.random.default_rng(1)
    a, b = ori.random_quaternions(2000, rng), ori.random_quaternions(2000, rng)
    kind = orientation_kind((4, 1, 1), "cubic")
    w = rec._pair_max_scalar(a.T.copy(), b.T.copy(), kind)
    np.testing.assert_allclose(2 * np.rad2deg(np.arccos(np.clip(w, -1, 1))), ori.misorientation_cubic(a, b), atol=1e-6)


def test_neighbour_rule_not_seed_rule():
    """A 1°-per-pixel gradient is one grain (neighbour test), although its ends differ by 39°."""
    theta = np.tile(np.arange(40, dtype=np.float32) * 1.0, (3, 1)) % 90
    lab = reconstruct_grains(theta, symmetry="square", threshold=5)
    assert lab.max() == 1
    lab = reconstruct_grains(theta, symmetry="square", threshold=0.5)
    assert lab.max() == 40


def test_square_symmetry_wraps_and_threshold_is_inclusive():
    theta = np.array([[89.0, 1.0, 6.0, 12.0]], np.float32)
    # 89 -> 1: 2° (wraps at 90); 1 -> 6: exactly 5° (inclusive); 6 -> 12: 6° > 5°.
    np.testing.assert_array_equal(reconstruct_grains(theta, symmetry="square"), [[1, 1, 1, 2]])
    # Hexagonal angles wrap at 60°: 59 and 1 are 2° apart, 1 and 30 are 29° apart.
    np.testing.assert_array_equal(reconstruct_grains(np.array([[59.0, 1.0, 30.0]]), symmetry="hexagonal"), [[1, 1, 2]])


def test_cubic_symmetry_equivalents_join():
    q0 = ori.random_quaternions(1, np.random.default_rng(3))[0]
    s = ori.cubic_symmetry_quats()[7]
    q = np.zeros((4, 2, 3))
    q[:, :, 0] = q0[:, None]
    q[:, :, 1] = ori.quat_multiply(q0, s)[:, None]  # the same orientation written differently
    q[:, :, 2] = -ori.quat_multiply(q0, ori.axis_angle_to_quat([0, 0, 1], 20.0))[:, None]
    np.testing.assert_array_equal(reconstruct_grains(q, symmetry="cubic"), [[1, 1, 2], [1, 1, 2]])


def test_hexagonal_quaternions_use_622():
    q0 = np.array([1.0, 0, 0, 0])
    c60 = ori.axis_angle_to_quat([0, 0, 1], 60.0)
    a90 = ori.axis_angle_to_quat([0, 0, 1], 90.0)
    q = np.stack([q0, c60, a90], -1)[:, None, :]  # (4, 1, 3)
    np.testing.assert_array_equal(reconstruct_grains(q, symmetry="hexagonal"), [[1, 1, 2]])
    # Under cubic symmetry 90° about z is a symmetry, 60° a real (30°) rotation.
    np.testing.assert_array_equal(reconstruct_grains(q, symmetry="cubic"), [[1, 2, 3]])
    q = np.stack([q0, a90, c60], -1)[:, None, :]
    np.testing.assert_array_equal(reconstruct_grains(q, symmetry="cubic"), [[1, 1, 2]])


def test_connectivity_diagonal():
    theta = np.full((3, 3), 40.0, np.float32)
    theta[0, 0] = theta[1, 1] = 0.0
    assert reconstruct_grains(theta, connectivity=1)[1, 1] != reconstruct_grains(theta, connectivity=1)[0, 0]
    lab8 = reconstruct_grains(theta, connectivity=8)
    assert lab8[1, 1] == lab8[0, 0] and lab8.max() == 2


def test_boundary_mask_phase_and_nan():
    theta = np.zeros((5, 7), np.float32)
    boundary = np.zeros((5, 7), np.float32)
    boundary[:, 3] = 0.9
    lab = reconstruct_grains(theta, boundary=boundary)
    assert lab.max() == 2 and (lab[:, 3] == 0).all()
    assert reconstruct_grains(theta, boundary=boundary, boundary_threshold=0.95).max() == 1
    mask = np.ones((5, 7), bool)
    mask[2, :] = False
    lab = reconstruct_grains(theta, mask=mask)
    assert lab.max() == 2 and (lab[2] == 0).all()
    phase = np.ones((5, 7), int)
    phase[:, 5:] = 2
    assert reconstruct_grains(theta, phase=phase).max() == 2
    t2 = theta.copy()
    t2[0, 0] = np.nan
    lab = reconstruct_grains(t2)
    assert lab[0, 0] == 0 and lab.max() == 1 and lab.dtype == np.uint32


def test_min_size_drop_and_merge():
    theta = np.zeros((10, 10), np.float32)
    theta[:, 5:] = 40.0
    theta[2:4, 1:3] = 20.0  # a 4-pixel grain inside the left grain
    theta[0:2, 4] = 30.0  # a 2-pixel grain: 2 pairs with the right grain, 3 with the left one
    lab = reconstruct_grains(theta)
    assert lab.max() == 4
    drop = reconstruct_grains(theta, min_size=5, small="drop")
    assert drop.max() == 2 and (drop[2:4, 1:3] == 0).all() and drop[0, 4] == 0
    merge = reconstruct_grains(theta, min_size=5, small="merge")
    assert merge.max() == 2 and (merge > 0).all()
    assert (merge[2:4, 1:3] == merge[0, 0]).all()
    # Left: (0,3), (1,3) and (2,4) below = 3 pairs; right: (0,5), (1,5) = 2 pairs -> joins the left.
    assert merge[0, 4] == merge[0, 0] != merge[0, 9]


def test_merge_chain_of_small_grains_reaches_min_size():
    # Small grains only next to each other: they merge into one that is large enough.
    theta = np.array([[0.0, 20.0, 40.0, 60.0]], np.float32)
    assert reconstruct_grains(theta, min_size=4, small="merge").tolist() == [[1, 1, 1, 1]]
    # A small isolated grain (masked around) cannot merge and is dropped.
    mask = np.array([[True, False, True, True]])
    theta = np.array([[0.0, 0.0, 40.0, 40.0]], np.float32)
    assert reconstruct_grains(theta, mask=mask, min_size=2).tolist() == [[0, 0, 1, 1]]


def test_filter_small_grains_ids_consecutive():
    lab = np.array([[1, 1, 2, 3, 3, 3]])
    assert filter_small_grains(lab, 2, small="drop").tolist() == [[1, 1, 0, 2, 2, 2]]


# ----------------------------------------------------------------------- slabs and block merging


def _voronoi_quats(shape, n, rng, noise_deg=0.5):
    from scipy import ndimage

    seeds = np.zeros(shape, bool)
    flat = rng.choice(seeds.size, n, replace=False)
    seeds.ravel()[flat] = True
    ids = np.zeros(shape, int)
    ids.ravel()[flat] = np.arange(n)
    _, ind = ndimage.distance_transform_edt(~seeds, return_indices=True)
    q = ori.random_quaternions(n, rng)[ids[tuple(ind)]]
    noise = ori.axis_angle_to_quat(rng.normal(size=q.shape[:-1] + (3,)), np.abs(rng.normal(0, noise_deg, q.shape[:-1])))
    return np.moveaxis(ori.quat_multiply(q, noise), -1, 0).astype(np.float32)


@pytest.mark.parametrize("connectivity", [1, 2])
def test_slab_stitching_equals_single_slab(monkeypatch, connectivity):
    q = _voronoi_quats((24, 20, 22), 30, np.random.default_rng(5), noise_deg=2.0)
    whole = reconstruct_grains(q, connectivity=connectivity, threshold=4.0)
    monkeypatch.setattr(rec, "SLAB_PAIRS", 20 * 22 * 13 * 3)  # slabs of a few planes
    slabs = reconstruct_grains(q, connectivity=connectivity, threshold=4.0)
    np.testing.assert_array_equal(whole, slabs)  # same ids, not just the same partition
    assert whole.max() > 20


def test_block_labels_merge_across_face():
    """What a streaming engine does: label two blocks alone, merge across the face, relabel."""
    q = _voronoi_quats((40, 30), 12, np.random.default_rng(6))
    full = reconstruct_grains(q, connectivity=2)
    top = reconstruct_grains(q[:, :17], connectivity=2).astype(np.int64)
    bottom = reconstruct_grains(q[:, 17:], connectivity=2).astype(np.int64)
    bottom[bottom > 0] += top.max()
    pairs = face_equivalences(top[-1], bottom[0], q[:, 16], q[:, 17], symmetry="cubic", connectivity=2)
    mapping = resolve_equivalences(int(bottom.max()), pairs)
    merged = mapping[np.concatenate([top, bottom])]
    assert same_partition(merged, full)
    assert pairs.shape[1] == 2 and len(pairs) > 0
    # Without the merge the face splits grains: the test can fail.
    assert not same_partition(np.concatenate([top, bottom]), full)


# ----------------------------------------------------------------------------------- bad input


def test_bad_inputs_raise_one_line_errors():
    theta = np.zeros((5, 5), np.float32)
    with pytest.raises(MicroSymError, match="mask: shape"):
        reconstruct_grains(theta, mask=np.ones((4, 5), bool))
    with pytest.raises(MicroSymError, match="boundary: shape"):
        reconstruct_grains(theta, boundary=np.ones((5, 4)))
    with pytest.raises(MicroSymError, match="cubic symmetry needs quaternions"):
        reconstruct_grains(theta, symmetry="cubic")
    with pytest.raises(MicroSymError, match="unknown symmetry"):
        reconstruct_grains(theta, symmetry="triclinic")
    with pytest.raises(MicroSymError, match="connectivity"):
        reconstruct_grains(theta, connectivity=5)
    with pytest.raises(MicroSymError, match="small"):
        reconstruct_grains(theta, small="keep")


# ----------------------------------------------------------------- region merging (network maps)


def _two_grains_with_smooth_turn(width=40, turn=4):
    """Angles 0° | 10° with a linear turn over ``turn`` px: no pixel pair differs by more than 2.5°."""
    x = np.arange(width, dtype=np.float64)
    ang = np.clip((x - width / 2) / turn, 0, 1) * 10.0
    return np.tile(ang, (12, 1)).astype(np.float32)


def test_region_merge_keeps_a_smoothly_turning_low_angle_boundary():
    from micro_sym.grains.regions import merge_regions

    ang = _two_grains_with_smooth_turn()
    plain = reconstruct_grains(ang, symmetry="square", threshold=5.0)
    assert plain.max() == 1  # the pair rule cannot see a 10° boundary turned over 4 px
    regions = reconstruct_grains(ang, symmetry="square", threshold=2.0)
    merged = merge_regions(regions, ang, k=4, threshold=5.0)
    assert merged.max() == 2
    assert (merged[:, :18] == merged[0, 0]).all() and (merged[:, 24:] == merged[0, -1]).all()


def test_region_merge_joins_regions_across_a_thin_boundary_only_below_threshold():
    from micro_sym.grains.regions import merge_regions, near_pairs

    ang = np.zeros((10, 30), np.float32)
    ang[:, 15:] = 3.0  # a 3° sub-grain boundary: one grain under the 5° rule
    lab = np.ones((10, 30), np.int32)
    lab[:, 15:] = 2
    lab[:, 14:16] = 0  # ... which the network drew as a 2-px boundary
    assert near_pairs(lab, 2).size == 0 and near_pairs(lab, 3).tolist() == [[1, 2]]
    assert merge_regions(lab, ang, k=4, threshold=5.0, reach=3).max() == 1
    assert merge_regions(lab, ang, k=4, threshold=5.0, reach=2).max() == 2  # too far apart
    assert merge_regions(lab, ang, k=4, threshold=2.0, reach=3).max() == 2  # too different
    out = merge_regions(lab, ang, k=4, threshold=5.0, reach=3)
    assert (out[lab == 0] == 0).all()  # boundary pixels stay boundary


def test_region_merge_tells_crossed_fringes_apart_only_at_k_2():
    """Fringes at 0° and 90° are one orientation modulo 90° (k = 4) and two modulo 180° (k = 2)."""
    from micro_sym.grains.regions import merge_regions

    ang = np.zeros((10, 30), np.float32)
    ang[:, 15:] = 91.0
    lab = np.ones((10, 30), np.int32)
    lab[:, 15:] = 2
    assert merge_regions(lab, ang, k=4, threshold=5.0).max() == 1
    assert merge_regions(lab, ang, k=2, threshold=5.0).max() == 2
    ang[:, 15:] = 178.0  # 2° from 0° modulo 180°
    assert merge_regions(lab, ang, k=2, threshold=5.0).max() == 1


def test_region_merge_is_greedy_on_updated_means():
    """0° (big) - 4° (thin strip) - 8° (big): the strip joins one side; the two grains stay apart."""
    from micro_sym.grains.regions import merge_similar_regions

    sums = np.zeros((4, 2))
    for i, (deg, n) in enumerate([(0.0, 1000), (4.0, 10), (8.0, 1000)], 1):
        t = np.deg2rad(deg) * 4
        sums[i] = n * np.cos(t), n * np.sin(t)
    mapping = merge_similar_regions(3, sums, [(1, 2), (2, 3)], threshold=5.0, k=4)
    assert mapping.max() == 2 and mapping[1] != mapping[3]
    # A mirror of the same problem across the 0°/90° wrap behaves the same.
    sums[:, 1] *= -1
    assert merge_similar_regions(3, sums, [(1, 2), (2, 3)], threshold=5.0, k=4).max() == 2

"""3D grains split and joined by the volume's measured lattice (micro_sym.grains.split3d)."""

from __future__ import annotations

import numpy as np
import pytest
from _lattice import fcc_blobs

from micro_sym.grains.split3d import REFINE_RULE, grain_pieces, join_lut, refine_volume, two_means
from micro_sym.orientation import axis_angle_to_quat, quat_multiply, random_quaternions
from micro_sym.orientation.cubic_harmonics import quat_to_sh4

PERIOD = 5.0  # fcc {111} plane spacing, voxels
RING = 1.0 / PERIOD
SHAPE = (40, 40, 40)
DEGREES = (4,)


def _field(q_of_voxel: np.ndarray) -> np.ndarray:
    """The exact unit l = 4 harmonic field ``(9, *shape)`` of a per-voxel quaternion map ``(*shape, 4)``."""
    f = quat_to_sh4(q_of_voxel.reshape(-1, 4), DEGREES)
    f = f / np.linalg.norm(f, axis=1, keepdims=True)
    return np.moveaxis(f.reshape(*q_of_voxel.shape[:-1], -1), -1, 0).astype(np.float32)


def _bicrystal(seed: int, angle: float = 30.0, field_angle: float | None = None):
    """An fcc bicrystal split at x = 24 (second crystal ``angle`` degrees about [001] from the first) and a
    field that shows the second crystal ``field_angle`` degrees away (default: where it is)."""
    rng = np.random.default_rng(seed)
    q1 = random_quaternions(1, rng)[0]
    q2 = quat_multiply(q1, axis_angle_to_quat(np.array([0.0, 0.0, 1.0]), angle))
    q_field = quat_multiply(q1, axis_angle_to_quat(np.array([0.0, 0.0, 1.0]), angle if field_angle is None else field_angle))
    right = np.zeros(SHAPE, bool)
    right[:, :, 24:] = True
    volume = np.where(right, fcc_blobs(SHAPE, q2, rng), fcc_blobs(SHAPE, q1, rng)).astype(np.float32)
    qmap = np.where(right[..., None], q_field, q1)
    return volume, _field(qmap), right


def test_two_means_separates_two_clusters_whatever_their_sizes():
    rng = np.random.default_rng(0)
    a = rng.normal(0.0, 0.05, (300, 9)) + 1.0
    b = rng.normal(0.0, 0.05, (60, 9)) - 1.0
    lab = two_means(np.vstack([a, b]))
    assert len(set(lab[:300])) == 1 and len(set(lab[300:])) == 1 and lab[0] != lab[-1]


def test_a_grain_of_two_crystals_is_split_along_their_boundary():
    volume, field, right = _bicrystal(1)
    pieces = grain_pieces(np.ones(SHAPE, bool), field, volume, ring=RING, degrees=DEGREES, **REFINE_RULE)
    assert pieces is not None and pieces.max() == 1
    piece = pieces == 1
    side = right if piece[right].mean() > 0.5 else ~right
    # The piece is one crystal, up to the smoothing (a lattice period) at their boundary.
    assert (piece != side).mean() < 0.02, (piece != side).mean()


def test_no_split_where_the_volume_shows_one_crystal():
    # The field claims a second orientation (30°) the volume does not hold: the measurement refuses it.
    rng = np.random.default_rng(2)
    q = random_quaternions(1, rng)[0]
    volume = fcc_blobs(SHAPE, q, rng).astype(np.float32)
    qmap = np.broadcast_to(q, SHAPE + (4,)).copy()
    qmap[:, :, 24:] = quat_multiply(q, axis_angle_to_quat(np.array([0.0, 0.0, 1.0]), 30.0))
    assert grain_pieces(np.ones(SHAPE, bool), _field(qmap), volume, ring=RING, degrees=DEGREES, **REFINE_RULE) is None


def test_no_split_where_the_field_shows_one_orientation():
    # Two crystals 30° apart in the volume, but the network's field sees one: nothing proposes a split.
    volume, field, _ = _bicrystal(3, field_angle=0.0)
    assert grain_pieces(np.ones(SHAPE, bool), field, volume, ring=RING, degrees=DEGREES, **REFINE_RULE) is None


def test_a_second_group_closer_than_sep_is_not_split():
    volume, field, _ = _bicrystal(4, angle=30.0, field_angle=6.0)  # the field's groups 6° apart, under sep (10°)
    assert grain_pieces(np.ones(SHAPE, bool), field, volume, ring=RING, degrees=DEGREES, **REFINE_RULE) is None


def test_join_lut_joins_neighbours_measured_alike_and_keeps_the_order():
    q = random_quaternions(4, np.random.default_rng(5))
    close = quat_multiply(q[0], axis_angle_to_quat(np.array([1.0, 0.0, 0.0]), 1.0))  # 1° from grain 1
    quats = np.vstack([np.full(4, np.nan), q[0], q[1], close, q[2], np.full(4, np.nan)])  # grains 1..5
    pairs = np.array([[1, 3], [2, 3], [4, 5], [1, 2]])
    lut = join_lut(pairs, quats, 3.0)
    assert lut.tolist() == [0, 1, 2, 1, 3, 4]  # 3 joins 1; 5 (not measured) stays alone
    assert join_lut(pairs, quats, 0.0).tolist() == [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize("join", [0.0, 3.0])
def test_refine_volume_splits_then_joins(join):
    # Grain 1 holds both crystals; grain 2, cut off the first crystal's far side, is of the first crystal.
    volume, field, right = _bicrystal(6)
    labels = np.ones(SHAPE, np.uint32)
    labels[:, :8, :24] = 2
    out = refine_volume(labels, field, volume, ring=RING, degrees=DEGREES, rule={**REFINE_RULE, "join": join})
    if join:
        # Grain 2 joins what stays of grain 1, on its side: two grains, one per crystal.
        assert len(np.unique(out)) == 2
        assert (out[~right] == out[labels == 2][0]).mean() > 0.97
    else:
        assert len(np.unique(out)) == 3 and set(np.unique(out)) == {1, 2, 3}


def test_a_grain_whose_box_exceeds_the_size_cap_is_not_split(monkeypatch):
    from micro_sym.grains import split3d

    volume, field, _ = _bicrystal(1)
    monkeypatch.setattr(split3d, "MAX_SIDE", SHAPE[0] - 1)
    assert grain_pieces(np.ones(SHAPE, bool), field, volume, ring=RING, degrees=DEGREES, **REFINE_RULE) is None

"""3D grains from the cubic-harmonic field (micro_sym.grains.field): the same rule without per-voxel decodes."""

import numpy as np
import pytest

from micro_sym.grains import reconstruct_grains
from micro_sym.grains.field import grain_orientations, paint
from micro_sym.grains.reconstruct import orientation_kind
from micro_sym.grains.seeded import seeded_grains
from micro_sym.orientation import axis_angle_to_quat, cubic_symmetry_quats, misorientation_cubic, quat_multiply
from micro_sym.orientation.cubic_harmonics import field_min_dot, quat_to_sh4, unit_fields


def fields_of(q, degrees=(4,)):
    """Unit fields ``(C, *spatial)`` of quaternions ``(4, *spatial)``."""
    return unit_fields(np.moveaxis(quat_to_sh4(np.moveaxis(q, 0, -1), degrees), -1, 0), degrees)


def rotations(angle_deg, axes):
    axes = np.asarray(axes, float)
    return axis_angle_to_quat(axes / np.linalg.norm(axes, axis=-1, keepdims=True), np.full(len(axes), angle_deg))


@pytest.mark.parametrize("degrees", [(4,), (4, 6)])
def test_the_threshold_on_fields_is_the_misorientation_about_any_axis(degrees):
    """<h(q), h(q δ)> for a 5° δ about very different axes, from several starting orientations, is the
    threshold's value to 1 % of 1 - <h, h'> (the cubic group leaves only the isotropic quadratic form)."""
    rng = np.random.default_rng(0)
    start = rng.standard_normal((6, 4))
    start /= np.linalg.norm(start, axis=1, keepdims=True)
    delta = rotations(5.0, [[0, 0, 1], [1, 1, 1], [1, 2, 3], [0, 1, 1], [3, -1, 2], [1, 0, 0]])
    a = fields_of(start.T, degrees)
    b = fields_of(quat_multiply(start, delta).T, degrees)
    dots = (a * b).sum(0)
    tau = 1 - field_min_dot(5.0, degrees)
    np.testing.assert_allclose(1 - dots, tau, rtol=0.01)
    # and cubic-equivalent orientations have equal fields
    twin = fields_of(quat_multiply(start, np.tile(cubic_symmetry_quats()[7], (6, 1))).T, degrees)
    np.testing.assert_allclose((a * twin).sum(0), 1.0, atol=1e-5)


def test_fields_are_their_own_orientation_kind():
    assert orientation_kind((9, 4, 4, 4), "cubic").kind == "field"
    assert orientation_kind((22, 4, 4, 4), "cubic").degrees == (4, 6)
    assert orientation_kind((4, 4, 4, 4), "cubic").kind == "quat"


def _polycrystal(seed=0, n=20, grains=6, spread_deg=1.0):
    """Quaternions ``(4, n, n, n)`` of Voronoi grains at least 15° apart, each voxel turned by up to
    ``spread_deg`` about a random axis, each voxel given a random cubic-equivalent representative."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, n, (grains, 3))
    pos = np.stack(np.indices((n,) * 3), -1).reshape(-1, 3)
    owner = np.argmin(((pos[:, None] - centres[None]) ** 2).sum(-1), 1)
    mean = []
    while len(mean) < grains:
        q = rng.standard_normal(4)
        q /= np.linalg.norm(q)
        if all(misorientation_cubic(q, m) > 15 for m in mean):
            mean.append(q)
    mean = np.array(mean)
    axes = rng.standard_normal((len(pos), 3))
    wobble = axis_angle_to_quat(axes / np.linalg.norm(axes, axis=1, keepdims=True), rng.uniform(0, spread_deg, len(pos)))
    q = quat_multiply(mean[owner], wobble)
    q = quat_multiply(q, cubic_symmetry_quats()[rng.integers(0, 24, len(pos))])
    return np.moveaxis(q.reshape((n,) * 3 + (4,)), -1, 0).astype(np.float32), owner.reshape((n,) * 3) + 1, mean


def test_field_grains_equal_quaternion_grains_where_the_rule_is_clear_cut():
    """Neighbours within a grain lie ≤ 2° apart, grains ≥ 15°: the field rule and the decoded
    (quaternion) rule make every decision alike, pair rule and seeded rule."""
    q, owner, _ = _polycrystal()
    h = fields_of(q)
    np.testing.assert_array_equal(reconstruct_grains(h, symmetry="cubic", min_size=0),
                                  reconstruct_grains(q, symmetry="cubic", min_size=0))
    boundary = np.zeros(owner.shape, np.float32)
    for ax in range(3):  # a predicted boundary where the true grain changes
        lo = tuple(slice(0, -1) if a == ax else slice(None) for a in range(3))
        hi = tuple(slice(1, None) if a == ax else slice(None) for a in range(3))
        wall = owner[lo] != owner[hi]
        boundary[lo][wall] = 0.9
    fields_seeded = seeded_grains(h, boundary, symmetry="cubic", min_size=8)
    np.testing.assert_array_equal(fields_seeded, seeded_grains(q, boundary, symmetry="cubic", min_size=8))
    assert fields_seeded.max() == 6


def test_a_grain_of_mixed_symmetry_equivalents_decodes_to_its_mean_orientation():
    """Each voxel holds another of the 24 equivalent quaternions: the field needs no alignment, and the
    decode of its grain sum lands within 0.2° of the grain's orientation."""
    q, owner, mean = _polycrystal(seed=1, spread_deg=2.0)
    table = grain_orientations(fields_of(q), owner, (4,))
    assert np.isnan(table[0]).all() and table.shape == (7, 4)
    assert misorientation_cubic(table[1:], mean).max() < 0.2
    painted = paint(owner, table)
    assert painted.shape == (4,) + owner.shape and painted.dtype == np.float32
    np.testing.assert_array_equal(painted[:, owner == 3], np.repeat(table[3:4].astype(np.float32).T, (owner == 3).sum(), 1))


def test_the_map_takes_each_grain_s_measured_orientation_where_the_table_has_one():
    from micro_sym.grains.field import table_orientations

    mean = np.array([[1.0, 0, 0, 0], [0.0, 1, 0, 0], [0.0, 0, 1, 0]])
    measured = np.array([[0.0, 0, 0, 1], [np.nan] * 4, [0.5, 0.5, 0.5, 0.5]])
    table = {**{f"mean_q{c}": mean[:, i] for i, c in enumerate("wxyz")},
             **{f"lattice_q{c}": measured[:, i] for i, c in enumerate("wxyz")}}
    lut = table_orientations(table, 3)
    assert np.isnan(lut[0]).all()
    np.testing.assert_array_equal(lut[1:], [measured[0], mean[1], measured[2]])
    plain = {k: v for k, v in table.items() if k.startswith("mean")}  # not measured (--no-measure-grains)
    np.testing.assert_array_equal(table_orientations(plain, 3)[1:], mean)

"""Cubic-harmonic orientation field: encode/decode round trip, symmetry, escnn basis convention."""

import numpy as np
import pytest

from micro_sym.orientation.cubic_harmonics import DIM, VOLUME_TO_ESCNN, escnn_irrep_matrices, matrix_to_sh, quat_to_sh4, sh_to_quat
from micro_sym.orientation import (
    cubic_symmetry_quats,
    misorientation_cubic,
    quat_multiply,
    quat_to_matrix,
    random_quaternions,
)


@pytest.mark.parametrize("degrees", [(4,), (4, 6)])
def test_decode_recovers_random_orientations(degrees):
    q = random_quaternions(3000, np.random.default_rng(0))
    c = quat_to_sh4(q, degrees)
    assert c.shape == (3000, sum(DIM[l] for l in degrees))
    err = misorientation_cubic(q, sh_to_quat(c, degrees))
    assert err.max() < 1e-4, err.max()  # exact coefficients decode to float rounding (measured 2.4e-6°)


def test_field_is_cubic_invariant_and_not_more():
    q = random_quaternions(200, np.random.default_rng(1))
    c = quat_to_sh4(q, (4, 6))
    for s in cubic_symmetry_quats():
        assert np.allclose(quat_to_sh4(quat_multiply(q, s), (4, 6)), c, atol=1e-10)
    # A rotation that is not a cube symmetry (10° about z) changes the field: it identifies orientation.
    r = np.array([np.cos(np.deg2rad(5)), 0, 0, np.sin(np.deg2rad(5))])
    assert np.abs(quat_to_sh4(quat_multiply(q, r)) - quat_to_sh4(q)).max() > 0.05


def test_matches_escnn_wigner_matrices():
    # D(g) c(R) == c(g R): the encoding transforms with escnn's irrep(4)/(6) matrices, so an escnn
    # network's l=4 output field and these targets live in the same basis.
    rng = np.random.default_rng(2)
    mats = quat_to_matrix(random_quaternions(6, rng))
    g = quat_to_matrix(random_quaternions(6, rng))
    for l in (4, 6):
        d = escnn_irrep_matrices(l, g)
        lhs = np.einsum("nij,nj->ni", d, matrix_to_sh(mats, (l,)))
        assert np.allclose(lhs, matrix_to_sh(g @ mats, (l,)), atol=1e-9)


def test_physical_frame_convention():
    # quat_to_sh4 works in micro_sym's physical frame; escnn's frame is a 180° turn about x away.
    q = random_quaternions(5, np.random.default_rng(3))
    assert np.allclose(quat_to_sh4(q), matrix_to_sh(VOLUME_TO_ESCNN @ quat_to_matrix(q)))


def test_noisy_and_nan_inputs():
    q = random_quaternions(500, np.random.default_rng(4))
    c = quat_to_sh4(q) * 3.0 + np.random.default_rng(5).normal(scale=0.03, size=(500, 9))
    qd, res = sh_to_quat(c, return_residual=True)
    assert np.median(misorientation_cubic(q, qd)) < 2.0  # scale-free, graceful under noise
    assert np.all(res >= 0)
    c[3] = np.nan
    out = sh_to_quat(c)
    assert np.isnan(out[3]).all() and np.isfinite(out[4]).all()
    assert np.isnan(quat_to_sh4(np.full(4, np.nan))).all()


@pytest.mark.parametrize("degrees", [(4,), (4, 6)])
def test_noisy_decode_is_a_local_minimum_of_the_coefficient_distance(degrees):
    # The compiled Gauss-Newton/Newton refinement must land on a stationary point of
    # |D(R) c0 - c| (the objective it minimizes), not just somewhere near the truth.
    from micro_sym.orientation.cubic_harmonics import _normalize_blocks, sh_to_matrix

    rng = np.random.default_rng(6)
    c = quat_to_sh4(random_quaternions(200, rng), degrees)
    c = _normalize_blocks(c + rng.normal(scale=0.04, size=c.shape), degrees)
    mats, res = sh_to_matrix(c, degrees)
    np.testing.assert_allclose(res, np.linalg.norm(matrix_to_sh(mats, degrees) - c, axis=-1), atol=1e-12)
    # Gradient of the squared distance over small left rotations exp(ω) R, by central differences.
    h = 1e-6
    grad = np.zeros((len(c), 3))
    for k in range(3):
        f = []
        for angle in (h, -h):
            axis = np.zeros(3)
            axis[k] = 1.0
            moved = quat_to_matrix(np.r_[np.cos(angle / 2), np.sin(angle / 2) * axis]) @ mats
            f.append((np.linalg.norm(matrix_to_sh(moved, degrees) - c, axis=-1)) ** 2)
        grad[:, k] = (f[0] - f[1]) / (2 * h)
    assert np.abs(grad).max() < 1e-6, np.abs(grad).max()  # finite-difference floor ~3e-8; a wrong Newton term leaves ~3e-5


def test_shipped_constants_equal_escnn():
    """weights/cubic_harmonics.npz (what encoding and decoding use, no escnn needed) is escnn's."""
    from micro_sym.orientation.cubic_harmonics import CONSTANTS_PATH, _constants, constants_from_escnn

    assert CONSTANTS_PATH.is_file()
    shipped, fresh = _constants(), constants_from_escnn()
    assert set(shipped) == set(fresh) == {f"{name}_{l}" for name in ("c0", "P", "L") for l in (4, 6)}
    for key in fresh:
        np.testing.assert_allclose(shipped[key], fresh[key], atol=1e-9, err_msg=key)

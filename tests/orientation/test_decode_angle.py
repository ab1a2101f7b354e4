"""Decoding a 2D orientation field: the angle in [0, 360/k) and the vector length, in the maps' precision."""

from __future__ import annotations

import numpy as np
import pytest

from micro_sym.orientation import decode_angle, encode_angle, misorientation_2d


@pytest.mark.parametrize("k", [2, 4, 6])
def test_float32_maps_decode_in_float32_within_their_rounding(k):
    period = 360.0 / k
    angles = np.concatenate([np.random.default_rng(k).uniform(0, period, 5000),
                             [0.0, period / 2, 1e-7, period - 1e-7]])
    field = (0.8 * encode_angle(angles, k)).astype(np.float32)
    theta, length = decode_angle(field, k)
    assert theta.dtype == length.dtype == np.float32
    assert np.all((theta >= 0) & (theta < period))  # a tiny negative angle wraps to 0, never to the period
    assert np.max(misorientation_2d(theta, angles, k)) < 2e-5
    np.testing.assert_allclose(length, 0.8, rtol=1e-6)
    theta64, _ = decode_angle(field.astype(np.float64), k)
    assert theta64.dtype == np.float64 and np.max(misorientation_2d(theta64, theta, k)) < 2e-5


def test_a_tiny_negative_angle_is_zero_not_the_period():
    field = np.array([[1.0], [-1e-9]], np.float32)  # atan2 just below 0
    theta, _ = decode_angle(field, 4)
    assert 0.0 <= float(theta[0]) < 90.0
    assert np.isnan(decode_angle(np.array([[np.nan], [0.0]], np.float32), 4)[0][0])

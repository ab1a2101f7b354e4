"""Compiled per-voxel decoding of network outputs (numba).

Normalizing a quaternion head in numpy takes a float64 copy and several volume-sized temporaries
(~0.25 s per 128³ block, a third of a small model's forward pass); this does it in one pass with the
same float64 arithmetic, in the same order, so the decoded maps are bit-identical.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True, error_model="numpy")  # 0/0 -> NaN, as numpy
def _unit_quaternions(y, out):
    n = y.shape[1]
    for i in range(n):
        q0, q1, q2, q3 = np.float64(y[0, i]), np.float64(y[1, i]), np.float64(y[2, i]), np.float64(y[3, i])
        norm = np.sqrt(q0 * q0 + q1 * q1 + q2 * q2 + q3 * q3)
        q0, q1, q2, q3 = q0 / norm, q1 / norm, q2 / norm, q3 / norm
        s = -1.0 if q0 < 0 else 1.0  # the scalar-first hemisphere convention
        out[0, i], out[1, i], out[2, i], out[3, i] = q0 * s, q1 * s, q2 * s, q3 * s


def unit_quaternions(y):
    """``(4, ...)`` raw quaternion outputs -> unit quaternions with ``w >= 0``, float32.

    Equal to ``q = y / ‖y‖`` (float64) with the sign flipped where ``q[0] < 0``, cast to float32.
    """
    y = np.asarray(y)
    flat = np.ascontiguousarray(y).reshape(4, -1)
    out = np.empty(flat.shape, np.float32)
    _unit_quaternions(flat, out)
    return out.reshape(y.shape)

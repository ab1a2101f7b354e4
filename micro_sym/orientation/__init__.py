"""Orientation conventions (docs/design.md §1-§2): 2D k-fold angles and 3D cubic quaternions.

2D: the in-plane angle, in degrees, of the lattice's first basis vector from +x, counter-clockwise
as displayed (y points up on screen, i.e. towards decreasing row index), stored in ``[0, 360/k)``.

3D: unit quaternions ``(w, x, y, z)`` that rotate crystal-frame vectors into the volume frame,
``v_volume = q v_crystal q*``. Functions here take quaternions on the *last* axis ``(..., 4)``;
stored maps are channel-first ``(4, z, y, x)``, so move the axis with ``np.moveaxis`` first.
"""

from __future__ import annotations

import itertools

import numpy as np

# ----------------------------------------------------------------------------------------- 2D


def wrap_angle(theta_deg, k: int):
    """Map angles (degrees) of a k-fold lattice into ``[0, 360/k)``; NaN stays NaN."""
    period = 360.0 / k
    return np.mod(np.asarray(theta_deg, dtype=np.float64), period)


def misorientation_2d(a_deg, b_deg, k: int):
    """Symmetry-aware misorientation (degrees) between k-fold angles: ``|((a-b+180/k) mod 360/k) - 180/k|``.

    >>> float(misorientation_2d(89.0, 1.0, 4))
    2.0
    """
    period = 360.0 / k
    d = np.asarray(a_deg, dtype=np.float64) - np.asarray(b_deg, dtype=np.float64)
    return np.abs(np.mod(d + period / 2, period) - period / 2)


def encode_angle(theta_deg, k: int):
    """Angle -> ``(cos kθ, sin kθ)`` stacked on a new first axis (the frequency-k O(2) field)."""
    t = np.deg2rad(np.asarray(theta_deg, dtype=np.float64)) * k
    return np.stack([np.cos(t), np.sin(t)])


def decode_angle(cos_ksin, k: int):
    """``(cos kθ, sin kθ)`` on the first axis -> (angle in ``[0, 360/k)`` degrees, vector length).

    In the inputs' precision, float32 at least: a network's float32 maps decode in float32, whose
    vectorized arctan2 is many times faster than float64's (this runs on every pixel of every tile)
    and as exact as the float32 map the angle is stored in.
    """
    c, s = np.asarray(cos_ksin[0]), np.asarray(cos_ksin[1])
    dtype = np.result_type(c.dtype, s.dtype, np.float32)
    c, s = c.astype(dtype, copy=False), s.astype(dtype, copy=False)
    period = dtype.type(360.0 / k)
    theta = np.rad2deg(np.arctan2(s, c)) / dtype.type(k)  # in [-period/2, period/2]
    theta = np.where(theta < 0, theta + period, theta)  # np.mod's result, without its slow division
    # A tiny negative angle plus the period can round up to the period itself: that is angle 0.
    theta = np.where(theta >= period, dtype.type(0), theta)
    return theta, np.hypot(c, s)


# ----------------------------------------------------------------------------------------- 3D


def quat_multiply(a, b):
    """Hamilton product ``a ⊗ b`` of quaternion arrays ``(..., 4)`` (broadcasting)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    aw, ax, ay, az = np.moveaxis(a, -1, 0)
    bw, bx, by, bz = np.moveaxis(b, -1, 0)
    return np.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        axis=-1,
    )


def quat_conjugate(q):
    """Conjugate (= inverse for unit quaternions) of ``(..., 4)`` quaternions."""
    q = np.asarray(q, dtype=np.float64)
    return q * np.array([1.0, -1.0, -1.0, -1.0])


def quat_normalize(q):
    """Unit quaternions with non-negative scalar part (a canonical sign)."""
    q = np.asarray(q, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    return np.where(q[..., :1] < 0, -q, q)


def quat_to_matrix(q):
    """Rotation matrices ``(..., 3, 3)`` acting on column vectors ``(x, y, z)``."""
    w, x, y, z = np.moveaxis(quat_normalize(q), -1, 0)
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        axis=-2,
    )


def matrix_to_quat(m):
    """Rotation matrices ``(..., 3, 3)`` -> unit quaternions ``(..., 4)`` (numerically stable)."""
    m = np.asarray(m, dtype=np.float64)
    # Four candidate forms; use the one with the largest denominator per element.
    t = np.stack(
        [
            1 + m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2],
            1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2],
            1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2],
            1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2],
        ],
        axis=-1,
    )
    best = np.argmax(t, axis=-1)
    s = np.sqrt(np.maximum(np.take_along_axis(t, best[..., None], -1)[..., 0], 1e-300)) * 2
    q = np.empty(m.shape[:-2] + (4,))
    r = [
        [s / 4, (m[..., 2, 1] - m[..., 1, 2]) / s, (m[..., 0, 2] - m[..., 2, 0]) / s, (m[..., 1, 0] - m[..., 0, 1]) / s],
        [(m[..., 2, 1] - m[..., 1, 2]) / s, s / 4, (m[..., 0, 1] + m[..., 1, 0]) / s, (m[..., 0, 2] + m[..., 2, 0]) / s],
        [(m[..., 0, 2] - m[..., 2, 0]) / s, (m[..., 0, 1] + m[..., 1, 0]) / s, s / 4, (m[..., 1, 2] + m[..., 2, 1]) / s],
        [(m[..., 1, 0] - m[..., 0, 1]) / s, (m[..., 0, 2] + m[..., 2, 0]) / s, (m[..., 1, 2] + m[..., 2, 1]) / s, s / 4],
    ]
    for case in range(4):
        sel = best == case
        q[sel] = np.stack([c[sel] if np.ndim(c) else c for c in r[case]], -1)
    return quat_normalize(q)


def axis_angle_to_quat(axis, angle_deg):
    """Quaternion of a rotation by ``angle_deg`` about ``axis`` (broadcasting)."""
    axis = np.asarray(axis, dtype=np.float64)
    axis = axis / np.linalg.norm(axis, axis=-1, keepdims=True)
    half = np.deg2rad(np.asarray(angle_deg, dtype=np.float64))[..., None] / 2
    return np.concatenate([np.cos(half), np.sin(half) * axis], axis=-1)


def random_quaternions(n: int, rng: np.random.Generator):
    """``n`` quaternions uniform on SO(3) (Shoemake's method)."""
    u1, u2, u3 = rng.random((3, n))
    a, b = np.sqrt(1 - u1), np.sqrt(u1)
    q = np.stack(
        [a * np.sin(2 * np.pi * u2), a * np.cos(2 * np.pi * u2), b * np.sin(2 * np.pi * u3), b * np.cos(2 * np.pi * u3)],
        axis=-1,
    )
    return quat_normalize(q[:, [1, 0, 2, 3]])


def cubic_rotation_matrices():
    """The 24 rotation matrices of the cube (signed permutation matrices with det +1), ``(24, 3, 3)``."""
    mats = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1, -1), repeat=3):
            m = np.zeros((3, 3))
            m[np.arange(3), perm] = signs
            if np.linalg.det(m) > 0:
                mats.append(m)
    return np.array(mats)


def cubic_symmetry_quats():
    """The 24 proper rotations of the cube (point group 432) as quaternions ``(24, 4)``."""
    return matrix_to_quat(cubic_rotation_matrices())


_CUBIC = cubic_symmetry_quats()
# Row i of this matrix dotted with d gives the scalar part of d ⊗ s_i.
_CUBIC_W = _CUBIC * np.array([1.0, -1.0, -1.0, -1.0])


def misorientation_cubic(q1, q2):
    """Smallest rotation angle (degrees) of ``q1* q2 s`` over the 24 cubic rotations ``s``.

    Quaternions on the last axis; NaN inputs give NaN.
    """
    d = quat_multiply(quat_conjugate(q1), q2)
    w = np.abs(d @ _CUBIC_W.T).max(axis=-1)
    out = 2 * np.rad2deg(np.arccos(np.clip(w, -1.0, 1.0)))
    return np.where(np.isnan(d).any(axis=-1), np.nan, out)


def euler_bunge_to_quat(phi1_deg, Phi_deg, phi2_deg):
    """Bunge (ZXZ) Euler angles in degrees -> quaternions rotating crystal into sample frame.

    EBSD systems store the passive sample->crystal rotation ``g = Z(φ2) X(Φ) Z(φ1)``; its inverse,
    the active rotation ``Z(φ1) X(Φ) Z(φ2)``, maps crystal vectors into the sample frame, which is
    the micro_sym convention.
    """
    z = np.array([0.0, 0.0, 1.0])
    x = np.array([1.0, 0.0, 0.0])
    q1 = axis_angle_to_quat(z, phi1_deg)
    q2 = axis_angle_to_quat(x, Phi_deg)
    q3 = axis_angle_to_quat(z, phi2_deg)
    return quat_normalize(quat_multiply(quat_multiply(q1, q2), q3))


# ------------------------------------------------------------- symmetry groups and misorientation


def hexagonal_symmetry_quats():
    """The 12 proper rotations of point group 622 (Laue 6/mmm) as quaternions ``(12, 4)``.

    Six rotations about the c axis (z) by multiples of 60° and six 2-fold axes in the basal plane
    at multiples of 30° from x (the usual x ∥ a convention).
    """
    z = np.array([0.0, 0.0, 1.0])
    about_c = axis_angle_to_quat(np.tile(z, (6, 1)), 60.0 * np.arange(6))
    phi = np.deg2rad(30.0 * np.arange(6))
    axes = np.stack([np.cos(phi), np.sin(phi), np.zeros(6)], -1)
    two_fold = axis_angle_to_quat(axes, np.full(6, 180.0))
    return quat_normalize(np.concatenate([about_c, two_fold]))


def symmetry_quats(symmetry: str):
    """Proper rotations of a Laue group by name: ``"cubic"`` (432, 24) or ``"hexagonal"`` (622, 12)."""
    if symmetry == "cubic":
        return _CUBIC.copy()
    if symmetry == "hexagonal":
        return hexagonal_symmetry_quats()
    raise ValueError(f"unknown symmetry '{symmetry}' (expected cubic or hexagonal)")


def nearest_without_search_cos(symmetry: str) -> float:
    """``|q · ref|`` above which ``q`` itself is its symmetry equivalent nearest ``ref``.

    That is within half the group's smallest rotation (90° cubic, 60° hexagonal) of ``ref``: any
    other equivalent is then at least that rotation minus our angle away, so strictly farther.
    """
    half = {"cubic": 45.0, "hexagonal": 30.0}[symmetry]
    return float(np.cos(np.deg2rad(half) / 2))


def reduce_to_reference(q, ref, symmetry: str = "cubic"):
    """The symmetry-equivalent ``q ⊗ s`` of each quaternion closest to ``ref`` (same hemisphere).

    Averaging quaternions is only meaningful once they are expressed near one another; this picks,
    for every ``q`` (``(..., 4)``), the equivalent with the largest ``|ref · (q ⊗ s)|`` and flips its
    sign so the dot product is positive. ``ref`` broadcasts against ``q``.
    """
    q = np.asarray(q, dtype=np.float64)
    ref = np.broadcast_to(np.asarray(ref, dtype=np.float64), q.shape)
    sym = symmetry_quats(symmetry)
    # Fast path (nearly every voxel of a grain aligned to one of its own voxels): q itself.
    d0 = np.einsum("...i,...i->...", q, ref)
    near = np.abs(d0) > nearest_without_search_cos(symmetry)
    out = np.where((d0 < 0)[..., None], -q, q)
    far = ~near
    if far.any():
        qf, rf = q[far], ref[far]
        # <ref, q ⊗ s> = Re(ref* ⊗ q ⊗ s) = <q* ⊗ ref, s>: one product per quaternion and one small
        # matrix product score all |G| equivalents (instead of |G| quaternion products).
        dots = quat_multiply(quat_conjugate(qf), rf) @ sym.T
        best = np.argmax(np.abs(dots), axis=-1)  # the first of equal maxima, as a strict > scan keeps
        qs = quat_multiply(qf, sym[best])
        sign = np.take_along_axis(dots, best[..., None], axis=-1)
        out[far] = np.where(sign < 0, -qs, qs)
    return out


def quat_rotate(q, v):
    """Rotate vectors ``v`` (``(..., 3)``) by quaternions ``q`` (``(..., 4)``): ``q v q*``."""
    return np.einsum("...ij,...j->...i", quat_to_matrix(q), np.asarray(v, dtype=np.float64))


def ipf_colour_cubic(q, direction=(0.0, 0.0, 1.0)):
    """Inverse-pole-figure RGB colours (``(..., 3)`` in [0, 1]) for cubic orientations.

    The sample ``direction`` is expressed in the crystal frame (``q* v q``, since ``q`` maps crystal
    to sample), folded into the standard triangle [001]-[101]-[111] (|components| sorted so that
    z >= x >= y) and coloured red = [001], green = [101], blue = [111] by the barycentric-like weights
    ``(z - x, x - y, y)``, each colour scaled to full brightness. NaN quaternions give white.
    """
    q = np.asarray(q, dtype=np.float64)
    v = quat_rotate(quat_conjugate(q), np.broadcast_to(np.asarray(direction, float), q.shape[:-1] + (3,)))
    return ipf_colour_from_crystal_direction(v)


def ipf_colour_from_crystal_direction(v):
    """RGB of crystal directions ``(..., 3)`` in the cubic standard-triangle key (see ``ipf_colour_cubic``)."""
    v = np.abs(np.asarray(v, dtype=np.float64))
    v = v / np.linalg.norm(v, axis=-1, keepdims=True)
    s = np.sort(v, axis=-1)  # ascending: y <= x <= z in the standard triangle
    y, x, z = s[..., 0], s[..., 1], s[..., 2]
    rgb = np.stack([z - x, x - y, y], axis=-1)
    rgb = rgb / np.max(rgb, axis=-1, keepdims=True)
    # A gamma brightens the mid-triangle colours, as in common IPF keys.
    rgb = np.clip(rgb, 0, 1) ** 0.5
    return np.where(np.isnan(rgb), 1.0, rgb)

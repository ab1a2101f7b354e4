"""Cubic orientation as an equivariant field: the l = 4 (and l = 6) cubic harmonics (docs/design.md §2).

The degree-4 cubic harmonic ``x⁴ + y⁴ + z⁴ - 3r⁴/5`` is invariant under exactly the 24 rotations
of the cube, so the 9 real spherical-harmonic coefficients of the rotated harmonic,
``c(R) = D⁴(R) c₀``, identify an orientation ``R`` modulo cubic symmetry. A 3D network that is
equivariant to rotations predicts this 9-vector as an l = 4 field; ``sh_to_quat`` turns it back into
a quaternion. The l = 6 cubic harmonic (13 coefficients) can be appended to improve conditioning.

Basis convention. The coefficients are expressed in **escnn's** basis of ``so3_group().irrep(l)``
and in **escnn's coordinate frame** for 3D volumes, so that the output field of an escnn network
(``R3Conv`` into the restricted irrep) transforms consistently with these targets:

* micro_sym's physical frame (docs/design.md §1): x = last array axis, y = second-to-last, z = first,
  each towards increasing index;
* escnn's kernel grid (``escnn.nn.modules.conv.rd_convolution.get_grid_coords``): x = last axis,
  y and z towards *decreasing* index.

The two differ by the proper rotation ``VOLUME_TO_ESCNN = diag(1, -1, -1)`` (180° about x), so a
micro_sym quaternion ``q`` is encoded as ``D(VOLUME_TO_ESCNN · R(q)) c₀`` and decoded back.
The test suite checks this against a real escnn network under all 24 grid rotations.

Implementation. ``D^l(R) c₀`` is evaluated for millions of voxels without escnn: the rotated
harmonic is sampled at fixed points on the sphere and a fixed linear map (fitted exactly against
escnn's Wigner matrices, shipped in ``weights/cubic_harmonics.npz``) projects the samples onto
escnn's coefficients.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from micro_sym.orientation import cubic_rotation_matrices, matrix_to_quat, quat_normalize, quat_to_matrix

#: Linear map from micro_sym's physical volume frame to escnn's frame (a rotation by 180° about x).
VOLUME_TO_ESCNN = np.diag([1.0, -1.0, -1.0])

#: Dimension of the real irrep of degree l.
DIM = {4: 9, 6: 13}

# Fixed sample points on the sphere. 96 generic points over-determine every even polynomial of
# degree <= 6 restricted to the sphere (1 + 5 + 9 + 13 = 28 dimensions), so the fitted projection
# below is exact, not a quadrature approximation.
_POINTS = np.random.default_rng(1234).normal(size=(96, 3))
_POINTS /= np.linalg.norm(_POINTS, axis=1, keepdims=True)
_NPOINTS = {4: 40, 6: 56}


def _cubic_poly(l: int, v):
    """A cubic-invariant polynomial whose degree-l harmonic part is the cubic harmonic of degree l."""
    # x^l + y^l + z^l is cubic invariant; restricted to the sphere it contains only cubic-invariant
    # harmonics of degree <= l (l=0, 4, 6), and its degree-l part is the cubic harmonic (non-zero).
    # Even l by repeated products of v² (a float power is several times slower; this runs per voxel).
    v2 = v * v
    p = v2
    for _ in range(l // 2 - 1):
        p = p * v2
    return p.sum(axis=-1)


#: The encoding's constants (c0, P and the generators per degree), computed by
#: :func:`constants_from_escnn` and shipped with the package, so that encoding and decoding (and so
#: deployed 3D models) need no escnn. ``python -m micro_sym.orientation.cubic_harmonics`` rewrites the file;
#: a test checks it against escnn.
CONSTANTS_PATH = Path(__file__).resolve().parents[1] / "weights" / "cubic_harmonics.npz"


def constants_from_escnn() -> dict:
    """``c0_l``, ``P_l`` (:func:`_escnn_fit`) and ``L_l`` (Lie-algebra generators) for l = 4 and 6."""
    out = {}
    for l in DIM:
        out[f"c0_{l}"], out[f"P_{l}"] = _escnn_fit(l)
        out[f"L_{l}"] = _escnn_generators(l)
    return out


@functools.lru_cache(maxsize=1)
def _constants() -> dict:
    with np.load(CONSTANTS_PATH) as f:
        return {key: f[key] for key in f.files}


def _fit(l: int):
    """``(c0, P)`` of degree l (see :func:`_escnn_fit`)."""
    c = _constants()
    return c[f"c0_{l}"], c[f"P_{l}"]


def _escnn_fit(l: int):
    """Fit ``(c0, P)``: ``c0`` the cubic-invariant vector of escnn's irrep(l), ``P`` the map
    from samples of the rotated polynomial at ``_POINTS`` to ``D^l(R) c0``.

    Imports escnn lazily (heavy import); everything else in this module is numpy.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from escnn.group import so3_group

    so3 = so3_group(max(l, 6))
    irrep = so3.irrep(l)
    cube = cubic_rotation_matrices()
    # Invariant subspace of irrep(l) under the cube group: 1-dimensional for l = 4 and l = 6.
    stack = np.concatenate([irrep(so3.element(m, "MAT")) - np.eye(DIM[l]) for m in cube])
    _, s, vt = np.linalg.svd(stack)
    assert s[-1] < 1e-8 and s[-2] > 1e-3, f"cubic invariant of irrep({l}) not 1-dimensional"
    c0 = vt[-1]
    # Deterministic sign, so saved models and targets agree across runs.
    c0 = c0 if c0[np.argmax(np.abs(c0))] > 0 else -c0
    rng = np.random.default_rng(l)
    mats = quat_to_matrix(_random_quats(400, rng))
    targets = np.stack([irrep(so3.element(m, "MAT")) @ c0 for m in mats])
    samples = _samples(l, mats)
    p, *_ = np.linalg.lstsq(samples, targets, rcond=None)
    resid = np.abs(samples @ p - targets).max()
    assert resid < 1e-8, f"l={l} harmonic projection not exact (residual {resid:.2e})"
    return c0, p


def _random_quats(n, rng):
    q = rng.normal(size=(n, 4))
    return quat_normalize(q)


def _samples(l: int, mats):
    """Values of the cubic polynomial rotated by ``mats`` (..., 3, 3) at the fixed sphere points."""
    # f(R^T x) for each sample point x: rotate points into the crystal frame.
    # Fewer points for l = 4 (15-dimensional span) keep per-voxel encoding cheap.
    pts = _POINTS[: _NPOINTS[l]]
    local = pts @ mats  # (..., n, 3): local[n, i] = sum_j mats[j, i] pts[n, j], batched matmul
    return _cubic_poly(l, local)


def escnn_irrep_matrices(l: int, mats):
    """escnn's real Wigner matrices ``so3_group().irrep(l)`` at rotation matrices ``(n, 3, 3)``.

    Slow (one escnn call per matrix); for tests and the small finite groups of the network.

    Parameters
    ----------
    l : int
        Degree.
    mats : ndarray, shape (n, 3, 3)
        Rotation matrices in escnn's frame.

    Returns
    -------
    ndarray, shape (n, 2l+1, 2l+1)
    """
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from escnn.group import so3_group
    so3 = so3_group(max(l, 6))
    return np.stack([so3.irrep(l)(so3.element(np.asarray(m, dtype=np.float64), "MAT")) for m in mats])


def matrix_to_sh(mats, degrees=(4,)):
    """Cubic-harmonic coefficients ``D^l(R) c₀`` (unit norm per degree) of rotations in escnn's frame.

    Parameters
    ----------
    mats : array_like, shape (..., 3, 3)
        Rotation matrices in escnn's frame.
    degrees : tuple of int
        Which harmonics, from (4,), (4, 6).

    Returns
    -------
    ndarray, shape (..., sum(2l+1))
    """
    mats = np.asarray(mats, dtype=np.float64)
    out = []
    for l in degrees:
        _, p = _fit(l)
        c = _samples(l, mats) @ p
        # |D c0| = |c0|: normalize once so both degrees weigh equally in losses and decoding.
        out.append(c / np.linalg.norm(_fit(l)[0]))
    return np.concatenate(out, axis=-1)


def quat_to_sh4(q, degrees=(4,)):
    """Encode micro_sym quaternions (physical frame) as the cubic-harmonic field.

    Parameters
    ----------
    q : array_like, shape (..., 4)
        Unit quaternions ``(w, x, y, z)`` rotating crystal into volume frame (docs/design.md §1).
        NaN quaternions give NaN coefficients.
    degrees : tuple of int
        ``(4,)`` for the 9 l = 4 coefficients, ``(4, 6)`` to append the 13 l = 6 coefficients.

    Returns
    -------
    ndarray, shape (..., 9) or (..., 22)
        Coefficients in escnn's irrep basis and frame, unit norm per degree.

    Examples
    --------
    >>> import numpy as np
    >>> c = quat_to_sh4(np.array([1.0, 0, 0, 0]))
    >>> c.shape, bool(np.isclose(np.linalg.norm(c), 1.0))
    ((9,), True)
    """
    q = np.asarray(q, dtype=np.float64)
    bad = np.isnan(q).any(axis=-1)
    mats = quat_to_matrix(np.where(bad[..., None], [1.0, 0, 0, 0], q))
    c = matrix_to_sh(VOLUME_TO_ESCNN @ mats, degrees)
    return np.where(bad[..., None], np.nan, c)


@functools.lru_cache(maxsize=None)
def _generators(degrees):
    """Lie-algebra generators ``L_k`` (k = x, y, z) of the stacked representation, shape (3, d, d)."""
    blocks = [_constants()[f"L_{l}"] for l in degrees]
    d = sum(b.shape[1] for b in blocks)
    g = np.zeros((3, d, d))
    o = 0
    for b in blocks:
        g[:, o : o + b.shape[1], o : o + b.shape[1]] = b
        o += b.shape[1]
    return g


def _escnn_generators(l: int) -> np.ndarray:
    """``L_k`` of escnn's irrep(l), shape (3, d, d), by central differences of D(exp(±eps e_k))."""
    eps = 1e-4  # exact to O(eps²)
    return np.stack([(_rep_matrix(l, _axis_rot(k, eps)) - _rep_matrix(l, _axis_rot(k, -eps))) / (2 * eps) for k in range(3)])


def _axis_rot(k, angle):
    c, s = np.cos(angle), np.sin(angle)
    i, j = [(1, 2), (2, 0), (0, 1)][k]
    m = np.eye(3)
    m[i, i] = m[j, j] = c
    m[i, j], m[j, i] = -s, s
    return m


@functools.lru_cache(maxsize=None)
def _rep_matrix_cached(l, key):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from escnn.group import so3_group
    so3 = so3_group(max(l, 6))
    return so3.irrep(l)(so3.element(np.array(key).reshape(3, 3), "MAT"))


def _rep_matrix(l, m):
    return _rep_matrix_cached(l, tuple(np.asarray(m, dtype=np.float64).ravel()))


#: Residual per degree above which a voxel's decode is retried from more start orientations.
#: 0.5, not 0.15: on the bundled default-3d's outputs for the 96³ sample volume that retries 8.6% of
#: the voxels instead of 55%, cuts the decode time from 19.0 s to 11.7 s and changes no voxel's
#: orientation by more than 0.5°; an untrained network's rotation agreement is the same at 0.15-0.75
#: (its voxels lie further off the manifold), and falls from 99.5% to 95.8% without retries
#: (``python bench/studies/study_decode_start.py``, ``bench/results/decode_start.json``).
MULTI_START_RESIDUAL = 0.5


@functools.lru_cache(maxsize=4)
def _start_grid(degrees, n: int = 1000):
    """Start orientations for the refinement: ``n`` rotation matrices and their coefficients (float32).

    A fixed-seed uniform sample of SO(3). Every sample is equivalent to one in the cubic fundamental
    zone and the coefficients are cubic-invariant, so the nearest coefficient vector is the nearest
    orientation there: 1000 samples leave gaps of 4.7° (median) to 10.6° (worst of 20,000 random
    orientations, ``python bench/studies/study_decode_start.py``), inside Gauss-Newton's basin. All vectors have the same norm, so "nearest" is the
    largest dot product: one small matrix product per batch of voxels.
    """
    rng = np.random.default_rng(20240611)
    mats = quat_to_matrix(_random_quats(n, rng))
    return mats, np.ascontiguousarray(matrix_to_sh(mats, degrees).T, dtype=np.float32)


def sh_to_matrix(coeffs, degrees=(4,), iterations: int = 6, candidates: int = 5, chunk: int = 8192,
                 retry_residual: float = MULTI_START_RESIDUAL):
    """Decode cubic-harmonic coefficients to rotation matrices in escnn's frame.

    Coarse search (nearest coefficient vector among :func:`_start_grid`'s orientations, i.e. over
    the cubic fundamental zone) followed by Gauss-Newton, then Newton, steps on a small rotation ``exp(ω)``
    applied on the left, which minimize ``|D(exp(ω) R) c₀ - c|²``.

    Parameters
    ----------
    coeffs : array_like, shape (..., d)
        Predicted coefficients (any scale; each degree is normalized first).
    degrees : tuple of int
    iterations : int
        Refinement steps (2 Gauss-Newton, then Newton); 6 reach float64 precision for exact input
        and converge quadratically for noisy network outputs.
    candidates : int
        Start orientations refined per voxel far from the harmonic manifold (residual above
        ``retry_residual`` per degree after the first); the lowest residual wins. 5, not 3:
        with 3 the decoded orientations of an untrained network's outputs rotated with the volume on
        98.9-99.0% of voxels, with 5 on 99.5-99.7% (the rest are near-ties between two minima;
        ``python bench/studies/study_decode_start.py``, in this install: the fractions depend on escnn's basis).
    chunk : int
        Voxels per vectorized batch (bounds memory).
    retry_residual : float
        See ``candidates``; :data:`MULTI_START_RESIDUAL` says why the default.

    Returns
    -------
    mats : ndarray, shape (..., 3, 3)
    residual : ndarray, shape (...)
        Final coefficient-space distance (0 for exact input); a confidence measure.
    """
    coeffs = np.asarray(coeffs, dtype=np.float64)
    shape = coeffs.shape[:-1]
    flat = coeffs.reshape(-1, coeffs.shape[-1])
    out = np.empty((len(flat), 3, 3))
    res = np.empty(len(flat))
    grid_mats, grid_t = _start_grid(tuple(degrees))
    gens = _generators(tuple(degrees))
    from micro_sym.orientation._sh_refine import largest, refine  # numba: imported on first decode, not with the module

    tol = retry_residual * np.sqrt(len(degrees))
    fits = _refine_fits(tuple(degrees))
    for s in range(0, len(flat), chunk):
        c = _normalize_blocks(flat[s : s + chunk], degrees)
        n = len(c)
        similarity = c.astype(np.float32) @ grid_t
        top = largest(similarity, max(1, candidates))
        r, resid = refine(c, grid_mats[top[:, 0]], fits, gens, iterations)
        # Far from the harmonic manifold (poor network outputs) the objective can have several local
        # minima, and the answer must not depend on which basin the nearest grid point falls into:
        # there, refine the next `candidates - 1` nearest grid orientations too and keep the best.
        # Voxels already close to the manifold (residual <= tol) skip this (5x cheaper on good predictions).
        redo = np.nonzero(resid > tol)[0]
        if candidates > 1 and len(redo):
            top = top[redo]
            more = candidates - 1  # top[:, 0] is the start refined above
            cc = np.repeat(c[redo], more, axis=0)
            rr, rres = refine(cc, grid_mats[top[:, 1:].ravel()], fits, gens, iterations)
            rres = rres.reshape(len(redo), more)
            best = np.argmin(rres, axis=1)
            better = rres[np.arange(len(redo)), best] < resid[redo]
            sel = redo[better]
            r[sel] = rr.reshape(len(redo), more, 3, 3)[np.arange(len(redo)), best][better]
            resid[sel] = rres[np.arange(len(redo)), best][better]
        out[s : s + n] = r
        res[s : s + n] = resid
    return out.reshape(shape + (3, 3)), res.reshape(shape)


@functools.lru_cache(maxsize=4)
def _refine_fits(degrees):
    """Per degree: sphere points, fitted projection and |c0| (what :func:`matrix_to_sh` evaluates)."""
    if degrees[0] != 4 or any(l not in DIM for l in degrees):
        raise ValueError(f"degrees must be (4,) or (4, 6), got {degrees}")
    return tuple((_POINTS[: _NPOINTS[l]].copy(), _fit(l)[1], float(np.linalg.norm(_fit(l)[0])))
                 for l in degrees)


def _normalize_blocks(c, degrees):
    out, o = [], 0
    for l in degrees:
        b = c[:, o : o + DIM[l]]
        out.append(b / np.maximum(np.linalg.norm(b, axis=-1, keepdims=True), 1e-12))
        o += DIM[l]
    return np.concatenate(out, axis=-1)


def sh_to_quat(coeffs, degrees=(4,), iterations: int = 6, candidates: int = 5, return_residual: bool = False,
               retry_residual: float = MULTI_START_RESIDUAL):
    """Decode the cubic-harmonic field to micro_sym quaternions (physical frame).

    Parameters
    ----------
    coeffs : array_like, shape (..., 9) or (..., 22)
        Coefficients on the last axis (move a channel-first ``(9, z, y, x)`` map with
        ``np.moveaxis(c, 0, -1)``). Rows with NaN give NaN quaternions.
    degrees : tuple of int
        Degrees stacked in ``coeffs``: ``(4,)`` or ``(4, 6)``.
    iterations : int
        Refinement steps after the coarse search.
    candidates : int
        Coarse-grid orientations refined per voxel (the lowest residual wins).
    return_residual : bool
        Also return the coefficient-space residual (small = confident).
    retry_residual : float
        As in :func:`sh_to_matrix`.

    Returns
    -------
    q : ndarray, shape (..., 4)
        One representative of the cubic-equivalence class, canonical sign ``w >= 0``.

    Examples
    --------
    >>> import numpy as np
    >>> from micro_sym.orientation import misorientation_cubic
    >>> q = np.array([0.9, 0.1, -0.3, 0.2]); q /= np.linalg.norm(q)
    >>> float(misorientation_cubic(q, sh_to_quat(quat_to_sh4(q)))) < 1e-3
    True
    """
    coeffs = np.asarray(coeffs, dtype=np.float64)
    bad = np.isnan(coeffs).any(axis=-1)
    mats, res = sh_to_matrix(np.where(bad[..., None], 1.0, coeffs), degrees, iterations, candidates,
                             retry_residual=retry_residual)
    q = matrix_to_quat(VOLUME_TO_ESCNN.T @ mats)
    q = np.where(bad[..., None], np.nan, q)
    res = np.where(bad, np.nan, res)
    return (q, res) if return_residual else q


def unit_fields(coeffs, degrees=(4,)) -> np.ndarray:
    """Network harmonic outputs ``(C, ...)`` as comparable fields: each degree scaled to unit length,
    then the whole vector to unit length (float32; NaN stays NaN, a zero block stays zero).

    The field of an orientation is ``D(R) c₀`` with ``D`` orthogonal, so the inner product of two
    unit fields depends only on their misorientation, is 1 for cubic-equivalent orientations and
    falls as ``1 - κθ²`` for a small misorientation θ about any axis (the cubic group leaves only the
    isotropic quadratic form): :func:`field_min_dot` turns a threshold in degrees into one on it.
    """
    c = np.asarray(coeffs, np.float32)
    out = np.empty_like(c)
    o = 0
    for l in degrees:
        block = c[o : o + DIM[l]]
        norm = np.sqrt(np.einsum("c...,c...->...", block, block))
        np.divide(block, np.maximum(norm, np.float32(1e-12)) * np.float32(np.sqrt(len(degrees))), out=out[o : o + DIM[l]])
        o += DIM[l]
    return out


@functools.lru_cache(maxsize=None)
def field_min_dot(threshold_deg: float, degrees=(4,)) -> float:
    """Smallest inner product of two :func:`unit_fields` whose orientations are ``threshold_deg``
    apart: the median over 200 rotation axes of ``<h(I), h(R_θ)>`` for exact fields (the axes agree to
    within 0.5 % of ``1 - <h, h'>`` at 5°; ``bench/studies/harmonic_pair_test.py``)."""
    n = 200
    i = np.arange(n) + 0.5
    z = 1 - 2 * i / n
    phi = np.pi * (1 + 5**0.5) * i
    axes = np.stack([np.sqrt(1 - z * z) * np.cos(phi), np.sqrt(1 - z * z) * np.sin(phi), z], 1)
    half = np.deg2rad(threshold_deg) / 2
    rot = np.concatenate([np.full((n, 1), np.cos(half)), np.sin(half) * axes], 1)
    ident = np.tile([1.0, 0.0, 0.0, 0.0], (n, 1))
    a = unit_fields(np.moveaxis(quat_to_sh4(ident, degrees), -1, 0), degrees)
    b = unit_fields(np.moveaxis(quat_to_sh4(rot, degrees), -1, 0), degrees)
    return float(np.median(np.einsum("cn,cn->n", a.astype(np.float64), b.astype(np.float64))))


def field_degrees(channels: int):
    """The degrees stacked in a harmonic field of ``channels`` coefficients: 9 -> (4,), 22 -> (4, 6)."""
    return {DIM[4]: (4,), DIM[4] + DIM[6]: (4, 6)}.get(int(channels))


if __name__ == "__main__":  # rewrite the shipped constants from escnn
    np.savez(CONSTANTS_PATH, **constants_from_escnn())
    print(f"wrote {CONSTANTS_PATH}")

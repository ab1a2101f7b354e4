"""Compiled per-voxel steps of cubic-harmonic decoding (numba), for :mod:`micro_sym.orientation.cubic_harmonics`:
the choice of start orientations (:func:`largest`) and their refinement (:func:`refine`).

The numpy form of the Gauss-Newton/Newton steps works on ``(n, 3, d)`` stacks of tiny matrices:
each step allocates a dozen arrays and runs batched 3×3 solves and eigenvalue problems, which left
decoding ~10x slower than a 3D network's forward pass. Here each voxel runs the same iteration in
registers: the same objective (samples of the rotated cubic polynomial at fixed sphere points,
projected by the fitted map), the same Jacobian from the Lie-algebra generators, the same
Newton/Gauss-Newton switch (the Newton matrix is used when its smallest eigenvalue exceeds
``1e-6 · trace`` of the Gauss-Newton one, tested here by Sylvester's criterion on the shifted
matrix), the same damped 3×3 solve and Rodrigues update. Results agree with the numpy form to
rounding; iterations stop early once the update is below 1e-10 rad (6e-9°, far below any use).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import njit

#: Threads for the decode kernels (nogil): the cores this process may use.
THREADS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@njit(cache=True, nogil=True, inline="always")
def _power(a, half_degree):
    p = a
    for _ in range(half_degree - 1):
        p = p * a
    return p


@njit(cache=True, nogil=True)
def _sh(r, pts, proj, scale, half_degree, offset, out):
    """out[offset: offset + d] = (samples of the polynomial rotated by r) @ proj / scale."""
    d = proj.shape[1]
    for j in range(d):
        out[offset + j] = 0.0
    for n in range(pts.shape[0]):
        x, y, z = pts[n, 0], pts[n, 1], pts[n, 2]
        lx = x * r[0, 0] + y * r[1, 0] + z * r[2, 0]
        ly = x * r[0, 1] + y * r[1, 1] + z * r[2, 1]
        lz = x * r[0, 2] + y * r[1, 2] + z * r[2, 2]
        f = _power(lx * lx, half_degree) + _power(ly * ly, half_degree) + _power(lz * lz, half_degree)
        for j in range(d):
            out[offset + j] += f * proj[n, j]
    for j in range(d):
        out[offset + j] /= scale


@njit(cache=True, nogil=True)
def _coefficients(r, pts4, proj4, scale4, pts6, proj6, scale6, out):
    _sh(r, pts4, proj4, scale4, 2, 0, out)
    if proj6.shape[1]:
        _sh(r, pts6, proj6, scale6, 3, proj4.shape[1], out)


@njit(cache=True, nogil=True)
def _solve3(a, b, x):
    """x = a⁻¹ b for a 3×3 system, LU with partial pivoting (a and b are overwritten)."""
    for col in range(3):
        piv = col
        for row in range(col + 1, 3):
            if abs(a[row, col]) > abs(a[piv, col]):
                piv = row
        if piv != col:
            for k in range(3):
                a[col, k], a[piv, k] = a[piv, k], a[col, k]
            b[col], b[piv] = b[piv], b[col]
        for row in range(col + 1, 3):
            f = a[row, col] / a[col, col]
            for k in range(col, 3):
                a[row, k] -= f * a[col, k]
            b[row] -= f * b[col]
    for row in range(2, -1, -1):
        s = b[row]
        for k in range(row + 1, 3):
            s -= a[row, k] * x[k]
        x[row] = s / a[row, row]


@njit(cache=True, nogil=True)
def _positive_definite_above(m, eps):
    """Smallest eigenvalue of the symmetric 3×3 ``m`` > ``eps`` (Sylvester on ``m - eps I``)."""
    a00, a11, a22 = m[0, 0] - eps, m[1, 1] - eps, m[2, 2] - eps
    a01, a02, a12 = m[0, 1], m[0, 2], m[1, 2]
    if a00 <= 0:
        return False
    if a00 * a11 - a01 * a01 <= 0:
        return False
    det = a00 * (a11 * a22 - a12 * a12) - a01 * (a01 * a22 - a12 * a02) + a02 * (a01 * a12 - a11 * a02)
    return det > 0


@njit(cache=True, nogil=True, inline="always")
def _apply_generators(gens, v, out):
    """out[k] = gens[k] v for the three generators (pass their transposes for L_kᵀ v)."""
    d = v.shape[0]
    for k in range(3):
        for i in range(d):
            s = 0.0
            for j in range(d):
                s += gens[k, i, j] * v[j]
            out[k, i] = s


@njit(cache=True, nogil=True)
def _rotate_left(r, omega, e, tmp):
    """r <- exp(ω) r (Rodrigues: exp(ω) = I + a K + b K², K the cross-product matrix of ω); returns |ω|.

    A non-finite ω leaves ``r`` unchanged.
    """
    theta = np.sqrt(omega[0] * omega[0] + omega[1] * omega[1] + omega[2] * omega[2])
    if not np.isfinite(theta):
        return theta
    if theta > 1e-8:
        a, b = np.sin(theta) / theta, (1 - np.cos(theta)) / (theta * theta)
    else:
        a, b = 1.0, 0.5
    w0, w1, w2 = omega[0], omega[1], omega[2]
    kk = ((0.0, -w2, w1), (w2, 0.0, -w0), (-w1, w0, 0.0))
    for i in range(3):
        for j in range(3):
            k2 = kk[i][0] * kk[0][j] + kk[i][1] * kk[1][j] + kk[i][2] * kk[2][j]
            e[i, j] = (1.0 if i == j else 0.0) + a * kk[i][j] + b * k2
    for i in range(3):
        for j in range(3):
            tmp[i, j] = e[i, 0] * r[0, j] + e[i, 1] * r[1, j] + e[i, 2] * r[2, j]
    for i in range(3):
        for j in range(3):
            r[i, j] = tmp[i, j]
    return theta


@njit(cache=True, nogil=True, error_model="numpy")
def _refine_rows(c, r_all, pts4, proj4, scale4, pts6, proj6, scale6, gens, gens_t, iterations, residual):
    """Refine every row in place (one thread's share: scratch arrays allocated once)."""
    d = c.shape[1]
    cur = np.empty(d)
    rhs = np.empty(d)
    jac = np.empty((3, d))
    gtr = np.empty((3, d))
    hess = np.empty((3, 3))
    newton = np.empty((3, 3))
    jtr = np.empty(3)
    omega = np.empty(3)
    e = np.empty((3, 3))
    tmp = np.empty((3, 3))
    for v in range(c.shape[0]):
        r = r_all[v]
        for it in range(iterations):
            _coefficients(r, pts4, proj4, scale4, pts6, proj6, scale6, cur)
            for i in range(d):
                rhs[i] = c[v, i] - cur[i]
            _apply_generators(gens, cur, jac)  # jac[k] = L_k ĉ: the Jacobian's columns
            for k in range(3):
                s = 0.0
                for i in range(d):
                    s += jac[k, i] * rhs[i]
                jtr[k] = s
                for m in range(3):
                    s = 0.0
                    for i in range(d):
                        s += jac[k, i] * jac[m, i]
                    hess[k, m] = s
            if it >= 2:
                # Newton: add the second-order term -rhs·(½(L_k L_m + L_m L_k) ĉ)
                # = -½ ((L_kᵀ rhs)·(L_m ĉ) + (L_mᵀ rhs)·(L_k ĉ)), with L_m ĉ = jac[m].
                _apply_generators(gens_t, rhs, gtr)
                for k in range(3):
                    for m in range(3):
                        s = 0.0
                        for j in range(d):
                            s += gtr[k, j] * jac[m, j] + gtr[m, j] * jac[k, j]
                        newton[k, m] = hess[k, m] - 0.5 * s
                if _positive_definite_above(newton, 1e-6 * (hess[0, 0] + hess[1, 1] + hess[2, 2])):
                    for k in range(3):
                        for m in range(3):
                            hess[k, m] = newton[k, m]
            for k in range(3):
                hess[k, k] += 1e-12
            _solve3(hess, jtr, omega)
            theta = _rotate_left(r, omega, e, tmp)
            if not np.isfinite(theta) or theta < 1e-10:
                break
        _coefficients(r, pts4, proj4, scale4, pts6, proj6, scale6, cur)
        s = 0.0
        for i in range(d):
            s += (cur[i] - c[v, i]) ** 2
        residual[v] = np.sqrt(s)


@njit(cache=True, nogil=True)
def _largest_rows(similarity, k, out):
    m = similarity.shape[1]
    for v in range(similarity.shape[0]):
        best = np.full(k, -np.inf)
        idx = np.zeros(k, np.int64)
        for j in range(m):
            x = similarity[v, j]
            if x > best[k - 1]:
                i = k - 1
                while i > 0 and best[i - 1] < x:
                    best[i], idx[i] = best[i - 1], idx[i - 1]
                    i -= 1
                best[i], idx[i] = x, j
        out[v] = idx


def _in_threads(kernel, *arrays, rows_per_share: int = 2048):
    """Run a nogil ``kernel(*arrays)`` on the same row slices of every array, in threads (outputs are
    arrays written in place). Plain threads rather than numba's ``parallel=True``: its default threading layer may
    not be entered from several threads at once, and the block engine calls this from its workers."""
    n = len(arrays[0])
    shares = [slice(s, min(n, s + rows_per_share)) for s in range(0, n, rows_per_share)]
    if len(shares) < 2 or THREADS < 2:
        kernel(*arrays)
        return
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(lambda rows: kernel(*[a[rows] for a in arrays]), shares))


def largest(similarity, k: int) -> np.ndarray:
    """Column indices of each row's ``k`` largest values, largest first: ``(n, k)`` int64.

    One compiled pass per row (insertion into a k-list), rows shared among threads.
    """
    out = np.empty((len(similarity), k), np.int64)
    _in_threads(lambda sim, o: _largest_rows(sim, k, o), similarity, out)
    return out


def refine(c, r0, fits, gens, iterations: int):
    """Refine start rotations ``r0`` (n, 3, 3) towards coefficients ``c`` (n, d); returns (r, residual).

    ``fits``: per degree ``(points, projection, scale)`` of the sampled-polynomial map, l = 4 first.
    """
    r = np.array(r0, dtype=np.float64, order="C", copy=True)
    residual = np.empty(len(c))
    (pts4, proj4, s4), rest = fits[0], fits[1:]
    pts6, proj6, s6 = rest[0] if rest else (np.zeros((0, 3)), np.zeros((0, 0)), 1.0)
    gens_t = np.ascontiguousarray(np.swapaxes(gens, 1, 2))
    gens = np.ascontiguousarray(gens)
    _in_threads(lambda cc, rr, res: _refine_rows(cc, rr, pts4, proj4, float(s4), pts6, proj6, float(s6), gens, gens_t,
                                                 int(iterations), res),
                np.ascontiguousarray(c, np.float64), r, residual)
    return r, residual

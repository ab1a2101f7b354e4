"""Compiled inner loops of grain labelling (numba).

Union-find components, one-pass per-label moments, per-label sums of symmetry-aligned quaternions,
the cubic and 2D angle pair tests, and the per-block steps of the seeded rule (seed core, flood,
contacts, neighbour pairs). They replace a sparse-graph ``connected_components`` call, a dozen
weighted ``bincount`` passes and a dozen volume-sized temporaries, which dominated block-wise
labelling (seconds per 128³ block, as long as the network's forward per 1024² block). All are exact:
components are numbered as ``connected_components`` numbers them (by their smallest point), and the
pair tests and sums do the numpy forms' float operations in the same order and precision
(bit-identical, tested), so the grains are the same whichever code path labels them.

Kernels work on 3D arrays; the wrappers view 2D input with a leading axis of length 1. ``nogil`` lets the engine's
worker threads label blocks while another thread runs the network.
"""

from __future__ import annotations

import itertools

import numpy as np
from numba import njit


def _as_3d(a, channel: bool = False):
    """View of a 2D or 3D array (after a leading channel axis if ``channel``) as 3D: 2D gets a leading axis of 1."""
    spatial = a.shape[1:] if channel else a.shape
    lead = (1,) * (3 - len(spatial))
    return a.reshape(a.shape[:1] + lead + spatial) if channel else a.reshape(lead + spatial)


@njit(cache=True, nogil=True)
def _root(parent, i):
    while parent[i] != i:
        parent[i] = parent[parent[i]]  # path halving
        i = parent[i]
    return i


@njit(cache=True, nogil=True)
def _union_offset(parent, ok, start, s0, s1, d):
    """Join points ``p`` and ``p + d`` (flat indices) wherever ``ok`` (the ``lo`` region) is True.

    ``start`` is the flat index of ``ok[0, 0, 0]``, ``s0``/``s1`` the flat strides of the full
    array's first two axes. Roots are always the smallest point of their set (the larger root is
    attached to the smaller), which is what numbers components by their first point.
    """
    nz, ny, nx = ok.shape
    for z in range(nz):
        for y in range(ny):
            base = start + z * s0 + y * s1
            for x in range(nx):
                if ok[z, y, x]:
                    a = _root(parent, base + x)
                    b = _root(parent, base + x + d)
                    if a < b:
                        parent[b] = a
                    elif b < a:
                        parent[a] = b


@njit(cache=True, nogil=True)
def _number_components(parent, valid_flat, out):
    """Labels 1..n in raster order of each component's first (= root) point; 0 where not valid."""
    n = 0
    for p in range(valid_flat.size):
        if not valid_flat[p]:
            out[p] = 0
            continue
        r = _root(parent, p)
        if r == p:
            n += 1
            out[p] = n
        else:
            out[p] = out[r]  # r < p: already numbered
    return n


def label_components(valid, pair_masks, dtype=np.int32):
    """Connected components of the graph of neighbour pairs.

    Parameters
    ----------
    valid : ndarray of bool, 2D or 3D
        Points that may belong to a component; the others get label 0.
    pair_masks : list of (offset, ok, lo)
        For each neighbour offset, the mask of connected pairs between the points of the ``lo``
        slice (``ok``, shaped like ``valid[lo]``) and the points ``offset`` further on.
    dtype : numpy dtype
        Label dtype (int64 for more than 2**31 points).

    Returns
    -------
    labels : ndarray of ``dtype``, shape of ``valid``
    n : int
    """
    shape = valid.shape
    shape3 = (1,) * (3 - len(shape)) + shape
    strides = np.array([shape3[1] * shape3[2], shape3[2], 1], np.int64)
    parent = np.arange(valid.size, dtype=dtype)
    for off, ok, lo in pair_masks:
        off3 = (0,) * (3 - len(off)) + tuple(off)
        start3 = (0,) * (3 - len(lo)) + tuple(s.start or 0 for s in lo)
        start = int(np.dot(start3, strides))
        _union_offset(parent, _as_3d(ok), start, int(strides[0]), int(strides[1]), int(np.dot(off3, strides)))
    out = np.empty(valid.size, dtype)
    n = _number_components(parent, np.ascontiguousarray(valid).ravel(), out)
    return out.reshape(shape), int(n)


@njit(cache=True, nogil=True)
def _moments(labels, n, origin, count, first, m1, m2):
    nz, ny, nx = labels.shape
    for z in range(nz):
        gz = z + origin[0]
        for y in range(ny):
            gy = y + origin[1]
            for x in range(nx):
                lab = labels[z, y, x]
                if lab == 0:
                    continue
                i = lab - 1
                gx = x + origin[2]
                if count[i] == 0:
                    first[i] = (z * ny + y) * nx + x
                count[i] += 1
                m1[i, 0] += gz
                m1[i, 1] += gy
                m1[i, 2] += gx
                m2[i, 0] += gz * gz
                m2[i, 1] += gz * gy
                m2[i, 2] += gz * gx
                m2[i, 3] += gy * gy
                m2[i, 4] += gy * gx
                m2[i, 5] += gx * gx


@njit(cache=True, nogil=True, inline="always")
def _square_sum(n):
    """0² + 1² + ... + n² (and, for negative n, what makes differences of it sums of squares)."""
    return n * (n + 1) * (2 * n + 1) // 6


@njit(cache=True, nogil=True)
def _moments_runs(labels, origin, count, first, m1, m2):
    """:func:`_moments` in integers, a run of one label along x at a time (closed-form sums over the run)."""
    nz, ny, nx = labels.shape
    for z in range(nz):
        gz = z + origin[0]
        for y in range(ny):
            gy = y + origin[1]
            x = 0
            while x < nx:
                lab = labels[z, y, x]
                if lab == 0:
                    x += 1
                    continue
                x0 = x
                while x < nx and labels[z, y, x] == lab:
                    x += 1
                i = lab - 1
                run = x - x0
                a, b = x0 + origin[2], x - 1 + origin[2]
                sx = (a + b) * run // 2
                if count[i] == 0:
                    first[i] = (z * ny + y) * nx + x0
                count[i] += run
                m1[i, 0] += gz * run
                m1[i, 1] += gy * run
                m1[i, 2] += sx
                m2[i, 0] += gz * gz * run
                m2[i, 1] += gz * gy * run
                m2[i, 2] += gz * sx
                m2[i, 3] += gy * gy * run
                m2[i, 4] += gy * sx
                m2[i, 5] += _square_sum(b) - _square_sum(a - 1)


def label_moments(labels, n: int, origin):
    """Per-label point count, first point and coordinate sums of one block, in one pass.

    Parameters
    ----------
    labels : ndarray of int, 2D or 3D
        Labels ``1..n`` (0 = none).
    n : int
    origin : tuple of int
        Global coordinates of ``labels[0, ...]``.

    Returns
    -------
    count : (n,) int64
    first : (n,) int64
        Flat (raster) index *inside the block* of each label's first point.
    m1 : (n, nd) float64
        Sums of global coordinates.
    m2 : (n, nd, nd) float64
        Sums of products of global coordinates (symmetric).
    """
    nd = labels.ndim
    lab3 = _as_3d(np.ascontiguousarray(labels))
    origin3 = np.array((0,) * (3 - nd) + tuple(origin), np.float64)
    count = np.zeros(n, np.int64)
    first = np.zeros(n, np.int64)
    corners = [abs(o) for o in origin3] + [abs(o + k - 1) for o, k in zip(origin3, lab3.shape)]
    if lab3.size * max(corners) ** 2 < 2.0**53:
        # Every partial sum is an integer below 2**53, which float64 holds exactly: the sums in
        # int64, in any order, are the float64 sums point by point.
        m1i = np.zeros((n, 3), np.int64)
        m2i = np.zeros((n, 6), np.int64)
        _moments_runs(lab3, origin3.astype(np.int64), count, first, m1i, m2i)
        m1, m2u = m1i.astype(np.float64), m2i.astype(np.float64)
    else:
        m1 = np.zeros((n, 3))
        m2u = np.zeros((n, 6))
        _moments(lab3, n, origin3, count, first, m1, m2u)
    full = m2u[:, [0, 1, 2, 1, 3, 4, 2, 4, 5]].reshape(n, 3, 3)
    keep = slice(3 - nd, 3)
    return count, first, m1[:, keep], full[:, keep, keep]


@njit(cache=True, nogil=True)
def _aligned_sums(labels, q, ref, sym, near, out):
    nz, ny, nx = labels.shape
    n_sym = sym.shape[0]
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                lab = labels[z, y, x]
                if lab == 0:
                    continue
                i = lab - 1
                q0, q1, q2, q3 = (np.float64(q[0, z, y, x]), np.float64(q[1, z, y, x]),
                                  np.float64(q[2, z, y, x]), np.float64(q[3, z, y, x]))
                if not (np.isfinite(q0) and np.isfinite(q1) and np.isfinite(q2) and np.isfinite(q3)):
                    continue
                r0, r1, r2, r3 = ref[i, 0], ref[i, 1], ref[i, 2], ref[i, 3]
                d0 = q0 * r0 + q1 * r1 + q2 * r2 + q3 * r3
                if abs(d0) > near:
                    sign = 1.0 if d0 >= 0 else -1.0
                    out[i, 0] += sign * q0
                    out[i, 1] += sign * q1
                    out[i, 2] += sign * q2
                    out[i, 3] += sign * q3
                    continue
                # c = q* ⊗ ref; <ref, q ⊗ s> = <c, s>: score every equivalent with one product.
                c0 = q0 * r0 + q1 * r1 + q2 * r2 + q3 * r3
                c1 = q0 * r1 - q1 * r0 - q2 * r3 + q3 * r2
                c2 = q0 * r2 + q1 * r3 - q2 * r0 - q3 * r1
                c3 = q0 * r3 - q1 * r2 + q2 * r1 - q3 * r0
                best, best_abs, best_dot = 0, -1.0, 0.0
                for k in range(n_sym):
                    dot = c0 * sym[k, 0] + c1 * sym[k, 1] + c2 * sym[k, 2] + c3 * sym[k, 3]
                    if abs(dot) > best_abs:
                        best, best_abs, best_dot = k, abs(dot), dot
                s0, s1, s2, s3 = sym[best, 0], sym[best, 1], sym[best, 2], sym[best, 3]
                sign = 1.0 if best_dot >= 0 else -1.0
                out[i, 0] += sign * (q0 * s0 - q1 * s1 - q2 * s2 - q3 * s3)
                out[i, 1] += sign * (q0 * s1 + q1 * s0 + q2 * s3 - q3 * s2)
                out[i, 2] += sign * (q0 * s2 - q1 * s3 + q2 * s0 + q3 * s1)
                out[i, 3] += sign * (q0 * s3 + q1 * s2 - q2 * s1 + q3 * s0)


def aligned_quaternion_sums(labels, q, ref, sym, near_cos: float):
    """Per-label sums of quaternions, each first replaced by its symmetry equivalent nearest the label's reference.

    The kernel form of summing :func:`micro_sym.orientation.reduce_to_reference` (same fast path
    within ``near_cos``, same choice of the first of equal maxima, same sign rule); non-finite
    quaternions are skipped.

    Parameters
    ----------
    labels : ndarray of int, 3D (or 2D)
    q : ndarray, ``(4, *labels.shape)``
    ref : (n, 4) float64
        Reference quaternion of each label.
    sym : (n_sym, 4) float64
        Proper rotations of the point group.
    near_cos : float
        ``|q · ref|`` above which ``q`` itself is the nearest equivalent.
    """
    out = np.zeros((len(ref), 4))
    _aligned_sums(_as_3d(np.ascontiguousarray(labels)), _as_3d(np.asarray(q), channel=True), np.ascontiguousarray(ref, np.float64), np.ascontiguousarray(sym, np.float64),
                  float(near_cos), out)
    return out


@njit(cache=True, nogil=True)
def _max2(a, b):
    # np.maximum's rule: NaN wins (a pair with an undefined orientation never connects).
    if a != a:
        return a
    if b != b:
        return b
    return a if a >= b else b


@njit(cache=True, nogil=True, inline="always")
def _cubic_scalar(a0, a1, a2, a3, b0, b1, b2, b3, inv_sqrt2, half):
    w = abs(a0 * b0 + a1 * b1 + a2 * b2 + a3 * b3)
    x = abs(a0 * b1 - a1 * b0 - a2 * b3 + a3 * b2)
    y = abs(a0 * b2 - a2 * b0 - a3 * b1 + a1 * b3)
    z = abs(a0 * b3 - a3 * b0 - a1 * b2 + a2 * b1)
    m1 = _max2(_max2(w, x), _max2(y, z))
    total = w + x + y + z
    top2 = _max2(_max2(w + x, w + y), _max2(w + z, x + y))
    top2 = _max2(top2, _max2(x + z, y + z))
    return _max2(_max2(m1, top2 * inv_sqrt2), total * half)


@njit(cache=True, nogil=True)
def _cubic_max_scalar(a, b, inv_sqrt2, half, out):
    nz, ny, nx = out.shape
    for i in range(nz):
        for j in range(ny):
            for k in range(nx):
                out[i, j, k] = _cubic_scalar(a[0, i, j, k], a[1, i, j, k], a[2, i, j, k], a[3, i, j, k],
                                             b[0, i, j, k], b[1, i, j, k], b[2, i, j, k], b[3, i, j, k], inv_sqrt2, half)


@njit(cache=True, nogil=True)
def _cubic_max_scalar_shifted(q, lo, hi, inv_sqrt2, half, out):
    # q is C-contiguous: unit-stride rows let LLVM vectorize the inner loop (views cannot).
    nz, ny, nx = out.shape
    for i in range(nz):
        za, zb = lo[0] + i, hi[0] + i
        for j in range(ny):
            ya, yb = lo[1] + j, hi[1] + j
            xa, xb = lo[2], hi[2]
            for k in range(nx):
                out[i, j, k] = _cubic_scalar(q[0, za, ya, xa + k], q[1, za, ya, xa + k], q[2, za, ya, xa + k],
                                             q[3, za, ya, xa + k], q[0, zb, yb, xb + k], q[1, zb, yb, xb + k],
                                             q[2, zb, yb, xb + k], q[3, zb, yb, xb + k], inv_sqrt2, half)


def cubic_max_scalar(a, b):
    """max over the 24 rotations s of 432 of |scalar part of (a* ⊗ b ⊗ s)|, per pair (Grimmer 1974).

    ``a``, ``b``: quaternions ``(4, ...)`` of equal shape (views are fine), float32 or float64; the
    result has their spatial shape and dtype. Same arithmetic, in the same order and precision, as
    the numpy form this replaces (`tests/grains/test_grain_kernels.py` checks bit equality), in one pass
    instead of a dozen temporaries.
    """
    dtype = np.result_type(a.dtype, b.dtype)
    out = np.empty(a.shape[1:], dtype)
    _cubic_max_scalar(_as_3d(a.astype(dtype, copy=False), channel=True), _as_3d(b.astype(dtype, copy=False), channel=True),
                      dtype.type(1 / np.sqrt(2.0)), dtype.type(0.5), _as_3d(out))
    return out


def cubic_max_scalar_shifted(q, lo, hi):
    """:func:`cubic_max_scalar` of the pairs ``(q[:, lo], q[:, hi])`` of one array, 5x faster.

    ``q``: quaternions ``(4, *spatial)``; ``lo``, ``hi``: tuples of slices of equal extent (a
    neighbour offset, :func:`micro_sym.grains.reconstruct._shift_slices`). Same values.
    """
    start_lo, start_hi, out = _shifted_pairs(q, lo, hi)
    _cubic_max_scalar_shifted(_as_3d(np.ascontiguousarray(q), channel=True), start_lo, start_hi,
                              q.dtype.type(1 / np.sqrt(2.0)), q.dtype.type(0.5), _as_3d(out))
    return out


def _shifted_pairs(a, lo, hi):
    """For the kernels over pairs ``(a[:, lo], a[:, hi])`` of a channel-first array: the 3D start of
    each slice tuple and the output array (the pairs' spatial shape, ``a``'s dtype)."""
    spatial = a.shape[1:]
    pad = (0,) * (3 - len(spatial))
    start_lo = np.array(pad + tuple(s.start or 0 for s in lo), np.int64)
    start_hi = np.array(pad + tuple(s.start or 0 for s in hi), np.int64)
    return start_lo, start_hi, np.empty(tuple(len(range(*s.indices(n))) for s, n in zip(lo, spatial)), a.dtype)


@njit(cache=True, nogil=True)
def _field_dots_shifted(f, lo, hi, out):
    nz, ny, nx = out.shape
    for i in range(nz):
        za, zb = lo[0] + i, hi[0] + i
        for j in range(ny):
            ya, yb = lo[1] + j, hi[1] + j
            xa, xb = lo[2], hi[2]
            for k in range(nx):
                s = f.dtype.type(0)
                for c in range(f.shape[0]):
                    s += f[c, za, ya, xa + k] * f[c, zb, yb, xb + k]
                out[i, j, k] = s


def field_dots_shifted(f, lo, hi):
    """Inner products of the pairs ``(f[:, lo], f[:, hi])`` of one channel-first field, in its precision.

    ``lo``, ``hi``: tuples of slices of equal extent (as :func:`cubic_max_scalar_shifted`). NaN stays NaN.
    """
    start_lo, start_hi, out = _shifted_pairs(f, lo, hi)
    _field_dots_shifted(_as_3d(np.ascontiguousarray(f), channel=True), start_lo, start_hi, _as_3d(out))
    return out


@njit(cache=True, nogil=True, inline="always")
def _flood_step(labels, level, q, v_p, s, best, best_sim, best_label):
    """The flood's choice between the best so far and the labelled neighbour at flat index ``q``,
    reached with similarity ``s`` (``v_p``: the boundary probability of the point itself)."""
    lab = labels[q]
    if lab == 0:
        return best, best_sim, best_label
    v = max(level[q], v_p)
    if v < best or (v == best and (s > best_sim or (s == best_sim and lab < best_label))):
        return v, s, lab
    return best, best_sim, best_label


@njit(cache=True, nogil=True, inline="always")
def _any_neighbour(flags, p, z, y, x, nz, ny, nx, sy, sz):
    """Whether ``flags`` (flat) is set at a face neighbour of point ``p`` = ``(z, y, x)``."""
    return ((z > 0 and flags[p - sz]) or (z < nz - 1 and flags[p + sz]) or (y > 0 and flags[p - sy])
            or (y < ny - 1 and flags[p + sy]) or (x > 0 and flags[p - 1]) or (x < nx - 1 and flags[p + 1]))


@njit(cache=True, nogil=True)
def _coordinates(mask3):
    """``(z, y, x)`` int32 coordinates of the true points of a 3D boolean array, in C order."""
    nz, ny, nx = mask3.shape
    count = 0
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                if mask3[z, y, x]:
                    count += 1
    pz = np.empty(count, np.int32)
    py = np.empty(count, np.int32)
    px = np.empty(count, np.int32)
    i = 0
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                if mask3[z, y, x]:
                    pz[i], py[i], px[i] = z, y, x
                    i += 1
    return pz, py, px


@njit(cache=True, nogil=True)
def _flood(labels3, level3, prob, free, sim0, sim1, sim2, steps):
    """Bounded minimax flood (see :func:`micro_sym.grains.seeded.flood`): ``steps`` Jacobi rounds, in place.

    Each round recomputes the free points from their face neighbours of the previous round, so after
    round t a point holds the best path of at most t steps: lowest bottleneck, then the most similar
    last step, then the smaller label. Only free points change: a round visits them alone (a list made
    once) and holds their new values until all are computed. A point none of whose neighbours changed
    in the round before (in the first: none labelled) would get its own value again and is skipped.
    """
    nz, ny, nx = labels3.shape
    labels = labels3.reshape(labels3.size)  # flat views: a neighbour is one offset away
    level = level3.reshape(level3.size)
    pz, py, px = _coordinates(free)
    count = len(pz)
    new_labels = np.empty(count, labels.dtype)
    new_level = np.empty(count, level.dtype)
    sy, sz = nx, ny * nx
    changed_before = labels != 0  # what changed in the round before (before the first: the labelled points)
    changed_now = np.zeros(labels.size, np.bool_)
    for _ in range(steps):
        changed = False
        for i in range(count):
            z, y, x = pz[i], py[i], px[i]
            p = z * sz + y * sy + x
            if not _any_neighbour(changed_before, p, z, y, x, nz, ny, nx, sy, sz):
                new_labels[i], new_level[i] = labels[p], level[p]
                continue
            v_p = prob[z, y, x]
            best, best_sim, best_label = np.inf, -np.inf, labels[p] * 0
            # Neighbours in the order -z, +z, -y, +y, -x, +x: a tie keeps the first.
            if z > 0:
                best, best_sim, best_label = _flood_step(labels, level, p - sz, v_p, sim0[z - 1, y, x], best, best_sim,
                                                         best_label)
            if z < nz - 1:
                best, best_sim, best_label = _flood_step(labels, level, p + sz, v_p, sim0[z, y, x], best, best_sim,
                                                         best_label)
            if y > 0:
                best, best_sim, best_label = _flood_step(labels, level, p - sy, v_p, sim1[z, y - 1, x], best, best_sim,
                                                         best_label)
            if y < ny - 1:
                best, best_sim, best_label = _flood_step(labels, level, p + sy, v_p, sim1[z, y, x], best, best_sim,
                                                         best_label)
            if x > 0:
                best, best_sim, best_label = _flood_step(labels, level, p - 1, v_p, sim2[z, y, x - 1], best, best_sim,
                                                         best_label)
            if x < nx - 1:
                best, best_sim, best_label = _flood_step(labels, level, p + 1, v_p, sim2[z, y, x], best, best_sim,
                                                         best_label)
            if best_label != labels[p] or best != level[p]:
                new_labels[i], new_level[i] = best_label, best
                changed_now[p] = True
                changed = True
            else:
                new_labels[i], new_level[i] = labels[p], level[p]
        if not changed:
            break
        for i in range(count):
            p = pz[i] * sz + py[i] * sy + px[i]
            labels[p] = new_labels[i]
            level[p] = new_level[i]
        changed_before, changed_now = changed_now, changed_before
        changed_now[:] = False


def _or_shifted(out, src, shift):
    """``out |= src`` moved by ``shift`` points per leading axis (points moved in from outside: False)."""
    dst, sl = [], []
    for d, n in zip(shift, src.shape):
        if abs(d) >= n:
            return
        dst.append(slice(max(d, 0), n + min(d, 0)))
        sl.append(slice(max(-d, 0), n - max(d, 0)))
    out[tuple(dst)] |= src[tuple(sl)]


def within_radius(mask, radius: float) -> np.ndarray:
    """Points (2D or 3D) with a ``mask`` point within Euclidean ``radius`` (a binary dilation by a ball).

    The ball is a stack of segments along the last axis: for each offset along the leading axes, the
    widest half-width ``w`` with ``w² + offset² <= radius²``. So the dilation is the mask dilated along
    the last axis by each width once, then moved to every leading offset and or-ed: whole-array boolean
    operations, a few per row of the ball, whatever its volume.
    """
    mask = np.ascontiguousarray(mask, dtype=bool)
    r2 = float(radius) * float(radius)
    reach = int(np.floor(radius))
    last = mask.ndim - 1
    widths = [mask]  # the mask dilated along the last axis by 0, 1, ..., reach
    for w in range(1, reach + 1):
        wide = widths[-1].copy()
        for d in (w, -w):
            _or_shifted(wide, mask, (0,) * last + (d,))
        widths.append(wide)
    out = np.zeros_like(mask)
    for lead in itertools.product(range(-reach, reach + 1), repeat=last):
        s = sum(d * d for d in lead)
        if s > r2:
            continue
        w = 0
        while w < reach and (w + 1) ** 2 + s <= r2:
            w += 1
        _or_shifted(out, widths[w], lead)
    return out


@njit(cache=True, nogil=True)
def _near_pair_keys(labels, reach, base):
    """Codes ``min * base + max`` of differing labels > 0 at most ``reach`` points apart along an axis
    of the 3D array ``labels``, each code once (a set: pairs repeat along every boundary)."""
    nz, ny, nx = labels.shape
    seen = {np.int64(0): True}  # typed dict used as a set (key 0 is no pair: labels are > 0)
    last = np.int64(0)
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                a = np.int64(labels[z, y, x])
                if a == 0:
                    continue
                for axis in range(3):
                    for d in range(1, reach + 1):
                        if axis == 0:
                            if z + d >= nz:
                                break
                            b = np.int64(labels[z + d, y, x])
                        elif axis == 1:
                            if y + d >= ny:
                                break
                            b = np.int64(labels[z, y + d, x])
                        else:
                            if x + d >= nx:
                                break
                            b = np.int64(labels[z, y, x + d])
                        if b == a:
                            # Labels further on are within reach of this point, which has label a:
                            # their pairs with a are found from there.
                            break
                        if b != 0:
                            key = min(a, b) * base + max(a, b)
                            if key != last:  # runs of one pair along a boundary: skip the set lookup
                                seen[key] = True
                                last = key
    keys = np.empty(len(seen) - 1, np.int64)
    i = 0
    for key in seen:
        if key != 0:
            keys[i] = key
            i += 1
    return keys


def near_pair_keys(labels, reach: int) -> tuple[np.ndarray, int]:
    """Sorted unique pair codes of :func:`_near_pair_keys` for a 2D or 3D label array, and the code base."""
    labels = np.ascontiguousarray(labels)
    base = int(labels.max()) + 1 if labels.size else 1
    if labels.size == 0:
        return np.zeros(0, np.int64), base
    return np.sort(_near_pair_keys(_as_3d(labels), int(reach), np.int64(base))), base


@njit(cache=True, nogil=True, inline="always")
def _smaller_label(best, v):
    """The smaller of two labels, where 0 means none."""
    return v if v > 0 and (best == 0 or v < best) else best


@njit(cache=True, nogil=True)
def _grow_into_gaps(lab3, steps):
    """In place: ``steps`` rounds in which every 0 point takes the smallest label > 0 among its face
    neighbours of the previous round (the rule of :func:`micro_sym.grains.stats.grow_into_gaps`).

    A round visits only the points still 0 (a list made once, shortened after every round) and holds
    their new labels until all are computed.
    """
    nz, ny, nx = lab3.shape
    lab = lab3.reshape(lab3.size)  # flat view: a neighbour is one offset away
    sy, sz = nx, ny * nx
    tz, ty, tx = _coordinates(lab3 == 0)
    n = len(tz)
    new = np.empty(n, lab.dtype)
    for _ in range(steps):
        for i in range(n):
            z, y, x = tz[i], ty[i], tx[i]
            p = z * sz + y * sy + x
            best = lab[p]  # 0
            if z > 0:
                best = _smaller_label(best, lab[p - sz])
            if z < nz - 1:
                best = _smaller_label(best, lab[p + sz])
            if y > 0:
                best = _smaller_label(best, lab[p - sy])
            if y < ny - 1:
                best = _smaller_label(best, lab[p + sy])
            if x > 0:
                best = _smaller_label(best, lab[p - 1])
            if x < nx - 1:
                best = _smaller_label(best, lab[p + 1])
            new[i] = best
        m = 0
        for i in range(n):
            if new[i] != 0:
                lab[tz[i] * sz + ty[i] * sy + tx[i]] = new[i]
            else:  # still 0: listed for the next round
                tz[m], ty[m], tx[m] = tz[i], ty[i], tx[i]
                m += 1
        if m == n:
            break
        n = m


def grow_into_gaps(labels, steps: int):
    """The labels (int64) after :func:`micro_sym.grains.stats.grow_into_gaps`' rule, one pass per step
    (no array-sized temporaries)."""
    lab = np.array(labels, np.int64)
    _grow_into_gaps(_as_3d(lab), int(steps))
    return lab


@njit(cache=True, nogil=True)
def _angle_similarity(a, b, period, need, out):
    half = period / 2
    big = np.float32(3.4028234663852886e38)  # float32 max: what np.nan_to_num puts for infinities
    nz, ny, nx = out.shape
    for i in range(nz):
        for j in range(ny):
            for k in range(nx):
                if need.size and not need[i, j, k]:
                    out[i, j, k] = -np.inf
                    continue
                d = np.float64(a[i, j, k]) - np.float64(b[i, j, k])
                # np.mod(d + half, period), numpy's rule: fmod, moved into [0, period) when signs differ.
                # Within [0, 2 period), the usual range, fmod is x or the exact x - period (Sterbenz).
                x = d + half
                if 0.0 <= x < period:
                    m = x
                elif period <= x < 2.0 * period:
                    m = x - period
                else:
                    m = np.fmod(x, period)
                    if m != 0.0 and (period < 0.0) != (m < 0.0):
                        m += period
                if m == 0.0:
                    m = 0.0  # numpy's +0 (copysign(0, period))
                s = np.float32(-abs(m - half))
                if s != s:
                    s = -np.inf
                elif s == np.inf:
                    s = big
                elif s == -np.inf:
                    s = -big
                out[i, j, k] = s


def angle_similarity(a, b, k: int, need=None) -> np.ndarray:
    """``np.nan_to_num(-misorientation_2d(a, b, k) as float32, nan=-inf)`` for k-fold angle maps (degrees) of
    equal shape (views are fine), in one pass: the same float64 operations, bit-identical.

    ``need`` (bool, their shape, optional): only these pairs are computed; the others get -inf.
    """
    out = np.empty(a.shape, np.float32)
    need = np.zeros((0, 0, 0), np.bool_) if need is None else _as_3d(np.asarray(need, np.bool_))
    _angle_similarity(_as_3d(a), _as_3d(b), 360.0 / k, need, _as_3d(out))
    return out


@njit(cache=True, nogil=True, inline="always")
def _angle_pair_within(a, b, period, half, threshold):
    """pair_connected's test of one pair where ``d = (a - b) + period / 2`` lies in ``[-period, 2 period)``, or is NaN.

    Its operations in the map's own precision (float32 stays float32): ``d``, numpy's mod, which there
    is ``d`` itself, the exact ``d - period`` (Sterbenz) or, below 0, ``d + period``; minus half a
    period, the test. NaN compares False.
    """
    d = (a - b) + half
    m = d
    if d >= period:
        m = d - period
    if d < 0:
        m = d + period
    return abs(m - half) <= threshold


@njit(cache=True, nogil=True)
def _angle_pairs_within(q, lo, hi, period, half, threshold, out):
    nz, ny, nx = out.shape
    far = 0
    for i in range(nz):
        za, zb = lo[0] + i, hi[0] + i
        for j in range(ny):
            ya, yb = lo[1] + j, hi[1] + j
            xa, xb = lo[2], hi[2]
            for k in range(nx):  # branch-free: vectorized
                a, b = q[za, ya, xa + k], q[zb, yb, xb + k]
                out[i, j, k] = _angle_pair_within(a, b, period, half, threshold)
                d = (a - b) + half
                far += (d < -period) | (d >= 2 * period)
    if far == 0:
        return
    # Differences beyond the usual range (angles not reduced to one period): numpy's mod in full,
    # fmod moved into [0, period) when the signs differ.
    for i in range(nz):
        za, zb = lo[0] + i, hi[0] + i
        for j in range(ny):
            ya, yb = lo[1] + j, hi[1] + j
            xa, xb = lo[2], hi[2]
            for k in range(nx):
                d = (q[za, ya, xa + k] - q[zb, yb, xb + k]) + half
                if d < -period or d >= 2 * period:
                    m = np.fmod(d, period)
                    if m != 0 and (period < 0) != (m < 0):
                        m += period
                    out[i, j, k] = abs(m - half) <= threshold


@njit(cache=True, nogil=True, inline="always")
def _angle_pair_within_any(a, b, period, half, threshold):
    """:func:`_angle_pair_within` for any difference: numpy's mod in full beyond its usual range."""
    d = (a - b) + half
    if -period <= d < 2 * period or d != d:
        return _angle_pair_within(a, b, period, half, threshold)
    m = np.fmod(d, period)
    if m != 0 and (period < 0) != (m < 0):
        m += period
    return abs(m - half) <= threshold


@njit(cache=True, nogil=True)
def _union(parent, p, q):
    """Join the sets of points ``p`` and ``q``; the larger root is attached to the smaller."""
    a = _root(parent, p)
    b = _root(parent, q)
    if a < b:
        parent[b] = a
    elif b < a:
        parent[a] = b


@njit(cache=True, nogil=True)
def _join_angle_pairs(q, valid, period, half, threshold, parent):
    """Union every valid point with its valid predecessor along each axis where the pair is within
    ``threshold`` (the test of :func:`angle_pairs_within`, lower point first)."""
    nz, ny, nx = q.shape
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                if not valid[z, y, x]:
                    continue
                p = (z * ny + y) * nx + x
                v = q[z, y, x]
                if x > 0 and valid[z, y, x - 1] and _angle_pair_within_any(q[z, y, x - 1], v, period, half, threshold):
                    _union(parent, p - 1, p)
                if y > 0 and valid[z, y - 1, x] and _angle_pair_within_any(q[z, y - 1, x], v, period, half, threshold):
                    _union(parent, p - nx, p)
                if z > 0 and valid[z - 1, y, x] and _angle_pair_within_any(q[z - 1, y, x], v, period, half, threshold):
                    _union(parent, p - ny * nx, p)


def label_angle_components(q, valid, k: int, threshold: float, dtype=np.int32):
    """:func:`label_components` of a float32 or float64 angle map (2D or 3D) under the face-neighbour
    pair rule (the :func:`angle_pairs_within` masks of every axis), in one pass without the masks.

    Returns ``(labels, n)`` as :func:`label_components`.
    """
    t = q.dtype.type
    period = t(360.0 / k)
    threshold = np.result_type(q.dtype, threshold).type(threshold)
    valid = np.ascontiguousarray(valid)
    parent = np.arange(valid.size, dtype=dtype)
    _join_angle_pairs(_as_3d(np.ascontiguousarray(q)), _as_3d(valid), period, period / t(2), threshold, parent)
    out = np.empty(valid.size, dtype)
    n = _number_components(parent, valid.ravel(), out)
    return out.reshape(valid.shape), int(n)


def angle_pairs_within(q, lo, hi, k: int, threshold: float) -> np.ndarray:
    """:func:`micro_sym.grains.reconstruct.pair_connected` of the angle pairs ``(q[lo], q[hi])`` of one
    float32 or float64 map (``lo``, ``hi``: slices of a neighbour offset), in one pass; same values."""
    spatial = q.shape
    pad = (0,) * (3 - len(spatial))
    start_lo = np.array(pad + tuple(s.start or 0 for s in lo), np.int64)
    start_hi = np.array(pad + tuple(s.start or 0 for s in hi), np.int64)
    out = np.empty(tuple(len(range(*s.indices(n))) for s, n in zip(lo, spatial)), bool)
    t = q.dtype.type
    period = t(360.0 / k)
    # The threshold in the precision numpy compares a map of this dtype with it.
    threshold = np.result_type(q.dtype, threshold).type(threshold)
    _angle_pairs_within(_as_3d(np.ascontiguousarray(q)), start_lo, start_hi, period, period / t(2), threshold,
                        _as_3d(out))
    return out


@njit(cache=True, nogil=True)
def _angle_terms(labels, angles, k, lab, t):
    """``lab`` = label - 1 and ``t`` = k * angle in radians (computed in float64, stored in ``t``'s dtype)
    of the labelled points, in raster order."""
    rad = np.pi / 180.0  # np.deg2rad multiplies by this constant
    nz, ny, nx = labels.shape
    n = 0
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                v = labels[z, y, x]
                if v != 0:
                    lab[n] = v - 1
                    t[n] = (np.float64(angles[z, y, x]) * rad) * k
                    n += 1


@njit(cache=True, nogil=True)
def _cos_sin_sums(lab, c, s, out):
    # np.bincount's weighted sums: the points of a label added one by one in their order. A run of
    # one label is summed in registers (the same additions, without a store and load between them).
    i = 0
    while i < lab.size:
        row = lab[i]
        sc, ss = out[row, 0], out[row, 1]
        while i < lab.size and lab[i] == row:
            sc += c[i]
            ss += s[i]
            i += 1
        out[row, 0], out[row, 1] = sc, ss


def angle_sums(labels, angles, n: int, k: int) -> np.ndarray:
    """Per-label sums of ``(cos kθ, sin kθ)`` of a 2D or 3D angle map (degrees): ``(n, 2)``, row ``i`` label ``i + 1``.

    The values of ``np.bincount(labels - 1, weights=np.cos(t))`` (and sin) over the labelled points,
    ``t = float32(np.deg2rad(θ) * k)``: the same operations in the same order, without the index and
    weight temporaries. Each term in float32 (numpy's vectorized float32 cos and sin are over ten times
    faster than float64's; a term's error, ~1e-7, is far below the float32 angle map's own), summed in float64.
    """
    m = np.count_nonzero(labels)
    lab = np.empty(m, np.int64)
    t = np.empty(m, np.float32)
    _angle_terms(_as_3d(np.asarray(labels)), _as_3d(np.asarray(angles)), int(k), lab, t)  # views: no copies
    c = np.cos(t)
    s = np.sin(t, out=t)
    out = np.zeros((n, 2))
    _cos_sin_sums(lab, c, s, out)
    return out


@njit(cache=True, nogil=True)
def _contact_runs(labels, axis, base, keys, runs):
    """Codes ``lo * base + hi`` of the pairs of different labels ``(lo, hi)`` one point apart along
    ``axis``, in raster order of ``lo``, consecutive equal codes merged into one with its count in
    ``runs``; returns how many."""
    nz, ny, nx = labels.shape
    dz, dy, dx = (1, 0, 0) if axis == 0 else ((0, 1, 0) if axis == 1 else (0, 0, 1))
    m = 0
    last = np.int64(-1)
    for z in range(nz - dz):
        for y in range(ny - dy):
            for x in range(nx - dx):
                a = np.int64(labels[z, y, x])
                b = np.int64(labels[z + dz, y + dy, x + dx])
                if a == b:
                    continue
                key = a * base + b
                if key == last:
                    runs[m - 1] += 1
                else:
                    keys[m] = key
                    runs[m] = 1
                    m += 1
                    last = key
    return m


def contact_pairs(labels, axis: int) -> np.ndarray:
    """Rows ``(lo, hi, count)``, sorted, of the pairs of different labels (0 included) that are
    neighbours along ``axis`` (``lo`` first): ``unique_label_pairs(lo[diff], hi[diff], counts=True)``
    of the shifted planes, without their array-sized temporaries."""
    lab = np.asarray(labels)
    lab3 = _as_3d(lab)
    axis3 = axis + 3 - lab.ndim
    n = lab3.size - lab3.size // max(lab3.shape[axis3], 1)  # pairs along the axis
    base = np.int64(int(lab.max()) + 1 if lab.size else 1)
    keys = np.empty(n, np.int64)
    runs = np.empty(n, np.int64)
    m = _contact_runs(lab3, axis3, base, keys, runs)
    if m == 0:
        return np.zeros((0, 3), np.int64)
    keys, runs = keys[:m], runs[:m]
    order = np.argsort(keys, kind="stable")
    keys, runs = keys[order], runs[order]
    start = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    return np.stack([*np.divmod(keys[start], base), np.add.reduceat(runs, start)], 1).astype(np.int64)


@njit(cache=True, nogil=True)
def _touching_keys(lab, lo, hi, extent, keys, m):
    """Append to ``keys`` (from ``m``) the codes ``min << 32 | max`` of the pairs of different labels
    > 0 at ``lab[lo + i]`` and ``lab[hi + i]`` over ``extent``, a run of one code once; returns the new end."""
    last = np.int64(-1)
    lz, ly, lx = lo[0], lo[1], lo[2]  # scalars: the stores to keys could alias the arrays
    hz, hy, hx = hi[0], hi[1], hi[2]
    for i in range(extent[0]):
        for j in range(extent[1]):
            for k in range(extent[2]):
                a = np.int64(lab[lz + i, ly + j, lx + k])
                b = np.int64(lab[hz + i, hy + j, hx + k])
                if a == b or a <= 0 or b <= 0:
                    continue
                key = (min(a, b) << 32) | max(a, b)
                if key != last:
                    keys[m] = key
                    m += 1
                    last = key
    return m


def touching_pairs(lab, lows) -> np.ndarray:
    """Sorted unique codes ``min * 2**32 + max`` of the pairs of different labels > 0 of ``lab`` (2D or 3D)
    at ``p`` and one point further along axis ``ax``, for ``p`` in the box ``lows[ax]`` (slices)."""
    lab3 = _as_3d(np.ascontiguousarray(lab))
    pad = 3 - lab.ndim
    keys = np.empty(sum(int(np.prod([s.stop - s.start for s in box])) for box in lows), np.int64)
    m = 0
    for ax, box in enumerate(lows):
        lo = np.array((0,) * pad + tuple(s.start for s in box), np.int64)
        hi = lo.copy()
        hi[ax + pad] += 1
        extent = np.array((1,) * pad + tuple(max(s.stop - s.start, 0) for s in box), np.int64)
        m = _touching_keys(lab3, lo, hi, extent, keys, m)
    return np.unique(keys[:m])


@njit(cache=True, nogil=True)
def _mark_present(labels, present):
    for p in range(labels.size):
        present[labels[p]] = True


@njit(cache=True, nogil=True)
def _lookup(labels, table, out):
    for p in range(labels.size):
        out[p] = table[labels[p]]


def lookup(table, labels) -> np.ndarray:
    """``table[labels]`` for labels >= 0, without numpy's conversion of the index array to intp."""
    labels = np.ascontiguousarray(labels)
    if labels.size and labels.max() >= len(table):
        return table[labels]  # numpy's IndexError
    out = np.empty(labels.shape, table.dtype)
    _lookup(labels.ravel(), table, out.ravel())
    return out


def compact_ids(labels):
    """The labels > 0 present in ``labels`` (sorted) and ``labels`` renumbered ``1..n`` in their order
    (int32, 0 stays 0), in two passes without index temporaries."""
    flat = np.ascontiguousarray(labels).ravel()
    present = np.zeros(int(flat.max()) + 1 if flat.size else 1, np.bool_)
    _mark_present(flat, present)
    present[0] = False
    ids = np.flatnonzero(present)
    table = np.zeros(len(present), np.int32)
    table[ids] = np.arange(1, len(ids) + 1, dtype=np.int32)
    return ids, lookup(table, labels)

"""Compiled inner loops of grain labelling (numba).

Union-find components, one-pass per-label moments, per-label sums of symmetry-aligned quaternions,
and the cubic misorientation pair test. They replace a sparse-graph ``connected_components`` call,
a dozen weighted ``bincount`` passes and a dozen volume-sized temporaries, which dominated
block-wise labelling of 3D volumes (seconds per 128³ block). All are exact: components are numbered
as ``connected_components`` numbers them (by their smallest point), and the cubic pair test does the
numpy closed form's float operations in the same order and precision (bit-identical, tested), so the
grains are the same whichever code path labels them.

Kernels work on 3D arrays; the wrappers view 2D input with a leading axis of length 1. ``nogil`` lets the engine's
worker threads label blocks while another thread runs the network.
"""

from __future__ import annotations

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
def _face_neighbour(z, y, x, d):
    """The ``d``-th (0-5) face neighbour of ``(z, y, x)``: -z, +z, -y, +y, -x, +x (may lie outside)."""
    if d == 0:
        return z - 1, y, x
    if d == 1:
        return z + 1, y, x
    if d == 2:
        return z, y - 1, x
    if d == 3:
        return z, y + 1, x
    if d == 4:
        return z, y, x - 1
    return z, y, x + 1


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
    spatial = q.shape[1:]
    pad = (0,) * (3 - len(spatial))
    start_lo = np.array(pad + tuple(s.start or 0 for s in lo), np.int64)
    start_hi = np.array(pad + tuple(s.start or 0 for s in hi), np.int64)
    out = np.empty(tuple(len(range(*s.indices(n))) for s, n in zip(lo, spatial)), q.dtype)
    _cubic_max_scalar_shifted(_as_3d(np.ascontiguousarray(q), channel=True), start_lo, start_hi,
                              q.dtype.type(1 / np.sqrt(2.0)), q.dtype.type(0.5), _as_3d(out))
    return out


@njit(cache=True, nogil=True)
def _flood(labels, level, prob, free, sim0, sim1, sim2, steps):
    """Bounded minimax flood (see :func:`micro_sym.grains.seeded.flood`): ``steps`` Jacobi rounds, in place.

    Each round recomputes every free point from its face neighbours of the previous round, so after
    round t a point holds the best path of at most t steps: lowest bottleneck, then the most similar
    last step, then the smaller label. Only free points change: a round visits them alone (a list made
    once) and holds their new values until all are computed.
    """
    nz, ny, nx = labels.shape
    count = 0
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                if free[z, y, x]:
                    count += 1
    pz = np.empty(count, np.int64)
    py = np.empty(count, np.int64)
    px = np.empty(count, np.int64)
    i = 0
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                if free[z, y, x]:
                    pz[i], py[i], px[i] = z, y, x
                    i += 1
    new_labels = np.empty(count, labels.dtype)
    new_level = np.empty(count, level.dtype)
    for _ in range(steps):
        changed = False
        for i in range(count):
            z, y, x = pz[i], py[i], px[i]
            best, best_sim, best_label = np.inf, -np.inf, 0
            for d in range(6):
                a, b, c = _face_neighbour(z, y, x, d)
                if a < 0 or b < 0 or c < 0 or a >= nz or b >= ny or c >= nx or labels[a, b, c] == 0:
                    continue
                if d < 2:
                    s = sim0[min(a, z), y, x]
                elif d < 4:
                    s = sim1[z, min(b, y), x]
                else:
                    s = sim2[z, y, min(c, x)]
                v = max(level[a, b, c], prob[z, y, x])
                lab = labels[a, b, c]
                if v < best or (v == best and (s > best_sim or (s == best_sim and lab < best_label))):
                    best, best_sim, best_label = v, s, lab
            if best_label != labels[z, y, x] or best != level[z, y, x]:
                new_labels[i], new_level[i] = best_label, best
                changed = True
            else:
                new_labels[i], new_level[i] = labels[z, y, x], level[z, y, x]
        for i in range(count):
            labels[pz[i], py[i], px[i]] = new_labels[i]
            level[pz[i], py[i], px[i]] = new_level[i]
        if not changed:
            break


@njit(cache=True, nogil=True)
def _within_radius(mask, reach, r2, out):
    """``out`` = points with a ``mask`` point at squared Euclidean distance <= ``r2`` (``reach`` = floor(r)).

    Three separable passes of squared distances capped at ``reach`` per axis (exact for this test:
    a point within the radius is within ``reach`` along every axis), instead of a ball dilation whose
    cost grows with the ball's volume.
    """
    nz, ny, nx = mask.shape
    big = np.int32(3 * (reach + 1) * (reach + 1) + 1)
    a = np.full(mask.shape, big, np.int32)
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                if mask[z, y, x]:
                    for d in range(-reach, reach + 1):
                        xx = x + d
                        if 0 <= xx < nx and d * d < a[z, y, xx]:
                            a[z, y, xx] = d * d
    b = np.full(mask.shape, big, np.int32)
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                v = a[z, y, x]
                if v < big:
                    for d in range(-reach, reach + 1):
                        yy = y + d
                        if 0 <= yy < ny and v + d * d < b[z, yy, x]:
                            b[z, yy, x] = v + d * d
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                out[z, y, x] = False
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                v = b[z, y, x]
                if v <= r2:
                    for d in range(-reach, reach + 1):
                        zz = z + d
                        if 0 <= zz < nz and v + d * d <= r2:
                            out[zz, y, x] = True


def within_radius(mask, radius: float) -> np.ndarray:
    """Points (2D or 3D) with a ``mask`` point within Euclidean ``radius`` (a binary dilation by a ball)."""
    mask = np.ascontiguousarray(mask, dtype=bool)
    out = np.empty(mask.shape, bool)
    _within_radius(_as_3d(mask), int(np.floor(radius)), float(radius) * float(radius), _as_3d(out))
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


@njit(cache=True, nogil=True)
def _grow_into_gaps(lab, steps):
    """In place: ``steps`` rounds in which every 0 point takes the smallest label > 0 among its face
    neighbours of the previous round (the rule of :func:`micro_sym.grains.stats.grow_into_gaps`)."""
    nz, ny, nx = lab.shape
    for _ in range(steps):
        old = lab.copy()
        changed = False
        for z in range(nz):
            for y in range(ny):
                for x in range(nx):
                    if old[z, y, x] != 0:
                        continue
                    best = 0
                    for d in range(6):
                        a, b, c = _face_neighbour(z, y, x, d)
                        if a < 0 or b < 0 or c < 0 or a >= nz or b >= ny or c >= nx:
                            continue
                        v = old[a, b, c]
                        if v > 0 and (best == 0 or v < best):
                            best = v
                    if best != 0:
                        lab[z, y, x] = best
                        changed = True
        if not changed:
            break


def grow_into_gaps(labels, steps: int):
    """The labels (int64) after :func:`micro_sym.grains.stats.grow_into_gaps`' rule, one pass per step
    (no array-sized temporaries)."""
    lab = np.array(labels, np.int64)
    _grow_into_gaps(_as_3d(lab), int(steps))
    return lab


@njit(cache=True, nogil=True)
def _angle_similarity(a, b, period, out):
    half = period / 2
    big = np.float32(3.4028234663852886e38)  # float32 max: what np.nan_to_num puts for infinities
    nz, ny, nx = out.shape
    for i in range(nz):
        for j in range(ny):
            for k in range(nx):
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


def angle_similarity(a, b, k: int) -> np.ndarray:
    """``np.nan_to_num(-misorientation_2d(a, b, k) as float32, nan=-inf)`` for k-fold angle maps (degrees) of
    equal shape (views are fine), in one pass: the same float64 operations, bit-identical."""
    out = np.empty(a.shape, np.float32)
    _angle_similarity(_as_3d(a), _as_3d(b), 360.0 / k, _as_3d(out))
    return out

"""Grain reconstruction from orientation maps (docs/design.md §3), vectorized and block-mergeable.

The rule
--------
Two neighbouring pixels/voxels belong to the same grain when

* both are *valid* (finite orientation, inside ``mask``, boundary probability below
  ``boundary_threshold``),
* their symmetry-aware misorientation is **at most** ``threshold`` degrees,
* and they have the same ``phase`` (when a phase map is given).

A grain is a connected component of the graph of such neighbour pairs (face neighbours for
``connectivity=1``: 4 in 2D, 6 in 3D; all neighbours for ``connectivity=2``: 8 in 2D, 26 in 3D).
Misorientation is always measured between *neighbours*, never to a grain seed or a grain mean, so
orientation may drift gradually across a grain (as in MTEX, DREAM.3D and DefDAP: DefDAP's flood
fill tests the pair it crosses, and this is what reproduces its reference maps exactly).

Minimum size (``min_size``): grains with fewer points are either ``"drop"``-ped (their points get
label 0, DefDAP's rule) or ``"merge"``-d into the neighbouring grain with which they share the
longest boundary (number of neighbour pairs; ties go to the larger neighbour), repeatedly until
every grain has ``min_size`` points, MTEX-style. A small grain with no labelled neighbour at all
cannot be merged and is dropped.

Algorithm and memory
--------------------
The volume is processed in slabs along the first axis (a few million points each). Inside a slab the
pairs for every neighbour offset are computed with numpy (float32 for float32 input, float64 for
float64 input) and a compiled union-find over the pairs that connect labels them
(:mod:`micro_sym.grains._kernels`). Slabs are then stitched with
:func:`face_equivalences` (the same rule, applied across the face) and :func:`resolve_equivalences`
(a union of label pairs), which is exactly what a block-wise streaming engine does; see
:func:`face_equivalences`. Peak memory is the input plus a few int32/float arrays of one slab.
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from micro_sym.errors import MicroSymError
from micro_sym.orientation.symmetry import CUBIC, HEXAGONAL, lattice

# Neighbour pairs per slab: bounds the pair/edge arrays of one csgraph call (~100 MB), whatever the
# connectivity (26-connectivity has 13 pairs per point, 4-connectivity 2).
SLAB_PAIRS = 1 << 23

__all__ = [
    "reconstruct_grains",
    "neighbour_offsets",
    "pair_connected",
    "face_equivalences",
    "resolve_equivalences",
    "unique_label_pairs",
    "filter_small_grains",
    "merge_into_best_neighbours",
    "consecutive_ids",
    "OrientationKind",
    "orientation_kind",
]


# ------------------------------------------------------------------------------- orientation kinds


class OrientationKind:
    """How to read an orientation array: 2D k-fold angles, quaternions with a symmetry group, or the
    cubic-harmonic field of a 3D network (:func:`micro_sym.orientation.cubic_harmonics.unit_fields`).

    Attributes
    ----------
    kind : {"angle", "quat", "field"}
    k : int
        Rotational order of the 2D lattice (angles only).
    symmetry : str
        ``"square"``, ``"hexagonal"`` or ``"cubic"``; for quaternions ``"hexagonal"`` means the
        622 rotation group (12 rotations) and ``"cubic"`` 432 (24 rotations).
    sym_w : ndarray or None
        ``(n_sym, 4)`` rows whose dot product with a misorientation quaternion ``d`` gives the scalar
        part of ``d ⊗ s`` (quaternions other than cubic, which uses a closed form).
    """

    def __init__(self, kind: str, symmetry: str, k: int = 0, sym_w=None, degrees=None):
        self.kind, self.symmetry, self.k, self.sym_w, self.degrees = kind, symmetry, k, sym_w, degrees

    @property
    def channel_axis(self) -> bool:
        return self.kind in ("quat", "field")

    def min_dot(self, threshold: float) -> float:
        """Fields: the inner product at which two points are ``threshold`` degrees apart."""
        from micro_sym.orientation.cubic_harmonics import field_min_dot

        return field_min_dot(float(threshold), self.degrees)


def orientation_kind(orientation_shape, symmetry: str | None) -> OrientationKind:
    """Decide how an orientation array of this shape is interpreted.

    ``"square"`` is always an angle map (k = 4) and ``"cubic"`` quaternions (432) or, for 9 or 22
    channels, the unit cubic-harmonic field of l = 4 (+6). ``"hexagonal"`` means quaternions (622)
    for a ``(4, y, x)``/``(4, z, y, x)`` array, else 2D angles (k = 6). ``None``: cubic for
    ``(4, ...)`` arrays with 3-4 dims, else square.
    """
    from micro_sym import orientation as ori
    from micro_sym.orientation.cubic_harmonics import field_degrees

    shape = tuple(orientation_shape)
    looks_quat = len(shape) in (3, 4) and shape[0] == 4
    if symmetry is None:
        symmetry = "cubic" if looks_quat else "square"
    lat = lattice(str(symmetry).lower(), where="orientation", what="symmetry")
    if lat is CUBIC:
        degrees = field_degrees(shape[0]) if len(shape) in (3, 4) else None
        if degrees:
            return OrientationKind("field", "cubic", degrees=degrees)
        if not looks_quat:
            raise MicroSymError(
                f"orientation: cubic symmetry needs quaternions of shape (4, y, x) or (4, z, y, x), got {shape}"
            )
        return OrientationKind("quat", "cubic")
    if lat is HEXAGONAL and looks_quat:
        s = ori.hexagonal_symmetry_quats()
        return OrientationKind("quat", "hexagonal", sym_w=s * np.array([1.0, -1.0, -1.0, -1.0]))
    if len(shape) not in (2, 3):
        raise MicroSymError(f"orientation: angle map must be 2D or 3D, got shape {shape}")
    return OrientationKind("angle", lat.name, k=lat.k)


# ------------------------------------------------------------------------------------ pair rule


def neighbour_offsets(ndim: int, connectivity: int):
    """Half of the neighbourhood: offsets whose first non-zero component is positive.

    Each unordered neighbour pair is visited once. ``connectivity`` 1 = face neighbours
    (4 in 2D, 6 in 3D), 2 = all neighbours (8 / 26); in 3D, 2 and 3 both mean 26 (skimage's
    ``connectivity=3``), and 18-connectivity (``connectivity=2`` in skimage 3D) is not offered.

    >>> neighbour_offsets(2, 1)
    [(0, 1), (1, 0)]
    """
    if connectivity not in (1, 2, 3):
        raise MicroSymError(f"connectivity: expected 1 (face) or 2 (full), got {connectivity}")
    out = []
    for off in itertools.product((-1, 0, 1), repeat=ndim):
        nz = [o for o in off if o != 0]
        if not nz or nz[0] < 0:
            continue
        if connectivity == 1 and len(nz) > 1:
            continue
        out.append(off)
    return sorted(out)


def _within(w, threshold: float):
    """Misorientation 2 arccos(w) <= threshold (degrees) <=> w >= cos(threshold / 2): no arccos needed."""
    return w >= float(np.cos(np.deg2rad(threshold) / 2))


def pair_connected(a, b, kind: OrientationKind, threshold: float):
    """Whether neighbour pairs ``(a[i], b[i])`` are within ``threshold`` degrees (NaN -> False).

    Parameters
    ----------
    a, b : ndarray
        Angle arrays (degrees) of equal shape, or quaternion arrays with the 4 components on the
        first axis, ``(4, ...)``. Computation is in the inputs' float precision (float32 stays
        float32, which is what keeps 256³ volumes in memory).
    kind : OrientationKind
        From :func:`orientation_kind`.
    threshold : float
        Largest misorientation (degrees, inclusive) of a connected pair.

    Returns
    -------
    ndarray of bool, shape of ``a`` without the quaternion axis.
    """
    if kind.kind == "angle":
        period = np.float32(360.0 / kind.k) if a.dtype == np.float32 else 360.0 / kind.k
        d = np.subtract(a, b)
        d += period / 2
        np.mod(d, period, out=d)
        d -= period / 2
        np.abs(d, out=d)
        return d <= threshold  # NaN compares False
    if kind.kind == "field":  # inner products of unit fields, in the inputs' precision
        return np.einsum("c...,c...->...", a, b) >= kind.min_dot(threshold)
    return _within(_pair_max_scalar(a, b, kind), threshold)


def _pair_max_scalar(a, b, kind: OrientationKind):
    """max over symmetry rotations s of |scalar part of (a* ⊗ b ⊗ s)|, per pair."""
    if kind.symmetry == "cubic":
        from micro_sym.grains._kernels import cubic_max_scalar

        return cubic_max_scalar(a, b)
    a0, a1, a2, a3 = a
    b0, b1, b2, b3 = b
    # Components of d = conj(a) ⊗ b.
    w = a0 * b0 + a1 * b1 + a2 * b2 + a3 * b3
    x = a0 * b1 - a1 * b0 - a2 * b3 + a3 * b2
    y = a0 * b2 - a2 * b0 - a3 * b1 + a1 * b3
    z = a0 * b3 - a3 * b0 - a1 * b2 + a2 * b1
    best = None
    for sw in kind.sym_w.astype(w.dtype):
        v = np.abs(w * sw[0] + x * sw[1] + y * sw[2] + z * sw[3])
        best = v if best is None else np.maximum(best, v, out=best)
    return best


def _shift_slices(shape, off):
    lo = tuple(slice(max(0, -o), n - max(0, o)) for n, o in zip(shape, off))
    hi = tuple(slice(max(0, o), n - max(0, -o)) for n, o in zip(shape, off))
    return lo, hi


def _pairs_ok(orient, valid, phase, off, kind, threshold):
    """Connected-pair mask between points ``p`` (``lo`` slice) and ``p + off`` (``hi`` slice)."""
    lo, hi = _shift_slices(valid.shape, off)
    ok = valid[lo] & valid[hi]
    if phase is not None:
        ok &= phase[lo] == phase[hi]
    if kind.kind == "quat" and kind.symmetry == "cubic":  # the hot path of 3D labelling: one pass, no views
        from micro_sym.grains._kernels import cubic_max_scalar_shifted

        ok &= _within(cubic_max_scalar_shifted(orient, lo, hi), threshold)
        return ok, lo, hi
    if kind.kind == "field":
        from micro_sym.grains._kernels import field_dots_shifted

        ok &= field_dots_shifted(orient, lo, hi) >= kind.min_dot(threshold)
        return ok, lo, hi
    if kind.kind == "angle" and orient.dtype in (np.float32, np.float64):  # one pass, no temporaries
        from micro_sym.grains._kernels import angle_pairs_within

        ok &= angle_pairs_within(orient, lo, hi, kind.k, threshold)
        return ok, lo, hi
    if kind.channel_axis:
        a, b = orient[(slice(None),) + lo], orient[(slice(None),) + hi]
    else:
        a, b = orient[lo], orient[hi]
    ok &= pair_connected(a, b, kind, threshold)
    return ok, lo, hi


# ---------------------------------------------------------------------------- block merging API


def face_equivalences(
    labels_a,
    labels_b,
    orient_a,
    orient_b,
    *,
    symmetry: str | None = None,
    threshold: float = 5.0,
    connectivity: int = 1,
    phase_a=None,
    phase_b=None,
):
    """Label pairs to union across a block face, by the same rule as :func:`reconstruct_grains`.

    A streaming engine labels each block on its own (with globally unique ids, e.g. by adding a
    per-block offset; 0 = not a grain), then calls this for every face between two blocks, gives
    all pairs to :func:`resolve_equivalences` and maps every block's labels through the result.
    Minimum-size filtering must come after that global merge (:func:`filter_small_grains`).

    Parameters
    ----------
    labels_a, labels_b : ndarray of int
        The two facing layers: ``labels_a`` is the last plane of block A, ``labels_b`` the first
        plane of block B, the point ``labels_a[i]`` directly facing ``labels_b[i]``; shape ``(w,)``
        in 2D (a line), ``(h, w)`` in 3D. 0 marks invalid points (masked, boundary, NaN).
    orient_a, orient_b : ndarray
        Orientations on those planes: angles of the labels' shape, or channel-first ``(C, *shape)``
        (quaternions, harmonic fields).
    symmetry, threshold : as in :func:`reconstruct_grains`.
    connectivity : int
        1: only directly facing pairs. 2: also the diagonal pairs across the face within the
        given planes. Diagonal pairs that leave the given extent (across a block *edge*) are
        only covered when the planes span all blocks on that side (whole-volume planes at the block
        boundary) or carry a one-point rim from the neighbouring blocks.
    phase_a, phase_b : ndarray, optional
        Phase ids on the planes; pairs of different phase never connect.

    Returns
    -------
    ndarray, shape (n, 2), int64
        Unique pairs ``(label_in_a, label_in_b)`` that belong to the same grain.
    """
    la, lb = np.asarray(labels_a), np.asarray(labels_b)
    if la.shape != lb.shape:
        raise MicroSymError(f"face_equivalences: label planes differ in shape {la.shape} vs {lb.shape}")
    oa, ob = np.asarray(orient_a), np.asarray(orient_b)
    channels = oa.ndim == la.ndim + 1
    # Planes have one dimension less than maps; classify by a stand-in shape of the same kind.
    kind = orientation_kind((oa.shape[0], 1, 1) if channels else (1, 1), symmetry)
    if kind.channel_axis and oa.shape[1:] != la.shape or kind.kind == "angle" and oa.shape != la.shape:
        raise MicroSymError(f"face_equivalences: orientation shape {oa.shape} does not match labels {la.shape}")
    # Stack the two planes as a thickness-2 block and take the offsets that cross the face.
    stack_l = np.stack([la, lb])
    stack_o = np.stack([oa, ob], axis=1 if kind.channel_axis else 0)
    stack_p = None if phase_a is None else np.stack([np.asarray(phase_a), np.asarray(phase_b)])
    valid = stack_l > 0
    out = []
    for off in neighbour_offsets(stack_l.ndim, connectivity):
        if off[0] != 1:
            continue
        ok, lo, hi = _pairs_ok(stack_o, valid, stack_p, off, kind, threshold)
        out.append(np.stack([stack_l[lo][ok], stack_l[hi][ok]], axis=1).astype(np.int64))
    pairs = np.concatenate(out) if out else np.zeros((0, 2), np.int64)
    return unique_label_pairs(pairs[:, 0], pairs[:, 1])


def unique_label_pairs(a, b, *, counts: bool = False) -> np.ndarray:
    """Sorted unique rows ``(a[i], b[i])`` of non-negative labels (``np.unique(axis=0)``, much faster).

    With ``counts`` a third column holds how often each pair occurs.
    """
    a, b = np.asarray(a, np.int64).ravel(), np.asarray(b, np.int64).ravel()
    if not len(a):
        return np.zeros((0, 3 if counts else 2), np.int64)
    # One int64 key per pair, a major (labels < 2**31): a 1-D unique is many times faster than
    # np.unique(axis=0), which sorts structured rows, and gives the same lexicographic order.
    base = int(b.max()) + 1
    keys, n = np.unique(a * base + b, return_counts=True)
    cols = [*np.divmod(keys, base)] + ([n] if counts else [])
    return np.stack(cols, 1).astype(np.int64)


def resolve_equivalences(n_labels: int, pairs):
    """Union label pairs: a map ``old -> new`` with consecutive ids, 0 kept as 0.

    Parameters
    ----------
    n_labels : int
        Labels are ``0..n_labels`` (0 = not a grain).
    pairs : array_like, shape (n, 2)
        Labels to merge.

    Returns
    -------
    ndarray of int64, shape (n_labels + 1,)
        ``mapping[old]``; new ids are numbered in order of their smallest old id, so labels that
        were in first-appearance order stay in first-appearance order.

    >>> resolve_equivalences(4, [(1, 3), (4, 3)]).tolist()
    [0, 1, 2, 1, 1]
    """
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    n = n_labels + 1
    g = sparse.coo_matrix((np.ones(len(pairs), np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, comp = connected_components(g, directed=False)
    # comp[0] is the component of the null label (0 never appears in pairs, so it is alone and
    # numbered 0 because scipy numbers components by their smallest node).
    return comp.astype(np.int64)


# ---------------------------------------------------------------------------------- main entry


def reconstruct_grains(
    orientation,
    *,
    symmetry: str | None = None,
    threshold: float = 5.0,
    connectivity: int = 1,
    boundary=None,
    boundary_threshold: float = 0.5,
    mask=None,
    min_size: int = 0,
    small: str = "merge",
    phase=None,
) -> np.ndarray:
    """Label grains in a 2D/3D orientation map (docs/design.md §3).

    Parameters
    ----------
    orientation : ndarray
        2D k-fold angles in degrees ``(y, x)`` (or a 3D angle stack ``(z, y, x)``), or quaternions
        ``(4, y, x)`` / ``(4, z, y, x)``, scalar first, channel first. NaN = undefined.
    symmetry : {"square", "hexagonal", "cubic"}, optional
        Angles: square (k = 4) or hexagonal (k = 6). Quaternions: cubic (432, 24 rotations) or
        hexagonal (622, 12 rotations). Default: cubic for ``(4, ...)`` arrays, else square.
    threshold : float
        Largest misorientation (degrees) between neighbours of one grain, inclusive.
    connectivity : {1, 2}
        1: face neighbours (4 in 2D, 6 in 3D); 2: all neighbours (8 / 26). Also accepts 4, 8, 6, 26.
    boundary : ndarray, optional
        Boundary probability map (spatial shape); points with ``boundary >= boundary_threshold``
        are not part of any grain (label 0) and so separate grains. With ``connectivity=2`` a
        one-point-thin 4-connected boundary line can be crossed diagonally; use 1 with thin lines.
    boundary_threshold : float
    mask : ndarray of bool, optional
        True where data is valid (e.g. indexed EBSD points); False points get label 0.
    min_size : int
        Smallest grain, in points. Smaller grains are handled by ``small``.
    small : {"merge", "drop"}
        "merge" (default, MTEX-like): into the neighbour sharing the longest boundary, repeated
        until all grains are big enough; isolated small grains are dropped. "drop" (DefDAP): their
        points become 0.
    phase : ndarray of int, optional
        Phase id per point; neighbours of different phase are never joined.

    Returns
    -------
    ndarray of uint32, spatial shape
        0 = boundary / unassigned / masked; grain ids consecutive from 1, in row-major order of
        each grain's first point (for ``small="merge"``, a grain keeps the id of the grain it
        grew from).

    Examples
    --------
    >>> theta = np.zeros((4, 6), np.float32); theta[:, 3:] = 30.0
    >>> reconstruct_grains(theta, symmetry="square").tolist()[0]
    [1, 1, 1, 2, 2, 2]
    """
    orient = np.asarray(orientation)
    if not np.issubdtype(orient.dtype, np.floating):
        orient = orient.astype(np.float32)
    connectivity = {4: 1, 6: 1, 8: 2, 26: 2}.get(connectivity, connectivity)
    if threshold is None or not np.isfinite(threshold) or threshold < 0:
        raise MicroSymError(f"threshold: must be a non-negative number of degrees, got {threshold}")
    if small not in ("merge", "drop"):
        raise MicroSymError(f"small: expected 'merge' or 'drop', got '{small}'")
    if min_size < 0:
        raise MicroSymError(f"min_size: must be >= 0, got {min_size}")
    kind = orientation_kind(orient.shape, symmetry)
    spatial = orient.shape[1:] if kind.channel_axis else orient.shape
    if len(spatial) not in (2, 3):
        raise MicroSymError(f"orientation: expected a 2D or 3D map, got spatial shape {spatial}")

    valid = _valid_mask(orient, kind, spatial, boundary, boundary_threshold, mask)
    if phase is not None:
        phase = np.asarray(phase)
        if phase.shape != spatial:
            raise MicroSymError(f"phase: shape {phase.shape} does not match the orientation map {spatial}")
    offsets = neighbour_offsets(len(spatial), connectivity)

    labels = np.zeros(spatial, dtype=np.int64 if np.prod(spatial) >= 2**31 - 1 else np.int32)
    plane = int(np.prod(spatial[1:]))
    step = max(1, SLAB_PAIRS // (len(offsets) * max(plane, 1)))
    n_prov = 0
    pairs = []
    for z0 in range(0, spatial[0], step):
        z1 = min(spatial[0], z0 + step)
        sl = slice(z0, z1)
        o_s = orient[:, sl] if kind.channel_axis else orient[sl]
        p_s = None if phase is None else phase[sl]
        lab, n = _label_slab(o_s, valid[sl], p_s, offsets, kind, threshold)
        if n_prov:
            lab[lab > 0] += n_prov
        labels[sl] = lab
        if z0 > 0:  # stitch to the previous slab with the same rule
            po = (orient[:, z0 - 1], orient[:, z0]) if kind.channel_axis else (orient[z0 - 1], orient[z0])
            pp = (None, None) if phase is None else (phase[z0 - 1], phase[z0])
            pairs.append(
                face_equivalences(
                    labels[z0 - 1], labels[z0], *po, symmetry=kind.symmetry, threshold=threshold,
                    connectivity=connectivity, phase_a=pp[0], phase_b=pp[1],
                )
            )
        n_prov += n
    if pairs:
        mapping = resolve_equivalences(n_prov, np.concatenate(pairs))
        labels = mapping.astype(labels.dtype)[labels]
    if min_size > 1:
        labels = filter_small_grains(labels, min_size, small=small, connectivity=connectivity)
    return labels.astype(np.uint32)


def _valid_mask(orient, kind, spatial, boundary, boundary_threshold, mask):
    if kind.channel_axis:
        valid = np.isfinite(orient).all(axis=0)
    else:
        valid = np.isfinite(orient)
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != spatial:
            raise MicroSymError(f"mask: shape {mask.shape} does not match the orientation map {spatial}")
        valid &= mask.astype(bool)
    if boundary is not None:
        boundary = np.asarray(boundary)
        if boundary.shape != spatial:
            raise MicroSymError(f"boundary: shape {boundary.shape} does not match the orientation map {spatial}")
        valid &= ~(boundary >= boundary_threshold)
    return valid


def _label_slab(orient, valid, phase, offsets, kind, threshold):
    """Connected components of one slab: labels 1..n (first-appearance order), 0 = invalid."""
    from micro_sym.grains._kernels import label_angle_components, label_components

    dtype = np.int32 if valid.size < 2**31 else np.int64
    if kind.kind == "angle" and orient.dtype in (np.float32, np.float64) and phase is None and all(
            sum(map(abs, off)) == 1 for off in offsets):  # face neighbours: one pass, no pair masks
        return label_angle_components(orient, valid, kind.k, threshold, dtype)
    masks = []
    for off in offsets:
        ok, lo, _ = _pairs_ok(orient, valid, phase, off, kind, threshold)
        masks.append((off, ok, lo))
    return label_components(valid, masks, dtype)


# ---------------------------------------------------------------------------------- small grains


def filter_small_grains(labels, min_size: int, *, small: str = "merge", connectivity: int = 1):
    """Enforce a minimum grain size on a label map (0 = not a grain).

    Parameters
    ----------
    labels : ndarray of int
        Grain ids, 0 = background/boundary.
    min_size : int
        Grains with fewer points than this are removed or merged.
    small : {"merge", "drop"}
        "drop": points of small grains become 0 (DefDAP). "merge": each small grain joins the
        neighbouring grain (any size) with which it shares the most neighbour pairs under
        ``connectivity`` (ties: the larger neighbour, then the lower id); repeated until no small
        grain has a neighbour; remaining isolated small grains are dropped.
    connectivity : {1, 2}
        Which points count as touching for "merge".

    Returns
    -------
    ndarray of uint32
        Consecutive ids from 1 in the order of the input ids.
    """
    labels = np.asarray(labels)
    lab = labels.astype(np.int64 if labels.size >= 2**31 - 1 else np.int32, copy=True)
    if small not in ("merge", "drop"):
        raise MicroSymError(f"small: expected 'merge' or 'drop', got '{small}'")
    connectivity = {4: 1, 6: 1, 8: 2, 26: 2}.get(connectivity, connectivity)
    offsets = neighbour_offsets(lab.ndim, connectivity)
    for _ in range(64):
        n = int(lab.max()) if lab.size else 0
        sizes = np.bincount(lab.ravel(), minlength=n + 1)
        is_small = (sizes < min_size) & (sizes > 0)
        is_small[0] = False
        if not is_small.any():
            break
        if small == "drop":
            lab[is_small[lab]] = 0
            break
        keys = []
        for off in offsets:
            lo, hi = _shift_slices(lab.shape, off)
            a, b = lab[lo], lab[hi]
            sel = (a != b) & (a > 0) & (b > 0) & (is_small[a] | is_small[b])
            a, b = a[sel].astype(np.int64), b[sel].astype(np.int64)  # keys below overflow int32
            # Both directions: a small grain sees every neighbour, whichever side it is on.
            keys.append(a * (n + 1) + b)
            keys.append(b * (n + 1) + a)
        keys = np.concatenate(keys)
        src, dst = np.divmod(keys, n + 1)
        keys = keys[is_small[src]]
        if len(keys) == 0:  # small grains left without any neighbour: cannot merge
            lab[is_small[lab]] = 0
            break
        uk, counts = np.unique(keys, return_counts=True)
        src, dst = np.divmod(uk, n + 1)
        lab = merge_into_best_neighbours(src, dst, counts, sizes, n).astype(lab.dtype)[lab]
        no_nb = is_small.copy()
        no_nb[src] = False
        if no_nb.any():  # small grains with no neighbour at all this round: drop them
            lab[no_nb[lab]] = 0
    else:
        sizes = np.bincount(lab.ravel())
        lab[(sizes < min_size)[lab] & (lab > 0)] = 0
    return consecutive_ids(lab).astype(np.uint32)


def merge_into_best_neighbours(src, dst, counts, sizes, n: int) -> np.ndarray:
    """One round of small-grain merging (:func:`filter_small_grains`): the new id of every id ``0..n``.

    Rows ``(src, dst, counts)``: small grain ``src`` shares ``counts`` neighbour pairs with grain
    ``dst``. Each small grain joins its best neighbour (most shared pairs, then the larger neighbour
    by ``sizes``, then the lower id), transitively; a merged set keeps the smallest old id in it.

    >>> merge_into_best_neighbours(np.array([1, 1]), np.array([2, 3]), np.array([1, 1]), np.array([0, 1, 5, 9]), 3)
    array([0, 1, 2, 1])
    """
    order = np.lexsort((dst, -sizes[dst], -counts, src))
    src, dst = src[order], dst[order]
    first = np.r_[True, src[1:] != src[:-1]]
    mapping = resolve_equivalences(n, np.stack([src[first], dst[first]], 1))
    # Keep the id of the smallest old label in each merged set (resolve numbers them so).
    first_old = np.full(mapping.max() + 1, np.iinfo(np.int64).max)
    np.minimum.at(first_old, mapping, np.arange(n + 1))
    return first_old[mapping]


def consecutive_ids(labels) -> np.ndarray:
    """Labels renumbered ``1..N`` in the order of their ids (0 stays 0).

    >>> consecutive_ids(np.array([0, 7, 3, 7]))
    array([0, 2, 1, 2])
    """
    present = np.zeros(int(labels.max()) + 1 if labels.size else 1, bool)
    present[labels.ravel()] = True
    present[0] = False
    remap = np.cumsum(present)
    remap[0] = 0
    return remap[labels]

"""Global grain labels from per-block labels (docs/design.md §3 rule, §5 "label per block, then merge").

A grain is a connected set of non-boundary pixels whose neighbours (face neighbours, connectivity 1)
differ in orientation by at most ``threshold`` degrees. Because the rule only looks at neighbour
*pairs*, labelling each block on its own and then joining local labels wherever a pair of face
neighbours across a block face passes the same test gives exactly the whole-image partition:

1. per block (:func:`label_block`): local labels ``1..n`` in raster order, additive per-label
   statistics, the in-block contacts between different labels, and the block's face planes;
2. once per image (:func:`merge_blocks`): a union-find (``scipy.sparse.csgraph``) over the pairs
   across every block face (:func:`micro_sym.grains.face_equivalences`), grains numbered in raster
   order of their first voxel (as whole-image reconstruction numbers them), then the small-grain rule
   of :func:`micro_sym.grains.filter_small_grains` replayed on the grain adjacency graph, so the ids
   equal whole-image ids and do not depend on block size, scheduler or worker count;
3. per block again: ``grains = lut[local]`` written chunk-aligned by the engine.

The seeded rule for network maps (:mod:`micro_sym.grains.rules`) runs the same passes on the
*seeds*: pass 1 labels only the block's seed core (:func:`seed_core`, from the boundary map
``ceil(core_radius)`` beyond the block), pass 2 merges seeds (2D: nearby similar seeds) and drops
small ones, and pass 3 floods the final seed ids over the maps of the block grown by ``steps + 1``
(:func:`flood_block`, exact because the flood is local within ``steps``), which also yields the
statistics of the grown grains for the table (:func:`final_table`).

Nothing volume-sized is held: pass 2 reads one face plane at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from micro_sym.orientation.symmetry import lattice


def grow(core, margin: int, shape) -> tuple:
    """``core`` (slices) grown by ``margin`` points per side, clipped to an image of ``shape``."""
    return tuple(slice(max(s.start - margin, 0), min(s.stop + margin, n)) for s, n in zip(core, shape))


def inside(inner, outer) -> tuple:
    """Where the region ``inner`` lies within the region ``outer`` (both global slices)."""
    return tuple(slice(i.start - o.start, i.stop - o.start) for i, o in zip(inner, outer))


_SLAB = 1 << 17  # quaternions per symmetry-reduction call: bounds its 24-fold scratch


# ------------------------------------------------------------------------------ pass 1: per block


@dataclass
class BlockLabels:
    """Local labels of one block and what the global passes need from it.

    ``stats`` holds per-label arrays (row ``i`` is local label ``i + 1``): ``count``, ``first``
    (global raster index of the label's first voxel), ``m1`` (coordinate sums), ``m2`` (sums of
    coordinate products, flattened ``nd × nd``), ``edge`` (voxel faces on the image edge, per axis),
    ``ori_sum`` (2D: summed ``(cos kθ, sin kθ)``; 3D quaternions: summed after aligning each to the
    label's first voxel under the lattice symmetry, with ``ref``, the quaternion at that first voxel;
    3D harmonic fields: summed as they are). ``contacts`` is ``(m, 4)``:
    ``(label_a, label_b, axis, pairs)`` for every pair of *different* labels (0 included) that are
    face neighbours inside the block. ``faces`` maps ``"lo0"``, ``"hi0"``, ... to
    ``(labels, orientation)`` on the block's faces.
    """

    labels: np.ndarray
    n: int
    stats: dict
    contacts: np.ndarray
    faces: dict
    near: np.ndarray | None = None
    thick_faces: dict | None = None

    def to_arrays(self) -> dict:
        """Flat dict of arrays for ``np.savez`` (everything except the label image)."""
        out = {f"stat_{k}": v for k, v in self.stats.items()}
        out["contacts"] = self.contacts
        out["n"] = np.array(self.n)
        for name, (lab, ori) in self.faces.items():
            out[f"face_lab_{name}"] = lab
            out[f"face_ori_{name}"] = ori
        if self.near is not None:
            out["near"] = self.near
            for name, lab in self.thick_faces.items():
                out[f"thick_{name}"] = lab
        return out


def label_block(orientation, boundary, *, symmetry, threshold: float = 5.0, boundary_threshold: float = 0.5,
                origin=None, image_shape=None, reach: int = 0, mask=None) -> BlockLabels:
    """Label the grains of one block (face connectivity, no size filter) and collect its merge data.

    The labels come from :func:`micro_sym.grains.reconstruct_grains` with ``min_size=0``, so the rule
    (inclusive threshold, float precision, boundary test) is the one whole-image reconstruction uses.

    Parameters
    ----------
    orientation : ndarray
        2D: angles in degrees ``(y, x)``; 3D: quaternions ``(4, z, y, x)``.
    boundary : ndarray or None
        Boundary probability, spatial shape; pixels at or above ``boundary_threshold`` are boundary.
    symmetry : {"square", "hexagonal", "cubic"}
    threshold : float
        Largest misorientation (degrees, inclusive) between neighbours of one grain.
    origin : tuple of int, optional
        Global position of the block's first voxel (raster order, image-edge faces).
    image_shape : tuple of int, optional
        Whole image shape; defaults to the block's own shape (a single-block image).
    reach : int
        > 0 for region merging (:mod:`micro_sym.grains.regions`): also keep the block's region pairs
        within ``reach`` px (:func:`~micro_sym.grains.regions.near_pairs`) and its outer ``reach``
        planes per face, so the merge pass can find the pairs across block faces.
    mask : ndarray of bool, optional
        Only these points are labelled (the seeded rule's core, :func:`seed_core`).

    Returns
    -------
    BlockLabels

    Examples
    --------
    >>> ang = np.array([[0.0, 1.0, 40.0], [0.5, 2.0, 41.0]], np.float32)
    >>> label_block(ang, None, symmetry="square").labels
    array([[1, 1, 2],
           [1, 1, 2]], dtype=uint32)
    """
    from micro_sym.grains import orientation_kind, reconstruct_grains

    orientation = np.asarray(orientation)
    kind = orientation_kind(orientation.shape, symmetry)
    labels = reconstruct_grains(orientation, symmetry=symmetry, threshold=threshold, connectivity=1,
                                boundary=boundary, boundary_threshold=boundary_threshold, mask=mask, min_size=0)
    shape = labels.shape
    nd = len(shape)
    origin = tuple(origin) if origin is not None else (0,) * nd
    image_shape = tuple(image_shape) if image_shape is not None else shape
    n = int(labels.max()) if labels.size else 0
    stats = _block_stats(labels, n, orientation, kind, origin, image_shape)
    contacts = _contacts([labels] * nd)
    faces = {}
    for ax in range(nd):
        for side, idx in (("lo", 0), ("hi", shape[ax] - 1)):
            sl = tuple(idx if d == ax else slice(None) for d in range(nd))
            ori = orientation[(slice(None),) + sl] if kind.channel_axis else orientation[sl]
            faces[f"{side}{ax}"] = (labels[sl].copy(), np.ascontiguousarray(ori, dtype=np.float32))
    if reach <= 0:
        return BlockLabels(labels, n, stats, contacts, faces)
    from micro_sym.grains.regions import near_pairs

    thick = {}
    for ax in range(nd):
        a = np.moveaxis(labels, ax, 0)
        thick[f"lo{ax}"] = np.ascontiguousarray(a[:reach])
        thick[f"hi{ax}"] = np.ascontiguousarray(a[-reach:])
    return BlockLabels(labels, n, stats, contacts, faces, near_pairs(labels, reach), thick)


def _contacts(regions) -> np.ndarray:
    """``(m, 4)`` contacts ``(label_a, label_b, axis, pairs)`` of the pairs of different labels along
    each axis ``ax`` of ``regions[ax]`` (:func:`~._kernels.contact_pairs`)."""
    from micro_sym.grains._kernels import contact_pairs

    pairs = [contact_pairs(r, ax) for ax, r in enumerate(regions)]
    parts = [np.insert(p, 2, ax, axis=1) for ax, p in enumerate(pairs) if len(p)]
    return np.concatenate(parts) if parts else np.zeros((0, 4), np.int64)


def seed_core(boundary, inner, *, radius: float, boundary_threshold: float = 0.5) -> np.ndarray:
    """The seeded rule's core (:func:`micro_sym.grains.seeded.core_mask`) of a block.

    ``boundary`` covers the block grown by ``ceil(radius)`` (clipped to the image, as
    :func:`~.blocks.grow` grows it); ``inner`` is where the block lies in it. The result, block-shaped,
    equals the whole image's core there: every boundary point within ``radius`` is in view.
    """
    from micro_sym.grains.seeded import core_mask

    return core_mask(np.asarray(boundary) >= boundary_threshold, radius)[inner]


def _block_stats(labels, n, orientation, kind, origin, image_shape, ref=None) -> dict:
    """Additive per-label statistics of one block (see :class:`BlockLabels`).

    3D: ``ref`` (``(n, 4)``, optional) is the orientation each label's quaternions are aligned to
    before summing; rows that are not finite, or all rows without it, use the label's first voxel.
    The quaternion at that first voxel is returned as ``ref`` so that the merge can give every grain
    one reference for all blocks (:func:`merge_blocks`).
    """
    from micro_sym.grains._kernels import aligned_quaternion_sums, label_moments

    nd = labels.ndim
    count, first_local, m1, m2 = label_moments(labels, n, origin)
    m2 = m2.reshape(n, nd * nd)
    edge = np.zeros((n, nd), np.int64)
    for d in range(nd):
        for pos in ({0, image_shape[d] - 1}):
            loc = pos - origin[d]
            if 0 <= loc < labels.shape[d]:
                plane = np.take(labels, loc, axis=d).ravel()
                plane = plane[plane > 0].astype(np.int64) - 1
                # A one-pixel-thick image has both edges on the same plane: count both faces.
                mult = 2 if image_shape[d] == 1 else 1
                edge[:, d] += mult * np.bincount(plane, minlength=n)
    first_coords = np.unravel_index(first_local, labels.shape)
    first = (np.ravel_multi_index(tuple(c + o for c, o in zip(first_coords, origin)), image_shape)
             if n else np.zeros(0, np.int64))
    extra = {}
    if kind.kind == "field":  # linear in the orientation distribution: sums simply add across blocks
        from micro_sym.grains.field import field_sums

        ori_sum = field_sums(orientation, labels, n)
    elif kind.channel_axis:
        from micro_sym import orientation as ori

        first_q = orientation.reshape(4, -1)[:, first_local].T.astype(np.float64)
        use = first_q
        if ref is not None:
            # One reference per grain for every block: the aligned sums then add up to the same
            # mean whatever the tiling (a block-local reference picks other symmetry equivalents
            # for the far side of a grain whose orientation turns, and the mean moved by degrees).
            ref = np.asarray(ref, np.float64).reshape(n, 4)
            use = np.where(np.isfinite(ref).all(1, keepdims=True), ref, first_q)
        ori_sum = aligned_quaternion_sums(labels, orientation, use, ori.symmetry_quats(kind.symmetry),
                                          ori.nearest_without_search_cos(kind.symmetry))
        extra["ref"] = first_q
    else:
        from micro_sym.grains._kernels import angle_sums

        ori_sum = angle_sums(labels, orientation, n, kind.k)
    return {"count": count, "first": np.asarray(first, np.int64), "m1": m1, "m2": m2, "edge": edge,
            "ori_sum": ori_sum, **extra}


def _reduce(q, ref, symmetry):
    """Symmetry equivalents of ``q`` nearest ``ref`` (rows), in bounded slabs."""
    from micro_sym import orientation as ori

    out = np.empty_like(q)
    for s in range(0, len(q), _SLAB):
        out[s : s + _SLAB] = ori.reduce_to_reference(q[s : s + _SLAB], ref[s : s + _SLAB], symmetry)
    return out


# ------------------------------------------------------------------------------ pass 2: merge


@dataclass
class MergeResult:
    """Outcome of the global merge.

    ``offsets[b]`` is the first node of block ``b`` (nodes are the blocks' local labels, in block
    order), ``lut`` maps node -> final grain id (0 = dropped small grain), and ``table`` holds the
    per-grain statistics as columns named like :func:`micro_sym.grains.grain_table`'s. ``refs``
    (3D, else None) is ``(n_grains, 4)``: each grain's reference orientation, the quaternion at its
    first voxel in raster order (of its seeds, for the seeded rule), the same for every tiling.
    """

    offsets: np.ndarray
    lut: np.ndarray
    n_grains: int
    table: dict
    refs: np.ndarray | None = None

    def block_lut(self, b: int) -> np.ndarray:
        """Lookup table local label -> final id for block ``b`` (index 0 -> 0)."""
        return np.concatenate([[0], self.lut[self.offsets[b] : self.offsets[b + 1]]]).astype(np.uint32)


def merge_blocks(plan, load, *, symmetry, threshold: float = 5.0, min_size: int = 0, small: str = "merge",
                 pixel_size=None, merge_threshold: float | None = None, reach: int = 0, table: bool = True) -> MergeResult:
    """Join per-block labels across block faces, filter small grains, number grains from 1.

    Parameters
    ----------
    plan : BlockPlan
        The blocks, in the order their labels were produced.
    load : callable
        ``load(block) -> mapping`` of what :meth:`BlockLabels.to_arrays` saved for a block
        (an ``np.load`` of its ``.npz`` is fine: members are read only when accessed).
    symmetry : {"square", "hexagonal", "cubic"}
    threshold : float
        Same misorientation threshold as the per-block labelling.
    min_size, small :
        As in :func:`micro_sym.grains.reconstruct_grains` (applied to the global grains, with the
        same round-by-round rule as :func:`micro_sym.grains.filter_small_grains`).
    pixel_size : tuple of float, optional
        Physical pixel size per axis for the statistics table.
    merge_threshold, reach :
        Region merging (2D, :func:`micro_sym.grains.regions.merge_similar_regions`) after the pair
        rule and before the size filter; the blocks must have been labelled with the same ``reach``.
    table : bool
        False: skip the per-grain table (the seeded rule computes it after its flood, :func:`final_table`).

    Returns
    -------
    MergeResult
        Grain ids equal those of whole-image :func:`~micro_sym.grains.reconstruct_grains` (followed
        by :func:`~micro_sym.grains.regions.merge_regions` when ``merge_threshold`` is given).
    """
    from micro_sym.grains import face_equivalences, resolve_equivalences, unique_label_pairs

    blocks = plan.blocks
    nd = len(plan.shape)
    index_of = {b.index: i for i, b in enumerate(blocks)}
    # The seeded rule (no table, small seeds dropped) needs each node's size and first voxel only: the
    # moments and the contacts between grains, which grow with the volume, are neither read nor kept.
    need_contacts = table or small != "drop"
    keys = ("count", "first", "m1", "m2", "edge", "ori_sum") if table or merge_threshold is not None else ("count", "first")
    stats = {k: [] for k in keys}
    refs = []  # 3D: the quaternion at every node's first voxel
    counts, contact_parts = [], []
    for i, b in enumerate(blocks):
        data = load(b)
        counts.append(int(data["n"]))
        for k in keys:
            stats[k].append(np.asarray(data[f"stat_{k}"]))
        if "stat_ref" in data:
            refs.append(np.asarray(data["stat_ref"]).reshape(-1, 4))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    n_nodes = int(offsets[-1])
    # Nodes are numbered from 1 (0 = not a grain) so label 0 maps to node 0 everywhere.
    for i, b in enumerate(blocks if need_contacts else ()):
        c = np.asarray(load(b)["contacts"])
        if len(c):
            contact_parts.append(np.stack([_node(c[:, 0], offsets[i]), _node(c[:, 1], offsets[i]), c[:, 2], c[:, 3]], 1))
    edges = []
    for i, b in enumerate(blocks):
        for ax in range(nd):
            nb = tuple(j + (1 if d == ax else 0) for d, j in enumerate(b.index))
            if nb not in index_of:
                continue
            j = index_of[nb]
            a_data, b_data = load(b), load(blocks[j])
            la = _node(np.asarray(a_data[f"face_lab_hi{ax}"]), offsets[i])
            lb = _node(np.asarray(b_data[f"face_lab_lo{ax}"]), offsets[j])
            oa, ob = np.asarray(a_data[f"face_ori_hi{ax}"]), np.asarray(b_data[f"face_ori_lo{ax}"])
            pairs = face_equivalences(la, lb, oa, ob, symmetry=symmetry, threshold=threshold, connectivity=1)
            if len(pairs):
                edges.append(pairs)
            diff = la != lb
            if need_contacts and diff.any():
                p = unique_label_pairs(la[diff], lb[diff], counts=True)
                contact_parts.append(np.insert(p, 2, ax, axis=1))
    e = np.concatenate(edges) if edges else np.zeros((0, 2), np.int64)
    comp = resolve_equivalences(n_nodes, e)  # node -> component, 0 stays 0; ordered by smallest node
    n_comp = int(comp.max()) if len(comp) else 0
    cat = {k: np.concatenate(v) for k, v in stats.items()}  # per-block arrays keep their column shape when empty
    first = np.full(n_comp + 1, np.iinfo(np.int64).max, np.int64)
    if n_nodes:
        np.minimum.at(first, comp[1:], cat["first"])
    # Whole-image ids: components in raster order of their first voxel.
    order = np.argsort(first[1:], kind="stable") + 1
    rank = np.zeros(n_comp + 1, np.int64)
    rank[order] = np.arange(1, n_comp + 1)
    grain0 = rank[comp]  # node -> initial grain id (0 for node 0)
    size0 = np.bincount(grain0[1:], weights=cat["count"], minlength=n_comp + 1).astype(np.int64) if n_nodes else np.zeros(1, np.int64)
    if merge_threshold is not None:
        grain0, n_comp, size0 = _merge_regions(plan, load, offsets, grain0, n_comp, cat, symmetry, merge_threshold, reach)
    contacts = np.concatenate(contact_parts) if contact_parts else np.zeros((0, 4), np.int64)
    cg = np.stack([grain0[contacts[:, 0]], grain0[contacts[:, 1]], contacts[:, 2], contacts[:, 3]], 1)
    final_of_initial = _filter_small(n_comp, size0, cg, min_size, small)
    lut = final_of_initial[grain0].astype(np.uint32)  # node -> final id; lut[0] = 0
    n_grains = int(final_of_initial.max()) if len(final_of_initial) else 0
    refs_by_grain = _first_refs(lut[1:], cat["first"], np.concatenate(refs), n_grains) if refs and len(refs) == len(blocks) else None
    grains = (_grain_table(lut[1:], n_grains, cat, cg, final_of_initial, symmetry, plan.shape, pixel_size, refs=refs_by_grain)
              if table else {})
    return MergeResult(offsets, lut[1:], n_grains, grains, refs_by_grain)


def _first_refs(lut, first, node_refs, n_grains) -> np.ndarray:
    """Per final grain, the reference quaternion of its node with the smallest first voxel (raster order).

    Which node comes first in raster order does not depend on the tiling, so neither does the
    reference (NaN rows for grains without a node, which do not occur).
    """
    out = np.full((n_grains, 4), np.nan)
    keep = np.flatnonzero(lut > 0)
    if len(keep):
        order = keep[np.lexsort((first[keep], lut[keep]))]  # by grain, then by first voxel
        g = lut[order].astype(np.int64)
        lead = np.r_[True, g[1:] != g[:-1]]
        out[g[lead] - 1] = node_refs[order[lead]]
    return out


def _merge_regions(plan, load, offsets, grain0, n, cat, symmetry, threshold, reach):
    """Region merging on the global graph: node -> merged grain id, number of grains, sizes.

    Region pairs within ``reach`` px come from inside each block (saved ``near``) and from the
    ``reach`` outer planes of blocks facing each other along an axis. A block thinner than
    ``reach`` does not stop the search: the planes of the next blocks along the axis are paired too.
    """
    from micro_sym.grains.regions import merge_similar_regions, unique_pairs

    k = lattice(symmetry, ndim=2, where="region merging").k
    blocks = plan.blocks
    index_of = {b.index: i for i, b in enumerate(blocks)}
    parts = [np.zeros((0, 2), np.int64)]
    for i, b in enumerate(blocks):
        data = load(b)
        near = np.asarray(data["near"], np.int64).reshape(-1, 2)
        parts.append(grain0[_node(near, offsets[i])])
        for ax in range(len(plan.shape)):
            a_planes = grain0[_node(np.asarray(data[f"thick_hi{ax}"]), offsets[i])]
            gap, step = 0, 1
            while gap < reach:
                nb = tuple(j + (step if d == ax else 0) for d, j in enumerate(b.index))
                if nb not in index_of:
                    break
                j = index_of[nb]
                b_planes = grain0[_node(np.asarray(load(blocks[j])[f"thick_lo{ax}"]), offsets[j])]
                # Every pair of planes within reach at once; only pairs of different grains count, so
                # the others are left out here (unique_pairs would drop them).
                ia, ib = np.nonzero(len(a_planes) - np.arange(len(a_planes))[:, None] + gap
                                    + np.arange(len(b_planes))[None, :] <= reach)
                x, y = a_planes[ia].reshape(len(ia), -1), b_planes[ib].reshape(len(ib), -1)
                keep = (x != y) & (x > 0) & (y > 0)
                parts.append(np.stack([x[keep], y[keep]], 1))
                core = blocks[j].core[ax]
                gap += core.stop - core.start
                step += 1
    pairs = np.concatenate(parts)
    pairs = unique_pairs(pairs[:, 0], pairs[:, 1])
    sums = np.stack([np.bincount(grain0[1:], weights=cat["ori_sum"][:, c], minlength=n + 1) for c in (0, 1)], 1)
    mapping = merge_similar_regions(n, sums, pairs, threshold=threshold, k=k)
    merged = mapping[grain0]
    n_merged = int(mapping.max()) if len(mapping) else 0
    sizes = np.bincount(merged[1:], weights=cat["count"], minlength=n_merged + 1).astype(np.int64)
    return merged, n_merged, sizes


def _node(labels, offset):
    """Local labels -> global node ids (label 0 -> node 0)."""
    labels = np.asarray(labels, np.int64)
    return np.where(labels > 0, labels + offset, 0)


def _filter_small(n, sizes0, contacts, min_size, small):
    """Initial grain id -> final id; the rule of :func:`micro_sym.grains.filter_small_grains` on a graph.

    ``contacts`` rows are ``(grain_a, grain_b, axis, pairs)`` over face-neighbour pairs of different
    labels. Each round, every grain below ``min_size`` joins the neighbour it shares most pairs with
    (ties: larger neighbour, lower id); a merged set keeps its smallest id; small grains without any
    neighbour are dropped; at most 64 rounds, then leftovers are dropped; ids are made consecutive.
    """
    from micro_sym.grains.reconstruct import consecutive_ids, merge_into_best_neighbours

    cur = np.arange(n + 1, dtype=np.int64)  # initial id -> current id
    if min_size > 1 and n:
        a0, b0, w0 = contacts[:, 0], contacts[:, 1], contacts[:, 3]
        for _ in range(64):
            m = int(cur.max())
            sizes = np.bincount(cur, weights=sizes0, minlength=m + 1).astype(np.int64)
            is_small = (sizes < min_size) & (sizes > 0)
            is_small[0] = False
            if not is_small.any():
                break
            if small == "drop":
                cur[is_small[cur]] = 0
                break
            a, b = cur[a0], cur[b0]
            sel = (a != b) & (a > 0) & (b > 0) & (is_small[a] | is_small[b])
            src = np.concatenate([a[sel], b[sel]])
            dst = np.concatenate([b[sel], a[sel]])
            w = np.concatenate([w0[sel], w0[sel]])
            keep = is_small[src]
            src, dst, w = src[keep], dst[keep], w[keep]
            if len(src) == 0:
                cur[is_small[cur]] = 0
                break
            key = src * (m + 1) + dst
            uk, inv = np.unique(key, return_inverse=True)
            cnt = np.bincount(inv, weights=w).astype(np.int64)
            src, dst = np.divmod(uk, m + 1)
            cur = merge_into_best_neighbours(src, dst, cnt, sizes, m)[cur]
            no_nb = is_small.copy()
            no_nb[src] = False
            if no_nb.any():
                cur[no_nb[cur]] = 0
        else:
            sizes = np.bincount(cur, weights=sizes0, minlength=int(cur.max()) + 1)
            cur[(sizes < min_size)[cur] & (cur > 0)] = 0
    return consecutive_ids(cur)


def _grain_table(lut, n, cat, contacts, final_of_initial, symmetry, image_shape, pixel_size, *, refs=None,
                 aligned: bool = False) -> dict:
    """Per-grain columns (names as in :func:`micro_sym.grains.grain_table`) from additive block sums.

    ``refs``, ``aligned``: how the 3D quaternion sums combine (:func:`_mean_quaternions`).
    """
    from micro_sym.grains import orientation_kind

    nd = len(image_shape)
    ps = np.broadcast_to(np.asarray(pixel_size if pixel_size is not None else 1.0, np.float64), (nd,))
    keep = lut > 0
    g = lut[keep].astype(np.int64) - 1
    cnt = np.bincount(g, weights=cat["count"][keep], minlength=n) if n else np.zeros(0)
    m1 = np.stack([np.bincount(g, weights=cat["m1"][keep][:, d], minlength=n) for d in range(nd)]) / np.maximum(cnt, 1)
    m2 = np.stack([np.bincount(g, weights=cat["m2"][keep][:, k], minlength=n) for k in range(nd * nd)], 1) / np.maximum(cnt, 1)[:, None]
    cov = m2.reshape(n, nd, nd) - m1.T[:, :, None] * m1.T[:, None, :]
    cov *= ps[:, None] * ps[None, :]
    evals, evecs = np.linalg.eigh(cov) if n else (np.zeros((0, nd)), np.zeros((0, nd, nd)))
    evals = np.clip(evals, 0, None)
    # Exposed faces: pairs whose final labels differ, plus the image edge.
    fa, fb = final_of_initial[contacts[:, 0]], final_of_initial[contacts[:, 1]]
    face_area = np.array([float(np.prod([ps[k] for k in range(nd) if k != ax])) for ax in range(nd)])
    diff = fa != fb
    exposed = np.zeros(n + 1)
    w = contacts[diff, 3] * face_area[contacts[diff, 2]]
    exposed += np.bincount(fa[diff], weights=w, minlength=n + 1) + np.bincount(fb[diff], weights=w, minlength=n + 1)
    edge = np.stack([np.bincount(g, weights=cat["edge"][keep][:, d], minlength=n) for d in range(nd)], 1)
    exposed[1:] += edge @ face_area
    both = diff & (fa > 0) & (fb > 0)
    pk = np.unique(np.minimum(fa[both], fb[both]) * (n + 1) + np.maximum(fa[both], fb[both]))
    pa, pb = np.divmod(pk, n + 1)
    n_nb = (np.bincount(pa, minlength=n + 1) + np.bincount(pb, minlength=n + 1))[1:]
    size = cnt * float(np.prod(ps))
    t = {"grain": np.arange(1, n + 1), "n_points": cnt.astype(np.int64)}
    if nd == 2:
        t["area"], t["ecd"], t["perimeter"] = size, 2 * np.sqrt(size / np.pi), exposed[1:]
        t["centroid_y"], t["centroid_x"] = m1[0] * ps[0], m1[1] * ps[1]
        major, minor = 4 * np.sqrt(evals[:, 1]), 4 * np.sqrt(evals[:, 0])
        t["major_axis"], t["minor_axis"] = major, minor
        with np.errstate(divide="ignore", invalid="ignore"):
            t["aspect_ratio"] = np.where(minor > 0, major / np.where(minor > 0, minor, 1), np.nan)
        v = evecs[:, :, 1]
        t["ellipse_angle"] = np.mod(np.rad2deg(np.arctan2(-v[:, 0], v[:, 1])), 180.0)
    else:
        t["volume"], t["esd"], t["surface_area"] = size, np.cbrt(6 * size / np.pi), exposed[1:]
        t["centroid_z"], t["centroid_y"], t["centroid_x"] = (m1[k] * ps[k] for k in range(3))
        ax = 2 * np.sqrt(5 * evals[:, ::-1])
        t["axis_a"], t["axis_b"], t["axis_c"] = ax[:, 0], ax[:, 1], ax[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            t["aspect_ratio"] = np.where(ax[:, 2] > 0, ax[:, 0] / np.where(ax[:, 2] > 0, ax[:, 2], 1), np.nan)
    t["touches_border"] = (edge.sum(1) > 0).astype(np.int8)
    t["n_neighbours"] = n_nb
    width = np.shape(cat["ori_sum"])[1] if np.ndim(cat["ori_sum"]) == 2 else 4
    kind = orientation_kind((width, 1, 1) if symmetry == "cubic" else (1, 1), symmetry)
    ori = cat["ori_sum"][keep] if n else np.zeros((0, width if kind.channel_axis else 2))
    if kind.kind == "field":
        from micro_sym.grains.field import mean_orientations

        # per grain, the total of its blocks' field sums: the decode of it is the grain's mean orientation
        total = np.stack([np.bincount(g, weights=ori[:, c], minlength=n) for c in range(width)], 1).reshape(n, width)
        t.update({f"mean_q{c}": v for c, v in zip("wxyz", mean_orientations(total, kind.degrees).T)})
    elif kind.channel_axis:
        t.update({f"mean_q{c}": v for c, v in zip("wxyz", _mean_quaternions(g, ori, n, kind.symmetry, refs=refs,
                                                                              aligned=aligned).T)})
    else:
        c = np.bincount(g, weights=ori[:, 0], minlength=n)
        s = np.bincount(g, weights=ori[:, 1], minlength=n)
        t["mean_angle"] = np.mod(np.rad2deg(np.arctan2(s, c)) / kind.k, 360.0 / kind.k)
    return t


def _mean_quaternions(g, sums, n, symmetry, *, refs=None, aligned: bool = False) -> np.ndarray:
    """Mean orientation per grain from per-block quaternion sums (rows of ``sums``, grain ``g``).

    ``aligned``: every part was summed against the same reference per grain (the merge's ``refs``,
    the seeded rule's pass 3), so the parts simply add: the mean is the same for every tiling.
    Otherwise each part was aligned to its own block's reference; each part's mean is then brought
    to the symmetry equivalent nearest ``refs[g]`` (the grain's first voxel) or, without ``refs``,
    nearest the grain's first part, and the parts are added with their weights. That is exact only
    while a grain's orientations stay well inside one symmetry cell around every reference.
    """
    sums = np.asarray(sums, np.float64).reshape(-1, 4)
    if aligned:
        out = np.stack([np.bincount(g, weights=sums[:, c], minlength=n) for c in range(4)], 1).astype(np.float64)
        out = out.reshape(n, 4)
        tot = np.linalg.norm(out, axis=1, keepdims=True)
        out = np.divide(out, tot, out=np.full_like(out, np.nan), where=tot > 0)
        return np.where(out[:, :1] < 0, -out, out)
    norm = np.linalg.norm(sums, axis=1)
    q = np.divide(sums, norm[:, None], out=np.zeros_like(sums), where=norm[:, None] > 0)
    # Parts come in block order; the first part of each grain is its reference.
    _, first = np.unique(g, return_index=True)
    ref = np.zeros((n, 4))
    ref[g[first]] = q[first]
    if refs is not None:
        given = np.isfinite(refs).all(1)
        ref[given] = refs[given]
    ok = norm > 0
    aligned_q = np.zeros_like(q)
    if ok.any():
        aligned_q[ok] = _reduce(q[ok], ref[g[ok]], symmetry)
    out = np.stack([np.bincount(g, weights=aligned_q[:, c] * norm, minlength=n) for c in range(4)], 1).astype(np.float64)
    out = out.reshape(n, 4)
    tot = np.linalg.norm(out, axis=1, keepdims=True)
    out = np.divide(out, tot, out=np.full_like(out, np.nan), where=tot > 0)
    return np.where(out[:, :1] < 0, -out, out)


# ------------------------------------------------------------------------------ pass 3: flood (seeded rule)


def seed_parts(plan, region, block_lut) -> list:
    """``(slices, lut)`` for every block overlapping ``region``: where its local labels are and their final ids.

    ``block_lut(i)`` is the lookup table of block ``i`` (:meth:`MergeResult.block_lut`). Small: the
    parts travel with a pass-3 task, which reads the labels itself (:func:`assemble_seeds`).
    """
    parts = []
    for i, b in enumerate(plan.blocks):
        inter = tuple(slice(max(c.start, r.start), min(c.stop, r.stop)) for c, r in zip(b.core, region))
        if all(s.start < s.stop for s in inter):
            parts.append((inter, block_lut(i)))
    return parts


def assemble_seeds(region, parts, read_local) -> np.ndarray:
    """Final seed ids over ``region`` from the blocks' local labels (``read_local(slices)``) and luts."""
    from micro_sym.grains._kernels import lookup

    out = np.zeros(tuple(r.stop - r.start for r in region), np.uint32)
    for inter, lut in parts:
        out[inside(inter, region)] = lookup(np.asarray(lut), read_local(inter))
    return out


def flood_block(orientation, boundary, seeds, *, symmetry, steps: int, inner, origin, image_shape,
                boundary_threshold: float = 0.5, refs=None, neighbours: bool = False):
    """The seeded rule's flood for one block: final grain ids of its core plus their statistics.

    ``orientation``, ``boundary`` and ``seeds`` (final seed ids, :func:`assemble_seeds`) cover the
    block grown by ``steps + 1`` points (clipped to the image); ``inner`` is where the block lies in
    them. The flood is local within ``steps`` points (:func:`micro_sym.grains.seeded.flood`), so the
    core, and the plane beyond each of its high faces, equal the whole-image flood; that plane gives
    the contacts across those faces (each counted once, by the block below). ``refs`` (3D, optional):
    ``(ids, quaternions)``, sorted final ids and the reference each grain's quaternions are aligned
    to before summing (:attr:`MergeResult.refs`); without it, each grain's first voxel in the block.
    ``neighbours``: the maps cover the block grown by :func:`flood_margin` with ``neighbours=True``, so the
    flood is exact on the block grown by ``NEIGHBOUR_REACH + 1``, and the block's :func:`neighbour_pairs`
    come from it (no second read of the written grains).

    Returns
    -------
    labels : ndarray of uint32
        Final grain ids of the block.
    arrays : dict
        ``ids`` (the final id of each local statistics row), ``stat_*`` (as :class:`BlockLabels`,
        without ``first``) and ``contacts`` in final ids, for :func:`final_table`; with ``neighbours``
        also ``neighbour_pairs`` (:func:`neighbour_pairs`).
    """
    from micro_sym.grains.reconstruct import orientation_kind
    from micro_sym.grains.seeded import grow_seeds

    kind = orientation_kind(np.shape(orientation), symmetry)
    spatial = seeds.shape
    grown = grow_seeds(orientation, boundary, seeds, kind, boundary_threshold=boundary_threshold, steps=steps)
    labels, out = block_grain_arrays(grown, inner, orientation, kind, origin, image_shape, refs=refs)
    if neighbours:
        reach = _neighbour_reach(None)
        # The block grown by reach + 1 inside the flooded region (clipped where the image ends).
        near = tuple(slice(max(s.start - reach - 1, 0), min(s.stop + reach + 1, n)) for s, n in zip(inner, spatial))
        out["neighbour_pairs"] = _region_neighbour_pairs(grown[near], inside(inner, near), reach)
    return labels, out


def block_grain_arrays(grains, inner, orientation, kind, origin, image_shape, refs=None):
    """A block's final grains and their statistics for :func:`final_table`: ``(labels, arrays)`` as
    :func:`flood_block` returns them (without ``neighbour_pairs``).

    ``grains`` holds final ids over a region that includes the block (at ``inner``) and, where there is
    one, the plane beyond each of its high faces (for the contacts across them); ``orientation`` covers
    the same region; ``refs`` as :func:`flood_block`'s."""
    from micro_sym.grains._kernels import compact_ids

    spatial = np.shape(grains)
    labels = np.asarray(grains[inner]).astype(np.uint32)
    # Per axis, the block plus, where there is one, the next plane along that axis.
    contacts = _contacts([grains[tuple(slice(s.start, min(s.stop + 1, n)) if d == ax else s
                                       for d, (s, n) in enumerate(zip(inner, spatial)))] for ax in range(len(spatial))])
    # Local rows 1..n for the final ids present (a lookup table, not a sort of the block).
    ids, compact = compact_ids(labels)
    ori = orientation[(slice(None),) + inner] if kind.channel_axis else orientation[inner]
    ref = None
    if refs is not None and kind.kind == "quat":
        rid, rq = np.asarray(refs[0], np.int64), np.asarray(refs[1], np.float64).reshape(-1, 4)
        pos = np.minimum(np.searchsorted(rid, ids), max(len(rid) - 1, 0))
        ref = np.full((len(ids), 4), np.nan)  # NaN: no reference given (falls back to the block's own)
        hit = (rid[pos] == ids) if len(rid) else np.zeros(len(ids), bool)
        ref[hit] = rq[pos[hit]]
    stats = _block_stats(compact, len(ids), ori, kind, origin, image_shape, ref=ref)
    out = {f"stat_{k}": v for k, v in stats.items() if k != "first"}
    out["ids"] = ids.astype(np.int64)
    out["contacts"] = contacts
    return labels, out


def flood_margin(steps: int, neighbours: bool = False) -> int:
    """Points beyond a block that the seeded flood reads: ``steps + 1`` for the block and the plane beyond
    it; with ``neighbours``, ``NEIGHBOUR_REACH`` more, so the flood is exact as far as
    :func:`neighbour_pairs` looks (it loses a point of exactness per step from the region's edge)."""
    return int(steps) + 1 + (_neighbour_reach(None) if neighbours else 0)


def flood_region(block, parts, *, orientation, boundary, local_labels, steps: int, symmetry, image_shape,
                 boundary_threshold: float = 0.5, refs=None, neighbours: bool = False):
    """Pass 3 of the seeded rule for one block, from wherever the maps live (numpy or Zarr arrays).

    Reads the block grown by :func:`flood_margin` points from ``orientation`` (``(y, x)`` angles or
    ``(4, z, y, x)`` quaternions), ``boundary`` and the pass-1 ``local_labels``, turns the local labels
    into final seed ids with ``parts`` (:func:`seed_parts` of that region) and floods them
    (:func:`flood_block`, which takes ``refs`` and ``neighbours``). Returns ``(labels, arrays)`` as :func:`flood_block`.
    """

    region = grow(block.core, flood_margin(steps, neighbours), image_shape)
    ori = orientation[(slice(None), *region)] if orientation.ndim == len(region) + 1 else orientation[region]
    seeds = assemble_seeds(region, parts, lambda sl: local_labels[sl])
    return flood_block(np.asarray(ori), np.asarray(boundary[region]), seeds, symmetry=symmetry, steps=steps,
                       inner=inside(block.core, region), origin=tuple(s.start for s in block.core),
                       image_shape=image_shape, boundary_threshold=boundary_threshold, refs=refs,
                       neighbours=neighbours)


def grain_refs(parts: list, refs):
    """The grain references a pass-3 task needs: those of the final ids in its ``parts``' lookup tables.

    Only these travel with the task (a few rows), not the table of every grain of the volume.
    """
    if refs is None:
        return None
    ids = np.unique(np.concatenate([np.asarray(lut) for _, lut in parts])) if parts else np.zeros(0, np.int64)
    ids = ids[ids > 0].astype(np.int64)
    return ids, np.ascontiguousarray(refs[ids - 1])


def final_table(parts, n_grains: int, *, symmetry, image_shape, pixel_size=None, aligned: bool = False) -> dict:
    """The per-grain table from every block's :func:`flood_block` arrays (in block order).

    ``aligned``: the blocks were flooded with the merge's ``refs``, so 3D quaternion sums add as they
    are (tile-invariant means, :func:`_mean_quaternions`).
    """
    keys = ("count", "m1", "m2", "edge", "ori_sum")
    cat = {k: np.concatenate([np.asarray(p[f"stat_{k}"]) for p in parts]) for k in keys}
    ids = np.concatenate([np.asarray(p["ids"]) for p in parts]).astype(np.uint32)
    contacts = np.concatenate([np.asarray(p["contacts"], np.int64).reshape(-1, 4) for p in parts])
    return _grain_table(ids, n_grains, cat, contacts, np.arange(n_grains + 1), symmetry, image_shape, pixel_size,
                        aligned=aligned)


def neighbour_pairs(grains, core, image_shape, reach: int | None = None) -> np.ndarray:
    """Grain pairs ``(a, b)``, ``a < b``, that are neighbours with a contact starting in block ``core``.

    Neighbours as :func:`micro_sym.grains.grain_table` counts them: face contacts once every grain has
    grown ``reach`` steps into the unassigned band (:func:`micro_sym.grains.stats.grow_into_gaps`).
    ``grains`` is the whole final label map (numpy or Zarr array); only ``core`` grown by ``reach + 1``
    is read, where the grown labels of the core and of the plane beyond each high face equal the whole
    map's. A contact counts for the block holding its lower point, so every contact of the map is seen
    by exactly one block. Combine the blocks' pairs with :func:`neighbour_counts`.
    """
    reach = _neighbour_reach(reach)
    region = grow(core, reach + 1, image_shape)
    return _region_neighbour_pairs(np.asarray(grains[region]), inside(core, region), reach)


def _neighbour_reach(reach: int | None) -> int:
    from micro_sym.grains.stats import NEIGHBOUR_REACH

    return NEIGHBOUR_REACH if reach is None else int(reach)


def _region_neighbour_pairs(grains, inner, reach: int) -> np.ndarray:
    """:func:`neighbour_pairs` of the block at ``inner`` in ``grains``, the final labels of the block
    grown by ``reach + 1`` (clipped to the image)."""
    from micro_sym.grains._kernels import grow_into_gaps, touching_pairs

    lab = grow_into_gaps(grains, reach)
    # Per axis: lower points in the core, upper points one step further (the next block's first plane included).
    lows = [tuple(slice(s.start, min(s.stop, n - 1)) if d == ax else s for d, (s, n) in enumerate(zip(inner, lab.shape)))
            for ax in range(lab.ndim)]
    return np.stack(np.divmod(touching_pairs(lab, lows), 1 << 32), 1)


def neighbour_counts(pairs, n_grains: int) -> np.ndarray:
    """``n_neighbours`` of grains ``1..n_grains`` from the blocks' :func:`neighbour_pairs`."""
    pairs = [np.asarray(p, np.int64).reshape(-1, 2) for p in pairs]
    keys = np.unique(np.concatenate([p[:, 0] * (1 << 32) + p[:, 1] for p in pairs])) if pairs else np.zeros(0, np.int64)
    a, b = np.divmod(keys, 1 << 32)
    return (np.bincount(a, minlength=n_grains + 1) + np.bincount(b, minlength=n_grains + 1))[1:n_grains + 1]

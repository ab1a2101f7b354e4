"""3D grains refined by the volume's own lattice: split where a grain holds two, joined where neighbours
measure alike (docs/design.md §3.6; ``segment --split-grains`` on volumes).

A 3D network's harmonic field is often wrong by degrees, sometimes by tens of degrees, on grains of a
volume unlike its training volumes, so its seeded flood joins grains across boundaries it did not
predict and breaks others into parts. The orientation measured from the volume inside a grain
(:mod:`micro_sym.classical.grain_orientation3d`) is a fraction of a degree off where the lattice shows.
The refinement trusts the field only to propose where a grain might divide and lets the measured
lattice decide:

* **split**, per grain on its bounding box: 2-means of its voxels' unit harmonic fields (Euclidean;
  first centre the mean, second the field at the 90th percentile of the distances from it, so that one
  stray voxel cannot take a centre). Where the two means decode ``sep`` degrees apart or more and the
  smaller group holds :data:`MIN_FRACTION` of the grain, that group's indicator is smoothed within the
  grain (Gaussian, ``smooth`` lattice periods) and each connected piece large enough to be measured
  (:data:`~micro_sym.classical.grain_orientation3d.MIN_CELLS` first-ring periods cubed) becomes a grain
  of its own where its measured orientation and the rest's differ by ``confirm`` degrees or more. The
  new pieces are split again the same way, ``rounds`` times in all, each on its own bounding box.
* **join**: neighbouring grains (:func:`micro_sym.grains.blockwise.neighbour_pairs`, across the
  unassigned band) whose measured orientations differ by less than ``join`` degrees become one grain.

Every decision reads one grain's bounding box (the split) or the grain table (the join), so the result
does not depend on how a volume is cut into blocks. The rule was chosen on new draws of the held-out
imaging setting and judged once on the two held-out sets and the particles
(``bench/studies/grain_refine3d.py``; docs/results.md, "3D grains split and joined by the measured
lattice").
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: The rule (``bench/studies/grain_refine3d.py``): field groups ``sep`` degrees apart, smoothed over
#: ``smooth`` lattice periods, confirmed where the measured orientations differ by ``confirm`` degrees,
#: ``rounds`` of splitting; neighbours measured within ``join`` degrees joined.
REFINE_RULE = {"sep": 10.0, "smooth": 1.0, "confirm": 10.0, "join": 3.0, "rounds": 2}
#: The smaller field group must hold this share of the grain.
MIN_FRACTION = 0.15
#: Grains with a longer bounding-box side (voxels) are not split: the box's field (9-22 values a voxel)
#: and the 2-means' copies of it stay within a few hundred MB per worker.
MAX_SIDE = 128


def two_means(fields: np.ndarray, iters: int = 10) -> np.ndarray:
    """0/1 labels of 2-means of ``fields`` ``(n, C)`` (module docstring). Distances to the two centres
    come from one product with them (``|c|² - 2 f·c``), so memory stays a few values per voxel."""
    fields = np.asarray(fields, np.float64)
    c0 = fields.mean(0)
    d = np.einsum("ij,ij->i", fields - c0, fields - c0)
    centres = np.stack([c0, fields[np.argsort(d, kind="stable")[int(0.9 * (len(d) - 1))]]])
    lab = np.zeros(len(fields), np.int64)
    for _ in range(iters):
        lab = np.argmin((centres ** 2).sum(1) - 2.0 * fields @ centres.T, axis=1)
        centres = np.stack([fields[lab == j].mean(0) if (lab == j).any() else centres[j] for j in (0, 1)])
    return lab


def grain_pieces(mine, fields, volume, *, ring: float, degrees, sep: float, smooth: float, confirm: float,
                 rounds: int = 1, **_) -> np.ndarray | None:
    """The pieces split off one grain, on its bounding box: ``0`` where the grain stays (and outside it),
    ``1..n`` for its new grains; None where nothing is split off.

    ``mine``: the grain's voxels in the box; ``fields``: the unit harmonic field there ``(C, *box)``;
    ``volume``: the input there; ``ring``: the first-ring frequency (cycles/voxel); ``degrees``: the
    field's harmonic degrees. Pieces found in one round are split again in the next (``rounds``), each
    on its own bounding box inside this one."""
    if max(mine.shape) > MAX_SIDE:
        return None
    out = np.zeros(mine.shape, np.uint16)
    todo = [(tuple(slice(0, n) for n in mine.shape), mine)]
    for _ in range(int(rounds)):
        found = []
        for box, grain in todo:
            pieces = _split_once(grain, fields[(slice(None), *box)], volume[box], ring=ring, degrees=degrees,
                                 sep=sep, smooth=smooth, confirm=confirm)
            if pieces is None:
                continue
            for p in range(1, int(pieces.max()) + 1):
                n = int(out.max()) + 1
                region = out[box]
                region[pieces == p] = n
                (sub,) = ndimage.find_objects((out == n).astype(np.int8))
                found.append((sub, out[sub] == n))
        todo = found
        if not todo:
            break
    return out if out.any() else None


def _split_once(mine, fields, volume, *, ring, degrees, sep, smooth, confirm) -> np.ndarray | None:
    """One round of :func:`grain_pieces` on one grain's box: its new pieces ``1..n``, or None."""
    from micro_sym.classical.grain_orientation3d import MIN_CELLS, grain_orientations
    from micro_sym.grains.field import mean_orientations
    from micro_sym.grains.split import numbered_pieces
    from micro_sym.orientation import misorientation_cubic

    period = 1.0 / float(ring)
    min_piece = MIN_CELLS * period ** 3
    f = np.asarray(fields)[:, mine].T
    ok = np.isfinite(f).all(1)
    if ok.sum() < 2 * min_piece:
        return None
    lab = two_means(f[ok])
    sizes = np.bincount(lab, minlength=2)
    if sizes.min() < MIN_FRACTION * ok.sum():
        return None
    f = f[ok].astype(np.float64)
    means = mean_orientations(np.stack([f[lab == j].sum(0) for j in (0, 1)]), degrees)
    if not misorientation_cubic(means[0], means[1]) >= sep:
        return None
    group = np.zeros(mine.shape)
    group[tuple(np.argwhere(mine)[ok][lab == int(np.argmin(sizes))].T)] = 1.0
    sigma = smooth * period
    group = ndimage.gaussian_filter(group, sigma) / np.maximum(ndimage.gaussian_filter(mine * 1.0, sigma), 1e-9)
    pieces, _ = ndimage.label((group > 0.5) & mine)
    keep = [p for p, size in enumerate(np.bincount(pieces.ravel())[1:], start=1) if size >= min_piece]
    labels = np.where(mine, 1, 0)
    for j, p in enumerate(keep):
        labels[pieces == p] = 2 + j
    if not keep or (labels == 1).sum() < min_piece:
        return None
    measured = grain_orientations(np.asarray(volume, np.float32), labels, ring_frequency=ring,
                                  ids=np.arange(1, 2 + len(keep)))["quaternions"]
    return numbered_pieces(pieces, [p for j, p in enumerate(keep) if misorientation_cubic(measured[0], measured[1 + j]) >= confirm])


def join_lut(pairs: np.ndarray, quaternions: np.ndarray, join: float) -> np.ndarray:
    """Consecutive new ids for grains ``0..n`` (``quaternions``: ``(n + 1, 4)`` measured orientations,
    row 0 and unmeasured grains NaN) with each pair of neighbours ``pairs`` ``(m, 2)`` measured less than
    ``join`` degrees apart in one grain; ids keep the order of each joined grain's first old id."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    from micro_sym.orientation import misorientation_cubic

    n = len(quaternions)
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    mis = misorientation_cubic(quaternions[pairs[:, 0]], quaternions[pairs[:, 1]]) if len(pairs) else np.zeros(0)
    close = pairs[np.nan_to_num(mis, nan=180.0) < join] if join else pairs[:0]
    graph = coo_matrix((np.ones(len(close)), (close[:, 0], close[:, 1])), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    # Component labels follow the first node of each component, so ids keep the grains' order.
    _, first = np.unique(comp[1:], return_index=True)
    order = np.argsort(np.argsort(first))
    lut = np.zeros(n, np.uint32)
    lut[1:] = order[np.unique(comp[1:], return_inverse=True)[1]] + 1
    return lut


def split_volume(labels, fields, volume, *, ring: float, degrees, rule: dict = REFINE_RULE):
    """:func:`grain_pieces` of every grain of a whole label map: ``(boxes, pieces, parents)``, one entry
    per grain that is split (in grain order)."""
    labels = np.asarray(labels)
    boxes, pieces, parents = [], [], []
    for g, box in enumerate(ndimage.find_objects(labels), 1):
        if box is None:
            continue
        found = grain_pieces(labels[box] == g, fields[(slice(None), *box)], volume[box], ring=ring, degrees=degrees,
                             **rule)
        if found is not None:
            boxes.append(box)
            pieces.append(found)
            parents.append(g)
    return boxes, pieces, parents


def refine_volume(labels, fields, volume, *, ring: float, degrees, rule: dict = REFINE_RULE) -> np.ndarray:
    """A whole label map split and joined (module docstring), numbered as the block engine numbers it:
    the pieces after the grains, then consecutive ids after the join."""
    from micro_sym.classical.grain_orientation3d import grain_orientations
    from micro_sym.grains.blockwise import neighbour_pairs
    from micro_sym.grains.split import apply_pieces

    labels = np.asarray(labels)
    n = int(labels.max(initial=0))
    boxes, pieces, _ = split_volume(labels, fields, volume, ring=ring, degrees=degrees, rule=rule)
    counts = [int(p.max()) for p in pieces]
    firsts = n + 1 + np.cumsum([0] + counts)[:-1]
    split = apply_pieces(labels, (0,) * labels.ndim, np.arange(n + 1, dtype=np.uint32), boxes, pieces, firsts)
    if not rule.get("join"):
        return split
    total = n + sum(counts)
    measured = grain_orientations(np.asarray(volume, np.float32), split, ring_frequency=ring, ids=np.arange(1, total + 1))
    quaternions = np.vstack([np.full((1, 4), np.nan), measured["quaternions"]])
    pairs = neighbour_pairs(split, tuple(slice(0, s) for s in split.shape), split.shape)
    return join_lut(pairs, quaternions, rule["join"])[split]

"""The block tasks of ``segment --split-grains`` on a volume: its grains split and joined by the volume's
measured lattice (:mod:`micro_sym.grains.split3d`); the engine's ``_refine_grains`` drives them, between
the seeded flood and the grain table.

The flood writes its grains into the run's scratch (``flooded``). Passes over it, each exact for any
tiling:

1. each grain's extent and its pieces, decided from its own bounding box (the scratch grains, the
   harmonic field scratch and the input there, read for a batch of grains at a time) by the block
   holding the box's first voxel; kept in the run state;
2. the split map written to the output (:func:`write_task`);
3. each block's grain statistics and neighbour pairs in the split map (:func:`stats_task`), then each
   grain's orientation measured (:func:`micro_sym.inference.grain_orientations.measured_orientations`)
   and the join decided (:func:`micro_sym.grains.split3d.join_lut`);
4. the output written again from the scratch, split and joined (:func:`write_task`); a joined grain
   measured again, every other grain keeping its measurement for the table.

No pass changes the scratch, so a resumed run does them again and writes the same bytes.
"""

from __future__ import annotations

import numpy as np

from micro_sym.grains.split import apply_pieces
from micro_sym.grains.split3d import MAX_SIDE, grain_pieces
from micro_sym.inference.input_reads import read_region
from micro_sym.inference.writer import open_array, os_error


def pieces_task(job: dict, extents: dict) -> list:
    """:func:`~micro_sym.grains.split3d.grain_pieces` of the grains ``extents``: ``[(grain, lo, pieces), ...]``
    for those split. Grains are read in batches (:func:`read_batches`): the union of a batch's boxes at
    most as large as the largest box a grain may have, so memory stays that of one grain while
    neighbouring grains share their reads (one read of the input decodes each of its chunks once)."""
    setting = job["refine"]
    out = []
    small = np.max(np.asarray(extents["hi"]) - np.asarray(extents["lo"]), axis=1, initial=0) <= MAX_SIDE
    ids, lo, hi = (np.asarray(extents[key])[small] for key in ("ids", "lo", "hi"))  # the others: not split, not read
    for batch in read_batches(lo, hi, MAX_SIDE ** len(job["shape"])):
        start, stop = lo[batch].min(axis=0), hi[batch].max(axis=0)
        region = tuple(slice(int(a), int(b)) for a, b in zip(start, stop))
        flooded = np.asarray(open_array(job["flooded"])[region])
        fields = np.asarray(open_array(job["field"])[(slice(None), *region)])
        volume = read_region(job, region)
        for i in batch:
            box = tuple(slice(int(a - s), int(b - s)) for a, b, s in zip(lo[i], hi[i], start))
            found = grain_pieces(flooded[box] == ids[i], fields[(slice(None), *box)], volume[box],
                                 ring=setting["ring_frequency"], degrees=tuple(setting["degrees"]), **setting["rule"])
            if found is not None:
                out.append((int(ids[i]), np.asarray(lo[i], np.int64), found))
    return out


def read_batches(lo, hi, budget: int) -> list:
    """Consecutive runs of the boxes ``[lo, hi)`` (one row each) whose union's bounding box holds at most
    ``budget`` points and at most twice the points of the boxes themselves (far-apart boxes are not read
    with the space between them); a box larger than ``budget`` is a batch of its own. Indices, in order."""
    batches, start, stop, points = [], None, None, 0
    for i, (a, b) in enumerate(zip(np.asarray(lo), np.asarray(hi))):
        size = int(np.prod(b - a))
        if start is not None:
            a2, b2 = np.minimum(start, a), np.maximum(stop, b)
            union = int(np.prod(b2 - a2))
            if union <= budget and union <= 2 * (points + size):
                batches[-1].append(i)
                start, stop, points = a2, b2, points + size
                continue
        batches.append([i])
        start, stop, points = a, b, size
    return batches


def write_task(job: dict, core, lut: np.ndarray, pieces: list) -> None:
    """One block of the output: the scratch grains with ``pieces`` (``(box, piece labels, first id)`` of
    the split grains whose box meets the block) written as new grains, then renumbered by ``lut``."""
    start = [c.start for c in core]
    grains = apply_pieces(open_array(job["flooded"])[core], start, np.arange(len(lut), dtype=np.uint32),
                          [p[0] for p in pieces], [p[1] for p in pieces], [p[2] for p in pieces])
    try:
        open_array(job["zarr"], "grains")[core] = lut[grains]
    except OSError as err:
        raise os_error(job["zarr"], err, "write a block of split grains") from None


def stats_task(job: dict, block) -> dict:
    """The block's grain statistics in the output's grains, as the flood returns them
    (:func:`micro_sym.grains.blockwise.block_grain_arrays`), and its neighbour pairs."""
    from micro_sym.grains.blockwise import block_grain_arrays, neighbour_pairs
    from micro_sym.grains.reconstruct import orientation_kind

    grains_zarr = open_array(job["zarr"], "grains")
    region = tuple(slice(c.start, min(c.stop + 1, n)) for c, n in zip(block.core, job["shape"]))
    grains = np.asarray(grains_zarr[region])
    fields = np.asarray(open_array(job["field"])[(slice(None), *region)])
    inner = tuple(slice(0, c.stop - c.start) for c in block.core)
    _, arrays = block_grain_arrays(grains, inner, fields, orientation_kind(fields.shape, job["symmetry"]),
                                   tuple(c.start for c in block.core), job["shape"])
    arrays["neighbour_pairs"] = neighbour_pairs(grains_zarr, block.core, job["shape"])
    return arrays

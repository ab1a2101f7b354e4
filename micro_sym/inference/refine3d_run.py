"""The block tasks of ``segment --split-grains`` on a volume: its grains split and joined by the volume's
measured lattice (:mod:`micro_sym.grains.split3d`); the engine's ``_refine_grains`` drives them, between
the seeded flood and the grain table.

The flood writes its grains into the run's scratch (``flooded``). Passes over it, each exact for any
tiling:

1. each grain's extent and its pieces, decided from its own bounding box (the scratch grains, the
   harmonic field scratch and the input read there) by the block holding the box's first voxel; kept in
   the run state;
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
    for those split. Each grain's box is read on its own (a grain's box, not the region of all of them,
    bounds the memory)."""
    setting = job["refine"]
    out = []
    for g, lo, hi in zip(extents["ids"], extents["lo"], extents["hi"]):
        if np.max(np.asarray(hi) - np.asarray(lo)) > MAX_SIDE:  # not split: not read either
            continue
        box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
        mine = np.asarray(open_array(job["flooded"])[box]) == g
        fields = np.asarray(open_array(job["field"])[(slice(None), *box)])
        found = grain_pieces(mine, fields, read_region(job, box), ring=setting["ring_frequency"],
                             degrees=tuple(setting["degrees"]), **setting["rule"])
        if found is not None:
            out.append((int(g), np.asarray(lo, np.int64), found))
    return out


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

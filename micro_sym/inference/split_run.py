"""The block tasks of ``segment --split-grains``: a 2D input's grains, each grain that holds two lattice
orientations split (:mod:`micro_sym.grains.split`); the engine's ``_split_input`` drives them.

The input is first segmented as without the option, into the output's run state
(``OUT/.NAME.run/unsplit/``, resumable like any run: a fused input's two runs inside it). That map is
then read, never changed, by passes over its blocks, each exact for any tiling and repeatable (a
resumed run does them again and writes the same bytes):

1. the extent of every grain (:func:`~micro_sym.classical.grain_lattice.grain_extents`);
2. each grain's pieces, decided from its own bounding box (the grains whose box starts in a block, with
   one read of the region holding their boxes); kept in the run state;
3. the output: the map's grains renumbered (each phase's ids stay contiguous) with the pieces written
   as new grains, orientation and boundary as they were;
4. each block's grain statistics, the grain table (:func:`micro_sym.inference.fusion.phase_table`),
   and the lattice of the split grains and their pieces measured whole as the run measured it (the
   other grains keep the run's lattice sums).
"""

from __future__ import annotations

import numpy as np

from micro_sym.grains.split import apply_pieces, grain_pieces
from micro_sym.inference.input_reads import read_region
from micro_sym.inference.writer import open_array, os_error

SOURCE = "unsplit"


def split_phases(attrs: dict) -> list[dict]:
    """The phases of a written map's grains: its recorded ``phases`` (a fused map's), else its one
    lattice with all its grains."""
    if attrs.get("phases"):
        return [dict(p) for p in attrs["phases"]]
    return [{"name": attrs["symmetry"], "symmetry": attrs["symmetry"], "grains": [1, int(attrs["n_grains"])]}]


def lattice_settings(method: dict) -> list[dict | None]:
    """Each phase's lattice measurement of a run (its ``grain_lattice`` record; a fused run: each network's)."""
    if method.get("name") == "fused":
        return [run["method"].get("grain_lattice") for run in method["runs"]]
    return [method.get("grain_lattice")]


def pieces_task(job: dict, extents: dict) -> list:
    """:func:`~micro_sym.grains.split.grain_pieces` of the grains ``extents``: ``[(grain, lo, pieces), ...]``
    for those split. The region holding their bounding boxes is read once."""
    region = tuple(slice(int(extents["lo"][:, a].min()), int(extents["hi"][:, a].max())) for a in range(2))
    grains = np.asarray(open_array(job["source"], "grains")[region])
    angles = np.asarray(open_array(job["source"], "orientation")[region])
    image = read_region(job, region)
    out = []
    for g, lo, hi in zip(extents["ids"], extents["lo"], extents["hi"]):
        box = tuple(slice(int(a) - r.start, int(b) - r.start) for a, b, r in zip(lo, hi, region))
        phase = job["phases"][_phase_index(job["phases"], int(g))]
        found = grain_pieces(grains[box] == g, angles[box], image[box], k=phase["k"], lattice=phase["symmetry"],
                             period=job["period"], **job["rule"])
        if found is not None:
            out.append((int(g), np.asarray(lo, np.int64), found))
    return out


def write_task(job: dict, core, lut: np.ndarray, pieces: list) -> None:
    """One block of the output: the map's grains renumbered by ``lut`` and ``pieces`` (``(box, piece
    labels, first id)`` of the split grains whose box meets the block) written; orientation and boundary
    as the map's."""
    grains = apply_pieces(open_array(job["source"], "grains")[core], [c.start for c in core], lut,
                          [p[0] for p in pieces], [p[1] for p in pieces], [p[2] for p in pieces])
    try:
        open_array(job["zarr"], "grains")[core] = grains
        for name in ("orientation", "boundary"):
            open_array(job["zarr"], name)[core] = open_array(job["source"], name)[core]
    except OSError as err:
        raise os_error(job["zarr"], err, "write a block of split grains") from None


def _phase_index(phases, g: int) -> int:
    return next(i for i, p in enumerate(phases) if p["grains"][0] <= g <= p["grains"][1])

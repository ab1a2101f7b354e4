"""One grain map from two networks' runs on an image that measures as one set of fringes (issue 26).

On such an image ``--method auto`` runs both 2D networks (:mod:`.engine`): fringes-2d, whose k = 2
field keeps apart grains whose fringes cross at right angles but cannot map a grain that shows a
square lattice (it leaves it unassigned), and robust-2d, which maps those. The fused map holds
fringes-2d's grains as they are, plus each robust-2d grain of which more than half lies where
fringes-2d assigned no grain; such a grain gets only those free pixels. The rule was judged on
held-out images before the product used it (docs/results.md, "Both networks' grains in one map").

The map then holds two phases (docs/design.md §5.1): phase 1, fringes (one plane normal per grain,
angles modulo 180°), and phase 2, a square lattice (modulo 90°). Each pixel's orientation is its grain's
network's, in its phase's convention; the grain table's ``phase`` column says which, and its mean and
measured angles are each grain's phase's.

Three passes over the output's blocks, each exact for any tiling and idempotent (a resumed run
repeats them and writes the same bytes): :func:`count_task` (how much of each robust-2d grain is
free: integer counts, summed), :func:`write_task` (the fused maps) and :func:`stats_task` (each
block's additive grain statistics and neighbour pairs, for :func:`fused_table`). The napari widget
fuses whole in-memory maps with the same functions, the image as one block.
"""

from __future__ import annotations

import numpy as np

from micro_sym.grains.blockwise import _block_stats, _contacts, _region_neighbour_pairs, grow, inside
from micro_sym.grains.stats import NEIGHBOUR_REACH
from micro_sym.inference.method_choice import AUTO_FRINGES_MODEL, AUTO_MODEL
from micro_sym.inference.writer import open_array, os_error

#: The two phases of a fused map, in phase-id order (1, 2): the name and the angle symmetry of each.
PHASES = ({"name": "fringes", "symmetry": "fringes"}, {"name": "square", "symmetry": "square"})
#: The network that maps each phase.
PHASE_NETWORKS = (AUTO_FRINGES_MODEL, AUTO_MODEL)


def grain_phases(n_fringes: int, n_grains: int) -> np.ndarray:
    """The phase id of grains ``1..n_grains``: 1 for fringes-2d's ``1..n_fringes``, 2 for the added ones."""
    return np.where(np.arange(1, n_grains + 1) <= n_fringes, 1, 2)


def phase_records(n_fringes: int, n_grains: int) -> list[dict]:
    """:data:`PHASES` with the ids of each phase's grains, ``grains = [first, last]`` (for the output's
    attributes: a reader colours each phase's angles in its own period without the table)."""
    return [{**PHASES[0], "grains": [1, n_fringes]}, {**PHASES[1], "grains": [n_fringes + 1, n_grains]}]


def free_counts(fringes: np.ndarray, square: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ids, free, total)`` of the robust-2d grains ``square`` in a block: their pixels where fringes-2d
    has no grain, and all their pixels."""
    square = np.asarray(square).astype(np.int64)
    total = np.bincount(square.ravel())
    free = np.bincount(square[np.asarray(fringes) == 0], minlength=total.size)
    ids = np.flatnonzero(total)
    ids = ids[ids > 0]
    return ids, free[ids], total[ids]


def added_grains(counts, n_fringes: int, n_square: int) -> np.ndarray:
    """Lookup table robust-2d grain -> fused id (0: not added) from every block's :func:`free_counts`.

    A grain is added where more than half of its pixels are free; added grains follow fringes-2d's
    ``1..n_fringes`` in robust-2d's order."""
    free = np.zeros(n_square + 1, np.int64)
    total = np.zeros(n_square + 1, np.int64)
    for ids, f, t in counts:
        np.add.at(free, ids, f)
        np.add.at(total, ids, t)
    add = np.flatnonzero(2 * free > total)
    add = add[add > 0]
    lut = np.zeros(n_square + 1, np.uint32)
    lut[add] = n_fringes + 1 + np.arange(add.size)
    return lut


def fused_maps(fringes: dict, square: dict, lut: np.ndarray) -> dict:
    """The fused ``grains``, ``orientation`` and ``boundary`` of a block from each network's (dicts of
    arrays): fringes-2d's, and robust-2d's on the free pixels of the grains it adds (``lut``)."""
    added = lut[np.asarray(square["grains"])]
    where = (np.asarray(fringes["grains"]) == 0) & (added > 0)
    maps = {"grains": np.where(where, added, fringes["grains"]).astype(np.uint32)}
    for name in ("orientation", "boundary"):
        maps[name] = np.where(where, square[name], fringes[name])
    return maps


def grain_stats(grains: np.ndarray, orientation: np.ndarray, inner: tuple, origin: tuple, image_shape,
                phases=PHASES) -> dict:
    """A block's additive statistics of the grains of a written map (as :func:`micro_sym.grains.blockwise.flood_block`
    returns them, the orientation sums at each of ``phases``' orders: a fused map's k = 2 and k = 4) and
    its neighbour pairs.

    ``grains``: the grains of the block grown by ``NEIGHBOUR_REACH + 1`` (clipped to the image),
    ``inner`` where the block lies in them, ``orientation`` the block's, ``origin`` its first point."""
    from micro_sym.grains._kernels import compact_ids
    from micro_sym.grains.reconstruct import orientation_kind

    labels = grains[inner]
    # Per axis, the block plus the next plane along it (each contact counted once, by the block below).
    contacts = _contacts([grains[tuple(slice(s.start, min(s.stop + 1, n)) if d == ax else s
                                       for d, (s, n) in enumerate(zip(inner, grains.shape)))] for ax in range(2)])
    ids, compact = compact_ids(labels)
    out = {"ids": ids.astype(np.int64), "contacts": contacts,
           "neighbour_pairs": _region_neighbour_pairs(grains, inner, NEIGHBOUR_REACH)}
    for phase in phases:
        kind = orientation_kind((1, 1), phase["symmetry"])
        stats = _block_stats(compact, len(ids), orientation, kind, origin, image_shape)
        out |= {f"stat_{key}": value for key, value in stats.items() if key not in ("first", "ori_sum")}
        out[f"ori_sum_{phase['name']}"] = stats["ori_sum"]
    return out


# ------------------------------------------------------------------ block tasks (the engine's outputs)


def count_task(job: dict, core) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`free_counts` of one block of the two runs' written grains."""
    return free_counts(open_array(job["fringes"], "grains")[core], open_array(job["square"], "grains")[core])


def write_task(job: dict, core, lut: np.ndarray) -> None:
    """:func:`fused_maps` of one block, written to the output."""
    maps = fused_maps(*({name: np.asarray(open_array(job[run], name)[core]) for name in ("grains", "orientation", "boundary")}
                        for run in ("fringes", "square")), lut)
    try:
        for name, values in maps.items():
            open_array(job["zarr"], name)[core] = values
    except OSError as err:
        raise os_error(job["zarr"], err, "write a fused block") from None


def stats_task(job: dict, core) -> dict:
    """:func:`grain_stats` of one block of the written grains (``job["phases"]``: the map's, default a fused map's)."""
    region = grow(core, NEIGHBOUR_REACH + 1, job["shape"])
    return grain_stats(np.asarray(open_array(job["zarr"], "grains")[region]),
                       np.asarray(open_array(job["zarr"], "orientation")[core]), inside(core, region),
                       tuple(s.start for s in core), job["shape"], job.get("phases", PHASES))


def fused_table(parts: list, n_fringes: int, n_grains: int, *, image_shape, pixel_size=None) -> dict:
    """The fused grains' table from every block's :func:`stats_task`: geometry, neighbours, ``phase``
    (1 for grains ``1..n_fringes``, else 2) and ``mean_angle`` in each grain's phase's convention."""
    return phase_table(parts, grain_phases(n_fringes, n_grains), PHASES, image_shape=image_shape, pixel_size=pixel_size)


def phase_table(parts: list, phase: np.ndarray, phases, *, image_shape, pixel_size=None) -> dict:
    """The table of a written map's grains from every block's :func:`stats_task`: geometry, neighbours
    and ``mean_angle`` in each grain's phase's convention (``phase``: each grain's phase id, 1-based into
    ``phases``); with more than one phase also the ``phase`` column."""
    from micro_sym.grains.blockwise import final_table, neighbour_counts

    n_grains = len(phase)
    tables = [final_table([p | {"stat_ori_sum": p[f"ori_sum_{ph['name']}"]} for p in parts], n_grains,
                          symmetry=ph["symmetry"], image_shape=image_shape, pixel_size=pixel_size) for ph in phases]
    table = tables[0]
    if len(phases) > 1:
        table["mean_angle"] = np.select([phase == i for i in range(1, len(phases) + 1)], [t["mean_angle"] for t in tables])
        table["phase"] = phase
    table["n_neighbours"] = neighbour_counts([p["neighbour_pairs"] for p in parts], n_grains)
    return table


def fused_lattice_columns(sums: dict, phase: np.ndarray, settings: tuple[dict, dict]) -> dict:
    """The table's measured-lattice columns, each grain at its phase's order: ``settings`` are the two
    runs' (fringes k = 2, square k = 4); ``sums`` were measured at the square order, and hold the
    k = 2 sums every measurement keeps (:func:`micro_sym.classical.grain_lattice.grain_sums`)."""
    from micro_sym.classical.grain_lattice import grain_columns

    n = len(phase)
    fringes = grain_columns(sums | {"ck": sums["c2"]}, n, settings[0])
    square = grain_columns(sums, n, settings[1])
    return {key: np.where(phase == 1, fringes[key], square[key]) for key in square}

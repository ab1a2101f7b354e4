"""The block engine's measurement of every 3D grain's orientation from the volume inside it.

After the grains pass, each grain is measured once (:func:`micro_sym.classical.grain_orientation3d.grain_orientations`),
by the block that holds most of its voxels, from that block grown by half the measurement window
(which then holds the grain's window around its centre). A volume has one lattice: blocks pick the
first-ring family of their grains, the family most blocks' confident grains explain best wins, and the
blocks that picked another are measured again with it. The grain table gets ``lattice_q{w,x,y,z}`` and
``lattice_quality`` (docs/design.md §6.7).
"""

from __future__ import annotations

import numpy as np

from micro_sym.grains.blockwise import grow


def ring_3d(volume, scale: dict | None, previous: dict | None) -> float | None:
    """The volume's first-ring frequency (cycles/voxel): as its run resampled it, as a resumed run
    recorded it, or measured (:func:`micro_sym.classical.lattice_measure3d.measure_lattice_3d`, at most 8
    tiles read); None where the volume shows no ring."""
    if scale and scale.get("ring_frequency"):
        return float(scale["ring_frequency"])
    old = (((previous or {}).get("method") or {}).get("grain_orientation") or {}).get("ring_frequency")
    if old:
        return float(old)
    import dask

    from micro_sym.classical.lattice_measure3d import measure_lattice_3d

    with dask.config.set(scheduler="threads"):  # the input's store need not be serializable
        ring = measure_lattice_3d(volume).get("ring_frequency")
    return float(ring) if ring else None


def orientation_task(job: dict, block, ids, family=None) -> dict:
    """Measure grains ``ids`` of ``block`` from the input around it (module docstring)."""
    from micro_sym.classical.grain_orientation3d import MAX_WINDOW, grain_orientations
    from micro_sym.inference.writer import open_array, os_error
    from micro_sym.io import open_image

    region = grow(block.core, MAX_WINDOW // 2, job["shape"])
    # Opened per task (a block's measurement takes seconds; opening, milliseconds).
    volume = open_image(job["input"], array=job.get("array"), level=job.get("level", 0),
                        channel=job.get("channel")).read(region)
    try:
        labels = np.asarray(open_array(job["zarr"], "grains")[region])
    except OSError as err:
        raise os_error(job["zarr"], err, f"read block {block.id}") from None
    return grain_orientations(volume, labels, ring_frequency=job["grain_orientation"]["ring_frequency"], ids=ids,
                              family=family)


def measured_orientations(runner, job: dict, plan, finals: list, n_grains: int) -> dict:
    """The grain table's measured-orientation columns (rows = grains 1..n_grains) from every block's
    grains pass results ``finals`` (their ``ids`` and ``stat_count``)."""
    return orientation_columns(*measure_grains(runner, job, plan, finals, n_grains)[:2])


def orientation_columns(quaternions: np.ndarray, quality: np.ndarray) -> dict:
    """The table's ``lattice_q{w,x,y,z}`` and ``lattice_quality`` from rows 0..n (row 0: no grain)."""
    return {**{f"lattice_q{c}": quaternions[1:, k] for k, c in enumerate("wxyz")}, "lattice_quality": quality[1:]}


def measure_grains(runner, job: dict, plan, finals: list, n_grains: int, *, only=None, family=None):
    """Every grain measured by the block holding most of it (module docstring): ``(quaternions (n + 1, 4),
    quality (n + 1,), family)``, row 0 and grains not measured NaN and 0. ``only``: a boolean mask over
    ids ``0..n``, the grains to measure; ``family``: the volume's first-ring family as chosen before
    (no vote)."""
    most = np.zeros(n_grains + 1, np.int64)
    owner = np.full(n_grains + 1, -1)
    for i, part in enumerate(finals):
        ids, count = np.asarray(part["ids"], np.int64), np.asarray(part["stat_count"], np.int64)
        more = count > most[ids]
        most[ids[more]], owner[ids[more]] = count[more], i
    if only is not None:
        owner[~np.asarray(only, bool)] = -1
    grains_of = {i: np.flatnonzero(owner == i) for i in range(len(plan.blocks)) if (owner == i).any()}
    results = dict(runner.run(orientation_task, list(grains_of), lambda i: (job, plan.blocks[i], grains_of[i], family)))
    votes = {}
    for r in results.values():
        confident = r["quality"][np.isfinite(r["quaternions"][:, 0])].sum()
        if r["volume_family"]:
            votes[r["volume_family"]] = votes.get(r["volume_family"], 0.0) + float(confident)
    if votes and family is None:
        family = max(votes, key=votes.get)
        again = [i for i, r in results.items() if r["volume_family"] != family]
        results |= dict(runner.run(orientation_task, again, lambda i: (job, plan.blocks[i], grains_of[i], family)))
    quaternions = np.full((n_grains + 1, 4), np.nan)
    quality = np.zeros(n_grains + 1)
    for r in results.values():
        quaternions[r["ids"]] = r["quaternions"]
        quality[r["ids"]] = r["quality"]
    return quaternions, quality, family

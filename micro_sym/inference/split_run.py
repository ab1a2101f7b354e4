"""``segment --split-grains``: a 2D input's grains, each grain that holds two lattice orientations split
(:mod:`micro_sym.grains.split`).

The input is first segmented as without the option, into the output's run state
(``OUT/.NAME.run/unsplit/``, resumable like any run: a fused input's two runs inside it). That map is
then read, never changed, by passes over its blocks, each exact for any tiling and repeatable (a
resumed run does them again and writes the same bytes):

1. the extent of every grain (:func:`~micro_sym.classical.grain_lattice.grain_extents`);
2. each grain's pieces, decided from its own bounding box (the grains whose box starts in a block, with
   one read of the region holding their boxes); kept in the run state;
3. the output: the map's grains renumbered (each phase's ids stay contiguous) with the pieces written
   as new grains, orientation and boundary as they were;
4. each block's grain statistics, the grain table (:func:`micro_sym.inference.fusion.phase_table`)
   and each grain's lattice measured whole, as the run measured it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import time
from pathlib import Path

import numpy as np

from micro_sym.errors import MicroSymError
from micro_sym.grains.split import SPLIT_RULE, apply_pieces, grain_pieces, split_ids
from micro_sym.inference.writer import RunState, create_outputs, forget_arrays, open_array, os_error

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
    from micro_sym.inference.engine import read_region

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


def split_input(img, path: Path, out_dir, net, runner, *, progress, on_block, dry_run, **settings):
    """:func:`micro_sym.inference.engine.segment_input` with ``split_grains``: the input segmented into the
    run state, then its grains split (see the module doc) into ``OUT/NAME.zarr`` + ``OUT/NAME_grains.csv``."""
    from micro_sym.classical.filter_bank import lattice_constant
    from micro_sym.classical.grain_lattice import grain_columns, lattice_order
    from micro_sym.grains.stats import write_grain_csv
    from micro_sym.inference import fusion
    from micro_sym.inference.blocks import plan_blocks
    from micro_sym.inference.engine import InputResult, _final_grain_sums, _segment_input, start_composite

    t0 = time.perf_counter()
    if img.ndim != 2:
        raise MicroSymError(f"{path}: --split-grains is for 2D micrographs; this input is a 3D volume")
    state = RunState(Path(out_dir), img.name)
    common = dict(runner=runner, on_block=on_block, **settings)
    if dry_run:
        res = _segment_input(img, path, state.root / SOURCE, net, progress=None, dry_run=True, **common)
        plan = {**res.plan, "outputs": [str(state.zarr_path), str(state.csv_path)],
                "method": {**res.plan.get("method", {}), "split_grains": {"rule": SPLIT_RULE}}}
        return dataclasses.replace(res, zarr=str(state.zarr_path), csv=str(state.csv_path), plan=plan)
    base = getattr(net, "network", net)  # auto: its square network names the run
    model = {"name": "auto" if base is not net else net.name, "sha256": hashlib.sha256(str(base.sha256).encode()).hexdigest()}
    manifest, skipped = start_composite(state, img, path, settings, model, split_grains=SPLIT_RULE)
    if skipped:
        return skipped
    source = _segment_input(img, path, state.root / SOURCE, net, progress=progress, dry_run=False, **common)
    source_manifest = RunState(state.root / SOURCE, img.name).read_manifest()
    import zarr

    attrs = dict(zarr.open_group(source.zarr, mode="r").attrs["micro_sym"])
    phases = split_phases(attrs)
    measured = lattice_settings(source_manifest["method"])
    if not all(measured):
        raise MicroSymError(f"{path}: --split-grains needs the image's lattice period, and this run measured none "
                            f"(give --period)")
    # The lattice constant in px (the split's smoothing and smallest piece are in lattice cells).
    period = lattice_constant(measured[-1]["ring_frequency"], measured[-1]["lattice"])
    for p in phases:
        p["k"] = lattice_order(p["symmetry"])
    chunk = tuple(open_array(source.zarr, "grains").chunks)
    plan = plan_blocks(tuple(img.data.shape), chunk, halo=0, chunk=chunk, pad=False)
    create_outputs(state, plan.shape, 2, plan.chunk, pixel_size=img.pixel_size, unit=img.unit)
    job = {"input": str(path), **{k: settings[k] for k in ("array", "level", "channel")}, "shape": plan.shape,
           "source": source.zarr, "zarr": str(state.zarr_path), "phases": phases, "period": period,
           "rule": SPLIT_RULE, "grain_lattice": measured[-1]}
    cores = [b.core for b in plan.blocks]
    n_source = int(attrs["n_grains"])
    found = _pieces(runner, job, plan, state)
    parents = np.concatenate([np.full(int(p.max()), g, np.int64) for g, _, p in found]) if found else np.zeros(0, np.int64)
    ranges = [tuple(p["grains"]) for p in phases] if len(phases) > 1 else None
    lut, piece_ids, new_ranges = split_ids(n_source, parents, ranges)
    firsts = np.cumsum([0] + [int(p.max()) for _, _, p in found])[:-1]
    boxes = [tuple(slice(int(a), int(a) + n) for a, n in zip(lo, p.shape)) for _, lo, p in found]
    pieces = [(box, p, int(piece_ids[first])) for box, (_, _, p), first in zip(boxes, found, firsts)]

    def meets(box, core):
        return all(b.start < c.stop and c.start < b.stop for b, c in zip(box, core))

    for _ in runner.run(write_task, cores, lambda c: (job, c, lut, [p for p in pieces if meets(p[0], c)])):
        pass
    n_grains = n_source + len(parents)
    if new_ranges:
        for p, (first, last) in zip(phases, new_ranges):
            p["grains"] = [int(first), int(last)]
    else:
        phases[0]["grains"] = [1, n_grains]
    phase = np.ones(n_grains, np.int64)
    for i, p in enumerate(phases, 1):
        phase[p["grains"][0] - 1:p["grains"][1]] = i
    parts = [part for _, part in runner.run(fusion.stats_task, cores, lambda c: (job, c))]
    table = fusion.phase_table(parts, phase, phases, image_shape=plan.shape, pixel_size=img.pixel_size)
    if settings["measure_grains"]:  # each grain's lattice, measured whole as the run measured it
        sums = _final_grain_sums(runner, job, plan, state)
        if len(phases) > 1:
            table |= fusion.fused_lattice_columns(sums, phase, tuple(measured))
        else:
            table |= grain_columns(sums, n_grains, measured[0])
    records = [{k: p[k] for k in ("name", "symmetry", "grains")} for p in phases]
    rule = {**attrs["grain_rule"], "min_size": attrs["min_size"], "boundary_threshold": attrs["boundary_threshold"]}
    several = len(phases) > 1
    write_grain_csv(state.csv_path, table, unit=img.unit or "px", atomic=True, pixel_size=img.pixel_size,
                    symmetry=None if several else attrs["symmetry"],
                    phases=[{k: p[k] for k in ("name", "symmetry")} for p in phases] if several else None,
                    command="micro-sym segment --split-grains", grain_rule=rule)
    split = {"rule": SPLIT_RULE, "grains_split": len(found), "grains_added": int(len(parents)),
             "period_px": round(float(period), 4)}
    method = {**source_manifest["method"], "split_grains": split}
    root = zarr.open_group(str(state.zarr_path), mode="a")
    root.attrs["micro_sym"] = {**attrs, "method": method, "n_grains": n_grains,
                               **({"phases": records} if several else {})}
    manifest.update(status="complete", n_grains=n_grains, method=method,
                    plan={**source.plan, "outputs": [str(state.zarr_path), str(state.csv_path)],
                          "method": {**source.plan.get("method", {}), "split_grains": split}})
    state.write_manifest(manifest)  # the last write: only now is the input reported complete
    shutil.rmtree(state.root / SOURCE, ignore_errors=True)  # the unsplit run was scratch
    shutil.rmtree(state.root / "split", ignore_errors=True)
    state.cleanup_scratch()
    forget_arrays(state.zarr_path)
    forget_arrays(source.zarr)
    return InputResult(str(path), img.name, "complete", str(state.zarr_path), str(state.csv_path),
                       tuple(img.data.shape), n_blocks=source.n_blocks, blocks_run=source.blocks_run,
                       n_grains=n_grains, seconds=time.perf_counter() - t0, plan=manifest["plan"])


def _pieces(runner, job: dict, plan, state: RunState) -> list:
    """Every split grain's ``(grain, lo, pieces)`` in grain order, each grain decided by the block holding
    its box's first pixel; kept in the run state (a resume reads them back)."""
    from micro_sym.classical.grain_lattice import merge_extents
    from micro_sym.inference.engine import extents_task

    saved = state.root / "split" / "pieces.npz"
    if saved.exists():
        with np.load(saved) as f:
            return [(int(g), f["lo"][i], f[f"p{int(g)}"]) for i, g in enumerate(f["grain"])]
    extents = merge_extents(e for _, e in runner.run(extents_task, plan.blocks, lambda b: ({"zarr": job["source"]}, b)))
    owner = np.full(len(extents["ids"]), -1, np.int64)
    for i, b in enumerate(plan.blocks):
        owner[np.all([(c.start <= extents["lo"][:, a]) & (extents["lo"][:, a] < c.stop)
                      for a, c in enumerate(b.core)], axis=0)] = i
    groups = [{key: values[owner == i] for key, values in extents.items()} for i in range(len(plan.blocks))]
    found = sorted((item for _, part in runner.run(pieces_task, [g for g in groups if len(g["ids"])], lambda g: (job, g))
                    for item in part), key=lambda item: item[0])
    import io

    from micro_sym.inference.writer import atomic_write_bytes

    buf = io.BytesIO()
    np.savez(buf, grain=np.array([g for g, _, _ in found], np.int64),
             lo=np.array([lo for _, lo, _ in found], np.int64).reshape(-1, 2), **{f"p{g}": p for g, _, p in found})
    saved.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(saved, buf.getvalue())
    return found

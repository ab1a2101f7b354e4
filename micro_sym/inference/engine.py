"""The block engine: segment one image (or many) block by block with bounded memory, resumably.

Per input, three streamed passes over the block plan (:mod:`.blocks`):

1. **maps** (parallel): read the block's tile (core + halo) straight from the input, normalize with
   the image's ``lo``/``hi`` (computed once, :func:`micro_sym.models.intensity_range` on a strided
   subsample), pad like whole-image inference, run the network, crop the core, decode, write
   ``boundary`` and ``orientation`` chunk-aligned, label the block's grains locally and write them to
   a scratch array; the small per-block statistics and face planes go back to the driver, which
   stores them and then creates the block's marker;
2. **merge** (driver, small): union of labels across block faces, small-grain rule, consecutive ids
   and the per-grain table (:func:`micro_sym.grains.blockwise.merge_blocks`);
3. **grains** (parallel): ``grains = lut[local labels]``, chunk-aligned, one marker per block. With
   the seeded rule of network maps (:mod:`micro_sym.grains.rules`) pass 1 labels only seeds, and
   pass 3 floods the merged seeds over the written maps of the block plus a halo (:func:`flood_task`)
   and keeps the grown grains' statistics and the block's neighbour pairs across the unassigned band
   (the halo is wide enough for the flood to be exact 3 points beyond the block), for the table. With the plain pair rule, a last parallel, read-only pass
   finds those pairs in the written grains plus a 3-point halo (:func:`neighbours_task`), for the
   table's ``n_neighbours``.

Every output chunk belongs to exactly one block and is written by one task. Markers are the only
record of progress; an interrupted run resumes where it stopped and produces identical bytes. A run
holds ``OUT/.NAME.lock`` (:class:`.writer.OutputLock`) from before it reads the manifest until after
it removes its scratch, so two runs never work on one output; a killed run's lock vanishes with it.

The per-grain table does not depend on the blocks: 3D mean orientations align every voxel of a grain
to one reference for the whole grain (the quaternion at the first seed voxel, in raster order, of the
grain), not to a reference per block (:func:`micro_sym.grains.blockwise.merge_blocks` picks it, pass 3 aligns to it).

The "network" may also be the classical filter bank (:class:`.classical.ClassicalMethod`,
``method="classical"``): it has the same interface, plus ``for_input`` (fixes its lattice period once
per input, before planning; the manifest records it and a resume reuses it), ``grain_rule`` (the plain
pair rule, where networks use seeded grains) and ``pad_to_stride = False`` (unpadded tiles on its origin-anchored grid).
``method="auto"`` (:class:`.method_choice.AutoMethod`, the default without a model) picks one of the
two per input from the image's lattice fringe signal-to-noise ratio, before planning; the manifest records the choice.

>>> from micro_sym.inference import segment                       # doctest: +SKIP
>>> results = segment(["vol.zarr"], "out/", model="default-2d")   # doctest: +SKIP
>>> results = segment(["img.tif"], "out/", method="classical")    # doctest: +SKIP
"""

from __future__ import annotations

import functools
import hashlib
import threading
import time
import uuid
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from micro_sym.errors import MicroSymError
from micro_sym.orientation.symmetry import lattice as find_lattice
from micro_sym.grains.rules import is_seeded, seed_margin
from micro_sym.grains.stats import write_grain_csv
from micro_sym.grains.blockwise import grow
from micro_sym.inference.blocks import BlockPlan, estimate_memory, plan_blocks
from micro_sym.inference.classical import ClassicalMethod
from micro_sym.grains.blockwise import (final_table, flood_margin, flood_region, grain_refs, merge_blocks,
                                       neighbour_counts, neighbour_pairs, seed_parts)
from micro_sym.inference.method_choice import (AUTO_FRINGES_MODEL, AUTO_MODEL, AUTO_MODELS_BY_LATTICE, NETWORK_FOR_LATTICE,
                                               AutoMethod)
from micro_sym.inference.network import Network, cached_network
from micro_sym.classical.grain_lattice import (grain_columns as lattice_columns, grain_extents, grain_sums, grain_windows,
                                              merge_extents)
from micro_sym.inference.grain_orientations import measure_grains, measured_orientations, orientation_columns, ring_3d
from micro_sym.inference.lattice_mask import (LatticeMasked, grain_lattice, renumbered_sums, renumbered_table,
                                             weak_lattice_lut)
from micro_sym.inference.rescale import RescaledNetwork, adapt_to_image, check_measured_lattice
from micro_sym.inference.tiles import decode_in_slabs, decode_slab, iter_tiles, label_tile, rule_maps
from micro_sym.inference.input_reads import read_region
from micro_sym.inference.writer import OutputLock, RunState, create_outputs, forget_arrays, open_array, os_error

#: Progress inside a block, for workers in the driver's process (the threads scheduler): a run's
#: token -> ``report(block_id, fraction)``. Workers elsewhere do not find the token and report nothing,
#: so their progress moves a block at a time.
_WITHIN_BLOCK: dict = {}
#: The network for 3D volumes when no model is given.
DEFAULT_3D_MODEL = "default-3d"


# ----------------------------------------------------------------------------------- tasks


def read_tile(job: dict, block) -> np.ndarray:
    """The block's input tile as a numpy array; a failing read names the input and the chunk."""
    return read_region(job, block.tile)


def _missing_chunks(img) -> dict | None:
    """Storage chunks the input lacks (read as its fill value), for the plan and the CLI's note."""
    from micro_sym.io.images import missing_chunks

    found = missing_chunks(img)
    if not found or not found[0]:
        return None
    return {"missing": found[0], "total": found[1], "fill_value": float(img.store.fill_value or 0)}


def _resolve_net(net_ref, job) -> Network:
    if isinstance(net_ref, (Network, ClassicalMethod)):
        return net_ref
    return cached_network(net_ref, job["sha256"], job["device"], job.get("torch_threads"))


def maps_task(net_ref, job: dict, blocks: list) -> list:
    """Pass 1 for a batch of blocks with equal tile shapes; returns per-block merge data."""
    net = _resolve_net(net_ref, job)
    if job.get("int8_ranges"):  # the input's own activation scales (micro_sym.inference.int8_ranges)
        net = dataclasses.replace(net, int8_ranges=job["int8_ranges"])
    if job.get("scale"):  # the network runs at its training lattice period (rescale.RescaledNetwork)
        net = RescaledNetwork(net, job["scale"], job["shape"])
    if job.get("lattice_mask"):  # grains only where the lattice shows (lattice_mask.LatticeMasked)
        net = LatticeMasked(net, job["lattice_mask"], margin=seed_margin(job))
    report = _WITHIN_BLOCK.get(job.get("progress_token"), lambda block_id, fraction: None)
    field = job.get("field")  # a 3D harmonic network: grains from its field (grains.field)
    decode = not field or job.get("voxel_orientations")  # else the map is painted per grain (paint_task)
    slab = decode_slab(net) if decode else None
    out = []
    for tile in iter_tiles(net, blocks, lambda b: read_tile(job, b), value_range=job["value_range"],
                           pad_mode=job["pad_mode"], device=job["device"], batch=len(blocks), decode=False):
        b, y = tile.block, tile.core_outputs
        maps = None
        if slab:  # a slow decode: half the block's step after the forward, the rest slab by slab
            report(b.id, 0.5)
            slabs = decode_in_slabs(net, y, slab)
            while True:
                try:
                    report(b.id, 0.5 + 0.5 * next(slabs) / y.shape[1])
                except StopIteration as finished:
                    maps = finished.value
                    break
        elif decode:
            maps = net.decode(y)
        rule_input = rule_maps(net, y) if field else maps  # what the grain rule reads
        lab = label_tile(net, tile, rule_input, rule=job, shape=job["shape"], boundary_threshold=job["boundary_threshold"])
        try:
            open_array(job["zarr"], "boundary")[b.core] = rule_input["boundary"]
            if field:
                open_array(field)[(slice(None), *b.core)] = rule_input["orientation"]
            if maps is not None:
                open_array(job["zarr"], "orientation")[(slice(None), *b.core) if net.ndim == 3 else b.core] = maps["orientation"]
            open_array(job["labels"])[b.core] = lab.labels
        except OSError as err:
            raise os_error(job["zarr"], err, f"write block {b.id}") from None
        out.append(lab.to_arrays())
    return out


def grains_task(job: dict, block, lut: np.ndarray) -> int:
    """Pass 3 for one block, plain pair rule: final ids from local labels, written chunk-aligned."""
    local = open_array(job["labels"])[block.core]
    _write_grains(job, block, lut[local])
    return int(local.size)


def flood_task(job: dict, block, parts: list, refs=None) -> dict:
    """Pass 3 for one block, seeded rule: flood the final seed ids (``parts``: :func:`micro_sym.grains.blockwise.seed_parts`
    of the block grown by :func:`~micro_sym.grains.blockwise.flood_margin`) over the written maps; returns the
    block's grain statistics and its neighbour pairs (the flood reaches far enough to give them).

    ``refs`` (3D): ``(ids, quaternions)``, the reference orientation of every grain the block can
    hold (:func:`micro_sym.grains.blockwise.grain_refs`), so that its quaternion sums align like every other block's."""
    orientation = open_array(job["field"]) if job.get("field") else open_array(job["zarr"], "orientation")
    labels, arrays = flood_region(block, parts, orientation=orientation,
                                  boundary=open_array(job["zarr"], "boundary"), local_labels=open_array(job["labels"]),
                                  steps=job["steps"], symmetry=job["symmetry"], image_shape=job["shape"],
                                  boundary_threshold=job["boundary_threshold"], refs=refs, neighbours=True)
    if job.get("flooded"):  # renumbered into the output once every grain's lattice is measured (relabel_task)
        _write(open_array(job["flooded"]), job, block, labels)
    else:
        _write_grains(job, block, labels)
    if job.get("grain_lattice"):  # where each grain lies, for its lattice measurement (_final_grain_sums)
        extents = grain_extents(labels, origin=[s.start for s in block.core])
        arrays = {**arrays, **{f"extent_{key}": value for key, value in extents.items()}}
    return arrays


def paint_task(job: dict, block, lut: np.ndarray) -> None:
    """Last pass with a harmonic field: the block's orientation map, each grain's orientation (``lut``,
    :func:`micro_sym.grains.field.table_orientations`: measured where measured, else the network's mean)
    over its voxels."""
    from micro_sym.grains.field import paint

    try:
        grains = open_array(job["zarr"], "grains")[block.core]
        open_array(job["zarr"], "orientation")[(slice(None), *block.core)] = paint(grains, lut)
    except OSError as err:
        raise os_error(job["zarr"], err, f"write block {block.id}") from None


def extents_task(job: dict, block) -> dict:
    """The extents of the final grains in the block's core (:func:`~micro_sym.classical.grain_lattice.grain_extents`)."""
    grains = _flooded_grains(job)[block.core]
    return grain_extents(grains, origin=[s.start for s in block.core])


def lattice_task(job: dict, extents: dict) -> dict:
    """Each of the grains ``extents`` measured whole from the input inside it
    (:func:`~micro_sym.classical.grain_lattice.grain_sums`): the same sums for any tiling. The region
    holding all their windows is read once (a window's own read would decode whole storage chunks)."""
    setting = job["grain_lattice"]
    windows = grain_windows(extents)  # of at least one grain (_final_grain_sums)
    region = tuple(slice(min(w[a].start for w in windows), max(w[a].stop for w in windows)) for a in range(2))
    image = read_region(job, region)
    grains = _flooded_grains(job)[region]

    def local(win):
        return tuple(slice(w.start - r.start, w.stop - r.start) for w, r in zip(win, region))

    return grain_sums(lambda win: image[local(win)], lambda win: grains[local(win)], extents,
                      ring_frequency=setting["ring_frequency"], k=setting["k"])


def relabel_task(job: dict, block, lut: np.ndarray) -> None:
    """The block's flooded grains, renumbered by ``lut`` (grains left out: 0), written to the output. It
    reads the scratch and writes the output, so doing a block again after a resume changes nothing."""
    _write_grains(job, block, lut[open_array(job["flooded"])[block.core]])


def _flooded_grains(job: dict):
    """The grains as the flood wrote them: the scratch where some may still be left out, else the output."""
    return open_array(job["flooded"]) if job.get("flooded") else open_array(job["zarr"], "grains")


def neighbours_task(job: dict, block) -> np.ndarray:
    """Grain pairs that are neighbours across the unassigned band, contact in this block
    (:func:`micro_sym.grains.blockwise.neighbour_pairs`: the written grains with a small halo). The
    plain pair rule only: :func:`flood_task` returns them with the seeded rule."""
    return neighbour_pairs(open_array(job["zarr"], "grains"), block.core, job["shape"])


def _write_grains(job, block, labels):
    _write(open_array(job["zarr"], "grains"), job, block, labels)


def _write(array, job, block, labels):
    try:
        array[block.core] = labels
    except OSError as err:
        raise os_error(job["zarr"], err, f"write block {block.id}") from None


# ----------------------------------------------------------------------------------- driver


class _BlockSteps:
    """An input's block-steps for ``progress(done, total)``: one per block and pass (maps, grains, then
    each pass the run makes over the blocks after them: each grain's lattice or orientation measured,
    grains renumbered, neighbours, the orientation map painted; :func:`_finishing_passes`), whole steps
    plus the fractions that in-process workers report for the blocks they are running."""

    def __init__(self, done: int, total: int, progress=None):
        self.done, self.total, self.progress = done, total, progress
        self._running: dict = {}
        self._lock = threading.Lock()
        self._report()

    def within(self, block_id, fraction: float) -> None:
        with self._lock:
            self._running[block_id] = fraction
            self._report()

    def finished(self, block_id=None) -> None:
        with self._lock:
            self._running.pop(block_id, None)
            self.done += 1
            self._report()

    def counted(self, results, n: int):
        """``results`` of a pass over ``n`` blocks, a step for each; the pass's remaining steps when they
        end (tasks that ran before a resume, blocks that held nothing to do)."""
        k = 0
        for item in results:
            k += 1
            self.finished()
            yield item
        self.advance(n - k)

    def advance(self, steps: int) -> None:
        """``steps`` more steps done at once (a pass run inside another function, counted when it ends)."""
        if steps > 0:
            with self._lock:
                self.done += steps
                self._report()

    def _report(self) -> None:
        if self.progress:
            self.progress(self.done + sum(self._running.values()), self.total)


def _finishing_passes(*, refine: bool, lattice: bool, renumber: bool, seeded: bool, orientations: bool,
                      paint: bool) -> int:
    """How many passes over the blocks an input's run makes after its grains pass: the split and joined
    grains, each grain's lattice measured, grains renumbered, neighbours (plain pair rule), each grain's
    orientation measured, the orientation map painted (see the end of :func:`_segment_input`)."""
    return sum((refine, lattice, renumber, not seeded, seeded and orientations and not refine, paint))


@dataclass
class InputResult:
    """Outcome of one input: ``status`` is ``complete``, ``skipped`` (already complete), ``planned``
    (dry run) or ``failed`` (``error`` says why)."""

    input: str
    name: str
    status: str
    zarr: str = ""
    csv: str = ""
    shape: tuple = ()
    n_blocks: int = 0
    blocks_run: int = 0
    n_grains: int = 0
    seconds: float = 0.0
    error: str = ""
    plan: dict = field(default_factory=dict)


def code_version() -> str:
    """micro_sym version plus a hash of the engine's sources (a changed engine must not resume)."""
    from micro_sym import __version__

    h = hashlib.sha256()
    for p in sorted(Path(__file__).parent.glob("*.py")):
        h.update(p.read_bytes())
    return f"{__version__}+{h.hexdigest()[:12]}"


def fingerprint(path: Path) -> dict:
    """Cheap identity of an input: resolved path, total size and newest modification time."""
    path = Path(path).resolve()
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    stats = [p.stat() for p in files]
    return {"path": str(path), "bytes": sum(s.st_size for s in stats),
            "mtime_ns": max((s.st_mtime_ns for s in stats), default=0), "files": len(files)}


def plan_input(img, net: Network, *, block=None, chunk=None, margin: int = 0) -> BlockPlan:
    """Block plan of an opened image for a network (checks dimensionality); the halo covers the
    network's receptive field plus ``margin`` (where the grain rule needs maps beyond the block)."""
    if img.ndim != net.ndim:
        kind = {2: "2D image", 3: "3D volume"}[img.ndim]
        hint = "--model default-3d (bundled)" if img.ndim == 3 else "a 2D model, e.g. --model robust-2d"
        raise MicroSymError(f"{img.path}: model '{net.name}' is for {net.ndim}D data but the input is a {kind} of shape "
                            f"{tuple(img.data.shape)}; use {hint}")
    return plan_blocks(img.data.shape, block, halo=net.halo + margin, stride=net.total_stride, chunk=chunk,
                       pad=getattr(net, "pad_to_stride", True))


def method_info(net) -> dict:
    """The method a run used, for its manifest and output attributes (classical: lattice and period)."""
    return net.method_info() if hasattr(net, "method_info") else {"name": "network"}


def _batches(blocks, size: int):
    """Consecutive blocks with equal tile shapes, up to ``size`` per batch (one forward call)."""
    batch = []
    for b in blocks:
        if batch and (len(batch) == size or b.tile_shape != batch[0].tile_shape):
            yield tuple(batch)
            batch = []
        batch.append(b)
    if batch:
        yield tuple(batch)


def segment_input(path, out_dir, net: Network, runner, *, block=None, chunk=None, threshold: float = 5.0,
                  min_size: int | None = None, boundary_threshold: float = 0.5, device: str = "cpu",
                  batch: int = 1, array=None, level: int = 0, channel: int | None = None, dry_run: bool = False,
                  overwrite: bool = False,
                  on_block=None, progress=None, period: float | None = None, lattice_mask: bool = True,
                  measure_grains: bool = True, voxel_orientations: bool = False, lattice: str | None = None,
                  split_grains: bool = False) -> InputResult:
    """Segment one image into ``OUT/NAME.zarr`` + ``OUT/NAME_grains.csv``, resuming if possible.

    Parameters
    ----------
    path : str or Path
        TIFF, Zarr array or OME-Zarr image (see :func:`micro_sym.io.open_image`).
    out_dir : str or Path
        Output directory (created if needed).
    net : Network or ClassicalMethod
        From :func:`~.network.as_network` or :func:`~.network.load_network`, or the classical method
        (its period is fixed here, once for this input).
    runner : Runner
        From :func:`~.scheduler.make_runner`, already bound to ``net``.
    block, chunk : int or tuple, optional
        Processing block and output chunk sizes (see :func:`~.blocks.plan_blocks`).
    threshold, min_size, boundary_threshold : grain rule (docs/design.md §3); ``min_size`` defaults to
        :func:`micro_sym.inference.whole_image.grain_min_size`, like whole-image segmentation.
    batch : int
        Tiles per forward call (tiles of equal shape are stacked; useful on GPUs).
    dry_run : bool
        Plan only: nothing is computed, written or locked.
    overwrite : bool
        Start this input afresh: delete its ``NAME.zarr``, ``NAME_grains.csv`` and run state first
        (a different earlier run, or files not written by micro-sym, are refused otherwise).
    on_block : callable, optional
        ``on_block(stage, block_id)`` after each block's marker is written (progress, tests).
    progress : callable, optional
        ``progress(done, total)`` in block-steps: 2 per block (maps and grains), and one per block for
        each pass after them (each grain's lattice or orientation measured, grains renumbered, the
        orientation map painted), so that 100 % means done.
    period : float, optional
        The image's lattice constant in px for a 2D network (default: measured from the power
        spectrum); the image is resampled to the model's training period (:mod:`.rescale`).
    lattice : str, optional
        The image's lattice as the user named it (``--lattice``). Without it, a 2D network refuses an
        image whose measured lattice is another family than the one it maps
        (:func:`.rescale.check_measured_lattice`).
    lattice_mask : bool
        Leave pixels where the image shows no lattice (vacuum, amorphous film) out of every grain
        (:mod:`.lattice_mask`; 2D inputs whose lattice was measured or given), and a network's grains
        that show no lattice of their own (:func:`.lattice_mask.weak_lattice_lut`).
    measure_grains : bool
        Measure each grain's lattice from the input inside it: the grain table's ``lattice_angle`` (2D,
        :mod:`micro_sym.classical.grain_lattice`) or ``lattice_q*`` (3D networks,
        :mod:`micro_sym.classical.grain_orientation3d`, about 50 ms a grain), where the lattice ring is known.
    voxel_orientations : bool
        3D harmonic networks: decode every voxel's orientation into the orientation map (slow, about
        100k voxels/s a core). By default each grain's mean orientation fills its voxels
        (:mod:`micro_sym.grains.field`); the grains are the same either way.
    split_grains : bool
        2D: split each grain that holds two lattice orientations (:mod:`micro_sym.grains.split`, run by
        :mod:`.split_run` after the input is segmented). 3D: split and join the grains by the volume's
        measured lattice (:mod:`micro_sym.grains.split3d`, run by :mod:`.refine3d_run` after the flood).

    Returns
    -------
    InputResult

    Raises
    ------
    MicroSymError
        Among others when another run holds this input's output lock (``OUT/.NAME.lock``).
    """
    from micro_sym.io import open_image

    path = Path(path)
    img = open_image(path, array=array, level=level, channel=channel)
    run = _segment_input
    if split_grains:  # micrographs: a run, then its grains split; volumes: refined inside the run
        run = _split_input if img.ndim == 2 else functools.partial(_segment_input, refine=True)
    if dry_run:
        return run(img, path, out_dir, net, runner, block=block, chunk=chunk, threshold=threshold,
                   min_size=min_size, boundary_threshold=boundary_threshold, device=device, batch=batch,
                   array=array, level=level, channel=channel, dry_run=True, on_block=on_block,
                   progress=progress, period=period, lattice_mask=lattice_mask,
                   measure_grains=measure_grains, voxel_orientations=voxel_orientations, lattice=lattice)
    # Held from before the manifest is read until the scratch is gone: a second run on this input
    # would otherwise resume the same markers and the first to finish would delete scratch labels
    # the other still reads.
    with OutputLock(out_dir, img.name):
        if overwrite:
            state = RunState(Path(out_dir), img.name)
            _refuse_deleting_input(path, state)
            state.remove_outputs()
        return run(img, path, out_dir, net, runner, block=block, chunk=chunk, threshold=threshold,
                   min_size=min_size, boundary_threshold=boundary_threshold, device=device, batch=batch,
                   array=array, level=level, channel=channel, dry_run=False, on_block=on_block,
                   progress=progress, period=period, lattice_mask=lattice_mask,
                   measure_grains=measure_grains, voxel_orientations=voxel_orientations, lattice=lattice)


def _refuse_deleting_input(path: Path, state: RunState) -> None:
    """``--overwrite`` must not delete the input itself (``segment out/a.zarr --out out``)."""
    p = path.resolve()
    for out in (state.zarr_path, state.csv_path, state.root):
        o = out.resolve()
        if p == o or o in p.parents:
            raise MicroSymError(f"{path}: --overwrite would delete this input ({out} is its output); choose another --out")


def _segment_input(img, path: Path, out_dir, net, runner, *, block, chunk, threshold, min_size, boundary_threshold,
                   device, batch, array, level, channel, dry_run, on_block, progress, period,
                   lattice_mask, measure_grains=True, voxel_orientations=False, lattice=None, auto=None,
                   keep_grain_sums=False, refine=False) -> InputResult:
    """:func:`segment_input` on an opened image (under the output lock unless ``dry_run``). ``auto``: the
    record of :class:`.method_choice.AutoMethod` that chose ``net`` (the runs of a fused input).
    ``keep_grain_sums``: keep the final grains' lattice sums in the run state (``grain_sums.npz``) for a
    step built on this run (a fusion, a split), which reuses them. ``refine``: a volume's grains split
    and joined by its measured lattice (:mod:`micro_sym.grains.split3d`, ``--split-grains``)."""
    from micro_sym.models.normalize import intensity_range
    from micro_sym.inference.whole_image import grain_min_size

    t0 = time.perf_counter()
    name = img.name
    state = RunState(Path(out_dir), name)
    previous = state.read_manifest()
    workers = getattr(runner, "torch_threads", None) or 1
    if isinstance(net, AutoMethod):  # per input: classical or network, by the fringe SNR (or as recorded)
        chooser = net
        net, auto = net.choose(img, previous=previous, workers=workers)
        if auto.get("fused_with"):  # one set of fringes: both networks, their grains fused (fusion)
            return _fused_input(img, path, out_dir, (chooser.fused_network(), net), runner, auto, block=block,
                                chunk=chunk, threshold=threshold, min_size=min_size,
                                boundary_threshold=boundary_threshold, device=device, batch=batch, array=array,
                                level=level, channel=channel, dry_run=dry_run, on_block=on_block, progress=progress,
                                period=period, lattice_mask=lattice_mask, measure_grains=measure_grains,
                                voxel_orientations=voxel_orientations, lattice=lattice, keep_grain_sums=keep_grain_sums)
    if hasattr(net, "for_input"):  # per-input settings: the classical period, estimated once or resumed
        net = net.for_input(img, threshold=threshold, previous=previous, workers=workers)
    base = net  # what workers receive; they rebuild the wrappers from the job
    int8 = getattr(base, "precision", "fp32") == "int8"
    if int8:
        from micro_sym.inference.int8_ranges import check_int8

        check_int8(base, str(path), device)
    try:
        net, scale, ring = adapt_to_image(net, img.data, period=period, measured=(auto or {}).get("measured"),
                                          previous=previous, workers=workers, lattice_mask=lattice_mask)
    except MicroSymError:
        raise
    except Exception as err:  # a damaged chunk among the tiles the lattice measurement reads: name it
        from micro_sym.io.images import locate_bad_chunk

        whole = tuple(slice(0, n) for n in img.data.shape)
        raise MicroSymError(f"{path}: {locate_bad_chunk(img, whole, err)}") from None
    if isinstance(base, Network):
        try:
            check_measured_lattice(base, scale, lattice, NETWORK_FOR_LATTICE)
        except MicroSymError as err:
            raise MicroSymError(f"{path}: {err}") from None
    rule = net.grain_rule(threshold, img.ndim)
    min_size = grain_min_size(min_size, ring, seeded=is_seeded(rule))
    field = getattr(net, "grain_field", None)  # a 3D harmonic network: grains from its field (grains.field)
    voxel_orientations = bool(voxel_orientations and field)
    plan = plan_input(img, net, block=block, chunk=chunk, margin=seed_margin(rule))
    method = (method_info(base) | ({"auto": auto} if auto else {}) | ({"scale": scale} if scale else {})
              | ({"lattice_mask": {"ring_frequency": ring, "min_contrast": net.threshold}} if ring else {}))
    setting = grain_lattice(base, scale) if img.ndim == 2 else None
    # Where the lattice mask runs with a network, its grains that show no lattice are left out afterwards.
    weak_lattice = bool(setting and ring and is_seeded(rule))
    setting = setting if measure_grains or weak_lattice else None
    if setting:  # each grain's lattice, measured from the image inside it
        method["grain_lattice"] = setting
    if img.ndim == 3 and measure_grains and isinstance(base, Network):  # each grain's orientation, measured
        ring3d = ring_3d(img.data, scale, previous)
        if ring3d:
            method["grain_orientation"] = {"ring_frequency": ring3d}
    if refine:
        from micro_sym.grains.split3d import REFINE_RULE

        if not (field and is_seeded(rule) and method.get("grain_orientation")):
            why = ("another network" if not field else "--no-measure-grains" if not measure_grains
                   else "no lattice ring in the volume")
            raise MicroSymError(f"{path}: --split-grains on a volume needs a 3D network with a harmonic field and each "
                                f"grain's orientation measured from the volume's lattice ring (this run: {why})")
        method["split_grains"] = {"rule": REFINE_RULE}
    n = len(plan.blocks)
    samples = getattr(net, "samples", None)  # a network run at another sampling: its resampled tile
    activations = getattr(net, "activation_bytes", None)  # a 3D network: its forward's estimate, slabs counted
    est = estimate_memory(plan, out_channels=net.out_channels or 3, width=net.width, workers=runner.workers if runner else 1,
                          input_itemsize=img.data.dtype.itemsize, resampled=samples(plan.max_tile_shape) if samples else None,
                          activations=activations(plan.max_tile_shape) if activations else None)
    plan_info = {"blocks": n, "grid": plan.grid, "block": plan.block, "chunk": plan.chunk, "halo": plan.halo,
                 "tile": plan.max_tile_shape, "recompute": round(plan.recompute, 3), "memory_estimate_bytes": est,
                 "outputs": [str(state.zarr_path), str(state.csv_path)], "method": method,
                 "missing_chunks": _missing_chunks(img)}
    result = InputResult(str(path), name, "planned", str(state.zarr_path), str(state.csv_path), tuple(img.data.shape),
                         n, plan=plan_info)
    if dry_run:
        return result
    manifest = {
        "version": 1, "input": fingerprint(path) | {"array": array, "level": level, "channel": channel},
        "model": {"name": net.name, "sha256": net.sha256}
                 | ({"precision": net.precision} if getattr(net, "precision", "fp32") != "fp32" else {}), "method": method,
        "shape": list(img.data.shape), "ndim": img.ndim,
        "block": list(plan.block), "chunk": list(plan.chunk), "halo": plan.halo, "stride": plan.stride,
        "threshold": float(threshold), "min_size": min_size, "boundary_threshold": float(boundary_threshold),
        "grain_rule": rule, **({"orientation_map": "voxels"} if voxel_orientations else
                               {"orientation_map": "measured"} if field and method.get("grain_orientation") else {}),
        **({"split_grains": method["split_grains"]["rule"]} if refine else {}),
        "code_version": code_version(), "n_blocks": n, "status": "running",
    }
    mode = state.check_compatible(manifest)
    if mode == "complete":
        result.status = "skipped"
        result.n_grains = int(state.read_manifest().get("n_grains", 0))
        return result
    state.prepare()
    old = state.read_manifest()
    if old is not None and "value_range" in old:
        value_range = tuple(old["value_range"])
    else:
        import dask

        try:
            # Local threads even when a distributed Client is active: the input's store (e.g. a TIFF
            # handle) need not be serializable, and this is one cheap strided pass on the driver.
            with dask.config.set(scheduler="threads"):
                value_range = intensity_range(img.data)
        except MicroSymError as err:
            raise MicroSymError(f"{path}: {err}") from None
        except Exception as err:  # a damaged chunk: name it (reads the image chunk by chunk)
            from micro_sym.io.images import locate_bad_chunk

            whole = tuple(slice(0, s) for s in plan.shape)
            raise MicroSymError(f"{path}: {locate_bad_chunk(img, whole, err)}") from None
    manifest["value_range"] = [float(v) for v in value_range]
    if int8:  # the activations' scales, from crops of this input (a resumed run keeps its own)
        from micro_sym.inference.int8_ranges import int8_ranges

        manifest["int8_ranges"] = (old or {}).get("int8_ranges") or int8_ranges(
            base, img.data, value_range, scale["scale"] if scale and scale.get("resampled") else None)
    state.write_manifest(manifest)
    create_outputs(state, plan.shape, img.ndim, plan.chunk, pixel_size=img.pixel_size, unit=img.unit,
                   field_channels=net.out_channels - 1 if field else None, flooded=weak_lattice or refine)

    job = {"input": str(path), "array": array, "level": level, "channel": channel,
           "value_range": manifest["value_range"], "int8_ranges": manifest.get("int8_ranges"),
           "pad_mode": plan.pad_mode, "shape": plan.shape, **manifest["grain_rule"],
           "boundary_threshold": float(boundary_threshold), "zarr": str(state.zarr_path),
           "labels": str(state.labels_path), "sha256": net.sha256, "device": device, "symmetry": net.symmetry,
           "torch_threads": getattr(runner, "torch_threads", None),
           "scale": scale["scale"] if scale and scale["resampled"] else None, "lattice_mask": ring,
           "grain_lattice": method.get("grain_lattice"), "grain_orientation": method.get("grain_orientation"),
           "field": str(state.field_path) if field else None, "voxel_orientations": voxel_orientations,
           "flooded": str(state.flooded_path) if weak_lattice or refine else None,
           "refine": {"rule": method["split_grains"]["rule"], "degrees": list(field),
                      **method["grain_orientation"]} if refine else None}
    done1 = state.done("done1")
    done2 = state.done("done2")
    seeded = is_seeded(rule)
    passes = _finishing_passes(refine=refine, lattice=bool(setting), renumber=weak_lattice, seeded=seeded,
                               orientations=bool(job["grain_orientation"]), paint=bool(field and not voxel_orientations))
    done3 = state.done("done3") if weak_lattice else set()
    steps = _BlockSteps(len(done1) + len(done2) + len(done3), (2 + passes) * n, progress)
    todo = [b for b in plan.blocks if b.id not in done1]
    # A network travels once per worker (runner); the classical method is a few settings: send it along.
    ref = runner.net_ref(base) if isinstance(base, Network) else base
    job["progress_token"] = token = uuid.uuid4().hex
    _WITHIN_BLOCK[token] = steps.within
    try:
        for batch_blocks, arrays in runner.run(maps_task, _batches(todo, max(1, batch)), lambda bb: (ref, job, list(bb))):
            for b, arr in zip(batch_blocks, arrays):
                state.save_block(b.id, arr)
                state.mark("done1", b.id)
                result.blocks_run += 1
                steps.finished(b.id)
                if on_block:
                    on_block("maps", b.id)
    finally:
        _WITHIN_BLOCK.pop(token, None)

    from micro_sym.deploy.runtime import release_memory

    release_memory()  # the grain pass needs no network: the memory of its activations goes back
    merged = merge_blocks(plan, lambda b: state.load_block(b.id), symmetry=net.symmetry, threshold=rule["pair_threshold"],
                          min_size=min_size, small="drop" if seeded else "merge", pixel_size=img.pixel_size,
                          merge_threshold=rule["merge_threshold"], reach=rule["reach"], table=not seeded)
    todo2 = [(i, b) for i, b in enumerate(plan.blocks) if b.id not in done2]
    if seeded:  # grains grow from the merged seeds; the statistics come from the grown grains
        def args(ib):
            region = grow(ib[1].core, flood_margin(rule["steps"], neighbours=True), plan.shape)
            parts = seed_parts(plan, region, merged.block_lut)
            return job, ib[1], parts, grain_refs(parts, merged.refs)

        task = flood_task
    else:
        task, args = grains_task, lambda ib: (job, ib[1], merged.block_lut(ib[0]))
    for (i, b), arrays in runner.run(task, todo2, args):
        if seeded:
            state.save_block(b.id, arrays, kind="final")
        state.mark("done2", b.id)
        steps.finished()
        if on_block:
            on_block("grains", b.id)
    pairs, table, n_grains = None, merged.table, merged.n_grains
    if seeded:
        finals = [state.load_block(b.id, kind="final") for b in plan.blocks]
        if refine:  # the flooded grains (scratch) split and joined into the output
            finals, n_grains, pairs, record, refined_orientations = _refine_grains(runner, job, plan, state, n_grains)
            method["split_grains"].update(record)
            steps.advance(n)
        table = final_table(finals, n_grains, symmetry=net.symmetry, image_shape=plan.shape,
                            pixel_size=img.pixel_size, aligned=merged.refs is not None)
        pairs = pairs if refine else [f["neighbour_pairs"] for f in finals]
    if setting:  # each final grain measured whole; with the lattice mask, a network's grains must show a lattice
        sums = _final_grain_sums(runner, job, plan, state, finals if seeded else None)
        steps.advance(n)
        kept = weak_lattice_lut(sums, n_grains) if weak_lattice else None
        if weak_lattice:  # the output's grains from the flooded scratch, renumbered where some are left out
            lut = kept if kept is not None else np.arange(n_grains + 1, dtype=np.uint32)
            todo3 = [b for b in plan.blocks if b.id not in done3]
            for b, _ in steps.counted(runner.run(relabel_task, todo3, lambda b: (job, b, lut)), len(todo3)):
                state.mark("done3", b.id)
        if kept is not None:
            table, sums, n_grains = renumbered_table(table, kept), renumbered_sums(sums, kept), int(kept.max())
            pairs = None  # grains on either side of one left out may now be neighbours
        if measure_grains:
            table |= lattice_columns(sums, n_grains, setting)
        if keep_grain_sums:
            state.save_grain_sums(sums)
    if pairs is None:
        # Neighbours across the unassigned band between grains, as grain_table counts them: needs the final
        # grains of each block plus a few points beyond it, so it reads them back once they are all written.
        found = runner.run(neighbours_task, plan.blocks, lambda b: (job, b))
        # Counted where planned (plain pair rule); after grains were left out it is an extra pass.
        pairs = [p for _, p in (steps.counted(found, n) if not seeded else found)]
    table["n_neighbours"] = neighbour_counts(pairs, n_grains)
    if refine:  # measured while refining (each grain once after the split, a joined grain once more)
        table |= refined_orientations
    elif seeded and job["grain_orientation"]:
        table |= measured_orientations(runner, job, plan, finals, n_grains)
        steps.advance(n)
    if field and not job["voxel_orientations"]:  # the orientation map: each grain's orientation (every block again after a resume: cheap)
        from micro_sym.grains.field import map_orientations

        lut, table = map_orientations(table, n_grains)
        for _ in steps.counted(runner.run(paint_task, plan.blocks, lambda b: (job, b, lut)), n):
            pass

    write_grain_csv(state.csv_path, table, unit=img.unit or "px", atomic=True, pixel_size=img.pixel_size,
                    symmetry=net.symmetry, command="micro-sym segment",
                    grain_rule={**rule, "min_size": min_size, "boundary_threshold": float(boundary_threshold)})
    manifest.update(status="complete", n_grains=n_grains)
    import zarr

    root = zarr.open_group(str(state.zarr_path), mode="a")
    root.attrs["micro_sym"] = {k: manifest[k] for k in ("model", "method", "threshold", "grain_rule", "min_size",
                                                        "boundary_threshold", "block", "chunk", "halo", "code_version",
                                                        "n_grains")} | {"symmetry": net.symmetry}
    state.write_manifest(manifest)  # the last write: only now is the input reported complete
    state.cleanup_scratch()
    forget_arrays(state.zarr_path)
    forget_arrays(state.labels_path)
    forget_arrays(state.field_path)
    forget_arrays(state.flooded_path)
    result.status = "complete"
    result.n_grains = n_grains
    result.seconds = time.perf_counter() - t0
    return result


def _fused_input(img, path: Path, out_dir, nets: tuple, runner, auto: dict, *, progress, on_block, dry_run,
                 **settings) -> InputResult:
    """An input that measures as one set of fringes (:mod:`.fusion`): fringes-2d and robust-2d (``nets``)
    each run whole into the output's run state (each resumable), then their grains are fused into
    ``OUT/NAME.zarr`` + ``OUT/NAME_grains.csv`` with two phases. A resume skips the finished runs and
    repeats the fusion, which is cheap and writes the same bytes."""
    import shutil

    from micro_sym.inference import fusion

    t0 = time.perf_counter()
    state = RunState(Path(out_dir), img.name)
    keep = settings.pop("keep_grain_sums", False)
    common = dict(runner=runner, auto=auto, dry_run=dry_run, on_block=on_block, keep_grain_sums=True, **settings)
    if dry_run:
        res = [_segment_input(img, path, state.root / label, net, progress=None, **common)
               for label, net in zip(fusion.PHASE_NETWORKS, nets)]
        return dataclasses.replace(res[1], n_blocks=res[0].n_blocks + res[1].n_blocks, zarr=str(state.zarr_path),
                                   csv=str(state.csv_path), plan=_fused_plan(res, state))
    model = {"name": "+".join(net.name for net in nets),
             "sha256": hashlib.sha256("".join(net.sha256 for net in nets).encode()).hexdigest()}
    manifest, skipped = _start_composite(state, img, path, settings, model)
    if skipped:
        return skipped
    runs, done = [], 0
    for i, (label, net) in enumerate(zip(fusion.PHASE_NETWORKS, nets)):
        def part_progress(d, total, i=i, before=done):  # the first run counts the second as large as itself
            if progress:
                progress(before + d, before + total * (2 - i))
        runs.append(_segment_input(img, path, state.root / label, net, progress=part_progress, **common))
        done += 2 * runs[-1].n_blocks
    manifests = [RunState(state.root / label, img.name).read_manifest() for label in fusion.PHASE_NETWORKS]
    fringes, square = manifests
    plan = plan_blocks(img.data.shape, tuple(fringes["block"]), halo=0, chunk=tuple(fringes["chunk"]), pad=False)
    create_outputs(state, plan.shape, 2, plan.chunk, pixel_size=img.pixel_size, unit=img.unit)
    job = {"input": str(path), **{k: settings[k] for k in ("array", "level", "channel")}, "shape": plan.shape,
           "zarr": str(state.zarr_path), "fringes": runs[0].zarr, "square": runs[1].zarr,
           "grain_lattice": square["method"].get("grain_lattice")}
    cores = [b.core for b in plan.blocks]
    n_fringes, n_square = runs[0].n_grains, runs[1].n_grains
    lut = fusion.added_grains((c for _, c in runner.run(fusion.count_task, cores, lambda c: (job, c))), n_fringes, n_square)
    for _ in runner.run(fusion.write_task, cores, lambda c: (job, c, lut)):
        pass
    n_grains = n_fringes + int(np.count_nonzero(lut))
    parts = [p for _, p in runner.run(fusion.stats_task, cores, lambda c: (job, c))]
    table = fusion.fused_table(parts, n_fringes, n_grains, image_shape=plan.shape, pixel_size=img.pixel_size)
    settings_lattice = (fringes["method"].get("grain_lattice"), job["grain_lattice"])
    if settings["measure_grains"] and all(settings_lattice):  # each grain's lattice at its phase's order
        # fringes-2d's grains are its run's, pixel for pixel: their sums are that run's; the added ones are measured.
        kept = RunState(state.root / fusion.PHASE_NETWORKS[0], img.name).load_grain_sums()
        added = _final_grain_sums(runner, job, plan, state, ids=np.arange(n_fringes + 1, n_grains + 1))
        sums = {key: np.concatenate([np.asarray(kept[key]), np.asarray(added[key])]) for key in added}
        table |= fusion.fused_lattice_columns(sums, table["phase"], settings_lattice)
        if keep:
            state.save_grain_sums(sums)
    rule = {**fringes["grain_rule"], "min_size": fringes["min_size"], "boundary_threshold": fringes["boundary_threshold"]}
    write_grain_csv(state.csv_path, table, unit=img.unit or "px", atomic=True, pixel_size=img.pixel_size,
                    phases=list(fusion.PHASES), command="micro-sym segment", grain_rule=rule)
    method = {"name": "fused", "auto": auto, "networks": list(fusion.PHASE_NETWORKS),
              "runs": [{"network": label, "n_grains": r.n_grains, "method": m["method"]}
                       for label, r, m in zip(fusion.PHASE_NETWORKS, runs, manifests)],
              "added_grains": n_grains - n_fringes}
    manifest.update(status="complete", n_grains=n_grains, method=method, plan=_fused_plan(runs, state, method))
    import zarr

    root = zarr.open_group(str(state.zarr_path), mode="a")
    root.attrs["micro_sym"] = {"model": manifest["model"], "method": method, "threshold": fringes["threshold"],
                               "grain_rule": fringes["grain_rule"], "min_size": fringes["min_size"],
                               "boundary_threshold": fringes["boundary_threshold"], "block": list(plan.block),
                               "chunk": list(plan.chunk), "code_version": manifest["code_version"],
                               "n_grains": n_grains, "symmetry": fusion.PHASES[0]["symmetry"],
                               "phases": fusion.phase_records(n_fringes, n_grains)}
    state.write_manifest(manifest)  # the last write: only now is the input reported complete
    for label in fusion.PHASE_NETWORKS:  # the two runs' outputs were scratch
        shutil.rmtree(state.root / label, ignore_errors=True)
    state.cleanup_scratch()
    forget_arrays(state.zarr_path)
    for r in runs:
        forget_arrays(r.zarr)
    return InputResult(str(path), img.name, "complete", str(state.zarr_path), str(state.csv_path),
                       tuple(img.data.shape), n_blocks=sum(r.n_blocks for r in runs),
                       blocks_run=sum(r.blocks_run for r in runs), n_grains=n_grains,
                       seconds=time.perf_counter() - t0, plan=manifest["plan"])


def _start_composite(state: RunState, img, path: Path, settings: dict, model: dict, **extra) -> tuple[dict, InputResult | None]:
    """Start an input whose output is made from runs kept in its run state (a fused input, a split one):
    ``(manifest, None)`` with its manifest written, or ``(manifest, result)`` where a previous run of the
    same settings (``extra`` among them) completed it."""
    manifest = {"version": 1, "input": fingerprint(path) | {k: settings[k] for k in ("array", "level", "channel")},
                "model": model, "shape": list(img.data.shape), "ndim": img.ndim,
                **{k: settings[k] for k in ("block", "chunk", "threshold", "min_size", "boundary_threshold")},
                **extra, "code_version": code_version(), "status": "running"}
    if state.check_compatible(manifest) == "complete":
        old = state.read_manifest()
        return manifest, InputResult(str(path), img.name, "skipped", str(state.zarr_path), str(state.csv_path),
                                     tuple(img.data.shape), n_grains=int(old.get("n_grains", 0)), plan=old.get("plan", {}))
    state.prepare()
    state.write_manifest(manifest)
    return manifest, None


def _split_input(img, path: Path, out_dir, net, runner, *, progress, on_block, dry_run, **settings) -> InputResult:
    """:func:`segment_input` with ``split_grains``: the input segmented into the run state, then its grains
    split (:mod:`.split_run`) into ``OUT/NAME.zarr`` + ``OUT/NAME_grains.csv``."""
    import shutil

    from micro_sym.classical.filter_bank import lattice_constant
    from micro_sym.classical.grain_lattice import grain_columns, lattice_order
    from micro_sym.grains.split import SPLIT_RULE, split_ids
    from micro_sym.grains.stats import write_grain_csv
    from micro_sym.inference import fusion
    from micro_sym.inference.blocks import plan_blocks
    from micro_sym.inference.split_run import SOURCE, lattice_settings, pieces_task, split_phases, write_task

    t0 = time.perf_counter()
    state = RunState(Path(out_dir), img.name)
    common = dict(runner=runner, on_block=on_block, **settings)
    if dry_run:
        res = _segment_input(img, path, state.root / SOURCE, net, progress=None, dry_run=True, **common)
        plan = {**res.plan, "outputs": [str(state.zarr_path), str(state.csv_path)],
                "method": {**res.plan.get("method", {}), "split_grains": {"rule": SPLIT_RULE}}}
        return dataclasses.replace(res, zarr=str(state.zarr_path), csv=str(state.csv_path), plan=plan)
    base = getattr(net, "network", net)  # auto: its square network names the run
    model = {"name": "auto" if base is not net else net.name, "sha256": hashlib.sha256(str(base.sha256).encode()).hexdigest()}
    manifest, skipped = _start_composite(state, img, path, settings, model, split_grains=SPLIT_RULE)
    if skipped:
        return skipped
    source = _segment_input(img, path, state.root / SOURCE, net, progress=progress, dry_run=False,
                            keep_grain_sums=True, **common)
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
    found = _split_pieces(runner, job, plan, state, pieces_task, {"zarr": job["source"]})
    parents = np.concatenate([np.full(int(p.max()), g, np.int64) for g, _, p in found]) if found else np.zeros(0, np.int64)
    ranges = [tuple(p["grains"]) for p in phases] if len(phases) > 1 else None
    lut, piece_ids, new_ranges = split_ids(n_source, parents, ranges)
    firsts = np.cumsum([0] + [int(p.max()) for _, _, p in found])[:-1]
    meeting = _pieces_meeting(found, piece_ids[firsts] if len(found) else [], cores)
    for _ in runner.run(write_task, list(range(len(cores))), lambda i: (job, cores[i], lut, meeting[i])):
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
    if settings["measure_grains"]:  # each grain's lattice as the run measured it; the split ones and their pieces anew
        split_ids_new = np.r_[lut[np.unique(parents)], piece_ids].astype(np.int64)
        sums = _final_grain_sums(runner, job, plan, state, ids=split_ids_new)
        kept = RunState(state.root / SOURCE, img.name).load_grain_sums()
        unsplit = ~np.isin(kept["ids"], parents)
        sums = {key: np.concatenate([np.asarray(lut[kept["ids"][unsplit]] if key == "ids" else kept[key][unsplit],
                                                sums[key].dtype), sums[key]]) for key in sums}
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
    state.cleanup_scratch()
    forget_arrays(state.zarr_path)
    forget_arrays(source.zarr)
    return InputResult(str(path), img.name, "complete", str(state.zarr_path), str(state.csv_path),
                       tuple(img.data.shape), n_blocks=source.n_blocks, blocks_run=source.blocks_run,
                       n_grains=n_grains, seconds=time.perf_counter() - t0, plan=manifest["plan"])


def _split_pieces(runner, job: dict, plan, state: RunState, pieces_task, grains_job: dict) -> list:
    """Every split grain's ``(grain, lo, pieces)`` in grain order by ``pieces_task`` (a 2D split's or a
    volume's), each grain decided by the block holding its box's first pixel; kept in the run state (a
    resume reads them back). ``grains_job``: where :func:`extents_task` finds the grains."""
    try:
        with state.load_block("pieces", kind="split") as f:
            return [(int(g), f["lo"][i], f[f"p{int(g)}"]) for i, g in enumerate(f["grain"])]
    except FileNotFoundError:
        pass
    extents = merge_extents(e for _, e in runner.run(extents_task, plan.blocks, lambda b: (grains_job, b)))
    owner = np.full(len(extents["ids"]), -1, np.int64)
    for i, b in enumerate(plan.blocks):
        owner[np.all([(c.start <= extents["lo"][:, a]) & (extents["lo"][:, a] < c.stop)
                      for a, c in enumerate(b.core)], axis=0)] = i
    groups = [{key: values[owner == i] for key, values in extents.items()} for i in range(len(plan.blocks))]
    found = sorted((item for _, part in runner.run(pieces_task, [g for g in groups if len(g["ids"])], lambda g: (job, g))
                    for item in part), key=lambda item: item[0])
    (state.root / "split").mkdir(exist_ok=True)
    state.save_block("pieces", {"grain": np.array([g for g, _, _ in found], np.int64),
                                "lo": np.array([lo for _, lo, _ in found], np.int64).reshape(-1, len(plan.shape)),
                                **{f"p{g}": p for g, _, p in found}}, kind="split")
    return found


def _pieces_meeting(found: list, first_ids, cores: list) -> list:
    """For each block core, the split grains' pieces whose box meets it: ``(box, piece labels, first id)``
    (``found`` as :func:`_split_pieces` returns it, ``first_ids`` the new id of each grain's first piece)."""
    pieces = [(tuple(slice(int(a), int(a) + n) for a, n in zip(lo, p.shape)), p, int(first))
              for (_, lo, p), first in zip(found, first_ids)]
    return [[p for p in pieces if all(b.start < c.stop and c.start < b.stop for b, c in zip(p[0], core))]
            for core in cores]


def _refine_grains(runner, job: dict, plan, state: RunState, n_grains: int):
    """A volume's flooded grains split and joined into the output (:mod:`.refine3d_run`): ``(finals,
    n_grains, pairs)`` of the output's grains, in place of the flood's, the counts for the record and the
    table's measured-orientation columns."""
    from micro_sym.grains.split3d import join_lut
    from micro_sym.inference.refine3d_run import pieces_task, stats_task, write_task

    found = _split_pieces(runner, job, plan, state, pieces_task, job)
    counts = [int(p.max()) for _, _, p in found]
    n_split = n_grains + sum(counts)
    cores = [b.core for b in plan.blocks]
    meeting = _pieces_meeting(found, n_grains + 1 + np.cumsum([0] + counts)[:-1], cores)

    def write(lut):
        for _ in runner.run(write_task, list(range(len(cores))), lambda i: (job, cores[i], lut, meeting[i])):
            pass

    write(np.arange(n_split + 1, dtype=np.uint32))
    parts = [part for _, part in runner.run(stats_task, plan.blocks, lambda b: (job, b))]
    quaternions, quality, family = measure_grains(runner, job, plan, parts, n_split)
    lut = join_lut(np.concatenate([p["neighbour_pairs"] for p in parts]), quaternions, job["refine"]["rule"]["join"])
    write(lut)
    finals = [{**p, "ids": lut[p["ids"]].astype(np.int64),
               "contacts": np.c_[lut[p["contacts"][:, :2]], p["contacts"][:, 2:]].astype(np.int64)} for p in parts]
    pairs = [np.sort(lut[p["neighbour_pairs"]], axis=1).astype(np.int64) for p in parts]
    pairs = [np.unique(p[p[:, 0] != p[:, 1]], axis=0).reshape(-1, 2) for p in pairs]
    n_final = int(lut.max(initial=0))
    # A grain the join left alone keeps its measurement (its voxels, and so its window, are the same);
    # the joined ones are measured whole, with the family the volume's grains chose.
    joined = np.bincount(lut, minlength=n_final + 1) > 1
    joined[0] = False
    final_q, final_quality = np.full((n_final + 1, 4), np.nan), np.zeros(n_final + 1)
    alone = ~joined[lut[1:]]
    final_q[lut[1:][alone]], final_quality[lut[1:][alone]] = quaternions[1:][alone], quality[1:][alone]
    if joined.any():
        again_q, again_quality, _ = measure_grains(runner, job, plan, finals, n_final, only=joined, family=family)
        final_q[joined], final_quality[joined] = again_q[joined], again_quality[joined]
    record = {"grains_split": len(found), "grains_added": n_split - n_grains, "grains_joined": n_split - n_final}
    return finals, n_final, pairs, record, orientation_columns(final_q, final_quality)


def _fused_plan(runs, state, method=None) -> dict:
    """The plan record of a fused input: the square run's (its scale and lattice mask), its method fused."""
    from micro_sym.inference.fusion import PHASE_NETWORKS

    base = runs[1].plan
    fused = method or {"name": "fused", "networks": list(PHASE_NETWORKS)}
    return {**base, "outputs": [str(state.zarr_path), str(state.csv_path)], "method": {**base["method"], **fused}}


def expand_inputs(inputs) -> list[Path]:
    """Paths and glob patterns -> existing paths, in order, without duplicates."""
    import glob

    out = []
    for item in inputs:
        item = str(item)
        matches = sorted(glob.glob(item)) if any(c in item for c in "*?[") else [item]
        if not matches:
            raise MicroSymError(f"{item}: no file matches this pattern")
        for m in matches:
            p = Path(m)
            if p not in out:
                out.append(p)
    return out


def segment(inputs, out_dir, *, model=None, method: str | None = None, lattice: str | None = None,
            period: float | None = None, precision: str | None = None, forward_memory: float | None = None,
            scheduler: str = "threads", workers: int | None = None, device: str = "cpu", on_input=None,
            **kwargs) -> list[InputResult]:
    """Segment many inputs; a failing input is reported and the others still run.

    Parameters
    ----------
    inputs : list of str or Path
        Files, Zarr stores or glob patterns.
    out_dir : str or Path
    model : str, Path, Network, torch.nn.Module or ClassicalMethod, optional
        A bundled name, a model file, or an in-memory model with the SegModel interface (default:
        ``"default-2d"`` for ``method="network"``, ``"robust-2d"`` for ``"auto"`` (and ``"atoms-2d-hex"``
        for its hexagonal inputs); with neither
        a model nor a method, volumes run :data:`DEFAULT_3D_MODEL` and micrographs ``auto``, also
        in one batch). Not with ``method="classical"`` (except a configured ClassicalMethod).
    method : {"auto", "network", "classical"}, optional
        ``"classical"``: the training-free Gabor filter bank (2D only, :mod:`.classical`), block-wise
        with ``close=False`` (boundary gap closing is not tile-local), period estimated once per input.
        ``"auto"``: per 2D input, classical below the calibrated fringe SNR of
        :mod:`.method_choice`, else the network. Default: ``"network"`` when a model is given, else ``"auto"``.
    lattice, period :
        The images' lattice, ``"square"``, ``"hexagonal"`` or ``"fringes"``, and lattice constant in px (default:
        measured per input from the power spectrum). The classical method maps that lattice; a 2D
        network runs on the image resampled to its training period (:mod:`.rescale`) and refuses
        a lattice it does not know; ``auto`` gives a lattice none of its networks knows to the
        classical method.
    precision : {"fp32", "bf16"}, optional
        The network's arithmetic (:attr:`Network.precision`): bf16 is several times faster for 3D
        networks on CPUs with bf16 units and not exact. Default ``$MICRO_SYM_PRECISION``, else fp32.
    forward_memory : float, optional
        MiB one forward's activations may take (:attr:`Network.forward_memory`): a larger 3D tile runs
        through the network in z slabs, same outputs, some recompute. Default ``$MICRO_SYM_FORWARD_MB``,
        else 640.
    scheduler : str
        ``threads`` (default, in process), ``processes``, ``local-cluster`` or ``tcp://HOST:PORT``.
    workers : int, optional
        Worker threads/processes (default: up to 2, the cores available).
    on_input : callable, optional
        ``on_input(result)`` after each input.
    **kwargs
        Passed to :func:`segment_input` (``block``, ``chunk``, ``threshold``, ``min_size``, ``overwrite``, ...).

    Returns
    -------
    list of InputResult

    Raises
    ------
    MicroSymError
        For the whole batch: bad settings, an unreachable scheduler, an output directory that cannot
        be written, or two inputs that would write the same ``OUT/NAME.zarr``.
    """
    from micro_sym.inference.network import as_network, load_network
    from micro_sym.inference.scheduler import make_runner

    out_dir = Path(out_dir)
    paths = expand_inputs(inputs)
    _check_names(paths, out_dir, kwargs)
    if method is None:
        method = "network" if model is not None else "auto"
    if method == "auto" and model is None and paths:
        # auto chooses among 2D methods; volumes get the 3D network. A mixed batch runs as two.
        dims = [_ndim(p, kwargs) for p in paths]
        if all(d == 3 for d in dims):
            model, method = DEFAULT_3D_MODEL, "network"
        elif 3 in dims:
            common = dict(lattice=lattice, period=period, precision=precision, forward_memory=forward_memory,
                          scheduler=scheduler, workers=workers, device=device, on_input=on_input, **kwargs)
            volumes = segment([p for p, d in zip(paths, dims) if d == 3], out_dir, model=DEFAULT_3D_MODEL, **common)
            images = segment([p for p, d in zip(paths, dims) if d != 3], out_dir, method="auto", **common)
            by_input = {r.input: r for r in volumes + images}
            return [by_input[str(p)] for p in paths]
    if method not in ("auto", "network", "classical"):
        raise MicroSymError(f"--method {method}: expected auto, network or classical")
    auto = None
    if method == "classical" or isinstance(model, ClassicalMethod):
        if model is not None and not isinstance(model, ClassicalMethod):
            raise MicroSymError("--model is for --method network or auto; the classical method needs no model")
        net = model if model is not None else ClassicalMethod(lattice=lattice, period=period)
    else:
        # auto without a model has a network for each lattice family it knows (method_choice).
        others = AUTO_MODELS_BY_LATTICE if method == "auto" and model is None else {}
        if model is None:
            model = AUTO_MODEL if method == "auto" else "default-2d"

        def prepared(given):
            net = given if isinstance(given, Network) else (
                load_network(given, device) if isinstance(given, (str, Path)) else as_network(given))
            if precision is not None:
                from micro_sym.deploy.runtime import chosen_precision

                net = dataclasses.replace(net, precision=chosen_precision(precision))
            if forward_memory is not None:
                from micro_sym.inference.forward_slabs import chosen_forward_memory

                net = dataclasses.replace(net, forward_memory=chosen_forward_memory(forward_memory))
            return net

        net = prepared(model)
        if period is not None and not period > 0:
            raise MicroSymError(f"--period {period:g}: the lattice constant must be a positive number of pixels")
        if method == "auto":
            fringes = (AUTO_FRINGES_MODEL, lambda: prepared(AUTO_FRINGES_MODEL)) if others else None
            auto = AutoMethod(net, lattice=lattice, period=period, fringes_network=fringes,
                              other_networks={lat: (name, lambda name=name: prepared(name)) for lat, name in others.items()})
        elif lattice is not None and net.ndim == 2 and find_lattice(lattice, ndim=2).name != net.symmetry:
            raise MicroSymError(f"--lattice {lattice}: model '{net.name}' maps {net.symmetry} lattices only; "
                                f"use --method classical --lattice {lattice}")
    if not kwargs.get("dry_run"):
        _check_writable(out_dir)
    runner = None if kwargs.get("dry_run") else make_runner(scheduler, workers)
    results = []
    try:
        if runner is not None:
            runner.bind(net, device)
        for p in paths:
            t0 = time.perf_counter()
            try:
                res = segment_input(p, out_dir, auto or net, runner, device=device, period=period, lattice=lattice, **kwargs)
            except MicroSymError as err:
                res = InputResult(str(p), p.name, "failed", error=str(err))
            res.seconds = res.seconds or time.perf_counter() - t0
            results.append(res)
            if on_input:
                on_input(res)
    finally:
        if runner is not None:
            runner.close()
    return results


def _final_grain_sums(runner, job: dict, plan, state: RunState, finals=None, ids=None) -> dict:
    """The lattice sums of every final grain (:func:`lattice_task`), each measured by the block holding
    its window's first pixel; kept in the run state, as the grains may be renumbered after them.
    ``finals``: the seeded flood's per-block arrays, which hold the grains' extents (else a pass finds them).
    ``ids``: only these grains."""
    try:
        return dict(state.load_block("sums", kind="lattice"))
    except FileNotFoundError:
        pass
    if finals is not None:
        parts = ({key: f[f"extent_{key}"] for key in ("ids", "lo", "hi", "count", "coord_sum")} for f in finals)
    else:
        parts = (e for _, e in runner.run(extents_task, plan.blocks, lambda b: (job, b)))
    extents = merge_extents(parts)
    if ids is not None:
        extents = {key: values[np.isin(extents["ids"], ids)] for key, values in extents.items()}
    starts = np.array([[w.start for w in win] for win in grain_windows(extents)], np.int64).reshape(-1, 2)
    owner = np.full(len(starts), -1, np.int64)
    for i, b in enumerate(plan.blocks):
        owner[np.all([(c.start <= starts[:, a]) & (starts[:, a] < c.stop) for a, c in enumerate(b.core)], axis=0)] = i
    groups = [{key: values[owner == i] for key, values in extents.items()} for i in range(len(plan.blocks))]
    parts = [part for _, part in runner.run(lattice_task, [g for g in groups if len(g["ids"])], lambda g: (job, g))]
    sums = {key: np.concatenate([np.asarray(p[key]) for p in parts]) if parts else np.zeros(0, dtype)
            for key, dtype in (("ids", np.int64), ("ck", np.complex128), ("c2", np.complex128), ("c0", np.float64))}
    state.save_block("sums", sums, kind="lattice")
    return sums


def _check_names(paths, out_dir: Path, kwargs) -> None:
    """Refuse a batch in which two inputs have the same output name (``d1/a.tif`` and ``d2/a.zarr``).

    Both would write ``OUT/a.zarr``: the second would resume or refuse the first one's output, or,
    with ``overwrite``, delete it. Inputs that cannot be opened are skipped here (reported later).
    """
    from micro_sym.io import open_image

    seen: dict = {}
    for p in paths:
        try:
            name = open_image(p, array=kwargs.get("array"), level=kwargs.get("level", 0),
                              channel=kwargs.get("channel")).name
        except MicroSymError:
            continue
        if name in seen:
            raise MicroSymError(f"{seen[name]} and {p} would both write {out_dir / (name + '.zarr')}; rename one "
                                f"or segment them into different --out directories")
        seen[name] = p


def _ndim(path, kwargs) -> int | None:
    """Dimensionality of an input, or None where it cannot be opened (its error is reported later)."""
    from micro_sym.io import open_image

    try:
        return open_image(path, array=kwargs.get("array"), level=kwargs.get("level", 0),
                          channel=kwargs.get("channel")).ndim
    except MicroSymError:
        return None


def _check_writable(out_dir: Path) -> None:
    import os
    import tempfile

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out_dir, prefix=".write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise os_error(out_dir, err, "write to output directory") from None

"""In-memory segmentation, tile by tile, with progress: what an interactive front end runs.

The napari plugin's widgets run :func:`iter_segment`: a generator that segments a 2D image or 3D
volume (numpy, dask or zarr; read a tile at a time) and ``yield``\\ s a :class:`Progress` after every
tile, so a front end can show progress and cancel between tiles, then *returns* a
:class:`SegmentResult`. It runs the block engine's steps (:mod:`micro_sym.inference.engine`) without
files: tiles through :func:`~micro_sym.inference.tiles.iter_tiles` with the whole image's intensity
range and a halo of the network's receptive field, grains labelled per tile, merged across tile faces
(:func:`~micro_sym.grains.blockwise.merge_blocks`) and grown by the seeded rule's flood. The result
equals whole-image inference (:func:`micro_sym.inference.whole_image.segment_image`) whatever the tile
size (the tests check it). Results beyond ~1 GB live in temporary Zarr arrays.

>>> res = segment(image, SegmentSettings(model="default-2d", tile=256))   # doctest: +SKIP
>>> res.grains.max() == res.n_grains                                      # doctest: +SKIP
True
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field, replace as replaced
from pathlib import Path

import numpy as np

from micro_sym.errors import MicroSymError
from micro_sym.orientation.symmetry import lattice as find_lattice

#: Model choice meaning "no network": the Gabor filter-bank method of :mod:`micro_sym.classical`.
CLASSICAL = "classical"
#: Model choice meaning "choose per image" (:mod:`micro_sym.inference.method_choice`): the filter
#: bank below the calibrated lattice fringe SNR, else the robust-2d network; volumes: DEFAULT_3D.
AUTO = "auto"
#: The network "auto" runs for 3D volumes (the CLI does the same for a batch of volumes).
DEFAULT_3D = "default-3d"
#: Above this many pixels the per-grain table comes from the tile merge (additive sums, no GOS)
#: instead of :func:`micro_sym.grains.grain_table` over the whole label map (which needs a few
#: volume-sized temporaries).
WHOLE_TABLE_MAX_PIXELS = 64_000_000
#: Above this many output bytes the result maps live in a temporary Zarr store on disk instead of
#: RAM; napari displays Zarr arrays lazily, chunk by chunk.
IN_MEMORY_MAX_BYTES = 1 << 30


# ------------------------------------------------------------------------------------- settings


@dataclass
class SegmentSettings:
    """What the "Segment grains" widget asks for.

    Attributes
    ----------
    model : str
        A bundled model name (``"default-2d"``), the path of a micro_sym model file (trained,
        pruned or exported with :func:`micro_sym.models.save_model`), :data:`CLASSICAL` or :data:`AUTO`.
    device : str
        torch device (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``).
    tile : int or None
        Edge of the processing tile (core, without halo) in pixels; ``None`` = the engine's default.
    threshold : float
        Grain misorientation threshold in degrees (docs/design.md §3).
    min_size : int or None
        Grains with fewer pixels are merged into a neighbour (a network's grain seeds: dropped); None:
        the engine's default (:func:`~micro_sym.inference.whole_image.grain_min_size`).
    boundary_threshold : float
        Boundary probability at or above which a pixel separates grains.
    lattice : str
        Lattice of the classical method (``"square"``, ``"hexagonal"`` or ``"fringes"``); networks know their own.
    period : float or None
        The image's lattice constant in px; None measures it from the power spectrum. A 2D network
        runs on the image resampled to its training period (:mod:`micro_sym.inference.rescale`).
    lattice_mask : bool
        Leave regions that show no lattice out of every grain (2D; networks through
        :mod:`micro_sym.inference.lattice_mask`, the classical method by the same ring contrast).
    split_grains : bool
        Split each grain that holds two lattice orientations (2D: :mod:`micro_sym.grains.split`; 3D
        harmonic networks: :mod:`micro_sym.grains.split3d`, which also joins neighbours measured
        alike), as ``micro-sym segment --split-grains`` does.
    """

    model: str = "default-2d"
    device: str = "cpu"
    tile: int | None = None
    threshold: float = 5.0
    min_size: int | None = None
    boundary_threshold: float = 0.5
    lattice: str = "square"
    period: float | None = None
    lattice_mask: bool = True
    split_grains: bool = False


@dataclass
class Progress:
    """One step of a run: ``done`` of ``total`` steps finished; ``stage`` says what happens now."""

    done: int
    total: int
    stage: str


@dataclass
class SegmentResult:
    """Maps, grains and per-grain statistics of one image.

    ``orientation`` is degrees ``(y, x)`` in 2D and quaternions ``(4, z, y, x)`` in 3D (docs/design.md §1);
    ``table`` maps column names to arrays, one row per grain (ids ``1..n_grains``).
    """

    grains: np.ndarray
    boundary: np.ndarray
    orientation: np.ndarray
    table: dict
    symmetry: str
    method: str
    pixel_size: tuple | None = None
    unit: str | None = None
    n_tiles: int = 1
    seconds: float = 0.0
    info: dict = field(default_factory=dict)

    @property
    def ndim(self) -> int:
        return self.grains.ndim

    @property
    def n_grains(self) -> int:
        return len(self.table.get("grain", ()))

    @property
    def period(self) -> float:
        """Symmetry period of the 2D angle (90° square, 60° hexagonal, 180° fringes)."""
        lat = find_lattice(self.symmetry, ndim=2, default=None)
        return 360.0 if lat is None else lat.period


# ------------------------------------------------------------------------------------ validation


def check_array(data, what: str = "image") -> None:
    """Refuse arrays that cannot be segmented (one-line :class:`MicroSymError`; ``what`` names the input)."""
    shape = tuple(int(s) for s in data.shape)
    if len(shape) not in (2, 3):
        raise MicroSymError(f"{what}: is {len(shape)}D with shape {shape}; choose a 2D image (y, x) or a "
                            f"3D volume (z, y, x) -- split channels or time points into separate layers first")
    dtype = np.dtype(data.dtype)
    if dtype == bool or not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        raise MicroSymError(f"{what}: pixels of type {dtype} cannot be segmented (need real numbers)")
    if min(shape) < 8:
        raise MicroSymError(f"{what}: shape {shape} is too small to segment (at least 8 pixels per axis)")


def check_settings(settings: SegmentSettings, ndim: int) -> None:
    """Checks that need no model loading: classical is 2D only, a model file must exist, sane numbers."""
    if settings.model == AUTO:
        if ndim != 2 and DEFAULT_3D not in available_models():
            raise MicroSymError("'auto' chooses between methods for 2D micrographs only; choose a 3D model file for volumes")
    elif settings.model == CLASSICAL:
        if ndim != 2:
            raise MicroSymError("the classical (filter-bank) method maps 2D micrographs only; choose a 3D model for volumes")
        find_lattice(settings.lattice, ndim=2)
    else:
        from micro_sym.models import BUNDLED

        if settings.model not in BUNDLED:
            path = Path(settings.model).expanduser()
            if not str(settings.model).strip():
                raise MicroSymError("no model file chosen; pick a .pt model file or a bundled model")
            if not path.is_file():
                raise MicroSymError(f"{path}: model file does not exist")
    if not 0 <= settings.threshold <= 180:
        raise MicroSymError(f"misorientation threshold {settings.threshold}: expected 0-180 degrees")
    if settings.min_size is not None and settings.min_size < 0:
        raise MicroSymError(f"minimum grain size {settings.min_size}: must not be negative")
    if settings.tile is not None and settings.tile < 16:
        raise MicroSymError(f"tile size {settings.tile}: use at least 16 pixels (or 0 for automatic)")


# ---------------------------------------------------------------------------------------- models

_NETWORKS: dict = {}
_NETWORKS_LOCK = threading.Lock()


def load_network(model: str, device: str = "cpu"):
    """The :class:`micro_sym.inference.Network` for a bundled name or model file, cached per file version.

    Loading the bundled 2D model costs seconds (escnn builds its filter bases), so a widget that is
    run several times keeps the exported network; a changed file (new mtime) is loaded again.
    """
    from micro_sym.inference.network import as_network
    from micro_sym.models import load_model, resolve_model_path

    _check_device(device)
    path = resolve_model_path(model)
    key = (str(path.resolve()), path.stat().st_mtime_ns, device)
    with _NETWORKS_LOCK:
        net = _NETWORKS.get(key)
        if net is None:
            net = as_network(load_model(model, device="cpu"), name=str(model))
            net.module.to(device).eval()
            _NETWORKS[key] = net
    return net


def _check_device(device: str) -> None:
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MicroSymError(f"device '{device}': no CUDA GPU is available to torch here; use 'cpu'")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise MicroSymError("device 'mps': Apple's Metal backend is not available here; use 'cpu'")
    try:
        torch.device(device)
    except (RuntimeError, TypeError):
        raise MicroSymError(f"device '{device}': not a torch device (use 'cpu', 'cuda' or 'cuda:N')") from None


def available_models() -> list[str]:
    """``auto`` (when its network is installed), the bundled model names (e.g. ``default-2d``), then ``classical``."""
    from micro_sym.inference.method_choice import AUTO_MODEL
    from micro_sym.models import BUNDLED
    from micro_sym.models.registry import WEIGHTS_DIR

    names = [n for n, f in BUNDLED.items() if (WEIGHTS_DIR / f).is_file()]
    if AUTO_MODEL in names:
        names.insert(0, AUTO)
    try:
        import micro_sym.classical  # noqa: F401

        names.append(CLASSICAL)
    except ImportError:
        pass
    return names


# ------------------------------------------------------------------------------------ segmenting


def iter_segment(image, settings: SegmentSettings, *, pixel_size=None, unit: str | None = None, net=None):
    """Segment a 2D image or 3D volume, yielding :class:`Progress` after each tile; returns a :class:`SegmentResult`.

    Parameters
    ----------
    image : array-like, (y, x) or (z, y, x)
        numpy, dask or zarr array; tiles are read one at a time (``np.asarray(image[tile])``), so a
        lazy image is never loaded whole.
    settings : SegmentSettings
    pixel_size : tuple of float, optional
        Physical pixel size per axis (for the statistics table).
    unit : str, optional
    net : Network, optional
        An already loaded network (otherwise ``settings.model`` is loaded, with a cache).

    Yields
    ------
    Progress

    Returns
    -------
    SegmentResult
        Through ``StopIteration.value``; :func:`segment` runs the generator to the end.

    Examples
    --------
    >>> res = segment(img, SegmentSettings(model="default-2d", tile=256))   # doctest: +SKIP
    >>> res.grains.max() == res.n_grains                                    # doctest: +SKIP
    True
    """
    check_array(image)
    check_settings(settings, image.ndim)
    if settings.model == AUTO and image.ndim == 3:  # auto picks among 2D methods; volumes get the 3D network
        from dataclasses import replace

        result = yield from _iter_network(image, replace(settings, model=DEFAULT_3D), pixel_size, unit, net)
        result.method = f"auto: {result.method} (3D volume)"
        return result
    if settings.model == AUTO:
        result = yield from _iter_auto(image, settings, pixel_size, unit)
    elif settings.model == CLASSICAL:
        result = yield from _iter_classical(image, settings, pixel_size, unit)
    else:
        result = yield from _iter_network(image, settings, pixel_size, unit, net)
    if settings.split_grains and image.ndim == 2:  # volumes: inside the network's run (_refine_volume)
        yield Progress(0, 1, "splitting grains that hold two lattice orientations")
        result = _split(image, result)
    return result


def _iter_auto(image, settings, pixel_size, unit):
    """The per-image choice of ``micro-sym segment --method auto``, then that method as chosen alone."""
    from dataclasses import replace

    from micro_sym.inference.method_choice import AUTO_FRINGES_MODEL, AUTO_MODEL, AUTO_MODELS_BY_LATTICE, AutoMethod

    yield Progress(0, 1, "lattice and fringe SNR from the power spectrum")
    others = {lat: (name, lambda name=name: load_network(name, settings.device)) for lat, name in AUTO_MODELS_BY_LATTICE.items()}
    auto = AutoMethod(load_network(AUTO_MODEL, settings.device), period=settings.period, other_networks=others,
                      fringes_network=(AUTO_FRINGES_MODEL, lambda: load_network(AUTO_FRINGES_MODEL, settings.device)))
    choice = auto.decide(image)
    if choice["chose"] == "classical":
        chosen = replace(settings, model=CLASSICAL, lattice=choice["lattice"], period=choice["period_px"])
        result = yield from _iter_classical(image, chosen, pixel_size, unit)
    else:
        net = auto.network_for(choice["lattice"])
        result = yield from _iter_network(image, replace(settings, model=choice["network"]), pixel_size, unit, net,
                                          measured=choice["measured"])
        if choice.get("fused_with"):  # one set of fringes: fringes-2d too, and both networks' grains fused
            fringes = yield from _iter_network(image, replace(settings, model=choice["fused_with"]), pixel_size, unit,
                                               auto.fused_network(), measured=choice["measured"])
            result = _fused(image, fringes, result)
    if choice["reason"].startswith("fringe SNR"):
        sign = "<" if choice["chose"] == "classical" else ">="
        why = f"fringe SNR {choice['fringe_snr_db']:.1f} dB {sign} {choice['classical_below_db']:g} dB"
    else:
        why = choice["reason"]
    result.method = f"auto: {result.method}, {why}"
    result.info["auto"] = choice
    return result


def _fused(image, fringes: SegmentResult, square: SegmentResult) -> SegmentResult:
    """fringes-2d's grains plus robust-2d's where it has none, in two phases, as ``micro-sym segment``
    writes them (:mod:`micro_sym.inference.fusion`, the image as one block); the table from the whole
    map, each grain's angles and spread at its phase's order."""
    from micro_sym.inference import fusion

    n_fringes = fringes.n_grains
    lut = fusion.added_grains([fusion.free_counts(fringes.grains, square.grains)], n_fringes, square.n_grains)
    maps = fusion.fused_maps(*({name: np.asarray(getattr(r, name)) for name in ("grains", "orientation", "boundary")}
                               for r in (fringes, square)), lut)
    n_grains = n_fringes + int(np.count_nonzero(lut))
    settings = (fringes.info.get("grain_lattice"), square.info.get("grain_lattice"))
    table = _phased_table(image, maps["grains"], maps["orientation"], fusion.grain_phases(n_fringes, n_grains),
                          settings, square.pixel_size, square.unit)
    info = {**square.info, "model": "+".join(fusion.PHASE_NETWORKS), "phases": fusion.phase_records(n_fringes, n_grains),
            "added_grains": n_grains - n_fringes, "fringes_grain_lattice": settings[0]}
    method = (f"networks {fusion.PHASE_NETWORKS[0]} and {fusion.PHASE_NETWORKS[1]}, grains fused ({n_fringes} fringes + "
              f"{n_grains - n_fringes} square)")
    return SegmentResult(maps["grains"], maps["boundary"], maps["orientation"], table, fusion.PHASES[0]["symmetry"],
                         method, square.pixel_size, square.unit, fringes.n_tiles + square.n_tiles,
                         fringes.seconds + square.seconds, info)


def _phased_table(image, grains, orientation, phase, settings, pixel_size, unit) -> dict:
    """The whole-map table of a fused map's grains (``phase``: each grain's, 1 fringes, 2 square): each
    grain's angles and spread at its phase's order, its lattice measured as the engine measures it
    (``settings``: the two networks' lattice measurements)."""
    from micro_sym.inference import fusion
    from micro_sym.inference.lattice_mask import measure_grains

    tables = [_table(grains, orientation, p["symmetry"], pixel_size, unit, None) for p in fusion.PHASES]
    table = tables[0] | {key: np.where(phase == 1, tables[0][key], tables[1][key])
                         for key in ("mean_angle", "gos") if key in tables[0]}
    table["phase"] = phase
    if all(settings):  # each grain's lattice at its phase's order, as the engine measures it
        sums = measure_grains(image, grains, settings[1])
        table |= fusion.fused_lattice_columns(sums, phase, settings)
    return table


def _split(image, result: SegmentResult) -> SegmentResult:
    """``result`` with each grain that holds two lattice orientations split (:mod:`micro_sym.grains.split`),
    numbered as ``micro-sym segment --split-grains`` numbers them (a fused map's phases stay contiguous)."""
    from micro_sym.classical import ring_frequency
    from micro_sym.classical.filter_bank import lattice_constant
    from micro_sym.classical.grain_lattice import grain_columns, lattice_order
    from micro_sym.grains.split import split_map
    from micro_sym.inference.lattice_mask import measure_grains
    from micro_sym.orientation.symmetry import lattice as find

    info = result.info
    setting = info.get("grain_lattice")
    if setting is None and info.get("period_px"):  # the classical method: its period and lattice
        lat = info["lattice"]
        setting = {"ring_frequency": ring_frequency(info["period_px"], lat), "lattice": lat, "k": lattice_order(lat)}
    if setting is None:
        raise MicroSymError("splitting grains needs the image's lattice period, and none was measured (give a period)")
    phases = [dict(p) for p in info.get("phases") or
              [{"name": result.symmetry, "symmetry": result.symmetry, "grains": [1, result.n_grains]}]]

    def phase_of(g):
        return next(p for p in phases if p["grains"][0] <= g <= p["grains"][1])

    several = len(phases) > 1
    grains, n_split, n_added, ranges = split_map(np.asarray(result.grains), np.asarray(result.orientation),
                                                 np.asarray(image), k_of=lambda g: find(phase_of(g)["symmetry"]).k,
                                                 lattice_of=lambda g: phase_of(g)["symmetry"],
                                                 period=lattice_constant(setting["ring_frequency"], setting["lattice"]),
                                                 phase_ranges=[tuple(p["grains"]) for p in phases] if several else None)
    n_grains = result.n_grains + n_added
    if several:
        for p, (first, last) in zip(phases, ranges):
            p["grains"] = [int(first), int(last)]
        phase = np.concatenate([np.full(p["grains"][1] - p["grains"][0] + 1, i) for i, p in enumerate(phases, 1)])
        table = _phased_table(image, grains, result.orientation, phase, (info.get("fringes_grain_lattice"), setting),
                              result.pixel_size, result.unit)
    else:
        table = _table(grains, result.orientation, result.symmetry, result.pixel_size, result.unit, None)
        measured = grain_columns(measure_grains(image, grains, setting), n_grains, setting)
        rows = np.asarray(table["grain"], np.int64) - 1  # the measured columns' rows are grains 1..n_grains
        table |= {name: np.asarray(values)[rows] for name, values in measured.items()}
    split = {"grains_split": n_split, "grains_added": n_added}
    info = {**info, "split_grains": split, **({"phases": phases} if several else {})}
    n = split["grains_split"]
    method = f"{result.method}; {n} grain{'' if n == 1 else 's'} split in two lattice orientations"
    return replaced(result, grains=grains, table=table, method=method, info=info)


def segment(image, settings: SegmentSettings, **kwargs) -> SegmentResult:
    """Run :func:`iter_segment` to completion (scripts and tests)."""
    gen = iter_segment(image, settings, **kwargs)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


def _iter_network(image, settings, pixel_size, unit, net, measured=None):
    """The engine's three grain passes (:mod:`micro_sym.inference.engine`) in memory: tiles through
    :func:`~micro_sym.inference.iter_tiles`, labels per tile, merge across tiles, then the final grains."""
    from micro_sym.grains.rules import is_seeded, seed_margin
    from micro_sym.grains.blockwise import grow
    from micro_sym.inference.blocks import plan_blocks
    from micro_sym.grains.blockwise import (final_table, flood_region, grain_refs, merge_blocks,
                                            neighbour_counts, neighbour_pairs, seed_parts)
    from micro_sym.classical.grain_lattice import grain_columns as lattice_columns
    from micro_sym.inference.lattice_mask import (grain_lattice, measure_grains, renumbered_sums, renumbered_table,
                                                 weak_lattice_lut)
    from micro_sym.inference.method_choice import NETWORK_FOR_LATTICE
    from micro_sym.inference.rescale import adapt_to_image, check_measured_lattice
    from micro_sym.grains.field import map_orientations, paint
    from micro_sym.inference.tiles import iter_tiles, label_tile, rule_maps
    from micro_sym.inference.whole_image import grain_min_size
    from micro_sym.inference.int8_ranges import with_int8_ranges
    from micro_sym.models.normalize import intensity_range

    t0 = time.perf_counter()
    yield Progress(0, 1, f"loading model {Path(str(settings.model)).name}")
    net = net if net is not None else load_network(settings.model, settings.device)
    if net.ndim != image.ndim:
        what = {2: "2D images", 3: "3D volumes"}
        raise MicroSymError(f"model '{settings.model}' segments {what[net.ndim]} but the image is "
                            f"{what[image.ndim][:-1]} of shape {tuple(image.shape)}; choose a {net.ndim}D model")
    shape = tuple(int(s) for s in image.shape)
    nd = len(shape)
    if nd == 2:
        yield Progress(0, 1, "lattice period from the power spectrum")
    # At the model's training lattice period, grains only where the lattice shows: as the CLI engine runs it.
    base = net
    net, scale, ring = adapt_to_image(net, image, period=settings.period, measured=measured,
                                      lattice_mask=settings.lattice_mask)
    check_measured_lattice(base, scale, models=NETWORK_FOR_LATTICE)  # the wrong lattice family: refused, as by the CLI
    rule = net.grain_rule(settings.threshold, nd)  # the CLI engine's grain rule, so results agree
    seeded = is_seeded(rule)
    if settings.split_grains and nd == 3 and not (seeded and getattr(net, "grain_field", None)):
        raise MicroSymError(f"splitting grains on a volume needs a 3D network with a harmonic field, and "
                            f"'{settings.model}' has none")
    min_size = grain_min_size(settings.min_size, ring, seeded=seeded)
    # Each grain's lattice measured whole from the image, as the CLI engine does it.
    lattice = grain_lattice(base, scale) if nd == 2 else None
    stride = max(int(net.total_stride), 1)
    halo = net.halo + seed_margin(rule)  # the seed core of a tile needs the boundary map beyond it
    if settings.tile:
        # The tile is the engine's processing block and output chunk; both must sit on the stride grid.
        tile = int(math.ceil(settings.tile / stride) * stride)
        plan = plan_blocks(shape, tile, halo=halo, stride=stride, chunk=tile)
    else:
        plan = plan_blocks(shape, None, halo=halo, stride=stride)
    n = len(plan.blocks)
    field = getattr(net, "grain_field", None)  # a 3D harmonic network: grains from its field (grains.field)
    total = n + 2  # the tiles, the merge, the statistics
    done = 0
    yield Progress(0, total, "intensity range")
    # One normalization for the whole image, as whole-image inference does (tiles must agree).
    lo, hi = intensity_range(image)
    net = with_int8_ranges(net, image, (lo, hi))  # an int8 network: this image's activation scales
    boundary = _allocate(shape, np.float32, n)
    orientation = _allocate(((net.out_channels - 1 if field else 4,) if nd == 3 else ()) + shape, np.float32, n)
    local = _allocate(shape, np.uint32, n)
    merge_data = {}
    tiles = iter_tiles(net, plan.blocks, lambda b: np.asarray(image[b.tile]), value_range=(lo, hi),
                       pad_mode=plan.pad_mode, device=settings.device, decode=False)
    for i, b in enumerate(plan.blocks):
        yield Progress(done, total, f"tile {i + 1}/{n}")
        out = next(tiles)
        maps = rule_maps(net, out.core_outputs)
        done += 1
        lab = label_tile(net, out, maps, rule=rule, shape=shape, boundary_threshold=settings.boundary_threshold)
        boundary[b.core] = maps["boundary"]
        orientation[(slice(None), *b.core) if nd == 3 else b.core] = maps["orientation"]
        local[b.core] = lab.labels
        merge_data[b.id] = lab.to_arrays()
    yield Progress(done, total, "merging grains across tiles")
    merged = merge_blocks(plan, lambda b: merge_data[b.id], symmetry=net.symmetry, threshold=rule["pair_threshold"],
                          min_size=min_size, small="drop" if seeded else "merge", pixel_size=pixel_size,
                          merge_threshold=rule["merge_threshold"], reach=rule["reach"], table=not seeded)
    grains = _allocate(shape, np.uint32, n)
    final = []
    for i, b in enumerate(plan.blocks):
        if not seeded:
            grains[b.core] = merged.block_lut(i)[np.asarray(local[b.core])]
            continue
        parts = seed_parts(plan, grow(b.core, rule["steps"] + 1, shape), merged.block_lut)
        grains[b.core], arrays = flood_region(b, parts, orientation=orientation, boundary=boundary, local_labels=local,
                                              steps=rule["steps"], symmetry=net.symmetry, image_shape=shape,
                                              boundary_threshold=settings.boundary_threshold,
                                              refs=grain_refs(parts, merged.refs))
        final.append(arrays)
    if seeded and field and settings.split_grains:  # split and joined by the measured lattice, as segment does
        yield Progress(done, total, "splitting and joining grains by the measured lattice")
        grains, final, merged.n_grains = _refine_volume(image, grains, orientation, net, scale)
    if seeded:
        merged.table = final_table(final, merged.n_grains, symmetry=net.symmetry, image_shape=shape, pixel_size=pixel_size,
                                   aligned=merged.refs is not None)
    n_grains, measured = merged.n_grains, {}
    if lattice:  # each grain measured whole; with the lattice mask, a network's grains must show a lattice
        sums = measure_grains(image, grains, lattice)
        kept = weak_lattice_lut(sums, n_grains) if seeded and ring else None
        if kept is not None:
            grains, sums, n_grains = kept[grains], renumbered_sums(sums, kept), int(kept.max())
            merged.table = renumbered_table(merged.table, kept) if merged.table else merged.table
        measured = lattice_columns(sums, n_grains, lattice)
    del local
    merge_data.clear()
    yield Progress(done + 1, total, "grain statistics")
    if (field or int(np.prod(shape)) > WHOLE_TABLE_MAX_PIXELS) and merged.table:  # the block table: neighbours block by block
        merged.table["n_neighbours"] = neighbour_counts([neighbour_pairs(grains, b.core, shape) for b in plan.blocks],
                                                        n_grains)
    if nd == 3:  # each grain's orientation measured from the volume, as the CLI engine measures it
        measured = _measured_orientations(image, grains, n_grains, scale)
    # A harmonic field: the table is the tiles' (no spread within a grain).
    table = dict(merged.table) if field else _table(grains, orientation, net.symmetry, pixel_size, unit, merged.table)
    rows = np.asarray(table["grain"], np.int64) - 1  # the measured columns' rows are grains 1..n_grains
    table |= {name: np.asarray(values)[rows] for name, values in measured.items()}
    if field:  # each grain's measured (else mean) orientation over its voxels, as the CLI engine paints it
        lut, table = map_orientations(table, n_grains)
        orientation = paint(grains, lut)
    info = {"model": str(settings.model), "halo": int(plan.halo), "tile": list(plan.block), "tiles": n,
            "recompute": round(plan.recompute, 3), "value_range": [lo, hi], "threshold": settings.threshold,
            "grain_rule": rule, "min_size": min_size, "boundary_threshold": settings.boundary_threshold,
            "device": settings.device, "scale": scale, "grain_lattice": lattice}
    how = f", resampled x{scale['scale']:.2f}" if scale and scale["resampled"] else ""
    return SegmentResult(grains, boundary, orientation, table, net.symmetry, f"network {settings.model}{how}",
                         _tuple(pixel_size), unit, n, time.perf_counter() - t0, info)


def _measured_orientations(image, grains, n_grains: int, scale) -> dict:
    """The table's ``lattice_q*`` and ``lattice_quality`` columns of a volume's grains (rows 1..n), measured
    from the volume (:func:`micro_sym.classical.grain_orientation3d.grain_orientations`); none where the
    volume shows no lattice ring."""
    from micro_sym.classical.grain_orientation3d import grain_orientations
    from micro_sym.inference.grain_orientations import orientation_columns, ring_3d

    ring = ring_3d(image, scale, None)
    if not (ring and n_grains):
        return {}
    r = grain_orientations(np.asarray(image, np.float32), grains, ring_frequency=ring, ids=np.arange(1, n_grains + 1))
    return orientation_columns(np.vstack([np.full((1, 4), np.nan), r["quaternions"]]), np.concatenate([[0.0], r["quality"]]))


def _refine_volume(image, grains, fields, net, scale):
    """A volume's grains split and joined by its measured lattice (:func:`micro_sym.grains.split3d.refine_volume`,
    what ``segment --split-grains`` writes): ``(grains, [block statistics of the whole volume], n_grains)``."""
    from micro_sym.grains.blockwise import block_grain_arrays
    from micro_sym.grains.reconstruct import orientation_kind
    from micro_sym.grains.split3d import refine_volume
    from micro_sym.inference.grain_orientations import ring_3d

    ring = ring_3d(image, scale, None)
    if not ring:
        raise MicroSymError("splitting grains needs the volume's lattice ring, and this volume shows none")
    grains = refine_volume(grains, fields, np.asarray(image, np.float32), ring=ring, degrees=net.grain_field)
    whole = tuple(slice(0, n) for n in grains.shape)
    _, arrays = block_grain_arrays(grains, whole, fields, orientation_kind(fields.shape, net.symmetry),
                                   (0,) * grains.ndim, grains.shape)
    return grains, [arrays], int(grains.max(initial=0))


def _iter_classical(image, settings, pixel_size, unit):
    """The filter-bank method runs on the whole image (its boundary closing is not tile-local);
    the progress steps are its stages, not tiles."""
    from micro_sym.classical import classical_orientation_map, estimate_period
    from micro_sym.classical.grain_lattice import grain_table_columns
    from micro_sym.grains import reconstruct_grains
    from micro_sym.inference.whole_image import grain_min_size

    min_size = grain_min_size(settings.min_size)
    t0 = time.perf_counter()
    total = 4
    yield Progress(0, total, "reading image")
    img = np.asarray(image)
    yield Progress(1, total, "lattice period from the power spectrum")
    period = settings.period or estimate_period(img, settings.lattice)
    yield Progress(2, total, f"filter bank (period {period:.2f} px)")
    maps = classical_orientation_map(img, lattice=settings.lattice, period=period, threshold=settings.threshold)
    if settings.lattice_mask:  # grains only where the lattice shows, as micro-sym segment does
        from micro_sym.classical import ring_frequency
        from micro_sym.classical.crystallinity import CRYSTALLINE_CONTRAST, crystalline_contrast

        lattice_free = crystalline_contrast(img, ring_frequency(period, settings.lattice)) < CRYSTALLINE_CONTRAST
        maps["boundary"] = np.where(lattice_free, np.float32(1.0), maps["boundary"])
    yield Progress(3, total, "grains and statistics")
    grains = reconstruct_grains(maps["orientation"], symmetry=settings.lattice, threshold=settings.threshold,
                                connectivity=1, boundary=maps["boundary"], boundary_threshold=settings.boundary_threshold,
                                min_size=min_size, small="merge").astype(np.uint32)
    table = _table(grains, maps["orientation"], settings.lattice, pixel_size, unit, None)
    # Each grain's lattice measured from the image, as `micro-sym classical` measures it.
    table |= grain_table_columns(img, grains, period=period, lattice=settings.lattice, ids=table["grain"])
    info = {"model": CLASSICAL, "lattice": settings.lattice, "period_px": float(period), "threshold": settings.threshold,
            "min_size": min_size, "boundary_threshold": settings.boundary_threshold}
    return SegmentResult(grains, maps["boundary"], maps["orientation"], table, settings.lattice, "classical filter bank",
                         _tuple(pixel_size), unit, 1, time.perf_counter() - t0, info)


def _allocate(shape, dtype, n_tiles):
    """numpy for ordinary sizes; a temporary Zarr array (chunked like the tiles) beyond ~1 GB."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if nbytes <= IN_MEMORY_MAX_BYTES:
        return np.zeros(shape, dtype)
    import tempfile

    import zarr

    root = tempfile.mkdtemp(prefix="micro_sym_napari_")
    chunks = tuple(min(s, 256 if len(shape) <= 2 else 128) for s in shape)
    return zarr.create_array(store=root, shape=shape, dtype=dtype, chunks=chunks, fill_value=0)


def _table(grains, orientation, symmetry, pixel_size, unit, fallback) -> dict:
    from micro_sym.grains import grain_table

    if fallback is not None and int(np.prod(grains.shape)) > WHOLE_TABLE_MAX_PIXELS:
        return dict(fallback)
    # The whole-map table adds the grain orientation spread (GOS), which per-tile sums cannot give.
    return grain_table(np.asarray(grains), np.asarray(orientation), symmetry=symmetry, pixel_size=pixel_size,
                       unit=unit)


def _tuple(v):
    return tuple(float(x) for x in v) if v is not None else None


def save_result(result: SegmentResult, out_dir, name: str, *, overwrite: bool = False) -> tuple[Path, Path]:
    """Write ``OUT/NAME.zarr`` (boundary, orientation, grains) and ``OUT/NAME_grains.csv``, the layout
    ``micro-sym segment`` writes (docs/design.md §1), so the reader (and other tools) open it the same way."""
    import zarr

    from micro_sym.grains import write_grain_csv
    from micro_sym.io import write_ome_zarr

    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise MicroSymError(f"{out_dir}: cannot create output folder ({err.strerror or err})") from None
    zpath = out_dir / f"{name}.zarr"
    write_ome_zarr(zpath, {"boundary": result.boundary, "orientation": result.orientation,
                           "grains": np.asarray(result.grains, np.uint32)},
                   pixel_size=result.pixel_size, unit=result.unit, overwrite=overwrite)
    root = zarr.open_group(str(zpath), mode="a")
    root.attrs["micro_sym"] = {"method": result.method, "symmetry": result.symmetry, "n_grains": result.n_grains,
                               **{k: v for k, v in result.info.items() if k != "value_range"}}
    rule = {k: v for k, v in result.info.items() if k in ("grain_rule", "threshold", "min_size", "boundary_threshold")}
    csv = write_grain_csv(out_dir / f"{name}_grains.csv", result.table, unit=result.unit or "px",
                          pixel_size=result.pixel_size, symmetry=result.symmetry, phases=result.info.get("phases"),
                          grain_rule=rule,
                          command=f"napari / save_result: {result.method}")
    return zpath, Path(csv)

"""The computation behind the napari widgets, free of Qt so it can be tested and reused headlessly.

The widgets only wrap what is here:

- :func:`check_image` turns bad layer choices (4D, RGB, a Labels layer, no pixels) into one-line
  :class:`~micro_sym.errors.MicroSymError` messages *before* anything runs;
- :func:`iter_segment` is a generator that segments a 2D image or 3D volume tile by tile and
  ``yield``\\ s a :class:`Progress` after every tile (napari's generator worker turns each yield into a
  progress-bar step and a point where Cancel takes effect), then *returns* a :class:`SegmentResult`;
- :func:`result_layers` turns a result into napari layer-data tuples (grains with their statistics as
  ``features``, boundaries, orientation with its colour key); nothing is added to a viewer here, so a
  cancelled or failed run can never leave a partial layer behind.

Tiling follows the streaming engine (:mod:`micro_sym.inference`): its block planner gives
stride-aligned tiles with a halo of the network's measured receptive field, the whole image's
intensity range normalizes every tile, grains are labelled per tile and merged across tile faces with
the engine's :func:`~micro_sym.inference.merge_blocks`. The result therefore equals whole-image
inference (:func:`micro_sym.inference.whole_image.segment_image`) whatever the tile size -- the tests check it.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from micro_sym.errors import MicroSymError

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
SYMMETRY_K = {"square": 4, "hexagonal": 6}
#: z planes per decoding step of 3D harmonic outputs (a progress/Cancel point every few seconds).
DECODE_SLAB = 8


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
    min_size : int
        Grains with fewer pixels are merged into a neighbour.
    boundary_threshold : float
        Boundary probability at or above which a pixel separates grains.
    lattice : str
        Lattice of the classical method (``"square"`` or ``"hexagonal"``); networks know their own.
    """

    model: str = "default-2d"
    device: str = "cpu"
    tile: int | None = None
    threshold: float = 5.0
    min_size: int = 32
    boundary_threshold: float = 0.5
    lattice: str = "square"


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
        """Symmetry period of the 2D angle (90° square, 60° hexagonal)."""
        return 360.0 / SYMMETRY_K.get(self.symmetry, 1)


# ------------------------------------------------------------------------------------ validation


def check_image(data, *, name: str = "image", layer_type: str = "image", rgb: bool = False,
                multiscale: bool = False) -> None:
    """Refuse layers that cannot be segmented, with a message that says what to choose instead.

    Parameters
    ----------
    data : array-like
        The layer's data (level 0 for a multiscale layer).
    name : str
        Layer name, quoted in messages.
    layer_type : str
        napari layer type name (``"image"``, ``"labels"``, ...).
    rgb : bool
        The layer is displayed as RGB(A).

    Raises
    ------
    MicroSymError
    """
    if layer_type != "image":
        raise MicroSymError(f"layer '{name}': is a {layer_type.capitalize()} layer; choose the Image layer of the "
                            f"micrograph or volume to segment")
    shape = tuple(int(s) for s in data.shape)
    if rgb:
        raise MicroSymError(f"layer '{name}': is an RGB(A) image {shape}; micro_sym segments single-channel "
                            f"intensity images (convert it to greyscale first)")
    if len(shape) not in (2, 3):
        raise MicroSymError(f"layer '{name}': is {len(shape)}D with shape {shape}; choose a 2D image (y, x) or a "
                            f"3D volume (z, y, x) -- split channels or time points into separate layers first")
    dtype = np.dtype(data.dtype)
    if dtype == bool or not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        raise MicroSymError(f"layer '{name}': pixels of type {dtype} cannot be segmented (need real numbers)")
    if min(shape) < 8:
        raise MicroSymError(f"layer '{name}': shape {shape} is too small to segment (at least 8 pixels per axis)")


def check_settings(settings: SegmentSettings, ndim: int) -> None:
    """Checks that need no model loading: classical is 2D only, a model file must exist, sane numbers."""
    if settings.model == AUTO:
        if ndim != 2 and DEFAULT_3D not in available_models():
            raise MicroSymError("'auto' chooses between methods for 2D micrographs only; choose a 3D model file for volumes")
    elif settings.model == CLASSICAL:
        if ndim != 2:
            raise MicroSymError("the classical (filter-bank) method maps 2D micrographs only; choose a 3D model for volumes")
        if settings.lattice not in SYMMETRY_K:
            raise MicroSymError(f"lattice '{settings.lattice}': expected 'square' or 'hexagonal'")
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
    if settings.min_size < 0:
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
    from micro_sym.inference import as_network
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
    check_image(image)
    check_settings(settings, image.ndim)
    if settings.model == AUTO and image.ndim == 3:  # auto picks among 2D methods; volumes get the 3D network
        from dataclasses import replace

        result = yield from _iter_network(image, replace(settings, model=DEFAULT_3D), pixel_size, unit, net)
        result.method = f"auto: {result.method} (3D volume)"
        return result
    if settings.model == AUTO:
        return (yield from _iter_auto(image, settings, pixel_size, unit))
    if settings.model == CLASSICAL:
        return (yield from _iter_classical(image, settings, pixel_size, unit))
    return (yield from _iter_network(image, settings, pixel_size, unit, net))


def _iter_auto(image, settings, pixel_size, unit):
    """The per-image choice of ``micro-sym segment --method auto``, then that method as chosen alone."""
    from dataclasses import replace

    from micro_sym.classical import fringe_snr
    from micro_sym.inference.method_choice import AUTO_MODEL, CLASSICAL_BELOW_DB

    yield Progress(0, 1, "lattice fringe SNR from the power spectrum")
    net = load_network(AUTO_MODEL, settings.device)
    lattice = {4: "square", 6: "hexagonal"}[net.k]
    snr, _ = fringe_snr(image, lattice)
    choice = {"chose": "classical" if snr < CLASSICAL_BELOW_DB else "network", "fringe_snr_db": round(snr, 2),
              "classical_below_db": CLASSICAL_BELOW_DB}
    if choice["chose"] == "classical":
        result = yield from _iter_classical(image, replace(settings, model=CLASSICAL, lattice=lattice), pixel_size, unit)
    else:
        result = yield from _iter_network(image, replace(settings, model=AUTO_MODEL), pixel_size, unit, net)
    sign = "<" if choice["chose"] == "classical" else ">="
    result.method = f"auto: {result.method}, fringe SNR {snr:.1f} dB {sign} {CLASSICAL_BELOW_DB:g} dB"
    result.info["auto"] = choice
    return result


def segment(image, settings: SegmentSettings, **kwargs) -> SegmentResult:
    """Run :func:`iter_segment` to completion (scripts and tests)."""
    gen = iter_segment(image, settings, **kwargs)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


def _iter_network(image, settings, pixel_size, unit, net):
    """The engine's three grain passes (:mod:`micro_sym.inference.engine`) in memory: tiles through
    :func:`~micro_sym.inference.iter_tiles`, labels per tile, merge across tiles, then the final grains."""
    from micro_sym.grains.rules import is_seeded, seed_margin
    from micro_sym.inference import iter_tiles, merge_blocks, plan_blocks
    from micro_sym.inference.blocks import grow
    from micro_sym.inference.labels import final_table, flood_region, seed_parts
    from micro_sym.inference.tiles import label_tile
    from micro_sym.models.normalize import intensity_range

    t0 = time.perf_counter()
    yield Progress(0, 1, f"loading model {Path(str(settings.model)).name}")
    net = net if net is not None else load_network(settings.model, settings.device)
    if net.ndim != image.ndim:
        what = {2: "2D images", 3: "3D volumes"}
        raise MicroSymError(f"model '{settings.model}' segments {what[net.ndim]} but the chosen layer is "
                            f"{what[image.ndim][:-1]} of shape {tuple(image.shape)}; choose a {net.ndim}D model")
    shape = tuple(int(s) for s in image.shape)
    nd = len(shape)
    rule = net.grain_rule(settings.threshold, nd)  # the CLI engine's grain rule, so results agree
    seeded = is_seeded(rule)
    stride = max(int(net.total_stride), 1)
    halo = net.halo + seed_margin(rule)  # the seed core of a tile needs the boundary map beyond it
    if settings.tile:
        # The tile is the engine's processing block and output chunk; both must sit on the stride grid.
        tile = int(math.ceil(settings.tile / stride) * stride)
        plan = plan_blocks(shape, tile, halo=halo, stride=stride, chunk=tile)
    else:
        plan = plan_blocks(shape, None, halo=halo, stride=stride)
    n = len(plan.blocks)
    # 3D harmonic outputs decode per voxel by an iterative fit (tens of seconds per 48³ tile on a CPU):
    # decode in z slabs and yield after each, so the progress bar moves and Cancel acts within seconds.
    slab = DECODE_SLAB if nd == 3 and net.orientation.startswith("harmonics") else None
    steps = [math.ceil(b.shape[0] / slab) if slab else 1 for b in plan.blocks]
    total = sum(steps) + 2  # tile steps, the merge, the statistics
    done = 0
    yield Progress(0, total, "intensity range")
    # One normalization for the whole image, as whole-image inference does (tiles must agree).
    lo, hi = intensity_range(image)
    boundary = _allocate(shape, np.float32, n)
    orientation = _allocate(((4,) if nd == 3 else ()) + shape, np.float32, n)
    local = _allocate(shape, np.uint32, n)
    merge_data = {}
    tiles = iter_tiles(net, plan.blocks, lambda b: np.asarray(image[b.tile]), value_range=(lo, hi),
                       pad_mode=plan.pad_mode, device=settings.device, decode=False)
    for i, b in enumerate(plan.blocks):
        yield Progress(done, total, f"tile {i + 1}/{n}")
        out = next(tiles)
        maps = yield from _decode(net, out.core_outputs, slab, done, total, f"tile {i + 1}/{n}")
        done += steps[i]
        lab = label_tile(net, out, maps, rule=rule, shape=shape, boundary_threshold=settings.boundary_threshold)
        boundary[b.core] = maps["boundary"]
        orientation[(slice(None), *b.core) if nd == 3 else b.core] = maps["orientation"]
        local[b.core] = lab.labels
        merge_data[b.id] = lab.to_arrays()
    yield Progress(done, total, "merging grains across tiles")
    merged = merge_blocks(plan, lambda b: merge_data[b.id], symmetry=net.symmetry, threshold=rule["pair_threshold"],
                          min_size=int(settings.min_size), small="drop" if seeded else "merge", pixel_size=pixel_size,
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
                                              boundary_threshold=settings.boundary_threshold)
        final.append(arrays)
    if seeded:
        merged.table = final_table(final, merged.n_grains, symmetry=net.symmetry, image_shape=shape, pixel_size=pixel_size)
    del local, merge_data
    yield Progress(done + 1, total, "grain statistics")
    table = _table(grains, orientation, net.symmetry, pixel_size, unit, merged.table)
    info = {"model": str(settings.model), "halo": int(plan.halo), "tile": list(plan.block), "tiles": n,
            "recompute": round(plan.recompute, 3), "value_range": [lo, hi], "threshold": settings.threshold,
            "grain_rule": rule, "min_size": int(settings.min_size), "boundary_threshold": settings.boundary_threshold,
            "device": settings.device}
    return SegmentResult(grains, boundary, orientation, table, net.symmetry, f"network {settings.model}",
                         _tuple(pixel_size), unit, n, time.perf_counter() - t0, info)


def _decode(net, y, slab, done, total, what):
    """``net.decode(y)``; with ``slab``, z slab by z slab (same values), yielding progress between slabs."""
    if not slab or y.shape[1] <= slab:
        return net.decode(y)
    parts = []
    for j, z0 in enumerate(range(0, y.shape[1], slab)):
        if j:
            yield Progress(done + j, total, f"{what}: orientation planes {z0}-{min(z0 + slab, y.shape[1])}")
        parts.append(net.decode(y[:, z0:z0 + slab]))
    return {k: np.concatenate([m[k] for m in parts], axis=1 if k == "orientation" else 0) for k in parts[0]}


def _iter_classical(image, settings, pixel_size, unit):
    """The filter-bank method runs on the whole image (its boundary closing is not tile-local);
    the progress steps are its stages, not tiles."""
    from micro_sym.classical import classical_orientation_map, estimate_period
    from micro_sym.grains import reconstruct_grains

    t0 = time.perf_counter()
    total = 4
    yield Progress(0, total, "reading image")
    img = np.asarray(image)
    yield Progress(1, total, "lattice period from the power spectrum")
    period = estimate_period(img, settings.lattice)
    yield Progress(2, total, f"filter bank (period {period:.2f} px)")
    maps = classical_orientation_map(img, lattice=settings.lattice, period=period, threshold=settings.threshold)
    yield Progress(3, total, "grains and statistics")
    grains = reconstruct_grains(maps["orientation"], symmetry=settings.lattice, threshold=settings.threshold,
                                connectivity=1, boundary=maps["boundary"], boundary_threshold=settings.boundary_threshold,
                                min_size=int(settings.min_size), small="merge").astype(np.uint32)
    table = _table(grains, maps["orientation"], settings.lattice, pixel_size, unit, None)
    info = {"model": CLASSICAL, "lattice": settings.lattice, "period_px": float(period), "threshold": settings.threshold,
            "min_size": int(settings.min_size), "boundary_threshold": settings.boundary_threshold}
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
    csv = write_grain_csv(out_dir / f"{name}_grains.csv", result.table, unit=result.unit or "px")
    return zpath, Path(csv)


# ------------------------------------------------------------------------------------ colouring


def cyclic_colors(n: int = 256) -> np.ndarray:
    """RGBA ``(n, 4)`` of the cyclic colormap used for 2D angles (matplotlib's ``twilight``, as the
    CLI's orientation figures use, so napari and the figures agree on colours)."""
    from matplotlib import colormaps

    return np.asarray(colormaps["twilight"](np.linspace(0.0, 1.0, n)), np.float32)


def angle_key(period: float, size: int = 161) -> np.ndarray:
    """Colour-wheel legend, RGBA ``(size, size, 4)``: the direction θ (counter-clockwise from +x, as
    displayed) drawn in the colour of θ mod ``period``. Directions θ and θ + period share a colour,
    which shows at a glance that the lattice angle is only defined mod ``period``."""
    c = (size - 1) / 2
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    dx, dy = xx - c, c - yy  # y up on screen
    r = np.hypot(dx, dy) / c
    theta = np.mod(np.rad2deg(np.arctan2(dy, dx)), 360.0)
    lut = cyclic_colors(256)
    idx = np.clip((np.mod(theta, period) / period * 256).astype(int), 0, 255)
    rgba = lut[idx].copy()
    rgba[..., 3] = ((r >= 0.45) & (r <= 1.0)).astype(np.float32)
    return rgba


def angle_key_labels(period: float, size: int = 161) -> tuple[np.ndarray, list[str]]:
    """Positions ``(n, 2)`` (row, col in key pixels) and texts of the ticks of :func:`angle_key`: 0,
    period/2 and period (= 0 again) on the first quarter/sixth of the wheel, where they read in order."""
    c = (size - 1) / 2
    rows, texts = [], []
    for t, text in ((0.0, "0°"), (period / 2, f"{period / 2:g}°"), (period, f"{period:g}° ≡ 0°")):
        r = 1.2 * c
        rows.append((c - r * math.sin(math.radians(t)), c + r * math.cos(math.radians(t))))
        texts.append(text)
    return np.asarray(rows), texts


def ipf_key(size: int = 161) -> np.ndarray:
    """Cubic IPF legend, RGBA ``(size, size, 4)``: the standard triangle [001]-[101]-[111] in
    stereographic projection, transparent outside, coloured by :func:`micro_sym.orientation.ipf_colour_from_crystal_direction`."""
    from micro_sym.orientation import ipf_colour_from_crystal_direction

    xmax, ymax = 0.42, 0.38
    xs = np.linspace(0, xmax, size)
    ys = np.linspace(ymax, 0, size)  # row 0 at the top of the key
    X, Y = np.meshgrid(xs, ys)
    r2 = X**2 + Y**2
    v = np.stack([2 * X, 2 * Y, 1 - r2], -1) / (1 + r2)[..., None]  # inverse stereographic projection
    inside = (v[..., 2] >= v[..., 0]) & (v[..., 0] >= v[..., 1]) & (v[..., 1] >= 0)
    rgb = ipf_colour_from_crystal_direction(v)
    return np.concatenate([rgb, inside[..., None]], -1).astype(np.float32)


def ipf_key_labels(size: int = 161) -> tuple[np.ndarray, list[str]]:
    """Corner positions (row, col in key pixels) and names of the :func:`ipf_key` triangle."""
    xmax, ymax = 0.42, 0.38
    pos, texts = [], []
    for name, d in (("001", (0, 0, 1)), ("101", (1, 0, 1)), ("111", (1, 1, 1))):
        d = np.asarray(d, float) / np.linalg.norm(d)
        px, py = d[0] / (1 + d[2]), d[1] / (1 + d[2])
        pos.append(((ymax - py) / ymax * (size - 1) + 0.09 * size * (1 if name != "111" else -1),
                    px / xmax * (size - 1)))
        texts.append(f"[{name}]")
    return np.asarray(pos), texts


def ipf_rgb(quaternions, direction=(0.0, 0.0, 1.0)):
    """IPF colours ``(3, *spatial)`` float32 of cubic quaternions ``(4, *spatial)``; lazy (dask) in, lazy out.

    Channel-first so the three channels can be shown as additive red/green/blue layers (napari does
    not render RGB volumes).
    """
    from micro_sym.orientation import ipf_colour_cubic

    def colour(q):
        rgb = ipf_colour_cubic(np.moveaxis(np.asarray(q, np.float64), 0, -1), direction)
        bad = ~np.all(np.isfinite(q), axis=0)
        out = np.moveaxis(rgb, -1, 0).astype(np.float32)
        out[:, bad] = 0.0  # undefined orientation: black (no colour added), not white
        return out

    try:
        import dask.array as da

        if isinstance(quaternions, da.Array):
            q = quaternions.rechunk({0: 4})
            return q.map_blocks(colour, dtype=np.float32)
    except ImportError:
        pass
    return colour(np.asarray(quaternions))


def boundary_mask(grains) -> np.ndarray:
    """uint8 mask of grain-boundary pixels: label 0, or a +axis neighbour in another grain (one-sided,
    so boundaries are one pixel wide)."""
    lab = np.asarray(grains)
    mask = lab == 0
    for ax in range(lab.ndim):
        a = np.moveaxis(lab, ax, 0)
        m = np.moveaxis(mask, ax, 0)
        m[:-1] |= a[1:] != a[:-1]
    return mask.astype(np.uint8)


def _lazy_boundary_mask(grains):
    """:func:`boundary_mask` of a Zarr/dask label map, chunk by chunk (a one-pixel overlap is enough)."""
    import dask.array as da

    lab = grains if isinstance(grains, da.Array) else da.from_zarr(grains)
    return lab.map_overlap(boundary_mask, depth=1, boundary="none", dtype=np.uint8)


# -------------------------------------------------------------------------------------- layers


def features_frame(table: dict):
    """The per-grain table as a pandas DataFrame with napari's ``index`` column (= grain id), so the
    Labels layer shows a grain's statistics under the cursor and widgets can look rows up by id."""
    import pandas as pd

    df = pd.DataFrame({k: np.asarray(v) for k, v in table.items()})
    df.insert(0, "index", df["grain"].to_numpy() if "grain" in df else np.arange(1, len(df) + 1))
    return df


def result_layers(result: SegmentResult, name: str, *, scale=None, translate=None) -> list[tuple]:
    """napari layer-data tuples ``(data, kwargs, layer_type)`` for a result, bottom to top.

    Layers: ``NAME orientation`` (2D: angle with the cyclic colormap, contrast limits = the symmetry
    period; 3D: three additive channels ``NAME IPF-Z red/green/blue``), ``NAME P(boundary)``
    (hidden), ``NAME grains`` (Labels, ``features`` = per-grain statistics), ``NAME grain boundaries``
    (yellow one-pixel lines) and the colour key of the orientation map, placed to the right of the image.
    """
    nd = result.ndim
    grains = result.grains
    edges = boundary_mask(grains) if isinstance(grains, np.ndarray) else _lazy_boundary_mask(grains)
    scale = tuple(scale) if scale is not None else (1.0,) * nd
    translate = tuple(translate) if translate is not None else (0.0,) * nd
    common = {"scale": scale, "translate": translate}
    meta = {"micro_sym": {"method": result.method, "symmetry": result.symmetry, "unit": result.unit or "px",
                          "pixel_size": result.pixel_size, "seconds": round(result.seconds, 2), **result.info}}
    layers = []
    if nd == 2:
        layers.append((result.orientation, {**common, "name": f"{name} orientation",
                                            "colormap": _napari_cyclic(), "contrast_limits": (0.0, result.period),
                                            "interpolation2d": "nearest", "metadata": meta}, "image"))
    else:
        ori = result.orientation
        if not isinstance(ori, np.ndarray):  # a disk-backed result stays lazy
            import dask.array as da

            ori = da.from_zarr(ori)
        rgb = ipf_rgb(ori)
        for c, colour in enumerate(("red", "green", "blue")):
            layers.append((rgb[c], {**common, "name": f"{name} IPF-Z {colour}", "colormap": colour,
                                    "contrast_limits": (0.0, 1.0), "blending": "additive", "metadata": meta}, "image"))
    layers.append((result.boundary, {**common, "name": f"{name} P(boundary)", "colormap": "magma",
                                     "contrast_limits": (0.0, 1.0), "visible": False, "metadata": meta}, "image"))
    layers.append((result.grains, {**common, "name": f"{name} grains", "features": features_frame(result.table),
                                   "opacity": 0.45, "visible": False, "metadata": meta}, "labels"))
    layers.append((edges, {**common, "name": f"{name} grain boundaries",
                                                  "colormap": _boundary_colormap(), "opacity": 0.9, "metadata": meta},
                   "labels"))
    layers.extend(key_layers(result.symmetry, result.grains.shape, scale=scale, translate=translate))
    return layers


def key_layers(symmetry: str, shape, *, scale, translate) -> list[tuple]:
    """The orientation colour key as an RGBA image plus text labels, to the right of an image of ``shape``.

    A legend drawn on the canvas (not only in a dock widget) appears in screenshots and exported
    figures, and it scales with the image so it stays readable at any zoom.
    """
    nd = len(shape)
    h, w = shape[-2], shape[-1]
    size = int(max(64, min(h, w) * 0.4))
    sy, sx = scale[-2], scale[-1]
    # Key pixels have the image's pixel size: margin of 1/10 of the key, top-aligned with the image.
    off_y, off_x = translate[-2], translate[-1] + (w + size * 0.25) * sx
    key_scale = (sy, sx)
    if symmetry in SYMMETRY_K:
        period = 360.0 / SYMMETRY_K[symmetry]
        rgba, (pos, texts) = angle_key(period, size), angle_key_labels(period, size)
        title = f"lattice angle θ (mod {period:g}°)"
        pad = 0.3 * size  # the key's tick labels sit outside the wheel
        off_y += pad * sy
        off_x += pad * sx
    else:
        rgba, (pos, texts) = ipf_key(size), ipf_key_labels(size)
        title = "IPF-Z key (cubic)"
    key_translate = (off_y, off_x)
    # Title under the key: text has a fixed screen size, and above the wheel it would hit the top tick.
    title_pos = np.array([[1.25 * size, (size - 1) / 2]])
    points = np.concatenate([pos, title_pos]) * np.array(key_scale) + np.array(key_translate)
    texts = list(texts) + [title]
    if nd == 3:  # show the key in the middle z plane of the volume (2D layers sit at z = 0)
        z = translate[0] + (shape[0] - 1) / 2 * scale[0]
        points = np.concatenate([np.full((len(points), 1), z), points], 1)
    key = (rgba, {"name": "orientation colour key", "rgb": True, "scale": key_scale, "translate": key_translate,
                  "interpolation2d": "linear"}, "image")
    font = 11
    labels = (points, {"name": "orientation colour key labels", "size": 0, "text": {"string": "{label}", "color": "white",
                                                                                   "size": font, "anchor": "center"},
                       "features": {"label": texts}, "face_color": "transparent", "border_width": 0}, "points")
    return [key, labels]


def _napari_cyclic():
    from napari.utils.colormaps import Colormap

    return Colormap(cyclic_colors(256), name="twilight (cyclic)")


def _boundary_colormap():
    from napari.utils.colormaps import DirectLabelColormap

    # Yellow: the twilight colormap runs from white through blue/red to near-black, so neither black nor
    # white lines would show on every grain; yellow is absent from it and stands out on all of them.
    return DirectLabelColormap(color_dict={0: "transparent", 1: "#ffe119", None: "transparent"})

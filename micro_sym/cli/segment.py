"""``micro-sym segment INPUT... --out OUTDIR``: batch segmentation, streamed, resumable.

``--method auto`` (the default without ``--model``) measures each 2D input's lattice fringe signal-to-noise ratio
and runs the classical method below a calibrated threshold (very low dose), else the robust-2d network
(:mod:`micro_sym.inference.method_choice`). ``--method network`` (the default with ``--model``) runs a
trained model; ``--method classical`` runs the training-free
Gabor filter bank (2D only) through the same block engine: same outputs, progress, resume and
``--dry-run``. Its lattice period is estimated once per input (or given with ``--period``) and kept
in the run manifest; inside blocks it runs with ``close=False``, i.e. without the watershed boundary
closing of ``micro-sym classical``, which is a whole-image step and not tile-local.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def _parse_tile(tile: Optional[str]):
    if not tile:
        return None
    from micro_sym.errors import MicroSymError

    try:
        sizes = tuple(int(v) for v in tile.lower().replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise MicroSymError(f"--tile {tile}: expected N or NxN(xN)") from None
    if not sizes or min(sizes) < 1:
        raise MicroSymError(f"--tile {tile}: sizes must be positive")
    return sizes


def _check_inputs(inputs) -> None:
    """Refuse inputs that cannot run before the slow imports (torch, dask, the model): a glob pattern that
    matches nothing, or a batch none of whose inputs exists. A batch with some inputs present still runs:
    the engine reports each missing one and segments the others.

    Raises
    ------
    MicroSymError
        One line naming the first such input (the engine's own wording).
    """
    import glob

    from micro_sym.errors import MicroSymError

    missing = []
    for item in map(str, inputs):
        if any(c in item for c in "*?["):  # a pattern, as the engine's expand_inputs reads it
            if not glob.glob(item):
                raise MicroSymError(f"{item}: no file matches this pattern")
        elif not Path(item).exists():
            missing.append(item)
    if missing and len(missing) == len(inputs):
        more = f" (and {len(missing) - 1} more missing input(s))" if len(missing) > 1 else ""
        raise MicroSymError(f"{missing[0]}: no such file or directory{more}")


def _clock(seconds: float) -> str:
    """``MM:SS``, or ``H:MM:SS`` from an hour on."""
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m:02d}:{s:02d}"


class _PlainProgress:
    """Progress as plain lines on stderr, for logs: a rich bar draws nothing when stderr is not a terminal.

    An input's first line comes with its first block-step count, after it was opened and planned, so an
    input that fails before any block runs keeps its error to one line. Then a line whenever a tenth of its
    block-steps is done or ``every`` seconds have passed with new steps, a line after ``heartbeat`` seconds
    without (one block of a volume can take minutes), and one when it completes.

    Parameters
    ----------
    names : list of str
        The inputs' names, in the order they run.
    every, heartbeat : float
        Seconds, see above.
    """

    def __init__(self, names, every: float = 5.0, heartbeat: float = 15.0):
        import threading
        import time

        self._now = time.monotonic
        self.names, self.every, self.heartbeat = list(names), every, heartbeat
        self.index = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="micro-sym-progress", daemon=True)
        self._start_input()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _start_input(self):
        self.t0 = self.last = self._now()
        self.done = self.total = None
        self.last_done = 0

    def _name(self) -> str:
        return self.names[self.index] if self.index < len(self.names) else "input"

    def _line(self, now: float) -> None:
        done = f"{self.done:.0f}" if self.done == int(self.done) else f"{self.done:.1f}"
        typer.echo(f"{self._name()}: {done}/{self.total} block-steps, {_clock(now - self.t0)} elapsed", err=True)
        self.last, self.last_done = now, self.done

    def progress(self, done: int, total: int) -> None:
        """The engine's ``progress(done, total)`` callback (block-steps of the current input; ``done`` has
        fractions while a block's slow decode runs)."""
        with self._lock:
            now = self._now()
            first = self.done is None
            self.done, self.total = done, total
            if first or done >= total or done - self.last_done >= max(1, total / 10) or now - self.last >= self.every:
                self._line(now)

    def finished(self, res) -> None:
        """The engine's ``on_input(result)`` callback: a line for a completed input, then the next one starts.

        Failed inputs get none here (their error is reported after the run), nor do skipped ones.
        """
        with self._lock:
            if res.status == "complete":
                typer.echo(f"{Path(res.input).name}: complete, {res.n_grains} grains, "
                           f"{_clock(self._now() - self.t0)} elapsed", err=True)
            self.index += 1
            self._start_input()

    def _beat(self) -> None:
        while not self._stop.wait(1.0):
            with self._lock:
                now = self._now()
                if self.done is not None and now - self.last >= self.heartbeat:
                    self._line(now)


def _method_line(m: dict) -> str:
    """What ran on an input: the auto choice and why, the classical lattice and period."""
    parts = []
    a = m.get("auto")
    if a and a.get("fringe_snr_db") is not None and a.get("reason", "fringe SNR").startswith("fringe SNR"):
        sign = "<" if a["chose"] == "classical" else ">="
        chose = f"network {a['network']}" if a.get("network") else a["chose"]
        if a.get("fused_with"):
            chose = f"networks {a['fused_with']} and {a['network']}, grains fused"
        parts.append(f"auto: {chose} (fringe SNR {a['fringe_snr_db']:.1f} dB {sign} {a['classical_below_db']:g} dB)")
    elif a:
        parts.append(f"auto: {a['chose']} ({a.get('reason', '')})")
    if m.get("name") == "classical":
        period = f", period {m['period']:.3f} px ({m['period_source']})" if m.get("period") is not None else ""
        parts.append(f"classical {m['lattice']}{period}")
    if m.get("scale"):
        parts.append(_scale_line(m["scale"]))
    if m.get("lattice_mask"):
        parts.append(f"grains only where the lattice shows (ring contrast >= {m['lattice_mask']['min_contrast']:g}; "
                     f"--no-lattice-mask keeps every pixel)")
    if m.get("name") == "fused":
        if m.get("runs"):  # a dry run has none yet
            fringes, square = m["runs"]
            parts.append(f"{fringes['n_grains']} grains of {fringes['network']} (phase 1, fringes) plus {m['added_grains']} of "
                         f"{square['network']}'s where {fringes['network']} has none (phase 2, square)")
    elif a and a.get("chose") == "network" and (m.get("scale") or {}).get("lattice") == "fringes":
        # auto given a square --model keeps it on fringes (without one it fuses both networks, docs/design.md §5.1).
        parts.append("if every grain shows one set of fringes, --model fringes-2d keeps apart grains whose fringes "
                     "cross at right angles")
    split = m.get("split_grains")
    if split and "grains_split" in split:
        n, added = split["grains_split"], split["grains_added"]
        parts.append(f"--split-grains: {n} grain{'' if n == 1 else 's'} held two lattice orientations, "
                     f"{added} grain{'' if added == 1 else 's'} split off")
        if "grains_joined" in split:  # volumes: neighbours measured alike joined
            joined = split["grains_joined"]
            parts.append(f"{joined} grain{'' if joined == 1 else 's'} joined to a neighbour of the same measured orientation")
    elif split:  # a dry run: planned only
        joined = " and neighbours measured alike joined" if m.get("grain_orientation") else ""
        parts.append(f"then --split-grains: each grain holding two lattice orientations split{joined}")
    return "; ".join(parts)


def _scale_line(r: dict) -> str:
    """The image's lattice as measured (or given) and how the network's input was resampled."""
    volume = r.get("lattice") == "cubic"  # 3D: the spacing of the first lattice ring, in voxels
    unit = "voxels" if volume else "px"
    if r["source"] == "unmeasured":
        seen = f"no lattice measured ({r.get('reason', '')})"
    elif r["source"] == "given":
        seen = f"--period {r['period_px']:g} {unit}"
    elif volume:
        seen = f"measured first lattice ring, spacing {r['period']:.2f} voxels ({r['snr_db']:.1f} dB)"
    else:
        seen = f"measured {r['lattice']} lattice, period {r['period']:.2f} px ({r['snr_db']:.1f} dB)"
    how = (f"resampled x{r['scale']:.3f} to the model's {r['model_period_px']:g} {unit}" if r.get("resampled")
           else f"run at its own sampling (model period {r['model_period_px']:g} {unit})")
    return f"{seen}, {how}"



def segment(
    inputs: List[str] = typer.Argument(..., help="Images: TIFF, Zarr, OME-Zarr; glob patterns allowed."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory (NAME.zarr + NAME_grains.csv per input)."),
    method: Optional[str] = typer.Option(None, "--method", help="auto (default without --model: classical below a "
                                         "calibrated lattice fringe SNR, else the network), network (default with "
                                         "--model) or classical (training-free Gabor filter bank, 2D only; no boundary "
                                         "closing, which is not tile-local)."),
    model: Optional[str] = typer.Option(None, "--model", help="Bundled model name or model file (default: robust-2d "
                                        "for --method auto, atoms-2d-hex for its hexagonal inputs; default-2d for --method network; default-3d when every "
                                        "input is a 3D volume)."),
    lattice: Optional[str] = typer.Option(None, "--lattice", help="The images' lattice: square (angles mod 90°), "
                                          "hexagonal (mod 60°) or fringes (one set of planes per grain: their normal, "
                                          "mod 180°); default: measured per input from its power spectrum "
                                          "(classical: square for fringes)."),
    period: Optional[float] = typer.Option(None, "--period", help="The images' lattice constant in px (default: "
                                           "measured once per input from its power spectrum). A network runs on the "
                                           "image resampled to its training period. Volumes: the first lattice ring's spacing in voxels (the "
                                           "lattice constant for simple cubic, a/√3 for fcc)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    precision: Optional[str] = typer.Option(None, "--precision", help="fp32 (exact, default), bf16: bfloat16 "
                                            "arithmetic, several times faster for 3D networks on CPUs with bf16 units "
                                            "(outputs within about a percent), or int8 (3D networks): 8-bit integers, "
                                            "the network 2-3 times faster than fp32 on a CPU without bf16 units, still exactly equivariant "
                                            "(outputs within a few percent)."),
    forward_memory: Optional[float] = typer.Option(None, "--forward-memory", help="MB one network forward may "
                                                   "take for its activations (default 640 or $MICRO_SYM_FORWARD_MB): "
                                                   "a larger volume tile runs through the network in z slabs, with the "
                                                   "same outputs and some recomputed halo."),
    tile: Optional[str] = typer.Option(None, "--tile", help="Processing block, e.g. 1024 or 256x256x256 (multiple of --chunk)."),
    chunk: Optional[str] = typer.Option(None, "--chunk", help="Output chunk (write unit), default 512² / 128³."),
    scheduler: str = typer.Option("threads", "--scheduler", help="threads | processes | local-cluster | tcp://HOST:PORT."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Worker threads/processes (default: up to 2)."),
    threshold: float = typer.Option(5.0, "--threshold", help="Grain misorientation threshold in degrees."),
    min_size: Optional[int] = typer.Option(None, "--min-size", help="Smallest grain in pixels (default: a network's grain seeds hold 2 lattice cells where "
                                         "the lattice is measured, at least 32 px; else 32)."),
    batch: int = typer.Option(1, "--batch", help="Tiles per forward call."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan (blocks, memory estimate, outputs) and exit."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start every input afresh: delete its NAME.zarr, "
                                   "NAME_grains.csv and run state in --out first (otherwise files of a different run, "
                                   "or not written by micro-sym, are refused)."),
    channel: Optional[int] = typer.Option(None, "--channel", help="Colour or multi-channel TIFF: the channel to "
                                          "segment (0 = first; such images are refused without it)."),
    lattice_mask: bool = typer.Option(True, "--lattice-mask/--no-lattice-mask", help="Leave regions that show no "
                                      "lattice (vacuum, amorphous film, crystals off their zone axis) out of every "
                                      "grain (micrographs)."),
    measure_grains: bool = typer.Option(True, "--measure-grains/--no-measure-grains", help="Measure each grain's "
                                        "lattice from the input inside it: the grain table's lattice_angle "
                                        "(micrographs) or lattice_q* (volumes, about 50 ms a grain)."),
    voxel_orientations: bool = typer.Option(False, "--voxel-orientations", help="Volumes: decode every voxel's "
                                            "orientation for the orientation map (slow, about 100k voxels/s a core) "
                                            "instead of each grain's mean orientation; the grains are the same."),
    split_grains: bool = typer.Option(False, "--split-grains", help="Micrographs: split each grain whose network "
                                      "angles form two groups at least 3 degrees apart where the image's own "
                                      "lattice angles differ by 5 degrees or more (grains joined across a "
                                      "low-angle boundary). Volumes (3D networks): split each grain whose field "
                                      "forms two groups 10 degrees apart where the measured orientations differ "
                                      "by 10 degrees or more, and join neighbours measured within 3 degrees. "
                                      "Off by default: see the README."),
):
    """Segment many images or volumes into boundary, orientation and grain maps, block by block.

    Each micrograph's lattice is measured from its power spectrum (square, hexagonal or fringes, and the period); a network runs on the image resampled to its training period, with the maps back on the input grid (--period and --lattice give them instead). Regions without a lattice (vacuum, amorphous film) get no grain (--no-lattice-mask keeps every pixel). Each grain's lattice angle (micrographs) or orientation (volumes) is then measured from the input inside it and written next to the network's mean (--no-measure-grains skips it).

    Without --model, --method auto chooses per 2D input: the classical filter bank when the lattice fringe signal-to-noise ratio (power-spectrum ring over the shot-noise floor) is below a calibrated threshold (1.1 dB, between 2 and 3 counts/px; the network fails at 2), else the network for the measured lattice: robust-2d (square) or atoms-2d-hex (hexagonal). With --model auto has that model's lattice only and gives the others to the filter bank. What was measured and chosen is printed and kept in the run manifest. A batch of 3D volumes only runs the bundled default-3d network.

    With --method classical the maps come from the Gabor filter bank of `micro-sym classical`, run block-wise without its boundary-closing step (a whole-image watershed, not tile-local): boundaries are orientation jumps only, and grains follow the plain misorientation pair rule. The lattice period is estimated once per input (or --period) and kept for a resume.

    A rerun with the same settings resumes an interrupted input and skips a complete one; outputs of different settings, or files in --out not written by micro-sym, are refused unless --overwrite. One run at a time writes an input's outputs: a second run on the same input and --out is refused (lock file OUT/.NAME.lock, released when the first run exits, however it exits).
    """  # one line per paragraph: the help text keeps line breaks
    from micro_sym.errors import MicroSymError

    # What can be checked without torch, dask or the model is checked before they are imported (seconds).
    _check_inputs(inputs)
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise MicroSymError(f"--device {device}: expected cpu or cuda")
    block, chunk_shape = _parse_tile(tile), _parse_tile(chunk)

    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)
    from rich.table import Table

    from micro_sym.inference.engine import expand_inputs, segment as run_segment

    # --method/--model/--lattice/--period combinations are checked by the engine's segment().
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise MicroSymError("--device cuda: no CUDA device is available")
    paths = expand_inputs(inputs)
    console = Console(stderr=True)
    kwargs = dict(block=block, chunk=chunk_shape, threshold=threshold, min_size=min_size,
                  batch=batch, dry_run=dry_run, overwrite=overwrite, model=model, method=method, lattice=lattice,
                  period=period, lattice_mask=lattice_mask, channel=channel, measure_grains=measure_grains,
                  precision=precision, forward_memory=forward_memory, voxel_orientations=voxel_orientations,
                  split_grains=split_grains)
    if dry_run:
        results = run_segment(paths, out, scheduler=scheduler, workers=workers, device=device, **kwargs)
        # Plain lines, not a table: paths stay whole in narrow terminals and logs.
        for r in results:
            if r.status == "failed":
                typer.echo(f"{r.input}: cannot plan: {r.error}")
                continue
            p = r.plan
            m = p.get("method", {})
            lat = _method_line(m) + ", " if _method_line(m) else ""
            typer.echo(
                f"{r.input}: {lat}shape {'x'.join(map(str, r.shape))}, {p['blocks']} blocks of {'x'.join(map(str, p['block']))} "
                f"(chunk {'x'.join(map(str, p['chunk']))}, halo {p['halo']}, largest tile {'x'.join(map(str, p['tile']))}, "
                f"recompute {p['recompute']:.2f}x), memory estimate {p['memory_estimate_bytes'] / 2**20:,.0f} MiB "
                f"per run -> {', '.join(p['outputs'])}"
            )
        if any(r.status == "failed" for r in results):
            raise typer.Exit(1)
        return

    try:
        if not console.is_terminal:  # a log: plain lines, since the bar draws nothing there
            with _PlainProgress([Path(p).name for p in paths]) as plain:
                results = run_segment(paths, out, scheduler=scheduler, workers=workers, device=device,
                                      progress=plain.progress, on_input=plain.finished, **kwargs)
        else:
            with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                          TimeRemainingColumn(), console=console, transient=True) as bar:
                overall = bar.add_task("all inputs", total=len(paths))
                current = {"task": None}

                def on_progress(done, total):
                    if current["task"] is not None:
                        bar.update(current["task"], completed=done, total=total)

                def on_input(res):
                    bar.update(current["task"], description=f"{Path(res.input).name}: {res.status}")
                    bar.advance(overall)
                    nxt = len(results_seen) + 1
                    results_seen.append(res)
                    if nxt < len(paths):
                        current["task"] = bar.add_task(Path(paths[nxt]).name, total=None)

                results_seen: list = []
                current["task"] = bar.add_task(Path(paths[0]).name, total=None)
                results = run_segment(paths, out, scheduler=scheduler, workers=workers, device=device,
                                      progress=on_progress, on_input=on_input, **kwargs)
    except KeyboardInterrupt:  # typer would exit 130 without a word
        typer.echo("micro-sym: interrupted; finished blocks are kept: run the same command again to resume", err=True)
        raise typer.Exit(130) from None

    if len(results) == 1 and results[0].status == "failed":
        raise MicroSymError(results[0].error)
    table = Table("input", "status", "shape", "blocks run", "grains", "time", "output", title="micro-sym segment")
    for r in results:
        colour = {"complete": "green", "skipped": "cyan", "failed": "red"}.get(r.status, "")
        table.add_row(r.input, f"[{colour}]{r.status}", "x".join(map(str, r.shape)) or "-",
                      f"{r.blocks_run}/{r.n_blocks}" if r.n_blocks else "-", str(r.n_grains) if r.status != "failed" else "-",
                      f"{r.seconds:.1f} s", r.zarr if r.status != "failed" else r.error)
    Console(width=max(Console().width, 160)).print(table)
    for r in results:
        m = r.plan.get("method", {}) if r.status != "failed" else {}
        if _method_line(m):
            typer.echo(f"{r.input}: {_method_line(m)}", err=True)
        gone = r.plan.get("missing_chunks") if r.status != "failed" else None
        if gone:  # Zarr reads an absent chunk as the fill value: say so rather than segment it silently
            typer.echo(f"{r.input}: warning: {gone['missing']} of {gone['total']} storage chunks are missing and "
                       f"were read as the fill value {gone['fill_value']:g}", err=True)
    failed = [r for r in results if r.status == "failed"]
    if len(results) == 1 and failed:  # a single input: the plain one-line user error, exit status 2
        raise MicroSymError(failed[0].error)
    for r in failed:
        typer.echo(f"micro-sym: error: {r.error}", err=True)
    if failed:
        typer.echo(f"micro-sym: {len(failed)} of {len(results)} inputs failed", err=True)
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("segment")(segment)

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


def _method_line(m: dict) -> str:
    """What ran on an input: the auto choice and why, the classical lattice and period."""
    parts = []
    a = m.get("auto")
    if a and a.get("fringe_snr_db") is not None:
        sign = "<" if a["chose"] == "classical" else ">="
        parts.append(f"auto: {a['chose']} (fringe SNR {a['fringe_snr_db']:.1f} dB {sign} {a['classical_below_db']:g} dB)")
    elif a:
        parts.append(f"auto: {a['chose']} ({a.get('reason', '')})")
    if m.get("name") == "classical":
        period = f", period {m['period']:.3f} px ({m['period_source']})" if m.get("period") is not None else ""
        parts.append(f"classical {m['lattice']}{period}")
    return "; ".join(parts)


def segment(
    inputs: List[str] = typer.Argument(..., help="Images: TIFF, Zarr, OME-Zarr; glob patterns allowed."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory (NAME.zarr + NAME_grains.csv per input)."),
    method: Optional[str] = typer.Option(None, "--method", help="auto (default without --model: classical below a "
                                         "calibrated lattice fringe SNR, else the network), network (default with "
                                         "--model) or classical (training-free Gabor filter bank, 2D only; no boundary "
                                         "closing, which is not tile-local)."),
    model: Optional[str] = typer.Option(None, "--model", help="Bundled model name or model file (default: robust-2d "
                                        "for --method auto, default-2d for --method network; default-3d when every "
                                        "input is a 3D volume)."),
    lattice: Optional[str] = typer.Option(None, "--lattice", help="--method classical: square (default, angles mod 90°) "
                                          "or hexagonal (mod 60°)."),
    period: Optional[float] = typer.Option(None, "--period", help="--method classical: lattice constant in px (default: "
                                           "estimated once per input from its power spectrum)."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    tile: Optional[str] = typer.Option(None, "--tile", help="Processing block, e.g. 1024 or 256x256x256 (multiple of --chunk)."),
    chunk: Optional[str] = typer.Option(None, "--chunk", help="Output chunk (write unit), default 512² / 128³."),
    scheduler: str = typer.Option("threads", "--scheduler", help="threads | processes | local-cluster | tcp://HOST:PORT."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Worker threads/processes (default: up to 2)."),
    threshold: float = typer.Option(5.0, "--threshold", help="Grain misorientation threshold in degrees."),
    min_size: Optional[int] = typer.Option(None, "--min-size", help="Smallest grain in pixels (default 32)."),
    batch: int = typer.Option(1, "--batch", help="Tiles per forward call."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan (blocks, memory estimate, outputs) and exit."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start every input afresh: delete its NAME.zarr, "
                                   "NAME_grains.csv and run state in --out first (otherwise files of a different run, "
                                   "or not written by micro-sym, are refused)."),
):
    """Segment many images or volumes into boundary, orientation and grain maps, block by block.

    Without --model, --method auto chooses per 2D input: the classical filter bank when the image's lattice fringe signal-to-noise ratio (power-spectrum ring over the shot-noise floor) is below a calibrated threshold (1.1 dB, between 2 and 3 counts/px; the network fails at 2), else the robust-2d network. The choice is printed and kept in the run manifest. A batch of 3D volumes only runs the bundled default-3d network.

    With --method classical the maps come from the Gabor filter bank of `micro-sym classical`, run block-wise without its boundary-closing step (a whole-image watershed, not tile-local): boundaries are orientation jumps only, and grains follow the plain misorientation pair rule. The lattice period is estimated once per input (or --period) and kept for a resume.

    A rerun with the same settings resumes an interrupted input and skips a complete one; outputs of different settings, or files in --out not written by micro-sym, are refused unless --overwrite. One run at a time writes an input's outputs: a second run on the same input and --out is refused (lock file OUT/.NAME.lock, released when the first run exits, however it exits).
    """  # one line per paragraph: the help text keeps line breaks
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    from rich.table import Table

    from micro_sym.errors import MicroSymError
    from micro_sym.inference.engine import expand_inputs, segment as run_segment

    # --method/--model/--lattice/--period combinations are checked by the engine's segment().
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise MicroSymError(f"--device {device}: expected cpu or cuda")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise MicroSymError("--device cuda: no CUDA device is available")
    paths = expand_inputs(inputs)
    console = Console(stderr=True)
    kwargs = dict(block=_parse_tile(tile), chunk=_parse_tile(chunk), threshold=threshold, min_size=min_size,
                  batch=batch, dry_run=dry_run, overwrite=overwrite, model=model, method=method, lattice=lattice,
                  period=period)
    if dry_run:
        results = run_segment(paths, out, scheduler=scheduler, workers=workers, device=device, **kwargs)
        # Plain lines, not a table: paths stay whole in narrow terminals and logs.
        for r in results:
            if r.status == "failed":
                typer.echo(f"{r.input}: cannot plan: {r.error}")
                continue
            p = r.plan
            m = p.get("method", {})
            lat = _method_line(m) + ", " if m.get("auto") or m.get("name") == "classical" else ""
            typer.echo(
                f"{r.input}: {lat}shape {'x'.join(map(str, r.shape))}, {p['blocks']} blocks of {'x'.join(map(str, p['block']))} "
                f"(chunk {'x'.join(map(str, p['chunk']))}, halo {p['halo']}, largest tile {'x'.join(map(str, p['tile']))}, "
                f"recompute {p['recompute']:.2f}x), memory estimate {p['memory_estimate_bytes'] / 2**20:,.0f} MiB "
                f"per run -> {', '.join(p['outputs'])}"
            )
        if any(r.status == "failed" for r in results):
            raise typer.Exit(1)
        return

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=True) as bar:
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
        if m.get("auto") or m.get("name") == "classical":
            typer.echo(f"{r.input}: {_method_line(m)}", err=True)
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

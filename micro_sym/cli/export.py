"""``micro-sym export MODEL --format torch|torchscript|onnx --out FILE``: deployable files that run without escnn."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer


def export(
    model: str = typer.Argument(..., help="Model file or bundled name."),
    out: Path = typer.Option(..., "--out", "-o", help="Output file (.pt, .safetensors, .ts or .onnx)."),
    fmt: Optional[str] = typer.Option(None, "--format", "-f", help="torch | safetensors | torchscript | onnx (default: from the suffix)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Labeled dataset for the accuracy rows of the report."),
    max_images: Optional[int] = typer.Option(None, "--max-images", help="Score at most this many images of --data."),
    latency_size: Optional[int] = typer.Option(None, "--latency-size", help="Input side for the latency row (default 512 in 2D, 64 in 3D)."),
    latency_threads: int = typer.Option(1, "--latency-threads", help="torch/onnxruntime threads for the latency row."),
    report_path: Optional[Path] = typer.Option(None, "--report", help="JSON report (default: OUT + .report.json)."),
):
    """Export to plain torch / TorchScript / ONNX (metadata inside the file); report the source model and the file."""
    import warnings

    warnings.filterwarnings("ignore", message=".*py3nj.*")
    from micro_sym.cli.prune import _print
    from micro_sym.deploy.export import SUFFIX, export_model, load_deployed
    from micro_sym.deploy.measure import report as measure
    from micro_sym.errors import MicroSymError
    from micro_sym.models import load_model

    if fmt is not None and fmt not in SUFFIX:
        raise MicroSymError(f"--format {fmt}: expected one of {', '.join(SUFFIX)}")
    if fmt is not None and out.suffix == "":
        out = out.with_suffix(SUFFIX[fmt])
    m = load_model(model)
    before = measure(m, data=data, latency_size=latency_size, max_images=max_images, threads=latency_threads)
    path = export_model(m, out, fmt)
    d = load_deployed(path)
    after = measure(d, data=data, latency_size=latency_size, max_images=max_images, threads=latency_threads)
    rep = {"command": "export", "model": str(model), "out": str(path), "format": d.fmt,
           "file_bytes": path.stat().st_size, "metadata": {key: d.meta[key] for key in ("ndim", "k", "halo", "total_stride", "normalization")},
           "before": before, "after": after}
    _print(rep)
    rp = report_path or path.with_name(path.name + ".report.json")
    rp.write_text(json.dumps(rep, indent=2))
    typer.echo(f"wrote {path} ({d.fmt}, {rep['file_bytes']:,} bytes) and {rp}")


def register(app: typer.Typer) -> None:
    app.command("export")(export)

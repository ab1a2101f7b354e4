"""``micro-sym prune MODEL --ratio R --out PRUNED``: field-wise pruning (+ optional fine-tuning), with a report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer


def prune(
    model: str = typer.Argument(..., help="Model file or bundled name (escnn 2D unet_equi or 3D octa)."),
    ratio: float = typer.Option(..., "--ratio", help="Fraction of prunable fields to remove, in [0, 1)."),
    out: Path = typer.Option(..., "--out", "-o", help="Pruned model file (.pt, loads like any model)."),
    criterion: str = typer.Option("norm", "--criterion", help="Field importance: norm (filter norms, both sides) or bn (batch-norm scale)."),
    scope: str = typer.Option("global", "--scope", help="global (rank fields over all layers) or layer (same ratio per layer)."),
    steps: int = typer.Option(1, "--steps", help="Iterative schedule: prune in this many rounds (fine-tuning after each)."),
    finetune: Optional[Path] = typer.Option(None, "--finetune", help="Labeled dataset to fine-tune on after pruning (2D)."),
    epochs: int = typer.Option(2, "--epochs", help="Fine-tuning epochs (per round)."),
    steps_per_epoch: Optional[int] = typer.Option(None, "--steps-per-epoch", help="Fine-tuning steps per epoch (default: the model's training config)."),
    lr: float = typer.Option(1e-3, "--lr", help="Fine-tuning learning rate."),
    distill: float = typer.Option(0.0, "--distill", help="Fine-tuning: weight of matching the unpruned model's outputs "
                                  "(knowledge distillation; 0 = labels only)."),
    crop: Optional[int] = typer.Option(None, "--crop", help="Fine-tuning crop side (default: the model's training config)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Fine-tuning batch size (default: the model's training config)."),
    calibrate: Optional[Path] = typer.Option(None, "--calibrate", help="Dataset for batch-norm re-estimation after pruning (default: --finetune's)."),
    calibrate_batches: int = typer.Option(10, "--calibrate-batches", help="Batches for batch-norm re-estimation."),
    val: Optional[Path] = typer.Option(None, "--val", help="Validation dataset for fine-tuning (default: a split of --finetune)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Labeled dataset for the accuracy rows of the report."),
    max_images: Optional[int] = typer.Option(None, "--max-images", help="Score at most this many images of --data."),
    latency_size: Optional[int] = typer.Option(None, "--latency-size", help="Input side for the latency row (default 512 in 2D, 64 in 3D)."),
    latency_threads: int = typer.Option(1, "--latency-threads", help="torch/onnxruntime threads for the latency row."),
    report_path: Optional[Path] = typer.Option(None, "--report", help="JSON report (default: OUT with suffix .report.json)."),
):
    """Remove whole fields (all |G| channels), rebuild a smaller escnn model, optionally fine-tune; report before/after."""
    import warnings

    warnings.filterwarnings("ignore", message=".*py3nj.*")
    from micro_sym.deploy.measure import report as measure
    from micro_sym.deploy.prune import prune_model
    from micro_sym.training.finetune import finetune_model
    from micro_sym.errors import MicroSymError
    from micro_sym.models import load_model, save_model

    if steps < 1 or epochs < 1:
        raise MicroSymError("--steps and --epochs must be positive")
    if distill < 0 or (distill > 0 and finetune is None):
        raise MicroSymError("--distill: a non-negative weight, used when fine-tuning (--finetune DATA)")
    m = load_model(model)
    if getattr(m, "exported", False):
        raise MicroSymError(f"{model}: a deployed (exported) file cannot be pruned; prune the escnn model file")
    if finetune is not None and int(m.ndim) != 2:
        raise MicroSymError("--finetune: fine-tuning is available for 2D models only")
    before = measure(m, data=data, latency_size=latency_size, max_images=max_images, threads=latency_threads)
    ft = None
    val_scores = []  # the validation grain F1 of every fine-tuning round
    if finetune is not None:
        def ft(mod, s):
            import shutil
            import tempfile

            run_dir = Path(tempfile.mkdtemp(prefix="micro_sym_prune_"))
            try:
                tuned = finetune_model(mod, finetune, epochs=epochs, val=val, steps_per_epoch=steps_per_epoch, lr=lr,
                                       crop=crop, batch_size=batch_size, log=typer.echo, out=run_dir,
                                       teacher=m if distill > 0 else None, distill=distill)
                val_scores.append(_val_grain_f1(run_dir / "report.json"))
                return tuned
            finally:
                shutil.rmtree(run_dir, ignore_errors=True)
    calib = calibrate if calibrate is not None else finetune
    if calib is not None and int(m.ndim) != 2:
        raise MicroSymError("--calibrate: batch-norm re-estimation is available for 2D models only")
    pruned, info = prune_model(m, ratio, criterion=criterion, scope=scope, steps=steps, finetune=ft, calibrate=calib,
                               calibrate_batches=calibrate_batches, log=typer.echo)
    typer.echo(f"fields per layer after pruning: {info['fields_after']} (before: {info['fields_before']})")
    after = measure(pruned, data=data, latency_size=latency_size, max_images=max_images, threads=latency_threads)
    save_model(pruned, out, trained_on=dict(m.meta.get("trained_on", {}) or {}, pruned_from=str(m.meta.get("path", model)),
                                            pruned_from_sha256=m.meta.get("sha256")),
               metrics={"pruning": info, "report_after": after.get("accuracy", {})}, extra={"pruning": info})
    rep = {"command": "prune", "model": str(model), "out": str(out), "pruning": info,
           "finetune": {"data": str(finetune), "epochs": epochs, "lr": lr, "distill": distill} if finetune else None,
           "before": before, "after": after}
    _print(rep)
    _warn_if_failed(after.get("accuracy", {}).get("grain_f1"), val_scores[-1] if val_scores else None)
    path = report_path or out.with_name(out.stem + ".report.json")
    path.write_text(json.dumps(rep, indent=2))
    typer.echo(f"wrote {out} and {path}")


def _print(rep: dict):
    b, a = rep["before"], rep["after"]
    rows = [("parameters", lambda r: f"{r.get('parameters', 0):,}"),
            ("deployed weights", lambda r: f"{r['parameters_deployed']:,}" if "parameters_deployed" in r else "-"),
            ("MACs/pixel", lambda r: f"{r['macs']['per_pixel']:.0f}" if "macs" in r else "-"),
            ("CPU latency (s)", lambda r: f"{r['latency']['seconds']:.4f} @{r['latency']['size']}px"),
            ("equivariance err", lambda r: f"{r['equivariance_error']['max']:.1e}" if "equivariance_error" in r else "-")]
    if "accuracy" in b:
        rows += [("boundary F1", lambda r: f"{r['accuracy']['boundary_f1']:.4f}"),
                 ("grain F1", lambda r: f"{r['accuracy']['grain_f1']:.4f}"),
                 ("orientation (°)", lambda r: f"{r['accuracy']['orientation_median_deg']:.3f}")]
    typer.echo(f"{'':<18} {'before':>22} {'after':>22}")
    for name, f in rows:
        typer.echo(f"{name:<18} {f(b):>22} {f(a):>22}")
    if "parameters_counted" in a:
        typer.echo(f"({a['parameters_counted']})")


#: Below this grain F1 a pruned model is reported as failed: it finds (almost) no grain.
FAILED_GRAIN_F1 = 0.05


def _val_grain_f1(path: Path):
    """The final validation grain F1 a fine-tuning run wrote to its ``report.json`` (None if absent)."""
    try:
        return float(json.loads(Path(path).read_text())["overall"]["grain_f1"])
    except (OSError, KeyError, TypeError, ValueError):
        return None


def _warn_if_failed(report_f1, val_f1):
    """One line on stderr when the pruned model's grain F1 (report data, else fine-tuning validation) is near 0."""
    for f1, where in ((report_f1, "on --data"), (val_f1, "on the fine-tuning validation set")):
        if f1 is not None:
            if f1 < FAILED_GRAIN_F1:
                typer.echo(f"warning: the pruned model scores grain F1 {f1:.3f} {where}: it finds almost no grains; "
                           "prune less (--ratio), fine-tune longer (--epochs) or recalibrate (--calibrate)", err=True)
            return


def register(app: typer.Typer) -> None:
    app.command("prune")(prune)

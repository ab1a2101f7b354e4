"""``micro-sym train CONFIG.yaml --data DATASET --out RUN_DIR``: train a 2D grain segmenter."""

from __future__ import annotations

from pathlib import Path

import typer


def train(
    config: Path = typer.Argument(..., help="Training config YAML (e.g. configs/train_default_2d.yaml)."),
    data: Path = typer.Option(..., "--data", help="Labeled training dataset (images/, grains/, orientation/)."),
    out: Path = typer.Option(..., "--out", help="Run directory (checkpoints, history, final model.pt)."),
    val: Path = typer.Option(None, "--val", help="Validation dataset (default: hold out part of --data)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from RUN_DIR/last.pt."),
    device: str = typer.Option(None, "--device", help="cpu or cuda (overrides the config)."),
    epochs: int = typer.Option(None, "--epochs", help="Number of epochs (overrides the config)."),
    seed: int = typer.Option(None, "--seed", help="Random seed (overrides the config)."),
    init: Path = typer.Option(None, "--init", help="Start from this model file's weights (fine-tuning; same architecture)."),
):
    """Train on random crops with augmentation; validate every epoch; write checkpoints to RUN_DIR."""
    from micro_sym.errors import MicroSymError
    from micro_sym.training.train2d import load_train_config, train as run

    if device not in (None, "cpu", "cuda"):
        raise MicroSymError(f"--device: expected cpu or cuda, got '{device}'")
    from micro_sym.training.train3d import cli_train3d, is_3d_config  # 3D hook: gcnn3d configs
    if is_3d_config(config): return cli_train3d(config, data, out, val=val, device=device, seed=seed, log=typer.echo)  # noqa: E701
    cfg = load_train_config(config, **{"device": device, "optim.epochs": epochs, "seed": seed})
    if out.exists() and (out / "last.pt").exists() and not resume:
        raise MicroSymError(f"{out}: already holds a run (last.pt); pass --resume or choose another --out")
    if init is not None and not init.is_file():
        raise MicroSymError(f"--init {init}: no such model file")
    report = run(cfg, data, out, val=val, resume=resume, log=lambda s: typer.echo(s), init=init)
    ov = report["overall"]
    typer.echo(f"done: {out / 'model.pt'} (best: {out / 'best.pt'}) | val boundary F1 {ov['boundary_f1']:.3f}, "
               f"grain F1 {ov['grain_f1']:.3f}, median orientation error {ov['orientation_median_deg']:.2f}°")


def register(app: typer.Typer) -> None:
    app.command("train")(train)

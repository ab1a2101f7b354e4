"""``micro-sym train CONFIG.yaml --data DATASET --out RUN_DIR``: train a 2D or 3D model."""

from __future__ import annotations

from pathlib import Path

import typer


def train(
    config: Path = typer.Argument(..., help="Training config YAML (e.g. configs/train_default_2d.yaml, configs/train_3d.yaml)."),
    data: Path = typer.Option(..., "--data", help="Labeled training dataset (images/, grains/, orientation/); 3D also 'synthetic'."),
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
    from micro_sym.training.config import load_train_config
    from micro_sym.training.loop import finished_message, train as run

    if device not in (None, "cpu", "cuda"):
        raise MicroSymError(f"--device: expected cpu or cuda, got '{device}'")
    cfg = load_train_config(config, **{"device": device, "optim.epochs": epochs, "seed": seed})
    if out.exists() and (out / "last.pt").exists() and not resume:
        raise MicroSymError(f"{out}: already holds a run (last.pt); pass --resume or choose another --out")
    if init is not None and not init.is_file():
        raise MicroSymError(f"--init {init}: no such model file")
    report = run(cfg, data, out, val=val, resume=resume, log=lambda s: typer.echo(s), init=init)
    typer.echo(finished_message(cfg, out, report))


def register(app: typer.Typer) -> None:
    app.command("train")(train)

"""``micro-sym train CONFIG --data DATASET --out RUN_DIR``: train or fine-tune a 2D or 3D model.

``CONFIG`` is a YAML file or a config installed with micro_sym, named like the bundled models
(``finetune-default-2d``, ``train-3d``, ...: :func:`micro_sym.config_files.bundled_configs`); ``--init``
takes a model file or a bundled model name, so fine-tuning needs no source checkout::

    micro-sym train finetune-default-2d --init default-2d --data my_labeled/ --out runs/mine
"""

from __future__ import annotations

from pathlib import Path

import typer

from micro_sym.config_files import bundled_configs


def train(
    config: str = typer.Argument(..., help="Training config: a YAML file or a bundled config name ("
                                 f"{', '.join(n for n in bundled_configs() if not n.startswith('synth-'))})."),
    data: list[Path] = typer.Option(..., "--data", help="Labeled training dataset (images/, grains/, orientation/); 3D also "
                                    "'synthetic'. Repeat to train on several datasets together (then --val is needed)."),
    out: Path = typer.Option(..., "--out", help="Run directory (checkpoints, history, final model.pt)."),
    val: Path = typer.Option(None, "--val", help="Validation dataset (default: hold out part of --data)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from RUN_DIR/last.pt."),
    device: str = typer.Option(None, "--device", help="cpu or cuda (overrides the config)."),
    epochs: int = typer.Option(None, "--epochs", help="Number of epochs (overrides the config)."),
    steps_per_epoch: int = typer.Option(None, "--steps-per-epoch", help="Training steps per epoch, i.e. between "
                                        "validations (overrides the config's data.steps_per_epoch)."),
    seed: int = typer.Option(None, "--seed", help="Random seed (overrides the config)."),
    init: str = typer.Option(None, "--init", help="Start from this model's weights (fine-tuning; same architecture): "
                             "a model file or a bundled model name (default-2d, robust-2d, default-3d)."),
):
    """Train on random crops with augmentation; validate every epoch; write checkpoints to RUN_DIR."""
    from micro_sym.errors import MicroSymError
    from micro_sym.training.config import load_train_config

    # Settings and files are checked before the training modules (torch) are imported: errors come fast.
    if device not in (None, "cpu", "cuda"):
        raise MicroSymError(f"--device: expected cpu or cuda, got '{device}'")
    if len(data) > 1 and val is None:
        raise MicroSymError("--data given more than once: pass --val (no single dataset to hold images out of)")
    overrides = {"device": device, "optim.epochs": epochs, "data.steps_per_epoch": steps_per_epoch, "seed": seed}
    cfg = load_train_config(config, **overrides)
    if out.exists() and (out / "last.pt").exists() and not resume:
        raise MicroSymError(f"{out}: already holds a run (last.pt); pass --resume or choose another --out")
    for option, path in (*(("--data", d) for d in data), ("--val", val)):
        if path is not None and str(path) != "synthetic" and not path.exists():
            raise MicroSymError(f"{option} {path}: dataset directory does not exist")

    from micro_sym.models import resolve_model_path
    from micro_sym.training.loop import finished_message, train as run

    if init is not None:
        try:
            init = resolve_model_path(init)
        except MicroSymError as err:
            raise MicroSymError(f"--init {err}") from None
    report = run(cfg, data[0] if len(data) == 1 else data, out, val=val, resume=resume, log=lambda s: typer.echo(s), init=init)
    typer.echo(finished_message(cfg, out, report))


def register(app: typer.Typer) -> None:
    app.command("train")(train)

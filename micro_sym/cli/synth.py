"""``micro-sym synth 2d|3d``: synthetic polycrystal datasets with exact ground truth."""

from __future__ import annotations

from pathlib import Path

import typer

from micro_sym.errors import MicroSymError

synth_app = typer.Typer(
    help="Generate synthetic lattice-resolved micrographs (2d) or volumes (3d) with exact ground truth.",
    no_args_is_help=True,
    add_completion=False,
)


def _parse_size(text: str | None, dim: int):
    """'512' -> (512, 512); '256x384' -> (256, 384); 3D likewise with three numbers."""
    if text is None:
        return None
    parts = text.lower().replace(",", "x").split("x")
    try:
        vals = tuple(int(p) for p in parts)
    except ValueError:
        raise MicroSymError(f"--size: '{text}' is not a size (e.g. 512 or {'x'.join(['256'] * dim)})") from None
    if len(vals) == 1:
        vals = vals * dim
    if len(vals) != dim:
        raise MicroSymError(f"--size: '{text}' has {len(vals)} numbers, a {dim}D size needs 1 or {dim}")
    return vals


def _run(dim, out, n, size, seed, config, overwrite, **overrides):
    from micro_sym.synth.config import load_config
    from micro_sym.synth.dataset import generate_dataset

    if config is not None and not config.is_file():
        raise MicroSymError(f"{config}: config file does not exist (or is not a regular file)")
    cfg = load_config(config, dim=dim, size=_parse_size(size, dim), **overrides)

    def progress(i, name, info):
        typer.echo(f"{name}: {info['n_grains']} grains, {info['n_twins']} twins")

    generate_dataset(out, cfg, n, seed, overwrite=overwrite, progress=progress)
    typer.echo(f"wrote {n} sample(s) to {out}")


@synth_app.command("2d")
def synth_2d_cmd(
    out: Path = typer.Option(..., "--out", help="Dataset directory to create."),
    n: int = typer.Option(4, "--n", help="Number of images."),
    size: str = typer.Option(None, "--size", help="Image size: 512 or ROWSxCOLS (default from config: 512)."),
    seed: int = typer.Option(0, "--seed", help="Sample i is generated from (seed, i)."),
    config: Path = typer.Option(None, "--config", help="YAML file (see configs/synth_2d.yaml)."),
    lattice: str = typer.Option(None, "--lattice", help="square or hexagonal (overrides the config)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing dataset in --out."),
):
    """Lattice-resolved 2D micrographs: images/, grains/, orientation/ (degrees), boundary/, dataset.json."""
    _run(2, out, n, size, seed, config, overwrite, lattice=lattice)


@synth_app.command("3d")
def synth_3d_cmd(
    out: Path = typer.Option(..., "--out", help="Dataset directory to create."),
    n: int = typer.Option(1, "--n", help="Number of volumes."),
    size: str = typer.Option(None, "--size", help="Volume size: 96 or ZxYxX (default from config: 96)."),
    seed: int = typer.Option(0, "--seed", help="Sample i is generated from (seed, i)."),
    config: Path = typer.Option(None, "--config", help="YAML file (see configs/synth_3d.yaml)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing dataset in --out."),
):
    """Cubic-lattice 3D volumes: images/, grains/, orientation/ ((4, z, y, x) quaternions), boundary/, dataset.json."""
    _run(3, out, n, size, seed, config, overwrite)


def register(app: typer.Typer) -> None:
    app.add_typer(synth_app, name="synth")

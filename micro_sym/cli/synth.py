"""``micro-sym synth 2d|3d|atoms2d|atoms3d``: synthetic polycrystal datasets with exact ground truth."""

from __future__ import annotations

from pathlib import Path

import typer

from micro_sym.errors import MicroSymError

synth_app = typer.Typer(
    help="Generate synthetic lattice-resolved micrographs (2d) or volumes (3d: analytic; atoms3d: from atoms) with exact ground truth.",
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


def _run(dim, out, n, size, seed, config, overwrite, resume=False, **overrides):
    from micro_sym.synth.config import load_config

    if config is not None and not config.is_file():
        raise MicroSymError(f"{config}: config file does not exist (or is not a regular file)")
    _generate(load_config(config, dim=dim, size=_parse_size(size, dim), **overrides), out, n, seed, overwrite, resume)


def _generate(cfg, out, n, seed, overwrite, resume):
    from micro_sym.synth.dataset import generate_dataset

    def progress(i, name, info):
        done = " (already there)" if info.get("resumed") else ""
        typer.echo(f"{name}: {info['n_grains']} grains, {info['n_twins']} twins{done}")

    generate_dataset(out, cfg, n, seed, overwrite=overwrite, resume=resume, progress=progress)
    typer.echo(f"wrote {n} sample(s) to {out}")


@synth_app.command("2d")
def synth_2d_cmd(
    out: Path = typer.Option(..., "--out", help="Dataset directory to create."),
    n: int = typer.Option(4, "--n", help="Number of images."),
    size: str = typer.Option(None, "--size", help="Image size: 512 or ROWSxCOLS (default from config: 512)."),
    seed: int = typer.Option(0, "--seed", help="Sample i is generated from (seed, i)."),
    config: Path = typer.Option(None, "--config", help="YAML file (see configs/synth_2d.yaml)."),
    lattice: str = typer.Option(None, "--lattice", help="square, hexagonal or fringes (one set of planes per grain; overrides the config)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing dataset in --out."),
    resume: bool = typer.Option(False, "--resume", help="Keep the samples an interrupted run with the same config and seed finished."),
):
    """Lattice-resolved 2D micrographs: images/, grains/, orientation/ (degrees), boundary/, dataset.json."""
    _run(2, out, n, size, seed, config, overwrite, resume, lattice=lattice)


@synth_app.command("3d")
def synth_3d_cmd(
    out: Path = typer.Option(..., "--out", help="Dataset directory to create."),
    n: int = typer.Option(1, "--n", help="Number of volumes."),
    size: str = typer.Option(None, "--size", help="Volume size: 96 or ZxYxX (default from config: 96)."),
    seed: int = typer.Option(0, "--seed", help="Sample i is generated from (seed, i)."),
    config: Path = typer.Option(None, "--config", help="YAML file (see configs/synth_3d.yaml)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing dataset in --out."),
    resume: bool = typer.Option(False, "--resume", help="Keep the samples an interrupted run with the same config and seed finished."),
):
    """Cubic-lattice 3D volumes: images/, grains/, orientation/ ((4, z, y, x) quaternions), boundary/, dataset.json."""
    _run(3, out, n, size, seed, config, overwrite, resume)


@synth_app.command("atoms3d")
def synth_atoms3d_cmd(
    out: Path = typer.Option(..., "--out", help="Dataset directory to create."),
    n: int = typer.Option(1, "--n", help="Number of volumes."),
    size: str = typer.Option(None, "--size", help="Volume size: 96 or ZxYxX voxels (default from config: 96)."),
    seed: int = typer.Option(0, "--seed", help="Sample i is generated from (seed, i)."),
    config: str = typer.Option(None, "--config", help="YAML file or bundled name (synth-atoms3d-train, synth-atoms3d-heldout)."),
    kind: str = typer.Option(None, "--kind", help="polycrystal or particle (overrides the config and its variants)."),
    lattice: str = typer.Option(None, "--lattice", help="fcc, bcc, diamond or sc (overrides the config and its variants)."),
    element: str = typer.Option(None, "--element", help="Chemical symbol, e.g. Au, Fe, Si (overrides the config and its variants)."),
    voxel_size: float = typer.Option(None, "--voxel-size", help="Å per voxel (overrides the config; default 0.5)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing dataset in --out."),
    resume: bool = typer.Option(False, "--resume", help="Keep the samples an interrupted run with the same config and seed finished."),
):
    """Atomistic 3D volumes (tomograms of ASE polycrystals or nanoparticles): images/, grains/ (0 = vacuum), orientation/, boundary/, dataset.json.

    Truth from the atoms (docs/design.md §6.4); dataset.json lists each domain's element, orientation, twin parent, Σ3.
    """
    from micro_sym.synth.atoms3d import load_atoms3d_config

    material = {"kind": kind, "lattice": lattice, "element": element}
    # A material named on the command line is the material of every sample: the config's variants
    # (which would override it per sample) are dropped.
    variants = () if any(v is not None for v in material.values()) else None
    cfg = load_atoms3d_config(config, size=_parse_size(size, 3), voxel_size=voxel_size, variants=variants, **material)
    _generate(cfg, out, n, seed, overwrite, resume)


@synth_app.command("atoms2d")
def synth_atoms2d_cmd(
    out: Path = typer.Option(..., "--out", help="Dataset directory to create."),
    n: int = typer.Option(1, "--n", help="Number of images."),
    size: str = typer.Option(None, "--size", help="Image size: 256 or ROWSxCOLS (default from config: 256)."),
    seed: int = typer.Option(0, "--seed", help="Sample i is generated from (seed, i)."),
    config: str = typer.Option(None, "--config", help="YAML file or bundled name (synth-atoms2d-heldout)."),
    mode: str = typer.Option(None, "--mode", help="haadf (STEM Z-contrast) or hrtem (abTEM multislice + CTF); overrides the config."),
    lattice: str = typer.Option(None, "--lattice", help="fcc, bcc, diamond or sc, or a 2D crystal: graphene (--element C) or "
                                "mos2 (--element Mo); overrides the config and its variants."),
    element: str = typer.Option(None, "--element", help="Chemical symbol, e.g. Au, Fe, Si (overrides the config and its variants)."),
    zone: str = typer.Option(None, "--zone", help="Zone axis along the beam: 001 (square projection) or 111 (hexagonal)."),
    pixel_size: float = typer.Option(None, "--pixel-size", help="Å per pixel (overrides the config; default 0.25)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing dataset in --out."),
    resume: bool = typer.Option(False, "--resume", help="Keep the samples an interrupted run with the same config and seed finished."),
):
    """Atomistic micrographs (HAADF-STEM or HRTEM of an ASE polycrystalline film): images/, grains/ (0 = no lattice), orientation/, boundary/, dataset.json.

    Truth from the atoms (docs/design.md §6.5); dataset.json lists each image's material, thickness and imaging settings.
    """
    from micro_sym.synth.atoms2d import load_atoms2d_config

    material = {"lattice": lattice, "element": element}
    variants = () if any(v is not None for v in material.values()) else None
    cfg = load_atoms2d_config(config, size=_parse_size(size, 2), pixel_size_angstrom=pixel_size, mode=mode, zone=zone,
                              variants=variants, **material)
    _generate(cfg, out, n, seed, overwrite, resume)


def register(app: typer.Typer) -> None:
    app.add_typer(synth_app, name="synth")

"""``micro-sym classical INPUT --out DIR``: training-free segmentation by a symmetric Gabor filter bank.

Writes the segmentation output layout of docs/design.md §1: ``DIR/NAME.zarr`` (OME-Zarr with ``boundary``,
``orientation``, ``grains`` and also ``confidence``), ``DIR/NAME_grains.csv`` and its column description
``DIR/NAME_grains.json``. Everything is written into a temporary directory next to DIR and moved into
place when complete.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import typer

from micro_sym.errors import MicroSymError


def classical(
    input: Path = typer.Argument(..., help="2D image: TIFF, Zarr array/group or OME-Zarr image."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory (created)."),
    lattice: str = typer.Option(None, "--lattice", help="square (angles mod 90°), hexagonal (mod 60°) or fringes "
                                "(plane normals, mod 180°); default: measured from the power spectrum (fringes: square)."),
    period: float = typer.Option(None, "--period", help="Lattice constant in px (default: from the power spectrum)."),
    sigma: float = typer.Option(None, "--sigma", help="Filter window sigma in lattice periods (default 1.25)."),
    threshold: float = typer.Option(5.0, "--threshold", help="Grain misorientation threshold (degrees)."),
    min_size: int = typer.Option(32, "--min-size", help="Smaller grains (px) are merged into a neighbour."),
    array: str = typer.Option(None, "--array", help="Array name inside a Zarr group."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs of the same name."),
):
    """Orientation, boundary and grain maps without a trained model (Fourier/Gabor orientation mapping)."""
    import numpy as np

    from micro_sym.classical import DEFAULT_SIGMA, classical_segment
    from micro_sym.grains.rules import pair_rule
    from micro_sym.classical.grain_lattice import grain_table_columns
    from micro_sym.grains.stats import grain_table, write_grain_csv
    from micro_sym.io import move_into_place, open_image, scratch_folder, write_ome_zarr
    from micro_sym.orientation.symmetry import lattice as find_lattice

    if lattice is not None:
        find_lattice(lattice, ndim=2, where="--lattice")
    img = open_image(input, array=array)
    if img.ndim != 2:
        raise MicroSymError(f"{input}: the classical method needs a 2D image, got {img.ndim}D {tuple(img.data.shape)}")
    image = np.asarray(img.data)
    if lattice is None:
        from micro_sym.classical import lattice_constant, measure_lattice

        try:
            m = measure_lattice(image)
        except MicroSymError as err:
            raise MicroSymError(f"{input}: {str(err).removeprefix('image: ')}") from None
        lattice = m.family()
        period = period or lattice_constant(m.ring_frequency, lattice)
    try:
        res = classical_segment(image, lattice=lattice, period=period, threshold=threshold, min_size=min_size,
                                sigma=DEFAULT_SIGMA if sigma is None else sigma)
    except MicroSymError as err:
        raise MicroSymError(f"{input}: {err}") from None
    labels = res["grains"]
    name = img.name
    ps, unit = img.pixel_size, img.unit
    table = grain_table(labels, res["orientation"], symmetry=lattice, pixel_size=ps, unit=unit)
    table |= grain_table_columns(image, labels, period=res["period"], lattice=lattice, ids=table["grain"])
    produced = [f"{name}.zarr", f"{name}_grains.csv", f"{name}_grains.json"]
    out = Path(out)
    tmp = scratch_folder(out, produced, overwrite)
    try:
        arrays = {"boundary": res["boundary"], "orientation": res["orientation"], "grains": labels.astype(np.uint32),
                  "confidence": res["confidence"]}
        write_ome_zarr(tmp / f"{name}.zarr", arrays, pixel_size=ps, unit=unit)
        import zarr

        root = zarr.open_group(str(tmp / f"{name}.zarr"), mode="a")
        root.attrs["lattice"] = lattice
        root.attrs["micro_sym"] = {"method": "classical", "period_px": res["period"], "halo_px": res["halo"],
                                   "threshold_deg": threshold, "min_size": min_size}
        write_grain_csv(tmp / f"{name}_grains.csv", table, unit or "px", pixel_size=ps, symmetry=lattice,
                        command="micro-sym classical", grain_rule={**pair_rule(threshold), "min_size": min_size})
        if move_into_place(tmp, out, produced):
            tmp = None
    except OSError as err:
        raise MicroSymError(f"{out}: cannot write output ({err.strerror or err})") from None
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    typer.echo(f"period {res['period']:.3f} px; {int(labels.max())} grains; wrote {out}/{name}.zarr and "
               f"{name}_grains.csv (columns in {name}_grains.json)")


def register(app: typer.Typer) -> None:
    app.command("classical")(classical)

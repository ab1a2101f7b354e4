"""``micro-sym ebsd OUT/NAME.zarr --out FILE``: a segment output's orientation map as an EBSD file.

The conventions (frames, what is not indexed, the quality column) are in
:mod:`micro_sym.io.orientation_export` and docs/design.md §1.8.
"""

from __future__ import annotations

from pathlib import Path

import typer


def ebsd(
    output: Path = typer.Argument(..., help="A micro-sym segment output: OUT/NAME.zarr."),
    out: Path = typer.Option(..., "--out", "-o", help="File to write: .ctf (Oxford) or .ang (EDAX/TSL) for 2D "
                             "outputs, .h5 (orix HDF5) for 2D and 3D."),
    lattice: str = typer.Option(None, "--lattice", help="square or hexagonal: a 2D output's lattice, where the "
                                "output does not record it."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing FILE."),
):
    """Write the orientation map of a segment output as an EBSD file for MTEX, orix and DefDAP.

    Every pixel (voxel) keeps its own orientation; pixels with no grain or no
    orientation are not indexed. A 2D angle theta (counter-clockwise on screen)
    is the crystal turned about the beam: Bunge (-theta, 0, 0) in the files'
    frame, whose y runs down the rows (Laue group m-3m for square lattices,
    6/mmm for hexagonal); 3D quaternions are written as they are (m-3m).
    The boundary probability is the quality column (.ctf band contrast, .ang
    image quality); .h5 also holds the grain ids.

    .ctf and .ang stream the map in bands of rows. .h5 goes through orix, which
    holds the whole map in memory: about 300 bytes a point (refused above 2^27
    points, or above the machine's memory)."""
    from micro_sym.io.orientation_export import (
        check_destination,
        export_orientation_map,
        open_segment_output,
    )

    check_destination(Path(out), overwrite=overwrite)  # before reading anything
    source = open_segment_output(output, lattice=lattice)
    info = export_orientation_map(source, out, overwrite=overwrite)
    if info.get("note"):
        typer.echo(f"note: {info['note']}", err=True)
    step = "x".join(f"{s:g}" for s in info["step"]) + (f" {info['unit']}" if info["unit"] else " px")
    typer.echo(f"wrote {info['path']}: {'x'.join(map(str, source.shape))} points ({info['indexed']} indexed), "
               f"{source.lattice.name} lattice, step {step}")


def register(app: typer.Typer) -> None:
    app.command("ebsd")(ebsd)

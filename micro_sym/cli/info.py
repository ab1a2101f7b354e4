"""``micro-sym info PATH``: what an image is, computed lazily."""

from __future__ import annotations

from pathlib import Path

import typer


def info(
    path: Path = typer.Argument(..., help="TIFF, Zarr, OME-Zarr or microscope file (.dm3/.dm4, .emd, .ser, MRC)."),
    array: str = typer.Option(None, "--array", help="Array name inside a Zarr group."),
    level: int = typer.Option(0, "--level", help="OME-Zarr multiscale level."),
):
    """Print shape, dtype, chunks, pixel size and value range (streamed chunk by chunk)."""
    from micro_sym.io import open_image, value_range

    img = open_image(path, array=array, level=level)
    lo, hi = value_range(img)
    size = " x ".join(f"{p:g}" for p in img.pixel_size) + f" {img.unit or ''}" if img.pixel_size else "unknown"
    chunks = tuple(c[0] for c in img.data.chunks)
    rows = [
        ("path", str(path)),
        ("axes", img.axes),
        ("shape", " x ".join(map(str, img.data.shape))),
        ("dtype", str(img.data.dtype)),
        ("chunks", " x ".join(map(str, chunks)) + f" ({img.data.npartitions} chunks)"),
        ("pixel size", size.strip()),
        ("value range", f"{lo:g} .. {hi:g}"),
    ]
    if img.metadata.get("source"):  # microscope files: which signal (and frame of a stack) was taken
        rows.insert(1, ("source", f"{img.metadata.get('format', '')}, {img.metadata['source']}"))
    for key, value in rows:
        typer.echo(f"{key:>12}: {value}")


def register(app: typer.Typer) -> None:
    app.command("info")(info)

"""``micro-sym evaluate --model M DATASET``: score a model on a labeled dataset."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def evaluate(
    dataset: Path = typer.Argument(..., help="Labeled dataset (images/, grains/, optional orientation/)."),
    model: str = typer.Option("default-2d", "--model", help="Model file or bundled name."),
    json_out: Path = typer.Option(None, "--json", help="Write the full report (overall + per image) as JSON."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    threshold: float = typer.Option(5.0, "--threshold", help="Grain rule misorientation threshold, degrees."),
    min_size: int = typer.Option(None, "--min-size", help="Smallest grain seed (pixels). Default: as segment, 2 lattice "
                                 "cells where the lattice is measured (--period), else 32 (3D: 32 voxels)."),
    boundary_threshold: float = typer.Option(0.5, "--boundary-threshold", help="Boundary probability threshold."),
    min_gt_size: int = typer.Option(0, "--min-gt-size", help="Ignore true grains smaller than this (pixels, voxels for volumes) in the grain F1; 0 counts all."),
    period: str = typer.Option(None, "--period", help="'measure': each image's lattice measured and the network run at its "
                               "training period, as segment does; a number: the images' lattice period in px. Default: "
                               "the images' own sampling."),
    split_grains: bool = typer.Option(False, "--split-grains", help="3D models: grains split and joined by the "
                                      "volumes' measured lattice, as segment --split-grains."),
):
    """Boundary F1 (2-px tolerance), grain F1 (IoU > 0.5), median orientation error, per image and overall.

    3D models also: the share of the true vacuum left unassigned, Σ3 twin-boundary recall and precision.
    """
    from micro_sym.io.datasets import LabeledDataset
    from micro_sym.errors import MicroSymError
    from micro_sym.inference.evaluate import evaluate_model
    from micro_sym.models import load_model

    if period not in (None, "measure"):
        try:
            period = float(period)
        except ValueError:
            raise MicroSymError(f"--period: expected 'measure' or a number of pixels, got '{period}'") from None
        if period <= 0:
            raise MicroSymError(f"--period: must be positive, got {period:g}")
    from micro_sym.training.train3d import cli_evaluate3d, is_3d_model  # 3D hook: gcnn3d models
    if is_3d_model(model): return cli_evaluate3d(model, dataset, device=device, threshold=threshold, min_size=32 if min_size is None else min_size, boundary_threshold=boundary_threshold, json_out=json_out, log=typer.echo, period=period, split_grains=split_grains, min_gt_size=min_gt_size) and None  # noqa: E701,E501
    if split_grains:
        raise MicroSymError("--split-grains: evaluate applies it to 3D models only (2D: run segment --split-grains)")
    ds = LabeledDataset(dataset)
    m = load_model(model, device=device, export=True)
    if ds.ndim != 2 or ds.k != m.k:
        raise MicroSymError(f"{dataset}: {ds.ndim}D {ds.lattice} data does not fit a 2D k={m.k} model")
    report = evaluate_model(m, ds, threshold=threshold, min_size=min_size, boundary_threshold=boundary_threshold, device=device,
                            min_gt_size=min_gt_size, period=period)
    report["min_gt_size"] = min_gt_size
    report["period"] = period
    report["model"] = {"path": m.meta.get("path"), "sha256": m.meta.get("sha256"), "config": m.config}
    report["dataset"] = str(dataset.resolve())
    typer.echo(f"{'image':<24} {'boundary F1':>11} {'grain F1':>9} {'ori med °':>9} {'grains':>11}")
    for name, r in report["images"].items():
        typer.echo(f"{name:<24} {r['boundary_f1']:>11.3f} {r['grain_f1']:>9.3f} {r['orientation_median_deg']:>9.2f} "
                   f"{r['n_grains_pred']:>5}/{r['n_grains_true']:<5}")
    ov = report["overall"]
    typer.echo(f"{'overall':<24} {ov['boundary_f1']:>11.3f} {ov['grain_f1']:>9.3f} {ov['orientation_median_deg']:>9.2f} "
               f"{ov['n_grains_pred']:>5}/{ov['n_grains_true']:<5}")
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report, indent=2, allow_nan=True))


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)

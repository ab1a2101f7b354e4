"""Filling the predicted boundary band of 3D grains (issue 27): does it find the twins?

Usage::

    python bench/studies/band_fill3d.py [--model atoms-3d] [--data data/atoms3d_range_val data/atoms3d_heldout_imaging]
                                        [--out FILE]

The seeded grains of a 3D network leave its predicted boundary band unassigned (label 0), and the Σ3
score of ``micro-sym evaluate`` grows each grain one voxel into it: where the band at a twin is wider
than two voxels, the grains on either side never meet and the twin is not found. This study grows
every grain ``d`` = 0-3 more face steps into the unassigned voxels
(:func:`micro_sym.grains.stats.grow_into_gaps`: grains never overwrite each other) after the grain rule
of ``micro-sym evaluate --period measure``, and scores grain F1, Σ3 recall and precision (each grain's
orientation the mean of its harmonic field, as ``segment`` writes it) and the vacuum left unassigned,
per volume and pooled (Σ3 from the summed face counts). ``d`` is chosen on the first dataset (the
model's validation volumes, fit) and judged on the second (held out).

Writes bench/results/band_fill3d.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/, for _common
from _common import RESULTS, log, write_json  # noqa: E402

STEPS = (0, 1, 2, 3)


def score_volume(net, img, grains, quats) -> dict:
    """Scores of one volume for each number of fill steps."""
    from micro_sym.grains.field import grain_orientations, paint
    from micro_sym.grains.stats import grow_into_gaps
    from micro_sym.metrics3d import sigma3_boundaries, vacuum_unassigned
    from micro_sym.training.train3d import boundary_from_grains, grain_f1, network_grains

    maps, labels = network_grains(net, img, period="measure")
    truth = np.where(boundary_from_grains(grains), 0, grains)
    out = {}
    for d in STEPS:
        lab = (grow_into_gaps(labels, d) if d else labels).astype(np.int64)
        row = {"grain_f1": grain_f1(lab, truth)} | vacuum_unassigned(lab, grains)
        if quats is not None:
            row |= sigma3_boundaries(lab, paint(lab, grain_orientations(maps["orientation"], lab, net.grain_field)),
                                     grains, quats)
        out[str(d)] = {k: float(v) for k, v in row.items()}
    return out


def pooled(volumes: dict) -> dict:
    """Per fill step: mean grain F1, Σ3 recall and precision from the summed face counts, worst vacuum."""
    out = {}
    for d in map(str, STEPS):
        rows = [v[d] for v in volumes.values()]
        total = {k: sum(r.get(k, 0.0) for r in rows) for k in
                 ("sigma3_faces_true", "sigma3_faces_found", "sigma3_faces_pred", "sigma3_faces_pred_correct")}
        vacuum = [r["vacuum_unassigned"] for r in rows if np.isfinite(r["vacuum_unassigned"])]
        out[d] = {"grain_f1": float(np.mean([r["grain_f1"] for r in rows])),
                  "sigma3_recall": total["sigma3_faces_found"] / total["sigma3_faces_true"] if total["sigma3_faces_true"] else None,
                  "sigma3_precision": (total["sigma3_faces_pred_correct"] / total["sigma3_faces_pred"]
                                       if total["sigma3_faces_pred"] else None),
                  "vacuum_unassigned_min": min(vacuum) if vacuum else None}
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="atoms-3d")
    ap.add_argument("--data", nargs="+", default=["data/atoms3d_range_val", "data/atoms3d_heldout_imaging"])
    ap.add_argument("--out", type=Path, default=RESULTS / "band_fill3d.json")
    args = ap.parse_args(argv)

    from micro_sym.inference.network import as_network
    from micro_sym.models import load_model
    from micro_sym.training.train3d import load_volumes

    net = as_network(load_model(args.model, export=True), export=False)
    report = {"command": "python bench/studies/band_fill3d.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "model": args.model, "datasets": {}}
    for data in args.data:
        volumes = {name: score_volume(net, img, grains, quats) for name, img, grains, quats in load_volumes(data, None)}
        report["datasets"][data] = {"pooled": pooled(volumes), "volumes": volumes}
        for d, p in report["datasets"][data]["pooled"].items():
            log(f"{data}: fill {d}: grain F1 {p['grain_f1']:.3f}, Σ3 recall {p['sigma3_recall']:.3f} / precision "
                f"{p['sigma3_precision']:.3f}, vacuum unassigned >= {p['vacuum_unassigned_min']}")
    write_json(args.out, report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

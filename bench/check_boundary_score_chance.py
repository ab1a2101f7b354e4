"""Chance level of the tolerance boundary F1 in 2D and 3D: what random masks score.

    python bench/check_boundary_score_chance.py

Scores random masks (10% and 30% of points, fixed seed) against the true boundaries of the held-out
synthetic sets with :func:`micro_sym.metrics.boundary_f1_masks` (thinned maps, 2-point tolerance):
the 2D test micrographs (``data/synth2d_test``) and the 3D test volumes (``data/synth3d_test``; see
configs/train_3d_synth.yaml for the commands that write them). Prints the mean over the images and
the share of true boundary points; writes ``bench/results/boundary_score_chance.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from micro_sym.dataset import LabeledDataset
from micro_sym.metrics import boundary_f1_masks, boundary_from_labels
from micro_sym.models.train3d import boundary_from_grains

ROOT = Path(__file__).resolve().parent
DATASETS = {"2d": ("data/synth2d_test", boundary_from_labels), "3d": ("data/synth3d_test", boundary_from_grains)}


def main():
    rng = np.random.default_rng(0)
    result = {"command": "python bench/check_boundary_score_chance.py"}
    for dim, (path, truth_of) in DATASETS.items():
        ds = LabeledDataset(ROOT.parent / path)
        truths = [truth_of(ds[i].grains) for i in range(len(ds))]
        row = {"dataset": path, "images": len(truths), "boundary_share": float(np.mean([t.mean() for t in truths]))}
        for frac in (0.1, 0.3):
            row[f"random_{frac}"] = float(np.mean([boundary_f1_masks(rng.random(t.shape) < frac, t)["f1"] for t in truths]))
        result[dim] = row
        print(dim, row)
    out = ROOT / "results" / "boundary_score_chance.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

"""Chance level of the tolerance boundary F1 in 2D and 3D: what random masks score.

    python bench/studies/check_boundary_score_chance.py

Scores random masks (10% and 30% of points, fixed seed) against the true boundaries of the held-out
synthetic sets with :func:`micro_sym.metrics.boundary_f1_masks` (thinned maps, 2-point tolerance):
the 2D test micrographs (``data/synth2d_test``) and the 3D test volumes (``data/synth3d_test``; see
micro_sym/configs/train_3d_synth.yaml for the commands). Prints the mean over the images and
the share of true boundary points; writes ``bench/results/boundary_score_chance.json``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/, for _common

from _common import RESULTS, ROOT, write_json  # noqa: E402
from micro_sym.io.datasets import LabeledDataset  # noqa: E402
from micro_sym.metrics import boundary_f1_masks, boundary_from_labels  # noqa: E402
from micro_sym.training.train3d import boundary_from_grains  # noqa: E402

DATASETS = {"2d": ("data/synth2d_test", boundary_from_labels), "3d": ("data/synth3d_test", boundary_from_grains)}


def main():
    rng = np.random.default_rng(0)
    result = {"command": "python bench/studies/check_boundary_score_chance.py"}
    for dim, (path, truth_of) in DATASETS.items():
        ds = LabeledDataset(ROOT / path)
        truths = [truth_of(ds[i].grains) for i in range(len(ds))]
        row = {"dataset": path, "images": len(truths), "boundary_share": float(np.mean([t.mean() for t in truths]))}
        for frac in (0.1, 0.3):
            row[f"random_{frac}"] = float(np.mean([boundary_f1_masks(rng.random(t.shape) < frac, t)["f1"] for t in truths]))
        result[dim] = row
        print(dim, row)
    out = write_json(RESULTS / "boundary_score_chance.json", result, indent=1)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

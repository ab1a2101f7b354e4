"""Ship a trained run as a bundled 2D model (``default-2d``, ``robust-2d``) with its held-out metrics.

    python bench/provenance/bundle_model_2d.py RUN_DIR/model.pt --test data/synth2d_test [--out micro_sym/weights/default_2d.pt]

The held-out set must come from seeds that training and validation never used (see
``micro_sym/configs/train_default_2d.yaml``). The file's ``meta.metrics`` gets ``val`` (from training),
``heldout`` (pooled over the test set, every true grain counted), ``heldout_min_gt_size_16`` (true
grains under 16 px, i.e. border slivers and one-pixel label islands, left out) and per-image
``heldout_images``. The model's provenance (``trained_on``) is kept as training wrote it.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", message=".*py3nj.*")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/, for _common

from _common import ROOT  # noqa: E402
from micro_sym.io.datasets import LabeledDataset  # noqa: E402
from micro_sym.inference.evaluate import evaluate_model  # noqa: E402
from micro_sym.models import load_model, save_model  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", type=Path)
    p.add_argument("--test", type=Path, required=True, help="held-out labeled dataset")
    p.add_argument("--out", type=Path, default=ROOT / "micro_sym/weights/default_2d.pt")
    args = p.parse_args()

    model = load_model(args.model)
    test = LabeledDataset(args.test)
    report = evaluate_model(model.export(), test)
    strict = evaluate_model(model.export(), test, min_gt_size=16)
    metrics = dict(model.meta.get("metrics", {}))
    metrics.update(heldout=report["overall"], heldout_min_gt_size_16=strict["overall"], heldout_images=report["images"],
                   heldout_dataset=str(args.test))
    save_model(model, args.out, trained_on=model.meta.get("trained_on", {}), metrics=metrics)
    print(json.dumps({k: metrics[k] for k in ("heldout", "heldout_min_gt_size_16")}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

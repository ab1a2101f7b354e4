"""Grid over the region-merging constants of :mod:`micro_sym.grains.regions` on a tuning set.

    micro-sym synth 2d --out data/synth2d_tune --n 6 --size 512 --seed 5000
    python bench/tune_grain_rule.py --model default-2d --data data/synth2d_tune [--out bench/results/tune_grain_rule.json]

The tuning set's seed (5000) is disjoint from training (1000), validation (2000) and the held-out
test set (3000) of the bundled model, so choosing ``PAIR_FRACTION`` and ``REACH`` here leaves the
held-out figures untouched. Each row: pooled grain F1 (IoU > 0.5, every true grain counted) of the
model's maps with pixel pairs joined at ``fraction × 5°`` and regions merged within ``reach`` px; the
first row is the plain neighbour-pair rule (no merging). The network runs once per image.
The stage-1 weights that the constants were chosen with are in git history:
``git show 5949cbf:micro_sym/weights/default_2d.pt > stage1.pt``.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", message=".*py3nj.*")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from micro_sym.dataset import LabeledDataset  # noqa: E402
from micro_sym.metrics import grain_f1  # noqa: E402
from micro_sym.models import load_model  # noqa: E402
from micro_sym.predict import grains_from_maps, predict_image  # noqa: E402

THRESHOLD = 5.0


def predicted(model, root) -> list:
    """``(sample, maps)`` for every sample of the labeled dataset at ``root``: what :func:`pooled` scores."""
    return [(s, predict_image(model, s.image)) for s in LabeledDataset(root)]


def pooled(cache, labels_of) -> dict:
    """Grain F1 pooled over ``(sample, maps)`` pairs, with grains ``labels_of(maps)``."""
    tp = n_pred = n_gt = 0
    for sample, maps in cache:
        r = grain_f1(labels_of(maps), sample.grains)
        tp, n_pred, n_gt = tp + r["tp"], n_pred + r["n_pred"], n_gt + r["n_gt"]
    p, r = tp / max(n_pred, 1), tp / max(n_gt, 1)
    return {"grain_f1": 2 * p * r / (p + r) if p + r else 0.0, "tp": tp, "n_pred": n_pred, "n_gt": n_gt}


def pooled_f1(cache, rule) -> dict:
    return pooled(cache, lambda maps: grains_from_maps(maps, 4, threshold=THRESHOLD, rule=rule))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default-2d")
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "synth2d_tune")
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.4, 0.5, 0.6, 0.7, 0.8])
    ap.add_argument("--reaches", type=int, nargs="+", default=[2, 3, 4, 5])
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "tune_grain_rule.json")
    args = ap.parse_args()

    model = load_model(args.model, export=True)
    cache = predicted(model, args.data)
    rows = [{"rule": "pair rule only", **pooled_f1(cache, {"pair_threshold": THRESHOLD, "merge_threshold": None})}]
    for fraction in args.fractions:
        for reach in args.reaches:
            rule = {"pair_threshold": fraction * THRESHOLD, "merge_threshold": THRESHOLD, "reach": reach}
            rows.append({"rule": f"fraction {fraction:g}, reach {reach}", "fraction": fraction, "reach": reach,
                         **pooled_f1(cache, rule)})
    for row in rows:
        print(f"{row['rule']:<24} grain F1 {row['grain_f1']:.3f}  ({row['tp']} matched, {row['n_pred']} predicted, "
              f"{row['n_gt']} true)", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"model": args.model, "data": str(args.data), "threshold": THRESHOLD, "rows": rows},
                                   indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

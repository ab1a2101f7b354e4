"""Grid over the region-merging constants of :mod:`micro_sym.grains.regions` on a tuning set.

    micro-sym synth 2d --out data/synth2d_tune --n 6 --size 512 --seed 5000
    python bench/studies/tune_grain_rule.py --model default-2d --data data/synth2d_tune [--out bench/results/tune_grain_rule.json]

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
import sys
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", message=".*py3nj.*")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/, for _common

from _common import RESULTS, ROOT, pooled, predicted, write_json  # noqa: E402
from micro_sym.models import load_model  # noqa: E402
from micro_sym.inference.whole_image import grains_from_maps  # noqa: E402

THRESHOLD = 5.0


def pooled_f1(cache, rule) -> dict:
    return pooled(cache, lambda maps: grains_from_maps(maps, 4, threshold=THRESHOLD, rule=rule))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default-2d")
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "synth2d_tune")
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.4, 0.5, 0.6, 0.7, 0.8])
    ap.add_argument("--reaches", type=int, nargs="+", default=[2, 3, 4, 5])
    ap.add_argument("--out", type=Path, default=RESULTS / "tune_grain_rule.json")
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
    write_json(args.out, {"model": args.model, "data": str(args.data), "threshold": THRESHOLD, "rows": rows})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

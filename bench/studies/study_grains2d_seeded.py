"""Study: 2D grains of the bundled default-2d, the region rule (rows "product": the rule before) vs seeded grains.

    python bench/studies/study_grains2d_seeded.py --data data/synth2d_tune data/synth2d_more16 --out bench/results/grains2d_seeded_tune.json
    python bench/studies/study_grains2d_seeded.py --data data/synth2d_test --radii 2.5 --reaches 12 --out bench/results/grains2d_seeded_test.json

The region rule (the product's rule before this study, :func:`micro_sym.grains.regions.region_rule`):
pixel pairs at 3.5°, regions merged within 4 px at 5°, small grains merged. Seeded (:func:`micro_sym.grains.seeded.seeded_grains` with
``reach``): pair-rule seeds of the pixels farther than ``r`` from any predicted boundary pixel, seeds
merged within ``reach`` px at 5°, seeds under 32 px dropped, then the bounded flood (4 steps). The
tuning sets (synth seeds 5000 and 6000; ``micro-sym synth 2d --out data/synth2d_more16 --n 16
--seed 6000``) choose ``r`` and ``reach``; the second line scores that choice once on the held-out
set. Each row: pooled grain F1 over the set (IoU > 0.5, every true grain counted). A wider grid on the
tuning sets around the choice (flood steps, boundary and seed pair thresholds, seed minimum size)::

    python bench/studies/study_grains2d_seeded.py --data data/synth2d_tune data/synth2d_more16 --radii 2.5 --reaches 12 \
        --steps 4 8 --boundary-thresholds 0.4 0.5 0.6 --pair-thresholds 4 5 --seed-min-sizes 16 32 \
        --out bench/results/grains2d_seeded_grid_tune.json The choice is now
the product's rule for network maps (:data:`micro_sym.grains.rules.SEEDED_2D`).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", message=".*py3nj.*")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/, for _common

from _common import pooled, predicted, write_json  # noqa: E402
from micro_sym.grains.regions import region_rule  # noqa: E402
from micro_sym.grains.seeded import seeded_grains  # noqa: E402
from micro_sym.models import load_model  # noqa: E402
from micro_sym.inference.whole_image import grains_from_maps  # noqa: E402

STEPS = 4


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default-2d")
    ap.add_argument("--data", type=Path, nargs="+", required=True)
    ap.add_argument("--radii", type=float, nargs="+", default=[1.5, 2.5, 3.5])
    ap.add_argument("--reaches", type=int, nargs="+", default=[8, 10, 12])
    ap.add_argument("--steps", type=int, nargs="+", default=[STEPS], help="flood steps")
    ap.add_argument("--boundary-thresholds", type=float, nargs="+", default=[0.5])
    ap.add_argument("--pair-thresholds", type=float, nargs="+", default=[5.0], help="seed pair rule, degrees")
    ap.add_argument("--seed-min-sizes", type=int, nargs="+", default=[32], help="seeds smaller than this are dropped")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    model = load_model(args.model, export=True)
    rows = []
    for root in args.data:
        cache = predicted(model, root)
        rows.append({"data": str(root), "rule": "product", **pooled(cache, lambda m: grains_from_maps(m, 4, rule=region_rule(5.0)))})
        print(rows[-1], flush=True)
        grid = itertools.product(args.radii, args.reaches, args.steps, args.boundary_thresholds, args.pair_thresholds,
                                 args.seed_min_sizes)
        for r, reach, steps, bt, pt, ms in grid:
            rule = lambda m: seeded_grains(m["orientation"], m["boundary"], symmetry="square", threshold=pt,  # noqa: E731
                                           boundary_threshold=bt, core_radius=r, steps=steps, min_size=ms, reach=reach)
            row = {"core_radius": r, "reach": reach, "steps": steps}
            if (bt, pt, ms) != (0.5, 5.0, 32):  # rows of the first study had none of these keys
                row |= {"boundary_threshold": bt, "pair_threshold": pt, "seed_min_size": ms}
            rows.append({"data": str(root), "rule": "seeded", **row, **pooled(cache, rule)})
            print(rows[-1], flush=True)
    write_json(args.out, {"model": args.model, "rows": rows}, indent=1)


if __name__ == "__main__":
    main()

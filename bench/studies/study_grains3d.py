"""Study: grains from a 3D network's maps, the product's pair rule vs a seeded watershed.

    python bench/studies/study_grains3d.py --model runs/octa_synth3d/model.pt --data data/synth3d_val --steps 4 8 16 --out bench/results/grains3d_rules_val.json
    python bench/studies/study_grains3d.py --model runs/octa_synth3d/model.pt --data data/synth3d_test --thresholds 0.5 --radii 3.5 --steps 8 --out bench/results/grains3d_rules_test.json

(the model: micro_sym/configs/train_3d_synth.yaml; the second line scores the setting chosen on the first's
validation volumes, once, on the held-out ones.)

Why: in 3D a predicted boundary must be a closed *surface*; one hole joins two grains, and the
network's orientation turns smoothly across low-angle boundaries, so the pair rule (face
neighbours within 5°, predicted boundary voxels cut) leaks. A seeded watershed (seeds = pair-rule
components of voxels farther than ``r`` from any predicted boundary voxel, seeds under 32 voxels
dropped; every other non-boundary voxel flooded from the seeds over the boundary probability,
``skimage.segmentation.watershed``) closes holes narrower than ~2r. It is a whole-volume operation
(a flood can cross any number of blocks), which a block engine cannot tile; ``--steps`` adds the
library's bounded form (:func:`micro_sym.grains.seeded.seeded_grains`: the same seeds, paths of at
most ``steps`` voxels), which it can. Choose settings on a validation set, not the held-out one.
Each row: mean grain F1 (IoU > 0.5, true boundary voxels excluded, as ``micro-sym evaluate``) over
the volumes, and the per-volume values; the network runs once per volume.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

warnings.filterwarnings("ignore", message=".*py3nj.*")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/, for _common

from _common import RESULTS, write_json  # noqa: E402
from micro_sym.grains import filter_small_grains, reconstruct_grains  # noqa: E402
from micro_sym.inference import load_network, predict_array  # noqa: E402
from micro_sym.training.train3d import boundary_from_grains, grain_f1, load_volumes  # noqa: E402

MIN_SIZE = 32  # the default of `micro-sym evaluate` (3D too)


def pair_rule(prob, q, bt):
    return reconstruct_grains(q, symmetry="cubic", threshold=5.0, connectivity=1, boundary=prob,
                              boundary_threshold=bt, min_size=MIN_SIZE)


def seeded_watershed(prob, q, bt, r):
    from scipy import ndimage
    from skimage.segmentation import watershed

    boundary = prob >= bt
    core = ndimage.distance_transform_edt(~boundary) > r
    seeds = reconstruct_grains(q, symmetry="cubic", threshold=5.0, connectivity=1, mask=core, min_size=0)
    seeds = filter_small_grains(seeds, MIN_SIZE, small="drop")
    labels = watershed(prob, markers=seeds.astype(np.int32), mask=~boundary)
    return filter_small_grains(labels, MIN_SIZE, small="merge")


def seeded_flood(prob, q, bt, r, steps):
    """The product's bounded seeded flood (:func:`micro_sym.grains.seeded.seeded_grains`)."""
    from micro_sym.grains.seeded import seeded_grains

    return seeded_grains(q, prob, symmetry="cubic", threshold=5.0, boundary_threshold=bt, core_radius=r, steps=steps,
                         min_size=MIN_SIZE)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--thresholds", type=float, nargs="+", default=[0.3, 0.5])
    ap.add_argument("--radii", type=float, nargs="+", default=[1.5, 2.5, 3.5, 4.5])
    ap.add_argument("--steps", type=int, nargs="*", default=[], help="also the bounded seeded flood of micro_sym.grains.seeded with these steps")
    ap.add_argument("--out", type=Path, default=RESULTS / "grains3d_rules_val.json")
    args = ap.parse_args()
    net = load_network(args.model)  # exported plain torch
    cache = []
    for _, image, grains, _ in load_volumes(args.data, None):
        maps = predict_array(net, image)  # whole volume, as micro_sym.training.train3d.evaluate3d
        cache.append((maps["boundary"], maps["orientation"], np.where(boundary_from_grains(grains), 0, grains)))

    def score(rule):
        f1 = [grain_f1(rule(prob, q), truth) for prob, q, truth in cache]
        return {"grain_f1": float(np.mean(f1)), "per_volume": [round(float(v), 4) for v in f1]}

    rows = []
    for bt in args.thresholds:
        rows.append({"rule": "pair", "boundary_threshold": bt, **score(lambda p, q: pair_rule(p, q, bt))})
        print(rows[-1], flush=True)
        for r in args.radii:
            rows.append({"rule": "seeded_watershed", "boundary_threshold": bt, "core_radius": r,
                         **score(lambda p, q: seeded_watershed(p, q, bt, r))})
            print(rows[-1], flush=True)
            for steps in args.steps:
                rows.append({"rule": "seeded_flood", "boundary_threshold": bt, "core_radius": r, "steps": steps,
                             **score(lambda p, q: seeded_flood(p, q, bt, r, steps))})
                print(rows[-1], flush=True)
    write_json(args.out, {"model": args.model, "data": str(args.data), "n_volumes": len(cache),
                          "min_size": MIN_SIZE, "rows": rows}, indent=1)


if __name__ == "__main__":
    main()

"""A held-out study's grains as the product writes them, on the study's own held-out images (issue 26).

Usage::

    python bench/studies/fringes_fusion_product.py [--out FILE]
    python bench/studies/fringes_fusion_product.py --split-grains [--out FILE]

``bench/studies/fringes_fusion_heldout.py`` judged, before it was built, a map of fringes-2d's grains
plus the robust-2d grains lying mostly where fringes-2d has none, from separate runs of the two
networks (file ``bench/results/fringes_fusion_heldout.json``). ``micro-sym segment --method auto`` now
writes that map itself where it measures fringes (:mod:`micro_sym.inference.fusion`). This runs the
product once per held-out image (same images: ``bench/_data/atoms2d``, 2 per condition) and compares,
per condition, its pooled grain counts with the study's fused column.

``--split-grains``: the same for ``bench/studies/grain_split.py --init-heldout q90`` (file
``grain_split_init_heldout.json``, its q90 column: the rule the option runs, each image split with the
period auto measured) and ``segment --split-grains`` (:mod:`micro_sym.inference.split_run`), which
splits the written map's grains block by block where the study split whole label images.

Expected before the run: the same true, predicted and true-matched grain counts in every condition
(the rule and the networks' runs are the same), so the same mean grain F1 per set. Prints and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/, for _common
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/studies
from _common import RESULTS, log, pooled_grain_f1, write_json  # noqa: E402
from atoms2d_heldout import conditions, make_dataset, read_maps, run_segment  # noqa: E402
from fringes_fusion_heldout import SETS  # noqa: E402


#: ``--split-grains`` or not: the study file it is compared with and that file's column.
STUDIES = {False: ("fringes_fusion_heldout.json", "fused"), True: ("grain_split_init_heldout.json", "q90")}


def score_condition(root: Path, tmp: Path, options: tuple = ()) -> dict:
    """Pooled grain F1 of the product's auto over the condition's images, how many it fused, its wall time."""
    from micro_sym.io.datasets import LabeledDataset

    pairs, fused, wall = [], 0, []
    for s in LabeledDataset(root):
        run = run_segment(root / "images" / f"{s.name}.tif", tmp / "auto", "auto", options)
        if run["rc"]:
            continue
        wall.append(run["wall_s"])
        fused += "grains fused" in run["cli_says"]
        pairs.append((read_maps(tmp / "auto", s.name)["grains"], s.grains))
    return {"images": len(pairs), "fused_images": fused, "product": pooled_grain_f1(pairs), "wall_s": wall}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--split-grains", action="store_true", help="segment --split-grains against grain_split.py --heldout")
    ap.add_argument("--study", help="the study's results file (default: by --split-grains)")
    ap.add_argument("--out", help="default: fringes_fusion_product.json, grain_split_product.json with --split-grains")
    args = ap.parse_args()
    study_file, column = STUDIES[args.split_grains]
    options = ("--split-grains",) if args.split_grains else ()
    out = args.out or str(RESULTS / ("grain_split_product.json" if args.split_grains else "fringes_fusion_product.json"))

    study = json.loads(Path(args.study or RESULTS / study_file).read_text())["sets"]
    sets, same = {}, 0
    with tempfile.TemporaryDirectory() as tmp:
        for set_name, (zone, fringes_only) in SETS.items():
            judged = {r["condition"]: r[column] for r in study[set_name]["conditions"]}
            rows = []
            for name, cond in conditions(["haadf", "hrtem"], [8, 16], [5, 50], zone, fringes_only):
                row = {"condition": name} | score_condition(make_dataset(name, cond, args.n, args.size), Path(tmp), options)
                counts = ("tp", "n_pred", "n_gt")
                row["same_as_study"] = all(row["product"][k] == judged[name][k] for k in counts)
                same += row["same_as_study"]
                rows.append(row)
                log(f"{set_name} / {name}: {row['fused_images']} fused; grain F1 product {row['product']['grain_f1']:.3f}, "
                    f"study {judged[name]['grain_f1']:.3f}")
            mean = float(np.mean([r["product"]["grain_f1"] for r in rows]))
            log(f"{set_name}: mean grain F1 product {mean:.4f}, study {study[set_name]['mean_grain_f1'][column]:.4f}")
            sets[set_name] = {"mean_grain_f1": {"product": mean, f"study_{column}": study[set_name]["mean_grain_f1"][column],
                                                "study_auto": study[set_name]["mean_grain_f1"]["auto"]},
                              "conditions": rows}
    total = sum(len(s["conditions"]) for s in sets.values())
    log(f"{same} of {total} conditions with the study's {column} grain counts")
    path = write_json(out, {"what": __doc__.split("\n\n")[0],
                            "command": "python bench/studies/fringes_fusion_product.py " + " ".join(sys.argv[1:]),
                            "expected": f"the study's {column} grain counts in every condition",
                            "conditions_same": same, "conditions": total, "sets": sets})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

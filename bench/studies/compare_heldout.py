"""Before/after summary of two runs of ``bench/studies/atoms2d_heldout.py`` on the same conditions.

    python bench/studies/compare_heldout.py --pair NAME BEFORE.json AFTER.json [--pair ...] --out FILE

For each pair and each method both runs have: the mean over conditions of boundary F1, grain F1, the
no-lattice pixels left out of grains and the median error of each grain's measured lattice angle,
before and after; the true grains matched and the grains predicted, summed over conditions; and in
how many conditions grain F1 rose or fell by more than half a point. Prints them and writes FILE (JSON).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/, for _common
from _common import write_json  # noqa: E402

KEYS = ("boundary_f1", "grain_f1", "no_lattice_unassigned", "grain_lattice_median_deg")


def summary(before: dict, after: dict) -> dict:
    a = {c["condition"]: c["methods"] for c in before["conditions"]}
    b = {c["condition"]: c["methods"] for c in after["conditions"]}
    common = [c for c in b if c in a]
    out = {}
    for method in sorted(set.intersection(*(set(a[c]) & set(b[c]) for c in common))):
        row = {"conditions": len(common)}
        for key in KEYS:
            pairs = [(a[c][method][key], b[c][method][key]) for c in common
                     if a[c][method][key] is not None and b[c][method][key] is not None]
            row[key] = {"before": round(float(np.mean([p for p, _ in pairs])), 3),
                        "after": round(float(np.mean([q for _, q in pairs])), 3)}
        for key, count in (("grains_matched", "tp"), ("grains_predicted", "n_pred")):
            row[key] = {"before": int(sum(a[c][method]["grains"][count] for c in common)),
                        "after": int(sum(b[c][method]["grains"][count] for c in common))}
        diff = [b[c][method]["grain_f1"] - a[c][method]["grain_f1"] for c in common]
        row["grain_f1_rose_in"] = int(sum(d > 0.005 for d in diff))
        row["grain_f1_fell_in"] = int(sum(d < -0.005 for d in diff))
        row["grain_f1_largest_fall"] = round(float(-min(diff)), 3) if min(diff) < 0 else 0.0
        out[method] = row
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pair", nargs=3, action="append", metavar=("NAME", "BEFORE", "AFTER"), required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    doc = {"command": "python bench/studies/compare_heldout.py " + " ".join(sys.argv[1:]), "pairs": {}}
    for name, before, after in args.pair:
        s = summary(json.loads(Path(before).read_text()), json.loads(Path(after).read_text()))
        doc["pairs"][name] = {"before": before, "after": after, "methods": s}
        for method, row in s.items():
            print(f"{name} {method}: " + ", ".join(f"{k} {row[k]['before']} -> {row[k]['after']}" for k in KEYS)
                  + f", matched {row['grains_matched']['before']} -> {row['grains_matched']['after']} of predicted "
                  f"{row['grains_predicted']['before']} -> {row['grains_predicted']['after']}"
                  + f" (grain F1 rose in {row['grain_f1_rose_in']}, fell in {row['grain_f1_fell_in']} of {row['conditions']})")
    print(f"wrote {write_json(args.out, doc)}")


if __name__ == "__main__":
    main()

"""Whether `auto` should map an image that measures as one set of fringes with fringes-2d (issue 26).

Usage::

    python bench/studies/fringes_network_choice.py [--conditions ...] [--n 2] [--out FILE]

`auto` maps fringes on the square network's lattice (robust-2d), which gives an angle modulo 90°: two
neighbouring grains whose fringes cross at right angles look alike to it and are joined. fringes-2d
(k = 2) gives the plane normal modulo 180°. The choice is made on *new draws* of held-out conditions
(the held-out study's generator, seed offset 70000, under ``bench/_data/atoms2d_draws/70000``): fringe
films of both imaging modes, periods and doses, and square films with some grains showing fringes.
Every image runs through ``micro-sym segment`` twice, ``auto`` and ``--method network --model
fringes-2d``. "routed" takes the fringes-2d run where auto measured a fringes lattice and ran a network,
else auto's run: what auto does once it routes fringes to fringes-2d.

The rule, fixed before the run: route when the mean grain F1 over the conditions rises by at least
2 points and no condition falls by more than 5 points. The held-out study
(``bench/studies/atoms2d_heldout.py``) judges the change afterwards. Prints and writes JSON
(default bench/results/fringes_network_choice.json).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/, for _common
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/studies, for the held-out study
from _common import RESULTS, log, pooled_grain_f1, write_json  # noqa: E402
from atoms2d_heldout import draw_dataset, read_maps, run_segment  # noqa: E402

SEED_OFFSET = 70_000
CONDITIONS = ("haadf_fringesonly_p8_d50", "haadf_fringesonly_p16_d5", "hrtem_fringesonly_p8_d50",
              "hrtem_fringesonly_p16_d50", "haadf_fringesonly_materials_d50", "hrtem_fringesonly_p8_d5",
              "haadf_fringes_d50", "hrtem_fringes_d50")
METHODS = {"auto": "auto", "fringes-2d": "model:fringes-2d"}


def routed(auto_run: dict) -> bool:
    """Whether auto measured one set of fringes and ran a network (what a routed auto gives fringes-2d)."""
    return auto_run["rc"] == 0 and "measured fringes lattice" in auto_run["cli_says"] and "network" in auto_run["cli_says"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--conditions", nargs="+", default=list(CONDITIONS))
    ap.add_argument("--n", type=int, default=2)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--out", default=str(RESULTS / "fringes_network_choice.json"))
    args = ap.parse_args()

    from micro_sym.io.datasets import LabeledDataset

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.conditions:
            root = draw_dataset(name, args.n, args.size, SEED_OFFSET)
            pairs = {"auto": [], "fringes-2d": [], "routed": []}
            images = []
            for s in LabeledDataset(root):
                runs, grains = {}, {}
                for label, method in METHODS.items():
                    where = Path(tmp) / name / label
                    runs[label] = run_segment(root / "images" / f"{s.name}.tif", where, method)
                    if runs[label]["rc"] == 0:
                        grains[label] = read_maps(where, s.name)["grains"]
                        pairs[label].append((grains[label], s.grains))
                if "auto" not in grains:  # auto refused the image: reported, scored in no column
                    images.append({"image": s.name, "auto": runs["auto"].get("error")})
                    continue
                use = "fringes-2d" if routed(runs["auto"]) and "fringes-2d" in grains else "auto"
                pairs["routed"].append((grains[use], s.grains))
                images.append({"image": s.name, "routed_to": use, "auto_says": runs["auto"]["cli_says"],
                               "fringes_2d_error": runs["fringes-2d"].get("error")})
            row = {"condition": name, "images": images} | {label: pooled_grain_f1(p) for label, p in pairs.items()}
            rows.append(row)
            log(f"{name}: grain F1 auto {row['auto']['grain_f1']:.3f}, fringes-2d {row['fringes-2d']['grain_f1']:.3f}, "
                f"routed {row['routed']['grain_f1']:.3f} ({sum(i.get('routed_to') == 'fringes-2d' for i in images)} "
                f"of {len(images)} images routed)")
    means = {label: sum(r[label]["grain_f1"] for r in rows) / len(rows) for label in ("auto", "fringes-2d", "routed")}
    falls = [r["auto"]["grain_f1"] - r["routed"]["grain_f1"] for r in rows]
    route = means["routed"] - means["auto"] >= 0.02 and max(falls) <= 0.05
    log(f"mean grain F1: auto {means['auto']:.4f}, routed {means['routed']:.4f} (fringes-2d everywhere "
        f"{means['fringes-2d']:.4f}); largest fall {max(falls):.3f}; route fringes to fringes-2d: {route}")
    path = write_json(args.out, {
        "what": __doc__.split("\n\n")[0],
        "command": "python bench/studies/fringes_network_choice.py " + " ".join(sys.argv[1:]),
        "seed_offset": SEED_OFFSET, "images_per_condition": args.n,
        "rule": "route when the mean grain F1 rises by >= 0.02 and no condition falls by > 0.05",
        "mean_grain_f1": means, "largest_fall": max(falls), "route": route, "conditions": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

"""Both networks' grains in one map, judged on the held-out images (issue 26; no product change).

Usage::

    python bench/studies/fringes_fusion_heldout.py [--out FILE]

``bench/studies/fringes_fusion.py`` measured on new draws what a map of fringes-2d's grains plus the
robust-2d grains lying mostly where fringes-2d has none would give on images auto measures as fringes.
Before building that map into the product, this runs it once on the held-out images of the three
held-out studies (``bench/_data/atoms2d``, 2 images per condition, periods 8 and 16, doses 5 and 50,
as ``bench/studies/atoms2d_heldout.py`` makes them): every image through ``micro-sym segment`` as auto;
where auto measures fringes, also as robust-2d and fringes-2d, and the fused map (:func:`fused`)
replaces auto's grains. Every other image keeps auto's. Per condition, grain F1 pooled over its
images; per set, the mean over conditions.

Rule fixed before the run: the fusion is worth building when the fringe films' mean grain F1 rises by
at least 2 points over auto, and neither the square [001] films' nor the [111] films' mean falls by
more than half a point. Prints and writes JSON.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/, for _common
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/studies
from _common import RESULTS, log, pooled_grain_f1, write_json  # noqa: E402
from atoms2d_heldout import conditions, make_dataset, read_maps, run_segment  # noqa: E402
from fringes_fusion import fused  # noqa: E402
from fringes_network_choice import measured_fringes  # noqa: E402

#: The held-out studies' sets, as their results files name them.
SETS = {"square [001] films": ("001", False), "[111] films and 2D crystals": ("111", False),
        "fringe films": ("001", True)}


def fused_grains(image: Path, tmp: Path):
    """The fused map of ``image`` from its robust-2d and fringes-2d runs, or None where either refuses."""
    for label in ("robust-2d", "fringes-2d"):
        if run_segment(image, tmp / label, f"model:{label}")["rc"]:
            return None
    return fused(read_maps(tmp / "fringes-2d", image.stem)["grains"], read_maps(tmp / "robust-2d", image.stem)["grains"])


def score_condition(root: Path, tmp: Path) -> dict:
    """Grain F1 pooled over the condition's images, auto's grains and the fused ones, and how many were fused."""
    from micro_sym.io.datasets import LabeledDataset

    pairs = {"auto": [], "fused": []}
    fused_images = 0
    for s in LabeledDataset(root):
        image = root / "images" / f"{s.name}.tif"
        auto = run_segment(image, tmp / "auto", "auto")
        if auto["rc"]:
            continue  # a refusal: the image counts in neither column
        grains = read_maps(tmp / "auto", s.name)["grains"]
        pairs["auto"].append((grains, s.grains))
        both = fused_grains(image, tmp) if measured_fringes(auto) else None
        fused_images += both is not None
        pairs["fused"].append((grains if both is None else both, s.grains))
    return {"images": len(pairs["auto"]), "fused_images": fused_images} | {k: pooled_grain_f1(p) for k, p in pairs.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--out", default=str(RESULTS / "fringes_fusion_heldout.json"))
    args = ap.parse_args()

    sets = {}
    with tempfile.TemporaryDirectory() as tmp:
        for set_name, (zone, fringes_only) in SETS.items():
            rows = []
            for name, cond in conditions(["haadf", "hrtem"], [8, 16], [5, 50], zone, fringes_only):
                row = {"condition": name} | score_condition(make_dataset(name, cond, args.n, args.size), Path(tmp))
                rows.append(row)
                log(f"{set_name} / {name}: {row['fused_images']} fused; grain F1 auto {row['auto']['grain_f1']:.3f}, "
                    f"fused {row['fused']['grain_f1']:.3f}")
            means = {k: float(np.mean([r[k]["grain_f1"] for r in rows])) for k in ("auto", "fused")}
            log(f"{set_name}: mean grain F1 auto {means['auto']:.4f}, fused {means['fused']:.4f}")
            sets[set_name] = {"mean_grain_f1": means, "conditions": rows}
    change = {k: v["mean_grain_f1"]["fused"] - v["mean_grain_f1"]["auto"] for k, v in sets.items()}
    met = (change["fringe films"] >= 0.02 and change["square [001] films"] >= -0.005
           and change["[111] films and 2D crystals"] >= -0.005)
    log("rule " + ("met" if met else "not met") + ": " + ", ".join(f"{k} {v:+.4f}" for k, v in change.items()))
    path = write_json(args.out, {"what": __doc__.split("\n\n")[0],
                                 "command": "python bench/studies/fringes_fusion_heldout.py " + " ".join(sys.argv[1:]),
                                 "rule": "fringe films +0.02 or more; square [001] and [111] films -0.005 or more",
                                 "rule_met": met, "change": change, "sets": sets})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

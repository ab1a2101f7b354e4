"""Grains of both networks in one map, where an image measures as fringes: how far it would go (issue 26).

Usage::

    python bench/studies/fringes_fusion.py [--seed-offset 80000] [--n 3] [--out FILE]

``bench/studies/fringes_network_choice.py`` found that fringes-2d finds far more grains than robust-2d
on films whose every grain shows one set of fringes, and fewer on films where some grains show a 2D
lattice (which its k = 2 field cannot map: those grains are left unassigned). This study measures,
without changing the product, what a map of both would give: fringes-2d's grains, plus each
robust-2d grain of which more than half lies where fringes-2d left the image unassigned (its pixels
there become a grain). Same draws as the choice study's second run (seed offset 80000, 3 images per
condition); only images auto measures as fringes are scored. The product cannot write such a map
today: its orientation output and grain table have one lattice symmetry per image, and this map
would hold grains modulo 180° and grains modulo 90°. Prints and writes JSON.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/, for _common
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/studies
from _common import RESULTS, log, pooled_grain_f1, write_json  # noqa: E402
from atoms2d_heldout import draw_dataset, read_maps, run_segment  # noqa: E402
from fringes_network_choice import draw_arguments, measured_fringes  # noqa: E402


def fused(fringes: np.ndarray, square: np.ndarray) -> np.ndarray:
    """fringes-2d's grains plus the robust-2d grains lying mostly where fringes-2d has none."""
    out = fringes.astype(np.int64).copy()
    free = fringes == 0
    n = int(square.max()) + 1
    inside = np.bincount(square[free].ravel(), minlength=n)
    total = np.bincount(square.ravel(), minlength=n)
    add = np.flatnonzero((inside > 0.5 * total) & (np.arange(n) > 0))
    lut = np.zeros(n, np.int64)
    lut[add] = out.max() + 1 + np.arange(add.size)
    added = lut[square]
    where = free & (added > 0)
    out[where] = added[where]
    return out


def main():
    args = draw_arguments(__doc__.split("\n\n")[0], RESULTS / "fringes_fusion.json")

    from micro_sym.io.datasets import LabeledDataset

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.conditions:
            root = draw_dataset(name, args.n, args.size, args.seed_offset)
            pairs = {"robust-2d": [], "fringes-2d": [], "both": []}
            for s in LabeledDataset(root):
                image = root / "images" / f"{s.name}.tif"
                if not measured_fringes(run_segment(image, Path(tmp) / "auto", "auto")):
                    continue
                grains = {}
                for label in ("robust-2d", "fringes-2d"):
                    run = run_segment(image, Path(tmp) / label, f"model:{label}")
                    if run["rc"] == 0:
                        grains[label] = read_maps(Path(tmp) / label, s.name)["grains"]
                if len(grains) < 2:
                    continue
                grains["both"] = fused(grains["fringes-2d"], grains["robust-2d"])
                for label, labels in grains.items():
                    pairs[label].append((labels, s.grains))
            if not pairs["both"]:
                continue
            row = {"condition": name, "images": len(pairs["both"])} | {k: pooled_grain_f1(p) for k, p in pairs.items()}
            rows.append(row)
            log(f"{name} ({row['images']} images measured as fringes): grain F1 robust-2d {row['robust-2d']['grain_f1']:.3f}, "
                f"fringes-2d {row['fringes-2d']['grain_f1']:.3f}, both {row['both']['grain_f1']:.3f}")
    means = {k: float(np.mean([r[k]["grain_f1"] for r in rows])) for k in ("robust-2d", "fringes-2d", "both")}
    log("mean grain F1: " + ", ".join(f"{k} {v:.4f}" for k, v in means.items()))
    path = write_json(args.out, {"what": __doc__.split("\n\n")[0],
                                 "command": "python bench/studies/fringes_fusion.py " + " ".join(sys.argv[1:]),
                                 "seed_offset": args.seed_offset, "mean_grain_f1": means, "conditions": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

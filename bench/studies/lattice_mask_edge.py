"""Where the lattice mask ends next to a crystal: the edge rule of ``crystalline_contrast`` (design.md §6.3).

The local ring contrast is smoothed over two lattice periods, so it stays above 1 for several periods
beyond a crystal's edge. ``crystalline_contrast`` keeps a pixel's contrast only where its ring power is
at least ``EDGE_FRACTION`` of the largest within ``EDGE_REACH`` periods. This study scores, on atomistic
*training* images (fringe films and [111] films; the held-out study's images are not used to choose),
the plain contrast rule and the edge rule at several fractions and reaches:

- ``no_lattice_left_out``: no-grain pixels (vacuum, amorphous) more than one period from any grain
  whose contrast is below 1;
- ``grain_kept``: grain pixels more than one period inside a grain whose contrast is at least 1.

    python bench/studies/lattice_mask_edge.py [--data data/atoms2d_fringes_a data/atoms2d_hex_b] [--n 4]

The datasets come from the commands in micro_sym/configs/synth_atoms2d_train_fringes.yaml and
synth_atoms2d_train_hex.yaml. Writes bench/results/lattice_mask_edge.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/, for _common
from _common import RESULTS, ROOT, write_json  # noqa: E402

import micro_sym.classical.crystallinity as crystallinity  # noqa: E402
from micro_sym.classical import measure_lattice  # noqa: E402
from micro_sym.io.datasets import LabeledDataset  # noqa: E402

SETTINGS = [(None, None)] + [(f, r) for f in (0.25, 0.5) for r in (1.0, 1.25, 1.75, 2.5)]


def scores(samples, fraction, reach) -> dict:
    left, kept = [], []
    for image, grains in samples:
        f0 = measure_lattice(image).ring_frequency
        if fraction is None:
            inside = crystallinity.ring_contrast(image, f0) >= crystallinity.CRYSTALLINE_CONTRAST
        else:
            crystallinity.EDGE_FRACTION, crystallinity.EDGE_REACH = fraction, reach
            inside = crystallinity.crystalline_contrast(image, f0) >= crystallinity.CRYSTALLINE_CONTRAST
        period = 1.0 / f0
        far = ndimage.distance_transform_edt(grains == 0) > period
        deep = ndimage.distance_transform_edt(grains > 0) > period
        left.append(float(np.mean(~inside[far])) if far.any() else np.nan)
        kept.append(float(np.mean(inside[deep])))
    return {"no_lattice_left_out": round(float(np.nanmean(left)), 3), "grain_kept": round(float(np.mean(kept)), 3)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", nargs="+", default=["data/atoms2d_fringes_a", "data/atoms2d_hex_b"])
    ap.add_argument("--n", type=int, default=4, help="images per dataset")
    ap.add_argument("--out", default=str(RESULTS / "lattice_mask_edge.json"))
    args = ap.parse_args()
    shipped = (crystallinity.EDGE_FRACTION, crystallinity.EDGE_REACH)
    rows = []
    for path in args.data:
        ds = LabeledDataset(ROOT / path if not Path(path).is_absolute() else path)
        samples = [(s.image.astype(np.float32), s.grains) for s in list(ds)[:args.n]]
        for fraction, reach in SETTINGS:
            row = {"data": Path(path).name, "edge_fraction": fraction, "edge_reach_periods": reach,
                   **scores(samples, fraction, reach)}
            rows.append(row)
            print(row, flush=True)
    crystallinity.EDGE_FRACTION, crystallinity.EDGE_REACH = shipped
    write_json(args.out, {"command": "python bench/studies/lattice_mask_edge.py " + " ".join(sys.argv[1:]),
                          "shipped": {"edge_fraction": shipped[0], "edge_reach_periods": shipped[1]},
                          "rows": rows})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

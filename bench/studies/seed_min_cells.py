"""How many lattice cells a network's grain seed must hold (issue 26; docs/design.md §6.3).

Usage::

    python bench/studies/seed_min_cells.py [--cells 0 1 2 3 4] [--size 512] [--n 2] [--out FILE]

``auto`` (in memory, :func:`micro_sym.inference.method_choice.auto_segment`, as the contest runs it) on
two kinds of images, with the smallest seed set to ``cells`` cells of the measured ring spacing
(``micro_sym.inference.whole_image.SEED_MIN_CELLS``; 0 = the plain 32 px):

- the method-choice calibration images (the analytic renderer, the contest's conditions on their own
  seeds, and EBSD grain shapes): crystalline everywhere, with grains down to a few periods
  (``grains_small``: 40 px, 5 periods), so a larger minimum can only lose grains there;
- the validation sets of two atomistic training recipes, with vacuum and amorphous carbon
  (``data/atoms2d_fringes_val``: fcc and bcc films whose grains each show one set of fringes;
  ``data/atoms2d_hex_val``: fcc films down [111]; their commands: the comments of
  ``micro_sym/configs/train_fringes_2d.yaml`` and ``train_atoms_2d_hex.yaml``). auto's square network
  never trained on them; its hexagonal network (atoms-2d-hex) was selected on the second.

The held-out atomistic benchmark (``bench/studies/atoms2d_heldout.py``) is not used here: it judges
the choice afterwards. Grain F1 counts are pooled per condition (analytic) or per set (atomistic).
Writes bench/results/seed_min_cells.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/, for _common
from _common import RESULTS, atomistic_samples, calibration_jobs, pooled_grain_f1, write_json  # noqa: E402

ATOMISTIC = ("atoms2d_fringes_val", "atoms2d_hex_val")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=float, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--n", type=int, default=2, help="analytic images per condition")
    ap.add_argument("--out", type=Path, default=RESULTS / "seed_min_cells.json")
    args = ap.parse_args(argv)

    from micro_sym.inference import whole_image
    from micro_sym.inference.method_choice import auto_segment

    sets = [(f"analytic:{cond}", list(samples)) for cond, samples in calibration_jobs(args.size, args.n, 3, 512)]
    sets += [(f"atomistic:{name}", [(s, img, gt, None) for s, img, gt in atomistic_samples(name)]) for name in ATOMISTIC]
    shipped = whole_image.SEED_MIN_CELLS
    results = {}
    try:
        for cells in args.cells:
            whole_image.SEED_MIN_CELLS = cells  # 0: default_min_size gives the plain 32 px
            row = {}
            for name, samples in sets:
                row[name] = pooled_grain_f1((auto_segment(image)["grains"], gt) for _, image, gt, _ in samples)
            analytic = [v["grain_f1"] for k, v in row.items() if k.startswith("analytic:")]
            row["analytic_mean"] = float(np.mean(analytic))
            results[str(cells)] = row
            print(f"{cells:g} cells: analytic mean grain F1 {row['analytic_mean']:.4f}, grains_small "
                  f"{row['analytic:grains_small']['grain_f1']:.3f}; "
                  + ", ".join(f"{n} {row['atomistic:' + n]['grain_f1']:.3f}" for n in ATOMISTIC), flush=True)
    finally:
        whole_image.SEED_MIN_CELLS = shipped
    write_json(args.out, {"command": "python bench/studies/seed_min_cells.py " + " ".join(sys.argv[1:] if argv is None else argv),
                          "size": args.size, "n": args.n, "results": results})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

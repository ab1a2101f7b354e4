"""How strong a lattice a network's grain must show to be kept (issue 26; docs/design.md §6.3).

Usage::

    python bench/studies/weak_lattice_grains.py [--strengths 0.2 0.3 0.4] [--size 512] [--n 2] [--out FILE]

``auto`` (in memory, :func:`micro_sym.inference.method_choice.auto_segment`, as the contest runs it)
leaves out a network's final grain whose ring shows no lattice: ``max(|c_k|, |c_2|) / c_0`` below
``WEAK_LATTICE_STRENGTH`` (:func:`micro_sym.classical.grain_lattice.lattice_shown`), grains too
small to measure included. Each image is segmented once with nothing left out; the grains and the
measurement setting are recorded there, and every strength is then applied with the shipped
functions (:func:`micro_sym.inference.lattice_mask.measure_grains`, ``weak_lattice_lut``), which is
what ``segment_image`` does after its grains.

The images are those of ``bench/studies/seed_min_cells.py``: the method-choice calibration images
(analytic renderer, crystalline everywhere, small grains in ``grains_small``) and the validation sets
of two atomistic training recipes (``data/atoms2d_fringes_val``, ``data/atoms2d_hex_val``; their
commands: the comments of ``micro_sym/configs/train_fringes_2d.yaml`` and ``train_atoms_2d_hex.yaml``).
The held-out atomistic benchmark (``bench/studies/atoms2d_heldout.py``) judges the choice afterwards.

The rule, fixed before the run: the largest strength whose analytic mean grain F1 stays within 1
point of nothing left out, whose small grains stay within 3 points, and whose two atomistic sets do
not fall; none if no strength passes. Writes bench/results/weak_lattice_grains.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/, for _common
from _common import RESULTS, pooled_grain_f1, rule_choice_sets, write_json  # noqa: E402

ATOMISTIC = ("atoms2d_fringes_val", "atoms2d_hex_val")


def segmented(image):
    """``(grains with nothing left out, image, setting)``: auto's grains before the drop, and how they
    are measured (None where auto ran no network or knew no ring)."""
    from micro_sym.inference import lattice_mask
    from micro_sym.inference.method_choice import auto_segment

    seen = {}

    def keep_all(image, grains, setting):
        seen["setting"] = setting
        return np.asarray(grains)

    shipped = lattice_mask.drop_weak_lattice
    lattice_mask.drop_weak_lattice = keep_all
    try:
        grains = auto_segment(image)["grains"]
    finally:
        lattice_mask.drop_weak_lattice = shipped
    return grains, image, seen.get("setting")


def with_strength(grains, image, setting, strength: float | None):
    """``grains`` after leaving out those below ``strength`` (None: nothing left out)."""
    from micro_sym.classical import grain_lattice
    from micro_sym.inference.lattice_mask import measure_grains, weak_lattice_lut

    if strength is None or setting is None:
        return grains
    shipped = grain_lattice.WEAK_LATTICE_STRENGTH
    grain_lattice.WEAK_LATTICE_STRENGTH = strength
    try:
        lut = weak_lattice_lut(measure_grains(image, grains, setting), int(grains.max(initial=0)))
    finally:
        grain_lattice.WEAK_LATTICE_STRENGTH = shipped
    return grains if lut is None else lut[grains]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--strengths", type=float, nargs="+", default=[0.2, 0.3, 0.4])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--n", type=int, default=2, help="analytic images per condition")
    ap.add_argument("--out", type=Path, default=RESULTS / "weak_lattice_grains.json")
    args = ap.parse_args(argv)

    sets = rule_choice_sets(args.size, args.n, ATOMISTIC)
    cache = []
    for name, samples in sets:
        cache.append((name, [(segmented(image), gt) for image, gt in samples]))
        print(f"segmented {name}", flush=True)
    results = {}
    for strength in [None, *args.strengths]:
        row = {name: pooled_grain_f1((with_strength(*seg, strength), gt) for seg, gt in segs) for name, segs in cache}
        row["analytic_mean"] = float(np.mean([v["grain_f1"] for k, v in row.items() if k.startswith("analytic:")]))
        key = "off" if strength is None else f"{strength:g}"
        results[key] = row
        print(f"{key}: analytic mean grain F1 {row['analytic_mean']:.4f}, grains_small "
              f"{row['analytic:grains_small']['grain_f1']:.3f}; "
              + ", ".join(f"{n} {row['atomistic:' + n]['grain_f1']:.3f}" for n in ATOMISTIC), flush=True)
    off = results["off"]
    passing = [s for s in args.strengths
               if results[f"{s:g}"]["analytic_mean"] >= off["analytic_mean"] - 0.01
               and results[f"{s:g}"]["analytic:grains_small"]["grain_f1"] >= off["analytic:grains_small"]["grain_f1"] - 0.03
               and all(results[f"{s:g}"][f"atomistic:{n}"]["grain_f1"] >= off[f"atomistic:{n}"]["grain_f1"] for n in ATOMISTIC)]
    chosen = max(passing) if passing else None
    print(f"chosen: {chosen}")
    write_json(args.out, {"command": "python bench/studies/weak_lattice_grains.py " + " ".join(sys.argv[1:] if argv is None else argv),
                          "size": args.size, "n": args.n, "results": results, "chosen": chosen})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""How each true grain reads at k = 2: the grain table's ``fringes_strength`` on training films (issue 26).

Usage::

    python bench/studies/fringes_strength.py [--data data/atoms2d_fringes_a ...] [--images 12] [--out FILE]

For every true grain of the first ``--images`` images of each labeled dataset, ``|c_2| / c_0`` measured
over the grain's true outline (:func:`micro_sym.classical.grain_lattice.grain_lattice_angles`, at the
dataset's period and lattice; a fringes dataset is measured on the square ring, as auto's square
network's runs are). Defaults: the fringes network's training films (every grain one set of fringes)
and the hexagonal network's (20 % of the cells fringe cells, the rest on [111]); made by the commands in
``micro_sym/configs/synth_atoms2d_train_fringes.yaml`` and ``synth_atoms2d_train_hex.yaml``. Training
images, so this checks the measurement and the threshold of ``fringes_angle``, not generalization.

Writes bench/results/fringes_strength.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/, for _common
from _common import RESULTS, ROOT, write_json  # noqa: E402

DATA = ["data/atoms2d_fringes_a", "data/atoms2d_fringes_b", "data/atoms2d_hex_a", "data/atoms2d_hex_b"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", nargs="+", default=DATA)
    ap.add_argument("--images", type=int, default=12, help="images per dataset")
    ap.add_argument("--out", type=Path, default=RESULTS / "fringes_strength.json")
    args = ap.parse_args(argv)

    from micro_sym.classical.grain_lattice import FRINGES_MIN_STRENGTH, grain_lattice_angles
    from micro_sym.io.datasets import LabeledDataset

    report = {"command": "python bench/studies/fringes_strength.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "threshold": FRINGES_MIN_STRENGTH, "datasets": {}}
    for root in args.data:
        ds = LabeledDataset(ROOT / root)
        lattice = "hexagonal" if ds.lattice == "hexagonal" else "square"
        strengths = []
        for i, s in enumerate(ds):
            if i >= args.images:
                break
            period = float(ds.meta["samples"][s.name]["period_px"])
            r = grain_lattice_angles(s.image.astype(np.float64), s.grains.astype(np.int32), period=period, lattice=lattice)
            strengths.extend(float(v) for v in r["fringes_strength"])
        v = np.asarray(strengths)
        report["datasets"][root] = {
            "lattice": ds.lattice, "measured_as": lattice, "grains": int(v.size),
            "fraction_at_threshold": float((v >= FRINGES_MIN_STRENGTH).mean()) if v.size else None,
            "quantiles": {str(q): float(np.quantile(v, q)) for q in (0.05, 0.1, 0.25, 0.5, 0.75, 0.9)} if v.size else {},
            "histogram": np.histogram(v, bins=10, range=(0.0, 1.0))[0].tolist(),
        }
        d = report["datasets"][root]
        print(f"{root}: {d['grains']} grains, {d['fraction_at_threshold']:.3f} at >= {FRINGES_MIN_STRENGTH}; "
              f"histogram (0-1 in tenths) {d['histogram']}")
    write_json(args.out, report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

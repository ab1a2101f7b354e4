"""Lattice period away from the training period: default-2d at the image's own sampling, default-2d and
robust-2d on the image resampled to their training period (measured lattice, ``micro_sym.inference.rescale``,
with the lattice mask as ``segment`` runs them), and the classical filter bank.

Images come from the project's own renderer (the one default-2d was trained on, 8 px period) at other
periods, grains about 10 periods across, dose 50 counts/px, two seeds per period. This measures
generalization across scale only: renderer, material and imaging are the training ones.

    python bench/studies/scale_generalization.py            # periods 4, 6, 8, 12, 24
    python bench/studies/scale_generalization.py --quick    # periods 6 and 24, one seed

Prints a table and writes ``bench/results/scale_generalization.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

warnings.filterwarnings("ignore", message=".*py3nj.*")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/, for _common

from _common import RESULTS, write_json  # noqa: E402
from micro_sym.classical import classical_segment, measure_lattice  # noqa: E402
from micro_sym.inference.whole_image import segment_image  # noqa: E402
from micro_sym.metrics import aggregate, evaluate_sample  # noqa: E402
from micro_sym.models import load_model  # noqa: E402
from micro_sym.synth import Synth2DConfig, synth_2d  # noqa: E402

GRAINS_ACROSS = 10  # grain diameter in periods
SIDE_GRAINS = 5.5  # image side in grain diameters (about 25 grains)


def render(period: float, seed: int):
    size = int(round(SIDE_GRAINS * GRAINS_ACROSS * period / 16)) * 16
    cfg = Synth2DConfig(size=(size, size), period=period, microstructure={"grain_size": GRAINS_ACROSS * period},
                        imaging={"dose": 50.0})
    return synth_2d(cfg, seed=seed)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    periods, seeds = ([6.0, 24.0], [100]) if args.quick else ([4.0, 6.0, 8.0, 12.0, 24.0], [100, 101])
    model, robust = load_model("default-2d", export=True), load_model("robust-2d", export=True)
    methods = {
        "default-2d, own sampling": lambda img: segment_image(model, img),
        "default-2d, resampled": lambda img: segment_image(model, img, period="measure"),
        "robust-2d, resampled": lambda img: segment_image(robust, img, period="measure"),
        "classical": lambda img: classical_segment(img, lattice="square"),
    }
    rows = []
    for period in periods:
        samples = [render(period, s) for s in seeds]
        measured = [measure_lattice(s.image.astype(np.float32)) for s in samples]
        row = {"period_px": period, "size_px": samples[0].image.shape[0], "seeds": seeds,
               "measured": [{"lattice": m.lattice, "period": round(m.period, 3)} for m in measured], "methods": {}}
        for name, run in methods.items():
            per_image, seconds = {}, 0.0
            for s, sample in zip(seeds, samples):
                t0 = time.perf_counter()
                pred = run(sample.image.astype(np.float32))
                seconds += time.perf_counter() - t0
                per_image[str(s)] = evaluate_sample(pred, sample.grains, sample.orientation, 4)
            overall = aggregate(per_image)["overall"]
            row["methods"][name] = {k: round(float(overall[k]), 4) for k in
                                    ("boundary_f1", "grain_f1", "orientation_median_deg")} | {"seconds": round(seconds, 2)}
        rows.append(row)
        cells = " | ".join(f"{m['boundary_f1']:.2f} / {m['grain_f1']:.2f} / {m['orientation_median_deg']:.2f}°"
                           for m in row["methods"].values())
        print(f"period {period:5.1f} px ({row['size_px']} px, measured {[m['period'] for m in row['measured']]}): {cells}",
              flush=True)
    print("columns:", " | ".join(methods), "(boundary F1 / grain F1 / median orientation error)")
    out = write_json(RESULTS / ("scale_generalization.quick.json" if args.quick else "scale_generalization.json"),
                     {"command": "python bench/studies/scale_generalization.py" + (" --quick" if args.quick else ""),
                      "renderer": "micro_sym.synth (the training renderer), dose 50, grains 10 periods across",
                      "rows": rows})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

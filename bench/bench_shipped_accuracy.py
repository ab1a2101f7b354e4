"""The bundled networks scored against the exact truth of the bundled sample data.

The sample data (``sample_data/``) come from the project's own renderer (seed 0): these figures
measure fit to that renderer, not generalization. Scores, as ``tests/test_shipped_accuracy.py``
computes them (and asserts bounds just below them):

* default-2d, default-2d-fast and robust-2d (exported) on the three sample micrographs
  (``sample_data/micrographs``): boundary F1 (2-px tolerance), grain F1 (IoU > 0.5), median
  orientation error, overall and per image (``micro_sym.inference.evaluate.evaluate_model``, what
  ``micro-sym evaluate`` runs);
* default-3d on the sample volume (``sample_data/volume``): voxel-exact boundary F1, grain F1,
  median cubic misorientation (``micro_sym.training.train3d.evaluate3d``); ``--no-3d`` skips it
  (about half a minute on 2 cores).

Prints a table and writes ``bench/results/shipped_accuracy.json``.

    python bench/bench_shipped_accuracy.py
"""

from __future__ import annotations

import argparse
import time
import warnings

from _common import RESULTS, ROOT, machine_info, write_json

warnings.filterwarnings("ignore", message=".*py3nj.*")

MODELS_2D = ("default-2d", "default-2d-fast", "robust-2d")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-3d", action="store_true", help="skip default-3d on the sample volume")
    args = ap.parse_args()


    from micro_sym.inference.evaluate import evaluate_model
    from micro_sym.io.datasets import LabeledDataset
    from micro_sym.models import load_model

    out = {"benchmark": "bundled models on the bundled sample data (renderer seed 0)", "models": {}}
    data2d = LabeledDataset(ROOT / "sample_data" / "micrographs")
    for name in MODELS_2D:
        t = time.perf_counter()
        report = evaluate_model(load_model(name, export=True), data2d)
        o = report["overall"]
        out["models"][name] = {"data": "sample_data/micrographs", "overall": o, "images": report.get("images"),
                               "seconds": round(time.perf_counter() - t, 1)}
        print(f"{name:11s} boundary F1 {o['boundary_f1']:.4f}  grain F1 {o['grain_f1']:.4f}  "
              f"orientation {o['orientation_median_deg']:.3f}°")
    if not args.no_3d:
        from micro_sym.training.train3d import evaluate3d, load_volumes

        t = time.perf_counter()
        volumes = [v[1:] for v in load_volumes(ROOT / "sample_data" / "volume", None)]
        m = evaluate3d(load_model("default-3d"), volumes)
        out["models"]["default-3d"] = {"data": "sample_data/volume", "overall": m,
                                       "seconds": round(time.perf_counter() - t, 1)}
        print(f"default-3d  boundary F1 {m['boundary_f1']:.4f}  grain F1 {m['grain_f1']:.4f}  "
              f"misorientation {m['median_misorientation_deg']:.3f}°")
    out["machine"] = machine_info(with_torch=True)
    print(f"wrote {write_json(RESULTS / 'shipped_accuracy.json', out, default=float)}")


if __name__ == "__main__":
    main()

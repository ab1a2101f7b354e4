"""One microstructure at three samplings: same grains and angles after the measured-lattice resampling?

One micrograph of the training renderer (512², lattice period 12 px, ~120-px grains, dose 50, seed
3) is resampled to 2× (period 24 px) and 0.5× (period 6 px, Gaussian pre-filter); ``segment``
(default-2d) measures each image's lattice and brings it to the model's 8 px. The 2× and 0.5× results
are mapped back onto the 1× grid (nearest sample) and compared with the 1× result: grain F1 between
samplings and median angle difference (degrees, mod 90, where both have a grain). Also: the measured
periods, and the 1× result's grain F1 against the true grains. ``pytest tests/inference/test_rescale.py
-k three_samplings`` asserts grain F1 ≥ 0.9 between samplings and median angle difference < 1°; this
script keeps the figures. Prints a table and writes ``bench/results/three_samplings.json``
(about half a minute on 2 cores). ``--lattice hexagonal`` does the same with a hexagonal lattice
(lattice constant 12 px) and atoms-2d-hex (angles mod 60), writing ``three_samplings_hexagonal.json``.

    python bench/bench_three_samplings.py [--lattice hexagonal]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import tifffile
from _common import RESULTS, machine_info, write_json
from scipy import ndimage

warnings.filterwarnings("ignore", message=".*py3nj.*")

SIZE, PERIOD, SEED = 512, 12.0, 3


#: The network each lattice runs through.
MODELS = {"square": "default-2d", "hexagonal": "atoms-2d-hex"}


def main():
    import zarr

    from micro_sym.inference.engine import segment
    from micro_sym.io.images import output_array
    from micro_sym.metrics import grain_f1
    from micro_sym.synth import Synth2DConfig, synth_2d

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lattice", choices=sorted(MODELS), default="square")
    lattice = ap.parse_args().lattice
    model, sym = MODELS[lattice], 90.0 if lattice == "square" else 60.0
    t0 = time.perf_counter()
    sample = synth_2d(Synth2DConfig(size=(SIZE, SIZE), period=PERIOD, lattice=lattice, microstructure={"grain_size": 120.0},
                                    imaging={"dose": 50.0}), seed=SEED)
    img = sample.image.astype(np.float32)
    images = {"x1": (img, 1.0),
              "x2": (ndimage.zoom(img, 2.0, order=3, grid_mode=True, mode="grid-mirror"), 2.0),
              "x05": (ndimage.zoom(ndimage.gaussian_filter(img, 0.85), 0.5, order=3, grid_mode=True,
                                   mode="grid-mirror"), 0.5)}
    tmp = Path(tempfile.mkdtemp(prefix="three_samplings_"))
    try:
        for name, (a, _) in images.items():
            tifffile.imwrite(tmp / f"{name}.tif", a)
        results = segment([tmp / f"{n}.tif" for n in images], tmp / "out", model=model)
        out, rows = {}, {}
        for r in results:
            scale = r.plan["method"]["scale"]
            g = zarr.open_group(str(tmp / "out" / f"{r.name}.zarr"), mode="r")
            out[r.name] = {k: output_array(g, k)[:] for k in ("grains", "orientation")}
            rows[r.name] = {"factor": images[r.name][1], "shape": list(images[r.name][0].shape), "status": r.status,
                            "rendered_period": PERIOD * images[r.name][1], "measured_period": scale.get("period"),
                            "resampled": scale.get("resampled"), "grains": int(out[r.name]["grains"].max())}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ref = out["x1"]
    rows["x1"]["grain_f1_vs_truth"] = float(grain_f1(ref["grains"], sample.grains)["f1"])
    for name in ("x2", "x05"):
        f = images[name][1]
        idx = np.clip(np.round((np.arange(SIZE) + 0.5) * f - 0.5).astype(int), 0, out[name]["grains"].shape[0] - 1)
        labels, angles = out[name]["grains"][np.ix_(idx, idx)], out[name]["orientation"][np.ix_(idx, idx)]
        both = (labels > 0) & (ref["grains"] > 0)
        diff = np.abs((angles - ref["orientation"] + sym / 2) % sym - sym / 2)[both]
        rows[name]["grain_f1_vs_x1"] = float(grain_f1(labels, ref["grains"])["f1"])
        rows[name]["median_angle_difference_vs_x1_deg"] = float(np.median(diff))
        rows[name]["grain_f1_vs_truth"] = float(grain_f1(labels, sample.grains)["f1"])
    for name, r in rows.items():
        print(f"{name:4s} period {r['rendered_period']:5.1f} measured {r['measured_period']:.2f}  grains {r['grains']:3d}  "
              f"F1 vs x1 {r.get('grain_f1_vs_x1', 1.0):.3f}  median angle diff "
              f"{r.get('median_angle_difference_vs_x1_deg', 0.0):.3f}°  F1 vs truth {r['grain_f1_vs_truth']:.3f}")
    result = {"benchmark": f"one microstructure at 0.5x / 1x / 2x sampling through segment ({model}, measured lattice)",
              "render": {"size": SIZE, "lattice": lattice, "period": PERIOD, "grain_size": 120.0, "dose": 50.0, "seed": SEED},
              "true_grains": int(sample.grains.max()), "samplings": rows,
              "worst_grain_f1_vs_x1": min(rows[n]["grain_f1_vs_x1"] for n in ("x2", "x05")),
              "worst_median_angle_difference_deg": max(rows[n]["median_angle_difference_vs_x1_deg"] for n in ("x2", "x05")),
              "wall_s": round(time.perf_counter() - t0, 1),
              "machine": machine_info(with_torch=True)}
    name = "three_samplings.json" if lattice == "square" else f"three_samplings_{lattice}.json"
    print(f"wrote {write_json(RESULTS / name, result)}")


if __name__ == "__main__":
    main()

"""One atomistic volume at three voxel sizes: the same grains after the measured-lattice resampling? (issue 27)

One polycrystal of the held-out-imaging atomistic set (``synth-atoms3d-heldout-imaging``, its fcc Ag
variant: an element, voxel size and missing wedge atoms-3d never trained on) is built once as atoms
and imaged three times over the same physical box: at the set's 0.6 Å voxels (1×) and at 0.7× and
1.4× that voxel size (0.42 and 0.84 Å; each rendering draws its own noise). ``segment --model
atoms-3d`` measures each volume's lattice and runs the network at its training period. The 0.7× and
1.4× grains are mapped back onto the 1× grid (nearest voxel centre) and compared with the 1× grains:
grain F1 between samplings and the median misorientation of the orientation maps where both have a
grain. Also each sampling's grain F1 against its own truth (from the atoms). Prints a table and
writes JSON (default ``bench/results/three_samplings3d.json``; a few minutes on 2 cores).

    python bench/bench_three_samplings3d.py [--precision fp32] [--model atoms-3d] [--out FILE]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from _common import RESULTS, machine_info, write_json

warnings.filterwarnings("ignore", message=".*py3nj.*")

CONFIG, VARIANT, SEED, SIZE = "synth-atoms3d-heldout-imaging", 2, 3, 96
FACTORS = {"x1": 1.0, "x07": 0.7, "x14": 1.4}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    ap.add_argument("--model", default="atoms-3d", help="bundled 3D model name or model file")
    ap.add_argument("--out", default=str(RESULTS / "three_samplings3d.json"))
    args = ap.parse_args()

    import zarr

    from micro_sym.inference.engine import segment
    from micro_sym.io.images import output_array
    from micro_sym.metrics import grain_f1
    from micro_sym.orientation import misorientation_cubic
    from micro_sym.synth.atoms3d import build_polycrystal, load_atoms3d_config, render_structure

    t0 = time.perf_counter()
    cfg = load_atoms3d_config(CONFIG).variant(VARIANT)
    cfg = cfg.model_copy(update={"size": (SIZE,) * 3})
    structure = build_polycrystal(cfg, np.random.default_rng(SEED))
    extent = (SIZE - 1) * cfg.voxel_size  # Å from the first voxel centre to the last, the same at every sampling
    samples, voxel = {}, {}
    for name, f in FACTORS.items():
        voxel[name] = cfg.voxel_size * f
        n = int(round(extent / voxel[name])) + 1
        cfg_f = cfg.model_copy(update={"voxel_size": voxel[name], "size": (n,) * 3})
        samples[name] = render_structure(structure, cfg_f, np.random.default_rng(SEED + 1), cfg.polycrystal.threshold_deg)
    tmp = Path(tempfile.mkdtemp(prefix="three_samplings3d_"))
    try:
        for name, s in samples.items():
            zarr.create_array(str(tmp / f"{name}.zarr"), data=s.image, chunks=(128, 128, 128))
        results = segment([tmp / f"{n}.zarr" for n in FACTORS], tmp / "out", model=args.model,
                          precision=args.precision)
        out, rows = {}, {}
        for r in results:
            if r.status != "complete":
                raise SystemExit(f"{r.name}: {r.error}")
            scale = r.plan["method"].get("scale", {})
            g = zarr.open_group(str(tmp / "out" / f"{r.name}.zarr"), mode="r")
            out[r.name] = {k: output_array(g, k)[:] for k in ("grains", "orientation")}
            ring = scale.get("ring_frequency")
            rows[r.name] = {"voxel_size_angstrom": voxel[r.name], "shape": list(samples[r.name].image.shape),
                            "measured_period": 1.0 / ring if ring else None, "scale": scale.get("scale"),
                            "grains": int(out[r.name]["grains"].max()), "true_grains": int(samples[r.name].grains.max()),
                            "grain_f1_vs_truth": float(grain_f1(out[r.name]["grains"], samples[r.name].grains)["f1"]),
                            "seconds": r.seconds}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ref = out["x1"]
    for name in ("x07", "x14"):
        shape = out[name]["grains"].shape
        idx = [np.clip(np.round(np.arange(SIZE) * cfg.voxel_size / voxel[name]).astype(int), 0, n - 1) for n in shape]
        labels = out[name]["grains"][np.ix_(*idx)]
        quats = out[name]["orientation"][(slice(None), *np.ix_(*idx))]
        both = (labels > 0) & (ref["grains"] > 0)
        mis = misorientation_cubic(np.moveaxis(quats, 0, -1)[both], np.moveaxis(ref["orientation"], 0, -1)[both])
        rows[name]["grain_f1_vs_x1"] = float(grain_f1(labels, ref["grains"])["f1"])
        rows[name]["median_misorientation_vs_x1_deg"] = float(np.median(mis))
    for name, r in rows.items():
        print(f"{name:4s} {r['voxel_size_angstrom']:.2f} Å {r['shape'][0]:3d}³ measured period "
              f"{r['measured_period'] or float('nan'):.2f}  grains {r['grains']:3d} (true {r['true_grains']})  "
              f"F1 vs x1 {r.get('grain_f1_vs_x1', 1.0):.3f}  median misorientation "
              f"{r.get('median_misorientation_vs_x1_deg', 0.0):.2f}°  F1 vs truth {r['grain_f1_vs_truth']:.3f}")
    result = {"benchmark": "one atomistic polycrystal imaged at 0.7x / 1x / 1.4x voxel size through segment "
                           "(atoms-3d, measured lattice)",
              "render": {"config": CONFIG, "variant": VARIANT, "seed": SEED, "size_at_1x": SIZE,
                         "voxel_size_1x": cfg.voxel_size, "lattice": cfg.lattice, "element": cfg.element},
              "model": args.model, "precision": args.precision, "samplings": rows,
              "worst_grain_f1_vs_x1": min(rows[n]["grain_f1_vs_x1"] for n in ("x07", "x14")),
              "worst_median_misorientation_deg": max(rows[n]["median_misorientation_vs_x1_deg"] for n in ("x07", "x14")),
              "wall_s": round(time.perf_counter() - t0, 1),
              "machine": machine_info(with_torch=True)}
    print(f"wrote {write_json(args.out, result)}")


if __name__ == "__main__":
    main()

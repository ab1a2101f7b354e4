"""What fusing both 2D networks' grains costs, and splitting grains: ``segment`` on a 1024² film that measures as fringes.

Usage::

    python bench/bench_fusion.py [--repeats 3] [--out FILE]

Input: a HAADF-STEM film of Au grains each showing one set of fringes (``micro_sym.synth.atoms2d``,
period 8 px, dose 50, 1024², seed 1), written once under ``bench/_data/fusion1024``. On it
``--method auto`` runs fringes-2d and robust-2d and fuses their grains (:mod:`micro_sym.inference.fusion`);
before the fusion it ran robust-2d alone (``--model robust-2d``, what auto ran on fringes). Each
command runs in process, default options, the best of ``--repeats``: its engine seconds (from opening
the input to its grain table) and MP/s. The fusion's own passes are the fused run's seconds less the
two networks' runs. ``auto --split-grains`` also splits the fused map's grains that hold two lattice
orientations (:mod:`micro_sym.inference.split_run`); its passes cost that run's seconds less the fused
run's. Writes bench/results/fusion.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import DATA, RESULTS, log, machine_info, write_json

SIDE = 1024


def film() -> Path:
    """The 1024² film of fringes (written once)."""
    import tifffile

    from micro_sym.synth.atoms2d import Atoms2DConfig, synth_atoms2d

    path = DATA / "fusion1024" / "film.tif"
    if not path.exists():
        cfg = Atoms2DConfig(mode="haadf", size=(SIDE, SIDE), pixel_size_angstrom=2.04 / 8, haadf={"dose": (50.0, 50.0)},
                            film={"grain_size": 20.4, "vacuum_fraction": 0.1, "amorphous_fraction": 0.1,
                                  "fringe_fraction": 0.8})
        path.parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(path, synth_atoms2d(cfg, seed=1).image.astype(np.float32))
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(RESULTS / "fusion.json"))
    args = ap.parse_args()

    from micro_sym.inference import segment

    path = film()
    runs = {"auto (fused)": {}, "robust-2d": {"model": "robust-2d"}, "fringes-2d": {"model": "fringes-2d"},
            "auto --split-grains": {"split_grains": True}}
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        segment([path], Path(tmp) / "warm")  # models loaded and exported once, outside the timing
        for label, options in runs.items():
            best = None
            for i in range(args.repeats):
                t0 = time.perf_counter()
                (res,) = segment([path], Path(tmp) / f"{label}_{i}", **options)
                wall = time.perf_counter() - t0
                if res.status != "complete":
                    raise SystemExit(f"{label}: {res.error}")
                if best is None or res.seconds < best["seconds"]:
                    best = {"seconds": round(res.seconds, 3), "wall_s": round(wall, 3), "grains": res.n_grains,
                            "mp_per_s": round(SIDE * SIDE / 1e6 / res.seconds, 3)}
            rows[label] = best
            log(f"{label}: {best['seconds']:.2f} s ({best['mp_per_s']:.2f} MP/s), {best['grains']} grains")
    fusion_s = rows["auto (fused)"]["seconds"] - rows["robust-2d"]["seconds"] - rows["fringes-2d"]["seconds"]
    split_s = rows["auto --split-grains"]["seconds"] - rows["auto (fused)"]["seconds"]
    log(f"fusion passes: {fusion_s:.2f} s; fused run / robust-2d alone: "
        f"{rows['auto (fused)']['seconds'] / rows['robust-2d']['seconds']:.2f}x; split passes: {split_s:.2f} s")
    path = write_json(args.out, {"what": __doc__.split("\n\n")[0],
                                 "command": "python bench/bench_fusion.py " + " ".join(sys.argv[1:]),
                                 "image": f"{SIDE}x{SIDE} HAADF fringes film (atoms2d, seed 1)", "runs": rows,
                                 "fusion_passes_s": round(fusion_s, 3), "split_passes_s": round(split_s, 3),
                                 "machine": machine_info(with_torch=True)})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

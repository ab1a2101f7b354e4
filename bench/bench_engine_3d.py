"""The block engine on volumes with a bundled 3D network, in float32 and bfloat16 (issue 27).

Usage::

    python bench/bench_engine_3d.py [--sizes 192] [--model default-3d] [--precisions fp32 bf16] [--out FILE]

For each size a uint8 Zarr volume (chunks 128³) is written once under ``bench/_data``: the bundled
sample volume (96³, a simple-cubic lattice) mirrored to ``n³``. Each precision segments it as
``micro-sym segment VOLUME --model MODEL --precision P`` does (2 workers, blocks of 128³, each grain's
orientation measured) in a *fresh subprocess* whose peak RSS is reported, with the seconds spent in
each part of the engine summed over workers and the largest resident memory sampled while each part
ran (where the peak is), and the grains compared with the float32 run's.
Writes bench/results/engine_3d.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _common import DATA, ENGINE_PARTS, RESULTS, ROOT, machine_info, mirrored, time_parts, write_json


def mirrored_volume(n: int) -> Path:
    """``bench/_data/volume{n}.zarr``: the sample volume mirrored to ``n³`` (written once)."""
    import tifffile
    import zarr

    path = DATA / f"volume{n}.zarr"
    if path.exists():
        return path
    cell = tifffile.imread(ROOT / "sample_data" / "volume" / "images" / "sample_000.tif")
    DATA.mkdir(parents=True, exist_ok=True)
    zarr.create_array(str(path), data=mirrored(cell, n), chunks=(128, 128, 128))
    return path


def child(n: int, model: str, precision: str, out: str) -> None:
    """Run in a fresh process: segment one volume, print JSON."""
    rss_by_part = {}
    seconds = time_parts(ENGINE_PARTS, rss_by_part)
    from micro_sym.inference import segment

    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    (r,) = segment([str(mirrored_volume(n))], out, model=model, precision=precision, workers=2)
    wall = time.perf_counter() - t0
    print(json.dumps({"n": n, "precision": precision, "status": r.status, "error": r.error, "wall_s": wall,
                      "n_grains": r.n_grains, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "voxels_per_s": n ** 3 / wall, "seconds": dict(seconds), "rss_mb_by_part": dict(rss_by_part),
                      "plan": {k: r.plan[k] for k in ("blocks", "block", "halo", "tile")}}, default=str))


def agreement(out_a: Path, out_b: Path, name: str) -> dict:
    """Fraction of voxels in the same grain (each grain of ``a`` matched to the grain of ``b`` it overlaps
    most: ids shift when one grain early in raster order splits), and the misorientation between the
    two orientation maps."""
    import zarr

    from micro_sym.orientation import misorientation_cubic

    a, b = (zarr.open_group(str(o / f"{name}.zarr"), mode="r") for o in (out_a, out_b))
    ga, gb = (g["labels/grains/0"][:].ravel().astype(np.int64) for g in (a, b))
    pairs, counts = np.unique(np.stack([ga, gb]), axis=1, return_counts=True)
    best = np.zeros(ga.max() + 1, np.int64)
    order = np.lexsort((counts, pairs[0]))  # by grain of a, largest overlap last
    pa, pb = pairs[0][order], pairs[1][order]
    last = np.r_[pa[1:] != pa[:-1], True]
    best[pa[last]] = pb[last]
    same = float(np.mean(best[ga] == gb))
    qa, qb = (np.moveaxis(g["orientation/0"][:], 0, -1) for g in (a, b))
    ok = np.isfinite(qa).all(-1) & np.isfinite(qb).all(-1)
    mis = misorientation_cubic(qa[ok], qb[ok])
    return {"same_grain": same, "misorientation_median_deg": float(np.median(mis)),
            "misorientation_p95_deg": float(np.percentile(mis, 95))}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[192])
    ap.add_argument("--model", default="default-3d")
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    ap.add_argument("--child", nargs=4, metavar=("N", "MODEL", "PRECISION", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=RESULTS / "engine_3d.json")
    args = ap.parse_args()
    if args.child:
        child(int(args.child[0]), args.child[1], args.child[2], args.child[3])
        return
    runs = []
    for n in args.sizes:
        mirrored_volume(n)
        outs = {}
        for precision in args.precisions:
            outs[precision] = DATA / f"engine3d_out_{n}_{precision}"
            res = subprocess.run([sys.executable, __file__, "--child", str(n), args.model, precision, str(outs[precision])],
                                 capture_output=True, text=True, check=False, env={**os.environ, "PYTHONWARNINGS": "ignore"})
            if res.returncode:
                sys.exit(res.stderr[-3000:])
            r = json.loads(res.stdout.strip().splitlines()[-1])
            if r["status"] != "complete":
                sys.exit(f"{n}³ {precision}: {r['status']} {r['error']}")
            if precision != args.precisions[0]:
                r["vs_" + args.precisions[0]] = agreement(outs[args.precisions[0]], outs[precision], f"volume{n}")
            runs.append(r)
            print(f"{n}³ {args.model} {precision}: {r['wall_s']:.1f} s ({r['voxels_per_s']:,.0f} voxels/s), peak RSS "
                  f"{r['peak_rss_mb']:.0f} MB, {r['n_grains']} grains" + (f"; vs {args.precisions[0]}: {r['vs_' + args.precisions[0]]}"
                                                                          if "vs_" + args.precisions[0] in r else ""), flush=True)
            for part, s in sorted(r["seconds"].items(), key=lambda kv: -kv[1]):
                print(f"    {part:40s} {s:7.1f} s   largest RSS while running {r['rss_mb_by_part'].get(part, 0):6.0f} MB")
    write_json(args.out, {"machine": machine_info(),
                          "input": "sample_data/volume/images/sample_000.tif mirrored, uint8 Zarr, chunks 128³",
                          "command": f"micro-sym segment VOLUME --model {args.model} --precision P (2 workers)",
                          "model": args.model, "runs": runs})


if __name__ == "__main__":
    main()

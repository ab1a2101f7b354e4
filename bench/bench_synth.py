"""Generation speed of the synthetic data (issue 3 targets: 1024² 2D < 2 s, 128³ 3D < 20 s on 2 cores).

Times the complete generators (tessellation, twins, grain rule, rendering, imaging; no file I/O) after a
small warm-up, reports the median and the minimum of the repeats, and a per-stage breakdown from one
extra profiled run. Prints a table and writes bench/results/synth.json.

    python bench/bench_synth.py [--repeats 3] [--size2d 1024] [--size3d 128]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import time
from pathlib import Path

import numpy as np

from _common import RESULTS, machine_info, write_json
from micro_sym.synth import Synth2DConfig, Synth3DConfig, synth_2d, synth_3d


def _time(fn, repeats):
    """Wall-clock and CPU seconds per run. The 2 cores are shared with other jobs, so the CPU time
    (summed over our threads) is reported too: wall time under contention overstates the cost."""
    times, cpu = [], []
    for i in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn(i)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return times, cpu, out


def _top_stages(fn, n=6):
    """Cumulative time of the heaviest functions of ours in one profiled run (where the time goes)."""
    prof = cProfile.Profile()
    prof.enable()
    fn(0)
    prof.disable()
    stats = pstats.Stats(prof).stats
    rows = [
        (f"{Path(k[0]).name}:{k[2]}", v[3])
        for k, v in stats.items()
        if "micro_sym" in k[0] and k[2] not in ("synth_2d", "synth_3d") and not k[2].startswith("<")
    ]
    return [{"function": f, "cumulative_s": round(t, 3)} for f, t in sorted(rows, key=lambda r: -r[1])[:n]]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--size2d", type=int, default=1024)
    ap.add_argument("--size3d", type=int, default=128)
    ap.add_argument("--out", default=str(RESULTS / "synth.json"))
    args = ap.parse_args()

    synth_2d(Synth2DConfig(size=(128, 128)), seed=0)  # warm-up: imports, FFT plans
    synth_3d(Synth3DConfig(size=(32, 32, 32), microstructure={"grain_size": 16}), seed=0)
    cases = {
        f"2d square {args.size2d}²": (lambda i: synth_2d(Synth2DConfig(size=(args.size2d,) * 2), seed=i), 2.0),
        f"2d hexagonal {args.size2d}²": (
            lambda i: synth_2d(Synth2DConfig(size=(args.size2d,) * 2, lattice="hexagonal"), seed=i),
            2.0,
        ),
        f"2d square {args.size2d}², jitter+drift+bright field": (
            lambda i: synth_2d(
                Synth2DConfig(size=(args.size2d,) * 2, imaging={"jitter": 0.3, "drift": 2, "contrast": "bright_field"}),
                seed=i,
            ),
            2.0,
        ),
        f"3d cubic {args.size3d}³": (lambda i: synth_3d(Synth3DConfig(size=(args.size3d,) * 3), seed=i), 20.0),
    }
    results = []
    load_before = os.getloadavg()[0]
    print(f"load average before: {load_before:.2f} on {os.cpu_count()} cores")
    print(f"{'case':<48} {'median s':>9} {'min s':>7} {'cpu s':>7} {'target s':>9} {'grains':>7}")
    for name, (fn, target) in cases.items():
        times, cpu, sample = _time(fn, args.repeats)
        row = {
            "case": name,
            "median_s": round(float(np.median(times)), 3),
            "min_s": round(float(np.min(times)), 3),
            "times_s": [round(t, 3) for t in times],
            "cpu_median_s": round(float(np.median(cpu)), 3),
            "target_s": target,
            "meets_target": bool(np.median(times) < target),
            "n_grains": sample.info["n_grains"],
            "n_twins": sample.info["n_twins"],
        }
        results.append(row)
        print(f"{name:<48} {row['median_s']:>9.3f} {row['min_s']:>7.3f} {row['cpu_median_s']:>7.3f} {target:>9.1f} {row['n_grains']:>7}")
    stages = {
        "2d": _top_stages(lambda i: synth_2d(Synth2DConfig(size=(args.size2d,) * 2), seed=i)),
        "3d": _top_stages(lambda i: synth_3d(Synth3DConfig(size=(args.size3d,) * 3), seed=i)),
    }
    for dim, rows in stages.items():
        print(f"{dim} stages (cumulative, one profiled run): " + ", ".join(f"{r['function']} {r['cumulative_s']}s" for r in rows))
    out = {
        "machine": machine_info(),
        "load_average_before": round(load_before, 2),
        "load_average_after": round(os.getloadavg()[0], 2),
        "repeats": args.repeats,
        "results": results,
        "stages": stages,
    }
    write_json(args.out, out, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

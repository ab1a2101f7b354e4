"""Benchmark grain reconstruction: 2048² maps (angles, cubic quaternions) and a 256³ cubic volume.

Synthetic Voronoi microstructures (random orientation per grain plus 0.5° per-point noise) so the
graph has realistic grain sizes. Times the full ``reconstruct_grains`` call (pairs, graph, labels,
min-size merge) and records the peak of numpy/Python allocations during it (tracemalloc), relative
to the input array size. Prints a table and writes ``bench/results/grains.json``.

    python bench/bench_grains.py            # all cases
    python bench/bench_grains.py --quick    # 512² and 128³ only
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np
from scipy import ndimage

from _common import RESULTS, machine_info, write_json
from micro_sym.grains import reconstruct_grains
from micro_sym.orientation import axis_angle_to_quat, quat_multiply, random_quaternions


def voronoi_labels(shape, n_grains, rng):
    seeds = np.zeros(shape, bool)
    flat = rng.choice(seeds.size, n_grains, replace=False)
    seeds.ravel()[flat] = True
    ids = np.zeros(shape, np.int32)
    ids.ravel()[flat] = np.arange(n_grains)
    _, ind = ndimage.distance_transform_edt(~seeds, return_indices=True)
    return ids[tuple(ind)]


def make_angles(shape, n_grains, rng):
    lab = voronoi_labels(shape, n_grains, rng)
    theta = rng.uniform(0, 90, n_grains).astype(np.float32)[lab]
    theta += rng.normal(0, 0.5, shape).astype(np.float32)
    return np.mod(theta, 90).astype(np.float32)


def make_quats(shape, n_grains, rng):
    lab = voronoi_labels(shape, n_grains, rng)
    q = random_quaternions(n_grains, rng).astype(np.float32)[lab]  # (..., 4)
    del lab
    # Per-point noise: a small rotation about a random axis (0.5° rms), applied in chunks.
    flat = q.reshape(-1, 4)
    for s in range(0, len(flat), 1 << 21):
        part = flat[s : s + (1 << 21)]
        axis = rng.normal(size=(len(part), 3))
        noise = axis_angle_to_quat(axis, np.abs(rng.normal(0, 0.5, len(part))))
        flat[s : s + (1 << 21)] = quat_multiply(part, noise).astype(np.float32)
    return np.ascontiguousarray(np.moveaxis(q, -1, 0))


def run_case(name, orient, symmetry, connectivity, min_size):
    tracemalloc.start()
    t0 = time.perf_counter()
    lab = reconstruct_grains(orient, symmetry=symmetry, threshold=5.0, connectivity=connectivity, min_size=min_size)
    dt = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "case": name,
        "shape": list(orient.shape),
        "dtype": str(orient.dtype),
        "symmetry": symmetry,
        "connectivity": connectivity,
        "min_size": min_size,
        "seconds": round(dt, 3),
        "grains": int(lab.max()),
        "input_mb": round(orient.nbytes / 1e6, 1),
        "peak_alloc_mb": round(peak / 1e6, 1),
        "peak_over_input": round(peak / orient.nbytes, 2),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes only (smoke test)")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    n2, n3 = (512, 128) if args.quick else (2048, 256)
    cases = [
        (f"angles {n2}² square 4-conn", lambda: make_angles((n2, n2), 4000, rng), "square", 1, 10),
        (f"quats {n2}² cubic 4-conn", lambda: make_quats((n2, n2), 4000, rng), "cubic", 1, 10),
        (f"quats {n2}² cubic 8-conn", lambda: make_quats((n2, n2), 4000, rng), "cubic", 2, 10),
        (f"quats {n3}³ cubic 6-conn", lambda: make_quats((n3,) * 3, 4000, rng), "cubic", 1, 10),
        (f"quats {n3}³ cubic 26-conn", lambda: make_quats((n3,) * 3, 4000, rng), "cubic", 2, 10),
    ]
    rows = []
    for name, make, sym, conn, min_size in cases:
        orient = make()
        rows.append(run_case(name, orient, sym, conn, min_size))
        del orient
        r = rows[-1]
        print(f"{r['case']:<30} {r['seconds']:>8.2f} s  {r['grains']:>6} grains  "
              f"input {r['input_mb']:>7.1f} MB  peak alloc {r['peak_alloc_mb']:>7.1f} MB ({r['peak_over_input']}x)",
              flush=True)
    out = {
        "machine": machine_info(),
        "targets": {"2048² s": 5, "256³ s": 60},
        "quick": args.quick,
        "results": rows,
    }
    if not args.quick:
        print(f"wrote {write_json(RESULTS / 'grains.json', out)}")


if __name__ == "__main__":
    main()

"""Benchmark of the streaming inference engine (issue 6): memory vs volume size, overhead, graph size.

Usage::

    python bench/bench_inference.py [--sizes 256 512] [--block 128] [--workers 2]

For each size a uint8 Zarr volume (chunks 128³) with grain-like structure is written once under
``bench/_data`` and segmented by ``micro_sym.inference.segment`` in a *fresh subprocess*, whose peak
RSS (``ru_maxrss``) is reported. The model is a small plain 3D conv net (exported plain torch,
quaternion head; see ``bench_model``) because decoding the real 3D models' cubic-harmonic output
(``sh_to_quat``) runs at ~120k (l=4) or ~50k (l=4+6) voxels/s on noisy outputs and ~95k on the
bundled default-3d's real outputs on this machine (``bench/bench_postprocess3d.py``), far slower than such
a model's forward pass, so it would dominate every number here.
The bare forward throughput is measured on the same interior tile shape two ways (one forward with
torch on all cores; the engine's layout of worker threads each running single-threaded forwards,
the faster and stricter reference) and compared with the end-to-end voxels/s. Writes bench/results/inference.json.
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

from _common import DATA, RESULTS, best_time, write_json


def bench_model():
    """Small 3D conv net with the SegModel interface: 3 conv layers, 8 channels, quaternion head."""
    import torch
    from torch import nn

    class Bench3D(nn.Module):
        ndim, k, total_stride, halo = 3, 24, 1, 4
        orientation_encoding, normalization = "quaternion", "unit"
        config = {"arch": "bench3d", "width": 8}

        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Conv3d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv3d(8, 8, 3, padding=1),
                                     nn.ReLU(), nn.Conv3d(8, 5, 1))

        def forward(self, x):
            return self.net(x)

    torch.manual_seed(0)
    m = Bench3D().eval()
    with torch.no_grad():
        m.net[-1].bias[0] = -2.0  # mostly grain interior, so grain labelling does real work
    return m


def make_volume(n: int) -> Path:
    """``n³`` uint8 Zarr (chunks 128³): piecewise-constant 32³ cells + noise, written chunk by chunk."""
    import zarr

    path = DATA / f"vol{n}.zarr"
    if (path / "zarr.json").exists():
        return path
    DATA.mkdir(parents=True, exist_ok=True)
    z = zarr.create_array(str(path), shape=(n,) * 3, chunks=(128,) * 3, dtype="uint8", overwrite=True)
    rng = np.random.default_rng(0)
    cells = rng.integers(0, 200, size=(n // 32,) * 3, dtype=np.uint8)
    for i in range(0, n, 128):
        for j in range(0, n, 128):
            for k in range(0, n, 128):
                c = cells[i // 32:(i + 128) // 32, j // 32:(j + 128) // 32, k // 32:(k + 128) // 32]
                block = np.kron(c, np.ones((32, 32, 32), np.uint8))
                z[i:i + 128, j:j + 128, k:k + 128] = block + rng.integers(0, 20, block.shape, dtype=np.uint8)
    return path


def child(n: int, block: int, workers: int, out: str) -> None:
    """Run in a fresh process: segment one volume, print JSON with timings and peak RSS."""
    from micro_sym.inference import as_network, segment

    net = as_network(bench_model(), name="bench3d (plain Conv3d 1-8-8-5, exported)")
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    # measure_grains=False: the test volume has no lattice to measure grains by (grain_orientation3d.json
    # times the measurement).
    res = segment([str(DATA / f"vol{n}.zarr")], out, model=net, block=block, chunk=128, workers=workers, min_size=0,
                  measure_grains=False)
    wall = time.perf_counter() - t0
    r = res[0]
    print(json.dumps({"n": n, "status": r.status, "error": r.error, "wall_s": wall, "n_grains": r.n_grains,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "voxels_per_s": n**3 / wall, "plan": r.plan}, default=str))


def bare_forward(block: int, workers: int, halo: int = 4, reps: int = 3) -> dict:
    """Forward-only throughput on interior tiles (block + 2·halo), counted in core voxels/s, two ways.

    ``torch_default``: one forward at a time with torch using every core (how the exported model
    runs on its own). ``engine_layout``: ``workers`` threads each running single-threaded forwards
    concurrently, the layout the engine uses; on this small network it is much faster, so it is the
    stricter reference for the engine's overhead.
    """
    from concurrent.futures import ThreadPoolExecutor

    import torch

    from micro_sym.inference import as_network

    net = as_network(bench_model())
    tile = block + 2 * halo
    x = np.random.default_rng(0).random((1, tile, tile, tile), dtype=np.float32)

    def best(fn):
        return best_time(fn, reps)

    torch.set_num_threads(os.cpu_count() or 1)
    single = best(lambda: net.forward(x))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    n_tiles = 4 * workers
    with ThreadPoolExecutor(workers) as pool:
        pooled = best(lambda: list(pool.map(lambda _: net.forward(x), range(n_tiles))))
    return {"tile": [tile] * 3, "torch_default": {"forward_s": single, "core_voxels_per_s": block**3 / single},
            "engine_layout": {"workers": workers, "tiles": n_tiles, "seconds": pooled,
                              "core_voxels_per_s": n_tiles * block**3 / pooled}}


def graph_size(n: int, block: int) -> dict:
    """Dask tasks behind one tile read, and what a volume-sized map_overlap graph would hold."""
    import dask.array as da

    from micro_sym.io import open_image

    img = open_image(DATA / f"vol{n}.zarr")
    tile = img.data[: block + 8, : block + 8, : block + 8]
    mo = da.map_overlap(lambda x: x, img.data, depth=4, boundary="none", dtype=img.data.dtype)
    return {"tasks_per_tile_read": len(dict(tile.__dask_graph__())),
            "map_overlap_graph_tasks": len(dict(mo.__dask_graph__()))}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--block", type=int, default=128)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--child", type=int)
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.block, args.workers, args.out)
    runs = []
    for n in args.sizes:
        make_volume(n)
        out = str(DATA / f"out{n}")
        p = subprocess.run([sys.executable, __file__, "--child", str(n), "--block", str(args.block),
                            "--workers", str(args.workers), "--out", out], capture_output=True, text=True)
        if p.returncode:
            print(p.stderr[-3000:])
            raise SystemExit(p.returncode)
        runs.append(json.loads(p.stdout.strip().splitlines()[-1]))
        shutil.rmtree(out, ignore_errors=True)
        print(f"{n}³: {runs[-1]['wall_s']:.1f} s, {runs[-1]['voxels_per_s']:,.0f} vox/s, "
              f"peak RSS {runs[-1]['peak_rss_mb']:.0f} MB, {runs[-1]['n_grains']} grains", flush=True)
    bare = bare_forward(args.block, args.workers)
    graph = {n: graph_size(n, args.block) for n in args.sizes}
    rss = [r["peak_rss_mb"] for r in runs]
    result = {
        "machine": f"{os.cpu_count()} CPU cores, no GPU",
        "model": "bench3d: plain Conv3d 1-8-8-5 (exported torch, quaternion head, halo 4); the real 3D models' "
                 "harmonic decode is too slow to benchmark at this scale",
        "settings": {"block": args.block, "chunk": 128, "workers": args.workers, "scheduler": "threads",
                     "min_size": 0},
        "runs": runs, "bare_forward": bare,
        "rss_ratio_largest_vs_smallest": max(rss) / min(rss),
        "end_to_end_vs_bare": {k: runs[-1]["voxels_per_s"] / bare[k]["core_voxels_per_s"]
                               for k in ("torch_default", "engine_layout")},
        "graph": graph,
    }
    write_json(RESULTS / "inference.json", result, indent=1, default=str)
    print(f"\n{'size':>6} {'wall s':>8} {'vox/s':>12} {'peak RSS MB':>12}")
    for r in runs:
        print(f"{r['n']:>5}³ {r['wall_s']:>8.1f} {r['voxels_per_s']:>12,.0f} {r['peak_rss_mb']:>12.0f}")
    for k, label in (("torch_default", "one forward, torch on all cores"),
                     ("engine_layout", f"{args.workers} threads x single-thread forwards")):
        print(f"bare forward ({label}, tile {bare['tile'][0]}³): {bare[k]['core_voxels_per_s']:,.0f} core vox/s; "
              f"end-to-end / bare = {result['end_to_end_vs_bare'][k]:.2f}")
    print(f"peak RSS ratio largest/smallest = {result['rss_ratio_largest_vs_smallest']:.2f}")
    print(f"graph: {graph}")


if __name__ == "__main__":
    main()

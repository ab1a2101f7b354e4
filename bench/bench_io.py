"""Peak memory of `micro-sym info` on a 20000 x 20000 uint16 TIFF (800 MB of pixels).

Writes the TIFF tile by tile (never holding it in memory), runs `micro-sym info` in a child
process and reads the child's peak RSS from getrusage. Prints a table and writes
bench/results/io.json.

    python bench/bench_io.py [--size 20000] [--keep]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

from _common import BENCH, RESULTS, write_json


def write_big_tiff(path: Path, size: int, layout: str) -> None:
    """A BigTIFF with a smooth ramp plus noise, written block by block."""
    block = 512
    rng = np.random.default_rng(0)

    def rows():  # strips: one block of rows at a time
        for y0 in range(0, size, block):
            h = min(block, size - y0)
            yy = np.arange(y0, y0 + h)[:, None]
            yield ((yy * 3 + np.arange(size)[None, :]) % 60000 + rng.integers(0, 100, (h, size))).astype(np.uint16)

    def tiles():
        for y0 in range(0, size, block):
            for x0 in range(0, size, block):
                yy = np.arange(y0, y0 + block)[:, None]
                xx = np.arange(x0, x0 + block)[None, :]
                yield ((yy * 3 + xx) % 60000 + rng.integers(0, 100, (block, block))).astype(np.uint16)

    if layout == "tiled":
        tifffile.imwrite(path, tiles(), shape=(size, size), dtype=np.uint16, tile=(block, block), bigtiff=True)
    else:
        tifffile.imwrite(path, rows(), shape=(size, size), dtype=np.uint16, rowsperstrip=block, bigtiff=True)


def measure(path: Path) -> dict:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "micro_sym", "info", str(path)], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if res.returncode != 0:
        raise SystemExit(res.stderr)
    if peak_kb <= before:
        raise SystemExit("could not attribute peak RSS to this child; run each layout in a fresh process")
    return {"peak_rss_mb": round(peak_kb / 1024, 1), "wall_s": round(wall, 2), "output": res.stdout}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=20000)
    ap.add_argument("--layout", choices=["tiled", "strips"], default=None, help="default: both, each in its own process")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    if args.layout is None:  # getrusage reports the max over all children: one child process per layout
        results = {}
        for layout in ("tiled", "strips"):
            out = subprocess.run([sys.executable, __file__, "--size", str(args.size), "--layout", layout],
                                 capture_output=True, text=True, check=True)
            results[layout] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{'layout':>8} {'size':>12} {'file MB':>8} {'peak RSS MB':>12} {'wall s':>7}")
        for layout, r in results.items():
            print(f"{layout:>8} {r['shape']:>12} {r['file_mb']:>8} {r['peak_rss_mb']:>12} {r['wall_s']:>7}")
        out_path = write_json(RESULTS / "io.json",
                              {"benchmark": "micro-sym info on a uint16 BigTIFF", "results": results})
        print(f"wrote {out_path}")
        return
    with tempfile.TemporaryDirectory(dir=BENCH) as tmp:
        path = Path(tmp) / f"big_{args.layout}.tif"
        write_big_tiff(path, args.size, args.layout)
        r = measure(path)
        r.update(shape=f"{args.size}x{args.size}", file_mb=round(path.stat().st_size / 2**20))
        print(json.dumps(r))


if __name__ == "__main__":
    main()

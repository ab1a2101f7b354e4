"""`micro-sym segment` on 1024² micrographs as a user runs it: one image per command, and a folder of them.

Usage::

    python bench/bench_segment_cli.py [--images 8] [--repeats 3] [--out FILE]

Inputs: ``--images`` uint16 TIFFs of 1024², crops of the bundled sample micrograph mirrored to 4096²
(``_common.mirrored_micrograph``), written once under ``bench/_data/cli1024``. Every run is the
installed command in a fresh process with no options (``--method auto``: the lattice measured,
robust-2d, the lattice mask, each grain's lattice angle), timed from process start to exit:

- ``first run``: one image with an empty model cache (the escnn model is built and its export cached,
  :mod:`micro_sym.deploy.cache`);
- ``one image``: one image per command, the cache filled (best of ``--repeats``);
- ``folder``: all images in one command (best of ``--repeats``); per image = wall / images.

Besides wall times it reports the engine's own seconds per image (the time column of the command's
summary table: from opening the input to its grain table, after start-up and model loading). Writes bench/results/segment_cli.json.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import DATA, RESULTS, machine_info, mirrored_micrograph, write_json

SIDE = 1024


def make_images(n: int) -> list[Path]:
    """``n`` different 1024² crops of the mirrored 4096² sample micrograph, as uint16 TIFFs (written once)."""
    import tifffile
    import zarr

    folder = DATA / "cli1024"
    paths = [folder / f"crop_{i:02d}.tif" for i in range(n)]
    if all(p.exists() for p in paths):
        return paths
    big = zarr.open_array(str(mirrored_micrograph(4096)), mode="r")
    folder.mkdir(parents=True, exist_ok=True)
    for i, p in enumerate(paths):
        y, x = divmod(i, 4)
        # Offsets off the mirror seams, so that no two crops are the same picture.
        y0, x0 = (y * 1000 + 37 * i) % (4096 - SIDE), (x * 1000 + 53 * i) % (4096 - SIDE)
        tifffile.imwrite(p, np.asarray(big[y0:y0 + SIDE, x0:x0 + SIDE]))
    return paths


def run_cli(inputs: list[Path], out: Path, cache: Path) -> dict:
    """``micro-sym segment INPUTS --out OUT`` in a fresh process: wall seconds and the per-input seconds."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "micro_sym", "segment", *map(str, inputs), "--out", str(out)]
    env = {**os.environ, "MICRO_SYM_CACHE_DIR": str(cache), "PYTHONWARNINGS": "ignore"}
    t = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - t
    if res.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{res.stderr[-2000:]}")
    # The summary table's time column: the engine's seconds per input (after start-up and model loading).
    engine = [float(m) for m in re.findall(r"│\s*([0-9.]+) s\s*│", res.stdout)]
    return {"wall_s": wall, "engine_s": engine}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=RESULTS / "segment_cli.json")
    args = ap.parse_args()
    images = make_images(args.images)
    mp = SIDE * SIDE / 1e6
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cache, out = tmp / "cache", tmp / "out"
        first = run_cli(images[:1], out, cache)
        one = min((run_cli(images[:1], out, cache) for _ in range(args.repeats)), key=lambda r: r["wall_s"])
        folder = min((run_cli(images, out, cache) for _ in range(args.repeats)), key=lambda r: r["wall_s"])
    rows = {
        "first run (empty model cache), one image": first | {"mpix_per_s": mp / first["wall_s"]},
        "one image per command": one | {"mpix_per_s": mp / one["wall_s"]},
        f"folder of {len(images)} images, one command": folder | {"per_image_s": folder["wall_s"] / len(images),
                                                                 "mpix_per_s": len(images) * mp / folder["wall_s"]},
    }
    for name, r in rows.items():
        engine = ", ".join(f"{s:.2f}" for s in r["engine_s"])
        print(f"{name:45s} wall {r['wall_s']:6.2f} s  {r['mpix_per_s']:.2f} MP/s   engine per input: {engine} s")
    write_json(args.out, {"machine": machine_info(),
                          "input": f"{len(images)} crops of 1024² (uint16 TIFF) of the mirrored sample micrograph",
                          "command": "micro-sym segment INPUT... --out OUT (no options), fresh process, timed to exit",
                          "repeats": args.repeats, "runs": rows})


if __name__ == "__main__":
    main()

"""The block engine on large micrographs (issue 29): peak memory, wall time and where the time goes.

Usage::

    python bench/bench_engine_2d.py [--sizes 4096 8192] [--configs default 1536x2] [--model NAME] [--out FILE]
    python bench/bench_engine_2d.py --sizes 8192 --baseline COMMIT [--pairs 4] [--out FILE]

For each size a uint16 Zarr micrograph (chunks 1024²) is written once under ``bench/_data``: the
bundled sample micrograph ``sample_000`` mirrored into a larger image (mirroring keeps the lattice and
the grains continuous at the seams). Each configuration ``BLOCKxWORKERS`` (``default`` = the engine's
own choice) segments it with what ``micro-sym segment`` runs without options (``--method auto``: the
lattice measured, robust-2d, the lattice mask) or with ``--model``, in a *fresh subprocess* whose peak RSS
(``ru_maxrss``) is reported, with the seconds spent in each part of the engine summed over workers.

The reference is the network's bare forward on the same inputs (the shapes the engine ran the network
on, random values) in the engine's layout: as many threads as workers, each running forwards with the engine's
thread count, counted in image pixels per second. Writes bench/results/engine_2d.json.

``--baseline COMMIT`` compares a change with the code at COMMIT (a temporary git worktree, removed
afterwards): the two run alternately, ``--pairs`` times each, after one unrecorded 1024² warm-up run
of each (which compiles their kernels), and the means are printed and stored. On a shared machine
one run's wall time spreads by more than most changes make; alternating pairs see the same spread.
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
from _common import (
    DATA,
    ENGINE_PARTS,
    RESULTS,
    ROOT,
    machine_info,
    mirrored_micrograph,
    time_parts,
    write_json,
)

SAMPLE = ROOT / "sample_data" / "micrographs" / "images" / "sample_000.tif"  # what mirrored_micrograph mirrors


def _record_forward_shapes() -> list:
    """Collect the input shape of every network forward the engine makes (the tiles, or the parts of
    them, that the network itself runs on)."""
    from micro_sym.deploy import runtime

    shapes, forward = [], runtime.cpu_forward

    def recorded(model, ndim, x, *args, **kwargs):
        shapes.extend([tuple(x.shape[2:])] * int(x.shape[0]))
        return forward(model, ndim, x, *args, **kwargs)

    runtime.cpu_forward = recorded
    return shapes


def child(n: int, block: int | None, workers: int | None, out: str, model: str | None) -> None:
    """Run in a fresh process: segment one micrograph as ``micro-sym segment`` does, print JSON."""
    seconds = time_parts(ENGINE_PARTS)
    forward_shapes = _record_forward_shapes()
    from micro_sym.inference import segment

    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    (r,) = segment([str(mirrored_micrograph(n))], out, block=block, workers=workers, model=model)
    wall = time.perf_counter() - t0
    print(json.dumps({"n": n, "status": r.status, "error": r.error, "wall_s": wall, "n_grains": r.n_grains,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "mpix_per_s": n * n / wall / 1e6, "seconds": dict(seconds),
                      "plan": {k: r.plan[k] for k in ("blocks", "block", "chunk", "halo", "tile", "recompute",
                                                      "memory_estimate_bytes")},
                      "method": r.plan["method"].get("auto", {}).get("chose"), "forward_shapes": forward_shapes},
                     default=str))


def bare_forward(n: int, shapes: list, workers: int, model: str | None, reps: int = 2) -> dict:
    """The network's forward alone on the inputs the engine ran it on (``shapes``: random values of
    those shapes), in the engine's layout (``workers`` threads, each with the engine's thread count),
    in image pixels per second."""
    from concurrent.futures import ThreadPoolExecutor

    from micro_sym.inference import load_network
    from micro_sym.inference.method_choice import AUTO_MODEL
    from micro_sym.inference.scheduler import ThreadRunner

    runner = ThreadRunner(workers or None)  # sets torch's threads per worker as the engine does
    model = model or AUTO_MODEL
    net = load_network(model)
    rng = np.random.default_rng(0)
    shapes = [tuple(s) for s in shapes]
    tiles = {shape: rng.random((1, *shape), dtype=np.float32) for shape in set(shapes)}
    with ThreadPoolExecutor(runner.workers) as pool:
        # exclusive=False: concurrent forwards, as fast as the machine runs them (the engine runs one at a time)
        list(pool.map(lambda shape: net.forward(tiles[shape], exclusive=False), list(tiles)))  # warm-up
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            list(pool.map(lambda shape: net.forward(tiles[shape], exclusive=False), shapes))
            times.append(time.perf_counter() - t)
    runner.close()
    best = min(times)
    return {"model": model, "tiles": len(shapes), "workers": runner.workers, "seconds": best,
            "mpix_per_s": n * n / best / 1e6}


def _parse_config(text: str):
    if text == "default":
        return None, None
    block, workers = text.split("x")
    return int(block), int(workers)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[4096, 8192])
    ap.add_argument("--configs", nargs="+", default=["default"], help="BLOCKxWORKERS, or default")
    ap.add_argument("--model", default=None, help="a network (default: what --method auto runs)")
    ap.add_argument("--child", nargs=3, metavar=("N", "CONFIG", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--forward", nargs=3, metavar=("N", "SHAPES", "WORKERS"), help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=RESULTS / "engine_2d.json")
    ap.add_argument("--baseline", default=None, help="a commit to compare with, run alternately")
    ap.add_argument("--pairs", type=int, default=1, help="with --baseline: runs of each code")
    args = ap.parse_args()
    if args.child:
        child(int(args.child[0]), *_parse_config(args.child[1]), args.child[2], args.model)
        return
    if args.forward:
        print(json.dumps(bare_forward(int(args.forward[0]), json.loads(args.forward[1]), int(args.forward[2]), args.model)))
        return

    def fresh(*extra, code=None) -> dict:
        """This script in a fresh process, or the copy of it in ``code`` (a checkout), which runs that
        checkout's micro_sym."""
        extra += ("--model", args.model) if args.model else ()
        script = Path(code) / "bench" / Path(__file__).name if code else __file__
        res = subprocess.run([sys.executable, str(script), *extra], capture_output=True, text=True,
                             env={**os.environ, "PYTHONWARNINGS": "ignore"})
        if res.returncode:
            sys.exit(res.stderr[-3000:])
        return json.loads(res.stdout.strip().splitlines()[-1])

    def measure(n: int, config: str, code=None, label: str = "current") -> dict:
        r = fresh("--child", str(n), config, str(DATA / f"engine2d_out_{n}_{label}"), code=code)
        if r["status"] != "complete":
            sys.exit(f"{n}² {config} ({label}): {r['status']} {r['error']}")
        plan = r["plan"]
        fwd = fresh("--forward", str(n), json.dumps(r.pop("forward_shapes")), str(_parse_config(config)[1] or 0), code=code)
        r |= {"config": config, "model": args.model or "auto", "code": label, "forward": fwd,
              "engine_vs_forward": r["mpix_per_s"] / fwd["mpix_per_s"]}
        print(f"{n}² {config} {r['model']} ({label}): {r['wall_s']:.1f} s ({r['mpix_per_s']:.2f} MP/s), peak RSS "
              f"{r['peak_rss_mb']:.0f} MB, {r['n_grains']} grains; blocks {plan['blocks']} of {plan['block']}, tile "
              f"{plan['tile']}; bare forward {fwd['mpix_per_s']:.2f} MP/s ({fwd['workers']} workers): engine at "
              f"{100 * r['engine_vs_forward']:.0f} %", flush=True)
        for part, s in sorted(r["seconds"].items(), key=lambda kv: -kv[1]):
            print(f"    {part:40s} {s:7.1f} s")
        return r

    for n in args.sizes:
        mirrored_micrograph(n)
    runs, extra = [], {}
    if args.baseline:
        runs, extra = _compare(args, measure)
    else:
        for config in args.configs:
            for n in args.sizes:
                runs.append(measure(n, config))
    for config in args.configs:
        rss = {r["n"]: r["peak_rss_mb"] for r in runs if r["config"] == config}
        if len(rss) > 1 and not args.baseline:
            print(f"{config}: peak RSS largest / smallest image = {rss[max(rss)] / rss[min(rss)]:.2f}")

    write_json(args.out, {"machine": machine_info(),
                          "input": f"{SAMPLE.relative_to(ROOT)} mirrored, uint16 Zarr, chunks 1024²",
                          "command": "micro-sym segment IMAGE --out OUT (auto) with the configuration's --tile/--workers",
                          **extra, "runs": runs})


def _compare(args, measure) -> tuple[list, dict]:
    """``--baseline``: the code at that commit and this checkout, run alternately (see the module docstring)."""
    import statistics
    import tempfile

    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", args.baseline], capture_output=True, text=True,
                            check=True).stdout.strip()
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    tree = Path(tempfile.mkdtemp(prefix="micro_sym_baseline_"))
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--force", str(tree), commit],
                   check=True, capture_output=True)
    (tree / "bench" / "_data").symlink_to(DATA)  # the same inputs, made once
    runs = []
    try:
        mirrored_micrograph(1024)
        for config in args.configs:
            measure(1024, config, tree, "baseline")  # warm-up: compiles each code's kernels
            measure(1024, config, None, "current")
            for n in args.sizes:
                for _ in range(args.pairs):
                    runs.append(measure(n, config, tree, "baseline"))
                    runs.append(measure(n, config, None, "current"))
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], capture_output=True)
    means = {}
    for label in ("baseline", "current"):
        mine = [r for r in runs if r["code"] == label]
        parts = {k for r in mine for k in r["seconds"]}
        means[label] = {"wall_s": statistics.mean(r["wall_s"] for r in mine),
                        "seconds": {k.strip(): statistics.mean(r["seconds"].get(k, 0.0) for r in mine) for k in sorted(parts)}}
        print(f"{label}: mean wall time {means[label]['wall_s']:.2f} s over {len(mine)} runs")
    return runs, {"baseline": commit, "current": head + (" (with uncommitted changes)" if _dirty() else ""), "means": means}


def _dirty() -> bool:
    return bool(subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()

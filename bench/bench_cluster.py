"""`micro-sym segment` on a real Dask cluster on this machine, against the default scheduler (issue 29).

    python bench/bench_cluster.py [--size 4096] [--kill-after 0.4]

Starts ``dask scheduler`` and two ``dask worker`` processes (one thread each, ``OMP_NUM_THREADS=1``)
on localhost, as a user would (README, "On a cluster"), and runs the command three times on the
bundled sample micrograph mirrored to ``--size``² (uint16 Zarr, chunks 1024²), each in a fresh
process with no other option:

1. ``micro-sym segment IMAGE --out A`` (the default scheduler: threads in one process);
2. ``... --out B --scheduler tcp://127.0.0.1:PORT`` on the fresh workers (they load the model and
   compile the kernels on their first tasks), then again into ``C`` on the same, now warm, workers;
3. the same into ``D``, with one worker killed (SIGKILL) ``--kill-after`` × the warm run's wall time
   after the start: Dask reruns its tasks on the other worker.

Each output (every array of the OME-Zarr output, decoded, and the grain CSV and JSON) is compared
byte for byte with run 1. Prints a table and writes ``bench/results/cluster.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import RESULTS, machine_info, mirrored_micrograph, write_json

DASK = Path(sys.executable).with_name("dask")
ENV = dict(os.environ, OMP_NUM_THREADS="1")


def wait_for(predicate, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}")


@contextlib.contextmanager
def local_cluster(folder: Path, workers: int = 2):
    """``dask scheduler`` and ``workers`` single-threaded ``dask worker`` processes on localhost, as a
    user starts them: yields ``(address, worker processes)``; all are stopped on exit (log in ``folder``)."""
    from distributed import Client

    info = Path(folder) / "scheduler.json"
    procs = []
    with open(Path(folder) / "cluster.log", "w") as log:
        try:
            procs.append(subprocess.Popen([str(DASK), "scheduler", "--scheduler-file", str(info), "--no-dashboard",
                                           "--host", "127.0.0.1"], stdout=log, stderr=log, env=ENV))
            wait_for(lambda: info.is_file() and info.stat().st_size > 0, 60, "the scheduler file")
            address = json.loads(info.read_text())["address"]
            procs += [subprocess.Popen([str(DASK), "worker", "--scheduler-file", str(info), "--nthreads", "1",
                                        "--no-dashboard", "--name", f"w{i}"], stdout=log, stderr=log, env=ENV)
                      for i in range(workers)]
            with Client(address, timeout=30) as client:
                wait_for(lambda: len(client.scheduler_info()["workers"]) == workers, 90, f"{workers} workers")
            yield address, procs[1:]
        finally:
            for p in reversed(procs):
                if p.poll() is None:
                    p.terminate()
            for p in procs:
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()


def segment(image: Path, out: Path, *extra, kill=None) -> dict:
    """Run the command in a fresh process; ``kill``: ``(process, seconds)`` to SIGKILL after that long."""
    cmd = [sys.executable, "-m", "micro_sym", "segment", str(image), "--out", str(out), *extra]
    t = time.perf_counter()
    run = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    killed_at = None
    if kill is not None:
        victim, after = kill
        try:
            run.wait(after)
        except subprocess.TimeoutExpired:
            victim.send_signal(signal.SIGKILL)
            killed_at = time.perf_counter() - t
    stdout, stderr = run.communicate(timeout=3600)
    wall = time.perf_counter() - t
    if run.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({run.returncode}): {stderr.strip()[-500:]}")
    return {"wall_s": round(wall, 2), "killed_worker_at_s": None if killed_at is None else round(killed_at, 2)}


def outputs(out: Path, name: str) -> dict:
    """Every array of the output (decoded bytes) and the grain CSV and JSON (bytes)."""
    import zarr

    root = zarr.open_group(str(out / f"{name}.zarr"), mode="r")
    found = {}

    def visit(group, prefix=""):
        for key, node in group.members():
            if isinstance(node, zarr.Group):
                visit(node, f"{prefix}{key}/")
            else:
                found[f"{prefix}{key}"] = node[:].tobytes()

    visit(root)
    for suffix in ("_grains.csv", "_grains.json"):
        found[suffix] = (out / f"{name}{suffix}").read_bytes()
    return found


def differences(a: dict, b: dict) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--kill-after", type=float, default=0.4, help="fraction of run 2's wall time")
    ap.add_argument("--out", default=str(RESULTS / "cluster.json"))
    args = ap.parse_args()

    image = mirrored_micrograph(args.size)
    name = image.stem
    work = Path(tempfile.mkdtemp(prefix="micro_sym_cluster_"))
    try:
        local = segment(image, work / "local")
        with local_cluster(work) as (address, workers):
            first = segment(image, work / "first", "--scheduler", address)
            remote = segment(image, work / "cluster", "--scheduler", address)
            killed = segment(image, work / "killed", "--scheduler", address,
                             kill=(workers[0], args.kill_after * remote["wall_s"]))
            alive = sum(p.poll() is None for p in workers)
        ref = outputs(work / "local", name)
        rows = {"default scheduler": local,
                "cluster, fresh workers": {**first, "differs_from_default": differences(ref, outputs(work / "first", name))},
                "cluster, 2 workers": {**remote, "differs_from_default": differences(ref, outputs(work / "cluster", name))},
                "cluster, one worker killed": {**killed, "workers_alive_after": alive,
                                               "differs_from_default": differences(ref, outputs(work / "killed", name))}}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{name}: {args.size}², {len(ref)} outputs compared byte for byte")
    for what, r in rows.items():
        same = "same" if not r.get("differs_from_default") else f"DIFFERS: {r['differs_from_default']}"
        kill = f", worker killed at {r['killed_worker_at_s']} s" if r.get("killed_worker_at_s") else ""
        print(f"  {what:<28} {r['wall_s']:>8.1f} s{kill}  {same if what != 'default scheduler' else ''}")
    write_json(args.out, {"command": "python bench/bench_cluster.py " + " ".join(sys.argv[1:]),
                          "input": f"sample_000 mirrored to {args.size}², uint16 Zarr, chunks 1024²",
                          "outputs_compared": sorted(ref), "runs": rows, "machine": machine_info(with_torch=True)})


if __name__ == "__main__":
    main()

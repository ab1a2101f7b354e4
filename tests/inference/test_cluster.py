"""A real Dask cluster on localhost: ``dask scheduler`` and two ``dask worker`` processes started as
a user would, ``micro-sym segment ... --scheduler tcp://...`` run through the CLI, outputs compared
byte for byte with the default scheduler; and a worker killed in the middle of a run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from _helpers import read_output, smooth_image

DASK = Path(sys.executable).with_name("dask")
pytestmark = pytest.mark.skipif(not DASK.exists(), reason="the dask command is not installed next to python")


def _wait_for(predicate, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def cluster(tmp_path):
    """``(address, worker processes)`` of a scheduler with two single-threaded worker processes."""
    info = tmp_path / "scheduler.json"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    log = open(tmp_path / "cluster.log", "w")
    procs = [subprocess.Popen([str(DASK), "scheduler", "--scheduler-file", str(info), "--no-dashboard",
                               "--host", "127.0.0.1"], stdout=log, stderr=log, env=env)]
    try:
        _wait_for(lambda: info.is_file() and info.stat().st_size > 0, 60, "the scheduler file")
        address = json.loads(info.read_text())["address"]
        workers = [subprocess.Popen([str(DASK), "worker", "--scheduler-file", str(info), "--nthreads", "1",
                                     "--no-dashboard", "--name", f"w{i}"], stdout=log, stderr=log, env=env)
                   for i in range(2)]
        procs += workers
        from distributed import Client

        with Client(address, timeout=30) as client:
            _wait_for(lambda: len(client.scheduler_info()["workers"]) == 2, 90, "two workers")
        yield address, workers
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        log.close()


def _segment_cli(args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "micro_sym", "segment", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))


def test_segment_on_a_real_cluster_is_byte_identical(tmp_path, cluster, segmenter2d_file):
    address, _ = cluster
    tifffile.imwrite(tmp_path / "a.tif", smooth_image((200, 170), seed=11))
    common = ["--model", segmenter2d_file, "--tile", "64", "--threshold", "0.01", "--min-size", "5"]
    local = _segment_cli([tmp_path / "a.tif", "--out", tmp_path / "local", *common], tmp_path)
    assert local.returncode == 0, local.stderr[-2000:]
    remote = _segment_cli([tmp_path / "a.tif", "--out", tmp_path / "remote", "--scheduler", address, *common], tmp_path)
    assert remote.returncode == 0, remote.stderr[-2000:]
    a, b = read_output(tmp_path / "local", "a"), read_output(tmp_path / "remote", "a")
    assert a["grains"].max() > 5
    for key in a:
        assert a[key].tobytes() == b[key].tobytes(), key
    assert (tmp_path / "local" / "a_grains.csv").read_bytes() == (tmp_path / "remote" / "a_grains.csv").read_bytes()


def test_a_worker_killed_mid_run_loses_nothing(tmp_path, cluster, segmenter2d_file):
    """Dask reruns the dead worker's tasks on the other one; the output equals an undisturbed run."""
    from micro_sym.inference import segment

    address, workers = cluster
    tifffile.imwrite(tmp_path / "a.tif", smooth_image((256, 256), seed=12))
    kw = dict(model=str(segmenter2d_file), block=32, chunk=32, threshold=0.01, min_size=5)
    killed = []

    def kill_one(stage, block_id):
        if stage == "maps" and not killed:
            workers[0].send_signal(signal.SIGKILL)
            killed.append(block_id)

    (res,) = segment([tmp_path / "a.tif"], tmp_path / "out", scheduler=address, on_block=kill_one, **kw)
    assert killed and workers[0].wait(10) is not None
    assert res.status == "complete", res.error
    (ref,) = segment([tmp_path / "a.tif"], tmp_path / "ref", **kw)
    a, b = read_output(tmp_path / "out", "a"), read_output(tmp_path / "ref", "a")
    for key in a:
        assert np.array_equal(a[key], b[key]), key

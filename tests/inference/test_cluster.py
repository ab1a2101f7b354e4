"""A real Dask cluster on localhost: ``dask scheduler`` and two ``dask worker`` processes started as
a user would, ``micro-sym segment ... --scheduler tcp://...`` run through the CLI, outputs compared
byte for byte with the default scheduler; and a worker killed in the middle of a run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from _helpers import read_output, smooth_image

DASK = Path(sys.executable).with_name("dask")
BENCH = Path(__file__).resolve().parents[2] / "bench"
pytestmark = pytest.mark.skipif(not DASK.exists(), reason="the dask command is not installed next to python")


@pytest.fixture
def cluster(tmp_path):
    """``(address, worker processes)`` of a scheduler with two single-threaded worker processes
    (``bench/bench_cluster.py``'s, which measures the same on a large micrograph)."""
    sys.path.insert(0, str(BENCH))
    try:
        import bench_cluster
    finally:
        sys.path.remove(str(BENCH))
    with bench_cluster.local_cluster(tmp_path) as (address, workers):
        yield address, workers


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

"""Damaged and missing Zarr chunks, whatever the method: the bad chunk is named, a missing one is reported."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import zarr

from _helpers import half_lattice


def _lattice_zarr(path):
    img = (half_lattice((192, 192), seed=5) * 100 + 1000).astype(np.float32)
    zarr.create_array(str(path), data=img, chunks=(64, 64))
    return path


def _segment(*args):
    p = subprocess.run([sys.executable, "-m", "micro_sym", "segment", *map(str, args)], capture_output=True, text=True)
    return p.returncode, [ln for ln in p.stderr.splitlines() if ln.strip()]


@pytest.mark.parametrize("method", ["auto", "classical", "network"])
def test_a_damaged_chunk_is_named_by_every_method(tmp_path, method):
    # The lattice measurement (auto, network) and the period estimate (classical) read the image first.
    src = _lattice_zarr(tmp_path / "a.zarr")
    (src / "c" / "1" / "2").write_bytes(b"garbage, not zstd")
    code, lines = _segment(src, "--out", tmp_path / "out", "--method", method)
    assert code == 2 and len(lines) == 1, lines
    assert "a.zarr" in lines[0] and "chunk (1, 2)" in lines[0], lines


def test_a_missing_chunk_is_reported(tmp_path):
    src = _lattice_zarr(tmp_path / "a.zarr")
    (src / "c" / "0" / "1").unlink()
    code, lines = _segment(src, "--out", tmp_path / "out", "--method", "classical")
    assert code == 0, lines
    assert any("1 of 9 storage chunks are missing and were read as the fill value 0" in ln for ln in lines), lines


def test_ctrl_c_says_how_to_resume_and_the_rerun_completes(tmp_path):
    import signal
    import time

    import tifffile
    from micro_sym.synth import Synth2DConfig, synth_2d

    img = np.tile(synth_2d(Synth2DConfig(size=(512, 512)), seed=1).image, (4, 4))  # 2048²: 16 blocks of 512
    tifffile.imwrite(tmp_path / "a.tif", img)
    args = [sys.executable, "-m", "micro_sym", "segment", str(tmp_path / "a.tif"), "--out", str(tmp_path / "out"),
            "--tile", "512", "--method", "network"]
    # A shell without job control starts background jobs with SIGINT ignored, and Python keeps an ignored
    # SIGINT ignored: give the run the default disposition, as a terminal's Ctrl-C finds it.
    p = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while not any((tmp_path / "out").glob(".a.run/done1/*")) and time.time() < deadline:  # the first block is done
        time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err[-500:]
    assert "interrupted; finished blocks are kept: run the same command again to resume" in err
    rerun = subprocess.run(args, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-500:]

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

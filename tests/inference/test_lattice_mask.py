"""Grains only where the image shows its lattice (micro_sym.inference.lattice_mask), through the block engine."""

from __future__ import annotations

import numpy as np
import tifffile

from _helpers import half_lattice, read_output
from micro_sym.inference.engine import segment
from micro_sym.inference.whole_image import segment_image


def test_lattice_free_half_gets_no_grain_and_tiles_match_the_whole_image(tmp_path):
    # Left half a lattice (period 10 px), right half smooth lattice-free noise. With the mask the
    # right half is unassigned and the lattice half keeps its grain; without it the network gives
    # the noise a grain too. Small blocks: the mask's halo (16 periods) must make tiles agree with
    # the whole image.
    from micro_sym.models import load_model

    img = half_lattice((320, 448), seed=3)
    tifffile.imwrite(tmp_path / "a.tif", img)
    (res,) = segment([tmp_path / "a.tif"], tmp_path / "out", model="default-2d", block=128, chunk=64)
    assert res.status == "complete" and res.n_blocks > 4, res.error
    assert res.plan["method"]["lattice_mask"]["ring_frequency"] > 0
    grains = read_output(tmp_path / "out", "a")["grains"]
    lattice, free = grains[:, 40:180], grains[:, 270:-40]
    assert np.mean(free == 0) > 0.9 and np.mean(lattice > 0) > 0.8
    whole = segment_image(load_model("default-2d", export=True), img, period="measure")
    np.testing.assert_array_equal(grains, whole["grains"])

    (res,) = segment([tmp_path / "a.tif"], tmp_path / "all", model="default-2d", lattice_mask=False)
    assert "lattice_mask" not in res.plan["method"]
    assert np.mean(read_output(tmp_path / "all", "a")["grains"][:, 270:-40] > 0) > 0.5

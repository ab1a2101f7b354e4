"""8-bit integer inference of the 3D networks (--precision int8): exactly equivariant, close to float32,
calibrated once per input and recorded in the run, refused for other networks."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import tifffile
import torch
import zarr

from micro_sym.errors import MicroSymError
from micro_sym.inference import load_network, segment
from micro_sym.inference.int8_ranges import check_int8, int8_ranges
from micro_sym.models.normalize import intensity_range

VOLUME = "sample_data/volume/images/sample_000.tif"


def _crop(n: int) -> np.ndarray:
    return tifffile.imread(VOLUME)[:n, :n, :n]


def _same_grain(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of voxels whose grain in ``a`` is matched to their grain in ``b`` (each grain of ``a`` to
    the one it overlaps most: ids shift when one grain splits)."""
    pairs, counts = np.unique(np.stack([a.ravel(), b.ravel()]).astype(np.int64), axis=1, return_counts=True)
    best = np.zeros(int(a.max()) + 1, np.int64)
    order = np.lexsort((counts, pairs[0]))  # by grain of a, largest overlap last
    first, second = pairs[0][order], pairs[1][order]
    last = np.r_[first[1:] != first[:-1], True]
    best[first[last]] = second[last]
    return float(np.mean(best[a.ravel()] == b.ravel()))


@torch.no_grad()
@pytest.mark.parametrize("name", ["default-3d", "atoms-3d"])
def test_int8_networks_are_exact_on_all_24_cube_rotations(name):
    # Quantization keeps the G-CNN's kernel symmetry in the integer weights and the integer sums are
    # exact: only the float32 head rounds.
    from micro_sym.deploy.int8 import int8_module
    from micro_sym.models.gcnn3d import cube_grid_rotations, rotate_output, rotate_volume

    net = load_network(name)
    vol = _crop(32)
    ranges = int8_ranges(net, vol, intensity_range(vol))
    x = torch.from_numpy(net.normalize(vol.astype(np.float32), *intensity_range(vol)))[None, None]
    model = int8_module(net.module.net, ranges)
    y = model(x)
    scale = y.abs().max().item()
    for gi in range(24):
        err = (model(rotate_volume(x, cube_grid_rotations()[gi])) - rotate_output(y, gi, net.module.degrees)).abs().max().item()
        assert err < 1e-4 * max(scale, 1.0), (gi, err)


@pytest.mark.parametrize("name", ["default-3d", "atoms-3d"])
def test_int8_outputs_stay_close_to_float32(name):
    net = load_network(name)
    vol = _crop(48)
    exact = net.forward(net.normalize(vol.astype(np.float32), *intensity_range(vol))[None])
    fast = dataclasses.replace(net, precision="int8", int8_ranges=int8_ranges(net, vol, intensity_range(vol)))
    y = fast.forward(net.normalize(vol.astype(np.float32), *intensity_range(vol))[None])
    assert y.dtype == np.float32 and y.shape == exact.shape
    deviation = np.abs(y - exact).max() / np.abs(exact).max()
    assert 0 < deviation < 0.1, deviation
    assert np.mean((y[0, 0] > 0) == (exact[0, 0] > 0)) > 0.98  # the boundary where float32 puts it


def test_an_int8_run_gives_nearly_the_same_grains_and_resumes_with_its_recorded_scales(tmp_path, monkeypatch):
    from micro_sym.inference import int8_ranges as calibration

    zarr.create_array(str(tmp_path / "v.zarr"), data=_crop(64), chunks=(32, 32, 32))
    kw = dict(block=32, chunk=32, workers=1)
    grains = {}
    for precision in ("fp32", "int8"):
        (res,) = segment([tmp_path / "v.zarr"], tmp_path / precision, precision=precision, **kw)
        assert res.status == "complete", res.error
        grains[precision] = zarr.open_group(str(tmp_path / precision / "v.zarr"), mode="r")["labels/grains/0"][:]
    assert _same_grain(grains["fp32"], grains["int8"]) > 0.95
    manifest = json.loads((tmp_path / "int8" / ".v.run" / "manifest.json").read_text())
    assert manifest["model"]["precision"] == "int8" and set(manifest["int8_ranges"]) >= {"input", "enc0.0", "dec0.up"}

    class Stop(Exception):
        pass

    def stop_at_third(stage, block_id, seen=[]):
        seen.append(block_id)
        if len(seen) == 3:
            raise Stop

    with pytest.raises(Stop):
        segment([tmp_path / "v.zarr"], tmp_path / "resumed", precision="int8", on_block=stop_at_third, **kw)

    def no_calibration(*args, **kwargs):
        raise AssertionError("a resumed run must use the scales it recorded")

    monkeypatch.setattr(calibration, "int8_ranges", no_calibration)
    (res,) = segment([tmp_path / "v.zarr"], tmp_path / "resumed", precision="int8", **kw)
    assert res.status == "complete" and 0 < res.blocks_run < res.n_blocks, res.error
    resumed = zarr.open_group(str(tmp_path / "resumed" / "v.zarr"), mode="r")["labels/grains/0"][:]
    np.testing.assert_array_equal(resumed, grains["int8"])


def test_int8_is_refused_in_one_line_for_other_networks(tmp_path):
    with pytest.raises(MicroSymError, match="int8 runs 3D U-Net models only.*robust-2d"):
        check_int8(load_network("robust-2d"))
    tifffile.imwrite(tmp_path / "a.tif", np.random.default_rng(0).random((64, 64), dtype=np.float32))
    (res,) = segment([tmp_path / "a.tif"], tmp_path / "out", model="robust-2d", precision="int8")
    assert res.status == "failed" and "--precision int8 runs 3D U-Net models only" in res.error
    assert "\n" not in res.error
    with pytest.raises(MicroSymError, match="int8 runs on the CPU .* not on cuda"):
        check_int8(load_network("default-3d"), device="cuda")


def test_the_in_memory_core_calibrates_as_the_engine_does(tmp_path, monkeypatch):
    # The napari widget's core (MICRO_SYM_PRECISION=int8) takes the same crops of the same volume: the
    # same scales, so the same grains as `segment --precision int8`.
    from micro_sym.deploy.runtime import PRECISION_VAR
    from micro_sym.inference import interactive

    vol = _crop(48)
    zarr.create_array(str(tmp_path / "v.zarr"), data=vol, chunks=(16, 16, 16))
    (res,) = segment([tmp_path / "v.zarr"], tmp_path / "out", precision="int8", block=16, chunk=16)
    assert res.status == "complete", res.error
    monkeypatch.setenv(PRECISION_VAR, "int8")
    core = interactive.segment(vol, interactive.SegmentSettings(model="default-3d", tile=16))
    np.testing.assert_array_equal(core.grains, zarr.open_group(str(tmp_path / "out" / "v.zarr"), mode="r")["labels/grains/0"][:])
    assert core.n_grains >= 2

"""3D networks run at their training lattice period (micro_sym.inference.rescale3d): tiles reproduce the
whole volume, the 24 cube rotations stay exact symmetries, and a volume's measured first ring sets
the scale (through rescale.rescale_for_input, as segment, napari and segment_image call it)."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
from scipy import ndimage

warnings.filterwarnings("ignore", message=".*py3nj.*")

from micro_sym.inference.blocks import plan_blocks  # noqa: E402
from micro_sym.inference.network import as_network, load_network  # noqa: E402
from micro_sym.inference.rescale import RescaledNetwork, adapt_to_image, rescale_for_input  # noqa: E402
from micro_sym.inference.rescale3d import model_period_3d  # noqa: E402
from micro_sym.inference.tiles import iter_tiles, predict_raw  # noqa: E402
from micro_sym.models.normalize import intensity_range  # noqa: E402


@pytest.fixture(scope="module")
def net():
    """A small randomly initialized octahedral G-CNN (one regular field, l = 4 head, stride 2)."""
    import torch

    from micro_sym.models.gcnn3d import build_model3d

    torch.manual_seed(0)
    return as_network(build_model3d({"variant": "octa", "width": 24, "levels": 2}, measure_halo=False))


def _volume(shape, seed=0):
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.standard_normal(shape), 1.0).astype(np.float32)


@pytest.mark.parametrize("scale, shape", [(1.5, (56, 60, 64)), (0.75, (40, 96, 96))])
def test_tiles_reproduce_the_whole_volume(net, scale, shape):
    vol = _volume(shape)
    rn = RescaledNetwork(net, scale, vol.shape)  # what the engine's workers build
    assert isinstance(rn, RescaledNetwork)
    whole = predict_raw(rn, vol)
    value_range = intensity_range(vol)

    def tiled(halo):
        plan = plan_blocks(vol.shape, 32, halo=halo, stride=1, chunk=(16, 16, 16))
        assert len(plan.blocks) >= 8 and any(t < s for t, s in zip(plan.max_tile_shape, shape))
        out = np.zeros_like(whole)
        for t in iter_tiles(rn, plan.blocks, lambda b: vol[b.tile], value_range=value_range,
                            pad_mode=plan.pad_mode, decode=False):
            out[(slice(None), *t.block.core)] = t.core_outputs
        return np.abs(out - whole).max()

    assert tiled(rn.halo) < 1e-5 * np.abs(whole).max()
    assert tiled(rn.halo // 3) > 1e-2 * np.abs(whole).max()  # the halo matters: a short one is detectably wrong


@pytest.mark.parametrize("scale", [0.7, 1.5])
def test_rescaled_network_is_exactly_equivariant_under_the_cube_rotations(net, scale):
    # A cubic volume: every axis has the same global grid (an even number of samples, padding split
    # equally), which the 24 grid rotations map onto itself. Outputs move with the volume and the
    # l = 4 coefficients turn by ρ(g); resampling acts on each channel alone, so it commutes with ρ(g).
    import torch

    from micro_sym.models.gcnn3d import cube_grid_rotations, rotate_output, rotate_volume

    vol = _volume((32, 32, 32), seed=1)
    rn = RescaledNetwork(net, scale, vol.shape)
    y = predict_raw(rn, vol)
    tol = 1e-4 * np.abs(y).max()
    for gi, rot in enumerate(cube_grid_rotations()):
        y_g = predict_raw(rn, np.ascontiguousarray(rotate_volume(vol, rot)))
        expected = rotate_output(torch.from_numpy(y[None]), gi).numpy()[0]
        assert np.abs(y_g - expected).max() < tol, gi


def test_scale_from_the_measured_first_ring(net):
    from micro_sym.synth import Synth3DConfig, synth_3d

    vol = synth_3d(Synth3DConfig(size=(64, 64, 64), period=9.0, microstructure={"grain_size": 30.0}), seed=0).volume
    trained = dataclasses.replace(net, lattice_period=6.0)
    rn, record = rescale_for_input(trained, vol)
    assert isinstance(rn, RescaledNetwork) and record["source"] == "measured" and record["resampled"]
    assert record["scale"] == pytest.approx(6.0 / 9.0, rel=0.03) and rn.scale == record["scale"]
    # adapt_to_image (segment, napari, segment_image) does the same and masks nothing in 3D.
    rn2, record2, ring = adapt_to_image(trained, vol)
    assert isinstance(rn2, RescaledNetwork) and record2 == record and ring is None
    # Given period; within 5 % of the model's: unresampled; a resume reuses the recorded scale.
    assert rescale_for_input(trained, vol, period=12.0)[1]["scale"] == pytest.approx(0.5)
    same, rec = rescale_for_input(trained, vol, period=6.2)
    assert same is trained and rec["resampled"] is False
    again, rec = rescale_for_input(trained, vol, previous={"method": {"scale": record}})
    assert again.scale == rn.scale and rec["source"] == "measured"
    # Noise has no ring: the network runs at the volume's own sampling; no known period: no record.
    same, rec = rescale_for_input(trained, _volume((48, 48, 48)))
    assert same is trained and rec["source"] == "unmeasured" and not rec["resampled"] and rec["reason"]
    assert rescale_for_input(net, vol) == (net, None)


def test_grain_rule_lengths_are_in_model_voxels(net):
    # A volume at 1.5 times the model's period runs at scale 2/3: its maps come back on a grid 1.5 times
    # finer than the model's, so the seeded rule's core radius and flood steps, chosen at the model's
    # sampling, are 1.5 times as many input voxels (design.md §3.2), as in 2D.
    from micro_sym.grains.rules import network_rule

    rule = network_rule(5.0, 3)
    scaled = RescaledNetwork(net, 2.0 / 3.0, (48, 48, 48)).grain_rule(5.0, 3)
    assert scaled["core_radius"] == pytest.approx(1.5 * rule["core_radius"])
    assert scaled["steps"] == round(1.5 * rule["steps"]) and scaled["reach"] == rule["reach"] == 0
    assert RescaledNetwork(net, 1.0, (48, 48, 48)).grain_rule(5.0, 3) == rule


def test_evaluate_applies_the_resampled_run_s_grain_rule(net, monkeypatch):
    # micro-sym evaluate (3D) builds grains as segment does: with the resampled network's rule.
    from micro_sym.training.train3d import network_grains

    seen = []
    shipped = RescaledNetwork.grain_rule
    monkeypatch.setattr(RescaledNetwork, "grain_rule", lambda self, t, nd: seen.append(self.scale) or shipped(self, t, nd))
    network_grains(dataclasses.replace(net, lattice_period=6.0), _volume((32, 32, 32)), period=9.0)
    assert seen == [pytest.approx(6.0 / 9.0)]


def test_default_3d_training_period():
    # default-3d's file records the 6-voxel period of the simple-cubic volumes it was trained on.
    assert model_period_3d(load_network("default-3d")) == 6.0


def test_segment_measures_and_resamples_a_volume(tmp_path):
    # The block engine as `micro-sym segment volume.tif` runs it: the driver measures the first ring
    # (rescale.adapt_to_image), the workers rebuild the wrapper from the job's scale. default-3d
    # (trained at 6 voxels) on a 9-voxel volume: without resampling it finds no grain at all (96³).
    import tifffile

    from micro_sym.inference.engine import segment
    from micro_sym.synth import Synth3DConfig, synth_3d

    tifffile.imwrite(tmp_path / "v.tif", synth_3d(Synth3DConfig(size=(64, 64, 64), period=9.0), seed=0).volume)
    (r,) = segment([tmp_path / "v.tif"], tmp_path / "out", model="default-3d", block=32)
    assert r.status == "complete", r.error
    scale = r.plan["method"]["scale"]
    assert scale["source"] == "measured" and scale["resampled"] and scale["model_period_px"] == 6.0
    assert scale["scale"] == pytest.approx(6.0 / 9.0, rel=0.03)
    assert r.n_grains > 0
    # What `segment` prints for it: the first ring's spacing in voxels, not a 2D lattice in px.
    from micro_sym.cli.segment import _scale_line

    line = _scale_line(scale)
    assert "voxels" in line and " px" not in line and "resampled x0.6" in line


def test_network_runs_in_parts_on_large_tiles(net):
    # An up-sampled tile runs through the network in parts of `part` samples plus the network's
    # halo (bounded memory): the same outputs as one call.
    vol = _volume((40, 44, 48), seed=2)
    one = predict_raw(RescaledNetwork(net, 1.5, vol.shape), vol)
    parts = predict_raw(RescaledNetwork(net, 1.5, vol.shape, part=16), vol)
    assert np.abs(parts - one).max() < 1e-5 * np.abs(one).max()


def test_memory_estimate_counts_the_resampled_tile(net):
    # An up-sampled block holds scale³ times its voxels in the resampled input and output; the
    # network's activations are bounded by its parts. The plan's estimate must count both.
    from micro_sym.inference.blocks import estimate_memory

    plan = plan_blocks((512, 512, 512), 128, halo=8, stride=1, chunk=(128, 128, 128))
    up = RescaledNetwork(net, 2.0, (512, 512, 512), part=64)
    tile, call = up.samples(plan.max_tile_shape)
    assert tile > 7.9 * np.prod(plan.max_tile_shape) and call == (64 + 2 * net.halo) ** 3
    est = estimate_memory(plan, out_channels=net.out_channels, width=net.width, resampled=(tile, call))
    # Resampled input and outputs over 8× the voxels, activations over one part only.
    assert est > tile * 4 * (1 + net.out_channels)
    parts_bound = estimate_memory(plan, out_channels=net.out_channels, width=net.width, resampled=(tile, tile))
    assert est < parts_bound

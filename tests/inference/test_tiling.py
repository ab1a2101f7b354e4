"""Tiled inference equals whole-image inference with a halo of exactly the receptive field.

The networks here have a halo equal to their *measured* receptive field (a gradient probe over every
output position modulo the stride), not a generous multiple of it, so a planner that gives tiles
less context than the halo changes the maps. The bundled models run the same check on small inputs.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import tifffile
import torch
import zarr
from torch import nn

from micro_sym.inference import as_network, plan_blocks, predict_array, segment
from micro_sym.inference.whole_image import segment_image

from _helpers import read_output, smooth_image

warnings.filterwarnings("ignore", message=".*py3nj.*")


def receptive_field(module: nn.Module, ndim: int, stride: int, side: int = 96) -> int:
    """Largest distance from an output point to an input point that changes it, over every output
    position modulo ``stride`` (gradient probe; weights and biases as they are)."""
    x = torch.zeros((1, 1) + (side,) * ndim, requires_grad=True)
    y = module(x)
    radius = 0
    centre = side // 2
    for offset in range(stride):
        p = (centre + offset,) * ndim
        (grad,) = torch.autograd.grad(y[(0, slice(None), *p)].sum(), x, retain_graph=True)
        hit = np.argwhere(grad[0, 0].abs().numpy() > 0)
        radius = max(radius, int(np.abs(hit - np.array(p)).max()))
    assert radius < centre - stride, "probe too small for this network"
    return radius


class Strided2D(nn.Module):
    """Convolutions at strides 1, 2 and 4 (average pooling), nearest upsampling back: total stride 4.
    Outputs (boundary logit, cos kθ, sin kθ) with fixed random weights."""

    ndim, k, total_stride = 2, 4, 4
    config = {"arch": "strided2d"}

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.net = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.Tanh(), nn.AvgPool2d(2),
                                 nn.Conv2d(6, 6, 3, padding=1), nn.Tanh(), nn.AvgPool2d(2),
                                 nn.Conv2d(6, 6, 3, padding=1), nn.Tanh(), nn.Upsample(scale_factor=4),
                                 nn.Conv2d(6, 3, 3, padding=1))
        self.halo = receptive_field(self.net, 2, self.total_stride)

    def forward(self, x):
        return self.net(x)


class Strided3D(nn.Module):
    """The 3D counterpart (total stride 2) with a quaternion head."""

    ndim, k, total_stride = 3, 24, 2
    orientation_encoding, normalization = "quaternion", "unit"
    config = {"arch": "strided3d"}

    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.net = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.Tanh(), nn.AvgPool3d(2),
                                 nn.Conv3d(4, 4, 3, padding=1), nn.Tanh(), nn.Upsample(scale_factor=2),
                                 nn.Conv3d(4, 5, 3, padding=1))
        self.halo = receptive_field(self.net, 3, self.total_stride, side=40)

    def forward(self, x):
        return self.net(x)


@pytest.mark.parametrize("stride", [1, 2, 4, 8, 16])
def test_planned_halo_is_the_smallest_stride_multiple_covering_the_receptive_field(stride):
    for halo in range(0, 3 * stride + 2):
        got = plan_blocks((200, 200), 64 if stride < 16 else 128, halo=halo, stride=stride).halo
        assert got % stride == 0 and halo <= got < halo + stride, (halo, stride, got)


def test_2d_maps_and_grains_with_a_halo_of_exactly_the_receptive_field(tmp_path):
    model = Strided2D()
    assert model.halo % model.total_stride != 0  # so the planner's rounding is exercised
    img = smooth_image((150, 131), seed=4)
    tifffile.imwrite(tmp_path / "a.tif", img)
    net = as_network(model)
    ref = predict_array(net, img)
    threshold = float(np.quantile(np.abs(np.diff(ref["orientation"], axis=1)), 0.9))  # real decisions
    whole = segment_image(model, img, threshold=threshold, min_size=3)
    assert whole["grains"].max() >= 5
    (res,) = segment([tmp_path / "a.tif"], tmp_path / "out", model=net, block=32, chunk=32, threshold=threshold,
                     min_size=3)
    assert res.status == "complete" and res.n_blocks == 25
    out = read_output(tmp_path / "out", "a")
    np.testing.assert_allclose(out["boundary"], ref["boundary"], atol=1e-5)
    d = np.abs(out["orientation"] - ref["orientation"])
    assert np.minimum(d, 90 - d).max() < 1e-3
    np.testing.assert_array_equal(out["grains"], whole["grains"])


def test_3d_maps_with_a_halo_of_exactly_the_receptive_field(tmp_path):
    model = Strided3D()
    vol = smooth_image((30, 34, 26), seed=5, sigma=2.0)
    zarr.create_array(str(tmp_path / "v.zarr"), data=vol, chunks=(16, 16, 16))
    net = as_network(model)
    ref = predict_array(net, vol)
    (res,) = segment([tmp_path / "v.zarr"], tmp_path / "out", model=net, block=16, chunk=16, threshold=20.0,
                     min_size=3)
    assert res.status == "complete" and res.n_blocks == 12
    out = read_output(tmp_path / "out", "v")
    np.testing.assert_allclose(out["boundary"], ref["boundary"], atol=1e-5)
    np.testing.assert_allclose(np.abs((out["orientation"] * ref["orientation"]).sum(0)), 1.0, atol=1e-5)


@pytest.mark.parametrize("name", ["default-2d", "robust-2d"])
def test_bundled_2d_models_tiled_equal_whole_image(tmp_path, name):
    from micro_sym.models import load_model

    img = tifffile.imread("sample_data/micrographs/images/sample_000.tif")[:256, :192]
    tifffile.imwrite(tmp_path / "a.tif", img)
    model = load_model(name, export=True)
    whole = segment_image(model, img, period="measure")  # as the engine runs it: lattice measured
    (res,) = segment([tmp_path / "a.tif"], tmp_path / "out", model=as_network(model, name=name), block=64, chunk=64)
    assert res.status == "complete" and res.n_blocks == 12
    out = read_output(tmp_path / "out", "a")
    np.testing.assert_allclose(out["boundary"], whole["boundary"], atol=1e-4)
    np.testing.assert_array_equal(out["grains"], whole["grains"])


def test_bundled_3d_model_tiled_equals_whole_volume(tmp_path):
    """Grains from the harmonic field and each grain's decoded mean (the default), block by block, equal
    the whole volume's; with --voxel-orientations the map is every voxel's decode, the grains the same."""
    from micro_sym.grains.field import grain_orientations, paint
    from micro_sym.grains.rules import grains_by_rule, network_rule
    from micro_sym.inference.tiles import predict_raw, rule_maps
    from micro_sym.inference.whole_image import DEFAULT_MIN_SIZE
    from micro_sym.models import load_model

    vol = tifffile.imread("sample_data/volume/images/sample_000.tif")[:24, :32, :32]
    zarr.create_array(str(tmp_path / "v.zarr"), data=vol, chunks=(16, 16, 16))
    net = as_network(load_model("default-3d"), name="default-3d")
    raw = predict_raw(net, vol)
    whole = rule_maps(net, raw)
    grains = grains_by_rule(whole["orientation"], whole["boundary"], network_rule(5.0, 3), symmetry="cubic",
                            min_size=DEFAULT_MIN_SIZE)
    assert whole["orientation"].shape == (9,) + vol.shape and grains.max() >= 2
    (res,) = segment([tmp_path / "v.zarr"], tmp_path / "out", model=net, block=16, chunk=16, measure_grains=False)
    assert res.status == "complete" and res.n_blocks == 8
    out = read_output(tmp_path / "out", "v")
    np.testing.assert_allclose(out["boundary"], whole["boundary"], atol=1e-4)
    np.testing.assert_array_equal(out["grains"], grains)
    painted = paint(grains, grain_orientations(whole["orientation"], grains, (4,)))
    in_grain = grains > 0
    assert np.isnan(out["orientation"][:, ~in_grain]).all()
    assert (np.abs((out["orientation"] * painted).sum(0))[in_grain] > 1 - 1e-6).all()

    (res,) = segment([tmp_path / "v.zarr"], tmp_path / "voxels", model=net, block=16, chunk=16, measure_grains=False,
                     voxel_orientations=True)
    voxels = read_output(tmp_path / "voxels", "v")
    np.testing.assert_array_equal(voxels["grains"], grains)
    # Per-voxel decodes of outputs equal to float rounding: the same orientation, up to which cubic
    # equivalent the fit lands on.
    from micro_sym.orientation import misorientation_cubic

    voxel_q, whole_q = (np.moveaxis(q, 0, -1).reshape(-1, 4) for q in (voxels["orientation"], net.decode(raw)["orientation"]))
    assert misorientation_cubic(voxel_q, whole_q).max() < 0.1

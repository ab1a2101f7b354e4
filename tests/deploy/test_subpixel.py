"""The 3D runtime's split decoder convolutions (micro_sym.deploy.subpixel): the deployed U-Net's function,
exactly equivariant on all 24 cube rotations, used by the channels-last runner."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F

from micro_sym.deploy.runtime import CpuRunner
from micro_sym.deploy.subpixel import SubpixelUNet3D, _ConvReLU3d, _fused_op, _SplitDecoderConv, splittable
from micro_sym.models import load_model
from micro_sym.models.gcnn3d import cube_grid_rotations, rotate_output, rotate_volume

warnings.filterwarnings("ignore", message=".*py3nj.*")


def _rel_err(a, b):
    return float((a - b).abs().max() / max(1.0, b.abs().max()))


def test_split_convolution_of_an_upsampled_signal_is_exact():
    """conv(cat(skip, nearest×2(coarse))) in float64, for odd and even coarse sizes and every border."""
    g = torch.Generator().manual_seed(0)
    conv = torch.nn.Conv3d(5 + 7, 4, 3, padding=1).double()
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g, dtype=torch.float64))
    split = _SplitDecoderConv(conv, 5).double()
    for coarse_shape in ((3, 4, 5), (1, 2, 1)):
        coarse = torch.randn((2, 7, *coarse_shape), generator=g, dtype=torch.float64)
        skip = torch.randn((2, 5, *(2 * n for n in coarse_shape)), generator=g, dtype=torch.float64)
        with torch.no_grad():
            ref = conv(torch.cat([skip, F.interpolate(coarse, scale_factor=2, mode="nearest")], 1))
            got = split(skip, coarse)
        assert (got - ref).abs().max() < 1e-12 * ref.abs().max()


@pytest.mark.parametrize("name", ["default-3d", "atoms-3d"])
def test_bundled_3d_networks_split_equal_the_deployed_unet(name):
    unet = load_model(name).net
    assert splittable(unet)
    fast = SubpixelUNet3D(unet).eval()
    if _fused_op() is not None:  # each convolution that a ReLU follows runs fused
        assert sum(isinstance(m, _ConvReLU3d) for m in fast.modules()) == 5
    x = torch.rand((2, 1, 22, 16, 18), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert _rel_err(fast(x), unet(x)) < 1e-5


def test_channels_last_runner_is_equivariant_on_all_24_rotations():
    model = load_model("default-3d")
    runner = CpuRunner(model.net, 3, "channels-last")
    assert isinstance(runner._module, SubpixelUNet3D)
    x = torch.rand((1, 1, 20, 20, 20), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y = runner(x)
        for index, rot in enumerate(cube_grid_rotations()):
            err = _rel_err(runner(rotate_volume(x, rot).contiguous()), rotate_output(y, index, model.degrees))
            assert err < 1e-5, (index, err)


def test_other_upsampling_is_left_as_it_is():
    unet = load_model("default-3d").net
    trilinear = copy.deepcopy(unet)
    trilinear.ups[0] = torch.nn.Upsample(scale_factor=2, mode="trilinear")
    assert not splittable(trilinear) and not splittable(torch.nn.Conv3d(1, 1, 3))
    runner = CpuRunner(trilinear, 3, "channels-last")
    assert not isinstance(runner._module, SubpixelUNet3D)
    x = torch.rand((1, 1, 8, 8, 8))
    with torch.no_grad():
        assert _rel_err(runner(x), trilinear(x)) < 1e-5

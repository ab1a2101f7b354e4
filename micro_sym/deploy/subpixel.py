"""The deployed U-Net with its decoders' first convolution split, for fast 3D inference on a CPU.

Each decoder level of :class:`~micro_sym.deploy.export.DeployedUNet` upsamples the coarser features by
nearest-neighbour ×2, concatenates them with the skip and convolves (3 × 3 × 3, zero padding 1). That
convolution is linear in its input channels, so it is the sum of one over the skip channels and one
over the upsampled channels; and a 3-tap convolution of a nearest-upsampled signal is, at each of the
two output parities of an axis, a 2-tap convolution of the coarse signal with summed taps (parity 0
sees coarse offsets −1, 0 with taps ``w₋₁``, ``w₀ + w₁``; parity 1 sees 0, +1 with ``w₋₁ + w₀``,
``w₁``; zero padding maps to zero padding on the coarse grid, as the fine size is twice the coarse).
In 3D that is 8 convolutions of 2³ taps on the coarse grid instead of 27 taps on the fine one:
default-3d's upsampled branch costs 3.4 times fewer multiply-adds (a quarter of the network's), and
neither the upsampled features nor their concatenation with the skip exist at full resolution, which
were the largest tensors of a forward (docs/design.md §5, "The 3D forward: split decoder convolutions").

Each 3³ convolution followed by a ReLU also runs as one oneDNN call with the ReLU fused
(``torch.ops.mkldnn._convolution_pointwise``, where torch has it), which saves a separate in-place
pass over each activation; the fused call gives the same bits.

The function is the same; sums are ordered differently, so outputs agree to float rounding
(tests/deploy/test_subpixel.py).
"""

from __future__ import annotations

import functools
import itertools

import torch
import torch.nn.functional as F
from torch import nn

#: Kernel indices (of 0, 1, 2 for offsets −1, 0, +1) summed into each coarse tap, per output parity.
_TAPS = {0: ((0,), (1, 2)), 1: ((0, 1), (2,))}


def splittable(unet: nn.Module) -> bool:
    """Whether every decoder of a deployed 3D U-Net upsamples nearest ×2 into a 3³ convolution with
    padding 1, stride 1 and no dilation (the form :class:`SubpixelUNet3D` rewrites)."""
    if not all(hasattr(unet, a) for a in ("enc", "pre", "ups", "decs", "head")) or not len(unet.ups):
        return False
    for up, dec in zip(unet.ups, unet.decs):
        conv = dec[0] if isinstance(dec, nn.Sequential) and len(dec) else None
        if not (isinstance(up, nn.Upsample) and up.mode == "nearest" and _factor_two(up.scale_factor)
                and isinstance(conv, nn.Conv3d) and tuple(conv.kernel_size) == (3, 3, 3)
                and tuple(conv.padding) == (1, 1, 1) and tuple(conv.stride) == (1, 1, 1)
                and tuple(conv.dilation) == (1, 1, 1) and conv.groups == 1 and conv.padding_mode == "zeros"):
            return False
    return True


def _factor_two(scale) -> bool:
    scales = scale if isinstance(scale, (tuple, list)) else (scale,)
    return all(float(s) == 2.0 for s in scales)


class _SplitDecoderConv(nn.Module):
    """``conv(cat(skip, upsample(coarse)))`` computed as a skip convolution plus 8 coarse parity convolutions."""

    def __init__(self, conv: nn.Conv3d, skip_channels: int):
        super().__init__()
        w = conv.weight.detach()
        self.skip = nn.Conv3d(skip_channels, conv.out_channels, 3, padding=1, bias=conv.bias is not None, dtype=w.dtype)
        self.skip.weight.data.copy_(w[:, :skip_channels])
        if conv.bias is not None:
            self.skip.bias.data.copy_(conv.bias.detach())
        coarse = w[:, skip_channels:]
        parts = []
        for parity in itertools.product((0, 1), repeat=3):
            tap = torch.zeros(coarse.shape[:2] + (2, 2, 2), dtype=w.dtype)
            for a, b, c in itertools.product((0, 1), repeat=3):
                groups = [_TAPS[p][t] for p, t in zip(parity, (a, b, c))]
                tap[:, :, a, b, c] = sum(coarse[:, :, i, j, k] for i in groups[0] for j in groups[1] for k in groups[2])
            parts.append(tap)
        # One convolution gives every parity: (8 × out) channels, 2³ taps over the coarse grid padded by 1.
        self.register_buffer("parity_weights", torch.cat(parts))

    def forward(self, skip: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        y = self.skip(skip)
        out = y.shape[1]
        n = coarse.shape[2:]
        # Output j of the padded convolution reads coarse j - 1 and j: parity 0 of fine voxel 2i needs
        # coarse i - 1, i (output i), parity 1 of 2i + 1 needs i, i + 1 (output i + 1).
        parts = F.conv3d(F.pad(coarse, (1, 1, 1, 1, 1, 1)), self.parity_weights.to(coarse.dtype))
        for index, (pz, py, px) in enumerate(itertools.product((0, 1), repeat=3)):
            y[:, :, pz::2, py::2, px::2] += parts[:, index * out:(index + 1) * out, pz:pz + n[0], py:py + n[1], px:px + n[2]]
        return y


@functools.cache
def _fused_op():
    """oneDNN's convolution with a fused pointwise op, or None where this torch build lacks it."""
    ops = getattr(torch.ops, "mkldnn", None)
    try:
        return ops._convolution_pointwise if ops is not None and torch.backends.mkldnn.is_available() else None
    except (AttributeError, RuntimeError):
        return None


class _ConvReLU3d(nn.Module):
    """``relu(conv(x))`` as one oneDNN call, in the autocast dtype when autocast is on (the fused op is
    not autocast-aware, so its inputs are cast here as autocast would cast a convolution's)."""

    def __init__(self, conv: nn.Conv3d):
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.conv
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype
        bias = c.bias.to(dtype) if c.bias is not None else None
        return _fused_op()(x.to(dtype), c.weight.to(dtype), bias, list(c.padding), list(c.stride), list(c.dilation),
                           c.groups, "relu", [], "")


def _fuse(block: nn.Module) -> nn.Module:
    """``block`` with each zero-padded Conv3d that a ReLU follows replaced by :class:`_ConvReLU3d`."""
    if _fused_op() is None:
        return block
    layers = list(block) if isinstance(block, nn.Sequential) else [block]
    out, i = [], 0
    while i < len(layers):
        layer, after = layers[i], layers[i + 1] if i + 1 < len(layers) else None
        if isinstance(layer, nn.Conv3d) and isinstance(after, nn.ReLU) and layer.padding_mode == "zeros":
            out.append(_ConvReLU3d(layer))
            i += 2
        else:
            out.append(layer)
            i += 1
    return nn.Sequential(*out)


class SubpixelUNet3D(nn.Module):
    """A deployed 3D U-Net (:class:`~micro_sym.deploy.export.DeployedUNet`) computed with split decoder
    convolutions (module docstring); same layers otherwise, same outputs to float rounding."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        if not splittable(unet):
            raise ValueError("not a deployed 3D U-Net with nearest ×2 upsampling into 3³ convolutions")
        self.enc = nn.ModuleList(_fuse(block) for block in unet.enc)
        self.pre, self.head = unet.pre, unet.head
        splits, rests = [], []
        for level, dec in enumerate(unet.decs):
            skip_channels = _skip_channels(unet, len(unet.decs) - 1 - level)
            splits.append(_SplitDecoderConv(dec[0], skip_channels))
            rests.append(_fuse(nn.Sequential(*list(dec)[1:])))
        self.splits, self.rests = nn.ModuleList(splits), nn.ModuleList(rests)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips: list[torch.Tensor] = []
        for pre, block in zip(self.pre, self.enc):
            x = block(pre(x))
            skips.append(x)
        skips.pop()  # the bottleneck is not a skip
        for split, rest in zip(self.splits, self.rests):
            x = rest(split(skips.pop(), x))
        return self.head(x)


def _skip_channels(unet: nn.Module, level: int) -> int:
    """Output channels of encoder ``level`` (the skip its decoder concatenates first)."""
    convs = [m for m in unet.enc[level].modules() if isinstance(m, nn.Conv3d)]
    return int(convs[-1].out_channels)

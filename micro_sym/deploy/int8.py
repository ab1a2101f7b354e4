"""A deployed 3D U-Net in 8-bit integers, for fast CPU inference (``--precision int8``; docs/design.md §2.4).

Why: a 3D network's forward is almost all 3³ convolutions, and on a CPU without bfloat16 units (no
AMX, no AVX-512 BF16) float32 is the fastest float arithmetic. Integer convolutions (u8 × s8 summed
in int32, AVX-512 VNNI where the CPU has it) ran default-3d's forward 2.1-2.7 times faster than
float32 on such a CPU (docs/results.md).

How: every activation the network holds between layers is quantized per tensor (one scale and zero
point each) to 7 bits, 0..127, and every convolution's weights per tensor to int8 (scale
``max |w| / 127``, zero point 0). Seven bits: a u8 × s8 product pair then fits the int16 that some x86
kernels sum pairs in, so no sum saturates on any CPU. The decoders' first convolution runs as a
convolution of the skip plus one of the upsampled features, added in the integer domain (the same
function without concatenating them at full resolution). The head (1³, a few output channels whose
harmonic fields do not rotate by permutations) stays float32.

Equivariance: per-tensor quantization maps equal values to equal values, so the weights keep the
symmetry of the octahedral G-CNN's kernels (each rotated filter is a permutation of another), the
integer sums are exact, and rounding is elementwise: rotating the input rotates every integer
activation the same way. Outputs are exact on all 24 cube rotations to the float32 head's rounding
(tests/deploy/test_int8.py). They are not float32's: the activations lose their low bits.

Scales come from the network's own float32 activations on crops of the input (:func:`activation_ranges`),
computed once per input (the engine records them in the run's manifest, so that every tile and a
resumed run use the same). torch's quantized tensors are deprecated upstream but present in the
pinned torch.
"""

from __future__ import annotations

import threading
import warnings

import torch
import torch.nn.functional as F
from torch import nn

#: Activation levels: 7 bits (see the module docstring).
LEVELS = 127
_CACHE: dict = {}
_LOCK = threading.Lock()


def quantizable(module: nn.Module) -> bool:
    """Whether ``module`` is a deployed 3D U-Net this module runs in int8: Conv3d/ReLU blocks, max
    pooling, nearest ×2 upsampling into decoders whose first layer is a 3³ convolution, a Conv3d head."""
    unet = getattr(module, "net", module)
    if not all(hasattr(unet, a) for a in ("enc", "pre", "ups", "decs", "head")) or not isinstance(unet.head, nn.Conv3d):
        return False
    blocks = list(unet.enc) + list(unet.decs)
    layers_ok = all(isinstance(m, (nn.Conv3d, nn.ReLU)) for b in blocks for m in b)
    pools_ok = all(isinstance(p, (nn.Identity, nn.MaxPool3d)) for p in unet.pre)
    ups_ok = all(isinstance(u, nn.Upsample) and u.mode == "nearest" and float(u.scale_factor) == 2.0 for u in unet.ups)
    return layers_ok and pools_ok and ups_ok and all(isinstance(d[0], nn.Conv3d) for d in unet.decs)


def _convs(block) -> list:
    """``(conv, followed_by_relu)`` for each Conv3d of a Sequential block."""
    layers = list(block)
    return [(m, i + 1 < len(layers) and isinstance(layers[i + 1], nn.ReLU))
            for i, m in enumerate(layers) if isinstance(m, nn.Conv3d)]


def _skip_channels(unet, level: int) -> int:
    """Channels of the skip that decoder ``level`` concatenates before its upsampled features."""
    return _convs(unet.enc[len(unet.enc) - 2 - level])[-1][0].out_channels


@torch.inference_mode()
def activation_ranges(module: nn.Module, crops) -> dict:
    """``{name: (min, max)}`` of every tensor the int8 network quantizes, over float32 forwards of
    ``crops`` (each ``(1, 1, z, y, x)``, normalized as the network's input)."""
    unet = getattr(module, "net", module)
    ranges: dict = {}

    def seen(name, t):
        lo, hi = float(t.min()), float(t.max())
        old = ranges.get(name, (lo, hi))
        ranges[name] = (min(old[0], lo), max(old[1], hi))

    for x in crops:
        seen("input", x)
        h, skips = x, []
        for level, (pre, block) in enumerate(zip(unet.pre, unet.enc)):
            h = pre(h)
            for j, (conv, relu) in enumerate(_convs(block)):
                h = conv(h)
                h = F.relu(h) if relu else h
                seen(f"enc{level}.{j}", h)
            skips.append(h)
        skips.pop()
        for level, (up, dec) in enumerate(zip(unet.ups, unet.decs)):
            (first, relu), *rest = _convs(dec)
            n = _skip_channels(unet, level)
            a = F.conv3d(skips.pop(), first.weight[:, :n], first.bias, padding=first.padding)
            b = F.conv3d(up(h), first.weight[:, n:], None, padding=first.padding)
            seen(f"dec{level}.skip", a)
            seen(f"dec{level}.up", b)
            h = F.relu(a + b) if relu else a + b
            seen(f"dec{level}.0", h)
            for j, (conv, relu) in enumerate(rest):
                h = conv(h)
                h = F.relu(h) if relu else h
                seen(f"dec{level}.{j + 1}", h)
    return ranges


def _qparams(lo: float, hi: float) -> tuple[float, int]:
    """Scale and zero point mapping ``[lo, hi]`` (widened to hold 0) onto 0..LEVELS."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    scale = max(hi - lo, 1e-8) / LEVELS
    return scale, int(round(-lo / scale))


def _quantized_conv(conv: nn.Conv3d, relu: bool, out_range, part: slice | None = None, bias: bool = True):
    """``conv`` (over its input channels ``part``; with its bias unless ``bias`` is False) in int8,
    followed by a ReLU if ``relu``, its output quantized to ``out_range``."""
    import torch.ao.nn.intrinsic.quantized as nniq
    import torch.ao.nn.quantized as nnq

    weight = conv.weight.detach()[:, part or slice(None)].contiguous()
    kind = nniq.ConvReLU3d if relu else nnq.Conv3d
    scale = float(weight.abs().max()) / 127 or 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # quantized tensor creation warns that it is deprecated upstream
        q = kind(weight.shape[1], weight.shape[0], conv.kernel_size, stride=conv.stride, padding=conv.padding)
        q.set_weight_bias(torch.quantize_per_tensor(weight, scale, 0, torch.qint8),
                          conv.bias.detach() if bias and conv.bias is not None else None)
    q.scale, q.zero_point = _qparams(*out_range)
    return q


class Int8UNet3D(nn.Module):
    """The int8 form of a deployed 3D U-Net (:func:`quantizable`), with activation scales from
    ``ranges`` (:func:`activation_ranges`); ``forward`` takes and returns float32 ``(B, 1, z, y, x)``
    -> ``(B, C, z, y, x)``."""

    def __init__(self, module: nn.Module, ranges: dict):
        super().__init__()
        unet = getattr(module, "net", module)
        torch.backends.quantized.engine = "x86"
        self.pools = [None if isinstance(p, nn.Identity) else p for p in unet.pre]
        self.input_q = _qparams(*ranges["input"])
        self.enc = nn.ModuleList(
            nn.ModuleList(_quantized_conv(conv, relu, ranges[f"enc{level}.{j}"]) for j, (conv, relu) in enumerate(_convs(block)))
            for level, block in enumerate(unet.enc))
        self.firsts, self.adds, self.decs = nn.ModuleList(), [], nn.ModuleList()
        for level, dec in enumerate(unet.decs):
            (first, relu), *rest = _convs(dec)
            n = _skip_channels(unet, level)
            skip = _quantized_conv(first, False, ranges[f"dec{level}.skip"], slice(0, n))
            upsampled = _quantized_conv(first, False, ranges[f"dec{level}.up"], slice(n, None), bias=False)
            self.firsts.append(nn.ModuleList([skip, upsampled]))
            self.adds.append((*_qparams(*ranges[f"dec{level}.0"]), relu))
            self.decs.append(nn.ModuleList(_quantized_conv(conv, r, ranges[f"dec{level}.{j + 1}"])
                                           for j, (conv, r) in enumerate(rest)))
        self.head = unet.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale, zero = self.input_q
        q = torch.quantize_per_tensor(x.float().contiguous(memory_format=torch.channels_last_3d), scale, zero, torch.quint8)
        skips = []
        for pool, convs in zip(self.pools, self.enc):
            if pool is not None:
                q = F.max_pool3d(q, pool.kernel_size, pool.stride, pool.padding)
            for conv in convs:
                q = conv(q)
            skips.append(q)
        skips.pop()
        for (skip, upsampled), (scale, zero, relu), convs in zip(self.firsts, self.adds, self.decs):
            up = F.interpolate(q, scale_factor=2.0, mode="nearest")
            add = torch.ops.quantized.add_relu if relu else torch.ops.quantized.add
            q = add(skip(skips.pop()), upsampled(up), scale, zero)
            for conv in convs:
                q = conv(q)
        return self.head(q.dequantize()).contiguous()


def int8_module(module: nn.Module, ranges: dict) -> Int8UNet3D:
    """:class:`Int8UNet3D` of ``module`` with ``ranges``, built once per module and ranges per process."""
    key = (id(module), tuple(sorted((k, tuple(v)) for k, v in ranges.items())))
    with _LOCK:
        built = _CACHE.get(key)
        if built is None or built[0]() is not module:
            import weakref

            built = (weakref.ref(module), Int8UNet3D(module, ranges).eval())
            _CACHE[key] = built
        return built[1]

"""An int8 network's activation ranges (``--precision int8``), calibrated once per input.

:mod:`micro_sym.deploy.int8` quantizes every activation with one scale per tensor. The scales come from
the network's own float32 activations on up to 8 crops of the input (one per octant, each about
:data:`CROP` network samples per side), normalized with the whole input's intensity range and
resampled to the network's sampling as its tiles are; so they follow the input's contrast and
lattice, and every tile of one input runs with the same scales (the engine records them in the run's
manifest, and a resumed run reuses them). The forwards run on one thread and the ranges are widened to
:data:`DIGITS` significant digits, so that the engine and the in-memory core (napari) calibrate alike.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np

from micro_sym.errors import MicroSymError

#: Network samples per side of one calibration crop.
CROP = 32
#: Significant digits the ranges are widened to: float32 forwards round differently with other thread
#: counts or CPUs, and a scale that moved by a last bit moves a few integer activations.
DIGITS = 3


def check_int8(net, where: str = "", device: str = "cpu") -> None:
    """Refuse, in one line, a network or device that :mod:`micro_sym.deploy.int8` cannot run."""
    from micro_sym.deploy.int8 import quantizable

    prefix = f"{where}: " if where else ""
    if getattr(net, "ndim", None) != 3 or not quantizable(net.module):
        raise MicroSymError(f"{prefix}--precision int8 runs 3D U-Net models only (such as default-3d and atoms-3d), "
                            f"not {net.name or 'this model'}; use fp32 or bf16")
    if str(device) != "cpu":
        raise MicroSymError(f"{prefix}--precision int8 runs on the CPU (torch's quantized kernels), not on "
                            f"{device}; use fp32 or bf16 there")


def int8_ranges(net, volume, value_range, scale: float | None = None) -> dict:
    """``{name: [min, max]}`` of the activations :class:`~micro_sym.deploy.int8.Int8UNet3D` quantizes,
    from float32 forwards of ``net`` (a 3D :class:`~.network.Network`) on crops of ``volume`` (an array
    or a lazy one: only the crops are read), normalized with ``value_range`` and resampled by
    ``scale`` (network samples per voxel; None: 1)."""
    import torch
    from scipy import ndimage

    from micro_sym.deploy.int8 import activation_ranges
    from micro_sym.deploy.runtime import torch_threads

    check_int8(net)
    scale = float(scale or 1.0)
    side = max(1, math.ceil(CROP / scale))
    stride = max(1, int(net.total_stride))
    crops = []
    for starts in itertools.product(*(_starts(n, side) for n in volume.shape)):
        region = tuple(slice(a, min(a + side, n)) for a, n in zip(starts, volume.shape))
        x = net.normalize(np.asarray(volume[region], np.float32), *value_range)
        x = np.nan_to_num(x, nan=0.0)
        if scale != 1.0:
            x = ndimage.zoom(x, scale, order=1)
        x = x[tuple(slice(0, n - n % stride) for n in x.shape)]  # pooling and upsampling meet on the stride grid
        if min(x.shape) >= stride:
            crops.append(torch.from_numpy(np.ascontiguousarray(x, np.float32))[None, None])
    if not crops:
        raise MicroSymError(f"--precision int8: the volume ({'×'.join(map(str, volume.shape))}) is too small to calibrate")
    with torch_threads(1):  # the same float32 sums in the engine, the widget and a test
        ranges = activation_ranges(net.module, crops)
    return {name: [_widened(lo, math.floor), _widened(hi, math.ceil)] for name, (lo, hi) in ranges.items()}


def _widened(value: float, rounding) -> float:
    """``value`` rounded away from the range's inside to :data:`DIGITS` significant digits."""
    if value == 0.0:
        return 0.0
    unit = 10.0 ** (math.floor(math.log10(abs(value))) - DIGITS + 1)
    return float(rounding(value / unit) * unit)


def _starts(n: int, side: int) -> list:
    """Crop starts along an axis of ``n`` voxels: one crop where it fits once, else two, about a
    quarter and three quarters of the way along."""
    if n <= side:
        return [0]
    return sorted({round((n - side) * f) for f in (0.25, 0.75)})


def with_int8_ranges(run, volume, value_range):
    """``run`` (a :class:`~.network.Network` or a :class:`~.resampling.RescaledNetwork` of one) with its
    network's int8 ranges calibrated on ``volume``; networks of another precision, or already
    calibrated, are returned as they are."""
    inner = getattr(run, "net", run)
    if getattr(inner, "precision", "fp32") != "int8" or inner.int8_ranges:
        return run
    ready = dataclasses.replace(inner, int8_ranges=int8_ranges(inner, volume, value_range, getattr(run, "scale", None)))
    if inner is run:
        return ready
    import copy

    wrapped = copy.copy(run)
    wrapped.net = ready
    return wrapped

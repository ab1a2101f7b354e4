"""A 3D network's forward in z slabs: the same outputs, the activations' memory bounded (docs/design.md §5).

A U-Net's activations over a tile are many times the tile: default-3d holds about 170 values per
voxel at full resolution at its peak, 1.3 GB in bfloat16 and 2.5 GB in float32 for a 156³ tile
(:data:`PEAK_VALUES_PER_WIDTH`). The widest layer, not the block, would then set the engine's
memory. A tile whose estimate exceeds the budget runs through the network in slabs along its first
spatial axis, one after the other. Each slab is grown by the network's halo (its receptive field, a
multiple of its stride) on the sides inside the tile and starts on the stride grid, so every kept
output voxel sees the same inputs, zero padding and pooling windows as in one forward over the whole
tile: the outputs are the same (bit for bit in float32 and bfloat16 on this CPU;
tests/inference/test_forward_slabs.py).
"""

from __future__ import annotations

import itertools
import math
import os

import numpy as np

from micro_sym.errors import MicroSymError

#: Environment variable and default of the budget (MiB) for one forward's activations.
FORWARD_MEMORY_VAR = "MICRO_SYM_FORWARD_MB"
DEFAULT_FORWARD_MB = 640

#: Values held per voxel at the peak of a forward, in units of the network's widest layer. A deployed 3D
#: U-Net as the runtime runs it (:mod:`micro_sym.deploy.subpixel`): the skip, the first decoder
#: convolution's output and its coarse parity outputs, 48 + 48 + 48 channels for default-3d (width 96).
#: Any other 3D network: the concatenation of skip and upsampled features beside them, 48 + 96 + 144.
#: On a 156³ tile the estimates are 1,216 / 2,433 MiB (bf16 / fp32) split and 2,085 / 4,170 MiB as
#: written, against 1,332 / 2,492 and 2,196 / 4,358 MB measured with the outputs
#: (``python bench/bench_forward3d.py``).
PEAK_VALUES_PER_WIDTH = {"split decoder": 1.75, "concatenation": 3.0}


def chosen_forward_memory(megabytes: float | None = None) -> int:
    """The activation budget in bytes: ``megabytes``, else ``$MICRO_SYM_FORWARD_MB``, else 640 MiB."""
    value = megabytes if megabytes is not None else os.environ.get(FORWARD_MEMORY_VAR) or DEFAULT_FORWARD_MB
    try:
        mb = float(value)
    except ValueError:
        mb = float("nan")
    if not mb > 0:
        value = f"{mb:g}" if isinstance(value, (int, float)) else value
        raise MicroSymError(f"forward memory {value} (--forward-memory or ${FORWARD_MEMORY_VAR}): expected a "
                            f"positive number of MB")
    return int(mb * 2**20)


def peak_values_per_width(module) -> float:
    """:data:`PEAK_VALUES_PER_WIDTH` of a 3D network module (a deployed file's U-Net is ``module.net``)."""
    from micro_sym.deploy.subpixel import splittable

    return PEAK_VALUES_PER_WIDTH["split decoder" if splittable(getattr(module, "net", module)) else "concatenation"]


def activation_bytes(spatial_shape, width: int, itemsize: int, batch: int = 1,
                     per_width: float = PEAK_VALUES_PER_WIDTH["concatenation"]) -> int:
    """Estimated peak bytes of one forward over ``batch`` tiles of ``spatial_shape`` (``per_width``:
    :func:`peak_values_per_width`)."""
    return int(math.prod(spatial_shape) * per_width * int(width) * int(itemsize) * max(1, int(batch)))


def slab_edges(size: int, parts: int, stride: int) -> list[int]:
    """``parts + 1`` slab boundaries along an axis of ``size``, on the stride grid, first 0 and last ``size``."""
    inner = [round(size * i / parts / stride) * stride for i in range(1, parts)]
    return [0, *sorted({e for e in inner if 0 < e < size}), size]


def thickest_slab(edges: list[int], halo: int) -> int:
    """Planes of the thickest slab's input: its own planes and up to ``halo`` on each side."""
    return max(min(b + halo, edges[-1]) - max(a - halo, 0) for a, b in itertools.pairwise(edges))


def plan_slabs(spatial_shape, *, width: int, itemsize: int, budget: int, halo: int, stride: int,
               batch: int = 1, per_width: float = PEAK_VALUES_PER_WIDTH["concatenation"]) -> list[int]:
    """Slab boundaries along the first axis for a tile of ``spatial_shape``: ``[0, size]`` (one forward)
    when its estimate fits ``budget``, else the fewest slabs whose thickest one (with its halos) fits.
    Slabs stay at least ``2 × halo`` thick (beyond that the recompute would exceed the saving)."""
    size, rest = int(spatial_shape[0]), tuple(spatial_shape[1:])
    parts, most = 1, max(1, size // max(2 * halo, stride))
    while True:
        edges = slab_edges(size, parts, stride)
        if parts >= most or activation_bytes((thickest_slab(edges, halo), *rest), width, itemsize, batch, per_width) <= budget:
            return edges
        parts += 1


def forward_in_slabs(run, x: np.ndarray, halo: int, edges: list[int]) -> np.ndarray:
    """``run(x)`` for ``x`` of shape ``(B, *spatial)``, computed slab by slab along the first spatial axis.

    ``run`` maps ``(B, *spatial)`` inputs to ``(B, C, *spatial)`` float32 outputs; each slab
    ``edges[i]:edges[i + 1]`` is computed from its input grown by ``halo`` on each side (within ``x``).
    """
    if len(edges) <= 2:
        return run(x)
    size = x.shape[1]
    out = None
    for a, b in itertools.pairwise(edges):
        lo, hi = max(a - halo, 0), min(b + halo, size)
        y = run(x[:, lo:hi])
        if out is None:
            out = np.empty(y.shape[:2] + x.shape[1:], np.float32)
        out[:, :, a:b] = y[:, :, a - lo:b - lo]
        del y
    return out

"""Block planning: processing blocks, their halos and the tiles the network sees (docs/design.md §5).

Three sizes matter. The *storage chunk* of the outputs is the write unit; a *processing block* is a
multiple of it, so every block writes whole chunks and no two blocks ever touch the same chunk (zarr 3
loses data when processes write parts of one chunk). The *tile* a network sees is the block grown by a
halo of at least the network's receptive-field radius, clipped to the image and, at the far image
edges only, padded exactly as whole-image inference pads (reflect, split between both ends, to a
multiple of the network's total stride). Tile ends lie on the stride grid of that padded image, so
every tile sees the same down-sampling grid as the whole image and the centre crop equals whole-image
output to float rounding.

Methods that take any tile size and only need tile origins on a grid anchored at the array origin
(the classical filter bank, :mod:`.classical`) plan with ``pad=False``: no padding, tiles clipped to
the image, block origins on multiples of the stride.

>>> plan = plan_blocks((300, 200), block=(128, 128), halo=16, stride=4, chunk=(64, 64))
>>> len(plan.blocks), plan.blocks[-1].core
(6, (slice(256, 300, None), slice(128, 200, None)))
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from micro_sym.errors import MicroSymError
from micro_sym.grains.blockwise import grow

# Storage chunks of the outputs (the write unit): ≥256 KiB per chunk for float32 (docs/design.md §5).
DEFAULT_CHUNK = {2: (512, 512), 3: (128, 128, 128)}


@dataclass(frozen=True)
class Block:
    """One processing block.

    Attributes
    ----------
    index : tuple of int
        Position in the block grid.
    core : tuple of slice
        Output region this block owns (whole storage chunks, or up to the image edge).
    tile : tuple of slice
        Input region read for it: ``core`` grown by the halo, clipped to the image.
    crop : tuple of slice
        Where ``core`` lies inside the (padded) tile output.
    pad : tuple of (int, int)
        Padding before/after the tile (only at the image edges, less than the stride), in the
        mode of :attr:`BlockPlan.pad_mode`, reproducing whole-image padding.
    """

    index: tuple
    core: tuple
    tile: tuple
    crop: tuple
    pad: tuple

    @property
    def id(self) -> str:
        """A stable name such as ``"0002_0001_0000"`` used for markers and per-block files."""
        return "_".join(f"{i:04d}" for i in self.index)

    @property
    def shape(self) -> tuple:
        return tuple(s.stop - s.start for s in self.core)

    @property
    def tile_shape(self) -> tuple:
        """Shape of the padded tile fed to the network."""
        return tuple(s.stop - s.start + p[0] + p[1] for s, p in zip(self.tile, self.pad))


@dataclass(frozen=True)
class BlockPlan:
    """All blocks of one image and the sizes that produced them."""

    shape: tuple
    block: tuple
    chunk: tuple
    halo: int
    stride: int
    blocks: tuple
    pad_mode: str = "reflect"

    @property
    def grid(self) -> tuple:
        return tuple(math.ceil(s / b) for s, b in zip(self.shape, self.block))

    @property
    def recompute(self) -> float:
        """Voxels pushed through the network per output voxel (halo overhead, ≥ 1)."""
        return sum(math.prod(b.tile_shape) for b in self.blocks) / math.prod(self.shape)

    @property
    def max_tile_shape(self) -> tuple:
        return max((b.tile_shape for b in self.blocks), key=math.prod)


def padded_size(n: int, stride: int) -> int:
    """``n`` rounded up to a multiple of ``stride`` (the size whole-image inference runs at)."""
    return -(-n // stride) * stride


def plan_blocks(shape, block=None, *, halo: int, stride: int = 1, chunk=None, pad: bool = True) -> BlockPlan:
    """Cut an image into chunk-aligned processing blocks with stride-aligned halos.

    Parameters
    ----------
    shape : tuple of int
        Spatial image shape ``(y, x)`` or ``(z, y, x)``.
    block : int or tuple of int, optional
        Processing block size; rounded up to a multiple of ``chunk``. Defaults to the smallest
        multiple of the chunk that is at least 8× the halo (recompute ≤ 1.6× in 3D), capped at 4×
        the chunk per axis in 3D and 2× in 2D so memory stays bounded.
    halo : int
        Receptive-field radius of the network in pixels; rounded up to a multiple of ``stride``.
    stride : int
        Total down-sampling factor of the network.
    chunk : int or tuple of int, optional
        Storage chunk of the outputs; must be a multiple of ``stride`` (with ``pad``).
    pad : bool
        True (networks): tiles live on the stride grid of the image padded like whole-image
        inference. False (methods that handle any size and need only their origin-anchored grid, such
        as the classical filter bank): tiles are never padded and start on multiples of ``stride``;
        blocks are rounded up to multiples of ``lcm(chunk, stride)`` and the default chunk to a
        multiple of ``stride``, so any chunk works.

    Returns
    -------
    BlockPlan

    Examples
    --------
    >>> p = plan_blocks((100, 100, 100), 64, halo=8, stride=2, chunk=32)
    >>> p.grid, p.blocks[0].tile, p.blocks[0].crop
    ((2, 2, 2), (slice(0, 72, None), slice(0, 72, None), slice(0, 72, None)), (slice(0, 64, None), slice(0, 64, None), slice(0, 64, None)))
    """
    shape = tuple(int(s) for s in shape)
    nd = len(shape)
    if nd not in (2, 3) or min(shape) < 1:
        raise MicroSymError(f"cannot plan blocks for an image of shape {shape}")
    stride = max(int(stride), 1)
    halo = padded_size(max(int(halo), 0), stride)
    if chunk is None:
        chunk = DEFAULT_CHUNK[nd] if pad else tuple(padded_size(c, stride) for c in DEFAULT_CHUNK[nd])
    chunk = _per_axis(chunk, nd, "chunk")
    # A chunk never needs to be larger than the image; keep it a multiple of the stride.
    chunk = tuple(min(c, padded_size(s, stride)) for c, s in zip(chunk, shape))
    if pad and any(c % stride for c in chunk):
        raise MicroSymError(f"output chunk {chunk} must be a multiple of the network stride {stride}")
    # Blocks are whole chunks and (so that tile origins lie on the stride grid) multiples of the stride.
    unit = chunk if pad else tuple(math.lcm(c, stride) for c in chunk)
    if block is None:
        # 2D blocks stop at 2 chunks (1024² tiles of ~1.3 MP with a 160-px halo): a tile's activations
        # set the engine's peak memory, and 1536² blocks, for 15 % less recomputed halo, cost 2.4 GB
        # where 1024² ones stay under 1.5 GB (bench/bench_engine_2d.py).
        cap = 2 if nd == 2 else 4
        block = tuple(min(padded_size(max(8 * halo, c), c), cap * c) for c in chunk)
    block = _per_axis(block, nd, "tile")
    block = tuple(min(padded_size(b, u), padded_size(s, u)) for b, u, s in zip(block, unit, shape))

    if pad:
        # Whole-image inference (micro_sym.inference.whole_image.pad_to_stride) reflect-pads each axis to a multiple
        # of the stride, splitting the padding between both ends; tiles live on that padded grid.
        before = [((-n) % stride) // 2 for n in shape]
        padded = [padded_size(n, stride) for n in shape]
        extra = [p - n for p, n in zip(padded, shape)]
        pad_mode = "reflect" if min(shape) > max(max(b, e - b) for b, e in zip(before, extra)) else "edge"
    else:  # the grid is anchored at the array origin and tiles end at the image edge
        before, padded, pad_mode = [0] * nd, list(shape), "reflect"
    blocks = []
    for index in itertools.product(*(range(math.ceil(s / b)) for s, b in zip(shape, block))):
        core, tile, crop, pad = [], [], [], []
        for i, n, b, lo, npad in zip(index, shape, block, before, padded):
            c0, c1 = i * b, min((i + 1) * b, n)
            # Tile ends on the stride grid of the padded image, at least `halo` beyond the core.
            t0 = max(0, (c0 + lo - halo) // stride * stride)
            t1 = min(npad, padded_size(c1 + lo + halo, stride))
            r0, r1 = max(t0 - lo, 0), min(t1 - lo, n)
            core.append(slice(c0, c1))
            tile.append(slice(r0, r1))
            crop.append(slice(c0 + lo - t0, c1 + lo - t0))
            pad.append((r0 - (t0 - lo), (t1 - lo) - r1))
        blocks.append(Block(tuple(index), tuple(core), tuple(tile), tuple(crop), tuple(pad)))
    return BlockPlan(shape, block, chunk, halo, stride, tuple(blocks), pad_mode)


def grown_crop(block: Block, margin: int, shape) -> tuple:
    """Where ``grow(block.core, margin, shape)`` lies inside the block's (padded) tile output.

    The outputs there are exact (equal to whole-image inference) when the plan's halo is at least
    the network's receptive field plus ``margin``.
    """
    region = grow(block.core, margin, shape)
    return tuple(slice(c.start - (s.start - r.start), c.stop + (r.stop - s.stop))
                 for c, s, r in zip(block.crop, block.core, region))


def _per_axis(value, nd: int, what: str) -> tuple:
    if isinstance(value, (int, np.integer)):
        value = (int(value),) * nd
    value = tuple(int(v) for v in value)
    if len(value) == 1:
        value = value * nd
    if len(value) != nd or min(value) < 1:
        raise MicroSymError(f"--{what} {value}: need {nd} positive sizes (or one for all axes)")
    return value


def estimate_memory(plan: BlockPlan, *, in_channels: int = 1, out_channels: int, width: int, workers: int = 1,
                    input_itemsize: int = 1, resampled: tuple[int, int] | None = None,
                    activations: int | None = None) -> int:
    """Rough peak bytes of the block engine: per worker one tile in flight through the network.

    Counts the input tile (raw and float32), the two largest activations alive at once
    (``2 × width`` float32 channels over the network's largest call, the usual peak of a conv net at
    full resolution), the network output and the per-block label/statistics buffers. ``resampled``:
    ``(samples of the resampled tile, samples of the network's largest call on it)`` for a network
    run at another sampling (:meth:`~.resampling.RescaledNetwork.samples`), whose resampled input and
    output also live beside the tile's. ``activations``: the network's own estimate of its forward's
    peak bytes on a tile (3D networks, which run a large tile in slabs: :meth:`.Network.activation_bytes`),
    in place of the ``2 × width`` channels. An estimate, not a bound.
    """
    tile = math.prod(plan.max_tile_shape)
    core = math.prod(plan.block)
    per_worker = tile * (input_itemsize + 4 * in_channels)
    if resampled:
        net_tile, call = resampled
        per_worker += net_tile * 4 * (in_channels + out_channels) + call * 4 * 2 * width + tile * 4 * out_channels
    elif activations is not None:
        per_worker += activations + tile * 4 * out_channels
    else:
        per_worker += tile * 4 * (2 * width + out_channels)
    per_worker += core * (4 * out_channels + 8 + 4)  # decoded outputs, labels, misorientation scratch
    return int(per_worker * workers)

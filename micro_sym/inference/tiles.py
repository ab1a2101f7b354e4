"""The one inference path: image tiles -> normalized input -> network -> decoded maps and block labels.

Everything that runs a network goes through :func:`iter_tiles`:

- whole-image prediction (:func:`predict_array`): a plan of one block covering the image, so the
  tile is the whole image padded to the network's stride;
- the block engine's pass 1 (:func:`micro_sym.inference.engine.maps_task`): a task's batch of blocks;
- evaluation (through :func:`micro_sym.inference.whole_image.predict_image` and :func:`predict_array`);
- the napari plugin: every block of a plan, in memory, with progress after each tile.

Each tile is normalized with the *whole image's* intensity range, NaN set to 0, padded as the plan
says (reflect at image edges, to the stride grid), run through the network and decoded over the
block's core. With a halo of at least the network's receptive field, tiles reproduce whole-image
inference to float rounding (docs/design.md §5).

>>> net = load_network("default-2d")                                     # doctest: +SKIP
>>> maps = predict_array(net, image)                                     # doctest: +SKIP
>>> maps["boundary"].shape == image.shape                                # doctest: +SKIP
True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from micro_sym.grains.rules import is_seeded, seed_margin
from micro_sym.grains.blockwise import grow, inside
from micro_sym.inference.blocks import Block, BlockPlan, grown_crop, padded_size, plan_blocks
from micro_sym.grains.blockwise import BlockLabels, label_block, seed_core

#: z planes per decoding step of 3D harmonic outputs when every voxel is decoded (``--voxel-orientations``:
#: an iterative fit, tens of seconds per 48³ tile on a CPU): a progress point every few seconds.
DECODE_SLAB = 8


@dataclass
class TileOutput:
    """One block's network outputs.

    Attributes
    ----------
    block : Block
    raw : ndarray, ``(C, *tile)``
        Raw network outputs over the whole padded tile (the seed core looks beyond the block's core).
    maps : dict
        Decoded ``boundary`` and ``orientation`` (and, for 2D angles, ``confidence``) of the block's
        core, or None when :func:`iter_tiles` was asked not to decode.
    """

    block: Block
    raw: np.ndarray
    maps: dict | None

    @property
    def core_outputs(self) -> np.ndarray:
        """Raw outputs cropped to the block's core (what :meth:`Network.decode` takes)."""
        return self.raw[(slice(None), *self.block.crop)]


def prepare_tile(net, tile: np.ndarray, value_range, pad=None, pad_mode: str = "reflect") -> np.ndarray:
    """Network input for one tile: normalized with the whole image's ``value_range``, NaN -> 0, padded.

    Parameters
    ----------
    net : Network
        Its ``normalize`` maps raw intensities to the network's input range.
    tile : ndarray
        Raw intensities of the tile.
    value_range : (lo, hi)
        The whole image's :func:`~micro_sym.models.intensity_range`, so that all tiles agree.
    pad : sequence of (before, after), optional
        Padding per axis (the block's ``pad``: image edges and the stride grid).
    pad_mode : str
        ``np.pad`` mode at image edges (the plan's ``pad_mode``).
    """
    lo, hi = value_range
    x = net.normalize(tile, lo, hi)
    if not np.isfinite(x).all():  # one scan; nan_to_num makes four and a copy, also of a finite tile
        x = np.nan_to_num(x, nan=0.0)
    if pad is not None and any(p != (0, 0) for p in pad):
        x = np.pad(x, pad, mode=pad_mode)
    return x


def iter_tiles(net, blocks, read, *, value_range, pad_mode: str, device: str = "cpu", batch: int = 1,
               decode: bool = True):
    """Run the network over blocks, yielding a :class:`TileOutput` per block, in order.

    Parameters
    ----------
    net : Network
    blocks : sequence of Block
        From :func:`~micro_sym.inference.blocks.plan_blocks`.
    read : callable
        ``read(block) -> ndarray``: the block's raw input tile (``image[block.tile]``).
    value_range : (lo, hi)
        Normalization range of the whole image.
    pad_mode : str
        The plan's ``pad_mode``.
    device : str
    batch : int
        Consecutive blocks whose padded tiles have equal shapes run as one forward call, up to
        ``batch`` tiles.
    decode : bool
        Decode each block's core (:meth:`Network.decode`); False leaves ``maps`` None (callers that
        decode in parts, e.g. to report progress within a large 3D tile).
    """
    pending = []
    for block in blocks:
        x = prepare_tile(net, read(block), value_range, block.pad, pad_mode)
        if pending and (len(pending) >= max(1, batch) or pending[0][1].shape != x.shape):
            yield from _run(net, pending, device, decode)
            pending = []
        pending.append((block, x))
    if pending:
        yield from _run(net, pending, device, decode)


def _run(net, pending, device, decode):
    xs = np.stack([x for _, x in pending])
    # A network that resamples (rescale.RescaledNetwork) needs to know where each tile lies.
    forward_tiles = getattr(net, "forward_tiles", None)
    y = forward_tiles([b for b, _ in pending], xs, device) if forward_tiles else net.forward(xs, device)
    for (block, _), raw in zip(pending, y):
        out = TileOutput(block, raw, None)
        if decode:
            out.maps = net.decode(out.core_outputs)
        yield out


def rule_maps(net, y: np.ndarray) -> dict:
    """What the grain rule reads from raw outputs ``(C, *spatial)``: ``boundary`` and ``orientation``.

    A 3D harmonic network (:attr:`Network.grain_field`) gives its unit harmonic field
    (:func:`~micro_sym.orientation.cubic_harmonics.unit_fields`, ``(C, *spatial)``): grains come from it
    and orientations are decoded per grain (:mod:`micro_sym.grains.field`). Every other network gives
    its decoded maps (:meth:`Network.decode`).
    """
    degrees = getattr(net, "grain_field", None)
    if not degrees:
        return net.decode(y)
    from micro_sym.orientation.cubic_harmonics import unit_fields

    return {"boundary": net.boundary_of(y), "orientation": unit_fields(y[1:], degrees)}


def decode_slab(net) -> int | None:
    """z planes per decoding step for ``net``, or None where the whole decode takes a moment."""
    return DECODE_SLAB if getattr(net, "grain_field", None) else None


def decode_in_slabs(net, y: np.ndarray, slab: int | None):
    """``net.decode(y)`` z slab by z slab: a generator that yields the number of planes decoded after
    each slab and returns the maps. The values equal the whole decode (it is per voxel)."""
    if not slab or y.shape[1] <= slab:
        return net.decode(y)
    parts = []
    for z0 in range(0, y.shape[1], slab):
        parts.append(net.decode(y[:, z0:z0 + slab]))
        yield min(z0 + slab, y.shape[1])
    return {k: np.concatenate([m[k] for m in parts], axis=1 if k == "orientation" else 0) for k in parts[0]}


def whole_image_plan(shape, stride: int) -> BlockPlan:
    """A plan of one block covering the image: its tile is the image padded to a multiple of ``stride``,
    the padding split between both ends (as every tile of a larger plan is padded at image edges)."""
    whole = tuple(padded_size(int(n), stride) for n in shape)
    return plan_blocks(shape, whole, halo=0, stride=stride, chunk=whole)


def predict_raw(net, image: np.ndarray, *, value_range=None, device: str = "cpu") -> np.ndarray:
    """Raw network outputs ``(C, *image.shape)`` of a whole image or volume in memory.

    ``value_range`` defaults to :func:`~micro_sym.models.intensity_range` of ``image``.
    """
    return _whole(net, image, value_range, device, decode=False).core_outputs


def predict_array(net, image: np.ndarray, *, value_range=None, device: str = "cpu") -> dict:
    """Decoded maps (``boundary``, ``orientation``; ``confidence`` for 2D angles) of a whole 2D image or
    3D volume in memory: the reference the tiled engine reproduces to float rounding.

    Parameters
    ----------
    net : Network
    image : ndarray, ``(y, x)`` or ``(z, y, x)``
    value_range : (lo, hi), optional
        Defaults to :func:`~micro_sym.models.intensity_range` of ``image``.
    device : str
    """
    return _whole(net, image, value_range, device, decode=True).maps


def _whole(net, image, value_range, device, decode) -> TileOutput:
    from micro_sym.inference.int8_ranges import with_int8_ranges
    from micro_sym.models.normalize import intensity_range

    image = np.asarray(image)
    value_range = value_range if value_range is not None else intensity_range(image)
    net = with_int8_ranges(net, image, value_range)  # an int8 network: this image's activation scales
    plan = whole_image_plan(image.shape, net.total_stride)
    (out,) = iter_tiles(net, plan.blocks, lambda b: image[b.tile], value_range=value_range, pad_mode=plan.pad_mode,
                        device=device, decode=decode)
    return out


def label_tile(net, out: TileOutput, maps: dict, *, rule: dict, shape, boundary_threshold: float) -> BlockLabels:
    """Pass 1 of the grain rule for one tile: the block's local labels (:func:`~micro_sym.grains.blockwise.label_block`).

    With the seeded rule (:mod:`micro_sym.grains.rules`) only the block's seed core is labelled; it is
    computed from the boundary map of the block grown by the rule's margin, which the tile holds
    (plans for the seeded rule add that margin to the halo).
    """
    block = out.block
    mask = None
    if is_seeded(rule):
        margin = seed_margin(rule)
        boundary, inner = grown_boundary(net, out, maps["boundary"], margin, shape)
        mask = seed_core(boundary, inner, radius=rule["core_radius"], boundary_threshold=boundary_threshold)
    return label_block(maps["orientation"], maps["boundary"], symmetry=net.symmetry, threshold=rule["pair_threshold"],
                       boundary_threshold=boundary_threshold, origin=tuple(s.start for s in block.core),
                       image_shape=shape, reach=rule["reach"], mask=mask)


def grown_boundary(net, out: TileOutput, core, margin: int, shape):
    """The boundary probability of the block grown by ``margin`` (clipped to the image), and where the
    block lies in it.

    ``core`` is the block's decoded boundary (``maps["boundary"]``, :meth:`Network.boundary_of` of its
    core outputs); only the ring around it is computed from the raw outputs. ``boundary_of`` works
    point by point, so the result equals ``boundary_of`` of the whole grown crop, at a fraction of its
    cost.
    """
    block = out.block
    raw = out.raw[(slice(None), *grown_crop(block, margin, shape))]
    inner = inside(block.core, grow(block.core, margin, shape))
    spatial = raw.shape[1:]
    boundary = np.empty(spatial, np.asarray(core).dtype)
    boundary[inner] = core
    # The ring, axis by axis: the slabs before and after the block, across what earlier axes left.
    box = [slice(0, n) for n in spatial]
    for ax, (i, n) in enumerate(zip(inner, spatial)):
        for part in (slice(0, i.start), slice(i.stop, n)):
            if part.start < part.stop:
                sl = (*box[:ax], part, *box[ax + 1:])
                boundary[sl] = net.boundary_of(raw[(slice(None), *sl)])
        box[ax] = i
    return boundary, inner

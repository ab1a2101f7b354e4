"""Global resampling of an image axis to a network's sampling and back (docs/design.md §6.2).

An axis of ``n`` input pixels becomes ``m ≈ n·scale`` network samples (the nearest even number),
sample ``u`` at input coordinate ``(u + 0.5)·n/m − 0.5``; weights use Keys' cubic kernel, widened by
the sampling step when down-sampling (an anti-aliasing filter), with taps reflected about the ends.
:class:`Axis` gives the weights a tile needs for its part of the global grid; the 2D and 3D wrappers
(:mod:`.rescale`, :mod:`.rescale3d`) apply them per axis.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

#: Below this relative difference between image and model period the image runs unresampled.
TOLERANCE = 0.05
#: Half-width of the Keys cubic kernel, in samples of the coarser grid.
SUPPORT = 2


def keys_cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel (a = -0.5): interpolating, support ``[-2, 2]``."""
    x = np.abs(x)
    return np.where(x <= 1, (1.5 * x - 2.5) * x * x + 1,
                    np.where(x < 2, ((-0.5 * x + 2.5) * x - 4) * x + 2, 0.0))


def resample_weights(positions, n: int, lo: int, hi: int, step: float) -> np.ndarray:
    """Weights ``(len(positions), hi - lo)`` that sample a signal at fractional ``positions``.

    Parameters
    ----------
    positions : array of float
        Global source coordinates (source pixel ``j`` at ``j``) of the wanted samples.
    n : int
        Length of the whole source signal: taps beyond ``[0, n)`` reflect about the ends
        (half-sample symmetric, as pixel areas), so every tile agrees with the whole image.
    lo, hi : int
        The source samples available (a tile): taps outside are clamped into it. Only samples in
        a tile's halo reach that far, and the halo is never kept.
    step : float
        Spacing of ``positions`` in source pixels; above 1 the kernel widens by it (anti-aliasing).
    """
    positions = np.asarray(positions, dtype=np.float64)
    width = max(1.0, float(step))
    reach = int(math.ceil(SUPPORT * width))
    base = np.floor(positions).astype(np.int64)
    taps = base[:, None] + np.arange(-reach + 1, reach + 1)[None, :]
    w = keys_cubic((positions[:, None] - taps) / width)
    taps = np.where(taps < 0, -taps - 1, taps)
    taps = np.where(taps >= n, 2 * n - 1 - taps, taps)
    taps = np.clip(taps, lo, hi - 1) - lo
    weights = np.zeros((len(positions), hi - lo))
    np.add.at(weights, (np.repeat(np.arange(len(positions)), taps.shape[1]), taps.ravel()), w.ravel())
    weights /= weights.sum(axis=1, keepdims=True)
    return weights


class Axis:
    """One axis of the global resampling: ``n`` input pixels <-> ``m`` network samples."""

    def __init__(self, n: int, scale: float, stride: int):
        self.n = int(n)
        # An even sample count splits the stride padding equally between both ends (whole-image
        # padding puts the odd pixel after), so mirrors map the padded grid onto itself.
        self.m = max(2, 2 * int(round(self.n * scale / 2)))
        self.ratio = self.n / self.m  # input pixels per network sample
        self.stride = int(stride)
        padded = -(-self.m // self.stride) * self.stride
        self.pad_before = (padded - self.m) // 2  # the whole-image split of padding (tiles.whole_image_plan)
        self.padded = padded

    def to_input(self, u):
        return (np.asarray(u, dtype=np.float64) + 0.5) * self.ratio - 0.5

    def to_network(self, x):
        return (np.asarray(x, dtype=np.float64) + 0.5) / self.ratio - 0.5

    def network_range(self, a: int, b: int) -> tuple:
        """Padded-grid range ``[v0, v1)`` (``v = u + pad_before``, multiples of the stride) a tile
        covering input ``[a, b)`` can compute: all taps inside it, ends on the whole image's stride grid."""
        reach = SUPPORT * max(1.0, self.ratio) + 1
        first = math.ceil(self.to_network(a + reach)) + self.pad_before
        v0 = 0 if a <= 0 else self.stride * math.ceil(first / self.stride)
        v1 = self.padded if b >= self.n else self.stride * math.floor(
            (math.floor(self.to_network(b - 1 - reach)) + 1 + self.pad_before) / self.stride)
        return v0, max(v1, v0 + self.stride)

    def forward(self, a: int, b: int, v0: int, v1: int) -> tuple:
        """Weights taking the tile's input ``[a, b)`` to network samples ``u`` in ``[v0, v1) - pad_before``
        that lie in the image, and the reflect padding that completes the range."""
        u0, u1 = max(v0 - self.pad_before, 0), min(v1 - self.pad_before, self.m)
        w = resample_weights(self.to_input(np.arange(u0, u1)), self.n, a, b, self.ratio)
        return w, (u0 - (v0 - self.pad_before), (v1 - self.pad_before) - u1)

    def back(self, a: int, b: int, v0: int, v1: int) -> np.ndarray:
        """Weights taking network outputs on ``[v0, v1)`` back to input pixels ``[a, b)``."""
        u0, u1 = max(v0 - self.pad_before, 0), min(v1 - self.pad_before, self.m)
        w = resample_weights(self.to_network(np.arange(a, b)), self.m, u0, u1, 1.0 / self.ratio)
        full = np.zeros((b - a, v1 - v0))
        full[:, u0 - (v0 - self.pad_before):u1 - (v0 - self.pad_before)] = w
        return full


def wrapper_halo(net, axes) -> int:
    """Input pixels a rescaling wrapper needs around a tile's core: core pixel -> output taps -> exact
    network outputs (the network's halo plus stride alignment) -> input taps."""
    ratio = max(a.ratio for a in axes)
    network_reach = SUPPORT * max(1.0, 1.0 / ratio) + net.halo + net.total_stride + 2
    return int(math.ceil(network_reach * ratio + SUPPORT * max(1.0, ratio) + 2))


def resampling_scale(record: dict) -> float | None:
    """The record's scale, or None where it is missing or within :data:`TOLERANCE` of 1 (the input then
    runs at its own sampling); sets ``record["resampled"]``."""
    scale = record.get("scale")
    if scale is not None and abs(math.log(scale)) < math.log1p(TOLERANCE):
        scale = None
    record["resampled"] = scale is not None
    return scale


#: Network samples per side of one network call (plus its halo): about the tile default-3d runs on
#: at its own sampling (128³ blocks + 10-voxel halos), whatever the scale.
PART = 128


class RescaledNetwork:
    """A 2D or 3D :class:`~.network.Network` run at ``scale`` times the input's sampling.

    Parameters
    ----------
    net : Network
        The network; everything but the tile geometry is delegated to it.
    scale : float
        Network samples per input pixel: the image's first-ring frequency over the model's.
    shape : tuple of int
        The whole input's shape (defines the global resampled grid).
    part : int
        3D: the network runs on parts of the resampled tile of at most this many samples per side (plus
        its halo): an engine block up-sampled by ``scale`` holds ``scale³`` times its voxels, and the
        network's activations over a tile set the peak memory (:func:`forward_in_parts`).
    """

    total_stride = 1  # tiles of any size: the inner stride grid is handled here
    pad_to_stride = True

    def __init__(self, net, scale: float, shape, *, part: int = PART):
        if net.ndim not in (2, 3):
            raise ValueError(f"cannot rescale a {net.ndim}D network")
        self.net = net
        self.scale = float(scale)
        self.part = int(part)
        self.shape = tuple(int(s) for s in shape)
        self.axes = [Axis(n, self.scale, net.total_stride) for n in self.shape]
        self.halo = wrapper_halo(net, self.axes)

    def __getattr__(self, name):  # ndim, k, symmetry, normalize, decode, boundary_of, ...
        if name == "net":
            raise AttributeError(name)
        return getattr(self.net, name)

    def grain_rule(self, threshold: float, ndim: int) -> dict:
        """The network's grain rule with its lengths in model pixels or voxels (:func:`~micro_sym.grains.rules.at_scale`)."""
        from micro_sym.grains.rules import at_scale

        return at_scale(self.net.grain_rule(threshold, ndim), 1.0 / self.scale)

    def samples(self, tile_shape) -> tuple[int, int]:
        """``(samples of the resampled tile, samples of the largest network call on it)`` for a tile of
        ``tile_shape`` input pixels (what :func:`~.blocks.estimate_memory` counts)."""
        resampled = [int(np.ceil(n * self.scale)) + 2 * self.net.halo for n in tile_shape]
        call = resampled if self.net.ndim == 2 else [min(n, self.part + 2 * self.net.halo) for n in resampled]
        return math.prod(resampled), math.prod(call)

    def forward_tiles(self, blocks, xs, device: str = "cpu") -> np.ndarray:
        """Outputs ``(B, C, *tile)`` of normalized input tiles ``xs`` (``(B, *tile)``) of ``blocks``."""
        return np.stack([self._one(block, x, device) for block, x in zip(blocks, xs)])

    def _one(self, block, x, device) -> np.ndarray:
        if any(p != (0, 0) for p in block.pad):
            raise ValueError("a rescaled network plans tiles without padding (total_stride 1)")
        spans = [(s.start, s.stop) for s in block.tile]
        ranges = [ax.network_range(a, b) for ax, (a, b) in zip(self.axes, spans)]
        fwd = [ax.forward(a, b, v0, v1) for ax, (a, b), (v0, v1) in zip(self.axes, spans, ranges)]
        back = [ax.back(a, b, v0, v1) for ax, (a, b), (v0, v1) in zip(self.axes, spans, ranges)]
        if self.net.ndim == 2:
            r = fwd[0][0] @ x.astype(np.float64) @ fwd[1][0].T
            r = np.pad(r, [f[1] for f in fwd], mode="reflect").astype(np.float32)
            y = self.net.forward(r[None], device)[0].astype(np.float64)
            return np.einsum("yv,cvu,xu->cyx", back[0], y, back[1], optimize=True).astype(np.float32)
        # Separable, one axis at a time, in float32: an up-sampled 3D tile is large, and tiles still
        # agree with the whole volume to float32 rounding.
        r = _apply(x.astype(np.float32), [w for w, _ in fwd], first_axis=0)
        r = np.pad(r, [pad for _, pad in fwd], mode="reflect")
        y = forward_in_parts(self.net, r, device, self.part)
        return _apply(y.astype(np.float32), back, first_axis=1)


def forward_in_parts(net, r: np.ndarray, device: str, part: int) -> np.ndarray:
    """``net.forward(r[None], device)[0]``, computed on parts of at most ``part`` samples per side.

    Each part runs with the network's halo around it, cut at the ends of ``r`` as the whole call
    cuts them, and starts on the stride grid (``r``'s sides, the parts and the halo are multiples of
    the stride): the engine's own tiling rule, so the parts equal one call to float rounding.
    """
    stride, halo = int(net.total_stride), int(net.halo)
    part = max(stride, part - part % stride)
    if max(r.shape) <= part + 2 * halo:
        return net.forward(r[None], device)[0]
    out = None
    for starts in itertools.product(*(range(0, n, part) for n in r.shape)):
        core = [slice(a, min(a + part, n)) for a, n in zip(starts, r.shape)]
        tile = tuple(slice(max(c.start - halo, 0), min(c.stop + halo, n)) for c, n in zip(core, r.shape))
        y = net.forward(r[tile][None], device)[0]
        if out is None:
            out = np.empty((y.shape[0], *r.shape), np.float32)
        out[(slice(None), *core)] = y[(slice(None), *(slice(c.start - t.start, c.stop - t.start) for c, t in zip(core, tile)))]
    return out


def _apply(a: np.ndarray, weights, first_axis: int) -> np.ndarray:
    """``a`` with ``weights[i]`` (``(new, old)``) applied along axis ``first_axis + i``."""
    for i, w in enumerate(weights):
        axis = first_axis + i
        a = np.moveaxis(np.tensordot(w.astype(np.float32), a, axes=(1, axis)), 0, axis)
    return np.ascontiguousarray(a)

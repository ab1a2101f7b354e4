"""Run a 2D network at its training lattice period on images of any period (docs/design.md §6).

A network learned its lattice at one scale: the bundled 2D models saw columns 8 px apart and fail at
4 or 23 px. :class:`RescaledNetwork` wraps a :class:`~.network.Network` so that every tile is
resampled by ``scale = model period / image period`` before the network and its outputs are resampled
back onto the tile's own pixels, so the maps, grains and statistics stay on the input grid.

The resampled image is defined globally, per axis: an image of ``n`` pixels becomes ``m ≈
n·scale`` samples (the nearest even number), sample ``u`` lying at input coordinate ``(u + 0.5)·n/m − 0.5`` (pixel
areas map onto pixel areas, so both image ends map symmetrically and a square image keeps its D4
symmetry exactly). Each tile computes exactly the samples of that global image it holds, on the
whole image's stride grid, with the same reflect padding at image edges, and resamples with a local
kernel (Keys cubic, widened by the sampling step when down-sampling, which makes it an
anti-aliasing filter). With the halo of :attr:`RescaledNetwork.halo`, tiles therefore reproduce
whole-image inference to float rounding, as the plain network does.
"""

from __future__ import annotations

import math

import numpy as np

#: Below this relative difference between image and model period the image runs unresampled.
TOLERANCE = 0.05
#: Half-width of the Keys cubic kernel, in samples of the coarser grid.
_SUPPORT = 2


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
    reach = int(math.ceil(_SUPPORT * width))
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


class _Axis:
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
        reach = _SUPPORT * max(1.0, self.ratio) + 1
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


class RescaledNetwork:
    """A 2D :class:`~.network.Network` run at ``scale`` times the image's sampling.

    Parameters
    ----------
    net : Network
        The 2D network; everything but the tile geometry is delegated to it.
    scale : float
        Network samples per input pixel: the model's lattice period over the image's.
    shape : (int, int)
        The whole image's shape (defines the global resampled grid).
    """

    total_stride = 1  # tiles of any size: the inner stride grid is handled here
    pad_to_stride = True

    def __init__(self, net, scale: float, shape):
        if net.ndim != 2:
            raise ValueError("only 2D networks are rescaled")
        self.net = net
        self.scale = float(scale)
        self.shape = tuple(int(s) for s in shape)
        self.axes = [_Axis(n, self.scale, net.total_stride) for n in self.shape]
        ratio = max(a.ratio for a in self.axes)
        # Core pixel -> output taps -> exact network outputs (inner halo + stride alignment) -> input taps.
        network_reach = _SUPPORT * max(1.0, 1.0 / ratio) + net.halo + net.total_stride + 2
        self.halo = int(math.ceil(network_reach * ratio + _SUPPORT * max(1.0, ratio) + 2))

    def __getattr__(self, name):  # ndim, k, symmetry, normalize, decode, boundary_of, grain_rule, ...
        if name == "net":
            raise AttributeError(name)
        return getattr(self.net, name)

    def forward_tiles(self, blocks, xs, device: str = "cpu") -> np.ndarray:
        """Outputs ``(B, C, *tile)`` of normalized input tiles ``xs`` (``(B, *tile)``) of ``blocks``."""
        return np.stack([self._one(block, x, device) for block, x in zip(blocks, xs)])

    def _one(self, block, x, device) -> np.ndarray:
        if any(p != (0, 0) for p in block.pad):
            raise ValueError("a rescaled network plans tiles without padding (total_stride 1)")
        spans = [(s.start, s.stop) for s in block.tile]
        ranges = [ax.network_range(a, b) for ax, (a, b) in zip(self.axes, spans)]
        fwd = [ax.forward(a, b, v0, v1) for ax, (a, b), (v0, v1) in zip(self.axes, spans, ranges)]
        r = fwd[0][0] @ x.astype(np.float64) @ fwd[1][0].T
        r = np.pad(r, [f[1] for f in fwd], mode="reflect").astype(np.float32)
        y = self.net.forward(r[None], device)[0].astype(np.float64)
        wy, wx = (ax.back(a, b, v0, v1) for ax, (a, b), (v0, v1) in zip(self.axes, spans, ranges))
        return np.einsum("yv,cvu,xu->cyx", wy, y, wx, optimize=True).astype(np.float32)


def adapt_to_image(net, image, *, period: float | None = None, measured: dict | None = None,
                   previous: dict | None = None, workers: int = 1, lattice_mask: bool = True):
    """``(network, scale, ring)``: ``net`` made ready for one image, as every path runs it.

    A 2D :class:`~.network.Network` runs at its training lattice period (:func:`rescale_for_input`;
    ``scale`` is its record); with ``lattice_mask`` the network, or the classical method, leaves
    pixels without a lattice out of every grain (:class:`~.lattice_mask.LatticeMasked` at the
    first-ring frequency ``ring``, None where unknown). Volumes are returned as they are.
    """
    from micro_sym.inference.lattice_mask import LatticeMasked, lattice_ring
    from micro_sym.inference.network import Network

    if len(image.shape) != 2:
        return net, None, None
    base, scale = net, None
    if isinstance(net, Network):
        net, scale = rescale_for_input(net, image, period=period, measured=measured, previous=previous,
                                       workers=workers)
    ring = lattice_ring(base, scale) if lattice_mask else None
    return (LatticeMasked(net, ring) if ring else net), scale, ring


def rescale_for_input(net, image, *, period: float | None = None, measured: dict | None = None,
                      previous: dict | None = None, workers: int = 1):
    """``(network, record)`` for one 2D image (an array, or a lazy one: at most 16 tiles are read):
    ``net`` wrapped in a :class:`RescaledNetwork` when the image's lattice period differs from the
    model's, and the record of what was measured (or given).

    ``period`` (``--period``) is the image's lattice constant in px, in the model's lattice convention;
    without it the period comes from the power spectrum (:func:`micro_sym.classical.measure_lattice`,
    at most 16 tiles read), unless already ``measured`` (:meth:`LatticeMeasurement.as_dict`, e.g. by
    ``--method auto``). A resumed run (``previous`` = its manifest) reuses its recorded scale.
    Networks without a known training period (files older than ``lattice_period_px``) and 3D networks
    run as they are (record None).
    """
    if net.ndim != 2 or not getattr(net, "lattice_period", None):
        return net, None
    old = ((previous or {}).get("method") or {}).get("scale")
    if old:
        record = dict(old)
    elif period is not None:
        record = {"source": "given", "period_px": float(period), "model_period_px": net.lattice_period,
                  "scale": float(net.lattice_period) / float(period)}
    else:
        record = _scale_record(net, measured or _measure(image, workers))
    scale = record.get("scale")
    if scale is not None and abs(math.log(scale)) < math.log1p(TOLERANCE):
        scale = None  # close enough to the training period: run unresampled
    record["resampled"] = scale is not None
    if scale is None:
        return net, record
    return RescaledNetwork(net, scale, image.shape), record


def _measure(image, workers: int) -> dict:
    """The image's lattice from its power spectrum (``{"reason": ...}`` where it has none)."""
    import dask

    from micro_sym.classical import measure_lattice
    from micro_sym.errors import MicroSymError

    try:
        with dask.config.set(scheduler="threads"):  # the input's store need not be serializable
            return measure_lattice(image, workers=max(1, int(workers))).as_dict()
    except MicroSymError as err:
        return {"reason": str(err).removeprefix("image: ")}


def _scale_record(net, measured: dict) -> dict:
    """Where the image's first lattice ring lies against the model's: resampling by their ratio moves
    the image's ring onto the model's.
    Without a measurable lattice the network runs at the image's own sampling."""
    from micro_sym.classical import ring_frequency

    if not measured.get("ring_frequency"):
        return {"source": "unmeasured", **measured, "model_period_px": net.lattice_period}
    model_ring = ring_frequency(net.lattice_period, net.symmetry)
    return {"source": "measured", **measured, "model_period_px": net.lattice_period,
            "scale": measured["ring_frequency"] / model_ring}

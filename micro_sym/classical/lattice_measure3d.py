"""First lattice ring of a 3D volume (atomic electron tomography) from its power spectrum.

A 3D network learned its lattice at one scale, as a 2D one does (docs/design.md §6.1-6.2): to run it
on a volume of another voxel size, :mod:`micro_sym.inference.rescale3d` resamples the volume so that
its first lattice ring lands on the model's. This module measures that ring.

Method
------
1. **Welch spectrum**: at most :data:`MAX_TILES` cubic tiles (50 % overlap, spread over the volume;
   a lazy array, dask or zarr, is read only there), each outlier-clipped, mean-subtracted and
   Hann-windowed, their power spectra averaged and then radially averaged over spherical shells one
   frequency bin wide.
2. **Rings**: the prominence of every shell is ``log P`` over the baseline of its neighbourhood (the
   medians just below and just above it; :func:`_prominence`, a two-sided version of 2D's, which
   follows any smooth baseline: noise coloured by the PSF, slow backgrounds). A ring counts when it
   is a local maximum at least twice the baseline (as in 2D) *and* :data:`DETECTION` standard
   deviations of the shell mean above it (pure noise has a spiky radial spectrum on small tiles,
   where low-frequency shells hold few bins).
3. **First ring**: starting from the most prominent ring, step down to a lower ring (at least 2 bins
   lower, not below half its frequency) that is itself clearly a ring (at least half as prominent),
   until none is left. Higher orders can outshine the fundamental; the lowest ring is what the model's
   first ring is matched to (simple cubic: {100} at ``1/a``; fcc: {111} at ``√3/a``; bcc: {110} at
   ``√2/a``).
4. **Position** from the ring's spots, not from the shell means: on tiles of 64-128 voxels a ring
   lies 5-30 bins out, a window-smeared spot spreads over ±2 bins, and the shell mean of a broad
   ring (small grains) is pulled several per cent low by the falling envelope and the shell sizes.
   The 3D local maxima of the spectrum near the ring, each refined per axis by a parabola through
   ``log P``, are averaged by their excess power in a window re-centred until it settles
   (:func:`_ring_from_spots`). Without spots, a parabola through the radial ``log P``.

Accuracy (tests/classical/test_lattice_measure3d.py): within 1.2 % on the analytic renderer (periods
4-10 voxels, 96³) and 3 % on atomistic fcc, bcc, simple-cubic and decahedral volumes (64³). A tile
should hold at least ~8 periods and a grain ~4 periods: below that, neighbouring rings and broad
spots merge (4 % off at a 12-voxel period in 64³ volumes of 30-voxel grains).

The family (sc, fcc, bcc) is not decided here: resampling matches first rings whatever the family
(``s = f_image / f_model``, docs/design.md §6.2), so ``period`` is the first ring's plane spacing
``1 / f`` (for simple cubic, the lattice constant).

>>> zz, yy, xx = np.mgrid[0:64, 0:64, 0:64]
>>> m = measure_lattice_3d(sum(np.cos(2 * np.pi * c / 6.0) for c in (zz, yy, xx)))
>>> m["found"], round(m["period"], 1)
(True, 6.0)
"""

from __future__ import annotations

import math

import numpy as np
from scipy import fft, ndimage

from micro_sym.classical.filter_bank import WORKERS, _welch_origins, clip_outliers
from micro_sym.classical.lattice_measure import _refine, _snr_db

__all__ = ["DETECTION", "MAX_TILES", "measure_lattice_3d", "welch_power_3d"]

#: Welch tile side (voxels) when not given (clipped to the volume): frequency bins of 1/128 keep the
#: rings of the 3-15 voxel periods of atomic tomography 8-40 bins out, well apart from each other.
DEFAULT_TILE = 128
#: At most this many tiles are read (e.g. the 2 x 2 x 2 corners of a 192³ volume at 50 % overlap).
MAX_TILES = 8
#: A ring must stand this many standard deviations of its shell mean above the baseline.
DETECTION = 5.0
#: Power correlation of neighbouring Hann-windowed frequency bins: per axis the bins of one tile's
#: noise are correlated over ``Σ_a |U(a)|² / U(0)² ≈ 1.94`` bins (U the DFT of the squared window),
#: so a shell of n bins averages about n / 1.94³ independent values.
_HANN_CORRELATION = 1.94 ** 3
#: Half-width (bins) of a ring in the spectrum of a Hann-windowed tile: its main lobe.
_RING_HALF_WIDTH = 2.5
#: Spots of a ring lie within this many bins of its shell: the rounded shell of the radial maximum is
#: within ½ bin of the ring, and the next ring of an fcc lattice ({200} at 2/√3 times {111}) can be as
#: close as 2 bins on a 64-voxel tile.
_SPOT_HALF_WIDTH = 1.5
#: A spectrum bin is a lattice spot when its power is at least this many times the ring's baseline.
_SPOT_EXCESS = 4.0


def measure_lattice_3d(volume, *, min_period: float = 2.5, max_period: float | None = None,
                       tile: int | None = None, workers: int = WORKERS) -> dict:
    """The first lattice ring of a volume.

    Parameters
    ----------
    volume : (Z, Y, X) array, or a lazy one (dask, zarr: anything with ``shape``, ``dtype`` and slicing)
        Any real dtype. Only the Welch tiles (at most :data:`MAX_TILES`) are read.
    min_period, max_period : float
        Search range for the first ring's spacing ``1/f``, voxels (default maximum: a quarter of the
        tile, so a tile holds at least 4 periods).
    tile : int, optional
        Welch tile side (default :data:`DEFAULT_TILE`, clipped to the volume).
    workers : int
        FFT threads.

    Returns
    -------
    dict
        ``found`` (bool); ``period`` (voxels, ``1 / ring_frequency``), ``ring_frequency`` (cycles per
        voxel; also under ``frequency``), ``snr_db`` (ring power over the white-noise floor, as
        :func:`~micro_sym.classical.filter_bank.fringe_snr` in 2D), ``ring_z`` (the ring's excess in
        standard deviations of its shell mean), ``prominence`` (natural log of ring power over the
        baseline) and ``n_spots`` (spots that placed the ring; 0: the radial profile did) where found;
        ``reason`` where not (then ``period`` and the frequencies are None).
    """
    shape = tuple(int(n) for n in volume.shape)
    if len(shape) != 3 or min(shape) < 16:
        return _none(f"need a 3D volume of at least 16³ voxels, got shape {shape}")
    if np.dtype(volume.dtype).kind not in "biuf":
        return _none(f"need real numbers, got dtype {volume.dtype}")
    try:
        power3, n_tiles = welch_power_3d(volume, tile=tile or DEFAULT_TILE, workers=workers)
    except ValueError as err:  # constant wherever sampled
        return _none(str(err))
    t = power3.shape[0]
    radius = _radius(t)
    freq, power, counts = _radial(power3, radius)
    max_period = float(max_period or t / 4)
    logp = np.log(np.maximum(power, power.max() * 1e-15) + 1e-300)
    prom = _prominence(logp)
    ok = (freq >= 1.0 / max_period) & (freq <= min(1.0 / min_period, 0.5))
    # z: excess over the baseline in standard deviations of the shell mean. A real volume's spectrum is
    # symmetric (P(-k) = P(k)): a shell of n bins holds n/2 independent ones, each correlated with
    # its Hann neighbours.
    baseline = np.exp(logp - np.where(np.isfinite(prom), prom, 0.0))
    rel_sd = np.sqrt(_HANN_CORRELATION / np.maximum(counts / 2 * n_tiles, 1.0))
    z = (power - baseline) / (baseline * rel_sd)
    peak = np.zeros(len(freq), bool)
    peak[1:-1] = (logp[1:-1] > logp[:-2]) & (logp[1:-1] >= logp[2:])
    ring = ok & peak & (prom >= math.log(2.0)) & (z >= DETECTION)
    if not ring.any():
        best = int(np.argmax(np.where(ok, prom, -np.inf)))
        return _none(f"no lattice ring stands out of the power spectrum (best shell: {1 / max(freq[best], 1e-9):.3g} "
                     f"voxels, {math.exp(prom[best]) if np.isfinite(prom[best]) else 0:.2g} x its baseline, "
                     f"z = {z[best]:.1f}; need 2 x and z >= {DETECTION:g})")
    i = int(np.argmax(np.where(ring, prom, -np.inf)))
    i = _first_ring(i, ring, prom)
    r, n_spots = _ring_from_spots(power3, radius, i, baseline[i])
    if r is None:
        r = _refine(logp, i)
    f = r / t
    return {"found": True, "period": float(1.0 / f), "ring_frequency": float(f), "frequency": float(f),
            "snr_db": _snr_db(freq, power, f, weights=counts), "ring_z": float(z[i]), "prominence": float(prom[i]),
            "n_spots": int(n_spots)}


def _none(reason: str) -> dict:
    return {"found": False, "period": None, "ring_frequency": None, "frequency": None, "reason": reason}


def welch_power_3d(volume, *, tile: int = DEFAULT_TILE, max_tiles: int = MAX_TILES, workers: int = WORKERS):
    """Welch-averaged 3D power spectrum ``(t, t, t)`` (unshifted, bin ``k`` at index ``k mod t``) of
    at most ``max_tiles`` cubic tiles of side ``t = min(tile, *shape)`` (even), and the tile count.

    Each tile is outlier-clipped (a hot or dead voxel is a delta whose flat spectrum could drown the
    ring, as in 2D), mean-subtracted and Hann-windowed (volume edges and slow backgrounds then leak no
    power into the lattice band).

    Raises
    ------
    ValueError
        The volume is constant wherever sampled.
    """
    shape = tuple(int(n) for n in volume.shape)
    t = int(min(tile, *shape))
    t -= t % 2
    origins = _welch_origins(shape, t, max_tiles)
    h = np.hanning(t).astype(np.float32)
    win = h[:, None, None] * h[None, :, None] * h[None, None, :]
    acc = np.zeros((t, t, t))
    flat = True
    for o in origins:
        x = _read(volume, o, t)
        flat = flat and float(x.max() - x.min()) <= 1e-6 * max(abs(float(x.min())), abs(float(x.max())), 1e-30)
        x = clip_outliers(x)
        acc += np.abs(fft.fftn((x - x.mean()) * win, workers=workers)) ** 2
    if flat:
        raise ValueError("the volume is constant wherever sampled; there is no lattice to measure")
    return acc / len(origins), len(origins)


def _radius(t: int) -> np.ndarray:
    """``|k|`` in frequency bins of every bin of an unshifted ``t³`` spectrum."""
    k = fft.fftfreq(t) * t
    return np.sqrt(k[:, None, None] ** 2 + k[None, :, None] ** 2 + k[None, None, :] ** 2)


def _radial(power3, radius):
    """Shells one bin wide: frequencies (cycles/voxel), mean power and number of bins per shell."""
    t = power3.shape[0]
    n = t // 2 + 1
    rbin = np.rint(radius).astype(np.int64)
    sel = rbin < n
    counts = np.bincount(rbin[sel], minlength=n).astype(np.float64)
    power = np.bincount(rbin[sel], weights=power3[sel], minlength=n) / np.maximum(counts, 1.0)
    return np.arange(n) / t, power, counts


def _read(volume, origin, t: int) -> np.ndarray:
    """One float32 tile (of a numpy or lazy array); non-finite voxels take the tile's finite mean."""
    x = np.asarray(volume[tuple(slice(o, o + t) for o in origin)]).astype(np.float32)
    finite = np.isfinite(x)
    if not finite.all():
        x = np.where(finite, x, np.float32(x[finite].mean()) if finite.any() else np.float32(0))
    return x


def _prominence(logp: np.ndarray, rel: float = 0.25) -> np.ndarray:
    """``log P`` minus the baseline of its neighbourhood, the ring itself left out.

    As 2D's :func:`~micro_sym.classical.filter_bank._prominence`, a running median in relative
    frequency that follows smooth, power-law-like baselines (noise coloured by the PSF, slow
    backgrounds), with two changes for 3D's small tiles: the gap and the neighbourhood are at least
    :data:`_RING_HALF_WIDTH` and twice that many bins (a ring lies a few bins out, where the Hann main
    lobe is wider than 2D's 6 % gap), and the baseline is the mean of the medians below and above
    the ring (both needed). A single median of a lopsided neighbourhood (few shells below a ring near
    the low end of the range) would sit on the lower side of a falling spectrum and make its shoulder
    look like a ring.
    """
    n = len(logp)
    out = np.full(n, -np.inf)
    for i in range(2, n):
        gap = max(0.06 * i, _RING_HALF_WIDTH)
        reach = max(rel * i, 2 * _RING_HALF_WIDTH)
        idx = np.arange(max(int(np.floor(i - reach)), 1), min(int(np.ceil(i + reach)), n - 1) + 1)
        below, above = idx[idx < i - gap], idx[idx > i + gap]
        if len(below) and len(above):
            out[i] = logp[i] - 0.5 * (np.median(logp[below]) + np.median(logp[above]))
    return out


def _ring_from_spots(power3, radius, i: int, baseline: float):
    """Ring radius (bins) from its spots, and how many placed it; ``(None, 0)`` without spots.

    The shell mean places a ring too low on small tiles: a spot smeared by the window over ±1-2 bins
    covers larger radii on its flanks, the shell mean divides by shell sizes growing as ``r²``, and a
    falling envelope (atom form factor, PSF) tilts a broad ring (small grains): several per cent at
    5-10 bins. A spot's own centre lies at the lattice frequency whatever the smearing. The ring is
    the mean radius of the spots within :data:`_SPOT_HALF_WIDTH` of it, weighted by their excess
    power, in a window re-centred on its own result until it settles (a mean shift: a window first
    centred on a shell that is too low holds the ring's spots lopsidedly); it may move at most
    :data:`_RING_HALF_WIDTH` from the shell that was found.
    """
    r_spot, w = _spots(power3, radius, i, baseline)
    r, sel = float(i), np.zeros(len(r_spot), bool)
    for _ in range(20):
        sel = np.abs(r_spot - r) <= _SPOT_HALF_WIDTH
        if not sel.any():
            return None, 0
        r_new = float(np.sum(w[sel] * r_spot[sel]) / np.sum(w[sel]))
        if abs(r_new - i) > _RING_HALF_WIDTH:
            return None, 0
        settled, r = abs(r_new - r) < 0.01, r_new
        if settled:
            break
    return r, int(sel.sum())


def _spots(power3, radius, i: int, baseline: float):
    """Radii (bins) and excess powers of the spectrum's spots around shell ``i``.

    A spot is a local maximum (3³) holding at least :data:`_SPOT_EXCESS` times the ring's baseline
    (pure noise rarely does, after Welch averaging); its centre is refined per axis by a parabola
    through ``log P``.
    """
    t = power3.shape[0]
    near = np.abs(radius - i) <= _RING_HALF_WIDTH + _SPOT_HALF_WIDTH
    big = power3 >= _SPOT_EXCESS * baseline
    idx = np.argwhere(near & big)
    idx = idx[power3[tuple(idx.T)] == ndimage.maximum_filter(power3, size=3, mode="wrap")[tuple(idx.T)]]
    logp = np.log(np.maximum(power3, power3.max() * 1e-15))
    k = np.where(idx > t // 2, idx - t, idx).astype(np.float64)
    b = logp[tuple(idx.T)]
    for axis in range(3):
        step = np.zeros(3, np.int64)
        step[axis] = 1
        a, c = logp[tuple(((idx - step) % t).T)], logp[tuple(((idx + step) % t).T)]
        den = a - 2 * b + c
        k[:, axis] += np.where(den < 0, np.clip(0.5 * (a - c) / np.where(den < 0, den, -1.0), -0.5, 0.5), 0.0)
    return np.linalg.norm(k, axis=1), power3[tuple(idx.T)] - baseline


def _first_ring(i: int, ring: np.ndarray, prom: np.ndarray) -> int:
    """Step down from ring ``i`` to the lowest clearly prominent ring at or above half its frequency.

    Every ratio between the rings of cubic lattices (sc 1 : √2 : √3 : 2, fcc √3 : 2 : √8, bcc √2 : 2 :
    √6) is at most 2 from one ring to the next lower one, so a lower fundamental lies in ``[i/2, i-2]``.
    """
    while True:
        lower = np.flatnonzero(ring[: max(i - 1, 0)])
        lower = lower[(lower >= math.floor(i / 2) - 1) & (prom[lower] >= 0.5 * prom[i])]
        if not len(lower):
            return i
        i = int(lower[0])

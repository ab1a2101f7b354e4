"""Classical (training-free) orientation mapping of lattice images: a symmetric Gabor filter bank.

What a microscopist would do without micro_sym: find the lattice period in the power spectrum, filter
the image with an oriented band-pass bank tuned to that spatial frequency, read the local lattice angle
from the direction of maximum local energy, and segment grains from the orientation field with the
same grain rule as the networks (docs/design.md §3).

Method
------
1. **Period** (:func:`estimate_period`): Welch-averaged, Hann-windowed power spectrum of up to 16 tiles,
   radially averaged; the lattice ring is the most *prominent* peak of ``log P(|f|)`` above a running
   median baseline. Smooth backgrounds only add power near ``f = 0``, shot noise is flat and contrast
   inversion does not change ``|F|``, so none of them moves the peak. A peak at ``f/√2`` (square) or
   ``f/√3`` (hexagonal) that is itself prominent is the true fundamental (strong higher orders).
2. **Filter bank** (:func:`classical_orientation_map`): for each of ``n_angles`` directions ``φ`` in
   ``[0, 360/k)`` a Gaussian band-pass centred at ``f0 (cos φ, sin φ)`` (physical frame, y up). The
   ``k/2`` symmetry-equivalent directions ``φ + j·360/k`` are *summed in energy*, so the energy is
   periodic with ``360/k``. The local energy is the squared envelope ``|I * g_φ|²``: it is band-limited,
   so each filter's envelope is computed by an inverse FFT of only a small box of the spectrum around
   its centre (a demodulated, decimated output), which makes a 2048² image cost one full FFT plus a
   few dozen 512² inverse FFTs.
3. **Sub-degree angle**: with a Gaussian filter the energy of one lattice peak is exactly
   ``exp(κ cos(φ - φ_peak))`` (von Mises) whatever the sampling, so a cosine fit of ``log E`` at the
   maximum and its two neighbouring directions gives the peak direction in closed form. The lattice
   angle is that direction (square) or that direction − 30° (hexagonal: reciprocal vectors sit at
   30° to the real-space basis).
4. **Grains**: each pixel takes the angle of its *dominant* peak, so across a grain boundary the angle
   jumps where the two grains' energies cross (the boundary) instead of drifting over the filter
   window. ``boundary`` is a score of the largest misorientation to a 4-neighbour,
   ``m² / (m² + t²)`` (0.5 at ``m = t``, the grain threshold), and grains come from
   :func:`micro_sym.grains.reconstruct_grains` with that boundary map, exactly as for the networks.

Block-wise use
--------------
:func:`classical_orientation_map` is a pure function of the image array and its parameters; with a
fixed ``period`` its output at a pixel depends only on the input within :func:`classical_halo` px, and
it is computed on a grid decimated by ``decimate`` px anchored at the array origin. A streaming engine
that reads blocks with block origins **and** halo on multiples of :func:`classical_stride` and passes
the same ``period`` (estimate it once with :func:`estimate_period`; it reads at most 16 Welch tiles,
also from a lazy dask/zarr array) gets centre crops equal to the whole-image result: the envelopes are
computed in float64 and the band-passes are plain Gaussians sampled on each FFT grid (no truncation
mask that would depend on the padded size), so tile and whole image agree to ~1e-13 before the float32
energies, i.e. bit for bit in practice. :func:`close_boundaries` (``close=True``) is *not* tile-local:
block-wise runs (``micro-sym segment --method classical``) use ``close=False``.

>>> from micro_sym.synth import Synth2DConfig, synth_2d              # doctest: +SKIP
>>> s = synth_2d(Synth2DConfig(size=(256, 256)), seed=0)           # doctest: +SKIP
>>> out = classical_segment(s.image, lattice="square")             # doctest: +SKIP
>>> sorted(out)                                                     # doctest: +SKIP
['boundary', 'confidence', 'grains', 'orientation', 'period']
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from scipy import fft, ndimage

from micro_sym.errors import MicroSymError
from micro_sym.orientation.symmetry import lattice as find_lattice

#: Two cores are shared by everyone on this machine; FFTs are the only threaded step.
WORKERS = 2
#: Default Gabor envelope sigma, in lattice periods: sets the window (≈ 2.5 periods FWHM of the energy),
#: the angular resolution (energy peak sigma ≈ 1/(2π·√2·sigma) rad ≈ 3.2° at 2 periods) and the noise.
DEFAULT_SIGMA = 1.25
#: Default extra Gaussian smoothing of the energies, in lattice periods (averages shot noise).
DEFAULT_SMOOTH = 0.5
#: Smallest grain kept by :func:`classical_segment` (pixels), as ``micro_sym.inference.whole_image.DEFAULT_MIN_SIZE``.
DEFAULT_MIN_SIZE = 32
# Effective support of each band-pass, in filter sigmas (exp(-4.5²/2) ≈ 4e-5 of the peak): sets the
# decimation, the padding and the halo. The filters themselves are not cut there (a cut on the FFT grid
# would depend on the padded size and break tile = whole-image equality at the 1e-4° level).
_TRUNC = 4.5


# ------------------------------------------------------------------------------------ validation


def _check_image(image, what: str = "image") -> np.ndarray:
    """A finite float32 2D copy of ``image``; user errors as :class:`MicroSymError`."""
    try:
        arr = np.asarray(image)
    except Exception as err:  # ragged lists, objects numpy cannot hold
        raise MicroSymError(f"{what}: not an array ({type(err).__name__})") from None
    if arr.ndim != 2:
        raise MicroSymError(f"{what}: the classical method needs a 2D image, got shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise MicroSymError(f"{what}: needs real numbers, got dtype {arr.dtype}")
    if min(arr.shape) < 16:
        raise MicroSymError(f"{what}: too small ({arr.shape[0]} x {arr.shape[1]}); need at least 16 x 16 pixels")
    arr = arr.astype(np.float32)
    finite = np.isfinite(arr)
    if not finite.any():
        raise MicroSymError(f"{what}: no finite pixels")
    if not finite.all():
        # NaN/inf (e.g. masked or dead pixels): the mean carries no lattice, so it adds no energy.
        arr = np.where(finite, arr, np.float32(arr[finite].mean()))
    lo, hi = float(arr.min()), float(arr.max())
    if hi - lo <= 1e-6 * max(abs(lo), abs(hi), 1e-30):
        raise MicroSymError(f"{what}: image is constant (value {lo:g}); there is no lattice to measure")
    return arr


def _check_lattice(lattice: str) -> int:
    """``k`` of a 2D lattice name (MicroSymError for others)."""
    return find_lattice(lattice, ndim=2).k


def ring_frequency(period: float, lattice: str = "square") -> float:
    """Spatial frequency (cycles/px) of the first reciprocal-lattice ring for lattice constant ``period``.

    Square: ``1/a``. Hexagonal: ``2/(√3 a)`` (row spacing ``√3 a / 2``). Fringes: ``1/a`` (``a`` the
    fringe spacing).
    """
    _check_lattice(lattice)
    return 2.0 / (math.sqrt(3.0) * period) if lattice == "hexagonal" else 1.0 / period


def lattice_constant(ring_frequency: float, lattice: str = "square") -> float:
    """Inverse of :func:`ring_frequency`: the lattice constant (px) whose first ring lies at
    ``ring_frequency`` cycles/px (square and fringes ``1/f``, hexagonal ``2/(√3 f)``)."""
    _check_lattice(lattice)
    return 2.0 / (math.sqrt(3.0) * ring_frequency) if lattice == "hexagonal" else 1.0 / ring_frequency


# ---------------------------------------------------------------------------------------- period


def radial_power_spectrum(image, *, tile: int = 512, max_tiles: int = 16, workers: int = WORKERS):
    """Welch-averaged radial power spectrum of a 2D image.

    Tiles (50 % overlap, evenly spread when there are more than ``max_tiles``) are mean-subtracted and
    Hann-windowed so that image edges and slow backgrounds do not leak power into the lattice band.
    Before that, each tile's outliers are clipped (:func:`clip_outliers`): one saturated pixel is a
    delta whose flat spectrum would otherwise drown the lattice ring (a 65535 pixel in a 20-count
    micrograph holds more power than all its fringes), and every decision built on this spectrum
    (:func:`estimate_period`, :func:`fringe_snr`, hence ``--method auto``) would follow it.

    Parameters
    ----------
    image : (H, W) array, or a lazy 2D array (dask, zarr: anything with ``shape``, ``dtype`` and slicing)
        A lazy array is read tile by tile: only the (at most ``max_tiles``) Welch tiles are loaded,
        each with its non-finite pixels set to the tile's finite mean. For a numpy array the result is
        the same whenever the image is finite.
    tile : int
        Tile side (clipped to the image); the frequency resolution is ``1/tile`` cycles/px.
    max_tiles : int
        Upper bound on the number of tiles averaged (bounds the cost on huge images).

    Returns
    -------
    freq : (n,) float64 cycles per pixel (bin centres, step ``1/tile``)
    power : (n,) float64 mean power per bin
    """
    lazy = not isinstance(image, np.ndarray) and all(hasattr(image, a) for a in ("shape", "dtype", "__getitem__"))
    if lazy:
        shape = _check_lazy(image)
    else:
        img = _check_image(image)
        shape = img.shape
    t = int(min(tile, *shape))
    t -= t % 2
    origins = _welch_origins(shape, t, max_tiles)
    win = np.outer(np.hanning(t), np.hanning(t)).astype(np.float32)
    acc = np.zeros((t, t // 2 + 1))
    flat = True
    for r, c in origins:
        x = _read_lazy_tile(image, r, c, t) if lazy else img[r : r + t, c : c + t]
        flat = flat and float(x.max() - x.min()) <= 1e-6 * max(abs(float(x.min())), abs(float(x.max())), 1e-30)
        x = clip_outliers(x)
        x = (x - x.mean()) * win
        acc += np.abs(fft.rfft2(x, workers=workers)) ** 2
    if lazy and flat:
        raise MicroSymError("image: constant wherever sampled; there is no lattice to measure")
    fy = fft.fftfreq(t)[:, None]
    fx = fft.rfftfreq(t)[None, :]
    rbin = np.rint(np.hypot(fy, fx) * t).astype(np.int64)
    # rfft stores the f_x = 0 and Nyquist columns once, the others stand for two conjugate bins:
    # weight them so the radial mean is over the full plane.
    w = np.full(acc.shape, 2.0)
    w[:, 0] = 1.0
    w[:, -1] = 1.0
    n = t // 2 + 1
    sel = rbin < n
    num = np.bincount(rbin[sel], weights=(acc * w)[sel], minlength=n)
    den = np.bincount(rbin[sel], weights=w[sel], minlength=n)
    power = num / np.maximum(den, 1e-12) / len(origins)
    return np.arange(n) / t, power


#: :func:`clip_outliers` percentiles (per cent) and fence margin (in units of their spread).
_CLIP_PERCENTILES = (0.5, 99.5)
_CLIP_MARGIN = 1.0


def clip_outliers(x: np.ndarray) -> np.ndarray:
    """Clip values far outside the bulk of ``x``: to ``[p0.5 - m, p99.5 + m]`` with ``m = p99.5 - p0.5``.

    The fences sit a full percentile spread beyond the 0.5 and 99.5 percentiles: about 7.7 standard
    deviations for Gaussian noise and beyond the Poisson tails of any dose, so the pixels of a real
    micrograph are left untouched (its spectrum does not move) while saturated, dead or hot pixels (up
    to 0.5 % of the pixels, whatever their values) are pulled in to the fence, where they carry no
    more power than a few noisy pixels.

    >>> x = np.arange(1000.0); x[3] = 1e9
    >>> round(float(clip_outliers(x).max()))
    1984
    """
    lo, hi = np.percentile(x, _CLIP_PERCENTILES)
    margin = _CLIP_MARGIN * (hi - lo)
    return np.clip(x, lo - margin, hi + margin).astype(x.dtype, copy=False)


def _welch_origins(shape, t: int, max_tiles: int) -> list:
    """Top-left corners of the Welch tiles: 50 % overlap, evenly thinned to ``max_tiles``."""
    starts = []
    for n in shape:
        s = np.arange(0, n - t + 1, max(t // 2, 1))
        if s[-1] != n - t:
            s = np.append(s, n - t)
        starts.append(s)
    origins = [tuple(int(v) for v in o) for o in itertools.product(*starts)]
    if len(origins) > max_tiles:
        origins = [origins[i] for i in np.linspace(0, len(origins) - 1, max_tiles).round().astype(int)]
    return origins


def _check_lazy(image, what: str = "image") -> tuple:
    """Shape of a lazy 2D array after the checks :func:`_check_image` makes without reading it."""
    shape = tuple(int(n) for n in image.shape)
    if len(shape) != 2:
        raise MicroSymError(f"{what}: the classical method needs a 2D image, got shape {shape}")
    if np.dtype(image.dtype).kind not in "biuf":
        raise MicroSymError(f"{what}: needs real numbers, got dtype {image.dtype}")
    if min(shape) < 16:
        raise MicroSymError(f"{what}: too small ({shape[0]} x {shape[1]}); need at least 16 x 16 pixels")
    return shape


def _read_lazy_tile(image, r: int, c: int, t: int) -> np.ndarray:
    """One float32 tile of a lazy array; non-finite pixels take the tile's finite mean (0 if none)."""
    x = np.asarray(image[r : r + t, c : c + t]).astype(np.float32)
    finite = np.isfinite(x)
    if not finite.all():
        x = np.where(finite, x, np.float32(x[finite].mean()) if finite.any() else np.float32(0))
    return x


def _prominence(logp: np.ndarray, rel: float = 0.25, gap: float = 0.06) -> np.ndarray:
    """``log P`` minus the median of its neighbourhood ``r·[1-rel, 1+rel]`` outside ``r·[1-gap, 1+gap]``.

    A running median in *relative* frequency follows any smooth, power-law-like baseline (noise
    coloured by the PSF, background gradients) and ignores the peak itself.
    """
    n = len(logp)
    out = np.full(n, -np.inf)
    for i in range(2, n):
        lo, hi = int(np.floor(i * (1 - rel))), int(np.ceil(i * (1 + rel)))
        glo, ghi = i * (1 - gap), i * (1 + gap)
        idx = np.arange(max(lo, 1), min(hi, n - 1) + 1)
        idx = idx[(idx < glo) | (idx > ghi)]
        if len(idx) >= 2:
            out[i] = logp[i] - np.median(logp[idx])
    return out


def estimate_period(image, lattice: str = "square", *, min_period: float = 2.5, max_period: float | None = None,
                    tile: int = 512, workers: int = WORKERS) -> float:
    """Lattice constant (nearest-column spacing, px) from the radially averaged power spectrum.

    Parameters
    ----------
    image : (H, W) array, or a lazy 2D array (dask, zarr)
        Any real dtype; bright- or dark-field; background gradients and shot noise are tolerated.
        At most 16 tiles of ``tile`` px are read (:func:`radial_power_spectrum`), so this is cheap
        on huge lazy inputs too.
    lattice : {"square", "hexagonal"}
        Converts the ring frequency ``f`` to the lattice constant (``1/f`` or ``2/(√3 f)``).
    min_period, max_period : float
        Search range in px (default maximum: a quarter of the tile, so a tile holds ≥ 4 periods).
    tile : int
        Welch tile side.

    Returns
    -------
    float
        Lattice constant in pixels (sub-bin accurate: parabolic fit of ``log P`` at the peak).

    Raises
    ------
    MicroSymError
        No lattice ring stands out of the spectrum (constant image, pure noise, out-of-range period).

    Examples
    --------
    >>> yy, xx = np.mgrid[0:256, 0:256]
    >>> img = np.cos(2 * np.pi * xx / 8) + np.cos(2 * np.pi * yy / 8)
    >>> round(estimate_period(img), 2)
    8.0
    """
    freq, power = radial_power_spectrum(image, tile=tile, workers=workers)
    return _period_from_spectrum(freq, power, lattice, min_period, max_period)


def _period_from_spectrum(freq, power, lattice: str, min_period: float, max_period: float | None) -> float:
    """:func:`estimate_period` given the radial spectrum."""
    k = _check_lattice(lattice)
    t = 2 * (len(freq) - 1)
    logp = np.log(np.maximum(power, power.max() * 1e-15) + 1e-300)
    prom = _prominence(logp)
    max_period = max_period or t / 4
    f_lo = ring_frequency(max_period, lattice)
    f_hi = min(ring_frequency(min_period, lattice), 0.5)
    ok = (freq >= f_lo) & (freq <= f_hi)
    if not ok.any():
        raise MicroSymError(f"image: period range {min_period:g}-{max_period:g} px is empty for a {t}-px tile")
    cand = np.where(ok, prom, -np.inf)
    i = int(np.argmax(cand))
    # ln(2): the ring must carry at least twice the baseline power to count as a lattice.
    if not np.isfinite(cand[i]) or cand[i] < math.log(2.0):
        raise MicroSymError("image: no lattice fringes found in the power spectrum (noise only, or period out of range)")
    # A strong higher order (square (1,1) at √2 f, hexagonal (1,1) at √3 f, or 2f) can outshine the
    # fundamental; prefer a lower ring that is itself clearly a peak.
    i = lower_ring(i, (math.sqrt(3.0), 2.0) if k == 6 else (math.sqrt(2.0), 2.0), prom, ok)
    # Parabolic refinement of log P around the peak bin (sub-bin frequency).
    if 1 <= i < len(freq) - 1:
        a, b, c = logp[i - 1], logp[i], logp[i + 1]
        den = a - 2 * b + c
        off = 0.5 * (a - c) / den if den < 0 else 0.0
        f = (i + float(np.clip(off, -0.5, 0.5))) / t
    else:
        f = i / t
    return float(lattice_constant(f, lattice))


def lower_ring(i: int, ratios, prom: np.ndarray, ok: np.ndarray, first: int = 0) -> int:
    """The bin of a ring at ``i / ratio`` (the first of ``ratios`` that has one, within ±1 bin, from bin
    ``first`` on, inside the search range ``ok``) that is itself clearly a peak: at least ln 2 prominent
    and half as prominent as bin ``i``; else ``i``."""
    for ratio in ratios:
        j = int(round(i / ratio))
        win = np.arange(max(j - 1, first), min(j + 2, len(prom)))
        win = win[ok[win]]
        if len(win):
            jj = int(win[np.argmax(prom[win])])
            if prom[jj] >= max(math.log(2.0), 0.5 * prom[i]):
                return jj
    return i


def fringe_snr(image, lattice: str = "square", *, tile: int = 512, workers: int = WORKERS) -> tuple[float, float]:
    """Signal-to-noise ratio of the lattice fringes, in dB, and the lattice period, from the power spectrum.

    Shot noise is white, so its power per frequency bin, ``N``, is measured where a lattice image has
    no fringes: at high frequency, ``f >= max(0.35, 1.3 f0)`` cycles/px (the lower 20 % of the radial
    spectrum there, to skip higher-order lattice rings). The fringe power is the excess over ``N`` in
    the annulus ``0.75-1.25 f0`` around the first ring ``f0``, summed over the annulus, relative to
    the noise in the same annulus: ``SNR = Σ (P - N) / Σ N``. It falls with dose (about 3 dB per
    halving) and with blur (the PSF attenuates the fringes, not the noise), does not depend on how
    the ring is spread over grain orientations or grain sizes, and is invariant to intensity scale,
    offset and contrast inversion. (Noise correlated by the detector is not white and would read too
    optimistic.)

    Parameters
    ----------
    image : (H, W) array or lazy 2D array
        As for :func:`estimate_period` (at most 16 Welch tiles are read).
    lattice : {"square", "hexagonal"}

    Returns
    -------
    snr_db : float
        ``10 log10(SNR)``; -30 when the ring holds no excess power.
    period : float
        Lattice constant in px, as :func:`estimate_period`.

    Raises
    ------
    MicroSymError
        No lattice ring in the spectrum (as :func:`estimate_period`).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> yy, xx = np.mgrid[0:256, 0:256]
    >>> clean = 2 + np.cos(2 * np.pi * xx / 8) + np.cos(2 * np.pi * yy / 8)
    >>> low, high = (fringe_snr(rng.poisson(d * clean))[0] for d in (2, 50))
    >>> bool(high > low + 10)
    True
    """
    freq, power = radial_power_spectrum(image, tile=tile, workers=workers)
    period = _period_from_spectrum(freq, power, lattice, 2.5, None)
    f0 = ring_frequency(period, lattice)
    floor_band = freq >= max(0.35, 1.3 * f0)
    if floor_band.sum() < 4:  # a very fine lattice: its first ring reaches the top band
        floor_band = freq >= freq[-max(4, len(freq) // 10)]
    noise = float(np.percentile(power[floor_band], 20))
    ring = (freq > 0.75 * f0) & (freq < 1.25 * f0)
    # Radial bins stand for annuli of circumference ∝ f: weight by f to sum over the 2D annulus.
    w = freq[ring]
    snr = float(np.sum((power[ring] - noise) * w) / max(noise * np.sum(w), 1e-300))
    return 10.0 * math.log10(max(snr, 1e-3)), period


# ----------------------------------------------------------------------------------- filter bank


def _params(period: float, lattice: str, sigma: float, smooth: float, decimate: int | None):
    """Derived filter parameters shared by the map and the halo computations."""
    if not (np.isfinite(period) and period >= 2.0):
        raise MicroSymError(f"period: need a lattice constant of at least 2 px, got {period}")
    if sigma <= 0.5 or smooth < 0:
        raise MicroSymError(f"sigma must exceed 0.5 periods and smooth be >= 0 (got {sigma}, {smooth})")
    f0 = ring_frequency(period, lattice)
    s_px = sigma * period  # spatial sigma of the Gabor envelope
    sf = 1.0 / (2.0 * math.pi * s_px)  # its frequency sigma
    if decimate is None:
        # |envelope|² has frequency support ±2·_TRUNC·sf; sample it at ≥ 1.1× its Nyquist rate.
        decimate = max(1, int(1.0 / (2.2 * 2 * _TRUNC * sf)))
    decimate = int(decimate)
    if decimate < 1:
        raise MicroSymError(f"decimate: must be >= 1, got {decimate}")
    if f0 + _TRUNC * sf > 0.5 * 1.05:
        raise MicroSymError(f"period: {period:g} px is too fine for sigma={sigma:g} (filter passes Nyquist)")
    return f0, s_px, sf, decimate


def classical_stride(period: float, *, lattice: str = "square", sigma: float = DEFAULT_SIGMA,
                     decimate: int | None = None) -> int:
    """Decimation step (px) of the internal energy grid: block origins and halos must be multiples of it."""
    return _params(period, lattice, sigma, 0.0, decimate)[3]


def classical_halo(period: float, *, lattice: str = "square", sigma: float = DEFAULT_SIGMA,
                   smooth: float = DEFAULT_SMOOTH, decimate: int | None = None) -> int:
    """Receptive radius (px) of :func:`classical_orientation_map`, rounded up to :func:`classical_stride`.

    The sum of the supports of each step: background high-pass (4 periods), Gabor envelope
    (``_TRUNC`` sigmas), energy smoothing (4 sigmas), bilinear upsampling (one grid step) and the
    neighbour used by the boundary score (1 px). Beyond it the influence is below ~1e-4 relative.

    >>> classical_halo(8.0)
    99
    """
    f0, s_px, sf, d = _params(period, lattice, sigma, smooth, decimate)
    r = 4 * period + _TRUNC * s_px + 4 * smooth * period + d + 1
    return int(math.ceil(r / d) * d)


def _directions(k: int, n_angles: int) -> np.ndarray:
    """Physical directions (degrees) of every filter: ``(n_angles, k/2)``, angle j then symmetric copies."""
    base = np.arange(n_angles) * (360.0 / k) / n_angles
    return base[:, None] + np.arange(k // 2)[None, :] * (360.0 / k)


def _energy_stack(img, f0, sf, k, n_angles, d, pad, smooth_px, workers):
    """Local k-fold-symmetric ring energy ``E[j]`` on the decimated grid, shape ``(n_angles, Mh, Mw)``."""
    h, w = img.shape
    # The padded size: leading pad fixed (keeps the grid anchored), trailing pad up to a fast FFT size
    # that is a multiple of the decimation.
    sizes = []
    for n in (h, w):
        m = fft.next_fast_len(int(math.ceil((n + 2 * pad) / d)))
        sizes.append(m * d)
    hp, wp = sizes
    # float64 (complex128 spectrum): rounding differs between FFT sizes, and a tile and the whole image
    # have different padded sizes; at float32 precision the peak fit turns that into up to ~3e-4°.
    buf = np.zeros((hp, wp), np.float64)
    buf[pad : pad + h, pad : pad + w] = img
    spec = fft.fft2(buf, workers=workers)
    del buf
    mh, mw = hp // d, wp // d
    # Box half-size (bins) around each filter centre: the filter support, as the box sets the output
    # grid too (box side = decimated grid size).
    rows_off = np.arange(mh) - mh // 2
    cols_off = np.arange(mw) - mw // 2
    dirs = _directions(k, n_angles)
    energy = np.empty((n_angles, mh, mw), np.float32)
    for j in range(n_angles):
        acc = np.zeros((mh, mw), np.float64)
        for phi in dirs[j]:
            t = math.radians(phi)
            # Physical (f_x, f_y) -> array (f_row, f_col) = (-f_y, f_x): rows count downwards.
            fr, fc = -f0 * math.sin(t), f0 * math.cos(t)
            r0, c0 = int(round(fr * hp)), int(round(fc * wp))
            ri = r0 + rows_off
            ci = c0 + cols_off
            box = spec[np.ix_(ri % hp, ci % wp)]
            g = np.exp(-(((ri / hp - fr) ** 2)[:, None] + ((ci / wp - fc) ** 2)[None, :]) / (2 * sf * sf))
            # No cut-off mask: with the default decimation the box edge is >= 2.2·_TRUNC filter sigmas
            # out (weight < 1e-20), and a mask on the FFT grid would make the filter depend on the
            # padded size (tile != whole image).
            box *= g
            # Put the box centre at index 0 so the decimated inverse FFT sees the right frequencies
            # (the constant modulation left over does not change |env|²).
            env = fft.ifft2(np.fft.ifftshift(box), workers=workers)
            acc += env.real**2 + env.imag**2
        energy[j] = acc  # float32 from float64: equal tiles give equal energies
    if smooth_px > 0:
        ndimage.gaussian_filter(energy, sigma=(0, smooth_px / d, smooth_px / d), output=energy, mode="constant")
    return energy


def _upsample_axis(a, d, pad, start, n, axis):
    """Linear interpolation of ``a`` along ``axis`` onto full-res indices ``start..start+n-1``.

    Full-res index ``i`` sits at grid coordinate ``(i + pad) / d``. Indices with the same phase
    ``(i + pad) % d`` share one weight and consecutive grid cells, so each phase is two strided
    slices and one blend: no fancy indexing (which dominated the run time).
    """
    a = np.moveaxis(a, axis, -1)
    m = a.shape[-1]
    out = np.empty(a.shape[:-1] + (n,), np.float32)
    for ph in range(d):
        first = (ph - (start + pad)) % d  # first output index with this phase
        if first >= n:
            continue
        cnt = (n - 1 - first) // d + 1
        g0 = (start + first + pad) // d
        lo = np.clip(np.arange(g0, g0 + cnt), 0, m - 2)
        w = np.float32(ph / d)
        if lo[0] == g0 and lo[-1] == g0 + cnt - 1:  # the common case: a contiguous run of cells
            left, right = a[..., g0 : g0 + cnt], a[..., g0 + 1 : g0 + cnt + 1]
        else:
            left, right = a[..., lo], a[..., lo + 1]
        out[..., first::d] = left * (1 - w) + right * w if w else left
    return np.moveaxis(out, -1, axis)


def _upsample_rows(energy, d, pad, r0, r1, w):
    """Bilinear interpolation of the decimated stack onto full-resolution rows ``r0:r1`` (all columns)."""
    g_lo = max((r0 + pad) // d, 0)
    g_hi = min((r1 - 1 + pad) // d + 2, energy.shape[1])
    rows = _upsample_axis(energy[:, g_lo:g_hi], d, pad - g_lo * d, r0, r1 - r0, axis=1)
    return _upsample_axis(rows, d, pad, 0, w, axis=2)


def _peak_angles(e, k, n_angles):
    """Dominant-peak angle (deg, physical direction mod 360/k) and confidence from a stack ``(n, ...)``."""
    step = 360.0 / k / n_angles
    floor = e.min(axis=0)
    peak = e.max(axis=0)
    j = e.argmax(axis=0)
    jm, jp = (j - 1) % n_angles, (j + 1) % n_angles
    tiny = np.float32(1e-12) * np.maximum(peak, np.float32(1e-30))
    # Subtract the flat noise floor (white noise fills every direction equally) before the log fit.
    take = lambda idx: np.take_along_axis(e, idx[None], 0)[0] - floor + tiny  # noqa: E731
    l0, lm, lp = np.log(take(j)), np.log(take(jm)), np.log(take(jp))
    dr = math.radians(step)
    c = (lp - lm) / (2 * math.sin(dr))
    b = (lp + lm - 2 * l0) / (2 * (math.cos(dr) - 1))
    off = np.degrees(np.arctan2(c, np.maximum(b, 1e-12)))
    off = np.clip(off, -step, step)
    phi = np.mod(j * step + off, 360.0 / k)
    # Confidence: k-fold angular coherence of the floor-free energy (1 = one sharp peak; two grains in
    # the window or pure noise lower it).
    ang = np.deg2rad(np.arange(n_angles) * step * k).astype(np.float32)
    ef = e - floor[None]
    tot = ef.sum(axis=0)
    cc = np.tensordot(np.cos(ang), ef, axes=(0, 0))
    ss = np.tensordot(np.sin(ang), ef, axes=(0, 0))
    conf = np.hypot(cc, ss) / np.maximum(tot, tiny)
    return phi, conf, peak


def boundary_score(orientation, k: int, threshold: float = 5.0) -> np.ndarray:
    """Boundary score from the largest misorientation ``m`` to a 4-neighbour: ``m² / (m² + t²)``.

    It is 0.5 exactly where ``m`` equals the grain threshold ``t``, so ``score >= 0.5`` marks both
    sides of every place where the grain rule would split (a 2-px band, like the training target).
    NaN angles count as boundary (score 1).
    """
    o = np.asarray(orientation, np.float64)
    from micro_sym.orientation import misorientation_2d

    m = np.zeros(o.shape)
    dy = misorientation_2d(o[1:], o[:-1], k)
    dx = misorientation_2d(o[:, 1:], o[:, :-1], k)
    dy = np.where(np.isnan(dy), 180.0, dy)
    dx = np.where(np.isnan(dx), 180.0, dx)
    m[1:] = np.maximum(m[1:], dy)
    m[:-1] = np.maximum(m[:-1], dy)
    m[:, 1:] = np.maximum(m[:, 1:], dx)
    m[:, :-1] = np.maximum(m[:, :-1], dx)
    m[np.isnan(o)] = 180.0
    m2 = m * m
    return (m2 / (m2 + threshold * threshold)).astype(np.float32)


def close_boundaries(orientation, confidence, score, lattice: str = "square", *, threshold: float = 5.0,
                     min_marker: int = 64, marker_fraction: float = 0.75, erode: int = 0) -> np.ndarray:
    """Close the gaps of an orientation-jump boundary score with a watershed of the confidence valleys.

    The angle of the dominant peak jumps sharply across most boundaries, but where two grains' energy
    peaks are only a few filter widths apart (low-angle boundaries, triple junctions) it drifts
    instead, leaving gaps through which grains would leak into each other. The energy's angular
    coherence (``confidence``) drops along *every* boundary, so grain interiors (confident, no jump)
    seed a watershed of ``(1 - confidence) + score``; its region borders run along the jumps where
    there are jumps and along the confidence valleys elsewhere, and they are always closed.

    Parameters
    ----------
    orientation, confidence, score : (H, W) arrays
        From :func:`classical_orientation_map` (``score`` = :func:`boundary_score`).
    lattice : {"square", "hexagonal"}
    threshold : float
        Grain misorientation threshold (deg) used to split the seeds.
    min_marker : int
        Seeds smaller than this (px) are dropped (noise specks in the boundary zones).
    marker_fraction : float
        Seeds are pixels with confidence above this fraction of the image's 75th-percentile
        confidence (adapts to the dose: interiors reach ~0.95 at high dose, ~0.75 at 2 counts/px).

    erode : int
        Radius (px) by which the confident interior is eroded before labelling seeds.

    Returns
    -------
    (H, W) float32 boundary score, ``>= 0.5`` on a closed 2-px band around every watershed region.
    """
    from skimage.segmentation import watershed

    from micro_sym.grains import reconstruct_grains

    conf = np.asarray(confidence, np.float32)
    score = np.asarray(score, np.float32)
    level = marker_fraction * float(np.percentile(conf, 75))
    interior = (conf >= level) & (score < 0.5)
    if erode > 0:
        # Cut the narrow confident bridges that cross boundary gaps, so that seeds stay in one grain.
        interior = ndimage.binary_erosion(interior, structure=_disk(erode), border_value=1)
    markers = reconstruct_grains(orientation, symmetry=lattice, threshold=threshold, connectivity=1,
                                 mask=interior, min_size=min_marker, small="drop")
    if markers.max() < 2:
        return score
    regions = watershed((1.0 - conf) + score, markers.astype(np.int32))
    regions = _merge_regions(regions, orientation, conf, _check_lattice(lattice), threshold)
    band = np.zeros(regions.shape, bool)
    dy = regions[1:] != regions[:-1]
    dx = regions[:, 1:] != regions[:, :-1]
    band[1:] |= dy
    band[:-1] |= dy
    band[:, 1:] |= dx
    band[:, :-1] |= dx
    # On the band: 0.5 plus how little the energy there looks like one lattice.
    return np.maximum(score, np.where(band, 0.5 + 0.5 * (1.0 - conf), 0.0)).astype(np.float32)


def _disk(r: int) -> np.ndarray:
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return xx * xx + yy * yy <= r * r


def _merge_regions(regions, orientation, conf, k: int, threshold: float) -> np.ndarray:
    """Merge touching watershed regions whose mean orientations differ by less than ``threshold``.

    The grain rule joins neighbours closer than the threshold; two seeds of one grain (split by a
    spurious confidence dip) must not leave a boundary between them. Means are confidence-weighted
    averages of ``(cos kθ, sin kθ)``.
    """
    from scipy import sparse
    from scipy.sparse.csgraph import connected_components

    from micro_sym.orientation import misorientation_2d

    n = int(regions.max()) + 1
    t = np.deg2rad(np.asarray(orientation, np.float64)) * k
    w = np.asarray(conf, np.float64).ravel() ** 2
    lab = regions.ravel()
    c = np.bincount(lab, weights=w * np.cos(t).ravel(), minlength=n)
    s = np.bincount(lab, weights=w * np.sin(t).ravel(), minlength=n)
    mean = np.mod(np.rad2deg(np.arctan2(s, c)) / k, 360.0 / k)
    pairs = []
    for a, b in ((regions[1:], regions[:-1]), (regions[:, 1:], regions[:, :-1])):
        d = a != b
        pairs.append(np.stack([a[d], b[d]], -1))
    pairs = np.unique(np.sort(np.concatenate(pairs), axis=1), axis=0)
    close = misorientation_2d(mean[pairs[:, 0]], mean[pairs[:, 1]], k) < threshold
    p = pairs[close]
    graph = sparse.coo_matrix((np.ones(len(p)), (p[:, 0], p[:, 1])), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    return comp[regions]


def classical_orientation_map(image, *, lattice: str = "square", period: float | None = None,
                              sigma: float = DEFAULT_SIGMA, smooth: float = DEFAULT_SMOOTH,
                              n_angles: int | None = None, decimate: int | None = None,
                              threshold: float = 5.0, close: bool = True, erode: float = 0.5,
                              marker_fraction: float = 0.95,
                              workers: int = WORKERS) -> dict:
    """Orientation, confidence and boundary maps of a lattice image by a symmetric Gabor filter bank.

    Parameters
    ----------
    image : (H, W) array
        Micrograph, any real dtype, bright or dark field (the result is invariant to ``I -> c - I``).
    lattice : {"square", "hexagonal"}
        Symmetry of the projected lattice: angles are mod 90° (k = 4) or mod 60° (k = 6).
    period : float, optional
        Lattice constant in px; estimated with :func:`estimate_period` when omitted. Pass it
        explicitly when processing blocks of one image.
    sigma : float
        Gabor envelope sigma in lattice periods (window; larger = less noise, coarser in space,
        finer in angle).
    smooth : float
        Extra Gaussian smoothing of the local energy, in lattice periods.
    n_angles : int, optional
        Filters per 360/k (default: two per energy-peak sigma, at least 8).
    decimate : int, optional
        Step of the internal energy grid (default from the filter bandwidth; 1 = full resolution).
    threshold : float
        Misorientation (deg) at which :func:`boundary_score` reaches 0.5.
    workers : int
        FFT threads.

    Returns
    -------
    dict
        ``orientation`` float32 degrees in ``[0, 360/k)``; ``confidence`` float32 in ``[0, 1]``
        (angular coherence of the local energy); ``boundary`` float32 score in ``[0, 1]``
        (:func:`boundary_score`); ``energy`` float32 peak ring energy (arbitrary units, useful to
        mask vacuum); ``period`` float (px); ``halo`` int (receptive radius, px).

    Raises
    ------
    MicroSymError
        Not a 2D real image, constant image, no lattice found, unknown lattice.

    Examples
    --------
    >>> yy, xx = np.mgrid[0:128, 0:128]
    >>> t = np.deg2rad(20.0)
    >>> x, y = xx, -yy  # physical frame: y up
    >>> u, v = x * np.cos(t) + y * np.sin(t), -x * np.sin(t) + y * np.cos(t)
    >>> img = np.cos(2 * np.pi * u / 8) + np.cos(2 * np.pi * v / 8)
    >>> out = classical_orientation_map(img, period=8.0)
    >>> round(float(np.median(out["orientation"])), 1)
    20.0
    """
    k = _check_lattice(lattice)
    img = _check_image(image)
    if period is None:
        period = estimate_period(img, lattice, workers=workers)
    period = float(period)
    f0, s_px, sf, d = _params(period, lattice, sigma, smooth, decimate)
    if n_angles is None:
        # Energy peak angular sigma: sf / (f0 √2) rad; one sample per sigma is enough, as the von
        # Mises fit is exact for any spacing and the neighbours still hold 60 % of the peak.
        peak_sigma = math.degrees(sf / (f0 * math.sqrt(2.0)))
        n_angles = max(8, int(math.ceil((360.0 / k) / peak_sigma)))
        n_angles = min(n_angles, 90)
    n_angles = int(n_angles)
    if n_angles < 3:
        raise MicroSymError(f"n_angles: need at least 3 filters, got {n_angles}")
    # Remove the local mean (slow background) so that zero padding adds no step at the image edge.
    bg = ndimage.gaussian_filter(img, sigma=period, mode="reflect", truncate=4.0)
    hp = img - bg
    pad = int(math.ceil((_TRUNC * s_px + 4 * smooth * period) / d) * d)
    energy = _energy_stack(hp, f0, sf, k, n_angles, d, pad, smooth * period, workers)
    h, w = img.shape
    orient = np.empty((h, w), np.float32)
    conf = np.empty((h, w), np.float32)
    peak = np.empty((h, w), np.float32)
    # Row strips bound the full-resolution (n_angles, rows, W) stack to ~32 MB.
    rows = max(8, int(8e6 // max(n_angles * w, 1)))
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        e = _upsample_rows(energy, d, pad, r0, r1, w)
        phi, c, p = _peak_angles(e, k, n_angles)
        orient[r0:r1], conf[r0:r1], peak[r0:r1] = phi, c, p
    if lattice == "hexagonal":
        # Reciprocal vectors of a hexagonal lattice are at 30° to the real-space basis vectors.
        orient = np.mod(orient - 30.0, 60.0).astype(np.float32)
    orient[orient >= 360.0 / k] = 0.0  # float32 rounding of values just below 360/k
    conf = np.clip(conf, 0, 1).astype(np.float32)
    boundary = boundary_score(orient, k, threshold)
    if close:
        boundary = close_boundaries(orient, conf, boundary, lattice, threshold=threshold,
                                    min_marker=int(max(16, period * period)), erode=int(round(erode * period)), marker_fraction=marker_fraction)
    return {
        "orientation": orient,
        "confidence": conf,
        "boundary": boundary,
        "energy": peak,
        "period": period,
        "halo": classical_halo(period, lattice=lattice, sigma=sigma, smooth=smooth, decimate=d),
    }


def classical_segment(image, *, lattice: str = "square", period: float | None = None, threshold: float = 5.0,
                      min_size: int = DEFAULT_MIN_SIZE, boundary_threshold: float = 0.5, **kwargs) -> dict:
    """:func:`classical_orientation_map` plus grains by the networks' grain rule (docs/design.md §3).

    Grains are :func:`micro_sym.grains.reconstruct_grains` of the orientation map with 4-connectivity,
    ``threshold`` degrees, the boundary map at ``boundary_threshold`` and small grains merged.

    Parameters
    ----------
    image : (H, W) array
    lattice, period : see :func:`classical_orientation_map`
    threshold : float
        Grain misorientation threshold (degrees).
    min_size : int
        Grains with fewer pixels are merged into a neighbour.
    boundary_threshold : float
    **kwargs
        Passed to :func:`classical_orientation_map` (``sigma``, ``smooth``, ``n_angles``, ...).

    Returns
    -------
    dict
        The maps of :func:`classical_orientation_map` plus ``grains`` (uint32, 0 = boundary, ids from 1).
    """
    from micro_sym.grains import reconstruct_grains

    out = classical_orientation_map(image, lattice=lattice, period=period, threshold=threshold, **kwargs)
    out["grains"] = reconstruct_grains(
        out["orientation"], symmetry=lattice, threshold=threshold, connectivity=1, boundary=out["boundary"],
        boundary_threshold=boundary_threshold, min_size=min_size, small="merge",
    ).astype(np.uint32)
    return out

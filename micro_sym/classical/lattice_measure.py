"""Lattice family (square, hexagonal or one set of fringes) and period of a micrograph, from its power spectrum.

The rest of micro_sym needs two numbers before it can map orientations: the lattice *period* (to resample
an image to a network's canonical period, or to tune the Gabor bank of
:mod:`micro_sym.classical.filter_bank`) and the rotational order ``k`` of the pattern (the angle is taken
modulo ``360/k``). :func:`measure_lattice` measures both without being told the lattice.

Method
------
1. **Ring** (:func:`~micro_sym.classical.filter_bank.radial_power_spectrum`): the Welch radial spectrum
   of at most 16 tiles; its most prominent peak in the period range is the strongest ring ``f_s``
   (the fundamental or a higher order: the family is the same for every order of one lattice).
2. **Family** from the *angular* distribution of the power on that ring, measured in small sub-tiles
   of the Welch tiles (:data:`ANGULAR_PERIODS` periods wide, so that a sub-tile mostly sees one grain;
   over a whole polycrystal the ring is angularly uniform). A power spectrum is centro-symmetric, so
   the ring profile ``P(φ)`` has period π and only even angular harmonics ``c_m``. One set of
   fringes puts its power at one direction: every even harmonic is present (``|c_m| ≈ c_0``). A
   square lattice's profile has period 90°: ``c_2 = c_6 = 0``, ``c_4 ≠ 0``; a hexagonal one (also a
   honeycomb: Friedel symmetry makes its 3-fold spot intensities 6-fold) has period 60°:
   ``c_2 = c_4 = 0``, ``c_6 ≠ 0``. Several grains in one sub-tile add profiles of the same symmetry,
   so mixing weakens the evidence but never fakes another family. The score of order ``m`` is the
   root of ``Σ (|c_m|² - V) / Σ c_0²`` over the sub-tiles: a ring-power-weighted mean of
   ``|c_m / c_0|²`` from which the expected noise term ``V`` of each sub-tile has been removed (the
   speckle variance of its ring pixels, computed from its noise floor and the Hann window's spectral
   correlation), so that shot noise, which feeds every harmonic alike, is not read as symmetry. The
   same sub-tiles give the detection test: the ring's excess power must exceed 5 standard deviations
   of its noise (the prominence threshold of the radial spectrum alone lets a coarse low-frequency
   bin of pure noise through).
3. **Decision**: a k-fold lattice has no 2nd harmonic while fringes have it as strongly as the 4th and
   6th, so the image is ``"fringes"`` when ``score_2`` is at least half of ``max(score_4, score_6)``,
   else the larger of ``score_4`` (square) and ``score_6`` (hexagonal). When no score stands out
   of the noise (a ring with no angular structure even within a sub-tile), the second ring of the
   radial spectrum decides: square rings sit at ``f, √2 f, 2f``, hexagonal ones at ``f, √3 f, 2f``.
4. **Period** in the family's convention: for square and hexagonal exactly
   :func:`~micro_sym.classical.filter_bank.estimate_period` of that lattice (same spectrum, same
   fundamental-ring rule); for fringes the fringe spacing ``1/f`` (the strongest ring in the fringes'
   period range, or the one at ``f/2`` when that is itself clearly a peak, as estimate_period does).

See docs/design.md §6 for where the product uses the measurement.

>>> yy, xx = np.mgrid[0:256, 0:256]
>>> m = measure_lattice(np.cos(2 * np.pi * xx / 8) + np.cos(2 * np.pi * yy / 8))
>>> m.lattice, m.k, round(m.period, 2)
('square', 4, 8.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import fft

from micro_sym.classical.filter_bank import (
    WORKERS,
    _check_image,
    _period_from_spectrum,
    _prominence,
    _read_lazy_tile,
    _welch_origins,
    clip_outliers,
    lower_ring,
    radial_power_spectrum,
    ring_frequency,
)
from micro_sym.classical.grain_lattice import lattice_order
from micro_sym.errors import MicroSymError

__all__ = ["ANGULAR_PERIODS", "LatticeMeasurement", "measure_lattice"]

#: Side of the sub-tiles in which the angular profile of the ring is measured, in periods of the
#: strongest ring: small enough that a sub-tile is mostly one grain, large enough that the ring sits
#: this many frequency bins out, where a Hann-windowed spot is only a few degrees wide.
ANGULAR_PERIODS = 16
#: Welch tile side when ``tile`` is not given (the default of :func:`estimate_period`, so that the
#: periods agree).
_WELCH_TILE = 512
#: Bounds on the number of sub-tiles (cost) and their side in px.
_MAX_SUBTILES = 256
_MIN_SUBTILE = 32
#: Radial sigma (frequency bins) of the ring's weight: wide enough for a spot's Hann main lobe, and a
#: Gaussian of >= 1 bin sums over the square pixel grid with no angular aliasing (the grid's own 4-fold
#: pattern is suppressed by ~exp(-2π²)), so a uniform ring yields no fake square symmetry.
_RING_SIGMA = 1.0
#: Decision threshold of ``score_2 / max(score_4, score_6)``: ≈ 1 for fringes (all even harmonics
#: alike), ≈ 0 for a k-fold lattice; the midpoint separates them.
_FRINGE_RATIO = 0.5
#: A score counts when its square stands this many standard errors above zero.
_SIGNIFICANCE = 3.0
#: The ring must hold this many standard deviations of excess power over the noise floor (5 sigma: a
#: chance excess this large among the few hundred bins searched is practically impossible).
_DETECTION = 5.0



@dataclass(frozen=True)
class LatticeMeasurement:
    """What :func:`measure_lattice` found.

    Attributes
    ----------
    lattice : str
        ``"square"``, ``"hexagonal"`` (also honeycomb / MoS2-type) or ``"fringes"`` (one set of lattice
        planes per region). The first two are :func:`micro_sym.orientation.symmetry.lattice` names;
        there is no ``"fringes"`` lattice object.
    k : int
        Rotational order of the pattern: 4, 6 or 2 (angles are defined modulo ``360/k``).
    period : float
        Pixels. Square and hexagonal: the lattice constant (nearest-column spacing) as
        :func:`~micro_sym.classical.filter_bank.estimate_period` defines it for that lattice
        (``1/f`` and ``2/(√3 f)``); fringes: the fringe spacing ``1/f``.
    ring_frequency : float
        Frequency of the first ring ``f``, cycles/px.
    snr_db : float
        Ring power over the white-noise floor, dB, as
        :func:`~micro_sym.classical.filter_bank.fringe_snr`.
    scores : dict
        Evidence, plain floats: ``"2"``, ``"4"``, ``"6"`` the noise-corrected angular harmonics of the
        ring (about 1 for a perfect, single-grain pattern of that order, 0 when absent);
        ``"noise"`` the level noise alone gives a score (one standard error); ``"ring_z"`` the ring's
        excess power in standard deviations of its noise (detection needs 5); ``"ring_sqrt2"`` and
        ``"ring_sqrt3"`` the prominence (natural log of power over the baseline) of the radial
        spectrum at the square and hexagonal second-ring positions of the strongest ring.
    """

    lattice: str
    k: int
    period: float
    ring_frequency: float
    snr_db: float
    scores: dict = field(default_factory=dict)

    def family(self, fringes: str = "square") -> str:
        """The lattice family to map the image with: ``lattice``, or ``fringes`` (a family name) where
        only one set of planes shows (fringes carry no family)."""
        return self.lattice if self.lattice in ("square", "hexagonal") else fringes

    def as_dict(self) -> dict:
        """Plain, JSON-able dict of the measurement."""
        return {
            "lattice": str(self.lattice),
            "k": int(self.k),
            "period": float(self.period),
            "ring_frequency": float(self.ring_frequency),
            "snr_db": float(self.snr_db),
            "scores": {str(key): float(v) for key, v in self.scores.items()},
        }


def measure_lattice(image, *, min_period: float = 2.5, max_period: float | None = None, tile: int | None = None,
                    workers: int = WORKERS) -> LatticeMeasurement:
    """Lattice family (square, hexagonal or fringes) and period of a micrograph.

    Parameters
    ----------
    image : (H, W) array, or a lazy 2D array (dask, zarr: anything with ``shape``, ``dtype`` and slicing)
        Any real dtype, bright or dark field. A lazy array is read once, tile by tile: only the (at
        most 16) Welch tiles of :func:`~micro_sym.classical.filter_bank.radial_power_spectrum`.
    min_period, max_period : float
        Search range in px, in the convention of the returned ``period`` (default maximum: a quarter
        of the Welch tile).
    tile : int, optional
        Welch tile side (default 512, as :func:`~micro_sym.classical.filter_bank.estimate_period`).
    workers : int
        FFT threads.

    Returns
    -------
    LatticeMeasurement

    Raises
    ------
    MicroSymError
        Not a 2D real image, a constant image, or no lattice ring stands out of the power spectrum
        (pure noise, period out of range).

    Examples
    --------
    >>> yy, xx = np.mgrid[0:256, 0:256]
    >>> m = measure_lattice(np.cos(2 * np.pi * (xx + 0.3 * yy) / 10))
    >>> m.lattice, m.k, round(m.period, 1)
    ('fringes', 2, 9.6)
    """
    if not (np.isfinite(min_period) and min_period > 0):
        raise MicroSymError(f"min_period: need a positive number of px, got {min_period}")
    if max_period is not None and not (np.isfinite(max_period) and max_period > min_period):
        raise MicroSymError(f"max_period: need a number of px above min_period={min_period:g}, got {max_period}")
    source = _tile_source(image)
    tile = _WELCH_TILE if tile is None else int(tile)
    freq, power = radial_power_spectrum(source, tile=tile, workers=workers)
    t = 2 * (len(freq) - 1)
    logp = np.log(np.maximum(power, power.max() * 1e-15) + 1e-300)
    prom = _prominence(logp)
    max_period = max_period or t / 4
    # The widest band any family allows (1/f for fringes and square, 2/(√3 f) for hexagonal).
    i_strong = _strongest_ring(freq, prom, 1.0 / max_period, ring_frequency(min_period, "hexagonal"), min_period,
                               max_period)
    f_strong = _refine(logp, i_strong) / t
    harm = _ring_harmonics(source, t, f_strong, workers)
    if harm["ring_z"] < _DETECTION:
        raise MicroSymError(f"image: no lattice ring stands out of the noise (ring at {1 / f_strong:.3g} px holds "
                            f"{harm['ring_z']:.1f} standard deviations of excess power, need {_DETECTION:g})")
    ratios = _ring_ratio_evidence(freq, prom, f_strong)
    lattice = _decide(harm, ratios)
    f0, period = _first_ring(freq, power, logp, prom, lattice, min_period, max_period)
    scores = {"2": harm["2"], "4": harm["4"], "6": harm["6"], "noise": harm["noise"], "ring_z": harm["ring_z"],
              **ratios}
    return LatticeMeasurement(lattice=lattice, k=lattice_order(lattice), period=float(period), ring_frequency=float(f0),
                              snr_db=_snr_db(freq, power, f0), scores={k: float(v) for k, v in scores.items()})


# -------------------------------------------------------------------------------------- reading


#: A lazy input up to this size is read whole, once: one read of a small image is cheaper than a
#: dozen tile reads, each with its own task graph.
WHOLE_READ_BYTES = 64 << 20


class _CachedTiles:
    """A lazy 2D array whose slices are read once: the angular pass reuses the Welch pass's tiles."""

    def __init__(self, array):
        self._array = array
        self.shape = tuple(int(n) for n in array.shape)
        self.dtype = np.dtype(array.dtype)
        self._cache: dict = {}
        self._whole = None

    def __getitem__(self, key):
        if math.prod(self.shape) * self.dtype.itemsize <= WHOLE_READ_BYTES:
            if self._whole is None:
                self._whole = np.asarray(self._array[tuple(slice(0, n) for n in self.shape)])
            return self._whole[key]
        k = tuple((s.start, s.stop, s.step) for s in key)
        if k not in self._cache:
            self._cache[k] = np.asarray(self._array[key])
        return self._cache[k]


def _is_lazy(image) -> bool:
    """The test :func:`radial_power_spectrum` uses to read an input tile by tile."""
    return not isinstance(image, np.ndarray) and all(hasattr(image, a) for a in ("shape", "dtype", "__getitem__"))


def _tile_source(image):
    """A checked float32 numpy image, or a lazy array wrapped so that each tile is read once."""
    return _CachedTiles(image) if _is_lazy(image) else _check_image(image)


def _read_tile(source, r: int, c: int, t: int) -> np.ndarray:
    """The ``t`` x ``t`` tile at ``(r, c)``: a view of a checked image, or a float32 tile of a lazy one."""
    if isinstance(source, np.ndarray):
        return source[r : r + t, c : c + t]
    return _read_lazy_tile(source, r, c, t)


# ----------------------------------------------------------------------------------- ring finding


def _strongest_ring(freq, prom, f_lo: float, f_hi: float, min_period: float, max_period: float) -> int:
    """Bin of the most prominent radial peak with ``f_lo <= f <= f_hi`` (MicroSymError if none stands out)."""
    t = 2 * (len(freq) - 1)
    ok = (freq >= f_lo) & (freq <= min(f_hi, 0.5))
    if not ok.any():
        raise MicroSymError(f"image: period range {min_period:g}-{max_period:g} px is empty for a {t}-px tile")
    cand = np.where(ok, prom, -np.inf)
    i = int(np.argmax(cand))
    # The threshold of estimate_period: the ring carries at least twice the baseline power.
    if not np.isfinite(cand[i]) or cand[i] < math.log(2.0):
        raise MicroSymError("image: no lattice fringes found in the power spectrum "
                            "(noise only, or period out of range)")
    return i


def _first_ring(freq, power, logp, prom, lattice: str, min_period: float, max_period: float) -> tuple:
    """Frequency of the first ring (the fundamental) of a lattice of the given family, and the period.

    Square and hexagonal: exactly :func:`estimate_period`'s ring (the strongest, or the ring at
    ``f/√2`` or ``f/2``, resp. ``f/√3`` or ``f/2``, when that is itself clearly a peak). Fringes: the
    strongest ring in their band, or the one at ``f/2`` by the same test (sharp fringes can put more
    power in their second harmonic than in the first).
    """
    if lattice != "fringes":
        period = _period_from_spectrum(freq, power, lattice, min_period, max_period)
        return ring_frequency(period, lattice), period
    t = 2 * (len(freq) - 1)
    f_lo, f_hi = 1.0 / max_period, min(1.0 / min_period, 0.5)
    i = _strongest_ring(freq, prom, f_lo, f_hi, min_period, max_period)
    ok = (freq >= f_lo) & (freq <= f_hi)
    i = lower_ring(i, (2.0,), prom, ok, first=2)
    f = _refine(logp, i) / t
    return f, 1.0 / f


def _refine(logp, i: int) -> float:
    """Sub-bin peak position: parabola through ``log P`` at ``i`` and its neighbours."""
    if 1 <= i < len(logp) - 1:
        a, b, c = logp[i - 1], logp[i], logp[i + 1]
        den = a - 2 * b + c
        if den < 0:
            return i + float(np.clip(0.5 * (a - c) / den, -0.5, 0.5))
    return float(i)


def _ring_ratio_evidence(freq, prom, f: float) -> dict:
    """Prominence of the radial spectrum where a square (√2) or hexagonal (√3) lattice puts its next ring.

    Both directions are looked at, as ``f`` may be the first or the second ring.
    """
    t = 2 * (len(freq) - 1)
    out = {}
    for name, ratio in (("ring_sqrt2", math.sqrt(2.0)), ("ring_sqrt3", math.sqrt(3.0))):
        best = -np.inf
        for target in (f * ratio, f / ratio):
            j = int(np.rint(target * t))
            win = np.arange(max(j - 1, 2), min(j + 2, len(freq)))
            if len(win):
                best = max(best, float(np.max(prom[win])))
        out[name] = best if np.isfinite(best) else 0.0
    return out


# ------------------------------------------------------------------------------- angular profile


def _subtile_side(f: float, t: int) -> int:
    """Even sub-tile side of :data:`ANGULAR_PERIODS` periods of ``f``, clamped to the Welch tile."""
    s = int(np.rint(ANGULAR_PERIODS / f))
    s = min(max(s, _MIN_SUBTILE), t)
    return s - s % 2


def _ring_geometry(s: int, f: float):
    """The ring at ``f`` in an ``s`` x ``s`` rfft grid.

    Returns
    -------
    ring : flat indices of the ring's bins
    gw : their radial weights ``g`` (half on the columns whose conjugate twins share the half plane)
    basis : ``(n, 4)`` complex, ``g e^{-imφ}`` for ``m = 0, 2, 4, 6``
    gain : ``(4,)`` variance of ``c_0, c_2, c_4, c_6`` per unit of ``Σ g² var(P)`` (:func:`_noise_gain`)
    shell : flat indices of the floor shells on both sides of the ring
    """
    ky = fft.fftfreq(s)[:, None] * s
    kx = fft.rfftfreq(s)[None, :] * s
    rad = np.hypot(ky, kx)
    phi = np.arctan2(ky, kx)
    r0 = f * s
    dr = rad - r0
    sel = np.abs(dr) <= 3 * _RING_SIGMA
    g = np.exp(-0.5 * (dr / _RING_SIGMA) ** 2)
    # rfft keeps the k_x = 0 and Nyquist columns whole, so each of their bins has its conjugate twin in
    # the same column: half weight counts every direction once.
    g = g * np.where((kx == 0) | (kx == s // 2), 0.5, 1.0)
    ring = np.flatnonzero(sel.ravel())
    gw = g.ravel()[ring]
    m = np.array([0, 2, 4, 6])
    basis = gw[:, None] * np.exp(-1j * m[None, :] * phi.ravel()[ring][:, None])
    # The noise floor next to the ring: shells just outside the ring's weight on both sides.
    width = max(3.0, 0.15 * r0)
    shell = (np.abs(dr) > 3 * _RING_SIGMA + 1) & (np.abs(dr) <= 3 * _RING_SIGMA + 1 + width) & (rad >= 2)
    gain = _noise_gain(s, r0) / float(np.sum(gw**2))
    return ring, gw, basis, gain, np.flatnonzero(shell.ravel())


def _noise_gain(s: int, r0: float) -> np.ndarray:
    """``var(c_m)``, ``m = 0, 2, 4, 6``, of the ring's harmonics for white noise of unit bin variance.

    The bins of a Hann-windowed noise spectrum are correlated: per axis, the power correlation at lag
    ``a`` is ``|U(a)|² / U(0)²`` with ``U`` the DFT of the squared window (a sum of about 1.9 over
    all lags), and a real image's bins ``k`` and ``-k`` are equal. The half-plane sum ``c_m`` is half
    the full-plane sum of ``G = g e^{-imφ}`` (``g`` the ring's radial weight), hence
    ``var(c_m) = ½ Re Σ conj(G) (ρ² ⊛ G)``: a few times ``Σ g²``, the exact factor depending on how
    fast ``g`` and the phase turn between neighbouring bins.
    """
    u = np.fft.fft(np.hanning(s) ** 2)
    rho2 = np.abs(u) ** 2 / np.abs(u[0]) ** 2
    ky = np.fft.fftfreq(s)[:, None] * s
    kx = np.fft.fftfreq(s)[None, :] * s
    rad = np.hypot(ky, kx)
    phi = np.arctan2(ky, kx)
    g = np.where(np.abs(rad - r0) <= 3 * _RING_SIGMA, np.exp(-0.5 * ((rad - r0) / _RING_SIGMA) ** 2), 0.0) / 2
    kern = np.fft.fft2(np.outer(rho2, rho2))
    out = []
    for m in (0, 2, 4, 6):
        G = g * np.exp(-1j * m * phi)
        conv = np.fft.ifft2(np.fft.fft2(G) * kern)
        out.append(2.0 * float(np.real(np.sum(np.conj(G) * conv))))
    return np.array(out)


def _ring_harmonics(source, t: int, f: float, workers: int) -> dict:
    """Noise-corrected angular harmonics ``m = 2, 4, 6`` of the ring at ``f`` over sub-tiles of the Welch tiles.

    Returns the scores ``"2"``, ``"4"``, ``"6"``, their standard error ``"noise"``, the ring's detection
    z-score ``"ring_z"`` and whether any score is ``"significant"``.
    """
    shape = source.shape
    t = int(min(t, *shape))
    t -= t % 2
    s = _subtile_side(f, t)
    # Sub-tiles spread to cover the whole Welch tile: a side that does not divide it would leave a
    # strip unseen (at a 16.1-px period one 258² sub-tile, a quarter of a 512² image, which may be
    # all vacuum). Where they overlap (by under half a side) their noise is correlated a little.
    starts = np.linspace(0, t - s, -(-t // s)).round().astype(int)
    welch = _welch_origins(shape, t, 16)
    subs = [(a, b) for a in starts for b in starts]
    picks = [(w, sub) for w in range(len(welch)) for sub in subs]
    if len(picks) > _MAX_SUBTILES:
        picks = [picks[i] for i in np.linspace(0, len(picks) - 1, _MAX_SUBTILES).round().astype(int)]
    win = np.outer(np.hanning(s), np.hanning(s)).astype(np.float32)
    stack = np.empty((len(picks), s, s), np.float32)
    current, tile = -1, None
    for n, (w, (a, b)) in enumerate(picks):
        if w != current:  # picks are grouped by Welch tile: each is read (or taken from the cache) once
            current = w
            # Outliers clipped per Welch tile, as radial_power_spectrum does.
            tile = clip_outliers(_read_tile(source, *welch[w], t))
        x = tile[a : a + s, b : b + s]
        stack[n] = (x - x.mean()) * win
    power = np.abs(fft.rfft2(stack, workers=workers)) ** 2
    power = power.reshape(len(picks), -1).astype(np.float64)
    ring, gw, basis, gain, shell = _ring_geometry(s, f)
    p_ring = power[:, ring]
    # Noise floor per sub-tile: median of the shells' bin powers over ln 2 (the median of an exponential
    # distribution; the median ignores the few bins that hold spots of other rings).
    floor = np.median(power[:, shell], axis=1) / math.log(2.0)
    c = p_ring @ basis  # (n, 4): c_0, c_2, c_4, c_6
    c0 = c[:, 0].real - floor * gw.sum()
    # Speckle variance of a bin of mean power floor + S is floor² + 2·floor·S (complex Gaussian noise on
    # a deterministic spot); _noise_gain turns Σ g² var into the variance of each harmonic.
    excess = np.maximum(p_ring - floor[:, None], 0.0)
    sum_var = (floor[:, None] ** 2 + 2 * floor[:, None] * excess) @ (gw**2)
    # Detection: the ring's excess power over all sub-tiles in units of its noise (the prominence test of
    # the radial spectrum has no such scale: a coarse low-frequency bin of pure noise can pass it).
    # (Capped at 1e12 so that a noise-free image gives a finite, JSON-able number.)
    ring_z = float(np.sum(c0) / max(math.sqrt(gain[0] * np.sum(sum_var)), 1e-12 * abs(float(np.sum(c0))), 1e-300))
    c0 = np.maximum(c0, 0.0)
    den = float(np.sum(c0**2))
    if den <= 0:
        return {"2": 0.0, "4": 0.0, "6": 0.0, "noise": 1.0, "ring_z": ring_z, "significant": False}
    out = {"ring_z": ring_z}
    err2 = 0.0
    for j, m in enumerate((2, 4, 6), start=1):
        var = gain[j] * sum_var
        e2 = float(np.sum(np.abs(c[:, j]) ** 2 - var)) / den
        out[str(m)] = math.sqrt(max(e2, 0.0))
        err2 = max(err2, float(np.sqrt(np.sum(var**2))) / den)  # standard error of a squared score
    out["noise"] = math.sqrt(err2)
    out["significant"] = max(out[m] for m in ("2", "4", "6")) ** 2 > _SIGNIFICANCE * err2
    return out


def _decide(harm: dict, ratios: dict) -> str:
    """Family from the angular scores, or from the radial ring ratios when the scores are noise."""
    e2, e4, e6 = harm["2"], harm["4"], harm["6"]
    if harm["significant"]:
        if e2 >= _FRINGE_RATIO * max(e4, e6):
            return "fringes"
        return "square" if e4 >= e6 else "hexagonal"
    sq, hx = ratios["ring_sqrt2"], ratios["ring_sqrt3"]
    if max(sq, hx) >= math.log(2.0):
        return "square" if sq >= hx else "hexagonal"
    # No angular structure and no second ring: k = 2 assumes the least.
    return "fringes"


def _snr_db(freq, power, f0: float, weights=None) -> float:
    """:func:`~micro_sym.classical.filter_bank.fringe_snr`'s ratio for a ring at ``f0`` of this radial
    spectrum, each ring bin weighted by its size: ``weights`` per bin (3D: bins per shell), by default
    the frequency (a 2D ring's circumference)."""
    floor_band = freq >= max(0.35, 1.3 * f0)
    if floor_band.sum() < 4:
        floor_band = freq >= freq[-max(4, len(freq) // 10)]
    noise = float(np.percentile(power[floor_band], 20))
    ring = (freq > 0.75 * f0) & (freq < 1.25 * f0)
    w = (freq if weights is None else weights)[ring]
    snr = float(np.sum((power[ring] - noise) * w) / max(noise * np.sum(w), 1e-300))
    return 10.0 * math.log10(max(snr, 1e-3))

"""Where an image shows its lattice: the local ring contrast (docs/design.md §6.3).

Vacuum, amorphous film and crystals off their zone axis show no lattice fringes, and no method should
give them a grain. The image's lattice puts power on a ring of spatial frequency ``f0`` (measured by
:func:`~micro_sym.classical.measure_lattice`); everything else (shot noise, amorphous speckle,
thickness and particle edges) has a smooth spectrum that falls with frequency. The local *ring
contrast* compares, around every pixel, the power in a narrow annulus at ``f0`` with the power in the
same-shaped annulus just inside it, at ``0.7 f0``, each divided by its annulus area so that white
noise gives 1. Lattice: far above 1; smooth spectra: below 1. A pixel holds a lattice where the ring
carries at least :data:`CRYSTALLINE_CONTRAST` times the power just inside it: no less power than
there. A stricter threshold (2, the spectrum's own rule for a lattice ring) also removes real
lattice where blur or low dose lower the contrast (docs/design.md §6.3).

Both annuli are Gaussian in radius (sigma = ``f / (2π·1.25)``: the classical filter bank's 1.25-period
window), the local power is smoothed over two periods, and everything is a convolution of the
reflect-padded tile, so a tile reproduces the whole image inside its halo (:func:`ring_contrast_halo`).

That smoothing carries a crystal's ring power several periods out into the vacuum or amorphous film
next to it, where the contrast stays above 1. :func:`crystalline_contrast` cuts it at the crystal's
edge: a pixel keeps its contrast only where its ring power is at least half (:data:`EDGE_FRACTION`) of
the largest within :data:`EDGE_REACH` periods, since half the maximum of a smoothed step lies on the
step (docs/design.md §6.3).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import fft, ndimage

#: Ring power over the power just inside the ring from which a pixel counts as crystalline.
CRYSTALLINE_CONTRAST = 1.0
#: Radius of the reference annulus, as a fraction of the ring frequency.
INNER = 0.7
#: Window of the annuli in lattice periods (radial sigma ``f / (2π·WINDOW)``).
WINDOW = 1.25
#: Smoothing (Gaussian sigma) of the local band powers, in lattice periods: long enough that white
#: noise stays below a contrast of 2 on 99 % of pixels (tests/classical/test_crystallinity.py).
SMOOTH = 2.0
_TRUNC = 4.5
#: A pixel is inside a crystal where its ring power is at least this fraction of the largest ring
#: power within :data:`EDGE_REACH` lattice periods.
EDGE_FRACTION = 0.5
#: Half-width, in lattice periods, of the square window of that maximum.
EDGE_REACH = 1.25


def ring_contrast_halo(ring_frequency: float) -> int:
    """Reach (px) of :func:`ring_contrast`: the reference annulus' kernel plus the power smoothing."""
    period = 1.0 / ring_frequency
    return int(math.ceil(_TRUNC * WINDOW * period / INNER + 4.0 * SMOOTH * period))


def crystalline_halo(ring_frequency: float) -> int:
    """Reach (px) of :func:`crystalline_contrast`: :func:`ring_contrast_halo` plus the edge window."""
    return ring_contrast_halo(ring_frequency) + _edge_reach_px(ring_frequency)


def _edge_reach_px(ring_frequency: float) -> int:
    return int(math.ceil(EDGE_REACH / float(ring_frequency)))


def decimation(ring_frequency: float) -> int:
    """The factor by which :func:`ring_contrast` may sample its band signals without losing anything.

    A band reaches ``1.51 f`` (the ring's Gaussian to 4 sigma), its square ``3.02 f``, and the power
    smoothing keeps only frequencies below ``0.32 f`` (4 sigma of its transfer function). On a grid of
    spacing ``D`` px the squared band's aliases move by multiples of ``1/D``, so none reaches the kept
    frequencies while ``3.02 f + 0.32 f < 1/D``; the margin here is ``3.5 f``.
    """
    return max(1, int(1.0 / (3.5 * float(ring_frequency))))


def _gaussians(fy, fx, ring_frequency: float):
    """The Fourier-space factors of :func:`ring_contrast` at frequencies ``fy`` (column) and ``fx``
    (row) in cycles per input pixel: the Gaussian power smoothing and the two Gaussian annuli (ring,
    then the reference inside it)."""
    radius = np.hypot(fy, fx)
    smooth = SMOOTH / ring_frequency  # also removes the 2·f0 ripple of the squared band
    # The Gaussian smoothing as a product in Fourier space (its transfer function): 20x faster than a
    # spatial filter of this width. The convolution wraps around, but only within 4 sigma of the padded
    # edges (8 periods), all inside the padding (16 periods) that is cropped away.
    smoothing = np.exp(np.float32(-2.0 * (math.pi * smooth) ** 2) * radius ** 2)
    windows = []
    for f in (ring_frequency, INNER * ring_frequency):
        sigma_f = f / (2.0 * math.pi * WINDOW)
        windows.append(np.exp(np.float32(-0.5) * ((radius - np.float32(f)) / np.float32(sigma_f)) ** 2))
    return smoothing, tuple(windows)


def _frequencies(shape, spacing: int = 1):
    """``(fy, fx)`` of an rfft2 of ``shape`` sampled every ``spacing`` input pixels, in cycles per input pixel."""
    return (fft.fftfreq(shape[0], spacing).astype(np.float32)[:, None],
            fft.rfftfreq(shape[1], spacing).astype(np.float32)[None, :])


def _low_rows(n_small: int, n_full: int) -> np.ndarray:
    """Rows of an ``n_full`` FFT axis that hold the frequencies of an ``n_small`` one (its low frequencies)."""
    return np.r_[0:(n_small + 1) // 2, n_full - n_small // 2:n_full]


def ring_contrast(image, ring_frequency: float, *, workers: int = 2) -> np.ndarray:
    """Local ring contrast (float32, same shape as ``image``; 1 for white noise).

    Parameters
    ----------
    image : (H, W) array
        Any real intensities; non-finite pixels count as the mean.
    ring_frequency : float
        The lattice's first ring, cycles/px.
    workers : int
        FFT threads.
    """
    return _ratio(*band_powers(image, ring_frequency, workers=workers))


def crystalline_contrast(image, ring_frequency: float, *, workers: int = 2, context=None) -> np.ndarray:
    """:func:`ring_contrast` inside crystals, 0 outside them (float32, same shape as ``image``).

    Outside: where the ring power is below :data:`EDGE_FRACTION` of its maximum within
    :data:`EDGE_REACH` periods, i.e. beyond the half-maximum that marks a crystal's edge (what the
    power smoothing carried out of the crystal). A pixel holds a lattice where the result is at
    least :data:`CRYSTALLINE_CONTRAST`.

    ``context``: as :func:`band_powers`; the values are then right where the image holds at least
    :func:`crystalline_halo` px of it around them.
    """
    ring, inner = band_powers(image, ring_frequency, workers=workers, context=context)
    contrast = _ratio(ring, inner)
    # A square window: separable, so its cost does not grow with the period.
    nearby = ndimage.maximum_filter(ring, size=2 * _edge_reach_px(ring_frequency) + 1, mode="reflect")
    contrast[ring < np.float32(EDGE_FRACTION) * nearby] = 0.0
    return contrast.astype(np.float32, copy=False)


def _ratio(ring: np.ndarray, inner: np.ndarray) -> np.ndarray:
    floor = np.float32(max(1e-30 * float(ring.max()), 1e-38))
    return (ring / np.maximum(inner, floor)).astype(np.float32)


def band_powers(image, ring_frequency: float, *, workers: int = 2, context=None) -> tuple[np.ndarray, np.ndarray]:
    """The smoothed local powers ``(ring, inner)`` whose ratio is :func:`ring_contrast` (float32, each
    divided by its annulus' area, so white noise gives equal values).

    ``context``: per axis ``(before, after)``, how many px of real image the input holds beyond the
    region whose values the caller keeps (a tile's halo; None: none, the input is the whole image). A
    side with at least :func:`ring_contrast_halo` px is not reflect-padded: the transforms wrap around
    there, which changes only the values within that reach of the side (the halo the caller drops),
    and the transforms are smaller (a 1344² tile's by 30 %).
    """
    # float32 throughout: a ratio of smoothed powers needs no more, and it halves the time and memory
    # of the FFTs and the smoothing (this runs on every tile of every micrograph).
    img = np.asarray(image, np.float32)
    finite = np.isfinite(img)
    if not finite.all():
        img = np.where(finite, img, img[finite].mean() if finite.any() else 0.0).astype(np.float32)
    f0 = float(ring_frequency)
    halo = ring_contrast_halo(f0)
    context = context or [(0, 0)] * img.ndim
    pads = [tuple(0 if c >= halo else halo for c in sides) for sides in context]
    step = decimation(f0)
    # The band signals and their squares are computed every ``step`` pixels (:func:`decimation`), on a
    # grid whose FFT is fast; each axis is padded a little more at its end to fit it (a large prime
    # factor would make the transforms several times slower).
    small = tuple(fft.next_fast_len(-(-(n + b + a) // step), real=True) for n, (b, a) in zip(img.shape, pads))
    full = tuple(step * m for m in small)
    padded = np.pad(img - img.mean(dtype=np.float64).astype(np.float32),
                    [(b, m - n - b) for n, m, (b, _) in zip(img.shape, full, pads)], mode="reflect")
    spectrum = fft.rfft2(padded, workers=workers)
    del padded
    if step > 1:  # the low frequencies only: every band lies below the small grid's Nyquist frequency
        spectrum = spectrum[_low_rows(small[0], full[0])][:, :small[1] // 2 + 1]
    smoothing, windows = _gaussians(*_frequencies(small, step), f0)
    product = np.empty_like(spectrum)
    power = []
    for f, window in zip((f0, INNER * f0), windows):
        sigma_f = f / (2.0 * math.pi * WINDOW)
        # In place where an array is not needed again (overwrite_x: the same transform in its input's
        # buffer): fewer tile-sized temporaries, the same values.
        band = fft.irfft2(np.multiply(spectrum, window, out=product), s=small, workers=workers, overwrite_x=True)
        band *= band
        local = fft.rfft2(band, workers=workers, overwrite_x=True)
        local *= smoothing
        if step > 1:  # back to every pixel: the smoothed power has no frequencies the small grid lacks
            low = local
            local = np.zeros((full[0], full[1] // 2 + 1), low.dtype)
            local[_low_rows(small[0], full[0]), :low.shape[1]] = low
        local = fft.irfft2(local, s=full, workers=workers, overwrite_x=True)
        # The annulus' area 2π f · √(2π) sigma_f: white noise then gives equal power in both.
        local /= np.float32(f * sigma_f)
        power.append(local[tuple(slice(b, b + n) for n, (b, _) in zip(img.shape, pads))])
    return power[0], power[1]

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
"""

from __future__ import annotations

import math

import numpy as np
from scipy import fft

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


def ring_contrast_halo(ring_frequency: float) -> int:
    """Reach (px) of :func:`ring_contrast`: the reference annulus' kernel plus the power smoothing."""
    period = 1.0 / ring_frequency
    return int(math.ceil(_TRUNC * WINDOW * period / INNER + 4.0 * SMOOTH * period))


def _filters(shape, ring_frequency: float):
    """The Fourier-space factors of :func:`ring_contrast` for a padded tile of ``shape``: the Gaussian
    power smoothing and the two Gaussian annuli (ring, then the reference inside it)."""
    fy = fft.fftfreq(shape[0]).astype(np.float32)[:, None]
    fx = fft.rfftfreq(shape[1]).astype(np.float32)[None, :]
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
    # float32 throughout: a ratio of smoothed powers needs no more, and it halves the time and memory
    # of the FFTs and the smoothing (this runs on every tile of every micrograph).
    img = np.asarray(image, np.float32)
    finite = np.isfinite(img)
    if not finite.all():
        img = np.where(finite, img, img[finite].mean() if finite.any() else 0.0).astype(np.float32)
    pad = ring_contrast_halo(ring_frequency)
    # Each axis padded a little more at its end, to a length whose FFT is fast (a large prime factor
    # would make it several times slower).
    ends = [fft.next_fast_len(n + 2 * pad, real=True) - n - pad for n in img.shape]
    padded = np.pad(img - img.mean(dtype=np.float64).astype(np.float32), [(pad, e) for e in ends], mode="reflect")
    spectrum = fft.rfft2(padded, workers=workers)
    smoothing, windows = _filters(padded.shape, float(ring_frequency))
    product = np.empty_like(spectrum)
    power = []
    for f, window in zip((ring_frequency, INNER * ring_frequency), windows):
        sigma_f = f / (2.0 * math.pi * WINDOW)
        # In place where an array is not needed again (overwrite_x: the same transform in its input's
        # buffer): fewer tile-sized temporaries, the same values.
        band = fft.irfft2(np.multiply(spectrum, window, out=product), s=padded.shape, workers=workers, overwrite_x=True)
        band *= band
        local = fft.rfft2(band, workers=workers, overwrite_x=True)
        local *= smoothing
        local = fft.irfft2(local, s=padded.shape, workers=workers, overwrite_x=True)
        # The annulus' area 2π f · √(2π) sigma_f: white noise then gives equal power in both.
        local /= np.float32(f * sigma_f)
        power.append(local[pad:pad + img.shape[0], pad:pad + img.shape[1]])
    floor = np.float32(max(1e-30 * float(power[0].max()), 1e-38))
    return (power[0] / np.maximum(power[1], floor)).astype(np.float32)

"""Imaging models: what a microscope or a tomographic reconstruction does to a clean lattice image.

2D ((S)TEM micrograph): slow background and thickness (contrast) variations, bright-/dark-field
contrast, a point-spread function with a Gaussian core and a Lorentzian tail, Poisson shot noise at a
dose in counts per pixel and Gaussian detector read noise. Scan distortions act on *where* each pixel
samples the specimen, so they live in :func:`scan_positions` and are applied before rendering.

3D (tomogram): Gaussian resolution elongated along the beam axis z, a missing wedge for a limited
tilt range about the y axis, a slow intensity gradient and Gaussian reconstruction noise.
"""

from __future__ import annotations

import numpy as np
from scipy import fft

from micro_sym.synth.config import Imaging2D, Imaging3D

WORKERS = 2


def scan_positions(shape, imaging: Imaging2D, rng: np.random.Generator):
    """Physical ``(x, y)`` specimen positions sampled by each pixel of a (possibly distorted) scan.

    Undistorted, pixel ``(row, col)`` sits at ``x = col, y = -row`` (docs/design.md §1: y up on screen).
    A raster scan moves fast along x and steps in y, so its errors are per scan line: a linear shear,
    a slow drift (a smoothed random walk) and line-to-line jitter, all as x offsets of whole rows.

    Returns
    -------
    x, y : float64 arrays of ``shape``
    """
    h, w = shape
    rows = np.arange(h, dtype=np.float64)
    offset = imaging.shear * (rows - h / 2)
    if imaging.drift > 0:
        walk = np.cumsum(rng.standard_normal(h))
        walk -= np.linspace(walk[0], walk[-1], h)  # drift without a net shear: that is `shear`'s job
        walk /= max(np.abs(walk).max(), 1e-9)
        offset += imaging.drift / 2 * walk
    if imaging.jitter > 0:
        offset += imaging.jitter * rng.standard_normal(h)
    x = np.arange(w, dtype=np.float64)[None, :] + offset[:, None]
    y = np.broadcast_to(-rows[:, None], (h, w))
    return x, np.array(y)


def smooth_field(shape, rng: np.random.Generator, n_waves: int = 3):
    """A slowly varying random field scaled to ``[-1, 1]``: a random linear ramp plus a few long waves.

    Wavelengths are between 0.7 and 3 times the image extent, so the field never looks like texture
    at the lattice scale (a thickness wedge, a bent foil, uneven illumination).
    """
    coords = np.ogrid[tuple(slice(0, n) for n in shape)]
    coords = [(c / max(n - 1, 1) - 0.5).astype(np.float32) for c, n in zip(coords, shape)]
    field = sum(np.float32(r) * c for r, c in zip(rng.standard_normal(len(shape)), coords))
    for _ in range(n_waves):
        k = rng.standard_normal(len(shape))
        k *= rng.uniform(1 / 3, 1.4) / np.linalg.norm(k)
        phase = sum(np.float32(2 * np.pi * ki) * c for ki, c in zip(k, coords)) + np.float32(rng.uniform(0, 2 * np.pi))
        field = field + np.float32(rng.uniform(0.3, 1.0)) * np.cos(phase)
    field = np.broadcast_to(field, shape).astype(np.float32)
    field -= field.mean()
    return field / max(float(np.abs(field).max()), 1e-9)


def _freq_grids(shape, real_last: bool = True):
    """Frequency coordinates (cycles per pixel) for an (r)fft of ``shape``, broadcastable."""
    grids = []
    for i, n in enumerate(shape):
        f = fft.rfftfreq(n) if (real_last and i == len(shape) - 1) else fft.fftfreq(n)
        grids.append(f.reshape([-1 if j == i else 1 for j in range(len(shape))]))
    return grids


def psf_otf(shape, sigma: float, tail: float = 0.0, tail_width: float = 4.0):
    """Optical transfer function (rfft layout) of a Gaussian core plus a Lorentzian tail.

    The PSF is ``(1 - tail) * Gaussian(sigma) + tail * Cauchy(tail_width)``; both have closed-form
    Fourier transforms, ``exp(-2 pi² sigma² k²)`` and ``exp(-2 pi gamma |k|)``, so no kernel is sampled
    or truncated. Probe tails of this kind are what makes atom columns look Lorentzian-ish in STEM.
    """
    k2 = sum(g**2 for g in _freq_grids(shape))
    otf = (1 - tail) * np.exp(-2 * np.pi**2 * sigma**2 * k2)
    if tail > 0:
        otf = otf + tail * np.exp(-2 * np.pi * tail_width * np.sqrt(k2))
    return otf


def _convolve_otf(image, otf_fn, pad: int):
    """Convolve via rfft with reflect padding (no wrap-around of one edge into the other)."""
    padded = np.pad(image, pad, mode="reflect") if pad else image
    spec = fft.rfftn(padded, workers=WORKERS)
    spec *= otf_fn(padded.shape)
    out = fft.irfftn(spec, s=padded.shape, workers=WORKERS)
    if pad:
        out = out[tuple(slice(pad, pad + n) for n in image.shape)]
    return out.astype(np.float32)


def apply_imaging_2d(clean, imaging: Imaging2D, rng: np.random.Generator, contrast: str | None = None):
    """Turn a clean lattice intensity (atoms ≈ 1, vacuum 0) into a noisy micrograph in counts.

    Parameters
    ----------
    clean : (H, W) float array
        Output of :func:`~micro_sym.synth.lattice2d.render_lattice_2d`.
    imaging : Imaging2D
        Dose, PSF, noise, background and contrast settings.
    rng : numpy.random.Generator
    contrast : {"dark_field", "bright_field"}, optional
        Overrides ``imaging.contrast`` (used when that is ``"random"``).

    Returns
    -------
    float32 array of detector counts (mean ``imaging.dose`` per pixel), not yet rounded.
    """
    contrast = contrast or imaging.contrast
    if contrast == "random":
        contrast = "dark_field" if rng.random() < 0.5 else "bright_field"
    shape = clean.shape
    thickness = 1 + imaging.thickness_variation * smooth_field(shape, rng)
    background = imaging.background * (1 + imaging.background_variation * smooth_field(shape, rng))
    if contrast == "dark_field":
        # HAADF-like: columns scatter electrons onto the annular detector, so atoms are bright.
        intensity = background + thickness * clean
    else:
        # Bright field: the direct beam is depleted at the columns, so atoms are dark on a bright field.
        intensity = background + np.maximum(1.2 - thickness * clean, 0.05)
    if imaging.psf_sigma > 0 or imaging.psf_tail > 0:
        pad = int(min(64, np.ceil(4 * imaging.psf_sigma + 4 * imaging.psf_tail_width * (imaging.psf_tail > 0))))
        intensity = _convolve_otf(
            intensity, lambda s: psf_otf(s, imaging.psf_sigma, imaging.psf_tail, imaging.psf_tail_width), pad
        )
    intensity = np.maximum(intensity, 0)
    expected = intensity * (imaging.dose / max(float(intensity.mean()), 1e-12))
    counts = rng.poisson(expected).astype(np.float32)
    if imaging.read_noise > 0:
        counts += rng.normal(0, imaging.read_noise, shape).astype(np.float32)
    return counts


def missing_wedge_otf(shape, sigma: float, elongation: float, tilt_range: float):
    """Transfer function (rfft layout, axes z, y, x) of a tilt-series reconstruction.

    Gaussian resolution ``sigma`` in y and x and ``sigma * elongation`` along the beam axis z; with a
    tilt range of ``±tilt_range`` degrees about y, the Fourier components with
    ``|k_z| > tan(tilt_range) |k_x|`` are never measured (the missing wedge). The wedge edge is
    softened over a few degrees, as interpolation in a real reconstruction does, to avoid ringing.
    """
    kz, ky, kx = _freq_grids(shape)
    otf = np.exp(-2 * np.pi**2 * sigma**2 * ((elongation * kz) ** 2 + ky**2 + kx**2))
    if tilt_range < 90:
        # Angle of (kx, kz) from the kx axis, folded into [0, 90]: measured up to tilt_range.
        ang = np.degrees(np.arctan2(np.abs(kz), np.abs(kx) + 1e-12))
        soft = 3.0
        keep = np.clip((tilt_range + soft / 2 - ang) / soft, 0, 1)
        keep = np.where((kz == 0) & (kx == 0), 1.0, keep)  # the k_y axis is always measured
        otf = otf * keep
    return otf


def apply_imaging_3d(clean, imaging: Imaging3D, rng: np.random.Generator):
    """Turn a clean lattice volume into a tomogram-like reconstruction (float32, arbitrary units).

    Noise is added *before* the missing-wedge filter as well as after it: reconstruction noise is
    correlated and streaky along the beam axis, not white.
    """
    shape = clean.shape
    vol = clean * (1 + imaging.background_variation * smooth_field(shape, rng))
    vol = vol + 0.5 * imaging.noise * rng.standard_normal(shape).astype(np.float32)
    pad = int(min(32, np.ceil(4 * imaging.psf_sigma * imaging.elongation) + 2))
    vol = _convolve_otf(
        vol.astype(np.float32),
        lambda s: missing_wedge_otf(s, imaging.psf_sigma, imaging.elongation, imaging.tilt_range),
        pad,
    )
    vol += 0.5 * imaging.noise * rng.standard_normal(shape).astype(np.float32)
    return vol

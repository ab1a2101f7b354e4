"""Orientation colours and their keys: one implementation for the PNG plots and the napari plugin.

- 2D angles: the cyclic ``twilight`` colormap over one symmetry period, at ``(θ mod period) / period``
  (:func:`angle_fraction`). The key is a colour wheel that draws each direction θ (counter-clockwise
  from +x, as displayed) in the colour of θ mod period (:func:`angle_key`).
- Cubic quaternions: inverse-pole-figure colours (:func:`micro_sym.orientation.ipf_colour_cubic`). The
  key is the standard triangle [001]-[101]-[111] in stereographic projection (:func:`ipf_key`, corners
  from :func:`ipf_key_corners`).

>>> float(angle_fraction(100.0, 90.0))
0.1111111111111111
>>> ipf_key(5).shape, angle_key(90.0, 9).dtype
((5, 5, 4), dtype('float32'))
"""

from __future__ import annotations

import numpy as np

from micro_sym.orientation import ipf_colour_from_crystal_direction

__all__ = ["ANGLE_COLORMAP", "IPF_KEY_EXTENT", "angle_fraction", "angle_key", "cyclic_colors", "ipf_key",
           "ipf_key_corners"]

#: matplotlib colormap of 2D angles (cyclic: 0 and the period share a colour).
ANGLE_COLORMAP = "twilight"
#: ``(x, y)`` extent of the IPF key's window on the stereographic projection plane (holds the triangle).
IPF_KEY_EXTENT = (0.42, 0.38)
_IPF_CORNERS = (("001", (0, 0, 1)), ("101", (1, 0, 1)), ("111", (1, 1, 1)))


def angle_fraction(theta_deg, period: float):
    """Position of angles (degrees) on the cyclic colormap: ``(θ mod period) / period``, NaN stays NaN."""
    return np.mod(theta_deg, period) / period


def cyclic_colors(n: int = 256) -> np.ndarray:
    """RGBA ``(n, 4)`` float32 samples of :data:`ANGLE_COLORMAP` over ``[0, 1]`` (a lookup table)."""
    from matplotlib import colormaps

    return np.asarray(colormaps[ANGLE_COLORMAP](np.linspace(0.0, 1.0, n)), np.float32)


def angle_key(period: float, size: int = 161) -> np.ndarray:
    """Colour-wheel key, RGBA ``(size, size, 4)`` float32: direction θ drawn in the colour of θ mod ``period``.

    Directions θ and θ + period share a colour, which shows at a glance that the lattice angle is
    only defined mod ``period``. Row 0 is the top (y up on screen); transparent outside the ring.
    """
    c = (size - 1) / 2
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    dx, dy = xx - c, c - yy  # y up on screen
    r = np.hypot(dx, dy) / c
    theta = np.mod(np.rad2deg(np.arctan2(dy, dx)), 360.0)
    lut = cyclic_colors(256)
    idx = np.clip((angle_fraction(theta, period) * 256).astype(int), 0, 255)
    rgba = lut[idx].copy()
    rgba[..., 3] = ((r >= 0.45) & (r <= 1.0)).astype(np.float32)
    return rgba


def ipf_key(size: int = 161, *, origin: str = "upper", dtype=np.float32) -> np.ndarray:
    """Cubic IPF key, RGBA ``(size, size, 4)``: the standard triangle [001]-[101]-[111], transparent outside.

    The window :data:`IPF_KEY_EXTENT` of the stereographic projection plane is sampled on a
    ``size x size`` grid and each point coloured by
    :func:`~micro_sym.orientation.ipf_colour_from_crystal_direction`. ``origin="upper"``: row 0 at the
    top of the key (y = ymax, for image layers); ``"lower"``: row 0 at y = 0 (``imshow(origin="lower")``).
    """
    xmax, ymax = IPF_KEY_EXTENT
    xs = np.linspace(0, xmax, size)
    ys = np.linspace(ymax, 0, size) if origin == "upper" else np.linspace(0, ymax, size)
    X, Y = np.meshgrid(xs, ys)
    r2 = X**2 + Y**2
    v = np.stack([2 * X, 2 * Y, 1 - r2], -1) / (1 + r2)[..., None]  # inverse stereographic projection
    inside = (v[..., 2] >= v[..., 0]) & (v[..., 0] >= v[..., 1]) & (v[..., 1] >= 0)
    rgb = ipf_colour_from_crystal_direction(v)
    return np.concatenate([rgb, inside[..., None]], -1).astype(dtype)


def ipf_key_corners() -> list:
    """``(name, x, y)`` of the :func:`ipf_key` triangle's corners [001], [101], [111] on the projection plane."""
    out = []
    for name, d in _IPF_CORNERS:
        d = np.asarray(d, float) / np.linalg.norm(d)
        out.append((name, d[0] / (1 + d[2]), d[1] / (1 + d[2])))
    return out

"""Tiny lattice images and volumes for tests (not the product's generators).

A Voronoi tessellation; each cell carries a square lattice of Gaussian atomic columns at its own angle.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def lattice_sample(size=64, n_grains=4, period=6.0, seed=0, noise=0.05):
    """(image float32, grains uint32, orientation float32 degrees in [0, 90))."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    seeds = rng.uniform(0, size, (n_grains, 2))
    d = (yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2
    cell = d.argmin(-1)
    angles = rng.uniform(0, 90, n_grains)
    image = np.zeros((size, size))
    for i, a in enumerate(angles):
        t = np.deg2rad(a)
        # Physical frame: x = column, y = up (decreasing row), angle counter-clockwise from +x.
        px, py = xx, -yy
        u = (np.cos(t) * px + np.sin(t) * py) / period
        v = (-np.sin(t) * px + np.cos(t) * py) / period
        du, dv = u - np.round(u), v - np.round(v)
        spots = np.exp(-(du**2 + dv**2) / (2 * 0.18**2))
        image[cell == i] = spots[cell == i]
    image += rng.normal(0, noise, image.shape)
    grains = (cell + 1).astype(np.uint32)
    orientation = np.mod(angles[cell], 90.0).astype(np.float32)
    return image.astype(np.float32), grains, orientation


def write_dataset(root, n=4, size=64, seed=0, **kw):
    """Write a labeled dataset (docs/design.md §1) of ``n`` lattice samples; returns the root path."""
    import tifffile

    root = Path(root)
    for sub in ("images", "grains", "orientation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img, grains, ori = lattice_sample(size=size, seed=seed + i, **kw)
        tifffile.imwrite(root / "images" / f"s{i:02d}.tif", img)
        tifffile.imwrite(root / "grains" / f"s{i:02d}.tif", grains)
        tifffile.imwrite(root / "orientation" / f"s{i:02d}.tif", ori)
    (root / "dataset.json").write_text(json.dumps({"lattice": "square", "pixel_size": [0.05, 0.05], "unit": "nm"}))
    return root


def fcc_blobs(shape, q, rng, sigma=0.9, noise=0.3, period=5.0):
    """A ``(z, y, x)`` volume of Gaussian atoms on an fcc lattice whose {111} planes are ``period`` voxels
    apart, rotated by the quaternion ``q`` (crystal -> volume frame) about the centre, plus noise."""
    from micro_sym.orientation import quat_to_matrix

    a = period * np.sqrt(3.0)
    rot = quat_to_matrix(q)
    centre = (np.array(shape[::-1]) - 1) / 2.0  # (x, y, z)
    n = int(np.ceil(max(shape) / a)) + 1
    cells = np.stack(np.meshgrid(*[np.arange(-n, n + 1)] * 3, indexing="ij"), -1).reshape(-1, 3)
    basis = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    atoms = ((cells[:, None, :] + basis[None]) * a).reshape(-1, 3) @ rot.T + centre + rng.uniform(-1, 1, 3)
    hi = np.array(shape[::-1]) - 1
    atoms = atoms[np.all((atoms > -3 * sigma) & (atoms < hi + 3 * sigma), axis=1)]
    vol = np.zeros(shape)
    h = int(np.ceil(3 * sigma))
    for p in atoms:
        lo = np.floor(p).astype(int) - h
        ix, iy, iz = (np.arange(lo[k], lo[k] + 2 * h + 2) for k in range(3))
        ix, iy, iz = ix[(ix >= 0) & (ix < shape[2])], iy[(iy >= 0) & (iy < shape[1])], iz[(iz >= 0) & (iz < shape[0])]
        gx, gy, gz = (np.exp(-0.5 * ((c - p[k]) / sigma) ** 2) for k, c in enumerate((ix, iy, iz)))
        vol[np.ix_(iz, iy, ix)] += gz[:, None, None] * gy[None, :, None] * gx[None, None, :]
    return vol + noise * rng.standard_normal(shape)

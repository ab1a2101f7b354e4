"""Atoms onto a voxel grid: element-weighted Gaussian blobs, and the per-voxel truth of the nearest atom.

Used by :mod:`micro_sym.synth.atoms3d` (docs/design.md §6.4). Positions are physical ``(x, y, z)`` in Å;
voxel ``(iz, iy, ix)`` has its centre at ``(ix, iy, iz) * voxel_size`` (docs/design.md §1.1: x is the
last array axis, z the first).

>>> import numpy as np
>>> vol = splat_atoms(np.array([[2.0, 2.0, 2.0]]), np.ones(1), (9, 9, 9), voxel_size=0.5, sigma=(0.4, 0.4, 0.4))
>>> tuple(int(i) for i in np.unravel_index(vol.argmax(), vol.shape)), round(float(vol.max()), 3)
((4, 4, 4), 1.0)
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit
from scipy.spatial import cKDTree

# Two cores are shared by everyone working on this machine.
WORKERS = 2
# Gaussian tails beyond this many sigma are dropped: exp(-4.5) = 1 % of the peak, far below the noise.
TRUNCATE = 3.0


@njit(cache=True, nogil=True)
def _splat(vol, pos, weight, inv_two_var, radius):
    """Add ``weight * exp(-sum_i d_i² / (2 sigma_i²))`` around each atom, axis by axis (separable).

    ``pos``: (N, 3) voxel coordinates in array order (z, y, x). Each atom touches a box of
    ``(2 radius + 1)`` voxels per axis; its three 1D weight vectors are computed once, so the cost per
    atom is the box volume in multiply-adds.
    """
    nz, ny, nx = vol.shape
    wz = np.empty(2 * radius[0] + 1)
    wy = np.empty(2 * radius[1] + 1)
    wx = np.empty(2 * radius[2] + 1)
    for n in range(pos.shape[0]):
        cz, cy, cx = pos[n, 0], pos[n, 1], pos[n, 2]
        z0 = math.floor(cz) - radius[0]
        y0 = math.floor(cy) - radius[1]
        x0 = math.floor(cx) - radius[2]
        for i in range(wz.size):
            wz[i] = math.exp(-((z0 + i - cz) ** 2) * inv_two_var[0])
        for i in range(wy.size):
            wy[i] = math.exp(-((y0 + i - cy) ** 2) * inv_two_var[1])
        for i in range(wx.size):
            wx[i] = math.exp(-((x0 + i - cx) ** 2) * inv_two_var[2])
        w = weight[n]
        for i in range(wz.size):
            z = z0 + i
            if z < 0 or z >= nz:
                continue
            a = w * wz[i]
            for j in range(wy.size):
                y = y0 + j
                if y < 0 or y >= ny:
                    continue
                b = a * wy[j]
                for k in range(wx.size):
                    x = x0 + k
                    if 0 <= x < nx:
                        vol[z, y, x] += b * wx[k]


def splat_atoms(positions, weights, shape, voxel_size: float, sigma):
    """Noise-free volume of Gaussian atom blobs (peak ``weight`` at each atom centre).

    Parameters
    ----------
    positions : (N, 3) float array
        Physical ``(x, y, z)`` in Å; atoms outside the grid still add their tails to it.
    weights : (N,) float array
        Blob amplitude per atom (e.g. ``(Z / Z_max) ** 1.5``).
    shape : (z, y, x) ints
    voxel_size : float
        Å per voxel.
    sigma : (sigma_x, sigma_y, sigma_z) in Å
        Blob widths per physical axis; a larger ``sigma_z`` is the elongation along the beam axis.

    Returns
    -------
    (z, y, x) float32 volume.
    """
    pos = np.ascontiguousarray(np.asarray(positions, dtype=np.float64)[:, ::-1] / voxel_size)  # -> (z, y, x) voxels
    sig = np.asarray(sigma, dtype=np.float64)[::-1] / voxel_size
    radius = np.ceil(TRUNCATE * sig).astype(np.int64)
    vol = np.zeros(shape, dtype=np.float64)
    _splat(vol, pos, np.asarray(weights, dtype=np.float64), 1.0 / (2.0 * sig**2), radius)
    return vol.astype(np.float32)


def nearest_atom_labels(positions, labels, shape, voxel_size: float, max_distance: float):
    """Label of the nearest atom at every voxel centre; 0 where no atom is within ``max_distance`` Å.

    Parameters
    ----------
    positions : (N, 3) float array, physical ``(x, y, z)`` in Å
    labels : (N,) int array
        Per-atom label (0 for atoms that belong to no grain, e.g. an amorphous support).
    max_distance : float
        Voxels farther than this from every atom are vacuum (label 0). It must exceed the largest
        empty sphere of the lattice (the octahedral hole of fcc, a/2), or holes inside a crystal would
        read as vacuum.

    Returns
    -------
    (z, y, x) int32 label map.
    """
    labels = np.asarray(labels)
    if len(labels) == 0:
        return np.zeros(shape, dtype=np.int32)
    tree = cKDTree(np.asarray(positions, dtype=np.float64))
    out = np.empty(int(np.prod(shape)), dtype=np.int32)
    ny_nx = shape[1] * shape[2]
    step = max(ny_nx, (1 << 20) // ny_nx * ny_nx)  # whole z-planes per query: bounded temporaries
    lut = np.append(labels.astype(np.int32), 0)  # index N (no neighbour within max_distance) -> vacuum
    yy, xx = np.meshgrid(np.arange(shape[1]), np.arange(shape[2]), indexing="ij")
    plane = np.stack([xx.ravel(), yy.ravel()], -1).astype(np.float64) * voxel_size
    planes_per_step = step // ny_nx
    for z0 in range(0, shape[0], planes_per_step):
        zs = np.arange(z0, min(shape[0], z0 + planes_per_step), dtype=np.float64) * voxel_size
        pts = np.concatenate([np.column_stack([plane, np.full(len(plane), z)]) for z in zs])
        _, idx = tree.query(pts, distance_upper_bound=max_distance, workers=WORKERS)
        out[z0 * ny_nx : z0 * ny_nx + len(pts)] = lut[idx]
    return out.reshape(shape)

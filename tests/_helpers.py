"""Small helpers several test modules share (fixtures are in conftest.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

#: The arrays of a segmentation output (docs/design.md §1).
OUTPUT_ARRAYS = ("boundary", "orientation", "grains")


def smooth_image(shape, seed=0, sigma=3.0) -> np.ndarray:
    """A smooth random uint8 image or volume (blurred noise stretched to 0-255)."""
    img = ndimage.gaussian_filter(np.random.default_rng(seed).random(shape), sigma)
    return (255 * (img - img.min()) / np.ptp(img)).astype(np.uint8)


def read_output(out: Path, name: str) -> dict:
    """The maps and grains ``micro-sym segment`` wrote for input ``name`` under ``out``."""
    import zarr

    from micro_sym.io.images import output_array

    g = zarr.open_group(str(Path(out) / f"{name}.zarr"), mode="r")
    return {k: output_array(g, k)[:] for k in OUTPUT_ARRAYS}


def same_partition(a, b) -> bool:
    """Same grains up to renumbering (0 = no grain in both)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or not np.array_equal(a == 0, b == 0):
        return False
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


def quaternion_net_3d():
    """A small real 3D network with the SegModel interface and a 4-channel quaternion head.

    Untrained networks with the cubic-harmonics head produce off-manifold outputs whose per-voxel
    decode takes minutes per tile; this fixed-weight net (orientation = a rotation about z whose
    angle follows the local intensity) decodes instantly and makes the widget's 3D path testable.
    """
    import torch
    from torch import nn

    from micro_sym.inference import as_network

    class QuatNet(nn.Module):
        ndim, k, halo, total_stride = 3, 24, 2, 1
        orientation_encoding, normalization = "quaternion", "unit"
        config = {"arch": "test-quaternion-net"}

        def __init__(self):
            super().__init__()
            self.smooth = nn.Conv3d(1, 1, 3, padding=1, bias=False)
            nn.init.constant_(self.smooth.weight, 1 / 27)

        def forward(self, x):
            a = self.smooth(x) * 1.5  # half-angle in rad, from the local mean intensity in [0, 1]
            return torch.cat([-4 + 0 * a, torch.cos(a), 0 * a, 0 * a, torch.sin(a)], 1)

    return as_network(QuatNet().eval(), name="test-quaternion-net")


def half_lattice(shape=(256, 384), seed=0):
    """Left half a square lattice (period 10 px) in shot-like noise, right half smooth noise (amorphous / vacuum
    background: a spectrum falling with frequency); a soft 8-px transition."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    t = np.deg2rad(23.0)
    u, v = xx * np.cos(t) + yy * np.sin(t), -xx * np.sin(t) + yy * np.cos(t)
    lattice = np.cos(2 * np.pi * u / 10.0) + np.cos(2 * np.pi * v / 10.0)
    weight = 1.0 / (1.0 + np.exp((xx - shape[1] / 2) / 8.0))
    background = ndimage.gaussian_filter(rng.standard_normal(shape), 3.0) * 6.0
    return (weight * lattice + background + 0.3 * rng.standard_normal(shape)).astype(np.float32)


def act(t, r, mirror):
    """A p4m element on a ``(..., y, x)`` torch tensor: rotation by ``r`` × 90°, then a mirror of x."""
    import torch

    t = torch.rot90(t, r, dims=(-2, -1))
    return torch.flip(t, dims=(-1,)) if mirror else t


def expected_output(y, r, mirror, k=4):
    """How the outputs must transform: boundary moves with the image; (cos kθ, sin kθ) as the frequency-k
    field: θ -> θ + 90° r rotates the vector by k·90°·r, then a mirror θ -> 180° - θ negates sin (even k)."""
    out = act(y, r, mirror).clone()
    phi = np.deg2rad(k * 90.0 * r)
    c, s = out[:, 1].clone(), out[:, 2].clone()
    out[:, 1] = np.cos(phi) * c - np.sin(phi) * s
    out[:, 2] = np.sin(phi) * c + np.cos(phi) * s
    if mirror:
        out[:, 1], out[:, 2] = out[:, 1], -out[:, 2]
    return out

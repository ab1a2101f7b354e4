"""Splitting 3D grains that hold two lattices (micro_sym.classical.twin_split3d)."""

from __future__ import annotations

import numpy as np
import pytest
from _lattice import fcc_blobs

from micro_sym.classical.twin_split3d import split_grains
from micro_sym.orientation import (
    axis_angle_to_quat,
    misorientation_cubic,
    quat_multiply,
    random_quaternions,
)

PERIOD = 5.0  # first-ring plane spacing, voxels
F0 = 1.0 / PERIOD
SHAPE = (40, 40, 40)


def _plane_distance(shape, normal, offset):
    """Signed distance (voxels) of each voxel centre from the plane ``normal · (x, y, z) = offset``."""
    z, y, x = np.indices(shape, dtype=np.float64)
    n = np.asarray(normal, np.float64)
    return (n[0] * x + n[1] * y + n[2] * z - offset) / np.linalg.norm(n)


@pytest.mark.parametrize("relation", [
    pytest.param(([1.0, 1.0, 1.0], 60.0), id="sigma3"),
    pytest.param(([0.0, 0.0, 1.0], 45.0), id="45deg-001"),
])
def test_two_lattices_split_along_the_plane(relation):
    rng = np.random.default_rng(11)
    q1 = random_quaternions(1, rng)[0]
    q2 = quat_multiply(q1, axis_angle_to_quat(np.array(relation[0]), relation[1]))
    d = _plane_distance(SHAPE, [1.0, 0.5, 0.3], 30.0)
    vol = np.where(d > 0, fcc_blobs(SHAPE, q2, rng), fcc_blobs(SHAPE, q1, rng))
    labels = np.full(SHAPE, 4, np.int32)
    labels[:, :, :2] = 0  # some background, kept
    new, info = split_grains(vol, labels, ring_frequency=F0, family="111")
    assert info["family"] == "111"
    assert len(info["ids"]) == 2 and info["parent"].tolist() == [4, 4]
    assert np.all(info["ids"] > 4) and np.all(new[labels == 0] == 0)
    # Each part's measured orientation is one of the two lattices, within 1°.
    err = np.array([[misorientation_cubic(q, p) for p in info["quaternions"]] for q in (q1, q2)])
    assert min(err[0, 0] + err[1, 1], err[0, 1] + err[1, 0]) < 2.0 and err.min(axis=1).max() < 1.0, err
    # The part holding the far side of the plane (lattice q2) ...
    k2 = int(np.argmin(err[1]))
    side = new == info["ids"][k2]
    wrong = (side != (d > 0)) & (labels > 0)
    # ... within about 1-2 voxels of the plane: almost every wrong voxel is within 2 voxels of it.
    assert wrong.sum() < 0.05 * (labels > 0).sum()
    assert np.mean(np.abs(d[wrong]) <= 2.0) > 0.95, np.percentile(np.abs(d[wrong]), [50, 90, 99])


def test_single_crystal_not_split():
    rng = np.random.default_rng(12)
    vol = fcc_blobs(SHAPE, random_quaternions(1, rng)[0], rng)
    labels = np.ones(SHAPE, np.int32)
    new, info = split_grains(vol, labels, ring_frequency=F0)
    assert info["family"] == "111" and len(info["ids"]) == 0
    assert np.array_equal(new, labels)


def test_noise_not_split():
    rng = np.random.default_rng(13)
    labels = np.ones(SHAPE, np.int32)
    new, info = split_grains(rng.standard_normal(SHAPE), labels, ring_frequency=F0, family="111")
    assert len(info["ids"]) == 0 and np.array_equal(new, labels)

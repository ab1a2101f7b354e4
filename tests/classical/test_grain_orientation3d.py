"""Each grain's 3D cubic orientation measured from the volume (micro_sym.classical.grain_orientation3d)."""

from __future__ import annotations

import numpy as np
import pytest
from _lattice import fcc_blobs

from micro_sym.classical.grain_orientation3d import (
    FAMILIES,
    MIN_QUALITY,
    grain_orientation,
    grain_orientations,
    index_spots,
)
from micro_sym.orientation import (
    axis_angle_to_quat,
    matrix_to_quat,
    misorientation_cubic,
    quat_multiply,
    quat_to_matrix,
    random_quaternions,
)

PERIOD = 5.0  # first-ring plane spacing, voxels (as _lattice.fcc_blobs)
F0 = 1.0 / PERIOD


def _coords(shape):
    """Voxel centres as volume-frame vectors (x, y, z) = (last, middle, first axis), docs/design.md §1.1."""
    z, y, x = np.indices(shape, dtype=np.float64)
    return np.stack([x, y, z], axis=-1)


def _plane_waves(shape, q, family, rng, noise=0.0):
    """A lattice's first ring: one cosine per family direction g, along R g at the ring frequency."""
    r = _coords(shape)
    rot = quat_to_matrix(q)
    v = sum(np.cos(2 * np.pi * F0 * (r @ (rot @ g)) + rng.uniform(0, 2 * np.pi)) for g in FAMILIES[family])
    return v + noise * rng.standard_normal(shape)


def test_fcc_atoms_recovered():
    rng = np.random.default_rng(1)
    q = random_quaternions(1, rng)[0]
    vol = fcc_blobs((48, 48, 48), q, rng)
    fit = grain_orientation(vol, np.ones(vol.shape, bool), F0)
    assert fit["family"] == "111"
    assert misorientation_cubic(q, fit["quaternion"]) < 0.5, fit
    assert fit["quality"] > 0.8


@pytest.mark.parametrize("family", ["100", "110", "111"])
def test_each_family_recovered(family):
    rng = np.random.default_rng(2)
    q = random_quaternions(1, rng)[0]
    vol = _plane_waves((48, 48, 48), q, family, rng, noise=1.0)
    fit = grain_orientation(vol, np.ones(vol.shape, bool), F0, families=family)
    assert fit["family"] == family
    assert misorientation_cubic(q, fit["quaternion"]) < 0.5, fit


def test_two_grains_both_recovered_and_family_chosen():
    rng = np.random.default_rng(3)
    q = random_quaternions(2, rng)
    shape = (40, 40, 64)
    labels = np.ones(shape, np.int32)
    labels[..., 32:] = 2
    vol = np.where(labels == 1, _plane_waves(shape, q[0], "110", rng), _plane_waves(shape, q[1], "110", rng))
    vol += 0.5 * rng.standard_normal(shape)
    r = grain_orientations(vol, labels, ring_frequency=F0)
    assert r["ids"].tolist() == [1, 2]
    assert r["volume_family"] == "110" and r["family"].tolist() == ["110", "110"]
    err = misorientation_cubic(q, r["quaternions"])
    assert np.all(err < 0.5), (err, r["quality"])
    assert np.all(r["quality"] > MIN_QUALITY)


def test_noise_rejected_and_small_grains_skipped():
    rng = np.random.default_rng(4)
    shape = (48, 48, 48)
    labels = np.ones(shape, np.int32)
    labels[:3, :3, :3] = 2  # 27 voxels: far below MIN_CELLS periods³
    r = grain_orientations(rng.standard_normal(shape), labels, ring_frequency=F0, ids=[2, 1, 7])
    assert r["ids"].tolist() == [2, 1, 7]
    assert np.all(np.isnan(r["quaternions"]))
    assert r["quality"][0] == 0 and r["quality"][2] == 0 and r["family"][0] == ""
    assert 0 < r["quality"][1] < MIN_QUALITY


@pytest.mark.parametrize("axes,turn", [
    # np.rot90 turns from the first towards the second axis: (y, x) maps (x, y, z) -> (y, -x, z) ...
    ((1, 2), [[0, 1, 0], [-1, 0, 0], [0, 0, 1]]),
    # ... and (z, x) maps (x, y, z) -> (z, y, -x).
    ((0, 2), [[0, 0, 1], [0, 1, 0], [-1, 0, 0]]),
])
def test_equivariant_under_cube_rotations(axes, turn):
    rng = np.random.default_rng(5)
    q = random_quaternions(1, rng)[0]
    vol = _plane_waves((40, 40, 40), q, "111", rng, noise=0.5)
    mask = np.ones(vol.shape, bool)
    base = grain_orientation(vol, mask, F0)["quaternion"]
    turned = grain_orientation(np.rot90(vol, 1, axes), mask, F0)["quaternion"]
    expected = quat_multiply(matrix_to_quat(np.asarray(turn, np.float64)), base)
    assert misorientation_cubic(expected, turned) < 0.05
    # Not a symmetry of the measurement by accident: the turned volume's orientation did change.
    assert misorientation_cubic(base, turned) > 1.0


def test_index_spots_exact_directions():
    """Spots exactly at R g (either sign, plus a stray spot) give R back, quality = their share."""
    q = axis_angle_to_quat(np.array([1.0, 2.0, 3.0]), 37.0)
    rot = quat_to_matrix(q)
    dirs = (FAMILIES["111"] @ rot.T) * np.array([[1], [-1], [1], [-1]])
    stray = np.array([[0.6, 0.0, 0.8]])
    fit = index_spots(np.concatenate([dirs, stray]), np.array([4.0, 3.0, 2.0, 1.0, 1.0]))
    assert fit["family"] == "111" and fit["n_matched"] == 4
    assert misorientation_cubic(q, fit["quaternion"]) < 1e-6
    assert fit["quality"] == pytest.approx(10.0 / 11.0)


def test_segment_writes_each_grains_measured_orientation(tmp_path):
    """End to end through the block engine (8 blocks, one grain across all of them): the grain
    table's lattice_q* is the rendered crystal's orientation; --no-measure-grains leaves it empty."""
    import csv

    import tifffile
    from _helpers import quaternion_net_3d

    from micro_sym.inference import segment

    rng = np.random.default_rng(5)
    q = random_quaternions(1, rng)[0]
    vol = fcc_blobs((64, 64, 64), q, rng)
    tifffile.imwrite(tmp_path / "v.tif", ((vol - vol.min()) / np.ptp(vol) * 60000).astype(np.uint16))
    kw = dict(model=quaternion_net_3d(), block=32, chunk=32, threshold=180.0, min_size=0, workers=1)
    (res,) = segment([tmp_path / "v.tif"], tmp_path / "out", **kw)
    assert res.status == "complete", res.error
    with open(res.csv, newline="") as f:
        rows = [r for r in csv.DictReader(line for line in f if not line.startswith("#"))]
    big = max(rows, key=lambda r: int(r["n_points"]))
    measured = np.array([float(big[f"lattice_q{c}"]) for c in "wxyz"])
    assert misorientation_cubic(q, measured) < 0.5 and float(big["lattice_quality"]) > 0.8
    (res,) = segment([tmp_path / "v.tif"], tmp_path / "off", measure_grains=False, **kw)
    with open(res.csv, newline="") as f:
        assert {r["lattice_qw"] for r in csv.DictReader(line for line in f if not line.startswith("#"))} == {""}


def test_shell_geometry_cache_is_bounded_in_bytes(monkeypatch):
    """Grains of a large volume need many padded FFT sizes: the cached shell geometries stay within
    GEOMETRY_CACHE_BYTES (least recently used dropped), and a size still cached is not rebuilt."""
    from micro_sym.classical import grain_orientation3d as go

    monkeypatch.setattr(go, "_geometries", type(go._geometries)())
    one = go._shell_geometry((48, 48, 48), 0.2)
    assert go._shell_geometry((48, 48, 48), 0.2) is one
    largest = go._build_shell_geometry((56, 56, 56), 0.2)
    limit = 2 * sum(a.nbytes for a in largest.values() if isinstance(a, np.ndarray))
    monkeypatch.setattr(go, "GEOMETRY_CACHE_BYTES", limit)
    for n in (50, 52, 54, 56):
        go._shell_geometry((n, n, n), 0.2)
    assert sum(nbytes for _, nbytes in go._geometries.values()) <= limit
    assert ((56, 56, 56), 0.2) in go._geometries and ((48, 48, 48), 0.2) not in go._geometries

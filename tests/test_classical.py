"""Classical (Gabor filter-bank) orientation mapping: period, angles, symmetry behaviour, grains, errors."""

from __future__ import annotations

import numpy as np
import pytest

from micro_sym.classical import (
    classical_halo,
    classical_orientation_map,
    classical_segment,
    classical_stride,
    estimate_period,
)
from micro_sym.errors import MicroSymError
from micro_sym.metrics import grain_f1
from micro_sym.orientation import misorientation_2d
from micro_sym.synth import Imaging2D, Synth2DConfig, micrograph_from_grains, render_lattice_2d, synth_2d


def _interior(ids, margin):
    """Pixels farther than ``margin`` from a grain boundary and from the image edge."""
    from scipy import ndimage

    from micro_sym.metrics import boundary_from_labels

    inner = ~boundary_from_labels(ids)
    inner[[0, -1], :] = False
    inner[:, [0, -1]] = False
    return ndimage.binary_erosion(inner, iterations=margin)


@pytest.fixture(scope="module")
def two_grains():
    """Clean square-lattice image: grain 1 at 12.3°, grain 2 at 51.7° (left/right halves)."""
    ids = np.ones((192, 192), np.int32)
    ids[:, 96:] = 2
    img = render_lattice_2d(ids, {0: 0.0, 1: 12.3, 2: 51.7}, lattice="square", period=8.0, rng=3)
    return ids, img, np.where(ids == 1, 12.3, 51.7)


def test_subdegree_orientation_clean(two_grains):
    ids, img, truth = two_grains
    out = classical_orientation_map(img, lattice="square", period=8.0)
    err = misorientation_2d(out["orientation"], truth, 4)[_interior(ids, 16)]
    assert np.median(err) < 0.2
    assert np.percentile(err, 99) < 1.0
    assert out["orientation"].dtype == np.float32 and out["orientation"].min() >= 0 and out["orientation"].max() < 90
    assert np.median(out["confidence"][_interior(ids, 16)]) > 0.8


def test_hexagonal_orientation():
    ids = np.ones((160, 160), np.int32)
    ids[:, 80:] = 2
    img = render_lattice_2d(ids, {0: 0.0, 1: 7.0, 2: 41.0}, lattice="hexagonal", period=8.0, rng=1)
    out = classical_orientation_map(img, lattice="hexagonal")
    truth = np.where(ids == 1, 7.0, 41.0)
    err = misorientation_2d(out["orientation"], truth, 6)[_interior(ids, 16)]
    assert np.median(err) < 0.3
    assert abs(out["period"] - 8.0) < 0.2
    assert out["orientation"].max() < 60


@pytest.mark.parametrize("lattice,period", [("square", 7.3), ("hexagonal", 9.0), ("square", 5.0)])
def test_period_estimate_noisy_with_background(lattice, period):
    cfg = Synth2DConfig(size=(256, 256), lattice=lattice, period=period,
                        imaging={"dose": 5.0, "background_variation": 1.0, "thickness_variation": 0.5})
    s = synth_2d(cfg, seed=4)
    est = estimate_period(s.image, lattice)
    assert abs(est - period) / period < 0.02
    # Contrast inversion and an added strong gradient leave the ring where it is.
    yy, xx = np.mgrid[0:256, 0:256]
    inv = s.image.max() - s.image + 0.5 * s.image.mean() * xx / 256
    assert abs(estimate_period(inv, lattice) - period) / period < 0.02


def test_rot90_and_mirror(two_grains):
    ids, img, _ = two_grains
    base = classical_orientation_map(img, period=8.0)["orientation"]
    inner = _interior(ids, 16)
    # rot90 of the image rotates the lattice by 90°: angles unchanged mod 90 at the rotated pixels.
    rot = classical_orientation_map(np.rot90(img), period=8.0)["orientation"]
    err = misorientation_2d(np.rot90(base), rot, 4)[np.rot90(inner)]
    assert np.median(err) < 0.05 and err.max() < 0.5
    # Mirror x -> -x maps θ to -θ (mod 90).
    flip = classical_orientation_map(np.fliplr(img), period=8.0)["orientation"]
    err = misorientation_2d(np.fliplr(-base), flip, 4)[np.fliplr(inner)]
    assert np.median(err) < 0.05 and err.max() < 0.5
    # Mirror y -> -y as well.
    flip = classical_orientation_map(np.flipud(img), period=8.0)["orientation"]
    err = misorientation_2d(np.flipud(-base), flip, 4)[np.flipud(inner)]
    assert np.median(err) < 0.05 and err.max() < 0.5


def test_contrast_inversion_invariance():
    ids = np.ones((160, 160), np.int32)
    ids[60:, :] = 2
    angles = {0: 0.0, 1: 33.0, 2: 71.0}
    img = micrograph_from_grains(ids, angles, imaging=Imaging2D(dose=50.0), seed=2, period=8.0)
    a = classical_segment(img, period=8.0)
    b = classical_segment(img.max() - img, period=8.0)
    # The filter bank sees |F| only after removing the local mean, so I and c - I are the same input.
    assert np.allclose(a["orientation"], b["orientation"], atol=1e-3) or np.median(
        misorientation_2d(a["orientation"], b["orientation"], 4)) < 1e-3
    assert np.array_equal(a["grains"], b["grains"])


def test_grains_clean_synthetic():
    cfg = Synth2DConfig(size=(320, 320), imaging={"dose": 1000.0}, microstructure={"grain_size": 100.0})
    s = synth_2d(cfg, seed=11)
    out = classical_segment(s.image, lattice="square")
    assert abs(out["period"] - 8.0) < 0.1
    assert out["grains"].dtype == np.uint32 and out["grains"].max() >= 2
    assert out["boundary"].shape == s.image.shape and out["boundary"].dtype == np.float32
    g = grain_f1(out["grains"], s.grains)
    assert g["f1"] > 0.6, g
    err = misorientation_2d(out["orientation"], s.orientation, 4)[_interior(s.grains, 12)]
    assert np.median(err) < 0.3


def test_blockwise_equals_whole_image():
    """A block read with the documented halo, on the documented stride, reproduces the whole image."""
    h, d = classical_halo(8.0), classical_stride(8.0)
    assert h % d == 0
    n = 2 * h + 4 * d + 80
    ids = np.ones((n, n), np.int32)
    ids[:, n // 2 + 5:] = 2
    ids[n // 2 - 17:, : n // 3] = 3
    img = render_lattice_2d(ids, {0: 0.0, 1: 12.3, 2: 51.7, 3: 80.0}, period=8.0, rng=3)
    kw = dict(period=8.0, close=False)
    whole = classical_orientation_map(img, **kw)
    r0, b = h + 4 * d, 64  # block origin on the stride, block fully inside the image with its halo
    block = classical_orientation_map(img[r0 - h : r0 + b + h, r0 - h : r0 + b + h], **kw)
    core = (slice(h, h + b), slice(h, h + b))
    ref = (slice(r0, r0 + b), slice(r0, r0 + b))
    err = misorientation_2d(block["orientation"][core], whole["orientation"][ref], 4)
    assert err.max() < 0.02, err.max()
    assert np.abs(block["confidence"][core] - whole["confidence"][ref]).max() < 1e-3


def test_bad_input():
    with pytest.raises(MicroSymError, match="constant"):
        classical_orientation_map(np.full((64, 64), 7.0))
    with pytest.raises(MicroSymError, match="2D"):
        classical_orientation_map(np.zeros((4, 64, 64)))
    with pytest.raises(MicroSymError, match="2D"):
        classical_segment(np.random.default_rng(0).random((8, 64, 64)))
    with pytest.raises(MicroSymError, match="real"):
        classical_orientation_map(np.ones((64, 64), complex))
    with pytest.raises(MicroSymError, match="small"):
        classical_orientation_map(np.random.default_rng(0).random((8, 64)))
    with pytest.raises(MicroSymError, match="lattice"):
        classical_orientation_map(np.random.default_rng(0).random((64, 64)), lattice="cubic")
    with pytest.raises(MicroSymError, match="no lattice"):
        estimate_period(np.random.default_rng(0).random((128, 128)))


def test_cli_writes_segmentation_layout(tmp_path, two_grains):
    import tifffile
    import zarr

    from micro_sym.cli import main

    def run(argv):
        try:
            return main(argv)
        except SystemExit as e:  # typer exits explicitly on success
            return e.code

    _, img, _ = two_grains
    path = tmp_path / "img.tif"
    tifffile.imwrite(path, (img * 1000).astype(np.uint16))
    assert run(["classical", str(path), "--out", str(tmp_path / "out")]) == 0
    root = zarr.open_group(str(tmp_path / "out" / "img.zarr"), mode="r")
    assert {"boundary", "orientation", "grains"} <= set(root.array_keys())
    assert root["grains"].dtype == np.uint32 and int(root["grains"][...].max()) >= 2
    assert (tmp_path / "out" / "img_grains.csv").read_text().count("\n") >= 3
    # Existing output without --overwrite, and a 3D input, are user errors (exit status 2).
    assert run(["classical", str(path), "--out", str(tmp_path / "out")]) == 2
    tifffile.imwrite(tmp_path / "vol.tif", np.zeros((4, 32, 32), np.uint8))
    assert run(["classical", str(tmp_path / "vol.tif"), "--out", str(tmp_path / "o2")]) == 2

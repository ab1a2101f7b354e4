"""Each grain's lattice angle measured from the image (micro_sym.classical.grain_lattice)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from micro_sym.classical.filter_bank import ring_frequency
from micro_sym.classical.grain_lattice import (
    FRINGES_MIN_STRENGTH,
    MAX_WINDOW,
    MIN_STRENGTH,
    grain_extents,
    grain_lattice_angles,
    lattice_angles,
    lattice_shown,
    measure_window,
    merge_extents,
    ring_sums,
    select_extents,
)
from micro_sym.orientation import misorientation_2d
from micro_sym.synth.lattice2d import render_lattice_2d


def _two_grains(angles, lattice="square", size=192, period=8.0, noise=0.0, seed=0, right_lattice=None):
    """Left and right halves at their own angles (render_lattice_2d: the product's convention); the right
    half on ``right_lattice`` (same period) where given."""
    labels = np.ones((size, size), np.int32)
    labels[:, size // 2:] = 2
    image = np.asarray(render_lattice_2d(labels, {1: angles[0], 2: angles[1]}, lattice=lattice, period=period),
                       np.float64)
    if right_lattice:
        right = render_lattice_2d(labels, {1: angles[0], 2: angles[1]}, lattice=right_lattice, period=period)
        image[:, size // 2:] = np.asarray(right, np.float64)[:, size // 2:]
    image += np.random.default_rng(seed).normal(0.0, noise, image.shape)
    return image, labels


@pytest.mark.parametrize("lattice,k,angles", [("square", 4, (7.3, 61.0)), ("hexagonal", 6, (3.1, 44.0))])
def test_angles_of_rendered_grains(lattice, k, angles):
    image, labels = _two_grains(angles, lattice, noise=0.3)
    r = grain_lattice_angles(image, labels, period=8.0, lattice=lattice)
    assert r["ids"].tolist() == [1, 2]
    err = misorientation_2d(r["angle_deg"], np.asarray(angles), k)
    assert np.all(err < 0.2), (r, err)
    assert np.all(r["strength"] > 0.7)


@pytest.mark.parametrize("fringes_angle", [37.0, 127.0])
@pytest.mark.parametrize("lattice", ["square", "hexagonal"])
def test_one_set_of_fringes_is_told_from_a_2d_lattice(lattice, fringes_angle):
    """A grain showing one set of fringes reads at k = 2: strength near 1 and its plane normal modulo 180°
    (37° and 127° are one angle modulo 90°, two here); a square or hexagonal grain's spots cancel at
    k = 2, so it has no fringes angle."""
    image, labels = _two_grains((fringes_angle, 61.0), lattice, noise=0.3)
    # The left grain: fringes of the lattice's first-ring planes (a hexagonal lattice's lie √3/2 periods apart).
    spacing = 8.0 * np.sqrt(3) / 2 if lattice == "hexagonal" else 8.0
    fringes = render_lattice_2d(labels, {1: fringes_angle, 2: 0.0}, lattice="fringes", period=spacing)
    image[:, :96] = np.asarray(fringes, np.float64)[:, :96] + np.random.default_rng(1).normal(0.0, 0.3, (192, 96))
    r = grain_lattice_angles(image, labels, period=8.0, lattice=lattice)
    assert r["fringes_strength"][0] > 0.8 and r["fringes_strength"][1] < 0.2, r
    assert misorientation_2d(r["fringes_angle_deg"][0], fringes_angle, 2) < 0.3, r
    assert np.isnan(r["fringes_angle_deg"][1])
    assert FRINGES_MIN_STRENGTH > MIN_STRENGTH


def test_equivariant_under_the_square_group():
    """Rotating the image by 90° keeps a square lattice's angle (mod 90); a mirror turns θ into −θ.
    (Within 1e-3°, not float rounding: a turned crop's spectrum is summed over the other half-plane.)"""
    image, labels = _two_grains((12.0, 33.0), noise=0.2)
    base = grain_lattice_angles(image, labels, period=8.0, lattice="square")["angle_deg"]
    turned = grain_lattice_angles(np.rot90(image), np.rot90(labels), period=8.0, lattice="square")["angle_deg"]
    mirrored = grain_lattice_angles(image[:, ::-1], labels[:, ::-1], period=8.0, lattice="square")["angle_deg"]
    assert np.all(misorientation_2d(turned, base, 4) < 1e-3)
    assert np.all(misorientation_2d(mirrored, -base, 4) < 1e-3)


def test_no_lattice_gives_no_angle():
    rng = np.random.default_rng(1)
    image = rng.normal(size=(160, 160))
    labels = np.ones(image.shape, np.int32)
    r = grain_lattice_angles(image, labels, period=8.0, lattice="square")
    assert r["strength"][0] < MIN_STRENGTH and np.isnan(r["angle_deg"][0])


def test_extents_of_parts_are_the_whole_maps():
    """A grain cut into blocks (the engine's case): the blocks' extents combine into the whole map's,
    bit for bit, so its measurement window, and so its sums, do not depend on the cut."""
    rng = np.random.default_rng(3)
    labels = ndimage.label(rng.random((150, 170)) > 0.4)[0].astype(np.uint32)
    labels[labels % 3 == 0] = 7  # some grains in many pieces
    whole = grain_extents(labels)
    parts = [grain_extents(labels[r:r + 64, c:c + 48], origin=(r, c)) for r in range(0, 150, 64) for c in range(0, 170, 48)]
    merged = merge_extents(parts)
    for key in whole:
        np.testing.assert_array_equal(merged[key], whole[key])
    assert list(select_extents(whole, [7, 1, 9999])["ids"]) == [7, 1]


def test_window_of_a_large_grain():
    """A grain wider than MAX_WINDOW is measured in a MAX_WINDOW window inside its box, around its centre."""
    assert measure_window((0, 10), (100, 30), (50.0, 20.0)) == (slice(0, 100), slice(10, 30))
    assert measure_window((0, 0), (2000, 600), (100.2, 590.0)) == (slice(0, MAX_WINDOW), slice(600 - MAX_WINDOW, 600))
    assert measure_window((0, 0), (2000, 600), (1000.0, 300.0))[0] == slice(1000 - MAX_WINDOW // 2, 1000 + MAX_WINDOW // 2)


def test_grains_without_a_lattice_are_not_shown():
    """lattice_shown keeps a grain whose 2D lattice or one set of fringes reaches WEAK_LATTICE_STRENGTH of
    its ring power, and leaves out a noise grain and a grain too small to measure."""
    image, labels = _two_grains((21.0, 160.0), noise=0.3, right_lattice="fringes")
    rng = np.random.default_rng(5)
    image = np.concatenate([image, rng.normal(scale=image.std(), size=(96, image.shape[1]))])
    labels = np.concatenate([labels, np.full((96, labels.shape[1]), 3, labels.dtype)])
    labels[-4:, -4:] = 4  # 16 px: too small to measure
    sums = ring_sums(image, labels, ring_frequency=ring_frequency(8.0), k=4)
    shown = dict(zip(sums["ids"].tolist(), lattice_shown(sums).tolist()))
    assert shown == {1: True, 2: True, 3: False}  # grain 4 is not measured at all


def test_hexagonal_angle_is_the_basis_vector():
    """A hexagonal lattice's fringe normals lie 30° from its basis vectors: the angle is the basis vector's."""
    ck = np.array([np.exp(1j * np.radians(6 * 40.0))])  # ring spots at 40° (+ 60° multiples)
    angle, strength = lattice_angles(ck, np.array([1.0]), 6, "hexagonal")
    assert angle[0] == pytest.approx(10.0) and strength[0] == pytest.approx(1.0)
    angle, _ = lattice_angles(np.array([np.exp(1j * np.radians(4 * 40.0))]), np.array([1.0]), 4, "square")
    assert angle[0] == pytest.approx(40.0)


def test_sums_do_not_depend_on_the_image_dtype_or_layout():
    """The engine hands the measurement its input as stored (uint16, a view into a larger region) and its
    labels as uint32: the sums equal those of the same pixels as contiguous float64 and int32 labels,
    and a non-finite pixel counts as outside the grain."""
    image, labels = _two_grains((12.0, 57.0), noise=0.2)
    counts = np.round(100 * (image - image.min())).astype(np.uint16)
    wide = np.zeros((counts.shape[0] + 10, counts.shape[1] + 20), np.uint16)
    wide[5:-5, 7:-13] = counts
    view = wide[5:-5, 7:-13]  # not contiguous
    rf = ring_frequency(8.0)
    reference = ring_sums(counts.astype(np.float64), labels, ring_frequency=rf, k=4)
    stored = ring_sums(view, labels.astype(np.uint32), ring_frequency=rf, k=4)
    for key in reference:
        np.testing.assert_allclose(stored[key], reference[key], rtol=1e-12, atol=0)
    with_nan = counts.astype(np.float32)
    with_nan[40:50, 20:30] = np.nan
    cut = labels.copy()
    cut[40:50, 20:30] = 0
    np.testing.assert_array_equal(ring_sums(with_nan, labels, ring_frequency=rf, k=4)["ck"],
                                  ring_sums(counts.astype(np.float32), cut, ring_frequency=rf, k=4)["ck"])


def test_small_grains_are_skipped():
    image, labels = _two_grains((10.0, 20.0), size=64)
    labels[:] = 0
    labels[:4, :4] = 3  # 16 px: far below MIN_CELLS lattice cells
    assert ring_sums(image, labels, ring_frequency=1 / 8.0, k=4)["ids"].size == 0


@pytest.mark.parametrize("method", ["auto", "classical"])
def test_segment_writes_each_grains_measured_angle(tmp_path, method):
    """End to end through the block engine (4 blocks, grains cut by block edges): the grain table's
    lattice_angle is the rendered angle; the run records how it was measured."""
    import csv

    import tifffile
    import zarr

    from micro_sym.inference import segment

    angles = (14.0, 52.5)
    image, _ = _two_grains(angles, size=256, noise=0.2)
    tifffile.imwrite(tmp_path / "two.tif", ((image - image.min()) * 1000).astype(np.uint16))
    (res,) = segment([tmp_path / "two.tif"], tmp_path / "out", method=method, block=128, chunk=128, workers=1)
    assert res.status == "complete", res.error
    with open(res.csv, newline="") as f:
        rows = list(csv.DictReader(line for line in f if not line.startswith("#")))
    big = sorted((r for r in rows if int(r["n_points"]) > 5000), key=lambda r: float(r["centroid_x_px"]))
    assert len(big) == 2
    measured = np.array([float(r["lattice_angle_deg"]) for r in big])
    assert np.all(misorientation_2d(measured, np.asarray(angles), 4) < 0.3), measured
    assert all(r["fringes_angle_deg"] == "" and float(r["fringes_strength"]) < 0.2 for r in big)  # a square lattice
    setting = zarr.open_group(res.zarr, mode="r").attrs["micro_sym"]["method"]["grain_lattice"]
    assert setting["k"] == 4 and setting["lattice"] == "square"


def test_segment_reads_fringes_modulo_180(tmp_path):
    """Two grains of fringes at right angles plus 38.5° (14° and 142.5°: 38.5° apart modulo 90°, so
    auto's square network separates them) through the block engine: the grain table gives each one's
    plane normal modulo 180°, which the square network's own angles cannot."""
    import csv

    import tifffile

    from micro_sym.inference import segment

    angles = (14.0, 142.5)
    image, _ = _two_grains(angles, "fringes", size=256, noise=0.2)
    tifffile.imwrite(tmp_path / "fringes.tif", ((image - image.min()) * 1000).astype(np.uint16))
    (res,) = segment([tmp_path / "fringes.tif"], tmp_path / "out", block=128, chunk=128, workers=1)
    assert res.status == "complete", res.error
    with open(res.csv, newline="") as f:
        rows = list(csv.DictReader(line for line in f if not line.startswith("#")))
    big = sorted((r for r in rows if int(r["n_points"]) > 5000), key=lambda r: float(r["centroid_x_px"]))
    assert len(big) == 2
    assert all(float(r["fringes_strength"]) > 0.8 for r in big)
    measured = np.array([float(r["fringes_angle_deg"]) for r in big])
    assert np.all(misorientation_2d(measured, np.asarray(angles), 2) < 0.3), measured


@pytest.mark.parametrize("method", ["auto", "classical"])
def test_napari_core_measures_the_grains_lattice_as_the_cli(tmp_path, method):
    """The napari plugin's segmentation (micro_sym.inference.interactive) fills the grain table's lattice
    and fringes columns: with a network, from the tiles' seed labels as `micro-sym segment` does (the same
    figures); with the filter bank, over each grain as `micro-sym classical` does."""
    import csv

    import tifffile

    from micro_sym.inference import interactive, segment

    angles = (14.0, 142.5)
    image, _ = _two_grains(angles, "fringes", size=256, noise=0.2)
    image = ((image - image.min()) * 1000).astype(np.uint16)
    res = interactive.segment(image, interactive.SegmentSettings(model=method, tile=128))
    big = [i for i, n in enumerate(res.table["n_points"]) if n > 5000]
    assert len(big) == 2
    measured = np.asarray(res.table["fringes_angle"])[big]
    assert np.all(np.sort(misorientation_2d(measured, np.asarray(angles)[:, None], 2).min(axis=0)) < 0.5), measured
    if method == "auto":
        tifffile.imwrite(tmp_path / "fringes.tif", image)
        (cli,) = segment([tmp_path / "fringes.tif"], tmp_path / "out", block=128, chunk=128, workers=1)
        with open(cli.csv, newline="") as f:
            rows = {int(r["grain"]): r for r in csv.DictReader(line for line in f if not line.startswith("#"))}
        for i, grain in enumerate(res.table["grain"]):
            for column in ("lattice_angle", "fringes_angle", "fringes_strength"):
                value, written = float(res.table[column][i]), rows[int(grain)][f"{column}_deg" if "angle" in column
                                                                               else column]
                assert (np.isnan(value) and written == "") or abs(value - float(written)) < 1e-3, (grain, column)

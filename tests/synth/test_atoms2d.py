"""Atomistic micrographs (micro_sym.synth.atoms2d): the truth is checked against the atoms and the pixels.

The projected lattices against crystallography, the stored angle and period against the rendered
image's Fourier peaks (a sign or frame slip would put them elsewhere), the no-grain truth against where
the atoms are, and both imaging modes (HAADF-STEM, abTEM HRTEM) against the lattice they must show.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from micro_sym.orientation import misorientation_2d
from micro_sym.synth import Atoms2DConfig, synth_atoms2d
from micro_sym.synth.atoms2d import AMORPHOUS, CRYSTAL, FRINGE, OFF_ZONE, VACUUM, build_film, load_atoms2d_config, projected_lattice

SQ2, SQ3, SQ6 = np.sqrt(2), np.sqrt(3), np.sqrt(6)


@pytest.mark.parametrize(
    "lattice, element, a, zone, k, period",
    [
        ("fcc", "Au", 4.08, "001", 4, 4.08 / 2),  # columns at the face centres
        ("bcc", "Fe", 2.87, "001", 4, 2.87 / SQ2),  # body centre between corners: 45°
        ("diamond", "Si", 5.43, "001", 4, 5.43 * SQ2 / 4),  # the (¼, ¼) columns halve the fcc spacing again
        ("sc", "Po", 3.35, "001", 4, 3.35),
        ("fcc", "Au", 4.08, "111", 6, 4.08 / SQ6),  # ABC stacking fills a triangular lattice
        ("bcc", "Fe", 2.87, "111", 6, 2.87 * SQ2 / SQ3),
    ],
)
def test_projected_lattice_matches_crystallography(lattice, element, a, zone, k, period):
    got_k, got_period, angle = projected_lattice(lattice, element, a, zone)
    assert got_k == k
    assert got_period == pytest.approx(period, rel=1e-6)
    # [001] projections are aligned with the cube axes (fcc, sc) or at 45° (bcc, diamond).
    if zone == "001":
        assert min(angle % 45, 45 - angle % 45) < 1e-6


def _fft_angle_and_period(image: np.ndarray, k: int, period: float) -> tuple[float, float]:
    """Direction (degrees, y up, mod 360/k) and period (px) of the strongest Fourier peak within 15 % of
    the first-order ring of ``period`` (HRTEM's transfer function can favour a higher order)."""
    img = image.astype(np.float64)
    img = (img - img.mean()) * np.outer(np.hanning(img.shape[0]), np.hanning(img.shape[1]))
    n = 4 * max(img.shape)
    power = np.abs(np.fft.fft2(img, s=(n, n))) ** 2
    f = np.fft.fftfreq(n)
    fy, fx = np.meshgrid(f, f, indexing="ij")
    r = np.hypot(fy, fx)
    f0 = 1 / (period * (np.sqrt(3) / 2 if k == 6 else 1.0))
    power[np.abs(r / f0 - 1) > 0.15] = 0
    iy, ix = np.unravel_index(np.argmax(power), power.shape)
    # Rows grow downwards, so the physical y frequency is minus the row frequency (docs/design.md §1.1).
    angle = np.degrees(np.arctan2(-fy[iy, ix], fx[iy, ix]))
    # For a hexagonal lattice the first Fourier peaks are 30° from the real-space basis vectors.
    if k == 6:
        angle -= 30.0
    return angle % (360 / k), 1 / r[iy, ix] / (np.sqrt(3) / 2 if k == 6 else 1.0)


SINGLE = {"grain_size": 400.0, "max_tilt": 0.0}


def _single_grain(cfg):
    """The first seed whose image is one grain (big cells can still meet inside the field)."""
    return next(s for s in (synth_atoms2d(cfg, seed=i) for i in range(20)) if s.grains.min() == s.grains.max() == 1)


@pytest.mark.parametrize("zone, lattice, element, px", [("001", "fcc", "Au", 0.2), ("001", "bcc", "Fe", 0.2),
                                                        ("111", "fcc", "Au", 0.2), ("001", "mos2", "Mo", 0.4),
                                                        ("001", "graphene", "C", 0.3)])
def test_haadf_image_shows_the_stored_angle_and_period(zone, lattice, element, px):
    # Periods of 7-12 px: a 128² image resolves the Fourier peak's direction to a few tenths of a degree.
    cfg = Atoms2DConfig(size=(128, 128), zone=zone, lattice=lattice, element=element, pixel_size_angstrom=px,
                        film=SINGLE, haadf={"dose": (500.0, 500.0), "jitter": 0.0, "drift": 0.0})
    s = _single_grain(cfg)
    k = s.info["k"]
    truth = float(np.nanmedian(s.orientation))
    angle, period = _fft_angle_and_period(s.image, k, s.info["period_px"])
    assert misorientation_2d(angle, truth, k) < 0.5
    assert period == pytest.approx(s.info["period_px"], rel=0.02)


def test_hrtem_image_shows_the_stored_angle_and_period():
    cfg = Atoms2DConfig(mode="hrtem", size=(96, 96), pixel_size_angstrom=0.25, film={**SINGLE, "thickness": (12.0, 12.0)},
                        hrtem={"dose": (1000.0, 1000.0), "sampling": 0.15, "defocus": (-40.0, -40.0), "cs_um": (-10.0, -10.0)})
    s = _single_grain(cfg)
    angle, period = _fft_angle_and_period(s.image, 4, s.info["period_px"])
    assert misorientation_2d(angle, float(np.nanmedian(s.orientation)), 4) < 0.5
    assert period == pytest.approx(s.info["period_px"], rel=0.02)
    assert s.info["mode"] == "hrtem" and "defocus_angstrom" in s.info


def _ring_peaks(image: np.ndarray, period: float, directions) -> np.ndarray:
    """Strongest Fourier power within 10 % of the frequency 1/``period`` and 4° of each direction (degrees, y up)."""
    img = image.astype(np.float64)
    img = (img - img.mean()) * np.outer(np.hanning(img.shape[0]), np.hanning(img.shape[1]))
    n = 4 * max(img.shape)
    power = np.abs(np.fft.fft2(img, s=(n, n))) ** 2
    fy, fx = np.meshgrid(np.fft.fftfreq(n), np.fft.fftfreq(n), indexing="ij")
    on_ring = np.abs(np.hypot(fy, fx) * period - 1) < 0.1
    angle = np.degrees(np.arctan2(-fy, fx))
    return np.array([power[on_ring & (np.abs((angle - d + 90) % 180 - 90) < 4)].max() for d in directions])


def _one_cell_of(kind, key, zone="001"):
    """A 128² HAADF image of one 30-Å-thick cell of ``kind`` (the first seed that gives one)."""
    film = {"grain_size": 400.0, "max_tilt": 0.0, "thickness": (30.0, 30.0), key: 0.8}
    cfg = Atoms2DConfig(size=(128, 128), zone=zone, pixel_size_angstrom=0.2, film=film,
                        haadf={"dose": (500.0, 500.0), "jitter": 0.0, "drift": 0.0})
    for seed in range(40):
        s = synth_atoms2d(cfg, seed=seed)
        if len(np.unique(s.cells)) == 1 and s.info[f"n_{key.removesuffix('_fraction')}"] == 1:
            return s
    raise AssertionError(f"no single {kind} cell in 40 seeds")


@pytest.mark.parametrize("zone", ["001", "111"])
def test_fringe_cells_show_one_plane_set_at_the_stored_angle(zone):
    s = _one_cell_of(FRINGE, "fringe_fraction", zone)
    k, period = s.info["k"], s.info["period_px"]
    assert s.grains.min() == 1 and np.isfinite(s.orientation).all()
    # Square: the first-ring normals lie along the lattice vectors; hexagonal: 30° from them.
    normals = float(np.nanmedian(s.orientation)) + (30.0 if k == 6 else 0.0) + np.arange(0, 180, 360 / k)
    fringe_period = period * (np.sqrt(3) / 2 if k == 6 else 1.0)
    peaks = _ring_peaks(s.image, fringe_period, normals)
    on_zone = _ring_peaks(synth_atoms2d(Atoms2DConfig(size=(128, 128), zone=zone, pixel_size_angstrom=0.2,
                                                      film={"grain_size": 400.0, "max_tilt": 0.0, "thickness": (30.0, 30.0)},
                                                      haadf={"dose": (500.0, 500.0), "jitter": 0.0, "drift": 0.0}), seed=0).image,
                          fringe_period, np.arange(0, 180, 1.0)).max()
    # One of the first-ring plane sets is as strong as an on-zone crystal's, the others are gone.
    assert peaks.max() > 0.5 * on_zone
    assert np.sort(peaks)[-2] < 0.01 * peaks.max()


def test_a_film_of_fringe_grains_is_a_fringes_dataset_with_the_plane_normals_as_truth():
    """Every grain a fringe cell: the dataset's lattice is fringes (k = 2) and each grain's fringes,
    measured on the image modulo 180°, point where its truth says (which modulo 90° could not tell)."""
    from micro_sym.classical.grain_lattice import grain_lattice_angles

    cfg = Atoms2DConfig(size=(256, 256), pixel_size_angstrom=0.26,
                        film={"grain_size": 25.0, "fringe_fraction": 0.8, "vacuum_fraction": 0.1, "amorphous_fraction": 0.1},
                        haadf={"dose": (300.0, 300.0)})
    assert cfg.dataset_lattice == "fringes"
    s = synth_atoms2d(cfg, seed=4)
    assert s.info["lattice"] == "fringes" and s.info["k"] == 2 and s.info["n_fringe"] >= 8
    found = grain_lattice_angles(s.image.astype(np.float32), s.grains.astype(np.int32), period=s.info["period_px"],
                                 lattice="fringes")
    truth = np.array([np.nanmedian(s.orientation[s.grains == g]) for g in found["ids"]])
    assert len(truth) >= 8 and np.median(misorientation_2d(found["angle_deg"], truth, 2)) < 1.0
    assert truth.min() < 90 < truth.max() < 180  # angles over the whole half-turn


def test_off_zone_cells_show_no_fringes():
    s = _one_cell_of(OFF_ZONE, "off_zone_fraction")
    assert s.grains.max() == 0 and np.isnan(s.orientation).all()
    crystal = synth_atoms2d(Atoms2DConfig(size=(128, 128), pixel_size_angstrom=0.2,
                                          film={"grain_size": 400.0, "max_tilt": 0.0, "thickness": (30.0, 30.0)},
                                          haadf={"dose": (500.0, 500.0), "jitter": 0.0, "drift": 0.0}), seed=0)
    # No resolved plane set (down to 0.7 of the period: {111}, {200}, {220} of Au) is near edge-on.
    for ratio in (1.0, 2.356 / 2.04, 1.442 / 2.04):
        directions = np.arange(0, 180, 1.0)
        off = _ring_peaks(s.image, s.info["period_px"] * ratio, directions).max()
        assert off < 0.1 * _ring_peaks(crystal.image, s.info["period_px"], directions).max()


def test_no_grain_where_there_is_no_lattice():
    cfg = Atoms2DConfig(size=(160, 160), film={"grain_size": 25.0, "vacuum_fraction": 0.3, "amorphous_fraction": 0.3},
                        haadf={"jitter": 0.0, "drift": 0.0})
    rng = np.random.default_rng(5)
    film = build_film(cfg, rng)
    assert {CRYSTAL, VACUUM, AMORPHOUS} <= set(film.kinds.tolist())
    s = synth_atoms2d(cfg, seed=5)  # the same rng stream: the same film
    kinds = film.kinds[s.cells]
    assert np.all(s.grains[kinds != CRYSTAL] == 0) and np.all(s.grains[kinds == CRYSTAL] > 0)
    assert np.all(np.isnan(s.orientation[s.grains == 0])) and np.all(np.isfinite(s.orientation[s.grains > 0]))
    # HAADF: vacuum is darkest, amorphous carbon faint, gold bright (Z-contrast).
    mean = {kd: float(s.image[kinds == kd].mean()) for kd in (VACUUM, AMORPHOUS, CRYSTAL)}
    assert mean[VACUUM] < mean[AMORPHOUS] < mean[CRYSTAL]
    # Boundaries separate every pair of different grain ids.
    assert s.boundary[:, :-1][s.grains[:, :-1] != s.grains[:, 1:]].all()


def test_low_angle_neighbours_are_separate_grains_and_deterministic():
    cfg = Atoms2DConfig(size=(128, 128), film={"grain_size": 20.0, "low_angle_fraction": 1.0})
    a, b = synth_atoms2d(cfg, seed=2), synth_atoms2d(cfg, seed=2)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.grains, b.grains)
    assert not np.array_equal(a.image, synth_atoms2d(cfg, seed=3).image)
    # Touching grains differ by more than the grain rule's 5°.
    g, o = a.grains, a.orientation
    for ax in (0, 1):
        x, y = np.moveaxis(g, ax, 0), np.moveaxis(o, ax, 0)
        diff = (x[:-1] != x[1:]) & (x[:-1] > 0) & (x[1:] > 0)
        assert np.all(misorientation_2d(y[:-1][diff], y[1:][diff], 4) > 5.0)


def test_config_errors_are_one_line():
    with pytest.raises(ValueError, match="give lattice_constant"):
        Atoms2DConfig(lattice="bcc", element="Au")
    with pytest.raises(ValueError, match="same for every sample"):
        Atoms2DConfig(variants=[{"mode": "hrtem"}])
    with pytest.raises(ValueError, match="at least 20 % of the cells grains"):
        Atoms2DConfig(film={"vacuum_fraction": 0.5, "amorphous_fraction": 0.4})
    with pytest.raises(ValueError, match="must not exceed 1"):
        Atoms2DConfig(film={"vacuum_fraction": 0.3, "fringe_fraction": 0.8})
    with pytest.raises(ValueError, match="variants\\[0\\]: projects to a square lattice"):
        Atoms2DConfig(film={"fringe_fraction": 0.8, "vacuum_fraction": 0.2}, variants=[{"film": {"vacuum_fraction": 0.1}}])
    cfg = load_atoms2d_config("synth-atoms2d-heldout")
    assert {cfg.variant(i).element for i in range(len(cfg.variants))} >= {"Au", "Fe", "Si"}
    with pytest.raises(ValueError, match="made of Mo, not Au"):
        Atoms2DConfig(lattice="mos2", element="Au")
    with pytest.raises(ValueError, match="one flat layer"):
        Atoms2DConfig(lattice="graphene", element="C", film={"fringe_fraction": 0.2})
    with pytest.raises(ValueError, match="variants\\[0\\]: projects to a hexagonal lattice"):
        Atoms2DConfig(zone="001", variants=[{"lattice": "mos2", "element": "Mo"}])
    assert Atoms2DConfig(lattice="mos2", element="Mo").dataset_lattice == "hexagonal"
    from micro_sym.synth.atoms3d import Atoms3DConfig

    with pytest.raises(ValueError, match="2D crystal"):
        Atoms3DConfig(lattice="graphene", element="C")


def test_mos2_layer_has_its_atoms_and_z_contrast():
    """A 2H-MoS2 grain: one Mo per two S at their 3D positions, the S pairs on one sublattice (so the
    HAADF image is a honeycomb whose Mo sites are the brightest), nothing closer than Mo-S."""
    from scipy.spatial import cKDTree

    from micro_sym.synth.atoms2d import build_film

    cfg = Atoms2DConfig(size=(64, 64), lattice="mos2", element="Mo", pixel_size_angstrom=0.2,
                        film={"grain_size": 400.0, "max_tilt": 0.0})
    film = build_film(cfg, np.random.default_rng(0))
    mo, sulfur = film.positions[film.numbers == 42], film.positions[film.numbers == 16]
    assert len(mo) > 50 and abs(len(sulfur) / len(mo) - 2) < 0.1
    assert np.ptp(sulfur[:, 2]) == pytest.approx(3.19, abs=0.01) and np.ptp(mo[:, 2]) < 1e-9
    d, _ = cKDTree(film.positions).query(film.positions, k=2)
    assert d[:, 1].min() > 2.3  # Mo-S 2.41 Å; the S pairs are 3.19 Å apart


def test_cli_makes_a_resumable_dataset(tmp_path):
    from micro_sym.cli import main
    from micro_sym.io.datasets import LabeledDataset

    def cli(*args):
        try:
            return main(["synth", "atoms2d", "--out", str(tmp_path / "ds"), "--size", "64", *args])
        except SystemExit as exc:
            return exc.code

    assert cli("--n", "1", "--seed", "4", "--zone", "111", "--pixel-size", "0.2") == 0
    assert cli("--n", "2", "--seed", "4", "--zone", "111", "--pixel-size", "0.2", "--resume") == 0
    assert cli("--n", "1", "--element", "Xx") == 2
    ds = LabeledDataset(tmp_path / "ds")
    assert len(ds) == 2 and ds.lattice == "hexagonal" and ds.pixel_size == (0.02, 0.02)
    sample = ds["sample_001"]
    assert np.nanmax(sample.orientation) < 60
    meta = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    assert meta["generator"]["name"] == "micro_sym.synth.synth_atoms2d"
    again = synth_atoms2d(Atoms2DConfig.model_validate(meta["generator"]["config"]), seed=meta["samples"]["sample_001"]["seed"])
    assert np.array_equal(again.grains, sample.grains) and np.array_equal(again.image, sample.image)


def test_particles_thin_towards_their_edge():
    from micro_sym.synth.atoms2d import _dome

    yy, xx = np.mgrid[:101, :101]
    disk = np.hypot(yy - 50, xx - 50) <= 40  # a 40-step particle on a grid of 0.5 Å steps
    xy = np.array([[25.0, 25.0], [25.0, 35.0], [25.0, 40.0], [25.0, 44.0], [25.0, 45.0]])  # centre to rim, Å
    h = _dome(disk, 0.5, np.zeros(2), xy)
    assert h[0] == h[1] == 1.0  # the inner half is full height
    assert 0 < h[4] < h[3] < h[2] < 1  # then it thins towards the edge
    assert h[3] == pytest.approx(np.sqrt((40 - 38) / 20), abs=0.05)  # as the root of the depth


def test_probe_tails_lower_the_lattice_contrast():
    base = dict(size=(128, 128), pixel_size_angstrom=0.2, film={"grain_size": 400.0, "max_tilt": 0.0},
                haadf={"dose": (2000.0, 2000.0), "jitter": 0.0, "drift": 0.0})
    plain = synth_atoms2d(Atoms2DConfig(**base), seed=0)
    tailed = synth_atoms2d(Atoms2DConfig(**{**base, "haadf": {**base["haadf"], "probe_tail": (0.8, 0.8)}}), seed=0)
    # 80 % of the probe in a wide tail: the lattice's Fourier amplitude falls to a fifth, its power to 4 %.
    directions = np.arange(0, 180, 1.0)
    ratio = (_ring_peaks(tailed.image / tailed.image.mean(), plain.info["period_px"], directions).max()
             / _ring_peaks(plain.image / plain.image.mean(), plain.info["period_px"], directions).max())
    assert 0.025 < ratio < 0.06
    assert tailed.info["probe_tail"] == 0.8 and plain.info["probe_tail"] == 0.0

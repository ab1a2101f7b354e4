"""Lattice family and period from the power spectrum (micro_sym.classical.lattice_measure)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _shared import shared_path

from micro_sym.classical import LatticeMeasurement, estimate_period, fringe_snr, measure_lattice
from micro_sym.classical.lattice_measure import _decide
from micro_sym.errors import MicroSymError
from micro_sym.synth import Synth2DConfig, micrograph_from_grains, render_lattice_2d, synth_2d
from micro_sym.synth.lattice2d import lattice_basis

K = {"square": 4, "hexagonal": 6, "fringes": 2}


def _check(m: LatticeMeasurement, lattice: str, period: float, tol: float = 0.03):
    assert (m.lattice, m.k) == (lattice, K[lattice]), m.as_dict()
    assert abs(m.period / period - 1) < tol, m.as_dict()


def _fringes(period, angle_deg, shape=(512, 512)):
    """One set of lattice planes: a cosine of wavelength ``period`` px whose wave vector is at ``angle_deg``."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    t = np.deg2rad(angle_deg)
    return np.cos(2 * np.pi * (xx * np.cos(t) + yy * np.sin(t)) / period)


def _fringe_patches(period, seed, size=768, n=3, dose=None):
    """A polycrystal of fringes: ``n x n`` square patches, each with its own fringe direction and phase."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    img = np.zeros((size, size))
    q = size // n
    for i in range(n):
        for j in range(n):
            t, phase = rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi)
            sl = (slice(i * q, (i + 1) * q), slice(j * q, (j + 1) * q))
            img[sl] = np.cos(2 * np.pi * (xx[sl] * np.cos(t) + yy[sl] * np.sin(t)) / period + phase)
    if dose is not None:
        img = rng.poisson(dose * (1 + 0.5 * img)).astype(np.float64)
    return img


def _honeycomb(a, angle, weight_b=1.0, dose=5.0, size=384, seed=0):
    """Two interpenetrating triangular sublattices (graphene, or MoS2-like with ``weight_b != 1``).

    The Bravais lattice is triangular with constant ``a``; sublattice B sits at ``(a1 + a2) / 3``.
    """
    ids = np.ones((size, size), np.int32)
    basis = lattice_basis([angle], "hexagonal", a)[0]
    origin = np.array([3.0, -5.0])
    shift = (basis[:, 0] + basis[:, 1]) / 3
    sub = [render_lattice_2d(ids, {0: 0.0, 1: angle}, lattice="hexagonal", period=a, translations=[o, o],
                             disorder_width=0, rng=0) for o in (origin, origin + shift)]
    clean = sub[0] + weight_b * sub[1]
    return np.random.default_rng(seed).poisson(dose * (0.3 + clean)).astype(np.float64)


def _single_crystal(lattice, period, angle, size=256):
    """One grain imaged with the default PSF and shot noise (200 counts/px)."""
    ids = np.ones((size, size), np.int32)
    return micrograph_from_grains(ids, {0: 0.0, 1: angle}, lattice=lattice, period=period, seed=1)


# ------------------------------------------------------------------------------------ families


@pytest.mark.parametrize("period", [4, 8, 16, 30])
@pytest.mark.parametrize("lattice", ["square", "hexagonal"])
def test_synthetic_polycrystal(lattice, period):
    size = 512 if period <= 8 else 768
    cfg = Synth2DConfig(size=(size, size), lattice=lattice, period=period,
                        microstructure={"grain_size": max(80.0, 12.0 * period)})
    m = measure_lattice(synth_2d(cfg, seed=1).image)
    _check(m, lattice, period)
    # The k-fold evidence dominates; the other orders stay near zero.
    other = {"square": ("2", "6"), "hexagonal": ("2", "4")}[lattice]
    assert m.scores[str(K[lattice])] > 0.5
    assert max(m.scores[o] for o in other) < 0.2


@pytest.mark.parametrize("lattice", ["square", "hexagonal"])
def test_low_dose_polycrystal(lattice):
    cfg = Synth2DConfig(size=(512, 512), lattice=lattice, period=8.0, imaging={"dose": 5.0, "contrast": "bright_field"})
    m = measure_lattice(synth_2d(cfg, seed=2).image)
    _check(m, lattice, 8.0)
    assert m.snr_db < 10  # really a noisy image


@pytest.mark.parametrize("period", [4, 8, 16, 30])
def test_fringes(period):
    _check(measure_lattice(_fringes(period, 17.0)), "fringes", period)
    patches = measure_lattice(_fringe_patches(period, seed=period))
    _check(patches, "fringes", period)


def test_low_dose_fringes():
    m = measure_lattice(_fringe_patches(8, seed=3, dose=5.0))
    _check(m, "fringes", 8)


@pytest.mark.parametrize("angle", [0.0, 17.0, 33.0])
def test_rotation_does_not_matter(angle):
    for lattice in ("square", "hexagonal"):
        _check(measure_lattice(_single_crystal(lattice, 8.0, angle)), lattice, 8.0)
    _check(measure_lattice(_fringes(8.0, angle, shape=(256, 256))), "fringes", 8.0)


@pytest.mark.parametrize(("a", "weight_b"), [(8.0, 1.0), (8.0, 0.5), (23.0, 1.0), (23.0, 0.5)])
def test_honeycomb_is_hexagonal(a, weight_b):
    # Period = the Bravais lattice constant, as for a triangular lattice (the first ring is the same).
    _check(measure_lattice(_honeycomb(a, 17.0, weight_b)), "hexagonal", a)


# -------------------------------------------------------------------------- conventions and API


@pytest.mark.parametrize("lattice", ["square", "hexagonal"])
def test_period_and_snr_as_the_filter_bank(lattice):
    img = synth_2d(Synth2DConfig(size=(384, 384), lattice=lattice, period=9.0), seed=4).image
    m = measure_lattice(img)
    assert m.lattice == lattice
    assert m.period == estimate_period(img, lattice)
    snr, period = fringe_snr(img, lattice)
    assert m.snr_db == pytest.approx(snr) and m.period == period
    f = 1 / m.period if lattice == "square" else 2 / (np.sqrt(3) * m.period)
    assert m.ring_frequency == pytest.approx(f)


def test_as_dict_is_plain_json():
    m = measure_lattice(_fringes(10.0, 40.0, shape=(256, 256)))
    d = json.loads(json.dumps(m.as_dict()))
    assert d["lattice"] == "fringes" and d["k"] == 2
    assert d["period"] == pytest.approx(1 / d["ring_frequency"])
    assert {"2", "4", "6", "noise", "ring_z"} <= set(d["scores"])
    assert all(isinstance(v, float) for v in d["scores"].values())


class _CountingArray:
    """A lazy 2D array that counts its reads."""

    def __init__(self, array):
        self.array, self.shape, self.dtype, self.reads = array, array.shape, array.dtype, 0

    def __getitem__(self, key):
        self.reads += 1
        return self.array[key]


def test_lazy_input_reads_each_welch_tile_once():
    da = pytest.importorskip("dask.array")
    img = synth_2d(Synth2DConfig(size=(1024, 1536), lattice="hexagonal", period=6.0), seed=5).image
    ref = measure_lattice(img)
    assert measure_lattice(da.from_array(img, chunks=256)) == ref
    lazy = _CountingArray(img)
    assert measure_lattice(lazy) == ref
    assert lazy.reads <= 16


def test_nan_pixels_tolerated():
    img = _single_crystal("square", 6.0, 12.0).astype(np.float32)
    img[10:20, 30:40] = np.nan
    _check(measure_lattice(img), "square", 6.0)


def test_decision_rule():
    # Fringes carry every even harmonic; a k-fold lattice has none of the orders it lacks.
    sig = {"noise": 0.02, "significant": True}
    assert _decide({"2": 0.9, "4": 0.9, "6": 0.85, **sig}, {}) == "fringes"
    assert _decide({"2": 0.05, "4": 0.8, "6": 0.05, **sig}, {}) == "square"
    assert _decide({"2": 0.05, "4": 0.05, "6": 0.8, **sig}, {}) == "hexagonal"
    # No angular structure: the second ring of the radial spectrum decides.
    flat = {"2": 0.0, "4": 0.0, "6": 0.0, "noise": 0.1, "significant": False}
    assert _decide(flat, {"ring_sqrt2": 1.5, "ring_sqrt3": 0.1}) == "square"
    assert _decide(flat, {"ring_sqrt2": 0.1, "ring_sqrt3": 1.5}) == "hexagonal"
    assert _decide(flat, {"ring_sqrt2": 0.1, "ring_sqrt3": 0.1}) == "fringes"


# ------------------------------------------------------------------------------------- no lattice


@pytest.mark.parametrize("seed", range(4))
def test_noise_raises(seed):
    rng = np.random.default_rng(seed)
    with pytest.raises(MicroSymError, match="no lattice"):
        measure_lattice(rng.normal(size=(512, 512)))
    with pytest.raises(MicroSymError, match="no lattice"):
        measure_lattice(rng.poisson(5.0, size=(300, 700)))


def test_lattice_away_from_the_corner_is_found_when_the_subtile_side_does_not_divide_the_tile():
    # A 16.5-px lattice makes the angular sub-tiles 264 px wide: the detection saw one of them, the
    # top-left quarter of a 512² image, and refused an image whose lattice lies elsewhere (an HRTEM
    # film with vacuum in that corner). The sub-tiles now cover the whole tile.
    yy, xx = np.mgrid[0:512, 0:512]
    lattice = _fringes(16.5, 20.0) + _fringes(16.5, 110.0)  # a square lattice with its first ring only
    crystal = (yy > 280) | (xx > 280)
    img = np.random.default_rng(3).poisson(20.0 * (1 + 0.4 * np.where(crystal, lattice, 0.0))).astype(np.float64)
    _check(measure_lattice(img), "square", 16.5)


def test_constant_and_bad_arguments_raise():
    with pytest.raises(MicroSymError, match="constant"):
        measure_lattice(np.full((128, 128), 7.0))
    img = _fringes(8.0, 0.0, shape=(128, 128))
    with pytest.raises(MicroSymError, match="min_period"):
        measure_lattice(img, min_period=0)
    with pytest.raises(MicroSymError, match="max_period"):
        measure_lattice(img, min_period=5, max_period=4)
    with pytest.raises(MicroSymError, match="no lattice"):
        measure_lattice(img, max_period=6)
    with pytest.raises(MicroSymError, match="2D"):
        measure_lattice(np.zeros((4, 32, 32)))


# ---------------------------------------------------------------------------------- real images


def _open(name):
    from micro_sym.io.microscope import open_microscope

    return open_microscope(shared_path("real_micrographs", name))


def test_real_mos2_is_hexagonal_23px():
    img = _open("example_Se_implanted_MoS2.dm3")
    m = measure_lattice(img.data)  # lazy dask array
    _check(m, "hexagonal", 23.0)
    assert m.scores["6"] > 0.8
    assert max(m.scores["2"], m.scores["4"]) < 0.2


def test_real_au_fringes_match_au_d_spacings():
    img = _open("example_Au_nanoparticle.emd")
    assert img.unit == "nm"
    m = measure_lattice(img.data)
    # Whatever the family, the first ring is a set of Au lattice planes: {111} 0.2355 nm or {200} 0.2039 nm.
    d = img.pixel_size[-1] / m.ring_frequency
    assert min(abs(d / 0.2355 - 1), abs(d / 0.2039 - 1)) < 0.05, (d, m.as_dict())

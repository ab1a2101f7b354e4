"""The local ring contrast: 1 for white noise, far above 1 on a lattice, below 1 on a falling (lattice-free)
spectrum; inside crystals only, it stops at a crystal's edge; tiles reproduce the whole image inside the halo."""

from __future__ import annotations

import numpy as np
from _helpers import half_lattice
import pytest
from micro_sym.classical.crystallinity import (CRYSTALLINE_CONTRAST, crystalline_contrast, crystalline_halo, ring_contrast,
                                               ring_contrast_halo)

PERIOD = 10.0  # half_lattice's


def test_white_noise_gives_one():
    noise = np.random.default_rng(1).standard_normal((256, 256)).astype(np.float32)
    r = ring_contrast(noise, 1 / PERIOD)
    assert 0.8 < np.median(r) < 1.25
    assert np.percentile(r, 99) < 2.0  # two periods of smoothing keep the excursions small


def test_lattice_and_lattice_free_halves_are_told_apart():
    img = half_lattice()
    r = ring_contrast(img, 1 / PERIOD)
    left, right = r[:, 40:150], r[:, 234:-40]
    assert np.mean(left >= CRYSTALLINE_CONTRAST) > 0.98, np.percentile(left, [5, 50])
    assert np.mean(right >= CRYSTALLINE_CONTRAST) < 0.02, np.percentile(right, [50, 95])
    # Contrast and offset do not matter (a ratio of band powers).
    np.testing.assert_allclose(ring_contrast(3.0 * img + 100.0, 1 / PERIOD), r, rtol=1e-3)


def test_inside_crystals_the_contrast_stops_at_the_crystal_s_edge():
    """A lattice (left of column 192) next to white noise, as vacuum in HAADF: the smoothed ring power
    carries the lattice's contrast 2-4 periods into the noise; cut at half its nearby maximum it stops
    within a period of the edge, and the crystal keeps its contrast."""
    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[0:256, 0:384]
    t = np.deg2rad(23.0)
    u, v = xx * np.cos(t) + yy * np.sin(t), -xx * np.sin(t) + yy * np.cos(t)
    lattice = (np.cos(2 * np.pi * u / PERIOD) + np.cos(2 * np.pi * v / PERIOD)) * (xx < 192)
    img = (lattice + 0.7 * rng.standard_normal(xx.shape)).astype(np.float32)
    beyond = (slice(None), slice(212, 232))  # 2-4 periods out
    assert np.mean(ring_contrast(img, 1 / PERIOD)[beyond] >= CRYSTALLINE_CONTRAST) > 0.9
    inside = crystalline_contrast(img, 1 / PERIOD) >= CRYSTALLINE_CONTRAST
    assert np.mean(inside[beyond]) < 0.05
    assert np.mean(inside[:, 40:172]) > 0.99


@pytest.mark.parametrize("contrast, reach", [(ring_contrast, ring_contrast_halo), (crystalline_contrast, crystalline_halo)])
def test_a_tile_reproduces_the_whole_image_inside_the_halo(contrast, reach):
    img = half_lattice((300, 400), seed=2)
    whole = contrast(img, 1 / PERIOD)
    halo = reach(1 / PERIOD)
    core = (slice(120, 180), slice(150, 230))
    tile = (slice(core[0].start - halo, core[0].stop + halo), slice(core[1].start - halo, core[1].stop + halo))
    tile = tuple(slice(max(s.start, 0), s.stop) for s in tile)
    part = contrast(img[tile], 1 / PERIOD)
    inner = tuple(slice(c.start - t.start, c.stop - t.start) for c, t in zip(core, tile))
    np.testing.assert_allclose(part[inner], whole[core], rtol=1e-4)


def test_a_tile_told_its_context_reproduces_the_whole_image_inside_it():
    # The engine's tiles: real image beyond the kept region on every side but one (the image's edge),
    # transformed without reflected padding there.
    img = half_lattice((420, 640), seed=5)
    whole = crystalline_contrast(img, 1 / PERIOD)
    halo = crystalline_halo(1 / PERIOD)
    tile = (slice(0, 420), slice(100, 640))  # the kept region: rows 0-246, columns 274-466
    context = [(0, 420 - 246), (halo, 640 - 466)]
    part = crystalline_contrast(img[tile], 1 / PERIOD, context=context)
    kept = (slice(0, 246), slice(274, 466))
    np.testing.assert_allclose(part[0:246, 174:366], whole[kept], rtol=1e-4, atol=1e-6)
    assert np.mean(whole[kept] >= CRYSTALLINE_CONTRAST) > 0.3  # both sides of the lattice edge kept


def test_sampling_the_bands_sparsely_changes_nothing(monkeypatch):
    import micro_sym.classical.crystallinity as crystallinity

    img = half_lattice((300, 400), seed=3)
    for period in (8.0, 28.0):  # sampled every 2 and every 8 pixels
        assert crystallinity.decimation(1 / period) > 1
        sparse = ring_contrast(img, 1 / period)
        with monkeypatch.context() as m:
            m.setattr(crystallinity, "decimation", lambda f: 1)
            dense = ring_contrast(img, 1 / period)
        np.testing.assert_allclose(sparse, dense, rtol=1e-4, atol=1e-6 * float(dense.max()))

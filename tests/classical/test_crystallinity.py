"""The local ring contrast: 1 for white noise, far above 1 on a lattice, below 1 on a falling (lattice-free)
spectrum; tiles reproduce the whole image inside the halo."""

from __future__ import annotations

import numpy as np
from _helpers import half_lattice
from micro_sym.classical.crystallinity import CRYSTALLINE_CONTRAST, ring_contrast, ring_contrast_halo

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


def test_a_tile_reproduces_the_whole_image_inside_the_halo():
    img = half_lattice((300, 400), seed=2)
    whole = ring_contrast(img, 1 / PERIOD)
    halo = ring_contrast_halo(1 / PERIOD)
    core = (slice(120, 180), slice(150, 230))
    tile = (slice(core[0].start - halo, core[0].stop + halo), slice(core[1].start - halo, core[1].stop + halo))
    tile = tuple(slice(max(s.start, 0), s.stop) for s in tile)
    part = ring_contrast(img[tile], 1 / PERIOD)
    inner = tuple(slice(c.start - t.start, c.stop - t.start) for c, t in zip(core, tile))
    np.testing.assert_allclose(part[inner], whole[core], rtol=1e-4)


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

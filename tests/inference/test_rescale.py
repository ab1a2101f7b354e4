"""Networks run at their training lattice period (micro_sym.inference.rescale): tiles reproduce the
whole image, D4 equivariance survives the resampling, and one microstructure imaged at three
samplings gives the same grains and angles."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from scipy import ndimage

from _helpers import read_output
from micro_sym.inference.blocks import plan_blocks
from micro_sym.inference.network import load_network
from micro_sym.inference.rescale import RescaledNetwork, resample_weights
from micro_sym.inference.tiles import iter_tiles, predict_raw
from micro_sym.metrics import grain_f1
from micro_sym.models.normalize import intensity_range


@pytest.fixture(scope="module")
def net():
    return load_network("default-2d")


def _fringes(shape, period=16.0, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    a = np.deg2rad(20.0)
    u, v = xx * np.cos(a) + yy * np.sin(a), -xx * np.sin(a) + yy * np.cos(a)
    img = np.cos(2 * np.pi * u / period) + np.cos(2 * np.pi * v / period) + 0.3 * rng.standard_normal(shape)
    return img.astype(np.float32)


def test_weights_interpolate_and_reflect_at_the_image_ends():
    # Integer positions reproduce the samples; a linear ramp is reproduced between them; taps beyond
    # the ends reflect about the end pixels' outer edges.
    signal = np.arange(10.0)
    w = resample_weights(np.arange(10.0), 10, 0, 10, 1.0)
    np.testing.assert_allclose(w @ signal, signal, atol=1e-12)
    np.testing.assert_allclose(resample_weights([2.25, 6.5], 10, 0, 10, 1.0) @ signal, [2.25, 6.5], atol=1e-12)
    np.testing.assert_allclose(resample_weights([-1.0, 10.0], 10, 0, 10, 1.0) @ signal, [0.0, 9.0], atol=1e-12)
    # Down-sampling by 3 widens the kernel: a period-2 pattern (above the new Nyquist) is removed.
    alt = np.tile([1.0, -1.0], 30)
    assert np.abs(resample_weights(np.arange(3.0, 57.0, 3.0), 60, 0, 60, 3.0) @ alt).max() < 0.05


@pytest.mark.parametrize("scale", [0.37, 1.6])
def test_tiles_reproduce_the_whole_image(net, scale):
    img = _fringes((1000, 900))
    rn = RescaledNetwork(net, scale, img.shape)
    whole = predict_raw(rn, img)
    value_range = intensity_range(img)

    def tiled(halo):
        plan = plan_blocks(img.shape, 128, halo=halo, stride=1, chunk=(64, 64))
        assert len(plan.blocks) > 4 and max(plan.max_tile_shape) < max(img.shape)
        out = np.zeros_like(whole)
        for t in iter_tiles(rn, plan.blocks, lambda b: img[b.tile], value_range=value_range,
                            pad_mode=plan.pad_mode, decode=False):
            out[(slice(None), *t.block.core)] = t.core_outputs
        return np.abs(out - whole).max()

    assert tiled(rn.halo) < 1e-4 * np.abs(whole).max()
    assert tiled(rn.halo // 3) > 1e-2 * np.abs(whole).max()  # the halo matters: a short one is detectably wrong


@pytest.mark.parametrize("scale", [0.5, 1.37])
def test_rescaled_network_is_d4_equivariant(net, scale):
    # Square image: the global resampling grid (an even number of samples, padded equally at both
    # ends) maps onto itself under every element of D4. Outputs are
    # (boundary logit, cos 4θ, sin 4θ): rotations by 90° leave 4θ unchanged, mirrors negate sin 4θ.
    img = _fringes((160, 160), period=11.0, seed=1)
    rn = RescaledNetwork(net, scale, img.shape)
    y = predict_raw(rn, img)
    tol = 1e-4 * np.abs(y).max()
    for r in range(4):
        for mirror in (False, True):
            g = (lambda a: np.rot90(a[..., ::-1] if mirror else a, r, axes=(-2, -1)))
            y_g = predict_raw(rn, np.ascontiguousarray(g(img)))
            expected = g(y).copy()
            if mirror:
                expected[2] *= -1
            assert np.abs(y_g - expected).max() < tol, (r, mirror)


def test_same_microstructure_at_three_samplings(tmp_path):
    # One rendered micrograph (period 12 px, ~120 px grains), resampled to 2x (period 24 px) and
    # 0.5x (period 6 px): the measured lattice brings each to the model's 8 px, and the grains and
    # angles agree once mapped back onto the 1x grid. Without resampling default-2d finds 140 grains
    # of 33 on the 1x image (docs/results.md).
    from micro_sym.inference.engine import segment
    from micro_sym.synth import Synth2DConfig, synth_2d

    sample = synth_2d(Synth2DConfig(size=(512, 512), period=12.0, microstructure={"grain_size": 120.0},
                                    imaging={"dose": 50.0}), seed=3)
    img = sample.image.astype(np.float32)
    images = {"x1": (img, 1.0),
              "x2": (ndimage.zoom(img, 2.0, order=3, grid_mode=True, mode="grid-mirror"), 2.0),
              "x05": (ndimage.zoom(ndimage.gaussian_filter(img, 0.85), 0.5, order=3, grid_mode=True,
                                   mode="grid-mirror"), 0.5)}
    for name, (a, _) in images.items():
        tifffile.imwrite(tmp_path / f"{name}.tif", a)
    results = segment([tmp_path / f"{n}.tif" for n in images], tmp_path / "out", model="default-2d")
    for r in results:
        assert r.status == "complete", r.error
        scale = r.plan["method"]["scale"]
        assert scale["source"] == "measured" and scale["resampled"]
        assert abs(scale["period"] - 12.0 * images[r.name][1]) < 0.05 * 12.0 * images[r.name][1]
    out = {n: read_output(tmp_path / "out", n) for n in images}
    ref = out["x1"]
    assert grain_f1(ref["grains"], sample.grains)["f1"] >= 0.85
    for name in ("x2", "x05"):
        f = images[name][1]
        idx = np.clip(np.round((np.arange(512) + 0.5) * f - 0.5).astype(int), 0, out[name]["grains"].shape[0] - 1)
        labels, angles = out[name]["grains"][np.ix_(idx, idx)], out[name]["orientation"][np.ix_(idx, idx)]
        assert grain_f1(labels, ref["grains"])["f1"] >= 0.9, name
        both = (labels > 0) & (ref["grains"] > 0)
        diff = np.abs((angles - ref["orientation"] + 45.0) % 90.0 - 45.0)[both]
        assert np.median(diff) < 1.0, (name, np.median(diff))

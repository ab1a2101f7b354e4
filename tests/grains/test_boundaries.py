"""One boundary mask (micro_sym.grains.boundaries.find_boundaries): each mode on hand-made label maps,
and each function it replaced gives the same output as before (old code inlined below)."""

from __future__ import annotations

import numpy as np
import pytest

from micro_sym.grains.boundaries import MODES, find_boundaries

# --------------------------------------------------------------------------------- modes, by hand

# Two rows: grain 1, a 3-px band of label 0, grain 2, and grain 3 in the bottom-right corner.
LAB_2D = np.array([[1, 1, 0, 0, 0, 2, 2],
                   [1, 1, 0, 0, 0, 2, 3]])
EXPECTED_2D = {
    "thick": [[0, 1, 1, 0, 1, 1, 1],
              [0, 1, 1, 0, 1, 1, 1]],
    "thick_zero": [[0, 1, 1, 1, 1, 1, 1],
                   [0, 1, 1, 1, 1, 1, 1]],
    "grains": [[0, 0, 1, 1, 1, 0, 1],
               [0, 0, 1, 1, 1, 1, 1]],
    "one_sided": [[0, 1, 1, 1, 1, 0, 1],
                  [0, 1, 1, 1, 1, 1, 0]],
}


def _lab_3d():
    """3x3x3: planes z = 0, 1 are label 0, plane z = 2 is grain 1 with grain 2 in the corner (2, 2, 2)."""
    lab = np.zeros((3, 3, 3), np.uint32)
    lab[2] = 1
    lab[2, 2, 2] = 2
    return lab


def _expected_3d(mode):
    out = np.zeros((3, 3, 3), bool)
    if mode == "thick":  # every point of z = 1 and z = 2 touches the 0/grain interface; z = 0 does not
        out[1:] = True
    elif mode == "thick_zero":
        out[:] = True
    elif mode == "grains":  # the 0 planes, and both sides of the grain 1 | grain 2 faces
        out[:2] = True
        out[2, 2, 2] = out[2, 1, 2] = out[2, 2, 1] = True
    elif mode == "one_sided":  # the 0 planes, and the grain-1 side (the lower index) of those faces
        out[:2] = True
        out[2, 1, 2] = out[2, 2, 1] = True
    return out


@pytest.mark.parametrize("mode", MODES)
def test_modes_2d_by_hand(mode):
    got = find_boundaries(LAB_2D, mode=mode)
    assert got.dtype == bool and got.shape == LAB_2D.shape
    np.testing.assert_array_equal(got.astype(int), EXPECTED_2D[mode])


@pytest.mark.parametrize("mode", MODES)
def test_modes_3d_by_hand(mode):
    np.testing.assert_array_equal(find_boundaries(_lab_3d(), mode=mode), _expected_3d(mode))


def test_default_mode_and_errors():
    np.testing.assert_array_equal(find_boundaries(LAB_2D), find_boundaries(LAB_2D, mode="thick"))
    np.testing.assert_array_equal(find_boundaries(LAB_2D.tolist(), "grains"), EXPECTED_2D["grains"])  # array_like
    with pytest.raises(ValueError, match="one_sided"):
        find_boundaries(LAB_2D, mode="inner")


def test_thick_is_scikit_image_thick():
    """``thick`` = skimage's find_boundaries(mode="thick", connectivity=1), label 0 or not."""
    skimage_segmentation = pytest.importorskip("skimage.segmentation")
    rng = np.random.default_rng(3)
    for shape in ((23, 31), (7, 9, 11)):
        lab = rng.integers(0, 4, shape)
        np.testing.assert_array_equal(find_boundaries(lab, "thick"),
                                      skimage_segmentation.find_boundaries(lab, connectivity=1, mode="thick"))


# ------------------------------------------------------------- the former functions, unchanged


def _old_metrics_boundary_from_labels(labels):  # micro_sym/metrics.py (2D)
    labels = np.asarray(labels)
    b = labels == 0
    dy = labels[1:, :] != labels[:-1, :]
    dx = labels[:, 1:] != labels[:, :-1]
    b[1:, :] |= dy
    b[:-1, :] |= dy
    b[:, 1:] |= dx
    b[:, :-1] |= dx
    return b


def _old_synth_boundary_mask(labels):  # micro_sym/synth/microstructure.py
    labels = np.asarray(labels)
    mask = np.zeros(labels.shape, dtype=bool)
    for ax in range(labels.ndim):
        a = np.moveaxis(labels, ax, 0)
        m = np.moveaxis(mask, ax, 0)
        diff = a[:-1] != a[1:]
        m[:-1] |= diff
        m[1:] |= diff
    return mask


def _old_train3d_boundary_from_grains(grains):  # micro_sym/training/train3d.py
    boundary = grains == 0
    for ax in range(grains.ndim):
        a = np.moveaxis(grains, ax, 0)
        b = np.moveaxis(boundary, ax, 0)
        diff = (a[1:] != a[:-1]) & (a[1:] > 0) & (a[:-1] > 0)
        b[1:] |= diff
        b[:-1] |= diff
    return boundary


def _old_plots_boundary_mask(labels):  # micro_sym/grains/plots.py::_boundary_mask
    b = labels == 0
    for ax in range(labels.ndim):
        a = np.moveaxis(labels, ax, 0)
        d = a[1:] != a[:-1]
        bm = np.moveaxis(b, ax, 0)
        bm[:-1] |= d
    return b


def _old_napari_boundary_mask(grains):  # plugins/micro_sym_napari/_core.py::boundary_mask
    lab = np.asarray(grains)
    mask = lab == 0
    for ax in range(lab.ndim):
        a = np.moveaxis(lab, ax, 0)
        m = np.moveaxis(mask, ax, 0)
        m[:-1] |= a[1:] != a[:-1]
    return mask.astype(np.uint8)


def _random_label_maps(ndim):
    """Noise labels (a change at most points) and blocky grains with label-0 specks, uint32 and int64."""
    rng = np.random.default_rng(ndim)
    shape = (29, 37) if ndim == 2 else (9, 11, 13)
    noise = rng.integers(0, 5, shape)
    blocks = rng.integers(1, 40, tuple(-(-s // 4) for s in shape))
    for ax in range(ndim):
        blocks = np.repeat(blocks, 4, axis=ax)
    blocky = blocks[tuple(slice(s) for s in shape)]
    blocky = np.where(rng.random(shape) < 0.05, 0, blocky)
    no_zero = noise + 1
    return [m.astype(dt) for m in (noise, blocky, no_zero) for dt in (np.uint32, np.int64)]


@pytest.mark.parametrize("ndim", [2, 3])
def test_former_functions_unchanged(ndim):
    from micro_sym.metrics import boundary_from_labels
    from micro_sym.training.train3d import boundary_from_grains
    from micro_sym_napari._core import boundary_mask

    for lab in _random_label_maps(ndim):
        if ndim == 2:
            old = _old_metrics_boundary_from_labels(lab)
            np.testing.assert_array_equal(find_boundaries(lab, "thick_zero"), old)
            np.testing.assert_array_equal(boundary_from_labels(lab), old)
        np.testing.assert_array_equal(find_boundaries(lab, "thick"), _old_synth_boundary_mask(lab))
        old = _old_train3d_boundary_from_grains(lab)
        np.testing.assert_array_equal(find_boundaries(lab, "grains"), old)
        np.testing.assert_array_equal(boundary_from_grains(lab), old)
        np.testing.assert_array_equal(find_boundaries(lab, "one_sided"), _old_plots_boundary_mask(lab))
        old = _old_napari_boundary_mask(lab)
        new = boundary_mask(lab)
        assert new.dtype == old.dtype == np.uint8
        np.testing.assert_array_equal(new, old)

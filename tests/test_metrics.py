"""Metrics: boundary F1 tolerance, grain matching, symmetry-aware orientation error, pooling."""

from __future__ import annotations

import numpy as np
import pytest

from micro_sym.metrics import aggregate, boundary_f1, boundary_f1_masks, boundary_from_labels, evaluate_sample, grain_f1, orientation_errors


from micro_sym.training.train3d import boundary_from_grains  # noqa: E402


def stripes(n=3, size=60, shift=0):
    """Vertical stripe grains 1..n; interfaces at multiples of size/n, moved right by ``shift``."""
    edges = np.linspace(0, size, n + 1)[1:-1] + shift
    cols = np.searchsorted(edges, np.arange(size), side="right") + 1
    return np.tile(cols.astype(np.uint32), (size, 1))


def test_boundary_f1_tolerance():
    gt = stripes()
    assert boundary_f1(boundary_from_labels(gt), gt)["f1"] == 1.0
    assert boundary_f1(boundary_from_labels(stripes(shift=2)), gt)["f1"] == 1.0  # within 2 px
    assert boundary_f1(boundary_from_labels(stripes(shift=5)), gt)["f1"] == 0.0
    assert boundary_f1(np.zeros_like(gt, bool), gt)["f1"] == 0.0
    # A thick predicted band counts like its centre line (skeletons on both sides).
    thick = np.zeros(gt.shape, bool)
    thick[:, 17:23] = thick[:, 37:43] = True
    assert boundary_f1(thick, gt)["f1"] == 1.0


def test_boundary_f1_tolerance_3d():
    """The same score for volumes: boundary sheets thinned across their thickness, 2-voxel tolerance."""
    gt = np.repeat(stripes()[None], 20, axis=0)  # sheets at x = 20 and 40 through the volume
    truth = boundary_from_grains(gt)
    assert boundary_f1_masks(truth, truth)["f1"] == 1.0
    assert boundary_f1_masks(boundary_from_grains(np.repeat(stripes(shift=2)[None], 20, axis=0)), truth)["f1"] == 1.0
    assert boundary_f1_masks(boundary_from_grains(np.repeat(stripes(shift=5)[None], 20, axis=0)), truth)["f1"] == 0.0
    thick = np.zeros(gt.shape, bool)
    thick[..., 17:23] = thick[..., 37:43] = True
    assert boundary_f1_masks(thick, truth)["f1"] == 1.0  # a thick sheet counts like its middle
    assert boundary_f1_masks(np.ones(gt.shape, bool), truth)["f1"] < 0.5  # "boundary everywhere" does not pay


def test_grain_f1_matching():
    gt = stripes(3)
    assert grain_f1(gt, gt)["f1"] == 1.0
    merged = gt.copy()
    merged[merged == 2] = 1  # two grains merged: IoU 0.5 with each, not > 0.5
    r = grain_f1(merged, gt)
    assert (r["tp"], r["n_pred"], r["n_gt"]) == (1, 2, 3)
    speck = gt.copy()
    speck[0, 0] = 7  # a 1-px true "grain" no segmenter with a minimum size can match
    assert grain_f1(gt, speck)["n_gt"] == 4 and grain_f1(gt, speck, min_gt_size=2)["f1"] == 1.0
    relabeled = np.where(gt > 0, 10 - gt, 0)
    assert grain_f1(relabeled, gt)["f1"] == 1.0


def test_orientation_error_symmetry_aware_and_interior_only():
    gt = stripes(2)
    ori = np.where(gt == 1, 1.0, 45.0).astype(np.float32)
    pred = np.where(gt == 1, 89.0, 44.0).astype(np.float32)  # 89 vs 1 is 2 degrees for k = 4
    err = orientation_errors(pred, ori, gt, 4)
    assert set(np.round(np.unique(err), 4)) == {1.0, 2.0}
    assert err.size < (gt > 0).sum()  # pixels near the boundary are excluded
    pred_bad = pred.copy()
    pred_bad[:, 29:31] = 70.0  # errors on the boundary band are not scored
    assert np.array_equal(orientation_errors(pred_bad, ori, gt, 4), err)


def test_evaluate_and_aggregate_pool_counts():
    gt = stripes(3)
    ori = np.full(gt.shape, 10.0, np.float32)
    perfect = {"boundary": boundary_from_labels(gt).astype(np.float32), "grains": gt, "orientation": ori}
    wrong = {"boundary": np.zeros(gt.shape, np.float32), "grains": np.ones_like(gt), "orientation": ori + 3}
    rep = aggregate({"a": evaluate_sample(perfect, gt, ori, 4), "b": evaluate_sample(wrong, gt, ori, 4)})
    assert rep["images"]["a"]["grain_f1"] == 1.0 and rep["images"]["b"]["boundary_f1"] == 0.0
    assert rep["overall"]["grain_f1"] == pytest.approx(2 * (3 / 4) * (3 / 6) / (3 / 4 + 3 / 6))
    # Pooled interior pixels: as many with error 0 (a) as with error 3 (b): the median is 1.5.
    assert rep["overall"]["orientation_median_deg"] == pytest.approx(1.5, abs=1e-6)
    assert rep["overall"]["n_images"] == 2

"""Vacuum and Σ3 twin-boundary scores of the 3D evaluation (micro_sym.metrics3d) on exact hand-made volumes."""

import math

import numpy as np
import pytest

from micro_sym.grains.stats import SIGMA3_BRANDON_DEG
from micro_sym.metrics3d import pool, sigma3_boundaries, vacuum_unassigned
from micro_sym.orientation import axis_angle_to_quat, quat_multiply

SHAPE = (6, 6, 8)
PLANE = 4  # grain 1 at x < 4, grain 2 at x >= 4: 6 x 6 = 36 faces across the plane
Q1 = axis_angle_to_quat([1.0, 2.0, 3.0], 17.0)  # a generic orientation, no special axis
SIGMA3 = axis_angle_to_quat([1.0, 1.0, 1.0], 60.0)


def _split(plane=PLANE):
    lab = np.ones(SHAPE, np.uint32)
    lab[..., plane:] = 2
    return lab


def _quats(labels, per_grain):
    """(4, z, y, x) map giving every voxel its grain's quaternion (``per_grain[id]``; id 0: NaN)."""
    table = np.vstack([np.full(4, np.nan), *per_grain])
    return np.moveaxis(table[labels], -1, 0)


def _twin_truth():
    lab = _split()
    return lab, _quats(lab, [Q1, quat_multiply(Q1, SIGMA3)])


def _scores(pred, pred_per_grain):
    truth, tq = _twin_truth()
    return sigma3_boundaries(pred, _quats(pred, pred_per_grain), truth, tq)


def test_prediction_equal_to_the_truth_finds_every_twin_face():
    truth, tq = _twin_truth()
    r = sigma3_boundaries(truth, tq, truth, tq)
    assert r["sigma3_faces_true"] == 36 and r["sigma3_faces_found"] == 36
    assert r["sigma3_recall"] == 1.0 and r["sigma3_precision"] == 1.0


def test_merged_twins_are_not_found():
    r = _scores(np.ones(SHAPE, np.uint32), [Q1])
    assert r["sigma3_faces_true"] == 36 and r["sigma3_recall"] == 0.0
    assert r["sigma3_faces_pred"] == 0 and math.isnan(r["sigma3_precision"])


def test_a_boundary_between_grains_45_deg_about_001_apart_is_not_a_twin():
    r = _scores(_split(), [Q1, quat_multiply(Q1, axis_angle_to_quat([0.0, 0.0, 1.0], 45.0))])
    assert r["sigma3_recall"] == 0.0 and r["sigma3_faces_pred"] == 0


@pytest.mark.parametrize("off_deg, twin", [(5.0, True), (12.0, False)])
def test_the_brandon_criterion_decides(off_deg, twin):
    # Σ3 followed by a further rotation: 5° is inside Brandon's 8.66°, 12° outside.
    assert off_deg < SIGMA3_BRANDON_DEG if twin else off_deg > SIGMA3_BRANDON_DEG
    off = axis_angle_to_quat([2.0, -1.0, 0.5], off_deg)
    r = _scores(_split(), [Q1, quat_multiply(quat_multiply(Q1, SIGMA3), off)])
    assert r["sigma3_recall"] == (1.0 if twin else 0.0)


def test_an_unassigned_band_at_the_twin_plane_is_bridged():
    # The prediction's 2-voxel boundary band (label 0) on both sides of the plane: each grain grows one
    # voxel into it, so the grains meet on the true plane.
    pred = _split()
    pred[..., PLANE - 1 : PLANE + 1] = 0
    r = _scores(pred, [Q1, quat_multiply(Q1, SIGMA3)])
    assert r["sigma3_recall"] == 1.0 and r["sigma3_precision"] == 1.0 and r["sigma3_faces_pred"] == 36


def test_a_band_three_voxels_wide_is_not_bridged():
    pred = _split()
    pred[..., PLANE - 1 : PLANE + 2] = 0
    r = _scores(pred, [Q1, quat_multiply(Q1, SIGMA3)])
    assert r["sigma3_recall"] == 0.0 and r["sigma3_faces_pred"] == 0


@pytest.mark.parametrize("shift, expected", [(1, 1.0), (2, 0.0), (-1, 1.0), (-2, 0.0)])
def test_a_shifted_twin_plane_counts_within_one_voxel(shift, expected):
    r = _scores(_split(PLANE + shift), [Q1, quat_multiply(Q1, SIGMA3)])
    assert r["sigma3_recall"] == expected and r["sigma3_precision"] == expected


def test_precision_counts_predicted_twin_faces_off_every_true_one():
    # A third predicted grain, twin-related to grain 1, far from the true twin plane: its 6 x 6 faces
    # with grain 1 are predicted Σ3 faces that match nothing.
    pred = _split()
    pred[..., 0] = 3
    r = _scores(pred, [Q1, quat_multiply(Q1, SIGMA3), quat_multiply(Q1, SIGMA3)])
    assert r["sigma3_recall"] == 1.0
    assert (r["sigma3_faces_pred"], r["sigma3_faces_pred_correct"]) == (72, 36) and r["sigma3_precision"] == 0.5


def test_no_twins_in_the_truth_gives_nan_recall():
    lab = _split()
    q = _quats(lab, [Q1, quat_multiply(Q1, axis_angle_to_quat([0.0, 0.0, 1.0], 45.0))])
    r = sigma3_boundaries(lab, q, lab, q)
    assert r["sigma3_faces_true"] == 0 and math.isnan(r["sigma3_recall"])


def test_vacuum_left_unassigned_on_half_a_vacuum_volume():
    # Vacuum at x < 4 (half the volume); the prediction gives x = 2, 3 (a quarter of it) to the grain.
    truth = np.zeros(SHAPE, np.uint32)
    truth[..., 4:] = 1
    pred = np.zeros(SHAPE, np.uint32)
    pred[..., 2:] = 1
    r = vacuum_unassigned(pred, truth, margin=0)
    assert (r["n_vacuum"], r["n_vacuum_unassigned"], r["vacuum_unassigned"]) == (144, 72, 0.5)
    # The default margin counts only id-0 voxels more than 3 face steps from the grain: x = 0.
    r = vacuum_unassigned(pred, truth)
    assert (r["n_vacuum"], r["vacuum_unassigned"]) == (36, 1.0)


def test_a_boundary_band_of_zeros_is_not_vacuum():
    # Datasets that draw boundaries with 0: a 2-voxel band between two grains, no vacuum.
    truth = _split()
    truth[..., PLANE - 1 : PLANE + 1] = 0
    assert math.isnan(vacuum_unassigned(truth, truth)["vacuum_unassigned"])
    assert math.isnan(vacuum_unassigned(np.ones(SHAPE), np.ones(SHAPE))["vacuum_unassigned"])


def test_pool_sums_counts_over_volumes():
    rows = [{"n_vacuum": 300, "n_vacuum_unassigned": 150, "sigma3_faces_true": 10, "sigma3_faces_found": 10,
             "sigma3_faces_pred": 0, "sigma3_faces_pred_correct": 0},
            {"n_vacuum": 100, "n_vacuum_unassigned": 100}]  # no true orientations: no Σ3 counts
    p = pool(rows)
    assert p["vacuum_unassigned"] == 0.625 and p["sigma3_recall"] == 1.0 and math.isnan(p["sigma3_precision"])
    assert p["sigma3_faces_true"] == 10


def test_evaluate3d_reports_vacuum_and_twins_per_volume_and_overall():
    import torch

    from micro_sym.models.gcnn3d import build_model3d
    from micro_sym.training.train3d import evaluate3d_volumes, make_volumes, pool3d

    torch.manual_seed(0)
    model = build_model3d({"variant": "plain", "width": 8, "levels": 2, "degrees": [4]}).eval()
    vols = make_volumes(2, (16, 16, 16), seed=3, grain_size=8.0)
    rows = evaluate3d_volumes(model, vols)
    keys = {"vacuum_unassigned", "sigma3_recall", "sigma3_precision", "sigma3_faces_true", "n_vacuum"}
    assert len(rows) == 2 and all(keys <= set(r) for r in rows)
    overall = pool3d(rows)
    assert keys <= set(overall) and overall["n_volumes"] == 2
    assert overall["sigma3_faces_true"] == sum(r["sigma3_faces_true"] for r in rows)
    assert overall["boundary_f1"] == pytest.approx(np.mean([r["boundary_f1"] for r in rows]))


def test_sigma3_voxels_are_both_sides_of_a_twin_face_only():
    from micro_sym.metrics3d import sigma3_voxels

    truth, tq = _twin_truth()
    on = sigma3_voxels(truth, tq)
    assert on[..., PLANE - 1:PLANE + 1].all() and on.sum() == 2 * 36
    assert sigma3_voxels(truth, tq, reach=1).sum() == 4 * 36
    other = _quats(truth, [Q1, quat_multiply(Q1, axis_angle_to_quat([0.0, 0.0, 1.0], 45.0))])
    assert not sigma3_voxels(truth, other).any()

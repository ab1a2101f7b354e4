"""Segmentation metrics: boundary F1 (2-px tolerance), grain F1 (IoU > 0.5), orientation error.

All functions take arrays and return plain numbers/dicts. Per-image results carry raw counts so that
:func:`aggregate` can pool them over a dataset (pooled counts, not a mean of per-image F1s).

>>> gt = np.zeros((32, 32), np.uint32); gt[:, :16] = 1; gt[:, 16:] = 2
>>> round(grain_f1(gt, gt)["f1"], 3), round(boundary_f1(boundary_from_labels(gt), gt)["f1"], 3)
(1.0, 1.0)
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from micro_sym.grains.boundaries import find_boundaries
from micro_sym.orientation import misorientation_2d

BOUNDARY_TOLERANCE = 2.0
IOU_THRESHOLD = 0.5
# Orientation error is measured this far (px) from ground-truth boundaries: the angle is undefined
# on the boundary itself and the 2-px band is already scored by the boundary F1.
ORIENTATION_MARGIN = 2


def boundary_from_labels(labels: np.ndarray) -> np.ndarray:
    """Boundary mask of a label image: label 0, or a 4-neighbour with another label (both sides).

    Marking both sides gives a 2-px band along touching labels, centred on the interface, which is
    also the training target; a band of 0 labels is marked as it is
    (:func:`~micro_sym.grains.boundaries.find_boundaries`, ``mode="thick_zero"``).
    """
    return find_boundaries(labels, mode="thick_zero")


def _thin(mask: np.ndarray) -> np.ndarray:
    """1-px lines (2D, skeletonize) or 1-2-voxel sheets (3D, :func:`_medial_sheet`) of a boundary mask."""
    mask = np.asarray(mask, bool)
    if mask.ndim == 3:
        return _medial_sheet(mask)
    from skimage.morphology import skeletonize

    return skeletonize(mask)


def _medial_sheet(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` on the ridge of its distance to the outside, along some axis.

    skimage's 3D skeletonize thins sheets to curves (a boundary surface would vanish), so boundaries
    are thinned across their thickness only: a voxel stays when, along at least one axis, its distance
    to the outside is at least both neighbours' and more than one of them. A slab of thickness t
    keeps its 1 (odd t) or 2 (even t) middle layers; a voxel inside a slab, whose distance equals its
    neighbours' along the slab, is kept by the axis across it.
    """
    dist = ndimage.distance_transform_edt(np.pad(mask, 1))  # outside the array counts as outside
    keep = np.zeros(mask.shape, bool)
    d = dist[(slice(1, -1),) * mask.ndim]
    for ax in range(mask.ndim):
        lo = [slice(1, -1)] * mask.ndim
        hi = [slice(1, -1)] * mask.ndim
        lo[ax], hi[ax] = slice(0, -2), slice(2, None)
        a, b = dist[tuple(lo)], dist[tuple(hi)]
        keep |= (d >= a) & (d >= b) & ((d > a) | (d > b))
    return keep & mask


def boundary_f1(pred_boundary: np.ndarray, gt_labels: np.ndarray, tolerance: float = BOUNDARY_TOLERANCE) -> dict:
    """Boundary precision/recall/F1 with a distance tolerance (BSDS-style, on skeletons).

    Both the predicted mask and the ground-truth boundary are thinned to 1-px lines, so the score does
    not depend on line width. A predicted pixel is correct if a true boundary pixel lies within
    ``tolerance`` px (Euclidean), and vice versa for recall.

    Parameters
    ----------
    pred_boundary : (H, W) bool array
        Predicted boundary mask (e.g. probability >= 0.5).
    gt_labels : (H, W) int array
        Ground-truth grain ids (0 = boundary).

    Returns
    -------
    dict with ``precision``, ``recall``, ``f1`` and counts ``tp_pred``, ``n_pred``, ``tp_gt``, ``n_gt``.
    """
    return boundary_f1_masks(pred_boundary, boundary_from_labels(gt_labels), tolerance)


def boundary_f1_masks(pred_boundary: np.ndarray, true_boundary: np.ndarray, tolerance: float = BOUNDARY_TOLERANCE) -> dict:
    """:func:`boundary_f1` of two boundary masks, 2D or 3D (thinned by :func:`_thin`, Euclidean tolerance)."""
    pred = _thin(pred_boundary)
    gt = _thin(true_boundary)
    d_to_gt = ndimage.distance_transform_edt(~gt) if gt.any() else np.full(gt.shape, np.inf)
    d_to_pred = ndimage.distance_transform_edt(~pred) if pred.any() else np.full(pred.shape, np.inf)
    counts = {
        "tp_pred": int((d_to_gt[pred] <= tolerance).sum()),
        "n_pred": int(pred.sum()),
        "tp_gt": int((d_to_pred[gt] <= tolerance).sum()),
        "n_gt": int(gt.sum()),
    }
    return {**_boundary_scores(counts), **counts}


def _boundary_scores(c: dict) -> dict:
    p = c["tp_pred"] / c["n_pred"] if c["n_pred"] else (1.0 if c["n_gt"] == 0 else 0.0)
    r = c["tp_gt"] / c["n_gt"] if c["n_gt"] else 1.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0}


def grain_f1(pred_labels: np.ndarray, gt_labels: np.ndarray, iou_threshold: float = IOU_THRESHOLD,
             min_gt_size: int = 0) -> dict:
    """Grain matching F1: a predicted and a true grain match if their IoU exceeds ``iou_threshold``.

    With a threshold of 0.5 each grain has at most one match, so matches need no assignment step.
    Label 0 (boundary) is not a grain on either side. ``min_gt_size`` > 0 leaves true grains smaller
    than that many pixels (slivers cut by the image border, 1-px label islands) out of the count,
    together with predicted grains matching them; the default 0 counts every true grain.

    Returns
    -------
    dict with ``precision``, ``recall``, ``f1``, ``tp``, ``n_pred``, ``n_gt``.
    """
    pred = np.asarray(pred_labels).astype(np.int64).ravel()
    gt = np.asarray(gt_labels).astype(np.int64).ravel()
    pred_ids, pred_inv, pred_area = np.unique(pred, return_inverse=True, return_counts=True)
    gt_ids, gt_inv, gt_area = np.unique(gt, return_inverse=True, return_counts=True)
    both = (pred > 0) & (gt > 0)
    pair = pred_inv[both] * len(gt_ids) + gt_inv[both]
    codes, inter = np.unique(pair, return_counts=True)
    pi, gi = codes // len(gt_ids), codes % len(gt_ids)
    iou = inter / (pred_area[pi] + gt_area[gi] - inter)
    match = iou > iou_threshold
    small_gt = (gt_area < min_gt_size) & (gt_ids > 0)
    tp = int((match & ~small_gt[gi]).sum())
    n_pred = int((pred_ids > 0).sum()) - int((match & small_gt[gi]).sum())
    counts = {"tp": tp, "n_pred": n_pred, "n_gt": int(((gt_ids > 0) & ~small_gt).sum())}
    return {**_grain_scores(counts), **counts}


def _grain_scores(c: dict) -> dict:
    p = c["tp"] / c["n_pred"] if c["n_pred"] else 0.0
    r = c["tp"] / c["n_gt"] if c["n_gt"] else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0}


def orientation_errors(pred_deg: np.ndarray, gt_deg: np.ndarray, gt_labels: np.ndarray, k: int,
                       margin: int = ORIENTATION_MARGIN) -> np.ndarray:
    """Symmetry-aware misorientation (degrees) at grain-interior pixels with a defined true angle.

    Interior = label > 0 and more than ``margin`` px from a ground-truth boundary.
    """
    interior = ~boundary_from_labels(gt_labels)
    if margin > 0:
        interior = ndimage.binary_erosion(interior, iterations=margin, border_value=1)
    valid = interior & np.isfinite(gt_deg) & np.isfinite(pred_deg)
    return misorientation_2d(pred_deg[valid], gt_deg[valid], k).astype(np.float32)


def evaluate_sample(pred: dict, gt_labels: np.ndarray, gt_orientation: np.ndarray | None, k: int,
                    boundary_threshold: float = 0.5, min_gt_size: int = 0) -> dict:
    """All metrics of one image from ``segment_image`` output and its ground truth.

    Returns
    -------
    dict
        ``boundary_f1``, ``grain_f1``, ``orientation_median_deg`` (NaN without ground-truth angles),
        plus the ``boundary``/``grain`` count dicts and the raw ``orientation_errors`` array (dropped
        from JSON by :func:`aggregate`).
    """
    b = boundary_f1(pred["boundary"] >= boundary_threshold, gt_labels)
    g = grain_f1(pred["grains"], gt_labels, min_gt_size=min_gt_size) if "grains" in pred else None
    if gt_orientation is not None:
        err = orientation_errors(pred["orientation"], gt_orientation, gt_labels, k)
    else:
        err = np.zeros(0, np.float32)
    return {
        "boundary_f1": b["f1"],
        "grain_f1": g["f1"] if g else float("nan"),
        "orientation_median_deg": float(np.median(err)) if err.size else float("nan"),
        "boundary": b,
        "grain": g,
        "orientation_errors": err,
    }


def aggregate(per_image: dict) -> dict:
    """Pool per-image results (``{name: evaluate_sample(...)}``) into overall scores and a JSON-able report.

    Overall boundary and grain F1 come from pooled counts; the overall median orientation error is the
    median over all pooled interior pixels.
    """
    bc = {key: sum(r["boundary"][key] for r in per_image.values()) for key in ("tp_pred", "n_pred", "tp_gt", "n_gt")}
    have_g = [r["grain"] for r in per_image.values() if r["grain"]]
    gc = {key: sum(g[key] for g in have_g) for key in ("tp", "n_pred", "n_gt")}
    errs = [r["orientation_errors"] for r in per_image.values() if r["orientation_errors"].size]
    err = np.concatenate(errs) if errs else np.zeros(0)
    overall = {
        "boundary_f1": _boundary_scores(bc)["f1"],
        "boundary_precision": _boundary_scores(bc)["precision"],
        "boundary_recall": _boundary_scores(bc)["recall"],
        "grain_f1": _grain_scores(gc)["f1"] if have_g else float("nan"),
        "grain_precision": _grain_scores(gc)["precision"] if have_g else float("nan"),
        "grain_recall": _grain_scores(gc)["recall"] if have_g else float("nan"),
        "orientation_median_deg": float(np.median(err)) if err.size else float("nan"),
        "orientation_p90_deg": float(np.percentile(err, 90)) if err.size else float("nan"),
        "n_images": len(per_image),
        "n_grains_true": gc["n_gt"],
        "n_grains_pred": gc["n_pred"],
    }
    images = {
        name: {
            "boundary_f1": r["boundary_f1"], "grain_f1": r["grain_f1"], "orientation_median_deg": r["orientation_median_deg"],
            "n_grains_true": r["grain"]["n_gt"] if r["grain"] else None, "n_grains_pred": r["grain"]["n_pred"] if r["grain"] else None,
        }
        for name, r in per_image.items()
    }
    return {"overall": overall, "images": images}

"""3D evaluation metrics beyond boundary and grain F1: vacuum left unassigned and Σ3 twin boundaries.

:func:`micro_sym.training.train3d.evaluate3d` reports them per volume and pooled over a dataset. The
truth follows the atomistic generator (:mod:`micro_sym.synth.atoms3d`): id 0 marks voxels without a
lattice (vacuum or amorphous support; other datasets also mark their boundary band with 0), and every
grain, including each Σ3 twin (60° about <111> from its parent), has its own nonzero id; orientations
are cubic quaternion maps ``(4, z, y, x)``.

Every function returns raw counts next to its fraction, so that volumes pool by summing counts
(:func:`pool`) rather than averaging fractions, as the 2D metrics do (:func:`micro_sym.metrics.aggregate`).

>>> truth = np.zeros((4, 4, 4), np.uint32); truth[:, :, :2] = 1  # half vacuum
>>> vacuum_unassigned(np.ones_like(truth), truth, margin=0)["vacuum_unassigned"]
0.0
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from micro_sym.grains.stats import (
    SIGMA3_BRANDON_DEG,
    grain_table,
    grow_into_gaps,
    sigma3_deviation,
)
from micro_sym.orientation import quat_conjugate, quat_multiply

#: Id-0 voxels within this many face steps of a true grain are not vacuum (:func:`vacuum_unassigned`):
#: three steps clear the 2-voxel boundary bands of datasets that draw boundaries with 0 (up to 1 voxel
#: of them survives two steps where bands meet) and the seams between grains of the atomistic volumes.
VACUUM_MARGIN = 3
#: How far (face steps) the prediction may be from a true Σ3 boundary, and vice versa, and still count.
SIGMA3_REACH = 1


def vacuum_unassigned(pred_labels, true_labels, margin: int = VACUUM_MARGIN) -> dict:
    """Share of the true vacuum that the prediction leaves out of every grain.

    Vacuum: the true id-0 voxels (no lattice: vacuum or amorphous) more than ``margin`` face steps from
    every true grain (the array border counts as vacuum). Id 0 also marks the boundary band of
    datasets that draw boundaries with 0 (docs/design.md §1; 2 voxels thick, a little more at
    junctions) and the thin seams the atom labelling leaves between some grains; the margin keeps
    those out, and does not count a predicted grain surface a few voxels off the true one.

    Parameters
    ----------
    pred_labels, true_labels : ndarray of int, same shape
        Predicted and true grain ids; 0 is "no grain".
    margin : int
        Face steps from the true grains within which id-0 voxels are not vacuum; 0 counts every one.

    Returns
    -------
    dict
        ``vacuum_unassigned``: of the vacuum voxels, the fraction with predicted id 0 (NaN when the
        volume has none); ``n_vacuum``, ``n_vacuum_unassigned``: the two voxel counts.
    """
    vacuum = np.asarray(true_labels) == 0
    if margin > 0:  # (binary_erosion would repeat until nothing changes with 0 iterations)
        vacuum = ndimage.binary_erosion(vacuum, iterations=margin, border_value=1)
    n = int(vacuum.sum())
    left = int((np.asarray(pred_labels)[vacuum] == 0).sum())
    return {"vacuum_unassigned": left / n if n else float("nan"), "n_vacuum": n, "n_vacuum_unassigned": left}


def grain_mean_quaternions(labels, quaternions) -> np.ndarray:
    """Each grain's mean orientation, as the grain table computes it (cubic symmetry-aware mean).

    Returns
    -------
    ndarray (max id + 1, 4)
        Row ``i`` is grain ``i``'s mean quaternion; NaN for id 0, for ids not present and for grains
        without a finite orientation.
    """
    lab = np.asarray(labels).astype(np.int64)
    ids, inverse = np.unique(lab, return_inverse=True)
    out = np.full((int(ids[-1]) + 1 if ids.size else 1, 4), np.nan)
    grains = ids[ids > 0]
    if grains.size == 0:
        return out
    # The grain table wants ids 1..n; 0 stays 0.
    consecutive = inverse.reshape(lab.shape) + (0 if ids[0] == 0 else 1)
    table = grain_table(consecutive, quaternions, symmetry="cubic")
    out[grains] = np.stack([table[f"mean_q{c}"] for c in "wxyz"], axis=1)
    return out


def sigma3_pairs(a, b, mean_quaternions) -> np.ndarray:
    """True where grains ``a`` and ``b`` (id arrays) differ, are both nonzero, and are Σ3-related.

    Σ3-related: the misorientation of the two grains' mean orientations deviates from 60° about <111>
    by at most the Brandon criterion, 15°/√3 ≈ 8.66° (:func:`micro_sym.grains.stats.sigma3_deviation`,
    the boundary table's test). Each distinct pair is classified once.
    """
    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    ok = (a != b) & (a > 0) & (b > 0)
    out = np.zeros(a.shape, bool)
    if not ok.any():
        return out
    base = np.int64(len(mean_quaternions))
    pairs, inverse = np.unique(a[ok] * base + b[ok], return_inverse=True)
    qa, qb = mean_quaternions[pairs // base], mean_quaternions[pairs % base]
    # A grain without orientation has a NaN mean: NaN deviation, not Σ3.
    twin = sigma3_deviation(quat_multiply(quat_conjugate(qa), qb)) <= SIGMA3_BRANDON_DEG
    out[ok] = twin[inverse]
    return out


def _axis_pair_slices(ndim: int, axis: int) -> tuple[tuple, tuple]:
    lo, hi = [slice(None)] * ndim, [slice(None)] * ndim
    lo[axis], hi[axis] = slice(0, -1), slice(1, None)
    return tuple(lo), tuple(hi)


def _near_faces(faces, shape, reach: int) -> np.ndarray:
    """Voxels within ``reach`` face steps of a voxel on either side of one of ``faces``."""
    on = np.zeros(shape, bool)
    for axis, f in enumerate(faces):
        lo, hi = _axis_pair_slices(len(shape), axis)
        on[lo] |= f
        on[hi] |= f
    # (binary_dilation would repeat until nothing changes with 0 iterations)
    return ndimage.binary_dilation(on, iterations=reach) if reach > 0 else on


def _count_near(faces, near: np.ndarray) -> int:
    """How many of ``faces`` have both voxels in ``near``."""
    total = 0
    for axis, f in enumerate(faces):
        lo, hi = _axis_pair_slices(near.ndim, axis)
        total += int((f & near[lo] & near[hi]).sum())
    return total


def sigma3_boundaries(pred_labels, pred_quaternions, true_labels, true_quaternions, reach: int = SIGMA3_REACH) -> dict:
    """Recall and precision of Σ3 (twin) boundaries: found, and classified as Σ3 from the orientations.

    A *face* is a pair of face-adjacent voxels; it lies on a boundary when its two grain ids differ and
    are both nonzero. A face is a *Σ3 face* when its two grains are Σ3-related by their mean
    orientations (:func:`sigma3_pairs`, Brandon criterion). True Σ3 faces come from the true labels
    and orientations, predicted ones from the predicted labels and orientations, the same way:

    - each label map is first grown by one face step into its unassigned voxels
      (:func:`micro_sym.grains.stats.grow_into_gaps`), so that grains separated by a band of label 0
      up to 2 voxels wide meet (the prediction's boundary band; in the truth, the thin vacuum seams
      the atom labelling leaves at some boundaries); the grains' mean orientations are taken from the
      maps as given, not from the grown voxels;
    - a face counts as matched when both its voxels lie within ``reach`` face steps of a voxel of a
      face of the other side: a predicted twin boundary one voxel off still counts.

    Treating both maps alike makes a prediction equal to the truth score 1 on both.

    ``sigma3_recall`` is the fraction of true Σ3 faces (the twin-boundary area, in voxel faces)
    matched by predicted Σ3 faces; a twin boundary the prediction misses, or finds between grains
    whose orientations are not Σ3-related (such as a 45° <001> one), is not recalled.
    ``sigma3_precision`` is the fraction of predicted Σ3 faces matched by true Σ3 faces.

    Parameters
    ----------
    pred_labels, true_labels : ndarray of int (z, y, x)
        Grain ids, 0 = no grain.
    pred_quaternions, true_quaternions : ndarray (4, z, y, x)
        Orientation maps (NaN where undefined).
    reach : int
        Matching tolerance in face steps.

    Returns
    -------
    dict
        ``sigma3_recall`` (NaN without true Σ3 faces), ``sigma3_precision`` (NaN without predicted
        ones) and the counts ``sigma3_faces_true``, ``sigma3_faces_found`` (true ones matched),
        ``sigma3_faces_pred``, ``sigma3_faces_pred_correct`` (predicted ones matched).
    """
    true = np.asarray(true_labels).astype(np.int64)
    pred = np.asarray(pred_labels).astype(np.int64)
    true_faces = sigma3_faces(true, true_quaternions)
    pred_faces = sigma3_faces(pred, pred_quaternions)
    counts = {
        "sigma3_faces_true": int(sum(f.sum() for f in true_faces)),
        "sigma3_faces_found": _count_near(true_faces, _near_faces(pred_faces, true.shape, reach)),
        "sigma3_faces_pred": int(sum(f.sum() for f in pred_faces)),
        "sigma3_faces_pred_correct": _count_near(pred_faces, _near_faces(true_faces, true.shape, reach)),
    }
    return {**_sigma3_scores(counts), **counts}


def sigma3_faces(labels, quaternions) -> list[np.ndarray]:
    """The Σ3 faces of a label volume, per array axis a mask over the voxel pairs ``(v, v + 1 along the
    axis)``: the labels grown one face step into their gaps, each grain's orientation its mean
    quaternion (as :func:`sigma3_boundaries` counts them)."""
    lab = np.asarray(labels).astype(np.int64)
    means = grain_mean_quaternions(lab, quaternions)
    grown = grow_into_gaps(lab, 1)
    faces = []
    for axis in range(grown.ndim):
        lo, hi = _axis_pair_slices(grown.ndim, axis)
        faces.append(sigma3_pairs(grown[lo], grown[hi], means))
    return faces


def sigma3_voxels(labels, quaternions, reach: int = 0) -> np.ndarray:
    """Voxels on either side of a Σ3 face of a label volume (:func:`sigma3_faces`), dilated by
    ``reach`` face steps; bool."""
    return _near_faces(sigma3_faces(labels, quaternions), np.shape(labels), reach)


def _sigma3_scores(c: dict) -> dict:
    nan = float("nan")
    return {"sigma3_recall": c["sigma3_faces_found"] / c["sigma3_faces_true"] if c["sigma3_faces_true"] else nan,
            "sigma3_precision": (c["sigma3_faces_pred_correct"] / c["sigma3_faces_pred"]
                                 if c["sigma3_faces_pred"] else nan)}


def pool(rows) -> dict:
    """Dataset scores of per-volume :func:`vacuum_unassigned` and :func:`sigma3_boundaries` results
    (``rows``: dicts holding their counts), from the counts summed over volumes: each volume weighs by
    its vacuum voxels and twin faces. A row without Σ3 counts (no true orientations) adds no faces."""
    keys = ("n_vacuum", "n_vacuum_unassigned", "sigma3_faces_true", "sigma3_faces_found", "sigma3_faces_pred",
            "sigma3_faces_pred_correct")
    c = {k: sum(r.get(k, 0) for r in rows) for k in keys}
    vacuum = c["n_vacuum_unassigned"] / c["n_vacuum"] if c["n_vacuum"] else float("nan")
    return {"vacuum_unassigned": vacuum, **_sigma3_scores(c), **c}

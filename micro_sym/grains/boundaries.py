"""Grain-boundary masks of label maps, 2D and 3D: one function, one ``mode`` per convention in use.

Every mode looks at face neighbours only (4 in 2D, 6 in 3D) and differs in which side of a label
change it marks and in how label 0 (boundary / unassigned, docs/design.md §1.6) is treated:

=============  ======================================================  ==========================================
mode           marks                                                   used for
=============  ======================================================  ==========================================
``thick``      both sides of every change; 0 is an ordinary label      synthetic ground truth (every point labelled)
``thick_zero`` ``thick``, plus every label-0 point                     2D training target and metrics (§2.5)
``grains``     label-0 points, plus both sides of changes between      3D training target: a 0 band is the
               two grains (labels > 0)                                 boundary as it is, not widened
``one_sided``  label-0 points, plus the point before each change       1-px lines for figures and napari
               along each axis
=============  ======================================================  ==========================================

>>> lab = np.array([[1, 1, 2, 2],
...                 [1, 0, 2, 2]])
>>> find_boundaries(lab, mode="thick").astype(int)
array([[0, 1, 1, 0],
       [1, 1, 1, 0]])
>>> find_boundaries(lab, mode="one_sided").astype(int)
array([[0, 1, 0, 0],
       [1, 1, 0, 0]])
"""

from __future__ import annotations

import numpy as np

__all__ = ["MODES", "find_boundaries"]

#: The modes of :func:`find_boundaries`.
MODES = ("thick", "thick_zero", "grains", "one_sided")


def find_boundaries(labels, mode: str = "thick") -> np.ndarray:
    """Boolean mask of the points on a grain boundary of a label map (2D or 3D).

    Parameters
    ----------
    labels : array_like of int, (y, x) or (z, y, x)
        Grain ids; 0 = boundary / unassigned (except in mode ``"thick"``, where it is a label like any other).
    mode : {"thick", "thick_zero", "grains", "one_sided"}
        Which points are marked (see the module docstring): ``"thick"`` both sides of every face
        neighbour label change (2 px wide; scikit-image's ``find_boundaries(mode="thick")`` with
        ``connectivity=1``); ``"thick_zero"`` that plus every label-0 point; ``"grains"`` label-0
        points plus both sides of changes between two labels > 0; ``"one_sided"`` label-0 points plus
        the point whose next neighbour along an axis has another label (1 px wide).

    Returns
    -------
    ndarray of bool, the shape of ``labels``

    Examples
    --------
    >>> lab = np.array([[1, 1, 0, 2]])
    >>> [find_boundaries(lab, m).astype(int).tolist() for m in MODES]
    [[[0, 1, 1, 1]], [[0, 1, 1, 1]], [[0, 0, 1, 0]], [[0, 1, 1, 0]]]
    """
    if mode not in MODES:
        raise ValueError(f"mode '{mode}': expected one of {', '.join(MODES)}")
    labels = np.asarray(labels)
    mask = np.zeros(labels.shape, dtype=bool) if mode == "thick" else labels == 0
    for ax in range(labels.ndim):
        a = np.moveaxis(labels, ax, 0)
        m = np.moveaxis(mask, ax, 0)  # a view: writes go into mask
        diff = a[1:] != a[:-1]
        if mode == "grains":
            diff &= (a[1:] > 0) & (a[:-1] > 0)
        m[:-1] |= diff
        if mode != "one_sided":
            m[1:] |= diff
    return mask

"""3D grains from a network's cubic-harmonic field: orientations decoded per grain, not per voxel.

Why
---
A 3D network predicts each voxel's orientation as the l = 4 (+6) cubic-harmonic field ``D(R) c₀``
(:mod:`micro_sym.orientation.cubic_harmonics`). Decoding it into a quaternion is an iterative fit per
voxel that costs more than the network itself. The grain rule does not need it: the inner product of
two unit fields depends only on their misorientation (:func:`~micro_sym.orientation.cubic_harmonics.field_min_dot`
turns the rule's threshold in degrees into one on it), so seeds and the flood compare fields
directly (:class:`~micro_sym.grains.reconstruct.OrientationKind` ``"field"``). The field is linear in
the orientation distribution, so the sum of a grain's unit fields decodes to its mean orientation:
one decode per grain. ``bench/studies/study_harmonic_grains.py`` scores this rule against the
decoded one on grain F1 (docs/results.md).
"""

from __future__ import annotations

import numpy as np


def field_sums(fields: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    """``(n, C)`` sums of the finite fields ``(C, *spatial)`` of labels 1..n (row ``i``: label ``i + 1``)."""
    flat = np.asarray(labels).ravel()
    f = np.asarray(fields).reshape(np.shape(fields)[0], -1)
    use = (flat > 0) & np.isfinite(f).all(0)
    idx = flat[use].astype(np.int64) - 1
    return np.stack([np.bincount(idx, weights=c[use], minlength=n) for c in f], 1).reshape(n, len(f))


def mean_orientations(sums: np.ndarray, degrees) -> np.ndarray:
    """``(n, 4)`` quaternions decoded from summed fields (NaN rows for a zero sum: no field)."""
    from micro_sym.orientation.cubic_harmonics import sh_to_quat

    sums = np.array(sums, np.float64)
    if not len(sums):
        return np.zeros((0, 4))
    sums[~(np.abs(sums).sum(1) > 0)] = np.nan
    return sh_to_quat(sums, degrees).reshape(-1, 4)


def grain_orientations(fields: np.ndarray, labels: np.ndarray, degrees) -> np.ndarray:
    """Lookup table ``(n_grains + 1, 4)`` of each grain's mean orientation (row 0, not a grain: NaN)."""
    n = int(np.max(labels)) if np.size(labels) else 0
    table = np.full((n + 1, 4), np.nan)
    table[1:] = mean_orientations(field_sums(fields, labels, n), degrees)
    return table


def table_orientations(table: dict, n_grains: int) -> np.ndarray:
    """Lookup table ``(n_grains + 1, 4)`` of what a volume's orientation map shows for each grain: its
    orientation measured from the volume (``lattice_qw`` .. ``lattice_qz``, docs/design.md §6.7: a fraction
    of a degree off where the lattice shows) where the table has one, else its network mean (``mean_q*``)."""
    out = np.full((n_grains + 1, 4), np.nan)
    if n_grains:
        out[1:] = np.stack([np.asarray(table[f"mean_q{c}"], np.float64) for c in "wxyz"], 1)
        if "lattice_qw" in table:
            measured = np.stack([np.asarray(table[f"lattice_q{c}"], np.float64) for c in "wxyz"], 1)
            have = np.isfinite(measured).all(1)
            out[1:][have] = measured[have]
    return out


def map_orientations(table: dict, n_grains: int) -> tuple[np.ndarray, dict]:
    """What a volume's orientation map shows for each grain (:func:`table_orientations`), and ``table``
    with its ``mean_qw`` .. ``mean_qz`` columns set to the same, so that the CSV's Euler angles (derived
    from ``mean_q*``) and ``micro-sym grains`` on the output agree with the map."""
    lut = table_orientations(table, n_grains)
    return lut, {**table, **{f"mean_q{c}": lut[1:, i] for i, c in enumerate("wxyz")}}


def paint(labels: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """The orientation map ``(4, *labels.shape)`` float32 of grain orientations ``lut`` (NaN off grains)."""
    return np.moveaxis(lut.astype(np.float32)[np.asarray(labels)], -1, 0)

"""The grain rule's misorientation threshold, checked just below and just above it, for every
orientation kind, against misorientations computed here independently (rotation matrices and
symmetry groups built from their generators, not the library's quaternion code).

Orientations are generic (random axes, not about z), so every term of the quaternion product
matters: a sign error in one cross term moves the misorientation far from 4.9° / 5.1°."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from micro_sym.grains import reconstruct_grains

THRESHOLD = 5.0


def _group(generators) -> list[np.ndarray]:
    """Closure of a set of rotation matrices under multiplication."""
    group = [np.eye(3)]
    frontier = list(group)
    while frontier:
        new = []
        for a, g in itertools.product(frontier, generators):
            m = a @ g
            if not any(np.allclose(m, b, atol=1e-9) for b in group):
                group.append(m)
                new.append(m)
        frontier = new
    return group


CUBIC = _group([Rotation.from_euler("z", 90, degrees=True).as_matrix(),
                Rotation.from_euler("x", 90, degrees=True).as_matrix()])
HEXAGONAL = _group([Rotation.from_euler("z", 60, degrees=True).as_matrix(),
                    Rotation.from_euler("x", 180, degrees=True).as_matrix()])


def _misorientation(r1, r2, group) -> float:
    """Smallest rotation angle (degrees) of r1ᵀ r2 s over the crystal symmetries s."""
    return min(np.degrees(Rotation.from_matrix(r1.T @ r2 @ s).magnitude()) for s in group)


def _quat(r: np.ndarray) -> np.ndarray:
    x, y, z, w = Rotation.from_matrix(r).as_quat()  # scipy: scalar last
    return np.array([w, x, y, z])


def test_symmetry_groups_have_their_orders():
    assert len(CUBIC) == 24 and len(HEXAGONAL) == 12


@pytest.mark.parametrize("name,group", [("cubic", CUBIC), ("hexagonal", HEXAGONAL)])
@pytest.mark.parametrize("ndim", [2, 3])
def test_quaternion_pairs_split_just_above_the_threshold(name, group, ndim):
    rng = np.random.default_rng(7)
    for trial in range(6):
        base = Rotation.random(random_state=rng.integers(1 << 31)).as_matrix()
        s = group[rng.integers(len(group))]  # the neighbour is written in a symmetry-equivalent form
        axis = rng.normal(size=3)
        for angle, expect in ((THRESHOLD - 0.1, 1), (THRESHOLD + 0.1, 2)):
            turn = Rotation.from_rotvec(np.radians(angle) * axis / np.linalg.norm(axis)).as_matrix()
            other = base @ s @ turn
            assert _misorientation(base, other, group) == pytest.approx(angle, abs=1e-6)
            q = np.stack([_quat(base), _quat(other)], axis=-1).reshape((4,) + (1,) * (ndim - 1) + (2,))
            labels = reconstruct_grains(q, symmetry=name, threshold=THRESHOLD)
            assert len(np.unique(labels[labels > 0])) == expect, (name, trial, angle)


@pytest.mark.parametrize("lattice,k", [("square", 4), ("hexagonal", 6)])
def test_angle_pairs_split_just_above_the_threshold_across_the_period(lattice, k):
    period = 360.0 / k
    for a in (1.0, period - 1.0, 17.3):
        for delta, expect in ((THRESHOLD - 0.1, 1), (THRESHOLD + 0.1, 2), (-(THRESHOLD - 0.1), 1), (-(THRESHOLD + 0.1), 2)):
            b = np.mod(a + delta + period * 3, period)  # written in another period
            labels = reconstruct_grains(np.array([[a, b]]), symmetry=lattice, threshold=THRESHOLD)
            assert len(np.unique(labels[labels > 0])) == expect, (lattice, a, delta)

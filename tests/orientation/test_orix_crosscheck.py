"""micro_sym's orientation conventions checked against orix, the better-kept implementation.

Convention (asserted, not assumed): orix stores the passive sample -> crystal rotation of Bunge
angles (``Orientation.from_euler``, ``direction="lab2crystal"``); micro_sym stores the active
crystal -> sample rotation (docs/design.md §1.3). The same Euler angles therefore give conjugate
quaternions, ``orix = conj(micro_sym)`` (both scalar first, equal up to the sign of the whole
quaternion); :func:`micro_sym.io.orientation_export.orix_quaternions` is that map.

Every comparison uses random orientations from a fixed seed, away from the few degenerate cases
(Φ = 0 or 180°) where Euler angles are not unique.
"""

from __future__ import annotations

import numpy as np
import pytest

from micro_sym import orientation as ori
from micro_sym.grains.reconstruct import orientation_kind
from micro_sym.grains.stats import pair_misorientation
from micro_sym.grains.table import euler_bunge_from_quat
from micro_sym.io.orientation_export import orix_quaternions

pytest.importorskip("orix")
from orix.plot import IPFColorKeyTSL
from orix.quaternion import Orientation, Rotation, symmetry
from orix.vector import Vector3d

N = 500


def _random_euler(seed: int, n: int = N) -> np.ndarray:
    """``(n, 3)`` Bunge angles in degrees, uniform in each angle, Φ kept off 0 and 180°."""
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.uniform(0, 360, n), rng.uniform(1, 179, n), rng.uniform(0, 360, n)])


def _same_rotation(a, b) -> np.ndarray:
    """Per row: whether quaternions ``a`` and ``b`` ``(n, 4)`` are the same rotation (equal up to sign)."""
    return np.abs(np.einsum("ij,ij->i", a, b)) > 1 - 1e-9


def test_euler_to_quaternion_is_the_conjugate_of_orix():
    e = _random_euler(0)
    mine = ori.euler_bunge_to_quat(e[:, 0], e[:, 1], e[:, 2])
    theirs = Orientation.from_euler(e, symmetry.Oh, degrees=True).data
    assert _same_rotation(mine, orix_quaternions(theirs)).all()
    # Documenting the convention: without the conjugate they differ (the test is not vacuous).
    assert not _same_rotation(mine, theirs).any()


def test_quaternion_to_euler_matches_orix():
    q = ori.random_quaternions(N, np.random.default_rng(1))
    mine = np.column_stack(euler_bunge_from_quat(q))
    theirs = Rotation(orix_quaternions(q)).to_euler(degrees=True)
    # Same representative: φ1, φ2 in [0, 360), Φ in [0, 180], compared as angles (359.99 ~ 0).
    diff = np.abs((mine - theirs + 180.0) % 360.0 - 180.0)
    assert diff.max() < 1e-6


def test_cubic_misorientation_matches_orix_m3m():
    rng = np.random.default_rng(2)
    q1, q2 = ori.random_quaternions(N, rng), ori.random_quaternions(N, rng)
    mine = ori.misorientation_cubic(q1, q2)
    o1, o2 = (Orientation(orix_quaternions(q), symmetry.Oh) for q in (q1, q2))
    np.testing.assert_allclose(mine, o1.angle_with(o2, degrees=True), atol=1e-6)
    # Random cubic misorientations spread up to ~62.8°: a check on a few small angles would be weak.
    assert mine.max() > 55.0


def test_hexagonal_misorientation_matches_orix_6mmm():
    """The hexagonal (622) misorientation the grain code uses (``reconstruct._pair_max_scalar`` through
    ``stats.pair_misorientation``) against orix with D6h (6/mmm), x ∥ a in both."""
    rng = np.random.default_rng(3)
    q1, q2 = ori.random_quaternions(N, rng), ori.random_quaternions(N, rng)
    kind = orientation_kind((4, N, 1), "hexagonal")  # a (4, y, x) quaternion map
    assert kind.kind == "quat"
    mine = pair_misorientation(q1.T, q2.T, kind)
    o1, o2 = (Orientation(orix_quaternions(q), symmetry.D6h) for q in (q1, q2))
    np.testing.assert_allclose(mine, o1.angle_with(o2, degrees=True), atol=1e-6)
    assert mine.max() > 80.0  # hexagonal misorientations reach ~93.8°


@pytest.mark.parametrize("name, group, order", [("cubic", symmetry.Oh, 24), ("hexagonal", symmetry.D6h, 12)])
def test_symmetry_rotations_are_orix_proper_rotations(name, group, order):
    """micro_sym's 432 / 622 rotations are exactly the rotation parts of orix's m-3m / 6/mmm (as sets, up to sign)."""
    mine = ori.symmetry_quats(name)
    theirs = group.proper_subgroup.data
    assert len(mine) == len(theirs) == order
    match = np.abs(mine @ theirs.T) > 1 - 1e-9  # match[i, j]: same rotation
    assert (match.sum(axis=1) == 1).all() and (match.sum(axis=0) == 1).all()  # a one-to-one correspondence


def _towards_z(direction) -> np.ndarray:
    """A micro_sym quaternion (crystal -> sample) that puts the crystal ``direction`` along sample z."""
    d = np.asarray(direction, float) / np.linalg.norm(direction)
    axis = np.cross(d, [0.0, 0.0, 1.0])
    angle = np.rad2deg(np.arccos(np.clip(d[2], -1, 1)))
    return ori.axis_angle_to_quat(axis if np.linalg.norm(axis) > 0 else [1.0, 0, 0], angle)


def test_ipf_z_key_agrees_with_orix_tsl_key():
    """IPF-Z: micro_sym's key and orix's ``IPFColorKeyTSL`` (m-3m) colour the same standard triangle.

    They differ by design in shading: micro_sym scales the barycentric weights ``(z - x, x - y, y)`` to
    full brightness and brightens them with a square root; orix's TSL key uses its own saturation and
    white centre. What must agree, and is asserted: (1) the sample direction folded into the
    fundamental sector [001]-[101]-[111], since micro_sym's colour of orix's folded direction must equal
    its colour of the orientation; (2) the corners, [001] red, [101] green, [111] blue, in both keys;
    (3) the dominant channel wherever micro_sym's key has a clear one.
    """
    q = ori.random_quaternions(N, np.random.default_rng(4))
    o = Orientation(orix_quaternions(q), symmetry.Oh)
    mine = ori.ipf_colour_cubic(q)
    folded = (o * Vector3d.zvector()).in_fundamental_sector(symmetry.Oh).data
    np.testing.assert_allclose(ori.ipf_colour_from_crystal_direction(folded), mine, atol=1e-9)

    key = IPFColorKeyTSL(symmetry.Oh, direction=Vector3d.zvector())
    corners = np.array([_towards_z(d) for d in ([0, 0, 1], [1, 0, 1], [1, 1, 1])])
    pure = np.eye(3)
    np.testing.assert_allclose(ori.ipf_colour_cubic(corners), pure, atol=1e-6)
    theirs_corners = key.orientation2color(Orientation(orix_quaternions(corners), symmetry.Oh))
    assert (theirs_corners.argmax(axis=1) == [0, 1, 2]).all()
    assert (theirs_corners.max(axis=1) > 0.99).all()

    theirs = key.orientation2color(o)
    top2 = np.sort(mine, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 0.2
    assert clear.sum() > N // 4
    assert (mine.argmax(axis=1)[clear] == theirs.argmax(axis=1)[clear]).all()

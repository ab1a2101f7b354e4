"""Atomistic 3D volumes (atomic electron tomography) whose ground truth comes from the atoms.

The analytic renderer (:mod:`micro_sym.synth.volume3d`) draws one simple-cubic lattice per grain; a
network trained only on it fails on volumes made from real atom positions. Here the specimen is a set
of atoms (docs/design.md §6.4):

- **Polycrystal**: Voronoi (power-diagram) grains of an fcc, bcc, diamond-cubic or simple-cubic
  crystal (``ase.build.bulk``), each filled by its own rotated lattice (an atom is kept where it falls
  in its grain's cell), random orientations, a fraction of low-angle neighbours, and Σ3 annealing-twin
  slabs (60° about a <111> axis, coherent on {111}). Atoms of two grains closer than a fraction of
  the nearest-neighbour distance are thinned to one.
- **Particle** in vacuum: an fcc single crystal (cuboctahedron, truncated octahedron, octahedron), a
  decahedron (five twin domains) or an icosahedron (twenty), from ``ase.cluster``, freely rotated,
  optionally on an amorphous support slab.

Imaging (:func:`render_structure`): every atom a Gaussian blob of amplitude ``(Z / Z_max) ** 1.5``
(elongated along the beam axis z), thermal jitter of the positions, a Fourier missing wedge of
``±tilt_range`` about y, reconstruction noise and a slow background
(:func:`micro_sym.synth.imaging.apply_imaging_3d`). Truth per voxel: the domain (grain or twin
domain) of the nearest atom within the lattice's largest empty-sphere radius, 0 (vacuum or amorphous)
beyond it or where that atom is amorphous; the domain's quaternion (NaN on 0).

Frames (docs/design.md §1): positions are physical ``(x, y, z)`` in Å, voxel ``(iz, iy, ix)`` is centred at
``(ix, iy, iz) * voxel_size``; a domain's quaternion rotates crystal vectors into this frame.

>>> from micro_sym.synth.atoms3d import Atoms3DConfig, synth_atoms3d
>>> cfg = Atoms3DConfig(kind="particle", size=(40, 40, 40), particle={"shape": "decahedron", "diameter": 14})
>>> s = synth_atoms3d(cfg, seed=0)
>>> s.volume.shape, s.orientation.shape, s.info["n_cells"]
((40, 40, 40), (4, 40, 40, 40), 5)
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, ValidationError, field_validator, model_validator
from scipy import ndimage
from scipy.spatial import ConvexHull, cKDTree

from micro_sym.errors import MicroSymError
from micro_sym.grains.boundaries import find_boundaries
from micro_sym.orientation import (
    axis_angle_to_quat,
    cubic_symmetry_quats,
    matrix_to_quat,
    misorientation_cubic,
    quat_multiply,
    quat_normalize,
    quat_to_matrix,
    random_quaternions,
)
from micro_sym.synth.atom_render import nearest_atom_labels, splat_atoms
from micro_sym.synth.config import Imaging3D, _Model
from micro_sym.synth.material import TWO_D_CRYSTALS, MaterialConfig, check_element, load_material_config
from micro_sym.synth.imaging import apply_imaging_3d, smooth_field
from micro_sym.synth.lattice2d import SynthSample
from micro_sym.synth.microstructure import (
    apply_grain_rule,
    face_pairs,
    power_diagram,
    power_diagram_grid,
    random_neighbour_assignment,
    relabel_consecutive,
    seed_cells,
)
from micro_sym.synth.volume3d import _to_dtype

#: Nearest-neighbour distance / lattice constant.
NEAREST_NEIGHBOUR = {"fcc": 1 / np.sqrt(2), "bcc": np.sqrt(3) / 2, "diamond": np.sqrt(3) / 4, "sc": 1.0}
#: Radius of the largest empty sphere / lattice constant (fcc octahedral hole, bcc tetrahedral hole,
#: diamond's empty "anti-site", sc cube centre): every point of a perfect crystal is this close to an atom.
COVERING_RADIUS = {"fcc": 0.5, "bcc": np.sqrt(5) / 4, "diamond": np.sqrt(3) / 4, "sc": np.sqrt(3) / 2}
#: Spacing of the {111} planes through Bravais lattice points / lattice constant (3 such planes, ABC,
#: per <111> repeat): a 60° rotation about <111> through a lattice point keeps every third one.
LAYER_111 = {"fcc": 1 / np.sqrt(3), "bcc": 1 / (2 * np.sqrt(3)), "diamond": 1 / np.sqrt(3), "sc": 1 / np.sqrt(3)}
#: Spacing of the planes of the first ring of the power spectrum / lattice constant: {111} for fcc and
#: diamond, {110} for bcc, {100} for simple cubic (what the 3D lattice measurement finds first).
FIRST_RING_SPACING = {"fcc": 1 / np.sqrt(3), "bcc": 1 / np.sqrt(2), "diamond": 1 / np.sqrt(3), "sc": 1.0}
#: Brandon's criterion for Σ3: within 15° / sqrt(3) of the exact twin misorientation.
SIGMA3_TOLERANCE = 15 / np.sqrt(3)
_Q_SIGMA3 = axis_angle_to_quat(np.ones(3), 60.0)


# ------------------------------------------------------------------------------------------ config


class PolycrystalSpec(_Model):
    """Grains of a space-filling polycrystal (``kind: polycrystal``)."""

    grain_size: float = Field(30.0, gt=4, description="mean equivalent-sphere diameter of the grains (power cells), Å")
    size_spread: float = Field(0.35, ge=0, le=1.5, description="log-normal sigma of the cell radii")
    relax_iterations: int = Field(2, ge=0, le=10, description="centroidal (Lloyd) steps: equiaxed grains")
    twin_fraction: float = Field(0.3, ge=0, le=1, description="fraction of grains given a Σ3 twin slab")
    twin_width: tuple[float, float] = Field((0.2, 0.4), description="twin slab thickness as a fraction of grain_size (min, max)")
    low_angle_fraction: float = Field(0.15, ge=0, le=1, description="fraction of grains a few degrees from a neighbour")
    low_angle_angle: tuple[float, float] = Field((6.0, 14.0), description="low-angle misorientation range, degrees")
    threshold_deg: float = Field(5.0, gt=0, description="grain rule (docs/design.md §3): touching domains closer than this are one grain")

    @field_validator("twin_width", "low_angle_angle")
    @classmethod
    def _ordered(cls, v):
        if v[0] < 0 or v[1] < v[0]:
            raise ValueError(f"need 0 <= min <= max, got {tuple(v)}")
        return v


class ParticleSpec(_Model):
    """A nanoparticle in vacuum (``kind: particle``; fcc only, as ase.cluster builds them)."""

    shape: Literal["cuboctahedron", "truncated_octahedron", "octahedron", "decahedron", "icosahedron"] = "truncated_octahedron"
    diameter: float = Field(30.0, gt=4, description="target largest diameter, Å (the nearest size the shape allows is built)")
    orientation: tuple[float, float, float, float] | None = Field(None, description="quaternion (w, x, y, z) of the particle; none = uniformly random")
    substrate: bool = Field(False, description="an amorphous support slab below the particle (normal along z)")
    substrate_element: str = "C"
    substrate_thickness: float = Field(8.0, gt=0, description="Å")
    substrate_density: float = Field(0.1, gt=0, le=0.2, description="atoms per Å³ (amorphous carbon: about 0.1)")


class AtomImaging(_Model):
    """Atomic-electron-tomography imaging of the atoms."""

    atom_sigma: float = Field(0.4, gt=0.05, le=2.0, description="Gaussian blob width in x and y, Å (thermal smearing + resolution)")
    elongation: float = Field(1.3, ge=1, le=4, description="blob width along the beam axis z / width in x and y")
    z_exponent: float = Field(1.5, ge=0, le=2, description="blob amplitude ∝ Z ** z_exponent (Z-contrast)")
    jitter: float = Field(0.07, ge=0, le=0.5, description="rms static displacement of each atom per axis, Å (thermal)")
    tilt_range: float = Field(70.0, gt=0, le=90, description="tilt series ±degrees about y; < 90 leaves a Fourier missing wedge")
    noise: float = Field(0.05, ge=0, description="Gaussian reconstruction noise, relative to the heaviest atom's peak")
    background: float = Field(0.03, ge=0, description="additive low-frequency background, relative to the heaviest atom's peak")
    background_variation: float = Field(0.1, ge=0, le=1, description="relative amplitude of a slow multiplicative intensity gradient")


class Atoms3DConfig(MaterialConfig):
    """Everything that defines an atomistic 3D sample except the seed."""

    FIXED: ClassVar[frozenset] = frozenset({"size", "voxel_size", "first_ring_voxels", "dtype", "variants", "imaging_ranges"})

    kind: Literal["polycrystal", "particle"] = "polycrystal"
    size: tuple[int, int, int] = Field((96, 96, 96), description="(z, y, x) voxels")
    voxel_size: float = Field(0.5, ge=0.1, le=2.0, description="Å per voxel")
    first_ring_voxels: float | None = Field(None, ge=2.5, le=16, description="when set, each sample's voxel size is "
                                            "chosen so that its lattice's first ring lies this many voxels apart "
                                            "(one period for every lattice and element; replaces voxel_size)")
    dtype: Literal["uint8", "float32"] = Field("uint8", description="uint8 as usual for reconstructions; float32 keeps everything")
    min_distance: float = Field(0.75, gt=0, lt=1, description="atoms closer than this fraction of the nearest-neighbour distance are thinned to one")
    polycrystal: PolycrystalSpec = PolycrystalSpec()
    particle: ParticleSpec = ParticleSpec()
    imaging: AtomImaging = AtomImaging()
    imaging_ranges: dict[str, tuple[tuple[float, float], ...]] = Field(
        {}, description="imaging field -> intervals ((lo, hi), ...): each sample draws that field uniformly over the "
                        "union of the intervals (after its variant), so a dataset spans many imaging settings and a "
                        "held-out setting can lie in a gap between them")

    @field_validator("size")
    @classmethod
    def _size(cls, v):
        if min(v) < 8 or max(v) > 1024:
            raise ValueError(f"each side must be between 8 and 1024 voxels, got {tuple(v)}")
        return v

    @model_validator(mode="after")
    def _consistent(self):
        if self.lattice in TWO_D_CRYSTALS:
            raise ValueError(f"{self.lattice} is a 2D crystal: micrographs only (micro-sym synth atoms2d)")
        if self.kind == "particle" and self.lattice != "fcc":
            raise ValueError("particles (ase.cluster) are fcc: set lattice: fcc")
        check_element(self.particle.substrate_element, "particle.substrate_element: ")
        for name, intervals in self.imaging_ranges.items():
            if name not in AtomImaging.model_fields:
                raise ValueError(f"imaging_ranges: {name!r} is not an imaging field ({', '.join(AtomImaging.model_fields)})")
            if not intervals or any(hi < lo for lo, hi in intervals):
                raise ValueError(f"imaging_ranges.{name}: need one or more (lo, hi) intervals with lo <= hi")
            for bound in {b for pair in intervals for b in pair}:
                try:
                    AtomImaging.model_validate({**self.imaging.model_dump(), name: bound})
                except ValidationError as err:
                    raise ValueError(f"imaging_ranges.{name}: {bound}: {err.errors()[0]['msg']}") from None
        return self

    # What a labeled dataset records (docs/design.md §1.6): every structure here is cubic (point group
    # 432 for misorientations), and the voxel size is stored in nm like the other generators'.
    dataset_lattice: ClassVar[str] = "cubic"
    unit: ClassVar[str] = "nm"

    @property
    def pixel_size(self) -> float:
        """The voxel size in :attr:`unit` (nm)."""
        return self.voxel_size / 10.0

    def with_drawn_imaging(self, rng: np.random.Generator):
        """This config with every field of :attr:`imaging_ranges` drawn uniformly over its intervals'
        union (itself, and no draw from ``rng``, when there are none)."""
        if not self.imaging_ranges:
            return self
        drawn = {name: _uniform_over(intervals, rng) for name, intervals in sorted(self.imaging_ranges.items())}
        return self.model_copy(update={"imaging": self.imaging.model_copy(update=drawn)})

    def at_first_ring_voxels(self):
        """This config with the voxel size that puts the first ring at ``first_ring_voxels`` (itself
        when that is not set)."""
        if self.first_ring_voxels is None:
            return self
        return self.model_copy(update={"voxel_size": FIRST_RING_SPACING[self.lattice] * self.a / self.first_ring_voxels})


def _uniform_over(intervals, rng) -> float:
    """One value uniform over the union of disjoint ``(lo, hi)`` intervals (each weighted by its length;
    all equally when every one is a single point)."""
    widths = np.array([hi - lo for lo, hi in intervals], dtype=float)
    p = widths / widths.sum() if widths.sum() > 0 else np.full(len(widths), 1 / len(widths))
    lo, hi = intervals[int(rng.choice(len(intervals), p=p))]
    return float(rng.uniform(lo, hi))


def load_atoms3d_config(path=None, **overrides) -> Atoms3DConfig:
    """An :class:`Atoms3DConfig` from an optional YAML file (a path or a bundled name such as
    ``synth-atoms3d-train``) plus top-level overrides; errors as one line (:func:`~.material.load_material_config`)."""
    return load_material_config(Atoms3DConfig, path, **overrides)


# --------------------------------------------------------------------------------------- structure


@dataclass
class AtomStructure:
    """Atoms and the crystal domain each belongs to.

    Attributes
    ----------
    positions : (N, 3) float64 physical ``(x, y, z)``, Å.
    numbers : (N,) int atomic numbers.
    domain : (N,) int32 domain id per atom, 1.. (0 = amorphous, belongs to no grain).
    quaternions : (D + 1, 4) float64 orientation of each domain id (row 0 NaN), crystal -> volume frame.
    domains : list of dict, one per domain id 1..D (JSON-ready metadata: lattice, element, quaternion,
        relation to a parent domain, Σ3 or not).
    """

    positions: np.ndarray
    numbers: np.ndarray
    domain: np.ndarray
    quaternions: np.ndarray
    domains: list = field(default_factory=list)


def _round_quats(q):
    """Canonical sign, then through float32 once: the stored map and the rendering share the numbers."""
    return quat_normalize(q).astype(np.float32).astype(np.float64)


def _unit_cell(cfg: Atoms3DConfig):
    """Fractional positions of the atoms of the conventional cubic cell (``ase.build.bulk(cubic=True)``)."""
    from ase.build import bulk

    return bulk(cfg.element, cfg.lattice, a=cfg.a, cubic=True).get_scaled_positions(wrap=True)


def _lattice_sites(rot, origin, a, basis, lo, hi):
    """Atom positions of the crystal ``origin + a R (n + basis)`` that fall in the box ``[lo, hi]``."""
    corners = np.array(list(itertools.product(*zip(lo, hi))))
    frac = (corners - origin) @ rot / a  # crystal fractional coordinates R^T (x - o) / a, one per row
    ranges = [np.arange(np.floor(f0) - 1, np.ceil(f1) + 1) for f0, f1 in zip(frac.min(0), frac.max(0))]
    cells = np.stack(np.meshgrid(*ranges, indexing="ij"), -1).reshape(-1, 3)
    pos = origin + a * ((cells[:, None, :] + basis[None]).reshape(-1, 3) @ rot.T)
    return pos[np.all((pos >= lo) & (pos <= hi), axis=1)]


def _thin_close_pairs(positions, min_dist, rng, protected=None):
    """Mask of the atoms to keep so that no two are closer than ``min_dist`` (one of each close pair goes).

    Close pairs only occur where two lattices meet (grain and twin boundaries, a particle on its
    support), so a greedy pass over the few pairs is cheap. ``protected`` atoms are never the one
    removed when their partner is not protected (a particle wins over its amorphous support).
    """
    pairs = cKDTree(positions).query_pairs(min_dist, output_type="ndarray")
    keep = np.ones(len(positions), dtype=bool)
    if len(pairs) == 0:
        return keep
    pairs = pairs[rng.permutation(len(pairs))]
    prot = np.zeros(len(positions), dtype=bool) if protected is None else protected
    for i, j in pairs:
        if keep[i] and keep[j]:
            keep[j if (prot[i] or not prot[j]) else i] = False
    return keep


def _sigma3_deviation(q_parent, q_child) -> float:
    """Smallest rotation (degrees) between the misorientation of two cubic crystals and the Σ3 twin."""
    sym = cubic_symmetry_quats()
    # All Σ3 variants are s ⊗ Σ3 (left) times any symmetry (right, which misorientation_cubic searches).
    return float(np.min(misorientation_cubic(quat_multiply(quat_multiply(q_parent, sym), _Q_SIGMA3), q_child)))


def _domain_record(did, cfg, q, relation, parent=None, q_parent=None, n_atoms=0, element=None, **extra):
    rec = {
        "id": int(did),
        "lattice": cfg.lattice,
        "element": element or cfg.element,
        "lattice_constant": cfg.a,
        "quaternion": [float(v) for v in q],
        "relation": relation,
        "parent": None if parent is None else int(parent),
        "misorientation_to_parent": None,
        "sigma3": None,
        "n_atoms": int(n_atoms),
    }
    if q_parent is not None:
        rec["misorientation_to_parent"] = float(misorientation_cubic(q_parent, q))
        rec["sigma3"] = bool(_sigma3_deviation(q_parent, q) < SIGMA3_TOLERANCE)
    rec.update(extra)
    return rec


def _box(cfg: Atoms3DConfig):
    """Physical extent ``(lo, hi)`` of the atoms that can touch the grid: the voxel centres plus a margin
    of the blobs' reach, so the volume's faces look cut from a larger specimen."""
    im = cfg.imaging
    margin = 3 * im.atom_sigma * im.elongation + 1.0
    hi = (np.array(cfg.size[::-1], dtype=np.float64) - 1) * cfg.voxel_size
    return np.full(3, -margin), hi + margin


def build_polycrystal(cfg: Atoms3DConfig, rng: np.random.Generator) -> AtomStructure:
    """Voronoi polycrystal of rotated lattices filling the volume, with low-angle grains and Σ3 twin slabs."""
    pc = cfg.polycrystal
    a = cfg.a
    basis = _unit_cell(cfg)
    lo, hi = _box(cfg)
    seeds, weights = seed_cells(lo, hi, pc.grain_size, pc.size_spread, pc.relax_iterations, rng)
    # A coarse grid of the cells gives their neighbours (for low-angle pairs) and bounding boxes (so each
    # lattice is generated only around its own cell). Seeds whose cell misses the box are dropped.
    h = min(a, pc.grain_size / 6)
    axes = [np.arange(l0, l1 + h, h) for l0, l1 in zip(lo, hi)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"))
    coarse, present = relabel_consecutive(power_diagram_grid(grid, seeds, weights, block=4))
    seeds, weights = seeds[present], weights[present]
    n = len(present)

    q = random_quaternions(n, rng)
    plan = random_neighbour_assignment(n, face_pairs(coarse), rng, [pc.low_angle_fraction])
    for c, nb, _ in plan:
        q[c] = quat_multiply(q[nb], axis_angle_to_quat(rng.standard_normal(3), rng.uniform(*pc.low_angle_angle)))
    q = _round_quats(q)
    rot = quat_to_matrix(q)
    origins = lo + rng.random((n, 3)) * a

    positions, domain, records = [], [], []
    derived = {c: nb for c, nb, _ in plan}
    boxes = ndimage.find_objects(coarse + 1)
    cell_boxes = []
    for c in range(n):
        sl = boxes[c]
        b_lo = np.maximum(lo, [axes[i][s.start] - h for i, s in enumerate(sl)])
        b_hi = np.minimum(hi, [axes[i][s.stop - 1] + h for i, s in enumerate(sl)])
        cell_boxes.append((b_lo, b_hi))
        pts = _lattice_sites(rot[c], origins[c], a, basis, b_lo, b_hi)
        pts = pts[power_diagram(pts, seeds, weights) == c]
        positions.append(pts)
        domain.append(np.full(len(pts), c + 1, dtype=np.int32))
        nb = derived.get(c)
        records.append(_domain_record(c + 1, cfg, q[c], "low_angle" if nb is not None else "random",
                                      None if nb is None else nb + 1, None if nb is None else q[nb], len(pts)))

    # Σ3 twin slabs. The twin is the parent rotated 60° about a crystal <111> through a parent lattice
    # point p; the rotation maps every third {111} plane through lattice points (heights 3 m d from p)
    # onto itself, and swaps the other two stackings (ABC -> ACB). Cutting the slab half-way across the
    # gap beside such a shared plane makes both faces coherent mirror planes: for diamond that gap is
    # the single bond along <111> from the lattice-point atom to its partner, which is on +<111> when
    # the axis has an even number of minus signs and on -<111> otherwise; for fcc and sc any cut
    # between the shared plane and its neighbour is coherent, and the same rule is used. The slab is
    # therefore 3 k planes thick.
    d111 = LAYER_111[cfg.lattice] * a
    twin_q = []
    for c in np.flatnonzero(rng.random(n) < pc.twin_fraction):
        pts = positions[c]
        if len(pts) < 50:
            continue
        axis_c = rng.choice([-1.0, 1.0], 3)
        normal = rot[c] @ axis_c / np.sqrt(3)
        p = origins[c] + a * rot[c] @ np.round(rot[c].T @ (pts.mean(0) - origins[c]) / a)
        k = max(1, int(round(rng.uniform(*pc.twin_width) * pc.grain_size / (3 * d111))))
        side = 1.0 if np.sum(axis_c < 0) % 2 == 0 else -1.0
        lo_h, hi_h = -3 * (k // 2) * d111 + side * 0.375 * d111, 3 * (k - k // 2) * d111 + side * 0.375 * d111
        height = (pts - p) @ normal
        inside = (height > lo_h) & (height < hi_h)
        if not 0.1 <= inside.mean() <= 0.6:
            continue  # a slab that misses the grain or swallows it is not a twin slab
        qt = _round_quats(quat_multiply(q[c], axis_angle_to_quat(axis_c, 60.0)))
        tw = _lattice_sites(quat_to_matrix(qt), p, a, basis, *cell_boxes[c])
        th = (tw - p) @ normal
        tw = tw[(th > lo_h) & (th < hi_h)]
        tw = tw[power_diagram(tw, seeds, weights) == c]
        tid = n + 1 + len(twin_q)
        positions[c] = pts[~inside]
        domain[c] = domain[c][~inside]
        positions.append(tw)
        domain.append(np.full(len(tw), tid, dtype=np.int32))
        twin_q.append(qt)
        records.append(_domain_record(tid, cfg, qt, "twin", c + 1, q[c], len(tw),
                                      twin_axis_crystal=[int(v) for v in axis_c], twin_layers=3 * k))
    quats = np.concatenate([np.full((1, 4), np.nan), q, np.array(twin_q).reshape(-1, 4)])
    positions, domain = np.concatenate(positions), np.concatenate(domain)
    keep = _thin_close_pairs(positions, cfg.min_distance * NEAREST_NEIGHBOUR[cfg.lattice] * a, rng)
    positions, domain = positions[keep], domain[keep]
    counts = np.bincount(domain, minlength=len(quats))
    for rec in records:
        rec["n_atoms"] = int(counts[rec["id"]])
    records.sort(key=lambda r: r["id"])
    numbers = np.full(len(positions), _atomic_number(cfg.element))
    return AtomStructure(positions, numbers, domain, quats, records)


def _atomic_number(symbol: str) -> int:
    from ase.data import atomic_numbers

    return atomic_numbers[symbol]


# ------------------------------------------------------------------------------------------ particles


def _cluster_of_size(shape: str, element: str, a: float, diameter: float):
    """The ase.cluster particle of ``shape`` whose largest diameter is closest to ``diameter`` Å."""
    from ase.cluster import Decahedron, Icosahedron, Octahedron

    build = {
        "cuboctahedron": lambda k: Octahedron(element, 2 * k + 1, k, latticeconstant=a),
        "truncated_octahedron": lambda k: Octahedron(element, 3 * k + 1, k, latticeconstant=a),
        "octahedron": lambda k: Octahedron(element, k + 1, 0, latticeconstant=a),
        "decahedron": lambda k: Decahedron(element, k, k, 0, latticeconstant=a),
        "icosahedron": lambda k: Icosahedron(element, k + 1, latticeconstant=a),
    }[shape]
    best = None
    for k in range(1, 60):
        pos = build(k).positions
        pos = pos - pos.mean(0)
        d = 2 * np.linalg.norm(pos, axis=1).max()
        if best is None or abs(d - diameter) < best[0]:
            best = (abs(d - diameter), pos)
        if d >= diameter:
            break
    return best[1]


def _decahedron_domains(pos):
    """Five twin domains of an ase Decahedron (5-fold axis z): sector index and crystal -> particle rotation.

    ase places the twin planes at azimuths ``90° + 72° j``; sector ``j`` lies between planes ``j`` and
    ``j + 1`` and is an fcc tetrahedron with its <110> edge on the axis and its opposite <110> edge on
    the rim, so crystal [1-10] ∥ z and crystal [001] ∥ the sector's bisector. The five sectors span
    360° instead of 5 × 70.53°: the lattice is strained, and this is its average orientation (adjacent
    domains 72° about their common <110>, 60.02° from each other, 1.5° from the exact Σ3).
    Atoms on a twin plane belong to both neighbours and are given to the sector that starts there.
    """
    phi = np.degrees(np.arctan2(pos[:, 1], pos[:, 0]))
    sector = np.floor(np.mod(phi - 90.0, 360.0) / 72.0 + 1e-6).astype(int) % 5
    sector[np.hypot(pos[:, 0], pos[:, 1]) < 1e-6] = 0  # atoms on the axis: any one domain
    u = np.array([1.0, -1.0, 0.0]) / np.sqrt(2)
    e3 = np.array([0.0, 0.0, 1.0])
    crystal = np.stack([u, e3, np.cross(u, e3)], -1)
    rots = []
    for j in range(5):
        b = np.radians(90.0 + 72.0 * j + 36.0)
        bis = np.array([np.cos(b), np.sin(b), 0.0])
        rots.append(np.stack([e3, bis, np.cross(e3, bis)], -1) @ crystal.T)
    return sector, np.array(rots)


def _kabsch(src, dst):
    """Proper rotation R minimising sum |R src_i - dst_i|² (rows are vectors); returns (R, rms)."""
    u, _, vt = np.linalg.svd(dst.T @ src)
    d = np.sign(np.linalg.det(u @ vt))
    rot = u @ np.diag([1.0, 1.0, d]) @ vt
    return rot, float(np.sqrt(np.mean(np.sum((src @ rot.T - dst) ** 2, axis=1))))


def _icosahedron_domains(pos):
    """Twenty twin domains of an ase Icosahedron: face index per atom and crystal -> particle rotations.

    Each domain is an fcc tetrahedron with its apex at the centre and a {111} face on the surface: its
    three edges from the centre are <110> directions (60° apart in the unstrained crystal, 63.4° in the
    icosahedron), fitted to the three vertex directions of its face (the best of the orderings).
    """
    r = np.linalg.norm(pos, axis=1)
    vertices = pos[np.argsort(r)[-12:]]
    faces = ConvexHull(vertices).simplices
    vdir = vertices / np.linalg.norm(vertices, axis=1, keepdims=True)
    centroids = vdir[faces].mean(1)
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    unit = pos / np.maximum(r, 1e-9)[:, None]
    # Atoms on a twin plane are equally close to two faces: rounding makes the tie exact, so argmax
    # gives them to the lower-numbered face every time (not to whichever float noise favours).
    face = np.argmax(np.round(unit @ centroids.T, 9), axis=1)
    edges = np.array([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 1.0]]) / np.sqrt(2)
    rots = []
    for f in faces:
        fits = [_kabsch(edges, vdir[list(perm)]) for perm in itertools.permutations(f)]
        rots.append(min(fits, key=lambda t: t[1])[0])
    # Parents: a breadth-first tree over faces that share an edge (two vertices), from face 0, so
    # every domain but the first records the twin boundary to one neighbour.
    parents = [None] * len(faces)
    seen, queue = {0}, [0]
    while queue:
        i = queue.pop(0)
        for g in range(len(faces)):
            if g not in seen and len(set(faces[g]) & set(faces[i])) == 2:
                parents[g] = i
                seen.add(g)
                queue.append(g)
    return face, np.array(rots), parents


def _amorphous_slab(lo, hi, density, rng):
    """Uniformly random atoms at ``density`` per Å³ with a hard core (no two closer than 0.6 ρ^-1/3):
    no lattice and no periodicity, as an amorphous support film."""
    volume = float(np.prod(hi - lo))
    n = int(round(density * volume))
    pts = lo + rng.random((int(1.5 * n) + 1, 3)) * (hi - lo)
    pts = pts[_thin_close_pairs(pts, 0.6 * density ** (-1 / 3), rng)]
    if len(pts) > n:
        pts = pts[rng.choice(len(pts), n, replace=False)]
    return pts


def build_particle(cfg: Atoms3DConfig, rng: np.random.Generator) -> AtomStructure:
    """An fcc nanoparticle (single crystal, decahedron or icosahedron) freely rotated in vacuum, centred
    in the volume (random sub-lattice offset), optionally on an amorphous support slab below it."""
    ps = cfg.particle
    a = cfg.a
    pos = _cluster_of_size(ps.shape, cfg.element, a, ps.diameter)
    if ps.shape == "decahedron":
        dom, rots = _decahedron_domains(pos)
        parents = [None] + list(range(4))
        relation = "decahedral_twin"
    elif ps.shape == "icosahedron":
        dom, rots, parents = _icosahedron_domains(pos)
        relation = "icosahedral_twin"
    else:
        dom, rots, parents, relation = np.zeros(len(pos), dtype=int), np.eye(3)[None], [None], "single_crystal"
    q_particle = quat_normalize(np.asarray(ps.orientation, dtype=np.float64)) if ps.orientation is not None else random_quaternions(1, rng)[0]
    rp = quat_to_matrix(q_particle)
    lo, hi = _box(cfg)
    centre = (np.array(cfg.size[::-1], dtype=np.float64) - 1) * cfg.voxel_size / 2 + rng.uniform(-0.5, 0.5, 3) * a
    positions = pos @ rp.T + centre
    q = _round_quats(matrix_to_quat(rp @ rots))
    records = []
    for j in range(len(q)):
        par = parents[j]
        records.append(_domain_record(j + 1, cfg, q[j], relation, None if par is None else par + 1, None if par is None else q[par],
                                      int(np.sum(dom == j))))
    numbers = np.full(len(positions), _atomic_number(cfg.element))
    domain = (dom + 1).astype(np.int32)
    if ps.substrate:
        top = positions[:, 2].min() - 2.0
        s_lo = np.array([lo[0], lo[1], max(lo[2], top - ps.substrate_thickness)])
        s_hi = np.array([hi[0], hi[1], top])
        if s_hi[2] > s_lo[2]:
            film = _amorphous_slab(s_lo, s_hi, ps.substrate_density, rng)
            positions = np.concatenate([positions, film])
            numbers = np.concatenate([numbers, np.full(len(film), _atomic_number(ps.substrate_element))])
            domain = np.concatenate([domain, np.zeros(len(film), dtype=np.int32)])
            keep = _thin_close_pairs(positions, cfg.min_distance * NEAREST_NEIGHBOUR["fcc"] * a, rng, protected=domain > 0)
            positions, numbers, domain = positions[keep], numbers[keep], domain[keep]
    quats = np.concatenate([np.full((1, 4), np.nan), q])
    return AtomStructure(positions, numbers, domain, quats, records)


# ------------------------------------------------------------------------------------------ imaging


def _grains_from_domains(cells, quats, threshold_deg):
    """Grain ids by the grain rule over touching domains (docs/design.md §3), 0 kept for vacuum."""
    pairs = face_pairs(cells)
    mis = misorientation_cubic(quats[pairs[:, 0]], quats[pairs[:, 1]])
    mis = np.where(np.isnan(mis), 180.0, mis)  # vacuum (domain 0) never joins a grain
    grains = np.where(cells == 0, 0, apply_grain_rule(cells, pairs, mis, threshold_deg)).astype(np.int64)
    lut = np.zeros(int(grains.max()) + 1, dtype=np.uint32)
    present = np.flatnonzero(np.bincount(grains.ravel()))
    present = present[present > 0]
    lut[present] = np.arange(1, len(present) + 1, dtype=np.uint32)
    return lut[grains]


def render_structure(structure: AtomStructure, cfg: Atoms3DConfig, rng: np.random.Generator, threshold_deg: float = 5.0) -> SynthSample:
    """Image atoms as an atomic-electron-tomography reconstruction and label every voxel from the atoms.

    Returns
    -------
    SynthSample
        ``image`` the reconstruction (``cfg.dtype``); ``cells`` int32 domain id of the nearest atom (0 =
        vacuum or amorphous: the vacuum mask is ``cells == 0``); ``grains`` uint32 by the grain rule over
        domains, 0 on vacuum; ``orientation`` (4, z, y, x) float32, the domain's quaternion, NaN on 0;
        ``boundary`` True on both sides of a change of grain and on every voxel outside a grain
        (``find_boundaries(grains, "grains")``, what 3D training uses); ``clean`` the noise-free blobs.
    """
    if len(structure.positions) == 0:
        raise MicroSymError("no atoms to render")
    im = cfg.imaging
    shape = tuple(cfg.size)
    positions = structure.positions + rng.normal(0.0, im.jitter, structure.positions.shape)
    weights = (structure.numbers / structure.numbers.max()) ** im.z_exponent
    sigma = (im.atom_sigma, im.atom_sigma, im.atom_sigma * im.elongation)
    clean = splat_atoms(positions, weights, shape, cfg.voxel_size, sigma)
    # The missing wedge, noise and slow gradient of the analytic renderer; resolution is the blob width.
    recon = apply_imaging_3d(clean, Imaging3D(psf_sigma=0.0, elongation=1.0, tilt_range=im.tilt_range, noise=im.noise,
                                              background_variation=im.background_variation), rng)
    recon += np.float32(im.background / 2) * (1 + smooth_field(shape, rng))
    volume = _to_dtype(recon, cfg.dtype)

    reach = (1.1 * COVERING_RADIUS[cfg.lattice] * cfg.a) + 2 * im.jitter
    cells = nearest_atom_labels(positions, structure.domain, shape, cfg.voxel_size, reach)
    quats = structure.quaternions
    grains = _grains_from_domains(cells, quats, threshold_deg)
    orientation = np.moveaxis(quats.astype(np.float32)[cells], -1, 0).copy()
    boundary = find_boundaries(grains, mode="grains")
    present = np.bincount(cells.ravel(), minlength=len(quats))
    domains = [{**rec, "n_voxels": int(present[rec["id"]])} for rec in structure.domains]
    info = {
        "kind": cfg.kind,
        "lattice": "cubic",
        "structure": cfg.lattice,
        "element": cfg.element,
        "lattice_constant": cfg.a,
        "voxel_size_angstrom": cfg.voxel_size,
        "pixel_size": cfg.pixel_size,
        "n_atoms": len(positions),
        "n_grains": int(grains.max()),
        "n_cells": int(np.count_nonzero(present[1:])),
        "n_twins": sum(1 for r in domains if r["sigma3"] and r["n_voxels"]),
        "n_low_angle": sum(1 for r in domains if r["relation"] == "low_angle" and r["n_voxels"]),
        "vacuum_fraction": float(np.mean(cells == 0)),
        "domains": domains,
    }
    return SynthSample(volume, grains, boundary, orientation, cells, clean, info)


def synth_atoms3d(config: Atoms3DConfig | None = None, seed=0) -> SynthSample:
    """One atomistic 3D volume with its truth: a deterministic function of (config, seed).

    Returns
    -------
    SynthSample (see :func:`render_structure`); ``info["domains"]`` holds the per-domain metadata.
    """
    cfg = config or Atoms3DConfig()
    rng = np.random.default_rng(seed)
    variant = None
    if cfg.variants:
        variant = int(rng.integers(len(cfg.variants)))
        cfg = cfg.variant(variant)
    cfg = cfg.with_drawn_imaging(rng).at_first_ring_voxels()
    build = build_polycrystal if cfg.kind == "polycrystal" else build_particle
    structure = build(cfg, rng)
    sample = render_structure(structure, cfg, rng, cfg.polycrystal.threshold_deg)
    if variant is not None:
        sample.info["variant"] = variant
    if cfg.imaging_ranges:
        sample.info["imaging"] = cfg.imaging.model_dump()
    return sample

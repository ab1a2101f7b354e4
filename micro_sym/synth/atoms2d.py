"""Atomistic 2D micrographs (HAADF-STEM and HRTEM) whose ground truth comes from the atoms.

The analytic renderer (:mod:`micro_sym.synth.lattice2d`) draws one 2D lattice per grain; a network
trained on it alone fails on micrographs of real specimens. Here the specimen is a set of atoms and the
image comes from a physical model of the microscope (docs/design.md §6.5):

- **Film**: a polycrystalline film of an fcc, bcc, diamond-cubic or simple-cubic crystal
  (``ase.build.bulk``) with columnar grains (2D power cells through the thickness), or a polycrystalline
  monolayer of a 2D crystal (graphene, 2H-MoS2: :func:`two_d_layer`), whose grains lie flat (a hexagonal
  projection, whatever ``zone`` says) and are only ever crystal, amorphous or vacuum cells. Each grain is
  the crystal with its zone axis (``[001]``: a square projection; ``[111]``: a hexagonal one) along the
  beam, a small random tilt off that axis and a random rotation about it; a fraction of neighbours
  differ by a low-angle in-plane rotation. Optional cells: fringe grains (tilted about the normal of
  one first-ring plane set, which stays edge-on: one set of lattice fringes, as most grains of a real
  film show), far off the zone axis (atoms, but no lattice planes edge-on), amorphous (random atoms),
  or vacuum (empty); an amorphous carbon support may lie under everything.
- **HAADF-STEM** (:func:`image_haadf`): incoherent Z-contrast, every atom weighted ``Z ** z_exponent``,
  projected and convolved with a Gaussian probe, sampled at the scan positions (jitter, drift, shear
  of the raster), Poisson counts at the dose and Gaussian read noise.
- **HRTEM** (:func:`image_hrtem`): abTEM multislice of a plane wave through the atoms, a contrast
  transfer function (defocus, spherical aberration Cs, focal spread, objective aperture), integration
  over the detector pixel, Poisson counts at the dose.

Truth per pixel: the cell under the pixel's specimen position (the grains are columnar, so the cell
is the same at every depth). A crystal cell on the zone axis and a fringe cell are grains; vacuum,
amorphous and off-zone cells are 0 (no grain). The orientation is the in-plane angle of the projected
lattice's first basis vector (docs/design.md §1.2), computed from the grain's rotation (a fringe cell's
tilt axis is one of its lattice's first-ring plane normals, so its fringes keep that angle modulo
360°/k). A film whose every grain is a fringe cell (``film.fringe_fraction`` takes all the crystal) is
a fringes dataset: its truth is the fringes' plane normal modulo 180° (k = 2). Cells touching within
the grain rule's threshold are one grain (§3).

Frames (§1.1): physical ``(x, y, z)`` in Å with z along the beam; pixel ``(row, col)`` samples
``x = col * pixel_size``, ``y = -row * pixel_size`` (y up on screen).

>>> from micro_sym.synth.atoms2d import Atoms2DConfig, synth_atoms2d
>>> s = synth_atoms2d(Atoms2DConfig(size=(96, 96)), seed=0)
>>> s.image.shape, s.image.dtype, s.info["k"]
((96, 96), dtype('uint16'), 4)
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator
from scipy import ndimage
from scipy.spatial import cKDTree

from micro_sym.errors import MicroSymError
from micro_sym.orientation import misorientation_2d, wrap_angle
from micro_sym.synth.atoms3d import (NEAREST_NEIGHBOUR, _amorphous_slab, _atomic_number, _lattice_sites, _thin_close_pairs,
                                     _unit_cell)
from micro_sym.synth.config import _Model
from micro_sym.synth.material import TWO_D_CRYSTALS, MaterialConfig, check_element, load_material_config
from micro_sym.synth.imaging import scan_positions
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

#: Crystal directions (x, y, beam z) of the zone-axis frame, as rows; the beam is along the last.
ZONE_FRAMES = {
    "001": np.array([[1.0, 0, 0], [0, 1, 0], [0, 0, 1]]),
    "111": np.array([[1.0, -1, 0] / np.sqrt(2), [1.0, 1, -2] / np.sqrt(6), [1.0, 1, 1] / np.sqrt(3)]),
}
#: Cell kinds (what a cell of the film is made of). FRINGE comes last so that configs without fringe
#: cells draw the same kinds as before it existed.
CRYSTAL, OFF_ZONE, AMORPHOUS, VACUUM, FRINGE = 0, 1, 2, 3, 4
#: Planes down to this fraction of the projected lattice's period can show fringes (off-zone and fringe
#: cells are drawn so that none of them, or only the chosen one, is edge-on).
RESOLVED_SPACING = 0.7
#: Draws of a tilt before the last one is kept as it is.
TILT_TRIES = 200
#: 2D crystals: the shortest interatomic distance / lattice constant (graphene C-C a/√3; MoS2 Mo-S 2.41 Å
#: at a = 3.16 Å), below which atoms of two grains meeting at a boundary are thinned.
NEAREST_NEIGHBOUR_2D = {"graphene": 1 / np.sqrt(3), "mos2": 0.763}


# ------------------------------------------------------------------------------------------ config


def _ordered(v):
    if v[0] < 0 or v[1] < v[0]:
        raise ValueError(f"need 0 <= min <= max, got {tuple(v)}")
    return v


class FilmSpec(_Model):
    """The polycrystalline film and what its cells are made of."""

    grain_size: float = Field(60.0, gt=4, description="mean equivalent-circle diameter of the columnar grains, Å")
    size_spread: float = Field(0.35, ge=0, le=1.5, description="log-normal sigma of the cell radii")
    relax_iterations: int = Field(2, ge=0, le=10, description="centroidal (Lloyd) steps: equiaxed grains")
    thickness: tuple[float, float] = Field((20.0, 40.0), description="film thickness range, Å (one value drawn per image)")
    max_tilt: float = Field(1.0, ge=0, le=5, description="on-zone grains are tilted up to this far off the zone axis, degrees")
    low_angle_fraction: float = Field(0.15, ge=0, le=1, description="fraction of grains rotated a few degrees (in plane) from a neighbour")
    low_angle_angle: tuple[float, float] = Field((6.0, 14.0), description="low-angle in-plane rotation range, degrees")
    fringe_fraction: float = Field(0.0, ge=0, le=1, description="fraction of cells tilted about one plane normal: one set of fringes (a grain)")
    fringe_tilt: tuple[float, float] = Field((10.0, 25.0), description="tilt range of fringe cells, degrees")
    off_zone_fraction: float = Field(0.0, ge=0, le=1, description="fraction of cells tilted far off the zone axis, no plane set edge-on (truth 0)")
    off_zone_tilt: tuple[float, float] = Field((15.0, 40.0), description="tilt range of off-zone cells, degrees")
    amorphous_fraction: float = Field(0.0, ge=0, le=1, description="fraction of cells filled with amorphous atoms instead (truth 0)")
    vacuum_fraction: float = Field(0.0, ge=0, le=1, description="fraction of cells left empty (truth 0)")
    amorphous_element: str = "C"
    amorphous_density: float = Field(0.1, gt=0, le=0.2, description="atoms per Å³ (amorphous carbon: about 0.1)")
    support_thickness: float = Field(0.0, ge=0, description="amorphous support under the whole film, Å (0 = none)")
    particle_thickness: tuple[float, float] | None = Field(
        None, description="crystal cells as particles: each its own thickness from this range (Å), thinning to "
                          "nothing over the outer half of its radius (mass-thickness contrast under the lattice); "
                          "None: a flat film")
    threshold_deg: float = Field(5.0, gt=0, description="grain rule (docs/design.md §3): touching grains closer than this are one grain")

    @field_validator("thickness", "low_angle_angle", "off_zone_tilt", "fringe_tilt", "particle_thickness")
    @classmethod
    def _ranges(cls, v):
        return v if v is None else _ordered(v)

    @model_validator(mode="after")
    def _fractions(self):
        no_grain = self.off_zone_fraction + self.amorphous_fraction + self.vacuum_fraction
        if no_grain > 0.8:
            raise ValueError("off_zone_fraction + amorphous_fraction + vacuum_fraction must leave at least 20 % of the cells grains")
        if no_grain + self.fringe_fraction > 1 + 1e-9:
            raise ValueError("off_zone_fraction + amorphous_fraction + vacuum_fraction + fringe_fraction must not exceed 1")
        return self

    @property
    def fringes_only(self) -> bool:
        """Every grain is a fringe cell (no cell on the zone axis): the image is one set of lattice
        fringes per grain, and its truth is the fringes' plane normal modulo 180° (k = 2)."""
        return self.fringe_fraction > 0 and (self.off_zone_fraction + self.amorphous_fraction + self.vacuum_fraction
                                             + self.fringe_fraction) > 1 - 1e-9


class HAADFImaging(_Model):
    """HAADF-STEM: incoherent Z-contrast with a Gaussian probe, a raster scan, counting noise."""

    probe_fwhm: tuple[float, float] = Field((0.8, 1.2), description="probe full width at half maximum range, Å")
    probe_tail: tuple[float, float] = Field((0.0, 0.0), description="fraction of the probe's intensity in a wide tail "
                                                                  "(aberrations, beam spreading in thick specimens): "
                                                                  "lowers the lattice contrast, keeps the mass-thickness contrast")
    probe_tail_fwhm: float = Field(6.0, gt=0, description="full width at half maximum of the probe's tail, Å")
    z_exponent: float = Field(1.7, ge=1, le=2, description="column intensity ∝ Z ** z_exponent")
    thermal: float = Field(0.08, ge=0, le=0.3, description="rms static displacement of each atom per axis, Å")
    dose: tuple[float, float] = Field((20.0, 200.0), description="mean counts per pixel range (log-uniform)")
    background: float = Field(0.1, ge=0, description="detector offset and diffuse scattering, relative to the mean signal")
    read_noise: float = Field(1.0, ge=0, description="Gaussian read noise, counts")
    jitter: float = Field(0.3, ge=0, description="row-wise scan jitter, pixels (rms x offset of each scan line)")
    drift: float = Field(1.0, ge=0, description="slow scan drift over the image height, pixels")
    shear: float = Field(0.0, ge=-0.05, le=0.05, description="linear scan shear (x offset per row)")

    @field_validator("probe_fwhm", "dose")
    @classmethod
    def _ranges(cls, v):
        return _ordered(v)

    @field_validator("probe_tail")
    @classmethod
    def _fractions(cls, v):
        if v[1] > 1:
            raise ValueError(f"need fractions of at most 1, got {tuple(v)}")
        return _ordered(v)


class HRTEMImaging(_Model):
    """HRTEM: plane-wave multislice (abTEM), a contrast transfer function, a counting detector."""

    energy_kv: float = Field(300.0, ge=60, le=300)
    defocus: tuple[float, float] = Field((-100.0, 100.0), description="defocus range, Å (abTEM sign: positive = underfocus)")
    cs_um: tuple[float, float] = Field((-20.0, 20.0), description="spherical aberration range, µm (aberration-corrected)")
    focal_spread: float = Field(30.0, ge=0, description="focal spread (temporal partial coherence), Å")
    aperture_mrad: float = Field(30.0, gt=0, description="objective aperture semi-angle, mrad")
    sampling: float = Field(0.12, ge=0.03, le=0.2, description="multislice grid spacing, Å")
    slice_thickness: float = Field(2.0, gt=0, description="multislice slice thickness, Å")
    thermal: float = Field(0.08, ge=0, le=0.3, description="rms static displacement of each atom per axis, Å")
    dose: tuple[float, float] = Field((20.0, 200.0), description="mean counts per pixel range (log-uniform)")
    mtf_sigma: float = Field(0.5, ge=0, description="detector point spread (Gaussian sigma), pixels")

    @field_validator("defocus", "cs_um", "dose")
    @classmethod
    def _ranges(cls, v):
        if v[1] < v[0]:
            raise ValueError(f"need min <= max, got {tuple(v)}")
        return v


class Atoms2DConfig(MaterialConfig):
    """Everything that defines an atomistic micrograph except the seed."""

    FIXED: ClassVar[frozenset] = frozenset({"size", "pixel_size_angstrom", "zone", "mode", "variants"})

    mode: Literal["haadf", "hrtem"] = "haadf"
    zone: Literal["001", "111"] = Field("001", description="zone axis along the beam: 001 gives a square projection, 111 a hexagonal one")
    size: tuple[int, int] = Field((256, 256), description="(rows, columns) pixels")
    pixel_size_angstrom: float = Field(0.25, ge=0.02, le=2.0, description="Å per pixel (the same for every image of a dataset)")
    film: FilmSpec = FilmSpec()
    haadf: HAADFImaging = HAADFImaging()
    hrtem: HRTEMImaging = HRTEMImaging()

    @field_validator("size")
    @classmethod
    def _size(cls, v):
        if min(v) < 32 or max(v) > 4096:
            raise ValueError(f"each side must be between 32 and 4096 pixels, got {tuple(v)}")
        return v

    @model_validator(mode="after")
    def _consistent(self):
        check_element(self.film.amorphous_element, "film.amorphous_element: ")
        if self.lattice in TWO_D_CRYSTALS:
            f = self.film
            if f.fringe_fraction or f.off_zone_fraction or f.particle_thickness is not None:
                raise ValueError(f"{self.lattice} is one flat layer: film.fringe_fraction and film.off_zone_fraction "
                                 f"must be 0 and film.particle_thickness unset")
        for i in range(len(self.variants)):
            family = self.variant(i).dataset_lattice
            if family != self.dataset_lattice:
                raise ValueError(f"variants[{i}]: projects to a {family} lattice, the dataset's other samples to a "
                                 f"{self.dataset_lattice} one (2D crystals and [111] are hexagonal; a film whose every grain "
                                 f"shows fringes is fringes)")
        return self

    @property
    def dataset_lattice(self) -> str:
        """What dataset.json records: the projected lattice family (square for [001], hexagonal for [111]
        and for 2D crystals), or fringes where every grain is a fringe cell."""
        if self.film.fringes_only:
            return "fringes"
        return "hexagonal" if self.zone == "111" or self.lattice in TWO_D_CRYSTALS else "square"

    unit: ClassVar[str] = "nm"

    @property
    def pixel_size(self) -> float:
        """The pixel size in :attr:`unit` (nm)."""
        return self.pixel_size_angstrom / 10.0


def load_atoms2d_config(path=None, **overrides) -> Atoms2DConfig:
    """An :class:`Atoms2DConfig` from an optional YAML file (a path or a bundled name such as
    ``synth-atoms2d-heldout``) plus top-level overrides; errors as one line (:func:`~.material.load_material_config`)."""
    return load_material_config(Atoms2DConfig, path, **overrides)


# --------------------------------------------------------------------------------- projected lattice


@functools.lru_cache(maxsize=32)
def projected_lattice(lattice: str, element: str, a: float, zone: str) -> tuple[int, float, float]:
    """``(k, period, angle)`` of the crystal's projection along the zone axis, in the zone frame.

    The projected atom columns are invariant under a 2D lattice of translations; its shortest vector
    has length ``period`` (Å) and direction ``angle`` (degrees from the frame's x), and the lattice is
    square (k = 4) or hexagonal (k = 6). Found numerically from a block of the crystal, so every
    structure (diamond's [001] columns at a√2/4, bcc's at a/√2, ...) comes out right without a table.
    """
    from ase.build import bulk

    basis = bulk(element, lattice, a=a, cubic=True).get_scaled_positions(wrap=True)
    n = np.arange(-6, 7)
    cells = np.stack(np.meshgrid(n, n, n, indexing="ij"), -1).reshape(-1, 3)
    xy = (a * (cells[:, None, :] + basis[None]).reshape(-1, 3) @ ZONE_FRAMES[zone].T)[:, :2]
    tol = 1e-3 * a
    cols = xy[np.unique(np.round(xy / tol).astype(np.int64), axis=0, return_index=True)[1]]
    tree = cKDTree(cols)
    r = np.linalg.norm(cols, axis=1)
    centre = cols[r < 1.5 * a]
    cand = cols[(r > tol) & (r < 2 * a)]
    cand = cand[np.argsort(np.linalg.norm(cand, axis=1), kind="stable")]

    def is_translation(t):
        return bool(np.all(tree.query(centre + t)[0] < tol))

    vecs = [t for t in cand if is_translation(t)]
    a1 = vecs[0]
    a2 = next(t for t in vecs if abs(a1[0] * t[1] - a1[1] * t[0]) > 1e-6 * a * a)
    ratio = np.linalg.norm(a2) / np.linalg.norm(a1)
    cos = abs(a1 @ a2) / (np.linalg.norm(a1) * np.linalg.norm(a2))
    if abs(ratio - 1) < 1e-3 and cos < 1e-3:
        k = 4
    elif abs(ratio - 1) < 1e-3 and abs(cos - 0.5) < 1e-3:
        k = 6
    else:
        raise MicroSymError(f"{lattice} along [{zone}] does not project to a square or hexagonal lattice")
    return k, float(np.linalg.norm(a1)), float(np.degrees(np.arctan2(a1[1], a1[0])))


@functools.lru_cache(maxsize=8)
def two_d_layer(lattice: str, a: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(cell, positions, numbers)`` of a 2D crystal's unit cell: in-plane lattice vectors as rows
    ``(2, 3)`` Å (the first along x), the atoms ``(n, 3)`` Å (lowest at z = 0) and their atomic numbers.

    Graphene (``ase.build.graphene``: a honeycomb of C) and 2H-MoS2 (``ase.build.mx2``: Mo between two
    S layers 3.19 Å apart, the S pairs on one sublattice): both hexagonal, k = 6, period ``a``.
    """
    from ase.build import graphene, mx2

    layer = (graphene(formula="C2", a=a, size=(1, 1, 1), vacuum=None) if lattice == "graphene"
             else mx2(formula="MoS2", kind="2H", a=a, thickness=3.19, size=(1, 1, 1), vacuum=None))
    pos = layer.positions - [0.0, 0.0, layer.positions[:, 2].min()]
    return np.asarray(layer.cell[:2], float), pos, np.asarray(layer.numbers)


def _layer_sites(rot, origin, cell, positions, numbers, lo, hi):
    """Atoms (positions, numbers) of the rotated layer ``origin + R (i a1 + j a2 + atom)`` in the box ``[lo, hi]``."""
    corners = np.array(list(itertools.product(*zip(lo[:2], hi[:2]))))
    # The box corners in the layer's cell coordinates (in plane: a tilt of a few degrees moves them by
    # far less than the one cell of margin).
    frac = (corners - origin[:2]) @ rot[:2, :2] @ np.linalg.inv(cell[:, :2])
    ranges = [np.arange(np.floor(f0) - 2, np.ceil(f1) + 2) for f0, f1 in zip(frac.min(0), frac.max(0))]
    ij = np.stack(np.meshgrid(*ranges, indexing="ij"), -1).reshape(-1, 2)
    pos = ((ij @ cell)[:, None, :] + positions[None]).reshape(-1, 3) @ rot.T + origin
    num = np.tile(numbers, len(ij))
    keep = np.all((pos[:, :2] >= lo[:2]) & (pos[:, :2] <= hi[:2]), axis=1)
    return pos[keep], num[keep]


def _rot_z(deg: float) -> np.ndarray:
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _tilt(deg: float, rng: np.random.Generator, axis_deg: float | None = None) -> np.ndarray:
    """A rotation by ``deg`` about the in-plane axis at ``axis_deg`` (random if None), Rodrigues."""
    phi = rng.uniform(0, 2 * np.pi) if axis_deg is None else np.radians(axis_deg)
    u = np.array([np.cos(phi), np.sin(phi), 0.0])
    k = np.array([[0, -u[2], u[1]], [u[2], 0, -u[0]], [-u[1], u[0], 0]])
    t = np.radians(deg)
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k


# --------------------------------------------------------------------------------------- structure


@dataclass
class FilmStructure:
    """Atoms of a film and the cells they came from.

    Attributes
    ----------
    positions : (N, 3) float64 physical ``(x, y, z)``, Å.
    numbers : (N,) int atomic numbers.
    seeds, weights : the power diagram of the cells (in x, y), for the per-pixel truth.
    kinds : (C,) int cell kind (:data:`CRYSTAL`, :data:`OFF_ZONE`, :data:`AMORPHOUS`, :data:`VACUUM`).
    angles : (C,) float64 in-plane angle of each crystal cell's projected lattice, degrees in
        ``[0, 360/k)`` (NaN for the other kinds).
    k : 4 or 6, the projected lattice's symmetry; 2 where every grain is a fringe cell (angles are then
        the fringes' plane normals).
    period : the projected lattice's period, Å.
    thickness : the film's thickness, Å.
    """

    positions: np.ndarray
    numbers: np.ndarray
    seeds: np.ndarray
    weights: np.ndarray
    kinds: np.ndarray
    angles: np.ndarray
    k: int
    period: float
    thickness: float


def _plane_normal_angle(k: int, angle0: float) -> float:
    """Direction (degrees, zone frame) of a first-ring plane normal of the projected lattice whose first
    basis vector points at ``angle0``: along it for a square lattice, 30° from it for a hexagonal one."""
    return angle0 + (0.0 if k == 4 else 30.0)


def lattice_planes(basis: np.ndarray, a: float, min_spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """Unit normals (crystal frame, one per ± pair) and spacings of the planes that diffract, i.e. whose
    kinematic structure factor over the cubic cell's ``basis`` is not zero, with spacing ≥ ``min_spacing``."""
    n = int(np.floor(a / min_spacing))
    hkl = np.stack(np.meshgrid(*[np.arange(-n, n + 1)] * 3, indexing="ij"), -1).reshape(-1, 3)
    length = np.linalg.norm(hkl, axis=1)
    keep = (length > 0) & (length <= a / min_spacing)
    hkl, length = hkl[keep], length[keep]
    diffracts = np.abs(np.exp(2j * np.pi * hkl @ basis.T).sum(1)) > 1e-6 * len(basis)
    hkl, length = hkl[diffracts], length[diffracts]
    primitive = hkl // np.gcd.reduce(np.abs(hkl), axis=1)[:, None]
    first_nonzero = primitive[np.arange(len(primitive)), np.argmax(primitive != 0, axis=1)]
    primitive *= np.sign(first_nonzero)[:, None]  # one sign per ± pair
    spacing = {}
    for p, d in zip(map(tuple, primitive), a / length):  # one normal per direction: its widest spacing
        spacing[p] = max(spacing.get(p, 0.0), d)
    normals = np.array(list(spacing), dtype=np.float64)
    return normals / np.linalg.norm(normals, axis=1, keepdims=True), np.array(list(spacing.values()))


def _tilted(zone: str, spin: float, tilt_range, axis_deg, planes, thickness, allowed: int, rng) -> np.ndarray:
    """A tilt (zone frame) by an angle in ``tilt_range`` about ``axis_deg`` (random if None) after which at
    most ``allowed`` plane sets show fringes (:func:`_edge_on`); after :data:`TILT_TRIES` draws the last."""
    for _ in range(TILT_TRIES):
        tilt = _tilt(rng.uniform(*tilt_range), rng, axis_deg)
        if _edge_on(_rot_z(spin) @ tilt @ ZONE_FRAMES[zone], *planes, thickness).sum() <= allowed:
            break
    return tilt


def _edge_on(rot: np.ndarray, normals: np.ndarray, spacings: np.ndarray, thickness: float) -> np.ndarray:
    """Which planes a crystal rotated by ``rot`` (crystal -> lab) shows as fringes: those whose normal is
    so close to the image plane that a column through the film's thickness drifts across less than one
    plane spacing (out-of-plane angle below atan(d / t))."""
    tilt = np.arcsin(np.clip(np.abs(normals @ rot.T[:, 2]), 0, 1))
    return tilt < np.arctan(spacings / thickness)


def _dome(cell: np.ndarray, step: float, origin, xy: np.ndarray) -> np.ndarray:
    """Relative height (0-1) of a particle filling ``cell`` (a mask on the coarse grid of spacing
    ``step`` from ``origin``) at positions ``xy``: 1 over the inner half of its radius, falling as the
    square root of the distance to its edge over the outer half (a rounded rim, as a faceted particle's
    projected thickness falls towards its edge)."""
    depth = ndimage.distance_transform_edt(np.pad(cell, 1))[1:-1, 1:-1] * step
    rim = max(0.5 * float(depth.max()), step)
    idx = np.clip(np.round((xy - origin) / step).astype(int), 0, np.array(cell.shape) - 1)
    return np.sqrt(np.clip(depth[idx[:, 0], idx[:, 1]] / rim, 0.0, 1.0))


def _field(cfg: Atoms2DConfig):
    """Physical ``(x, y)`` extent ``(lo, hi)`` of the atoms: the pixel centres plus a margin, so scan
    distortion and the probe's reach never see the edge of the specimen."""
    h, w = cfg.size
    px = cfg.pixel_size_angstrom
    margin = 4.0 + px * (cfg.haadf.drift + 4 * cfg.haadf.jitter + abs(cfg.haadf.shear) * h + 2)
    return np.array([-margin, -(h - 1) * px - margin]), np.array([(w - 1) * px + margin, margin])


def build_film(cfg: Atoms2DConfig, rng: np.random.Generator) -> FilmStructure:
    """Columnar grains of the rotated crystal filling the field, with the film's other cell kinds."""
    film = cfg.film
    a = cfg.a
    layer = two_d_layer(cfg.lattice, a) if cfg.lattice in TWO_D_CRYSTALS else None
    if layer is None:
        k, period, angle0 = projected_lattice(cfg.lattice, cfg.element, a, cfg.zone)
        basis = _unit_cell(cfg)
        planes = lattice_planes(basis, a, RESOLVED_SPACING * period)
        nearest = NEAREST_NEIGHBOUR[cfg.lattice] * a
    else:  # one flat layer: the lattice vector a1 along x
        k, period, angle0 = 6, a, 0.0
        nearest = NEAREST_NEIGHBOUR_2D[cfg.lattice] * a
    lo, hi = _field(cfg)
    thickness = rng.uniform(*film.thickness)
    seeds, weights = seed_cells(lo, hi, film.grain_size, film.size_spread, film.relax_iterations, rng)
    g = min(a, film.grain_size / 8)
    axes = [np.arange(l0, l1 + g, g) for l0, l1 in zip(lo, hi)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"))
    coarse, present = relabel_consecutive(power_diagram_grid(grid, seeds, weights, block=4))
    seeds, weights = seeds[present], weights[present]
    n = len(present)

    kinds = rng.choice(5, n, p=[1 - film.off_zone_fraction - film.amorphous_fraction - film.vacuum_fraction - film.fringe_fraction,
                                film.off_zone_fraction, film.amorphous_fraction, film.vacuum_fraction, film.fringe_fraction])
    spin = rng.uniform(0, 360, n)
    pairs = face_pairs(coarse)
    grain_kind = np.isin(kinds, (CRYSTAL, FRINGE))
    pairs = pairs[grain_kind[pairs[:, 0]] & grain_kind[pairs[:, 1]]]
    for c, nb, _ in random_neighbour_assignment(n, pairs, rng, [film.low_angle_fraction]):
        spin[c] = spin[nb] + rng.choice([-1, 1]) * rng.uniform(*film.low_angle_angle)

    a1_zone = period * np.array([np.cos(np.radians(angle0)), np.sin(np.radians(angle0)), 0.0])
    positions, numbers = [], []
    angles = np.full(n, np.nan)
    z_crystal = _atomic_number(cfg.element)
    boxes = ndimage.find_objects(coarse + 1)
    for c in range(n):
        sl = boxes[c]
        particle = film.particle_thickness is not None and kinds[c] in (CRYSTAL, FRINGE, OFF_ZONE)
        t_cell = rng.uniform(*film.particle_thickness) if particle else thickness
        b_lo = np.append(np.maximum(lo, [axes[i][s.start] - g for i, s in enumerate(sl)]), 0.0)
        b_hi = np.append(np.minimum(hi, [axes[i][s.stop - 1] + g for i, s in enumerate(sl)]), t_cell)
        if kinds[c] == VACUUM:
            continue
        if kinds[c] == AMORPHOUS:
            pts = _amorphous_slab(b_lo, b_hi, film.amorphous_density, rng)
            z = _atomic_number(film.amorphous_element)
        else:
            if kinds[c] == CRYSTAL:
                tilt = _tilt(rng.uniform(0, film.max_tilt), rng)
            elif kinds[c] == FRINGE:  # the normal along the tilt axis stays in plane: its planes stay edge-on
                tilt = _tilted(cfg.zone, spin[c], film.fringe_tilt, _plane_normal_angle(k, angle0), planes, t_cell, 1, rng)
            else:
                tilt = _tilted(cfg.zone, spin[c], film.off_zone_tilt, None, planes, t_cell, 0, rng)
            if layer is None:
                rot = _rot_z(spin[c]) @ tilt @ ZONE_FRAMES[cfg.zone]
                pts = _lattice_sites(rot, np.append(lo, 0.0) + rng.random(3) * a, a, basis, b_lo, b_hi)
                z = z_crystal
            else:
                origin = np.append(lo + rng.random(2) * a, 0.0)
                pts, z = _layer_sites(_rot_z(spin[c]) @ tilt, origin, *layer, b_lo, b_hi)
            if kinds[c] == FRINGE and film.fringes_only:  # the truth: the fringes' plane normal (k = 2)
                angles[c] = float(wrap_angle(spin[c] + _plane_normal_angle(k, angle0), 2))
            elif kinds[c] in (CRYSTAL, FRINGE):
                # The truth is the projected direction of the tilted crystal's own first lattice vector;
                # a fringe cell's is that of its untilted lattice, whose plane normal its fringes keep.
                v = _rot_z(spin[c]) @ (tilt if kinds[c] == CRYSTAL else np.eye(3)) @ a1_zone
                angles[c] = float(wrap_angle(np.degrees(np.arctan2(v[1], v[0])), k))
        z = np.broadcast_to(z, len(pts))
        inside = power_diagram(pts[:, :2], seeds, weights) == c
        pts, z = pts[inside], z[inside]
        if particle:
            below = pts[:, 2] <= t_cell * _dome(coarse == c, g, lo, pts[:, :2])
            pts, z = pts[below], z[below]
        positions.append(pts)
        numbers.append(z)
    positions = np.concatenate(positions) if positions else np.zeros((0, 3))
    numbers = np.concatenate(numbers) if numbers else np.zeros(0, dtype=int)
    keep = _thin_close_pairs(positions, 0.75 * nearest, rng)
    positions, numbers = positions[keep], numbers[keep]
    if film.support_thickness > 0:
        sup = _amorphous_slab(np.append(lo, -film.support_thickness), np.append(hi, 0.0), film.amorphous_density, rng)
        positions = np.concatenate([positions, sup])
        numbers = np.concatenate([numbers, np.full(len(sup), _atomic_number(film.amorphous_element))])
    return FilmStructure(positions, numbers, seeds, weights, kinds, angles, 2 if film.fringes_only else k, period, thickness)


# ----------------------------------------------------------------------------------------- imaging


def _log_uniform(lo: float, hi: float, rng: np.random.Generator) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _sample(field, origin, step, x, y, order=1):
    """Values of a grid ``field[iy, ix]`` (physical ``origin + step * (ix, iy)``) at physical ``(x, y)``."""
    coords = np.stack([(y - origin[1]) / step, (x - origin[0]) / step])
    return ndimage.map_coordinates(field, coords, order=order, mode="nearest")


def image_haadf(structure: FilmStructure, cfg: Atoms2DConfig, x, y, rng: np.random.Generator):
    """HAADF-STEM counts at the scan positions ``(x, y)`` (Å) and the drawn settings.

    Incoherent imaging: the specimen's projected Z-contrast (``Z ** z_exponent`` per atom, with a
    thermal displacement) convolved with a Gaussian probe, on a grid at most 0.1 Å fine.
    """
    im = cfg.haadf
    px = cfg.pixel_size_angstrom
    fwhm = rng.uniform(*im.probe_fwhm)
    dose = _log_uniform(*im.dose, rng)
    step = px / max(1, int(np.ceil(px / 0.1)))
    lo = np.array([x.min(), y.min()]) - 4 * fwhm
    shape = (int(np.ceil((y.max() + 4 * fwhm - lo[1]) / step)) + 1, int(np.ceil((x.max() + 4 * fwhm - lo[0]) / step)) + 1)
    pos = structure.positions[:, :2] + rng.normal(0.0, im.thermal, (len(structure.positions), 2))
    weights = structure.numbers.astype(np.float64) ** im.z_exponent
    # Bilinear deposit of every atom on the fine grid, then the probe.
    fx, fy = (pos[:, 0] - lo[0]) / step, (pos[:, 1] - lo[1]) / step
    ix, iy = np.floor(fx).astype(np.int64), np.floor(fy).astype(np.int64)
    tx, ty = fx - ix, fy - iy
    proj = np.zeros(shape[0] * shape[1])
    for dy, dx, w in ((0, 0, (1 - ty) * (1 - tx)), (0, 1, (1 - ty) * tx), (1, 0, ty * (1 - tx)), (1, 1, ty * tx)):
        r, c = iy + dy, ix + dx
        ok = (r >= 0) & (r < shape[0]) & (c >= 0) & (c < shape[1])
        proj += np.bincount(r[ok] * shape[1] + c[ok], weights=(weights * w)[ok], minlength=proj.size)
    to_sigma = 1 / (2 * np.sqrt(2 * np.log(2)))
    intensity = ndimage.gaussian_filter(proj.reshape(shape), fwhm * to_sigma / step, mode="constant", truncate=4.0)
    tail = rng.uniform(*im.probe_tail) if im.probe_tail[1] > 0 else 0.0  # no draw: older configs keep their images
    if tail > 0:
        wide = ndimage.gaussian_filter(intensity, im.probe_tail_fwhm * to_sigma / step, mode="constant", truncate=4.0)
        intensity = (1 - tail) * intensity + tail * wide
    signal = _sample(intensity, lo, step, x, y)
    mean = max(float(signal.mean()), 1e-12)
    expected = (signal / mean + im.background) * (dose / (1 + im.background))
    counts = rng.poisson(expected).astype(np.float32)
    if im.read_noise > 0:
        counts += rng.normal(0, im.read_noise, counts.shape).astype(np.float32)
    return counts, {"probe_fwhm_angstrom": fwhm, "probe_tail": tail, "dose": dose}


def image_hrtem(structure: FilmStructure, cfg: Atoms2DConfig, x, y, rng: np.random.Generator):
    """HRTEM counts at the pixel positions ``(x, y)`` (Å) and the drawn settings.

    abTEM multislice of a plane wave through the atoms (periodic cell = the atoms' field, which extends
    beyond the image by a margin, so the wrap-around never reaches it), the CTF with the drawn defocus
    and Cs, focal-spread envelope and objective aperture; the intensity is integrated over the detector
    pixel (a box the size of a pixel plus the detector's point spread) and counted at the dose.
    """
    import abtem
    from ase import Atoms

    im = cfg.hrtem
    px = cfg.pixel_size_angstrom
    defocus, cs_um = rng.uniform(*im.defocus), rng.uniform(*im.cs_um)
    dose = _log_uniform(*im.dose, rng)
    pos = structure.positions + rng.normal(0.0, im.thermal, structure.positions.shape)
    lo = pos.min(0) - [0.0, 0.0, 1.0]
    extent = pos.max(0) - lo + [0.0, 0.0, 1.0]
    atoms = Atoms(numbers=structure.numbers, positions=pos - lo, cell=extent, pbc=True)
    with abtem.config.set({"dask.lazy": False}):
        potential = abtem.Potential(atoms, sampling=im.sampling, slice_thickness=im.slice_thickness,
                                    projection="infinite", parametrization="lobato")
        wave = abtem.PlaneWave(energy=im.energy_kv * 1e3).multislice(potential)
        ctf = abtem.CTF(semiangle_cutoff=im.aperture_mrad, focal_spread=im.focal_spread, energy=im.energy_kv * 1e3,
                        aberration_coefficients={"C10": -defocus, "C30": cs_um * 1e4})
        intensity = np.asarray(wave.apply_ctf(ctf).intensity().array, dtype=np.float64)
    # abTEM arrays are indexed [x, y]; the grid spacing is the cell over the grid points.
    step = extent[:2] / np.array(intensity.shape)
    if abs(step[0] - step[1]) > 1e-6 * step[0]:
        intensity = ndimage.zoom(intensity, (step[0] / step.min(), step[1] / step.min()), order=1)
    s = float(step.min())
    blur = np.hypot(px / np.sqrt(12), im.mtf_sigma * px) / s
    field = ndimage.gaussian_filter(intensity.T, blur, mode="wrap")
    signal = _sample(field, lo[:2], s, x, y, order=3)
    counts = rng.poisson(np.maximum(signal, 0) / max(float(signal.mean()), 1e-12) * dose).astype(np.float32)
    return counts, {"defocus_angstrom": defocus, "cs_um": cs_um, "dose": dose}


# -------------------------------------------------------------------------------------------- truth


def truth_from_film(structure: FilmStructure, x, y, threshold_deg: float):
    """Per-pixel ``(cells, grains, orientation)`` at specimen positions ``(x, y)``.

    ``cells`` int32 the power cell under each pixel; ``grains`` uint32 by the grain rule over touching
    crystal cells (docs/design.md §3), 0 where the cell is vacuum, amorphous or off the zone axis;
    ``orientation`` float32 degrees in ``[0, 360/k)``, NaN on 0.
    """
    pts = np.stack([x.ravel(), y.ravel()], 1)
    cells = power_diagram(pts, structure.seeds, structure.weights).reshape(x.shape).astype(np.int32)
    angles = structure.angles
    crystal = ~np.isnan(angles)
    pairs = face_pairs(cells)
    mis = misorientation_2d(angles[pairs[:, 0]], angles[pairs[:, 1]], structure.k)
    mis = np.where(np.isnan(mis), 180.0, mis)  # a cell without a lattice never joins a grain
    grains = np.where(crystal[cells], apply_grain_rule(cells, pairs, mis, threshold_deg), 0).astype(np.int64)
    lut = np.zeros(int(grains.max()) + 1, dtype=np.uint32)
    present = np.flatnonzero(np.bincount(grains.ravel()))
    present = present[present > 0]
    lut[present] = np.arange(1, len(present) + 1, dtype=np.uint32)
    orientation = np.where(crystal[cells], angles[cells], np.nan).astype(np.float32)
    return cells, lut[grains], orientation


# ------------------------------------------------------------------------------------------ sample


def synth_atoms2d(config: Atoms2DConfig | None = None, seed=0) -> SynthSample:
    """One atomistic micrograph with its truth: a deterministic function of (config, seed).

    Returns
    -------
    SynthSample
        ``image`` uint16 counts; ``grains`` uint32 (0 = no grain: vacuum, amorphous, off-zone);
        ``orientation`` float32 degrees (NaN on 0); ``boundary`` True where a face neighbour has another
        grain id; ``cells`` the film's cells; ``clean`` the image before counting noise is not kept
        (multislice has no separable clean image): the float32 counts; ``info`` the drawn settings.
    """
    cfg = config or Atoms2DConfig()
    rng = np.random.default_rng(seed)
    variant = None
    if cfg.variants:
        variant = int(rng.integers(len(cfg.variants)))
        cfg = cfg.variant(variant)
    structure = build_film(cfg, rng)
    px = cfg.pixel_size_angstrom
    if cfg.mode == "haadf":
        col, row = scan_positions(cfg.size, cfg.haadf, rng)
        x, y = col * px, row * px
        counts, drawn = image_haadf(structure, cfg, x, y, rng)
    else:
        rows, cols = np.indices(cfg.size, dtype=np.float64)
        x, y = cols * px, -rows * px
        counts, drawn = image_hrtem(structure, cfg, x, y, rng)
    cells, grains, orientation = truth_from_film(structure, x, y, cfg.film.threshold_deg)
    boundary = np.zeros(grains.shape, dtype=bool)
    for ax in (0, 1):
        step = np.diff(grains, axis=ax) != 0
        lead = [slice(None)] * 2
        lead[ax] = slice(None, -1)
        boundary[tuple(lead)] |= step
        lead[ax] = slice(1, None)
        boundary[tuple(lead)] |= step
    image = np.clip(np.round(counts), 0, 65535).astype(np.uint16)
    kinds = structure.kinds[np.unique(cells)]
    info = {
        "mode": cfg.mode,
        "lattice": cfg.dataset_lattice,
        "k": structure.k,
        "structure": cfg.lattice,
        "element": cfg.element,
        "zone": cfg.zone,
        "lattice_constant": cfg.a,
        "projected_period_angstrom": structure.period,
        "period_px": structure.period / px,
        "pixel_size_angstrom": px,
        "thickness_angstrom": structure.thickness,
        "n_atoms": int(len(structure.positions)),
        "n_grains": int(grains.max()),
        "n_twins": 0,
        "n_off_zone": int(np.sum(kinds == OFF_ZONE)),
        "n_fringe": int(np.sum(kinds == FRINGE)),
        "n_amorphous": int(np.sum(kinds == AMORPHOUS)),
        "n_vacuum": int(np.sum(kinds == VACUUM)),
        "no_grain_fraction": float(np.mean(grains == 0)),
        **drawn,
    }
    if variant is not None:
        info["variant"] = variant
    return SynthSample(image, grains, boundary, orientation, cells, counts, info)

"""2D lattice-resolved micrographs of polycrystals with exact ground truth.

Each grain is a crystal seen in projection: a square (p4m, default) or hexagonal (p6m) lattice of atomic
columns, or one set of lattice planes (``"fringes"``: a crystal with only one plane set edge-on), with
its own in-plane angle and a random translation. The intensity of a pixel is evaluated from
its own specimen position mapped into the grain's lattice coordinates (no stamping of atoms), so
rendering costs a few vectorised passes over the image.

Orientation convention (docs/design.md §1): the angle, in degrees, of the lattice's first basis vector from
+x, counter-clockwise as displayed (y up = decreasing row), stored in ``[0, 360/k)``; for fringes the
plane normal's, modulo 180°.

>>> from micro_sym.synth import Synth2DConfig, synth_2d
>>> s = synth_2d(Synth2DConfig(size=(128, 128)), seed=1)
>>> s.image.shape, s.grains.dtype, s.orientation.dtype
((128, 128), dtype('uint32'), dtype('float32'))
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from micro_sym.errors import MicroSymError
from micro_sym.grains.boundaries import find_boundaries
from micro_sym.orientation import misorientation_2d
from micro_sym.orientation.symmetry import lattice as find_lattice
from micro_sym.synth.config import Imaging2D, Synth2DConfig
from micro_sym.synth.imaging import apply_imaging_2d, scan_positions
from micro_sym.synth.microstructure import (
    apply_grain_rule,
    face_pairs,
    power_diagram,
    power_diagram_grid,
    random_neighbour_assignment,
    relabel_consecutive,
    seed_cells,
    slab_mask,
)

# Lattice points around the unit cell that holds a point, in fractional coordinates. For the square
# lattice the comb is separable (see _square_comb); for the hexagonal lattice the 4 cell corners plus
# the apexes of the 4 triangles across the cell's edges hold every atom within one lattice constant,
# so the neglected atoms contribute < exp(-1 / (2 sigma²)) (4e-6 at sigma = 0.2).
_HEX_OFFSETS = np.array([(0, 0), (1, 0), (0, 1), (1, 1), (1, -1), (-1, 1), (2, 0), (0, 2)], dtype=np.float64)
# Low-index directions that are *not* mirror lines of the lattice: mirroring a grain across one of
# them gives the coherent 2D twin (square: Σ5, 36.87°; hexagonal: Σ7, 21.79°).
_TWIN_DIRECTIONS = {"square": [(1, 2), (2, 1)], "hexagonal": [(2, 1), (1, 2)], "fringes": [(1, 2), (2, 1)]}


@dataclass
class SynthSample:
    """A generated micrograph or volume and its exact ground truth.

    Attributes
    ----------
    image : (H, W) uint16 or float32 detector counts, or the (z, y, x) uint8 or float32 reconstruction
        of a volume (also available as ``volume``).
    grains : uint32 grain ids, consecutive from 1 (docs/design.md §3 grain rule applied).
    boundary : bool, True where a face neighbour has another grain id.
    orientation : 2D: (H, W) float32 degrees in ``[0, 360/k)``, exactly the angle each pixel was
        rendered with; 3D: (4, z, y, x) float32 unit quaternions (w, x, y, z), crystal -> volume frame.
    cells : int32 tessellation cells before the grain rule (twins and sub-grains are cells).
    clean : float32 noise-free lattice intensity.
    info : dict of per-sample facts (grain and twin counts, contrast mode, ...).
    """

    image: np.ndarray
    grains: np.ndarray
    boundary: np.ndarray
    orientation: np.ndarray
    cells: np.ndarray
    clean: np.ndarray
    info: dict = field(default_factory=dict)

    @property
    def volume(self) -> np.ndarray:
        """The 3D image (the name a volume's users expect)."""
        return self.image


#: The 2D and 3D generators return the same kind of sample.
Synth2DSample = Synth3DSample = SynthSample


def lattice_basis(angles_deg, lattice: str = "square", period: float = 8.0):
    """Basis matrices ``(N, 2, 2)`` (columns a1, a2, physical (x, y) frame) for lattice angles in degrees."""
    t = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    second = np.pi / 3 if lattice == "hexagonal" else np.pi / 2
    a1 = np.stack([np.cos(t), np.sin(t)], -1)
    a2 = np.stack([np.cos(t + second), np.sin(t + second)], -1)
    return period * np.stack([a1, a2], -1)


def _comb1(f, sigma):
    """1D periodic comb of Gaussians (width ``sigma``) at the integers, from the two nearest atoms."""
    x = (f - np.floor(f)).astype(np.float32)  # fractional part is exact enough in float32, exp is 2x faster
    c = np.float32(-0.5 / sigma**2)
    return np.exp(c * x * x) + np.exp(c * (1 - x) ** 2)


def _square_comb(fu, fv, sigma):
    # A Gaussian of the distance to a lattice point of an orthogonal lattice factorises per axis, so the
    # square-lattice comb is a product of two 1D periodic combs (nearest two atoms per axis suffice).
    return _comb1(fu, sigma) * _comb1(fv, sigma)


def _fringe_comb(fu, fv, sigma):
    # One set of planes normal to a1: the square comb's first factor (a column along the planes' depth
    # projects to a line, so the intensity varies only across the planes).
    return _comb1(fu, sigma)


def _hex_comb(fu, fv, sigma):
    # |du a1 + dv a2|² / a² = du² + dv² + du dv for a1, a2 at 60° (mirrored bases have the same Gram matrix).
    u = (fu - np.floor(fu)).astype(np.float32)  # float32 is ample for fractional parts; exp is 2x faster
    v = (fv - np.floor(fv)).astype(np.float32)
    out = np.zeros_like(u)
    for ou, ov in _HEX_OFFSETS:
        du, dv = u - np.float32(ou), v - np.float32(ov)
        out += np.exp(np.float32(-0.5 / sigma**2) * (du * du + dv * dv + du * dv))
    return out


def _render_cells(x, y, cells, bases, origins, lattice, atom_sigma, disorder=None, period=8.0, rng=None):
    """Lattice intensity at specimen positions ``(x, y)`` for per-cell bases and origins.

    ``disorder`` (same shape, 0 = fully disordered, 1 = perfect crystal) fades the lattice near
    boundaries: atoms are displaced by a smooth random field and the crystal blends into an
    amorphous-looking texture with the same mean and contrast.
    """
    inv = np.linalg.inv(bases)  # (N, 2, 2): physical displacement -> fractional lattice coordinates
    if disorder is not None and rng is not None:
        # Strained, displaced atoms in the boundary layer: a smooth displacement of ~0.3 lattice constants.
        amp = 0.3 * period * (1 - disorder)
        x = x + amp * _smooth_noise(x.shape, period, rng)
        y = y + amp * _smooth_noise(x.shape, period, rng)
    dx = x - origins[cells, 0]
    dy = y - origins[cells, 1]
    fu = inv[cells, 0, 0] * dx + inv[cells, 0, 1] * dy
    fv = inv[cells, 1, 0] * dx + inv[cells, 1, 1] * dy
    comb = {"square": _square_comb, "hexagonal": _hex_comb, "fringes": _fringe_comb}[lattice]
    img = comb(fu, fv, atom_sigma).astype(np.float32)
    if disorder is not None and rng is not None:
        tex = _smooth_noise(img.shape, atom_sigma * period * 1.3, rng)
        amorphous = float(img.mean()) + float(img.std()) * tex
        img = disorder * img + (1 - disorder) * np.clip(amorphous, 0, None)
    return img.astype(np.float32)


def _smooth_noise(shape, sigma, rng):
    """Gaussian-correlated noise with unit standard deviation.

    Fields correlated over several pixels are drawn on a grid coarser by ``sigma / 2`` and
    interpolated: the same statistics at a fraction of the filtering cost on large images.
    """
    step = max(1, int(sigma // 2))
    coarse = tuple(-(-n // step) + 1 for n in shape)
    n = ndimage.gaussian_filter(rng.standard_normal(coarse).astype(np.float32), sigma / step, mode="wrap")
    if step > 1:
        n = ndimage.zoom(n, step, order=1, grid_mode=False)
    n = n[tuple(slice(0, m) for m in shape)]
    return n / max(float(n.std()), 1e-9)


def _disorder_weight(general_boundary, width):
    """1 in the crystal, falling smoothly to 0 on general grain boundaries over ``width`` pixels."""
    if width <= 0 or not general_boundary.any():
        return None
    d = ndimage.distance_transform_edt(~general_boundary)
    t = np.clip(d / width, 0, 1)
    return (t * t * (3 - 2 * t)).astype(np.float32)  # smoothstep: no kink at the layer's edge


def _grains_and_disorder(cells, pairs, mis, parent, ms):
    """Grains of the cells by the grain rule, their boundary mask, and the disorder weight of the cells.

    ``pairs``/``mis``: touching cells and their misorientations; ``parent``: a twin's parent cell (a
    cell's own id otherwise). Coherent twin boundaries are ordered interfaces, so only general
    boundaries get a disordered layer (:func:`_disorder_weight`).
    """
    grains = apply_grain_rule(cells, pairs, mis, ms.threshold_deg)
    is_twin_pair = parent[pairs[:, 0]] == parent[pairs[:, 1]]
    general = find_boundaries(apply_grain_rule(cells, pairs, np.where(is_twin_pair, 0.0, mis), ms.threshold_deg))
    return grains, find_boundaries(grains), _disorder_weight(general, ms.disorder_width)


def _sample_info(grains, cells, n_twins, plan) -> dict:
    """The per-sample facts both generators report (grain, cell, twin and sub-grain counts)."""
    return {
        "n_grains": int(grains.max()),
        "n_cells": int(cells.max()) + 1,
        "n_twins": n_twins,
        "n_subgrain": sum(1 for p in plan if p[2] == 0),
        "n_low_angle": sum(1 for p in plan if p[2] == 1),
    }


def _angles_array(angles, n):
    """Per-id angles from an array indexed by id or a ``{id: angle}`` mapping."""
    if isinstance(angles, dict):
        out = np.full(n, np.nan)
        for k, v in angles.items():
            if 0 <= int(k) < n:
                out[int(k)] = v
        return out
    a = np.asarray(angles, dtype=np.float64).ravel()
    if len(a) < n:
        raise MicroSymError(f"angles: {len(a)} values for grain ids up to {n - 1} (index the array by grain id)")
    return a[:n]


def render_lattice_2d(
    grain_ids,
    angles,
    *,
    lattice: str = "square",
    period: float = 8.0,
    atom_sigma: float = 0.18,
    translations=None,
    disorder_width: float = 1.5,
    positions=None,
    rng=None,
):
    """Noise-free lattice image of a GIVEN grain map: every grain a lattice at its own angle.

    Use this to give real grain shapes (e.g. an EBSD map) a lattice-resolved image; pass the result
    to :func:`~micro_sym.synth.imaging.apply_imaging_2d` (or use :func:`micrograph_from_grains`).

    Parameters
    ----------
    grain_ids : (H, W) int array
        Grain id per pixel. Id 0 is treated like any other id (give it an angle, or NaN for an
        amorphous region).
    angles : array indexed by grain id, or dict ``{id: degrees}``
        In-plane lattice angle per grain (docs/design.md convention, any value; taken modulo 360/k).
        A NaN angle renders that grain amorphous.
    lattice : {"square", "hexagonal", "fringes"}
    period : float
        Lattice constant (fringes: plane spacing) in pixels.
    atom_sigma : float
        Gaussian width of a column as a fraction of the period.
    translations : (N, 2) array, optional
        Lattice origin per grain id in physical ``(x, y)`` pixels; random when omitted.
    disorder_width : float
        Width (pixels) of the disordered layer at boundaries between grains; 0 for sharp cuts.
    positions : tuple of (H, W) arrays, optional
        Specimen ``(x, y)`` position of each pixel (see :func:`~micro_sym.synth.imaging.scan_positions`);
        defaults to the undistorted grid ``x = col, y = -row``.
    rng : numpy.random.Generator or int, optional

    Returns
    -------
    (H, W) float32 intensity, about 1 at column centres and ~0 between columns.

    Examples
    --------
    >>> ids = np.ones((64, 64), dtype=np.uint32); ids[:, 32:] = 2
    >>> img = render_lattice_2d(ids, {1: 10.0, 2: 40.0}, rng=0)
    >>> img.shape, img.dtype
    ((64, 64), dtype('float32'))
    """
    find_lattice(lattice, ndim=2)
    grain_ids = np.asarray(grain_ids)
    if grain_ids.ndim != 2 or not np.issubdtype(grain_ids.dtype, np.integer):
        raise MicroSymError(f"grain_ids: need a 2D integer array, got {grain_ids.dtype} of shape {grain_ids.shape}")
    if grain_ids.min() < 0:
        raise MicroSymError("grain_ids: negative ids")
    rng = np.random.default_rng(rng)
    n = int(grain_ids.max()) + 1
    ang = _angles_array(angles, n)
    amorphous = np.isnan(ang)
    bases = lattice_basis(np.where(amorphous, 0.0, ang), lattice, period)
    if translations is None:
        frac = rng.random((n, 2))
        origins = np.einsum("nij,nj->ni", bases, frac)
    else:
        origins = np.asarray(translations, dtype=np.float64).reshape(-1, 2)[:n]
    if positions is None:
        h, w = grain_ids.shape
        x = np.broadcast_to(np.arange(w, dtype=np.float64), (h, w))
        y = np.broadcast_to(-np.arange(h, dtype=np.float64)[:, None], (h, w))
    else:
        x, y = positions
    weight = _disorder_weight(find_boundaries(grain_ids), disorder_width)
    if amorphous.any():
        weight = np.ones(grain_ids.shape, np.float32) if weight is None else weight
        weight = np.where(amorphous[grain_ids], 0, weight).astype(np.float32)
    return _render_cells(x, y, grain_ids, bases, origins, lattice, atom_sigma, weight, period, rng)


def micrograph_from_grains(grain_ids, angles, *, imaging: Imaging2D | None = None, seed=0, **render_kwargs):
    """A noisy micrograph of a given grain map: :func:`render_lattice_2d` then :func:`apply_imaging_2d`.

    The scan distortion of ``imaging`` (jitter, drift, shear) is applied to the specimen positions, so
    the returned image stays registered with ``grain_ids`` up to that distortion.

    Returns
    -------
    (H, W) float32 counts.
    """
    imaging = imaging or Imaging2D()
    rng = np.random.default_rng(seed)
    pos = scan_positions(np.shape(grain_ids), imaging, rng)
    clean = render_lattice_2d(grain_ids, angles, positions=pos, rng=rng, **render_kwargs)
    return apply_imaging_2d(clean, imaging, rng)


def _twin_mirror(basis, direction):
    """Mirror matrix across the line along lattice direction ``direction`` (in lattice units)."""
    u = basis @ np.asarray(direction, dtype=np.float64)
    u /= np.linalg.norm(u)
    return 2 * np.outer(u, u) - np.eye(2), u


def synth_2d(config: Synth2DConfig | None = None, seed: int = 0) -> Synth2DSample:
    """Generate one 2D micrograph with exact ground truth.

    Steps: scan positions (with the configured distortion) -> relaxed power-diagram cells at those
    positions -> per-cell angles (uniform, plus sub-grain and low-angle neighbours) -> coherent twin
    bands (mirror across a non-mirror lattice row) -> grain ids by the 5° rule -> lattice rendering with a
    disordered layer at general boundaries -> imaging model.

    Parameters
    ----------
    config : Synth2DConfig, optional
    seed : int
        The sample is a deterministic function of (config, seed).

    Returns
    -------
    Synth2DSample
    """
    cfg = config or Synth2DConfig()
    ms, im = cfg.microstructure, cfg.imaging
    lat = find_lattice(cfg.lattice, ndim=2)
    k, period_deg = lat.k, lat.period
    rng = np.random.default_rng(seed)
    h, w = cfg.size
    x, y = scan_positions((h, w), im, rng)
    pts = np.stack([x.ravel(), y.ravel()], -1)
    seeds, weights = seed_cells(pts.min(0), pts.max(0), ms.grain_size, ms.size_spread, ms.relax_iterations, rng)
    if im.jitter == 0 and im.drift == 0:
        # Positions are affine in the pixel index (at most sheared): the block-wise exact shortcut applies.
        raw = power_diagram_grid(np.stack([x, y]), seeds, weights, block=8)
    else:
        raw = power_diagram(pts, seeds, weights).reshape(h, w)
    cells, _ = relabel_consecutive(raw)
    n = int(cells.max()) + 1

    # Orientations: uniform, then some cells copy a neighbour with a small rotation.
    ang = rng.uniform(0, period_deg, n)
    fractions = [ms.subgrain_fraction, ms.low_angle_fraction]
    ranges = [ms.subgrain_angle, ms.low_angle_angle]
    plan = random_neighbour_assignment(n, face_pairs(cells), rng, fractions)
    for c, nb, kind in plan:
        ang[c] = ang[nb] + rng.choice([-1, 1]) * rng.uniform(*ranges[kind])
    # Round through float32 once: the stored map and the rendering then use the very same numbers.
    ang = np.mod(ang, period_deg).astype(np.float32).astype(np.float64)
    ang[ang >= period_deg] = 0.0
    bases = lattice_basis(ang, cfg.lattice, cfg.period)
    origins = np.einsum("nij,nj->ni", bases, rng.random((n, 2)))

    # Coherent twin bands: mirror the parent lattice across a lattice row through a lattice point.
    parent = np.arange(n)
    areas = np.bincount(cells.ravel(), minlength=n)
    cx = np.bincount(cells.ravel(), weights=pts[:, 0], minlength=n) / np.maximum(areas, 1)
    cy = np.bincount(cells.ravel(), weights=pts[:, 1], minlength=n) / np.maximum(areas, 1)
    min_area = 0.3 * np.pi * ms.grain_size**2 / 4
    extra_ang, extra_bases, extra_origins = [], [], []
    flat = cells.ravel()
    for c in np.flatnonzero(rng.random(n) < ms.twin_fraction):
        if areas[c] < min_area:
            continue
        b = bases[c]
        centroid = np.array([cx[c], cy[c]])
        lattice_pt = origins[c] + b @ np.round(np.linalg.solve(b, centroid - origins[c]))
        direction = _TWIN_DIRECTIONS[cfg.lattice][rng.integers(2)]
        mirror, u = _twin_mirror(b, direction)
        normal = np.array([-u[1], u[0]])
        width = rng.uniform(*ms.twin_width) * ms.grain_size
        sel = np.flatnonzero(flat == c)
        inside = sel[slab_mask(pts[sel], lattice_pt, normal, width)]
        if len(inside) < 0.1 * areas[c] or len(inside) > 0.6 * areas[c]:
            continue  # a band that misses the grain or swallows it is not a twin band
        new_id = n + len(extra_ang)
        flat[inside] = new_id
        tb = mirror @ b
        t_ang = np.float32(np.mod(np.degrees(np.arctan2(tb[1, 0], tb[0, 0])), period_deg))
        extra_ang.append(0.0 if t_ang >= period_deg else float(t_ang))
        extra_bases.append(tb)
        extra_origins.append(lattice_pt)
        parent = np.append(parent, c)
    n_twins = len(extra_ang)
    if n_twins:
        ang = np.concatenate([ang, extra_ang])
        bases = np.concatenate([bases, np.array(extra_bases)])
        origins = np.concatenate([origins, np.array(extra_origins)])
    cells = flat.reshape(h, w)

    pairs = face_pairs(cells)
    mis = misorientation_2d(ang[pairs[:, 0]], ang[pairs[:, 1]], k)
    grains, boundary, weight = _grains_and_disorder(cells, pairs, mis, parent, ms)
    clean = _render_cells(x, y, cells, bases, origins, cfg.lattice, cfg.atom_sigma, weight, cfg.period, rng)

    contrast = im.contrast if im.contrast != "random" else ("dark_field" if rng.random() < 0.5 else "bright_field")
    counts = apply_imaging_2d(clean, im, rng, contrast=contrast)
    if cfg.dtype == "uint16":
        image = np.clip(np.rint(counts), 0, 65535).astype(np.uint16)
    else:
        image = counts.astype(np.float32)
    orientation = ang.astype(np.float32)[cells]
    info = {**_sample_info(grains, cells, n_twins, plan), "contrast": contrast, "lattice": cfg.lattice}
    return Synth2DSample(image, grains, boundary, orientation, cells.astype(np.int32), clean, info)

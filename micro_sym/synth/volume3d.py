"""3D tomography-like volumes of cubic polycrystals with exact ground truth.

Each grain is a simple-cubic lattice of atoms (Gaussian blobs) with a uniformly random orientation on
SO(3); some grains are a few degrees from a neighbour (sub-grain and low-angle boundaries) and some hold
a Σ3 annealing-twin slab (60° about a <111> axis, coherent on the {111} mid-plane of the slab).

Frames (docs/design.md §1): arrays ``(z, y, x)``; physical ``x`` = last axis, ``y`` = second-to-last,
``z`` = first. The quaternion ``q`` (scalar first) of a grain rotates crystal vectors into this frame:
crystal axis ``e_i`` points along column ``i`` of ``quat_to_matrix(q)``, as ``(x, y, z)``.

>>> from micro_sym.synth import Synth3DConfig, synth_3d
>>> s = synth_3d(Synth3DConfig(size=(32, 32, 32), period=4.0, microstructure={"grain_size": 16}), seed=0)
>>> s.volume.shape, s.orientation.shape
((32, 32, 32), (4, 32, 32, 32))
"""

from __future__ import annotations


import numpy as np

from micro_sym.errors import MicroSymError
from micro_sym.grains.boundaries import find_boundaries
from micro_sym.orientation import (
    axis_angle_to_quat,
    misorientation_cubic,
    quat_multiply,
    quat_normalize,
    quat_to_matrix,
    random_quaternions,
)
from micro_sym.synth.config import Synth3DConfig
from micro_sym.synth.imaging import apply_imaging_3d
from micro_sym.synth.lattice2d import (SynthSample, _comb1, _disorder_weight, _grains_and_disorder, _sample_info,
                                       _smooth_noise)
from micro_sym.synth.microstructure import (
    face_pairs,
    power_diagram_grid,
    random_neighbour_assignment,
    relabel_consecutive,
    seed_cells,
    slab_mask,
)

_CHUNK = 1 << 20  # voxels per rendering pass: bounds the temporaries to a few tens of MB


def _grid_points(shape):
    """Physical ``(x, y, z)`` positions of all voxels, ``(N, 3)`` float64, in C order of ``(z, y, x)``."""
    zz, yy, xx = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    return np.stack([xx.ravel(), yy.ravel(), zz.ravel()], -1)


def _render_cells_3d(shape, cells, rot, origins, period, atom_sigma, disorder=None, rng=None):
    """Simple-cubic lattice intensity per voxel: each voxel mapped into its own cell's crystal frame.

    A Gaussian of the distance to a lattice point of an orthogonal lattice factorises over the three
    crystal axes, so the comb is a product of three 1D periodic combs of the fractional coordinates
    ``f = R^T (p - o) / a``: no atom is ever stamped.
    """
    flat_cells = cells.ravel()
    disp = None
    if disorder is not None and rng is not None:
        amp = (0.3 * period * (1 - disorder)).ravel()
        disp = [amp * _smooth_noise(shape, period, rng).ravel() for _ in range(3)]
    out = np.empty(flat_cells.size, dtype=np.float32)
    rt = np.transpose(rot, (0, 2, 1)) / period  # (N, 3, 3): volume displacement -> fractional crystal coords
    z_len = shape[1] * shape[2]
    for start in range(0, flat_cells.size, _CHUNK):
        stop = min(start + _CHUNK, flat_cells.size)
        idx = np.arange(start, stop)
        p = np.stack([idx % shape[2], (idx // shape[2]) % shape[1], idx // z_len], -1).astype(np.float64)
        if disp is not None:
            p += np.stack([d[start:stop] for d in disp], -1)
        c = flat_cells[start:stop]
        d = p - origins[c]
        m = rt[c]
        val = np.ones(len(c))
        for i in range(3):
            val *= _comb1(m[:, i, 0] * d[:, 0] + m[:, i, 1] * d[:, 1] + m[:, i, 2] * d[:, 2], atom_sigma)
        out[start:stop] = val
    img = out.reshape(shape)
    if disorder is not None and rng is not None:
        tex = _smooth_noise(shape, atom_sigma * period * 1.3, rng)
        amorphous = np.clip(float(img.mean()) + float(img.std()) * tex, 0, None)
        img = disorder * img + (1 - disorder) * amorphous
    return img.astype(np.float32)


def render_lattice_3d(grain_ids, quaternions, *, period: float = 5.0, atom_sigma: float = 0.18, translations=None, disorder_width: float = 1.0, rng=None):
    """Noise-free simple-cubic lattice volume of a GIVEN grain map.

    Parameters
    ----------
    grain_ids : (z, y, x) int array
    quaternions : (N, 4) array indexed by grain id
        Unit quaternions (w, x, y, z), crystal -> volume frame.
    period : float
        Lattice constant in voxels.
    atom_sigma : float
        Gaussian width of an atom as a fraction of the period.
    translations : (N, 3) array, optional
        Lattice origin per grain id, physical ``(x, y, z)`` voxels; random when omitted.
    disorder_width : float
        Disordered layer half-width at grain boundaries, voxels (0 = sharp).
    rng : numpy.random.Generator or int, optional

    Returns
    -------
    (z, y, x) float32 intensity, about 1 at atom centres.
    """
    grain_ids = np.asarray(grain_ids)
    if grain_ids.ndim != 3 or not np.issubdtype(grain_ids.dtype, np.integer) or grain_ids.min() < 0:
        raise MicroSymError(f"grain_ids: need a 3D array of non-negative integers, got {grain_ids.dtype} {grain_ids.shape}")
    rng = np.random.default_rng(rng)
    n = int(grain_ids.max()) + 1
    q = np.asarray(quaternions, dtype=np.float64).reshape(-1, 4)
    if len(q) < n:
        raise MicroSymError(f"quaternions: {len(q)} rows for grain ids up to {n - 1} (index them by grain id)")
    rot = quat_to_matrix(q[:n])
    origins = np.einsum("nij,nj->ni", rot, rng.random((n, 3))) * period if translations is None else np.asarray(translations, float)[:n]
    weight = _disorder_weight(find_boundaries(grain_ids), disorder_width)
    return _render_cells_3d(grain_ids.shape, grain_ids, rot, origins, period, atom_sigma, weight, rng)


def _to_dtype(vol, dtype):
    if dtype == "float32":
        return vol.astype(np.float32)
    # Map the 0.1-99.9 percentile range onto 0..255, as a reconstruction is usually exported.
    lo, hi = np.percentile(vol[:: max(1, vol.shape[0] // 32)], [0.1, 99.9])
    return np.clip(np.rint((vol - lo) / max(hi - lo, 1e-12) * 255), 0, 255).astype(np.uint8)


def synth_3d(config: Synth3DConfig | None = None, seed: int = 0) -> SynthSample:
    """Generate one 3D volume with exact ground truth (a deterministic function of config and seed).

    Returns
    -------
    SynthSample
    """
    cfg = config or Synth3DConfig()
    ms = cfg.microstructure
    rng = np.random.default_rng(seed)
    shape = tuple(cfg.size)
    pts = _grid_points(shape)
    seeds, weights = seed_cells(pts.min(0), pts.max(0), ms.grain_size, ms.size_spread, ms.relax_iterations, rng)
    grid = pts.T.reshape((3, *shape))  # a view: (x, y, z) coordinates per voxel
    cells, _ = relabel_consecutive(power_diagram_grid(grid, seeds, weights, block=4))
    n = int(cells.max()) + 1

    q = random_quaternions(n, rng)
    fractions = [ms.subgrain_fraction, ms.low_angle_fraction]
    ranges = [ms.subgrain_angle, ms.low_angle_angle]
    plan = random_neighbour_assignment(n, face_pairs(cells), rng, fractions)
    for c, nb, kind in plan:
        axis = rng.standard_normal(3)
        q[c] = quat_multiply(q[nb], axis_angle_to_quat(axis, rng.uniform(*ranges[kind])))
    q = _round_quats(q)
    rot = quat_to_matrix(q)
    origins = np.einsum("nij,nj->ni", rot, rng.random((n, 3))) * cfg.period

    # Σ3 twins: a slab bounded by {111} planes of the parent; the twin is the parent rotated 60° about
    # that <111> through a lattice point on the mid-plane, where the two lattices share a {111} net.
    flat = cells.ravel()
    vols = np.bincount(flat, minlength=n)
    cents = np.stack([np.bincount(flat, weights=pts[:, i], minlength=n) for i in range(3)], -1) / np.maximum(vols, 1)[:, None]
    min_vol = 0.3 * np.pi * ms.grain_size**3 / 6
    parent = np.arange(n)
    extra_q, extra_o = [], []
    for c in np.flatnonzero(rng.random(n) < ms.twin_fraction):
        if vols[c] < min_vol:
            continue
        axis_c = rng.choice([-1.0, 1.0], 3)
        normal = rot[c] @ axis_c / np.sqrt(3)
        lattice_pt = origins[c] + rot[c] @ np.round(rot[c].T @ (cents[c] - origins[c]) / cfg.period) * cfg.period
        width = rng.uniform(*ms.twin_width) * ms.grain_size
        sel = np.flatnonzero(flat == c)
        inside = sel[slab_mask(pts[sel], lattice_pt, normal, width)]
        if len(inside) < 0.1 * vols[c] or len(inside) > 0.6 * vols[c]:
            continue
        flat[inside] = n + len(extra_q)
        extra_q.append(quat_multiply(q[c], axis_angle_to_quat(axis_c, 60.0)))
        extra_o.append(lattice_pt)
        parent = np.append(parent, c)
    n_twins = len(extra_q)
    if n_twins:
        q = np.concatenate([q, _round_quats(np.array(extra_q))])
        origins = np.concatenate([origins, np.array(extra_o)])
        rot = quat_to_matrix(q)
    cells = flat.reshape(shape)

    pairs = face_pairs(cells)
    mis = misorientation_cubic(q[pairs[:, 0]], q[pairs[:, 1]])
    grains, boundary, weight = _grains_and_disorder(cells, pairs, mis, parent, ms)
    clean = _render_cells_3d(shape, cells, rot, origins, cfg.period, cfg.atom_sigma, weight, rng)
    volume = _to_dtype(apply_imaging_3d(clean, cfg.imaging, rng), cfg.dtype)
    orientation = np.moveaxis(q.astype(np.float32)[cells], -1, 0).copy()
    info = {**_sample_info(grains, cells, n_twins, plan), "lattice": "cubic"}
    return SynthSample(volume, grains, boundary, orientation, cells.astype(np.int32), clean, info)


def _round_quats(q):
    """Canonical sign, then through float32 once: the stored map and the rendering share the numbers."""
    return quat_normalize(q).astype(np.float32).astype(np.float64)

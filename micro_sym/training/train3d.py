"""What training and evaluating a 3D model (boundary + cubic l = 4 orientation field) needs beyond
the loop (:mod:`micro_sym.training.loop`).

Read top to bottom: synthetic lattice volumes (``--data synthetic``), targets, the loss, random
crops, :class:`Task3D` (the loop's 3D part), metrics and :func:`evaluate3d`; ``micro-sym evaluate``
calls :func:`cli_evaluate3d` for 3D models.

Synthetic data: until ``micro_sym.synth`` ships its 3D generator, :func:`synth_lattice_volume` makes
small atomic-resolution-like tomograms: a power-diagram-free Voronoi polycrystal with a uniformly
random cubic orientation per grain, each grain filled with a simple-cubic lattice density
``Σ_i cos(2π u_i / a)`` in crystal coordinates ``u = Rᵀ x`` (cubic-invariant, so the image determines
the orientation exactly modulo the 24 cube rotations, as in real data), blurred and noisy.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from micro_sym.grains.boundaries import find_boundaries
from micro_sym.orientation.cubic_harmonics import quat_to_sh4
from micro_sym.orientation import misorientation_cubic, quat_to_matrix, random_quaternions

# ------------------------------------------------------------------------------- synthetic data


def synth_lattice_volume(shape=(32, 32, 32), grain_size: float = 12.0, period: float = 3.5, blur: float = 0.6,
                         noise: float = 0.3, rng=None):
    """A small cubic polycrystal tomogram with exact ground truth.

    Parameters
    ----------
    shape : tuple of int
        ``(z, y, x)``.
    grain_size : float
        Mean grain diameter in voxels.
    period : float
        Lattice period in voxels.
    blur : float
        Gaussian resolution (sigma, voxels).
    noise : float
        Gaussian noise relative to the lattice contrast.
    rng : numpy.random.Generator

    Returns
    -------
    image : ndarray float32 (z, y, x)
    grains : ndarray uint32 (z, y, x)
        1.. per grain, 0 on boundary voxels (a face neighbour in another grain; 2 voxels thick).
    quats : ndarray float32 (4, z, y, x)
        Orientation per voxel (docs/design.md §1), defined everywhere (also on boundaries).
    """
    from scipy.ndimage import gaussian_filter
    from scipy.spatial import cKDTree

    rng = rng or np.random.default_rng()
    shape = tuple(int(s) for s in shape)
    n = max(2, int(round(np.prod(shape) / (np.pi / 6 * grain_size**3))))
    seeds = rng.random((n, 3)) * np.array(shape)
    zz, yy, xx = np.meshgrid(*[np.arange(s, dtype=np.float64) for s in shape], indexing="ij")
    pts = np.stack([zz, yy, xx], -1).reshape(-1, 3)
    _, cell = cKDTree(seeds).query(pts, workers=1)
    cell = cell.reshape(shape)
    q = random_quaternions(n, rng)
    mats = quat_to_matrix(q)  # crystal -> physical (x, y, z)
    phys = np.stack([xx, yy, zz], -1)  # physical coordinates of every voxel
    offsets = rng.random((n, 3)) * period
    u = np.einsum("...ji,...j->...i", mats[cell], phys) + offsets[cell]  # R^T x: crystal coordinates
    image = np.cos(2 * np.pi * u / period).sum(-1)
    image = gaussian_filter(image, blur) if blur > 0 else image
    image = image + rng.normal(scale=noise * image.std(), size=shape)
    from micro_sym.grains.boundaries import find_boundaries

    labels = cell + 1
    grains = np.where(find_boundaries(labels, "thick"), 0, labels).astype(np.uint32)
    quats = np.moveaxis(q[cell], -1, 0).astype(np.float32)
    return image.astype(np.float32), grains, quats


def make_volumes(n, shape, seed, **kw):
    """``n`` synthetic volumes as a list of ``(image, grains, quats)``."""
    rng = np.random.default_rng(seed)
    return [synth_lattice_volume(shape, rng=rng, **kw) for _ in range(n)]


# ------------------------------------------------------------------------------- targets and loss


def boundary_from_grains(grains):
    """Boundary voxels: label 0, or a face neighbour with another label.

    Datasets mark boundaries either with 0 (docs/design.md §1) or only by the change of grain id (the
    synthetic 3D generator labels every voxel); this rule gives the same 2-voxel-thick boundary
    for both (:func:`~micro_sym.grains.boundaries.find_boundaries`, ``mode="grains"``).
    """
    return find_boundaries(grains, mode="grains")


def targets(grains, quats, degrees=(4,)):
    """Boundary target (z, y, x) float32 and orientation target (d, z, y, x) float32 (NaN = ignore)."""
    bmask = boundary_from_grains(grains)
    boundary = bmask.astype(np.float32)
    if quats is None:
        return boundary, None
    c = quat_to_sh4(np.moveaxis(quats, 0, -1), degrees).astype(np.float32)
    c[bmask] = np.nan  # orientation is only learned inside grains
    return boundary, np.moveaxis(c, -1, 0)


def twin_weights(grains, quats, boundary, weight: float):
    """BCE weights (z, y, x) float32: ``weight`` on the boundary voxels of Σ3 twin boundaries
    (:func:`micro_sym.metrics3d.sigma3_voxels`), 1 elsewhere; None for ``weight`` 1 or no orientations."""
    if weight == 1 or quats is None:
        return None
    from micro_sym.metrics3d import sigma3_voxels

    return np.where(sigma3_voxels(grains, np.asarray(quats)) & (boundary > 0), np.float32(weight),
                    np.float32(1)).astype(np.float32)


def loss_fn(out, boundary, orient, pos_weight: float | None = 2.0, w_orient: float = 4.0, weights=None):
    """BCE on the boundary logit + MSE on the orientation field over valid voxels; returns (total, parts).

    ``pos_weight`` None: the per-batch negative/positive ratio, capped at 10 (as 2D). ``weights``
    (optional, like ``boundary``): each voxel's BCE weight (:func:`twin_weights`).
    """
    if pos_weight is None:
        pos = boundary.sum()
        pw = ((boundary.numel() - pos) / pos.clamp(min=1)).clamp(1.0, 10.0)
    else:
        pw = torch.tensor(pos_weight, device=out.device)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(out[:, 0], boundary, weight=weights, pos_weight=pw)
    if orient is None:
        return bce, {"bce": bce.item()}
    valid = torch.isfinite(orient[:, :1]).float()
    diff = (out[:, 1:] - torch.nan_to_num(orient)) ** 2 * valid
    mse = diff.sum() / (valid.sum() * orient.shape[1]).clamp(min=1)
    return bce + w_orient * mse, {"bce": bce.item(), "orientation": mse.item()}


# ------------------------------------------------------------------------------- training


def _crops(volumes, size, batch, rng, degrees, augment):
    from micro_sym.models.gcnn3d import cube_grid_rotations, rotate_volume

    weighted = any(v[6] is not None for v in volumes)
    xs, bs, os_, ws = [], [], [], []
    for _ in range(batch):
        img, grains, quats, lohi, tb, to, tw = volumes[rng.integers(len(volumes))]
        z, y, x = (rng.integers(0, s - size + 1) for s in img.shape)
        sl = (slice(z, z + size), slice(y, y + size), slice(x, x + size))
        xi, bi, oi = img[sl], tb[sl], to[(slice(None),) + sl]
        wi = None if tw is None else tw[sl]
        if augment:
            # Rotation augmentation (the plain baseline's only way to learn the symmetry); orientation
            # targets transform with ρ(g) so the pair stays consistent.
            from micro_sym.models.gcnn3d import field_matrices

            gi = int(rng.integers(24))
            r = cube_grid_rotations()[gi]
            xi, bi = rotate_volume(xi, r), rotate_volume(bi, r)
            wi = None if wi is None else rotate_volume(wi, r)
            oi = np.einsum("ij,j...->i...", field_matrices(tuple(degrees))[gi], rotate_volume(oi, r))
        xs.append(np.ascontiguousarray(xi))
        bs.append(np.ascontiguousarray(bi))
        os_.append(np.ascontiguousarray(oi))
        if weighted:
            ws.append(np.ones_like(bs[-1]) if wi is None else np.ascontiguousarray(wi))
    out = (torch.from_numpy(np.stack(xs)[:, None]), torch.from_numpy(np.stack(bs)),
           torch.from_numpy(np.stack(os_).astype(np.float32)))
    return (*out, torch.from_numpy(np.stack(ws))) if weighted else out


def prepare(volumes, model, twin_weight: float = 1.0):
    """Normalize each volume with its whole-volume range and precompute targets (and the BCE weights of
    :func:`twin_weights`)."""
    from micro_sym.models.normalize import intensity_range

    out = []
    for img, grains, quats in volumes:
        lo, hi = intensity_range(img)
        tb, to = targets(grains, quats, model.degrees)
        out.append((model.normalize(img, lo, hi), grains, quats, (lo, hi), tb, to,
                    twin_weights(grains, quats, tb, twin_weight)))
    return out


class Task3D:
    """Training a 3D model on labeled volumes (or ``"synthetic"`` ones): data, batches, loss and
    validation for :func:`micro_sym.training.loop.train`."""

    def __init__(self, config, model):
        self.config, self.model = config, model
        # Random cube rotations of the crops: the plain baseline's only way to learn the symmetry, and
        # harmless for the equivariant variants (orientation targets rotate with ρ(g)).
        self.augment = True if config.aug.rot_flip is None else config.aug.rot_flip

    def load(self, data, val, *, teacher=None, device="cpu"):
        from micro_sym.errors import MicroSymError

        config = self.config
        if teacher is not None or config.loss.distill > 0:
            raise MicroSymError("loss.distill: distillation from a teacher model is implemented for 2D models only")
        from micro_sym.training.config import dataset_list

        paths = dataset_list(data)
        if len(paths) > 1 and val is None:
            raise MicroSymError("several training datasets need a --val dataset")
        volumes = [v for path in paths for v in load_volumes(path, config)]
        if val is not None:
            held = load_volumes(val, config)
        elif str(data) == "synthetic":
            held = make_volumes(config.synthetic.n_val, config.synthetic.shape, config.seed + 1000, **_synth_kw(config))
            held = [(f"synthetic-val-{i}", *v) for i, v in enumerate(held)]
        else:
            n_val = int(round(len(volumes) * config.data.val_fraction))
            if n_val == 0 or n_val >= len(volumes):
                raise MicroSymError(f"{data}: need a --val dataset or more volumes ({len(volumes)}) for a validation split")
            volumes, held = volumes[:-n_val], volumes[-n_val:]
        self.train_names = [v[0] for v in volumes]
        self.val_names = [v[0] for v in held][: config.data.val_max_images]
        self.val = [v[1:] for v in held][: config.data.val_max_images]
        stride = self.model.total_stride
        self.crop = (config.data.crop // stride) * stride
        small = min(min(v[1].shape) for v in volumes)
        if small < self.crop:
            raise MicroSymError(f"{data}: volumes of side {small} voxels are smaller than the crop size {self.crop}")
        self.data = prepare([v[1:] for v in volumes], self.model, config.loss.twin_weight)

    def provenance(self) -> dict:
        return {"train_images": self.train_names, "val_images": self.val_names}

    def model_meta(self) -> dict:
        """Saved with the weights: the training volumes' first-ring spacing, so that inference can
        resample volumes of other voxel sizes to it (:mod:`micro_sym.inference.rescale3d`)."""
        return {"lattice_period_px": training_period_3d([d[0] for d in self.data])}

    def summary(self) -> str:
        return (f"{len(self.train_names)} train / {len(self.val_names)} val volumes | crop {self.crop} | "
                f"rotation aug {self.augment}")

    def batch(self, rng) -> tuple:
        return _crops(self.data, self.crop, self.config.data.batch_size, rng, self.model.degrees, self.augment)

    def loss(self, pred, batch):
        _, b, o, *w = batch
        return loss_fn(pred, b, o, pos_weight=self.config.loss.pos_weight, w_orient=self.config.loss.orientation,
                       weights=w[0] if w else None)

    def validate(self, model, device) -> dict:
        e = self.config.eval
        return {"overall": evaluate3d(model, self.val, threshold_deg=e.threshold, min_size=e.min_size,
                                      boundary_threshold=e.boundary_threshold, device=str(device))}

    @staticmethod
    def headline(overall: dict) -> dict:
        return {"boundary_f1": overall["boundary_f1"], "grain_f1": overall["grain_f1"],
                "orientation_median_deg": overall.get("median_misorientation_deg", float("nan"))}


def training_period_3d(volumes, max_volumes: int = 16) -> float | None:
    """Median first-ring spacing (voxels) measured on up to ``max_volumes`` of the training volumes,
    spread over the list, or None where none shows a lattice: the period inference brings every
    input volume to (docs/design.md §6.2). Meant for training sets rendered at one period (§6.4); of a
    set that mixes periods, the median suits only the lattices near it."""
    from micro_sym.classical import measure_lattice_3d

    periods = []
    for v in volumes[:: max(1, len(volumes) // max_volumes)][:max_volumes]:
        found = measure_lattice_3d(v)
        if found["found"]:
            periods.append(found["period"])
    return round(float(np.median(periods)), 3) if periods else None


def _synth_kw(config) -> dict:
    return {"grain_size": config.synthetic.grain_size, "period": config.synthetic.period}


def load_volumes(data, config) -> list:
    """``(name, image, grains, quats)`` of a labeled 3D dataset, or of ``config.synthetic.n_train``
    generated volumes when ``data`` is ``"synthetic"``."""
    from micro_sym.errors import MicroSymError
    from micro_sym.io.datasets import LabeledDataset

    if str(data) == "synthetic":
        vols = make_volumes(config.synthetic.n_train, config.synthetic.shape, config.seed, **_synth_kw(config))
        return [(f"synthetic-{i}", *v) for i, v in enumerate(vols)]
    ds = LabeledDataset(data)
    if ds.ndim != 3:
        raise MicroSymError(f"{data}: 3D model config but this dataset is {ds.ndim}D")
    return [(s.name, np.asarray(s.image, np.float32), np.asarray(s.grains).astype(np.uint32),
             None if s.orientation is None else np.asarray(s.orientation, np.float32)) for s in ds]


# ------------------------------------------------------------------------------- metrics


def boundary_f1_voxelwise(pred, truth):
    """F1 of boolean boundary maps, voxel by voxel (no tolerance)."""
    tp = np.logical_and(pred, truth).sum()
    p, t = pred.sum(), truth.sum()
    return float(2 * tp / max(p + t, 1))


def grain_f1(pred_labels, true_labels, min_gt_size: int = 0):
    """Grain F1 at IoU > 0.5 (:func:`micro_sym.metrics.grain_f1`, the 2D evaluation's score); label 0 is
    ignored in both maps, and true grains under ``min_gt_size`` voxels are left out of the count."""
    from micro_sym.metrics import grain_f1 as scores

    return float(scores(pred_labels, true_labels, min_gt_size=min_gt_size)["f1"])


def evaluate3d(model, volumes, *, threshold_deg=5.0, min_size=20, boundary_threshold=0.5, device="cpu", period=None,
               measure_grains=False):
    """Held-out metrics of ``volumes`` (``(image, grains, quats)``), pooled: :func:`pool3d` of
    :func:`evaluate3d_volumes` (training validation: without the grain measurement, by default)."""
    return pool3d(evaluate3d_volumes(model, volumes, threshold_deg=threshold_deg, min_size=min_size,
                                     boundary_threshold=boundary_threshold, device=device, period=period,
                                     measure_grains=measure_grains))


def network_grains(net, img, *, period=None, threshold_deg=5.0, min_size=20, boundary_threshold=0.5, device="cpu"):
    """``(maps, labels)``: the grain rule's maps (:func:`micro_sym.inference.tiles.rule_maps`) and the
    seeded grains of a :class:`~micro_sym.inference.network.Network` on one whole volume, as
    :func:`evaluate3d_volumes` makes them (``period``: "measure", a first-ring spacing in voxels, or
    None for the volume's own sampling)."""
    from micro_sym.grains.rules import grains_by_rule
    from micro_sym.inference.tiles import predict_raw, rule_maps

    run = net
    if period is not None:
        from micro_sym.inference.rescale import rescale_for_input

        run, _ = rescale_for_input(net, img, period=None if period == "measure" else float(period))
    maps = rule_maps(run, predict_raw(run, img, device=device))
    # The run's rule: a resampled network's lengths are in model voxels, as segment applies them.
    labels = grains_by_rule(maps["orientation"], maps["boundary"], run.grain_rule(threshold_deg, 3), symmetry="cubic",
                            min_size=min_size, boundary_threshold=boundary_threshold)
    return maps, labels


def evaluate3d_volumes(model, volumes, *, threshold_deg=5.0, min_size=20, boundary_threshold=0.5, device="cpu",
                       period=None, measure_grains=True, split_grains=False, min_gt_size=0) -> list[dict]:
    """Per-volume held-out metrics: boundary F1, grain F1 at IoU > 0.5, median cubic misorientation
    (degrees), vacuum left unassigned and Σ3 twin-boundary recall and precision.

    ``boundary_f1`` is the exact voxel overlap of the predicted and true 2-voxel-thick boundary
    maps. ``boundary_f1_tolerance`` is the 2D evaluation's score (:func:`micro_sym.metrics.boundary_f1_masks`:
    both maps thinned across their thickness, 2-voxel tolerance), reported beside it but not used
    as the headline: in 3D a ball of radius 2 around a voxel holds 33 voxels, and on the synthetic
    test volumes (15% boundary voxels) a random mask already scores 0.58 with it, against 0.19-0.20
    on the 2D test micrographs (``python bench/studies/check_boundary_score_chance.py``).

    Grains by the seeded rule for network maps of ``micro-sym segment``
    (:func:`micro_sym.grains.rules.network_rule`: seeds by the 6-connected pair rule at
    ``threshold_deg`` well inside the predicted boundaries, seeds under ``min_size`` voxels dropped,
    a bounded flood). Voxels with a boundary probability ``>= boundary_threshold`` are predicted
    boundary. Misorientation is measured on the true grains' interior voxels, on the orientation map as
    ``segment`` writes it: for a harmonic network each predicted grain's orientation, measured from the
    volume where it was measured (``measure_grains``), else its mean orientation
    (:func:`micro_sym.grains.field.table_orientations`), so voxels in no predicted grain have none and do
    not count; ``network_misorientation_deg``: the same with the network's orientations alone (and
    ``sigma3_*_network`` the Σ3 scores below with them). ``period`` ("measure" or
    the first-ring spacing in voxels) runs the network at its training period
    (:func:`micro_sym.inference.rescale.rescale_for_input`), as ``segment`` does.

    ``vacuum_unassigned`` (:func:`micro_sym.metrics3d.vacuum_unassigned`): of the true vacuum (id-0
    voxels more than 3 voxels from every true grain), the fraction left out of every predicted grain. ``sigma3_recall`` and
    ``sigma3_precision`` (:func:`micro_sym.metrics3d.sigma3_boundaries`, volumes with true
    orientations only): the share of the true twin-boundary faces that the prediction finds between
    two grains it classifies as Σ3 from their orientations in the map (as above), and the share of its Σ3
    faces that lie on a true one (1-voxel tolerance both ways). Each row also holds the counts these
    fractions come from. ``grain_lattice_misorientation_deg``: the same median misorientation with each
    predicted grain's orientation measured from the volume inside it (:func:`measured_grain_orientations`),
    over the true grains' interior voxels whose predicted grain was measured (``grain_lattice_coverage``:
    their share); ``sigma3_*_measured``: the Σ3 scores with those orientations (``measure_grains``; about
    40 ms a grain).
    """
    from micro_sym.grains.field import grain_orientations, paint
    from micro_sym.inference.network import as_network
    from micro_sym.metrics import boundary_f1_masks
    from micro_sym.metrics3d import sigma3_boundaries, vacuum_unassigned

    rows = []
    net = as_network(model, export=False)
    for img, grains, quats in volumes:
        maps, labels = network_grains(net, img, period=period, threshold_deg=threshold_deg, min_size=min_size,
                                      boundary_threshold=boundary_threshold, device=device)
        if split_grains:  # split and joined by the measured lattice, as segment --split-grains
            labels = _refined(net, img, labels, maps["orientation"])
        prob, q = maps["boundary"], maps["orientation"]
        if net.grain_field:  # each grain's mean orientation over its voxels, the network's
            q = paint(labels, grain_orientations(q, labels, net.grain_field))
        true_boundary = boundary_from_grains(grains)
        predicted = prob >= boundary_threshold
        row = {"boundary_f1": boundary_f1_voxelwise(predicted, true_boundary),
               "boundary_f1_tolerance": boundary_f1_masks(predicted, true_boundary)["f1"],
               "grain_f1": grain_f1(labels, np.where(true_boundary, 0, grains), min_gt_size)}
        inside = ~true_boundary
        row |= vacuum_unassigned(labels, grains)
        if quats is not None:
            row["median_misorientation_deg"] = row["network_misorientation_deg"] = _median_misorientation(q, quats, inside)
            network = sigma3_boundaries(labels, q, grains, quats)
            row |= network | {f"{k}_network": v for k, v in network.items()}
            measured = measured_grain_orientations(img, labels) if measure_grains else None
            if measured is not None:
                have = np.isfinite(measured[0])
                row["grain_lattice_misorientation_deg"] = _median_misorientation(measured, quats, inside & have)
                row["grain_lattice_coverage"] = float((inside & have & (grains > 0)).sum() / max((inside & (grains > 0)).sum(), 1))
                row |= {f"{k}_measured": v for k, v in sigma3_boundaries(labels, measured, grains, quats).items()}
                if net.grain_field:  # the map as segment writes it: measured where measured, else the network's mean
                    shown = np.where(have, measured, q)
                    row["median_misorientation_deg"] = _median_misorientation(shown, quats, inside)
                    row |= sigma3_boundaries(labels, shown, grains, quats)
        rows.append(row)
    return rows


def _median_misorientation(q, quats, where) -> float:
    """Median cubic misorientation (degrees) of the maps ``q`` and ``quats`` ``(4, ...)`` over ``where``
    (voxels whose ``q`` is NaN do not count); NaN where none is left."""
    err = misorientation_cubic(np.moveaxis(q, 0, -1)[where], np.moveaxis(quats, 0, -1)[where])
    return float(np.nanmedian(err)) if np.isfinite(err).any() else float("nan")


def _refined(net, volume, labels, fields):
    """``labels`` split and joined by the volume's measured lattice (:func:`micro_sym.grains.split3d.refine_volume`)."""
    from micro_sym.classical.lattice_measure3d import measure_lattice_3d
    from micro_sym.errors import MicroSymError
    from micro_sym.grains.split3d import refine_volume

    ring = measure_lattice_3d(volume).get("ring_frequency")
    if not (net.grain_field and ring):
        raise MicroSymError("--split-grains needs a 3D network with a harmonic field and volumes that show a lattice ring")
    return refine_volume(labels, fields, np.asarray(volume, np.float32), ring=ring, degrees=net.grain_field)


def measured_grain_orientations(volume, labels):
    """Each predicted grain's orientation measured from the volume inside it
    (:func:`micro_sym.classical.grain_orientation3d.grain_orientations`) painted over its voxels,
    ``(4, *shape)`` (NaN where not measured); None where the volume shows no lattice ring."""
    from micro_sym.classical.grain_orientation3d import grain_orientations
    from micro_sym.classical.lattice_measure3d import measure_lattice_3d

    ring = measure_lattice_3d(volume).get("ring_frequency")
    if not ring:
        return None
    r = grain_orientations(volume, labels, ring_frequency=ring)
    table = np.full((int(labels.max()) + 1, 4), np.nan)
    table[r["ids"]] = r["quaternions"]
    return np.moveaxis(table[labels], -1, 0)


#: Per-volume scores that :func:`pool3d` averages over the volumes.
_MEAN_KEYS = ("boundary_f1", "boundary_f1_tolerance", "grain_f1", "median_misorientation_deg",
              "network_misorientation_deg", "grain_lattice_misorientation_deg", "grain_lattice_coverage")


def pool3d(rows) -> dict:
    """Dataset scores of :func:`evaluate3d_volumes` rows: the mean over volumes of the boundary F1s, the
    grain F1 and the median misorientations (over the volumes that have them); vacuum and Σ3 scores
    from the counts summed over volumes (:func:`micro_sym.metrics3d.pool`), with those counts, also for
    the measured grain orientations alone (``*_measured``) and the network's (``*_network``); and ``n_volumes``."""
    from micro_sym.metrics3d import pool

    means = {k: float(np.mean([r[k] for r in rows if k in r])) for k in _MEAN_KEYS if any(k in r for r in rows)}
    extra = {}
    for suffix in ("_measured", "_network"):  # the Σ3 scores with other orientations, pooled alike
        other = [{k.removesuffix(suffix): v for k, v in r.items() if k.endswith(suffix)} for r in rows]
        if any(other):
            extra |= {f"{k}{suffix}": v for k, v in pool(other).items() if k.startswith("sigma3")}
    return means | pool(rows) | extra | {"n_volumes": len(rows)}


# ------------------------------------------------------------------------------- CLI entry points


def cli_evaluate3d(model, dataset, *, device="cpu", threshold=5.0, min_size=20, boundary_threshold=0.5, json_out=None,
                   log=print, period=None, split_grains=False, min_gt_size=0):
    """``micro-sym evaluate`` for 3D models: the :func:`evaluate3d_volumes` metrics per volume and pooled
    (:func:`pool3d`), printed as a table and written as JSON (``overall`` and ``volumes``)."""
    from types import SimpleNamespace

    from micro_sym.models import load_model
    from micro_sym.training.config import SyntheticCfg

    m = load_model(model, device=device, export=True)
    if str(dataset) == "synthetic":
        # The held-out volumes of the model's own training config (other seeds than training); an
        # exported file keeps its source's provenance under "source".
        trained = (m.meta.get("trained_on") or m.meta.get("source", {}).get("trained_on") or {}).get("config") or {}
        seed = int(trained.get("seed", (trained.get("train") or {}).get("seed", 0)))  # files before the one config
        cfg = SimpleNamespace(synthetic=SyntheticCfg(**(trained.get("synthetic") or {})), seed=seed)
        vols = make_volumes(cfg.synthetic.n_val, cfg.synthetic.shape, seed + 1000, **_synth_kw(cfg))
        names = [f"synthetic-{i}" for i in range(len(vols))]
    else:
        named = load_volumes(dataset, None)
        names, vols = [v[0] for v in named], [v[1:] for v in named]
    rows = evaluate3d_volumes(m, vols, threshold_deg=threshold, min_size=min_size, boundary_threshold=boundary_threshold,
                              device=device, period=period, split_grains=split_grains, min_gt_size=min_gt_size)
    metrics = pool3d(rows)
    nan = float("nan")
    log(f"{'volume':<24} {'boundary F1':>11} {'grain F1':>9} {'ori med °':>9} {'network °':>9} {'measured °':>10} "
        f"{'vacuum unass.':>13} {'Σ3 recall':>9} {'Σ3 prec.':>8} {'Σ3 faces':>8}")
    for name, r in [*zip(names, rows), ("overall", metrics)]:
        log(f"{name:<24} {r['boundary_f1']:>11.3f} {r['grain_f1']:>9.3f} {r.get('median_misorientation_deg', nan):>9.2f} "
            f"{r.get('network_misorientation_deg', nan):>9.2f} {r.get('grain_lattice_misorientation_deg', nan):>10.2f} "
            f"{r['vacuum_unassigned']:>13.3f} {r.get('sigma3_recall', nan):>9.3f} {r.get('sigma3_precision', nan):>8.3f} "
            f"{r.get('sigma3_faces_true', 0):>8}")
    log(f"boundary F1 {metrics['boundary_f1']:.3f}  grain F1 {metrics['grain_f1']:.3f}  "
        f"median misorientation {metrics.get('median_misorientation_deg', nan):.2f}°  ({metrics['n_volumes']} volumes)")
    report = {"overall": metrics, "volumes": dict(zip(names, rows)), "model": {"path": m.meta.get("path"), "config": m.config},
              "dataset": str(dataset), "period": period, "min_gt_size": min_gt_size,
              **({"split_grains": True} if split_grains else {})}
    if json_out:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(json_out).write_text(json.dumps(report, indent=2))
    return report


def is_3d_model(name_or_path) -> bool:
    """True when a model file (or bundled name) holds a 3D model."""
    from micro_sym.models.registry import resolve_model_path

    from micro_sym.deploy.export import DEPLOYED_TAG, load_deployed

    try:
        path = resolve_model_path(name_or_path)
        if path.suffix in (".onnx", ".ts", ".safetensors"):  # exported files keep ndim in their metadata
            return load_deployed(path).ndim == 3
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return False  # load_model reports the problem
    if not isinstance(blob, dict):
        return False
    if blob.get("format") == DEPLOYED_TAG:  # an exported plain-torch file (the bundled default-3d is one)
        return int(blob["meta"].get("ndim", 2)) == 3
    return isinstance(blob.get("config"), dict) and blob["config"].get("arch") == "gcnn3d"

"""Training and evaluation of the 3D models (boundary + cubic l = 4 orientation field).

Read top to bottom: synthetic lattice volumes (when no dataset is given), targets, the loss, the
training loop, inference with decoding, metrics. ``micro-sym train`` / ``micro-sym evaluate`` call
:func:`train3d` / :func:`evaluate3d` for 3D configs and datasets.

Synthetic data: until ``micro_sym.synth`` ships its 3D generator, :func:`synth_lattice_volume` makes
small atomic-resolution-like tomograms: a power-diagram-free Voronoi polycrystal with a uniformly
random cubic orientation per grain, each grain filled with a simple-cubic lattice density
``Σ_i cos(2π u_i / a)`` in crystal coordinates ``u = Rᵀ x`` (cubic-invariant, so the image determines
the orientation exactly modulo the 24 cube rotations, as in real data), blurred and noisy.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

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
    labels = cell + 1
    boundary = np.zeros(shape, dtype=bool)
    for ax in range(3):
        a = np.moveaxis(labels, ax, 0)
        b = np.moveaxis(boundary, ax, 0)
        diff = a[1:] != a[:-1]
        b[1:] |= diff
        b[:-1] |= diff
    grains = np.where(boundary, 0, labels).astype(np.uint32)
    quats = np.moveaxis(q[cell], -1, 0).astype(np.float32)
    return image.astype(np.float32), grains, quats


def make_volumes(n, shape, seed, **kw):
    """``n`` synthetic volumes as a list of ``(image, grains, quats)``."""
    rng = np.random.default_rng(seed)
    return [synth_lattice_volume(shape, rng=rng, **kw) for _ in range(n)]


def load_dataset3d(root):
    """3D samples of a labeled dataset (docs/design.md §1) as ``(image, grains, quats)`` tuples."""
    from micro_sym.io.datasets import LabeledDataset
    from micro_sym.errors import MicroSymError

    out = []
    for s in LabeledDataset(root):
        img = np.asarray(s.image if hasattr(s, "image") else s[0], dtype=np.float32)
        grains = np.asarray(s.grains if hasattr(s, "grains") else s[1])
        quats = getattr(s, "orientation", None)
        if img.ndim != 3:
            raise MicroSymError(f"{root}: sample is not a 3D volume (shape {img.shape})")
        out.append((img, grains.astype(np.uint32), None if quats is None else np.asarray(quats, np.float32)))
    return out


# ------------------------------------------------------------------------------- targets and loss


def boundary_from_grains(grains):
    """Boundary voxels: label 0, or a face neighbour with another label.

    Datasets mark boundaries either with 0 (docs/design.md §1) or only by the change of grain id (the
    synthetic 3D generator labels every voxel); this rule gives the same 2-voxel-thick boundary
    for both.
    """
    boundary = grains == 0
    for ax in range(grains.ndim):
        a = np.moveaxis(grains, ax, 0)
        b = np.moveaxis(boundary, ax, 0)  # a view: writes go into boundary
        diff = (a[1:] != a[:-1]) & (a[1:] > 0) & (a[:-1] > 0)
        b[1:] |= diff
        b[:-1] |= diff
    return boundary


def targets(grains, quats, degrees=(4,)):
    """Boundary target (z, y, x) float32 and orientation target (d, z, y, x) float32 (NaN = ignore)."""
    bmask = boundary_from_grains(grains)
    boundary = bmask.astype(np.float32)
    if quats is None:
        return boundary, None
    c = quat_to_sh4(np.moveaxis(quats, 0, -1), degrees).astype(np.float32)
    c[bmask] = np.nan  # orientation is only learned inside grains
    return boundary, np.moveaxis(c, -1, 0)


def loss_fn(out, boundary, orient, pos_weight: float = 2.0, w_orient: float = 4.0):
    """BCE on the boundary logit + MSE on the orientation field over valid voxels."""
    bce = torch.nn.functional.binary_cross_entropy_with_logits(
        out[:, 0], boundary, pos_weight=torch.tensor(pos_weight, device=out.device))
    if orient is None:
        return bce
    valid = torch.isfinite(orient[:, :1]).float()
    diff = (out[:, 1:] - torch.nan_to_num(orient)) ** 2 * valid
    mse = diff.sum() / (valid.sum() * orient.shape[1]).clamp(min=1)
    return bce + w_orient * mse


# ------------------------------------------------------------------------------- training


def _crops(volumes, size, batch, rng, degrees, augment):
    from micro_sym.models.gcnn3d import cube_grid_rotations, rotate_volume

    xs, bs, os_ = [], [], []
    for _ in range(batch):
        img, grains, quats, lohi, tb, to = volumes[rng.integers(len(volumes))]
        z, y, x = (rng.integers(0, s - size + 1) for s in img.shape)
        sl = (slice(z, z + size), slice(y, y + size), slice(x, x + size))
        xi, bi, oi = img[sl], tb[sl], to[(slice(None),) + sl]
        if augment:
            # Rotation augmentation (the plain baseline's only way to learn the symmetry); orientation
            # targets transform with ρ(g) so the pair stays consistent.
            from micro_sym.models.gcnn3d import field_matrices

            gi = int(rng.integers(24))
            r = cube_grid_rotations()[gi]
            xi, bi = rotate_volume(xi, r), rotate_volume(bi, r)
            oi = np.einsum("ij,j...->i...", field_matrices(tuple(degrees))[gi], rotate_volume(oi, r))
        xs.append(np.ascontiguousarray(xi))
        bs.append(np.ascontiguousarray(bi))
        os_.append(np.ascontiguousarray(oi))
    return (torch.from_numpy(np.stack(xs)[:, None]), torch.from_numpy(np.stack(bs)),
            torch.from_numpy(np.stack(os_).astype(np.float32)))


def prepare(volumes, model):
    """Normalize each volume with its whole-volume range and precompute targets."""
    from micro_sym.models.normalize import intensity_range

    out = []
    for img, grains, quats in volumes:
        lo, hi = intensity_range(img)
        tb, to = targets(grains, quats, model.degrees)
        out.append((model.normalize(img, lo, hi), grains, quats, (lo, hi), tb, to))
    return out


def train3d(model, train_volumes, *, steps=300, crop=24, batch=2, lr=3e-3, seconds=None, augment=True,
            log=None, seed=0, device="cpu", amp=None):
    """Train a 3D model (Adam, cosine learning rate) on random crops; returns the loss history.

    Parameters
    ----------
    model : SegModel3D
    train_volumes : list of (image, grains, quats)
    steps : int
    crop : int
        Cubic crop size (a multiple of ``model.total_stride``).
    batch : int
    lr : float
    seconds : float, optional
        Wall-clock budget; training stops early when it is spent.
    augment : bool
        Random grid rotations of the crops.
    log : callable, optional
        ``log(step, loss, elapsed)``.
    device : str
        ``"cpu"`` or ``"cuda"``.
    amp : {None, "bf16", "fp16"}
        Mixed precision on CUDA (autocast; fp16 with a gradient scaler). The loss is computed in fp32.
    """
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    data = prepare(train_volumes, model)
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    # fp16 needs loss scaling; bf16 and fp32 do not (the scaler is then a no-op).
    scaler = torch.amp.GradScaler("cuda", enabled=(amp == "fp16" and str(device).startswith("cuda")))
    t0, hist = time.time(), []
    for step in range(steps):
        x, b, o = (t.to(device) for t in _crops(data, crop, batch, rng, model.degrees, augment))
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp) if str(device).startswith("cuda") else None
        with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
            out = model(x)
        loss = loss_fn(out.float(), b, o)
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        # Cosine decay over whichever budget (steps or seconds) runs out first.
        progress = max((step + 1) / steps, (time.time() - t0) / seconds if seconds else 0.0)
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + np.cos(np.pi * min(progress, 1.0)))
        hist.append(float(loss.detach()))
        if log and (step % 10 == 0 or step == steps - 1):
            log(step, float(np.mean(hist[-10:])), time.time() - t0)
        if seconds and time.time() - t0 > seconds:
            break
    model.eval()
    return hist


# ------------------------------------------------------------------------------- metrics


def boundary_f1_voxelwise(pred, truth):
    """F1 of boolean boundary maps, voxel by voxel (no tolerance)."""
    tp = np.logical_and(pred, truth).sum()
    p, t = pred.sum(), truth.sum()
    return float(2 * tp / max(p + t, 1))


def grain_f1(pred_labels, true_labels, iou: float = 0.5):
    """Grain F1 at IoU > ``iou`` (> 0.5 makes matches unique); label 0 is ignored in both maps."""
    a, b = pred_labels.ravel().astype(np.int64), true_labels.ravel().astype(np.int64)
    keep = (a > 0) | (b > 0)
    a, b = a[keep], b[keep]
    na, nb = np.bincount(a), np.bincount(b)
    pairs, inter = np.unique(np.stack([a, b]), axis=1, return_counts=True)
    ok = (pairs[0] > 0) & (pairs[1] > 0)
    pa, pb, inter = pairs[0][ok], pairs[1][ok], inter[ok]
    ious = inter / (na[pa] + nb[pb] - inter)
    matches = int((ious > iou).sum())
    n_pred, n_true = int((na[1:] > 0).sum()), int((nb[1:] > 0).sum())
    prec, rec = matches / max(n_pred, 1), matches / max(n_true, 1)
    return float(2 * prec * rec / max(prec + rec, 1e-12))


def evaluate3d(model, volumes, *, threshold_deg=5.0, min_size=20, boundary_threshold=0.5, device="cpu"):
    """Held-out metrics: boundary F1, grain F1 at IoU > 0.5, median cubic misorientation (degrees).

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
    boundary. Misorientation is measured on the true grains' interior voxels.
    """
    from micro_sym.grains.rules import grains_by_rule, network_rule
    from micro_sym.inference.network import as_network
    from micro_sym.inference.tiles import predict_array
    from micro_sym.metrics import boundary_f1_masks

    rows = []
    rule = network_rule(threshold_deg, 3)
    net = as_network(model, export=False)
    for img, grains, quats in volumes:
        maps = predict_array(net, img, device=device)
        prob, q = maps["boundary"], maps["orientation"]
        labels = grains_by_rule(q, prob, rule, symmetry="cubic", min_size=min_size, boundary_threshold=boundary_threshold)
        true_boundary = boundary_from_grains(grains)
        predicted = prob >= boundary_threshold
        row = {"boundary_f1": boundary_f1_voxelwise(predicted, true_boundary),
               "boundary_f1_tolerance": boundary_f1_masks(predicted, true_boundary)["f1"],
               "grain_f1": grain_f1(labels, np.where(true_boundary, 0, grains))}
        if quats is not None:
            inside = ~true_boundary
            err = misorientation_cubic(np.moveaxis(q, 0, -1)[inside], np.moveaxis(quats, 0, -1)[inside])
            row["median_misorientation_deg"] = float(np.nanmedian(err))
        rows.append(row)
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]} | {"n_volumes": len(rows)}


def main_train_default(out_path, seconds=780.0, seed=0, log_path=None):
    """Train the bundled default 3D model on synthetic volumes within a wall-clock budget.

    Writes ``out_path`` (a model file) and a JSON report next to it; returns the held-out metrics.
    """
    from micro_sym.models import save_model
    from micro_sym.models.gcnn3d import build_model3d

    torch.set_num_threads(1)
    cfg = {"variant": "octa", "width": 48, "levels": 2, "degrees": [4]}
    model = build_model3d(cfg)
    shape, kw = (32, 32, 32), dict(grain_size=12.0, period=3.5)
    train = make_volumes(12, shape, seed=seed, **kw)
    held_out = make_volumes(3, shape, seed=seed + 1000, **kw)
    logf = open(log_path, "a") if log_path else None

    def log(step, loss, el):
        line = f"step {step} loss {loss:.4f} t {el:.0f}s"
        print(line, flush=True)
        if logf:
            logf.write(line + "\n")
            logf.flush()

    hist = train3d(model, train, steps=100000, crop=24, batch=2, lr=3e-3, seconds=seconds, log=log, seed=seed)
    metrics = evaluate3d(model, held_out)
    report = {"config": model.config, "steps": len(hist), "final_loss": float(np.mean(hist[-20:])),
              "held_out": metrics, "data": {"generator": "synth_lattice_volume", "shape": shape, **kw,
                                            "train": 12, "held_out": 3, "seed": seed}}
    save_model(model, out_path, trained_on=report["data"], metrics=metrics)
    Path(str(out_path) + ".json").write_text(json.dumps(report, indent=2))
    return report


# ------------------------------------------------------------------------------- CLI entry points


def is_3d_config(path) -> bool:
    """True when a training config YAML describes a 3D model (``model: {arch: gcnn3d}`` or ``ndim: 3``)."""
    import yaml

    try:
        cfg = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return False  # the 2D loader reports unreadable configs
    model = cfg.get("model", {}) if isinstance(cfg, dict) else {}
    return isinstance(model, dict) and (model.get("arch") == "gcnn3d" or model.get("ndim") == 3)


TRAIN3D_DEFAULTS = {
    "model": {"arch": "gcnn3d", "variant": "octa", "width": 48, "levels": 2, "degrees": [4]},
    "train": {"steps": 2000, "seconds": None, "crop": 24, "batch": 2, "lr": 3e-3, "augment": True, "seed": 0,
              "device": "cpu", "amp": None, "val_fraction": 0.2},
    "eval": {"threshold_deg": 5.0, "min_size": 20},
    "synthetic": {"n_train": 12, "n_val": 3, "shape": [32, 32, 32], "grain_size": 12.0, "period": 3.5},
}


def _load_volumes(data, cfg, seed):
    """Training volumes from a labeled 3D dataset, or ``synthetic`` (the generator above)."""
    from micro_sym.errors import MicroSymError

    if str(data) == "synthetic":
        s = cfg["synthetic"]
        kw = dict(grain_size=s["grain_size"], period=s["period"])
        return (make_volumes(s["n_train"], s["shape"], seed, **kw), make_volumes(s["n_val"], s["shape"], seed + 1000, **kw))
    from micro_sym.io.datasets import LabeledDataset

    ds = LabeledDataset(data)
    if ds.ndim != 3:
        raise MicroSymError(f"{data}: 3D model config but this dataset is {ds.ndim}D")
    vols = [(s.image, s.grains, s.orientation) for s in ds]
    frac = cfg["train"]["val_fraction"]
    n_val = min(len(vols) - 1, max(1, int(round(len(vols) * frac)))) if frac > 0 and len(vols) > 1 else 0
    return vols[n_val:], vols[:n_val]


def cli_train3d(config, data, out, *, val=None, device=None, seed=None, steps=None, log=print):
    """``micro-sym train`` for 3D configs: train, validate, write ``OUT/model.pt`` and ``OUT/report.json``."""
    import copy as _copy

    import yaml

    from micro_sym.models import save_model
    from micro_sym.models.gcnn3d import build_model3d

    cfg = _copy.deepcopy(TRAIN3D_DEFAULTS)
    user = yaml.safe_load(Path(config).read_text()) or {}
    for key, value in user.items():
        if isinstance(value, dict) and key in cfg:
            cfg[key].update(value)
        else:
            cfg[key] = value
    t = cfg["train"]
    t["device"] = device or t["device"]
    t["seed"] = t["seed"] if seed is None else seed
    t["steps"] = t["steps"] if steps is None else steps
    train_vols, val_vols = _load_volumes(data, cfg, t["seed"])
    if val is not None:
        _, val_vols = _load_volumes(val, {**cfg, "train": {**t, "val_fraction": 1.0}}, t["seed"])
    model = build_model3d(cfg["model"])
    hist = train3d(model, train_vols, steps=t["steps"], crop=t["crop"], batch=t["batch"], lr=t["lr"],
                   seconds=t["seconds"], augment=t["augment"], seed=t["seed"], device=t["device"], amp=t["amp"],
                   log=lambda s, loss, el: log(f"step {s} loss {loss:.4f} ({el:.0f} s)"))
    metrics = evaluate3d(model.cpu(), val_vols, threshold_deg=cfg["eval"]["threshold_deg"],
                         min_size=cfg["eval"]["min_size"]) if val_vols else {}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    prov = {"data": str(data), "config": cfg, "steps_done": len(hist)}
    save_model(model, out / "model.pt", trained_on=prov, metrics=metrics)
    (out / "report.json").write_text(json.dumps({"overall": metrics, "loss": hist, **prov}, indent=2, default=str))
    log(f"done: {out / 'model.pt'} | val boundary F1 {metrics.get('boundary_f1', float('nan')):.3f}, grain F1 "
        f"{metrics.get('grain_f1', float('nan')):.3f}, median misorientation {metrics.get('median_misorientation_deg', float('nan')):.2f}°")
    return metrics


def cli_evaluate3d(model, dataset, *, device="cpu", threshold=5.0, min_size=20, boundary_threshold=0.5, json_out=None,
                   log=print):
    """``micro-sym evaluate`` for 3D models: boundary F1, grain F1 (IoU > 0.5), median misorientation."""
    from micro_sym.models import load_model

    m = load_model(model, device=device, export=True)
    # ``synthetic`` regenerates the held-out volumes of the model's own training config when it has one.
    # (an exported file keeps its source's provenance under "source")
    trained = (m.meta.get("trained_on") or m.meta.get("source", {}).get("trained_on") or {}).get("config") or {}
    syn = {**TRAIN3D_DEFAULTS["synthetic"], **(trained.get("synthetic") or {})}
    seed = int((trained.get("train") or {}).get("seed", 0))
    train, held_out = _load_volumes(dataset, {**TRAIN3D_DEFAULTS, "synthetic": syn, "train": {"val_fraction": 0.0}}, seed)
    # ``synthetic``: the held-out volumes (other seeds than training); a dataset: all of its volumes.
    vols = held_out if str(dataset) == "synthetic" else train
    metrics = evaluate3d(m, vols, threshold_deg=threshold, min_size=min_size, boundary_threshold=boundary_threshold,
                         device=device)
    log(f"boundary F1 {metrics['boundary_f1']:.3f}  grain F1 {metrics['grain_f1']:.3f}  "
        f"median misorientation {metrics.get('median_misorientation_deg', float('nan')):.2f}°  ({metrics['n_volumes']} volumes)")
    report = {"overall": metrics, "model": {"path": m.meta.get("path"), "config": m.config}, "dataset": str(dataset)}
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

"""Training a 2D grain segmenter on a labeled dataset (docs/design.md §1), readable top to bottom.

``train(config, data, out)``:

1. load the dataset into memory, each image normalized once with its whole-image range (as at
   inference), targets: boundary band (2 px along every grain interface), orientation vector
   ``(cos kθ, sin kθ)`` and its mask (grain interiors with a defined angle);
2. each step draws random crops, augments them (intensity, noise, blur; rotations/flips, which also
   transform the orientation target, for non-equivariant models), and minimizes
   ``weighted BCE + dice`` on boundaries plus the masked squared error of the orientation vector;
3. each epoch validates on whole images with the metrics of :mod:`micro_sym.metrics` and writes
   ``RUN/last.pt`` (training state, for ``--resume``), ``RUN/best.pt`` and, at the end,
   ``RUN/model.pt`` (model files for :func:`micro_sym.models.load_model`) and ``RUN/history.jsonl``.

The orientation loss is symmetry-aware by construction: ``(cos kθ, sin kθ)`` is identical for all
k symmetric descriptions of one lattice, so no min over equivalents is needed.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from scipy import ndimage

from micro_sym.errors import MicroSymError
from micro_sym.metrics import boundary_from_labels
from micro_sym.models import build_model, intensity_range, normalize, save_model
from micro_sym.orientation import encode_angle

# --------------------------------------------------------------------------- config


class _Cfg(BaseModel):
    # A misspelt key must be an error, not a silent default.
    model_config = ConfigDict(extra="forbid")


class DataCfg(_Cfg):
    crop: int = Field(128, ge=16, description="random crop side (rounded down to the model's total stride)")
    batch_size: int = Field(8, ge=1)
    steps_per_epoch: int = Field(100, ge=1)
    val_fraction: float = Field(0.1, ge=0, lt=1, description="images held out for validation when no --val set is given")
    val_max_images: int = Field(8, ge=1, description="at most this many validation images per epoch (whole images)")


class AugCfg(_Cfg):
    rot_flip: Optional[bool] = Field(None, description="random rot90/mirror; default: unless the model is dihedral-equivariant (D4, D8, ...)")
    contrast: tuple[float, float] = Field((0.7, 1.4), description="multiplicative range on normalized intensities")
    offset: float = Field(0.2, ge=0, description="additive offset range ±")
    noise: float = Field(0.15, ge=0, description="max std of added Gaussian noise (normalized units)")
    blur: float = Field(1.0, ge=0, description="max Gaussian blur sigma, px (applied to half the crops)")
    invert_prob: float = Field(0.0, ge=0, le=1, description="probability of inverting contrast (bright-field look)")


class LossCfg(_Cfg):
    pos_weight: Optional[float] = Field(None, description="BCE weight of boundary pixels; default: per-batch negative/positive ratio, capped at 10")
    dice: float = Field(1.0, ge=0, description="weight of the soft dice term")
    orientation: float = Field(1.0, ge=0, description="weight of the orientation vector loss")
    distill: float = Field(0.0, ge=0, description="weight of matching a teacher model's outputs (train(teacher=...): "
                           "recovering a pruned model from the unpruned one)")
    low_angle_weight: float = Field(1.0, ge=1, description="BCE weight of boundary pixels on interfaces misoriented by "
                                    "less than low_angle_max (weak lattice contrast; where predicted boundaries leak)")
    low_angle_max: float = Field(20.0, gt=0, description="degrees: interfaces below this count as low-angle")


class OptimCfg(_Cfg):
    epochs: int = Field(20, ge=1)
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    warmup_steps: int = Field(100, ge=0)
    grad_clip: float = Field(1.0, gt=0)


class EvalCfg(_Cfg):
    threshold: float = Field(5.0, gt=0, description="grain rule misorientation threshold, degrees")
    min_size: int = Field(32, ge=0)
    boundary_threshold: float = Field(0.5, gt=0, lt=1)


class TrainConfig(_Cfg):
    model: dict = Field(default_factory=lambda: {"arch": "unet_equi", "group": "D4"})
    data: DataCfg = DataCfg()
    aug: AugCfg = AugCfg()
    loss: LossCfg = LossCfg()
    optim: OptimCfg = OptimCfg()
    eval: EvalCfg = EvalCfg()
    seed: int = 0
    device: Literal["cpu", "cuda"] = "cpu"
    threads: Optional[int] = Field(None, ge=1, description="torch CPU threads (default: torch's choice)")


def finetuning_config(model, base: dict | None = None) -> TrainConfig:
    """The training config to continue training ``model``: ``base`` (default: the config its file
    records in ``meta['trained_on']``, unknown keys dropped) with the model's own architecture."""
    base = dict(base or (getattr(model, "meta", {}).get("trained_on", {}) or {}).get("config", {}) or {})
    base = {k: v for k, v in base.items() if k in TrainConfig.model_fields}
    base["model"] = dict(model.config)
    return TrainConfig.model_validate(base)


def load_train_config(path=None, **overrides) -> TrainConfig:
    """Read and validate a YAML training config; ``overrides`` use dotted keys (``optim.epochs=3``).

    Raises
    ------
    MicroSymError
        Unreadable YAML or invalid values (one line naming the file and the field).
    """
    import yaml

    data, where = {}, "config"
    if path is not None:
        path, where = Path(path), str(path)
        if not path.is_file():
            raise MicroSymError(f"{path}: config file does not exist")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise MicroSymError(f"{path}: not valid YAML ({type(err).__name__})") from None
        if not isinstance(data, dict):
            raise MicroSymError(f"{path}: expected a mapping at the top level")
    for key, value in overrides.items():
        if value is None:
            continue
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "config"
        raise MicroSymError(f"{where}: {loc}: {first['msg']} ({len(err.errors())} problem(s))") from None


# --------------------------------------------------------------------------- data


class Prepared:
    """One training image in memory: normalized image and dense targets."""

    def __init__(self, sample, k: int):
        self.name = sample.name
        lo, hi = intensity_range(sample.image)  # whole image, exactly as predict_image does
        self.image = np.nan_to_num(normalize(sample.image, lo, hi))
        self.boundary = boundary_from_labels(sample.grains).astype(np.float32)
        self.angle = sample.orientation.astype(np.float32)
        self.mask = ((self.boundary == 0) & (sample.grains > 0) & np.isfinite(self.angle)).astype(np.float32)
        self.interface_misorientation = interface_misorientation(sample.grains, self.angle, k)


def interface_misorientation(grains, angle, k: int) -> np.ndarray:
    """Per pixel, the smallest misorientation (degrees) of the grain interfaces it lies on; inf off interfaces.

    An interface is a pair of 4-neighbours with different grain ids (> 0); both of its pixels get
    its misorientation, so the 2-px boundary band of :func:`boundary_from_labels` is covered.
    """
    from micro_sym.orientation import misorientation_2d

    out = np.full(grains.shape, np.inf, np.float32)
    for ax in (0, 1):
        g0, g1 = np.moveaxis(grains, ax, 0)[:-1], np.moveaxis(grains, ax, 0)[1:]
        a0, a1 = np.moveaxis(angle, ax, 0)[:-1], np.moveaxis(angle, ax, 0)[1:]
        m = np.nan_to_num(misorientation_2d(a0, a1, k).astype(np.float32), nan=np.inf)
        m[(g0 == g1) | (g0 <= 0) | (g1 <= 0)] = np.inf
        o = np.moveaxis(out, ax, 0)
        np.minimum(o[:-1], m, out=o[:-1])
        np.minimum(o[1:], m, out=o[1:])
    return out


def load_training_data(root, k: int, what: str = "training") -> list[Prepared]:
    """Load and check a labeled dataset for training a k-fold 2D model."""
    from micro_sym.io.datasets import LabeledDataset

    ds = LabeledDataset(root)
    if ds.ndim != 2:
        raise MicroSymError(f"{root}: {what} data must be 2D images, this dataset is {ds.ndim}D")
    if ds.k != k:
        raise MicroSymError(f"{root}: {ds.lattice} lattice (k={ds.k}) but the model is configured for k={k}")
    out = []
    for s in ds:
        if s.orientation is None:
            raise MicroSymError(f"{Path(root) / 'orientation'}: no orientation map for '{s.name}' (needed to train the orientation head)")
        out.append(Prepared(s, k))
    return out


def _transform_angle(angle, rot: int, mirror: bool):
    """Angles (degrees) after ``np.rot90(·, rot)`` then ``np.fliplr`` of the image (docs/design.md §1 frame).

    rot90 (counter-clockwise as displayed) adds 90° per quarter turn; a left-right mirror maps the
    direction angle θ to 180° - θ.
    """
    a = angle + 90.0 * rot
    return 180.0 - a if mirror else a


def random_batch(data: list[Prepared], cfg: TrainConfig, crop: int, k: int, rot_flip: bool, rng: np.random.Generator):
    """A batch of augmented random crops: ``x (B,1,c,c)``, ``boundary (B,1,c,c)``, ``vec (B,2,c,c)``, ``mask (B,1,c,c)``
    and ``weight (B,1,c,c)``, the per-pixel boundary loss weight (``cfg.loss.low_angle_weight`` on low-angle interfaces, else 1)."""
    areas = np.array([d.image.size for d in data], dtype=np.float64)
    xs, bs, vs, ms, ws = [], [], [], [], []
    a = cfg.aug
    for _ in range(cfg.data.batch_size):
        d = data[rng.choice(len(data), p=areas / areas.sum())]
        y0 = rng.integers(0, d.image.shape[0] - crop + 1)
        x0 = rng.integers(0, d.image.shape[1] - crop + 1)
        sl = (slice(y0, y0 + crop), slice(x0, x0 + crop))
        img, bnd, ang, msk = d.image[sl], d.boundary[sl], d.angle[sl], d.mask[sl]
        wgt = np.where(d.interface_misorientation[sl] < cfg.loss.low_angle_max, cfg.loss.low_angle_weight, 1.0).astype(np.float32)
        if rot_flip:
            rot, mirror = int(rng.integers(4)), bool(rng.integers(2))
            t = lambda z: np.fliplr(np.rot90(z, rot)) if mirror else np.rot90(z, rot)  # noqa: E731
            img, bnd, msk, wgt = t(img), t(bnd), t(msk), t(wgt)
            ang = _transform_angle(t(ang), rot, mirror)
        img = img.astype(np.float32, copy=True)
        if a.blur > 0 and rng.random() < 0.5:
            img = ndimage.gaussian_filter(img, rng.uniform(0, a.blur))
        if rng.random() < a.invert_prob:
            img = -img
        img = img * rng.uniform(*a.contrast) + rng.uniform(-a.offset, a.offset)
        if a.noise > 0:
            img = img + rng.normal(0, rng.uniform(0, a.noise), img.shape).astype(np.float32)
        vec = np.nan_to_num(encode_angle(ang, k)).astype(np.float32)
        xs.append(img[None])
        bs.append(np.ascontiguousarray(bnd)[None])
        vs.append(vec)
        ms.append(np.ascontiguousarray(msk)[None])
        ws.append(np.ascontiguousarray(wgt)[None])
    return tuple(torch.from_numpy(np.ascontiguousarray(np.stack(z))) for z in (xs, bs, vs, ms, ws))


# --------------------------------------------------------------------------- loss


def segmentation_loss(out: torch.Tensor, boundary: torch.Tensor, vec: torch.Tensor, mask: torch.Tensor, cfg: LossCfg,
                      weight: torch.Tensor | None = None):
    """Total loss and its parts: weighted BCE + dice (boundary) and masked vector MSE (orientation).

    ``weight`` (per pixel, optional) multiplies the BCE terms, e.g. more on low-angle interfaces.
    """
    logit = out[:, :1].float()
    pos = boundary.sum()
    if cfg.pos_weight is not None:
        pw = torch.tensor(cfg.pos_weight)
    else:
        # Boundaries cover ~5-10% of pixels; weighting by the ratio keeps them from being ignored.
        pw = ((boundary.numel() - pos) / pos.clamp(min=1)).clamp(1.0, 10.0)
    bce = F.binary_cross_entropy_with_logits(logit, boundary, weight=weight, pos_weight=pw.to(logit.device))
    prob = torch.sigmoid(logit)
    dice = 1 - (2 * (prob * boundary).sum() + 1) / (prob.sum() + boundary.sum() + 1)
    err = ((out[:, 1:3].float() - vec) ** 2).sum(1, keepdim=True)
    ori = (err * mask).sum() / mask.sum().clamp(min=1)
    total = bce + cfg.dice * dice + cfg.orientation * ori
    return total, {"bce": bce.item(), "dice": dice.item(), "orientation": ori.item()}


def distillation_loss(out: torch.Tensor, teacher_out: torch.Tensor) -> torch.Tensor:
    """Match a teacher everywhere: BCE to its boundary probability plus MSE to its orientation vector.

    Unlike the labels, the teacher also speaks for the pixels the orientation loss masks out (near
    boundaries) and gives soft boundary targets, which is what a pruned network needs to recover the
    unpruned one's behaviour with few steps.
    """
    target = torch.sigmoid(teacher_out[:, :1].float())
    bce = F.binary_cross_entropy_with_logits(out[:, :1].float(), target)
    vec = ((out[:, 1:3].float() - teacher_out[:, 1:3].float()) ** 2).sum(1).mean()
    return bce + vec


# --------------------------------------------------------------------------- loop


def _lr_at(step: int, total: int, cfg: OptimCfg) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    p = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(p, 1.0)))


def _score(overall: dict) -> float:
    """Model selection: mean of the two F1s minus 1% per degree of median orientation error."""
    ori = overall["orientation_median_deg"]
    return (overall["boundary_f1"] + overall["grain_f1"]) / 2 - 0.01 * (ori if np.isfinite(ori) else 90.0)


def _seed_all(seed: int):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(config: TrainConfig, data, out, *, val=None, resume: bool = False, log=print,
          stop_after_epoch: int | None = None, init=None, teacher=None) -> dict:
    """Train a model; returns the final validation report.

    Parameters
    ----------
    config : TrainConfig
        See ``configs/train_default_2d.yaml``.
    data : path
        Labeled training dataset (with orientation maps).
    out : path
        Run directory: ``last.pt``, ``best.pt``, ``model.pt``, ``history.jsonl``, ``config.json``.
    val : path, optional
        Validation dataset; default: the last ``data.val_fraction`` of the training images.
    resume : bool
        Continue from ``out/last.pt`` (same config required).
    log : callable
        Receives one line of text per log event.
    stop_after_epoch : int, optional
        Stop (as if interrupted) after this epoch, leaving ``last.pt`` for ``resume``.
    init : path, optional
        Model file whose weights start the run (fine-tuning, e.g. the bundled ``default_2d.pt`` on
        your own micrographs); its architecture must equal ``config.model``. Ignored on ``resume``.
    teacher : str, path or module, optional
        A model (name, file or loaded 2D model) whose outputs the run also matches, with weight
        ``config.loss.distill`` (:func:`distillation_loss`); required when that weight is positive.
    """
    out = Path(out)
    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MicroSymError("--device cuda: no CUDA device available")
    if config.threads:
        torch.set_num_threads(config.threads)
    _seed_all(config.seed)
    model = build_model(config.model).to(device)
    if init is not None and not resume:
        _init_from(model, init)
    k, stride = model.k, model.total_stride
    if config.loss.distill > 0 and teacher is None:
        raise MicroSymError("loss.distill > 0 needs a teacher model")
    if teacher is not None:
        teacher = _load_teacher(teacher, model, device)
    # Augment with the grid's rot90/mirror unless the network is already invariant to all of them:
    # dihedral groups (D4, D8, ...) contain them; rotation-only groups (C4, C8) lack the mirrors.
    group = model.config.get("group", "C1") if model.config["arch"] == "unet_equi" else "C1"
    dihedral = group.startswith("D")
    rot_flip = (not dihedral) if config.aug.rot_flip is None else config.aug.rot_flip

    train_data = load_training_data(data, k)
    if val is not None:
        val_data = _val_samples(val, k)
    else:
        n_val = int(round(len(train_data) * config.data.val_fraction))
        if n_val == 0 or n_val >= len(train_data):
            raise MicroSymError(f"{data}: need a --val dataset or more images ({len(train_data)}) for a validation split")
        val_data = _val_samples(data, k, names=[d.name for d in train_data[-n_val:]])
        train_data = train_data[:-n_val]
    val_data = val_data[: config.data.val_max_images]
    crop = (config.data.crop // stride) * stride
    small = min(min(d.image.shape) for d in train_data)
    if small < crop:
        raise MicroSymError(f"{data}: images of side {small} px are smaller than the crop size {crop}")

    opt = torch.optim.AdamW(model.parameters(), lr=config.optim.lr, weight_decay=config.optim.weight_decay)
    use_amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    rng = np.random.default_rng(config.seed)
    total_steps = config.optim.epochs * config.data.steps_per_epoch
    start_epoch, best, history = 0, -float("inf"), []
    cfg_json = config.model_dump(mode="json")

    out.mkdir(parents=True, exist_ok=True)
    if resume:
        state = _load_state(out / "last.pt")
        if _resume_key(state["config"]) != _resume_key(cfg_json):
            raise MicroSymError(f"{out / 'last.pt'}: was written with a different config; refusing to resume")
        _load_weights(model, state["model"], out / "last.pt")
        opt.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        rng.bit_generator.state = json.loads(state["numpy_rng"])
        torch.set_rng_state(state["torch_rng"])
        start_epoch, best, history = state["epoch"], state["best"], json.loads(state["history"])
        log(f"resumed from {out / 'last.pt'} at epoch {start_epoch}")
    (out / "config.json").write_text(json.dumps(cfg_json, indent=2))
    provenance = {
        "data": str(Path(data).resolve()), "val": str(Path(val).resolve()) if val else None,
        "train_images": [d.name for d in train_data], "val_images": [d.name for d in val_data],
        "config": cfg_json, "command": " ".join(sys.argv),
        "teacher": getattr(teacher, "name", None) if teacher is not None else None,
    }
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model {model.config['arch']} {model.config.get('group', '')} widths={model.config['widths']} params={n_params} "
        f"halo={model.halo} | {len(train_data)} train / {len(val_data)} val images | crop {crop} | rot/flip aug {rot_flip}")

    report = None
    for epoch in range(start_epoch, config.optim.epochs):
        model.train()
        t0, sums = time.time(), {}
        for it in range(config.data.steps_per_epoch):
            step = epoch * config.data.steps_per_epoch + it
            for g in opt.param_groups:
                g["lr"] = _lr_at(step, total_steps, config.optim)
            x, b, v, m, w = (t.to(device, non_blocking=True) for t in random_batch(train_data, config, crop, k, rot_flip, rng))
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
                pred = model(x)
            loss, parts = segmentation_loss(pred, b, v, m, config.loss, weight=w if config.loss.low_angle_weight != 1 else None)
            if teacher is not None and config.loss.distill > 0:
                with torch.no_grad():
                    teacher_out = teacher(x)
                kd = distillation_loss(pred, teacher_out)
                loss = loss + config.loss.distill * kd
                parts["distill"] = kd.item()
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.grad_clip)
            scaler.step(opt)
            scaler.update()
            for key, val_ in {"loss": loss.item(), **parts}.items():
                sums[key] = sums.get(key, 0.0) + val_
            if (it + 1) % max(1, config.data.steps_per_epoch // 5) == 0 and it + 1 < config.data.steps_per_epoch:
                log(f"  epoch {epoch + 1} step {it + 1}/{config.data.steps_per_epoch} loss {sums['loss'] / (it + 1):.4f} "
                    f"({(time.time() - t0) / (it + 1):.2f} s/step)")
        train_time = time.time() - t0
        means = {key: s / config.data.steps_per_epoch for key, s in sums.items()}

        model.eval()
        report = _validate(model, val_data, config, device)
        ov = report["overall"]
        score = _score(ov)
        record = {"epoch": epoch + 1, "step": (epoch + 1) * config.data.steps_per_epoch, **means,
                  "val_boundary_f1": ov["boundary_f1"], "val_grain_f1": ov["grain_f1"],
                  "val_orientation_median_deg": ov["orientation_median_deg"], "score": score,
                  "train_s": round(train_time, 1), "val_s": round(time.time() - t0 - train_time, 1)}
        history.append(record)
        with open(out / "history.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        log(f"epoch {epoch + 1}/{config.optim.epochs} loss {means['loss']:.4f} (bce {means['bce']:.3f} dice {means['dice']:.3f} "
            f"ori {means['orientation']:.3f}) | val bF1 {ov['boundary_f1']:.3f} gF1 {ov['grain_f1']:.3f} "
            f"ori {ov['orientation_median_deg']:.2f}° | {train_time:.0f}+{record['val_s']:.0f}s")
        if score > best:
            best = score
            save_model(model, out / "best.pt", trained_on=provenance, metrics={"val": ov, "epoch": epoch + 1})
        model.train()  # escnn state_dict keys depend on the mode: save the training state in train mode
        _save_state(out / "last.pt", model, opt, scaler, rng, epoch + 1, best, history, cfg_json)
        if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch and epoch + 1 < config.optim.epochs:
            log(f"stopped after epoch {epoch + 1}; continue with --resume")
            return report

    model.eval()
    if report is None:  # resumed a finished run
        report = _validate(model, val_data, config, device)
    save_model(model, out / "model.pt", trained_on=provenance, metrics={"val": report["overall"], "epoch": config.optim.epochs})
    return report


def _load_teacher(teacher, model, device):
    """The teacher as a frozen plain-torch module on ``device``; it must map the same lattice."""
    from micro_sym.models import load_model

    name = None
    if isinstance(teacher, (str, Path)):
        name = str(teacher)
        teacher = load_model(teacher, export=True)
    elif hasattr(teacher, "export") and not getattr(teacher, "exported", True):
        from micro_sym.models.fields import safe_copy

        teacher = safe_copy(teacher).export()  # plain torch: same outputs, faster, and the caller's model untouched
    if int(getattr(teacher, "ndim", 2)) != 2 or int(getattr(teacher, "k", model.k)) != model.k:
        raise MicroSymError(f"teacher {name or ''}: must be a 2D model for the same lattice (k = {model.k})".replace("  ", " "))
    teacher = teacher.to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    teacher.name = name or getattr(teacher, "name", "in-memory model")
    return teacher


def _resume_key(cfg_json: dict) -> dict:
    """What must match to resume: everything but the device and the number of epochs (which may grow)."""
    key = json.loads(json.dumps(cfg_json))
    key.pop("device", None)
    key.get("optim", {}).pop("epochs", None)
    return key


def _val_samples(root, k, names=None):
    from micro_sym.io.datasets import LabeledDataset

    ds = LabeledDataset(root)
    if ds.ndim != 2 or ds.k != k:
        raise MicroSymError(f"{root}: validation data must be 2D with k={k} ({ds.lattice} lattice, {ds.ndim}D found)")
    return [ds[n] for n in (names or ds.names)]


def _validate(model, samples, config: TrainConfig, device) -> dict:
    from micro_sym.inference.evaluate import evaluate_model

    e = config.eval
    return evaluate_model(model, samples, threshold=e.threshold, min_size=e.min_size, boundary_threshold=e.boundary_threshold,
                          device=device)


def _save_state(path, model, opt, scaler, rng, epoch, best, history, cfg_json):
    state = {
        # escnn's expanded filters are derived buffers whose presence depends on the module's mode
        # history; the trainable weights alone define the model.
        "model": {key: v for key, v in model.state_dict().items() if not _derived(key)}, "optimizer": opt.state_dict(), "scaler": scaler.state_dict(),
        # JSON strings keep the state loadable with weights_only=True (numpy's state has big ints).
        "numpy_rng": json.dumps(rng.bit_generator.state), "torch_rng": torch.get_rng_state(),
        "epoch": epoch, "best": best, "history": json.dumps(history), "config": cfg_json,
    }
    tmp = Path(str(path) + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # a crash mid-save keeps the previous checkpoint


def _derived(key: str) -> bool:
    return key.endswith(".filter") or key.endswith(".expanded_bias")


def _load_weights(model, state: dict, path):
    missing, unexpected = model.load_state_dict(state, strict=False)
    bad = [key for key in missing + unexpected if not _derived(key)]
    if bad:
        raise MicroSymError(f"{path}: checkpoint does not fit the configured model ({bad[0]} ...)")


def _init_from(model, path):
    """Copy the weights of the model file ``path`` into ``model`` (same architecture required)."""
    from micro_sym.models import load_model

    source = load_model(path)
    if not hasattr(source, "state_dict") or getattr(source, "exported", False):
        raise MicroSymError(f"{path}: --init needs a trainable model file (.pt from micro-sym train), not an exported one")
    ours, theirs = dict(model.config), dict(source.config)
    differs = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
    if differs:
        raise MicroSymError(f"{path}: model differs from the configured one in {', '.join(differs)}")
    source.train()  # escnn state_dict keys depend on the mode; the run starts in train mode
    _load_weights(model, {k: v for k, v in source.state_dict().items() if not _derived(k)}, path)


def _load_state(path):
    if not Path(path).is_file():
        raise MicroSymError(f"{path}: no checkpoint to resume from")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise MicroSymError(f"{path}: unreadable checkpoint ({type(err).__name__})") from None

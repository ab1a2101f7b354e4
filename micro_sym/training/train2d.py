"""What training a 2D grain segmenter needs beyond the loop (:mod:`micro_sym.training.loop`).

:class:`Task2D`: the labeled micrographs in memory, each normalized once with its whole-image range
(as at inference), with targets: boundary band (2 px along every grain interface), orientation vector
``(cos kθ, sin kθ)`` and its mask (grain interiors with a defined angle); random augmented crops
(intensity, noise, blur; rotations/flips, which also transform the orientation target, for models not
equivariant to them); the loss ``weighted BCE + dice`` on boundaries plus the masked squared error of
the orientation vector; validation on whole images with the metrics of :mod:`micro_sym.metrics`.

The orientation loss is symmetry-aware by construction: ``(cos kθ, sin kθ)`` is identical for all
k symmetric descriptions of one lattice, so no min over equivalents is needed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from micro_sym.errors import MicroSymError
from micro_sym.metrics import boundary_from_labels
from micro_sym.models import intensity_range, normalize
from micro_sym.orientation import encode_angle
from micro_sym.training.config import LossCfg, TrainConfig

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


# --------------------------------------------------------------------------- the task


class Task2D:
    """Training a 2D model on labeled micrographs: data, batches, loss and validation for
    :func:`micro_sym.training.loop.train`."""

    def __init__(self, config: TrainConfig, model):
        self.config, self.model = config, model
        self.k = model.k
        # Augment with the grid's rot90/mirror unless the network is already invariant to all of them:
        # dihedral groups (D4, D8, ...) contain them; rotation-only groups (C4, C8) lack the mirrors.
        group = model.config.get("group", "C1") if model.config["arch"] == "unet_equi" else "C1"
        self.rot_flip = (not group.startswith("D")) if config.aug.rot_flip is None else config.aug.rot_flip
        self.teacher = None

    def load(self, data, val, *, teacher=None, device="cpu"):
        """Training images (with targets) and validation samples; the teacher for distillation."""
        config, k = self.config, self.k
        if config.loss.distill > 0 and teacher is None:
            raise MicroSymError("loss.distill > 0 needs a teacher model")
        if teacher is not None:
            self.teacher = _load_teacher(teacher, self.model, device)
        from micro_sym.training.config import dataset_list

        paths = dataset_list(data)
        if len(paths) > 1 and val is None:
            raise MicroSymError("several training datasets need a --val dataset")
        train_data = []
        for path in paths:
            loaded = load_training_data(path, k)
            if len(paths) > 1:  # names repeat across datasets; the provenance keeps them apart
                for d in loaded:
                    d.name = f"{Path(path).name}/{d.name}"
            train_data += loaded
        if val is not None:
            val_data = _val_samples(val, k)
        else:
            n_val = int(round(len(train_data) * config.data.val_fraction))
            if n_val == 0 or n_val >= len(train_data):
                raise MicroSymError(f"{data}: need a --val dataset or more images ({len(train_data)}) for a validation split")
            val_data = _val_samples(data, k, names=[d.name for d in train_data[-n_val:]])
            train_data = train_data[:-n_val]
        self.train_data, self.val_data = train_data, val_data[: config.data.val_max_images]
        stride = self.model.total_stride
        self.crop = (config.data.crop // stride) * stride
        small = min(min(d.image.shape) for d in train_data)
        if small < self.crop:
            raise MicroSymError(f"{data}: images of side {small} px are smaller than the crop size {self.crop}")

    def provenance(self) -> dict:
        return {"train_images": [d.name for d in self.train_data], "val_images": [d.name for d in self.val_data],
                "teacher": getattr(self.teacher, "name", None)}

    def model_meta(self) -> dict:
        """Saved with the weights: the training images' lattice period, so that inference can resample
        other images to it (median of the power-spectrum estimates of up to 8 training images)."""
        from micro_sym.classical import estimate_period
        from micro_sym.orientation.symmetry import lattice

        name = lattice(self.k, ndim=2).name
        periods = []
        for d in self.train_data[:: max(1, len(self.train_data) // 8)][:8]:
            try:
                periods.append(estimate_period(d.image, name))
            except MicroSymError:  # an image without measurable fringes says nothing about the period
                continue
        return {"lattice_period_px": round(float(np.median(periods)), 3) if periods else None}

    def summary(self) -> str:
        return (f"{len(self.train_data)} train / {len(self.val_data)} val images | crop {self.crop} | "
                f"rot/flip aug {self.rot_flip}")

    def batch(self, rng) -> tuple:
        return random_batch(self.train_data, self.config, self.crop, self.k, self.rot_flip, rng)

    def loss(self, pred, batch):
        x, b, v, m, w = batch
        cfg = self.config.loss
        loss, parts = segmentation_loss(pred, b, v, m, cfg, weight=w if cfg.low_angle_weight != 1 else None)
        if self.teacher is not None and cfg.distill > 0:
            with torch.no_grad():
                teacher_out = self.teacher(x)
            kd = distillation_loss(pred, teacher_out)
            loss = loss + cfg.distill * kd
            parts["distill"] = kd.item()
        return loss, parts

    def validate(self, model, device) -> dict:
        return _validate(model, self.val_data, self.config, device)

    @staticmethod
    def headline(overall: dict) -> dict:
        return {k: overall[k] for k in ("boundary_f1", "grain_f1", "orientation_median_deg")}

"""Fine-tuning a 2D model from its current weights, and re-estimating batch-norm statistics (both
used after pruning, :mod:`micro_sym.deploy.prune`)."""

from __future__ import annotations

import numpy as np
import torch

from micro_sym.errors import MicroSymError
from micro_sym.models.fields import eval_mode, safe_copy


def finetune_model(model, data, *, epochs: int = 2, out=None, val=None, steps_per_epoch: int | None = None,
                   lr: float = 1e-3, crop: int | None = None, batch_size: int | None = None, seed: int = 0,
                   threads: int | None = None, log=print, train_config: dict | None = None,
                   teacher=None, distill: float = 0.0):
    """Fine-tune a (pruned) 2D model with :func:`micro_sym.training.train2d.train`, starting from its weights.

    The training loop builds its model from the config; starting it from given weights uses its own
    resume mechanism: a checkpoint at epoch 0 holding these weights (and a fresh optimizer) is
    written to ``out/last.pt`` and the run is resumed from it.

    Parameters
    ----------
    model : SegModel (escnn, 2D)
    data : path
        Labeled training dataset.
    epochs, steps_per_epoch, lr, crop, batch_size, seed, threads :
        Overrides of the training config (defaults: the model's own training config when its file
        records one, else the training defaults).
    out : path, optional
        Run directory (default: a temporary one, removed afterwards).
    val : path, optional
        Validation dataset (default: the training loop's split of ``data``).
    train_config : dict, optional
        Base training config (``TrainConfig`` fields); default: ``model.meta['trained_on']['config']``.
    teacher, distill :
        Also match this model's outputs (typically the unpruned model) with weight ``distill``
        (:func:`micro_sym.training.train2d.distillation_loss`).

    Returns
    -------
    SegModel
        The fine-tuned model (eval mode; weights of the last epoch, as the training loop's ``model.pt``).
    """
    import shutil
    import tempfile
    from pathlib import Path

    import numpy as np

    from micro_sym.models import load_model
    from micro_sym.training.config import finetuning_config
    from micro_sym.training.loop import save_state, train

    if int(getattr(model, "ndim", 2)) != 2:
        raise MicroSymError("finetune: only 2D models have a training loop here (3D: micro_sym.training.train3d)")
    cfg = finetuning_config(model, train_config)
    cfg.optim.epochs = int(epochs)
    cfg.optim.lr = float(lr)
    cfg.optim.warmup_steps = min(cfg.optim.warmup_steps, 20)  # weights are trained: a short ramp suffices
    if steps_per_epoch:
        cfg.data.steps_per_epoch = int(steps_per_epoch)
    if crop:
        cfg.data.crop = int(crop)
    if batch_size:
        cfg.data.batch_size = int(batch_size)
    if threads:
        cfg.threads = int(threads)
    cfg.seed = int(seed)
    cfg.device = "cpu"
    cfg.loss.distill = float(distill)
    tmp = out is None
    out = Path(tempfile.mkdtemp(prefix="micro_sym_finetune_")) if tmp else Path(out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        work = safe_copy(model).train()
        opt = torch.optim.AdamW(work.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
        scaler = torch.amp.GradScaler("cuda", enabled=False)
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        save_state(out / "last.pt", work, opt, scaler, rng, 0, -float("inf"), [], cfg.model_dump(mode="json"))
        (out / "history.jsonl").unlink(missing_ok=True)
        train(cfg, data, out, val=val, resume=True, log=log, teacher=teacher if distill > 0 else None)
        tuned = load_model(out / "model.pt")
        tuned.meta = dict(getattr(model, "meta", {}), finetune={"data": str(data), "epochs": int(epochs), "lr": float(lr),
                                                                "steps_per_epoch": cfg.data.steps_per_epoch,
                                                                "distill": float(distill)})
        return tuned.eval()
    finally:
        if tmp:
            shutil.rmtree(out, ignore_errors=True)


@torch.no_grad()
def recalibrate_bn(model, data, *, batches: int = 20, batch_size: int = 6, crop: int = 160, seed: int = 0):
    """Re-estimate every batch norm's running statistics on training crops (in place; returns the model).

    Removing fields shifts the mean and variance of every downstream pre-activation, so the stored
    statistics no longer normalize what the pruned network computes; re-estimating them (a
    cumulative average over ``batches`` batches, no weights change) restores much of the accuracy
    before any fine-tuning and gives fine-tuning a far better start.

    Parameters
    ----------
    model : SegModel (2D, escnn or exported)
    data : path
        Labeled training dataset (images are normalized as in training).
    """
    from micro_sym.training.config import TrainConfig
    from micro_sym.training.train2d import load_training_data, random_batch

    cfg = TrainConfig.model_validate({"model": {"arch": "unet_plain"}, "data": {"crop": crop, "batch_size": batch_size}})
    samples = load_training_data(data, model.k)
    crop = min(crop, min(min(d.image.shape) for d in samples))
    cfg.data.crop = crop
    c = (crop // model.total_stride) * model.total_stride
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum) for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch counts equally
    rng = np.random.default_rng(seed)
    model.train()
    for _ in range(int(batches)):
        x, *_ = random_batch(samples, cfg, c, model.k, False, rng)
        model(x)
    for m, mom in zip(bns, saved):
        m.momentum = mom
    return eval_mode(model)

"""The training loop for every model, 2D and 3D, readable top to bottom.

``train(config, data, out)``:

1. build the model from ``config.model`` (or start from a model file's weights, ``init``) and let the
   dimension's *task* load the data: :class:`micro_sym.training.train2d.Task2D` (micrographs) or
   :class:`micro_sym.training.train3d.Task3D` (volumes). A task turns data into augmented random
   crops with targets, computes the loss and validates on whole images or volumes;
2. each step: learning rate (linear warm-up, then cosine decay over the steps or the wall-clock
   budget, whichever runs out first), a batch, the loss, AdamW with gradient clipping;
3. each epoch: validate, append to ``RUN/history.jsonl``, keep ``RUN/best.pt`` (best model-selection
   score) and ``RUN/last.pt`` (the whole training state, for ``resume``);
4. at the end ``RUN/model.pt`` (a model file for :func:`micro_sym.models.load_model`) and
   ``RUN/report.json`` (the final validation report).

An interrupted run resumes from ``last.pt`` with the same results; a config that differs in more than
the device and the number of epochs refuses to resume.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

from micro_sym.errors import MicroSymError
from micro_sym.models import save_model
from micro_sym.training.config import OptimCfg, TrainConfig


def build(config: TrainConfig):
    """The model a config describes (2D :func:`~micro_sym.models.build_model` or 3D ``build_model3d``)."""
    if config.ndim == 3:
        from micro_sym.models.gcnn3d import build_model3d

        return build_model3d(config.model)
    from micro_sym.models import build_model

    return build_model(config.model)


def task_class(config: TrainConfig):
    """The dimension-specific part of training (data, batches, loss, validation) for a config."""
    if config.ndim == 3:
        from micro_sym.training.train3d import Task3D

        return Task3D
    from micro_sym.training.train2d import Task2D

    return Task2D


def train(config: TrainConfig, data, out, *, val=None, resume: bool = False, log=print,
          stop_after_epoch: int | None = None, init=None, teacher=None) -> dict:
    """Train a model; returns the final validation report (``{"overall": {...}, ...}``).

    Parameters
    ----------
    config : TrainConfig
        See the bundled configs in ``micro_sym/configs/`` (``train_default_2d.yaml``, ``train_3d_synth.yaml``).
    data : path, "synthetic" or a list of paths
        Labeled training dataset (docs/design.md §1, with orientation maps); 3D also accepts
        ``"synthetic"`` (volumes made on the fly, ``config.synthetic``). A list trains on the union of
        several datasets (``val`` is then required).
    out : path
        Run directory: ``last.pt``, ``best.pt``, ``model.pt``, ``history.jsonl``, ``config.json``,
        ``report.json``.
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
        your own micrographs); its architecture must equal ``config.model``, except a 2D model's
        lattice (``k``): then its body starts the run under a new orientation head. Ignored on ``resume``.
    teacher : str, path or module, optional
        2D: a model whose outputs the run also matches, with weight ``config.loss.distill``
        (:func:`micro_sym.training.train2d.distillation_loss`); required when that weight is positive.
    """
    out = Path(out)
    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MicroSymError("--device cuda: no CUDA device available")
    if config.threads:
        torch.set_num_threads(config.threads)
    _seed_all(config.seed)
    model = build(config).to(device)
    if init is not None and not resume:
        _init_from(model, init, log)
    task = task_class(config)(config, model)
    task.load(data, val, teacher=teacher, device=device)

    opt = torch.optim.AdamW(model.parameters(), lr=config.optim.lr, weight_decay=config.optim.weight_decay)
    amp_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(config.amp) if device.type == "cuda" else None
    # fp16 needs loss scaling; bf16 and fp32 do not (the scaler is then a no-op).
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    rng = np.random.default_rng(config.seed)
    steps_per_epoch = config.data.steps_per_epoch
    total_steps = config.optim.epochs * steps_per_epoch
    start_epoch, best, history, elapsed = 0, -float("inf"), [], 0.0
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
        elapsed = float(state.get("elapsed", 0.0))
        if start_epoch or history:
            log(f"resumed from {out / 'last.pt'} at epoch {start_epoch}")
        else:  # a checkpoint before any epoch: a fine-tune starting from given weights, nothing to resume
            log(f"starting from the weights in {out / 'last.pt'}")
    (out / "config.json").write_text(json.dumps(cfg_json, indent=2))
    provenance = {
        "data": _where(data), "val": _where(val) if val else None, **task.provenance(), "config": cfg_json,
        "command": " ".join(sys.argv),
    }
    model_meta = task.model_meta() if hasattr(task, "model_meta") else {}
    from micro_sym.deploy.measure import count_parameters

    n_params = count_parameters(model)  # trainable, as the prune report counts them
    log(f"model {_describe_model(model.config)} params={n_params} halo={model.halo} | {task.summary()}")

    report = None
    t_start = time.time() - elapsed
    out_of_time = False
    for epoch in range(start_epoch, config.optim.epochs):
        model.train()
        t0, sums, done = time.time(), {}, 0
        for it in range(steps_per_epoch):
            step = epoch * steps_per_epoch + it
            lr = _lr_at(step, total_steps, config.optim, time.time() - t_start)
            for g in opt.param_groups:
                g["lr"] = lr
            batch = [t.to(device, non_blocking=True) for t in task.batch(rng)]
            with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                pred = model(batch[0])
            loss, parts = task.loss(pred.float(), batch)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if config.optim.grad_clip > 0:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.grad_clip)
            scaler.step(opt)
            scaler.update()
            done += 1
            for key, value in {"loss": loss.item(), **parts}.items():
                sums[key] = sums.get(key, 0.0) + value
            if (it + 1) % max(1, steps_per_epoch // 5) == 0 and it + 1 < steps_per_epoch:
                log(f"  epoch {epoch + 1} step {it + 1}/{steps_per_epoch} loss {sums['loss'] / (it + 1):.4f} "
                    f"({(time.time() - t0) / (it + 1):.2f} s/step)")
            if config.optim.seconds and time.time() - t_start > config.optim.seconds:
                out_of_time = True
                break
        train_time = time.time() - t0
        means = {key: s / max(done, 1) for key, s in sums.items()}

        model.eval()
        report = task.validate(model, device)
        headline = task.headline(report["overall"])
        score = _score(headline)
        record = {"epoch": epoch + 1, "step": epoch * steps_per_epoch + done, **means,
                  **{f"val_{k}": v for k, v in headline.items()}, "score": score,
                  "train_s": round(train_time, 1), "val_s": round(time.time() - t0 - train_time, 1)}
        history.append(record)
        with open(out / "history.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        parts_text = " ".join(f"{k} {v:.3f}" for k, v in means.items() if k != "loss")
        log(f"epoch {epoch + 1}/{config.optim.epochs} loss {means.get('loss', float('nan')):.4f} ({parts_text}) | "
            f"val bF1 {headline['boundary_f1']:.3f} gF1 {headline['grain_f1']:.3f} "
            f"ori {headline['orientation_median_deg']:.2f}° | {train_time:.0f}+{record['val_s']:.0f}s")
        if score > best:
            best = score
            save_model(model, out / "best.pt", trained_on=provenance, metrics={"val": report["overall"], "epoch": epoch + 1},
                       extra=model_meta)
        model.train()  # escnn state_dict keys depend on the mode: save the training state in train mode
        save_state(out / "last.pt", model, opt, scaler, rng, epoch + 1, best, history, cfg_json, time.time() - t_start)
        if out_of_time:
            log(f"wall-clock budget of {config.optim.seconds:g} s spent after epoch {epoch + 1}")
            break
        if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch and epoch + 1 < config.optim.epochs:
            log(f"stopped after epoch {epoch + 1}; continue with --resume")
            return report

    model.eval()
    if report is None:  # resumed a finished run
        report = task.validate(model, device)
    save_model(model, out / "model.pt", trained_on=provenance, metrics={"val": report["overall"], "epoch": len(history)},
               extra=model_meta)
    (out / "report.json").write_text(json.dumps({**report, "history": history, **provenance}, indent=2, default=str))
    return report


def finished_message(config: TrainConfig, out, report: dict) -> str:
    """The line ``micro-sym train`` prints at the end."""
    h = task_class(config).headline(report["overall"])
    return (f"done: {Path(out) / 'model.pt'} (best: {Path(out) / 'best.pt'}) | val boundary F1 {h['boundary_f1']:.3f}, "
            f"grain F1 {h['grain_f1']:.3f}, median orientation error {h['orientation_median_deg']:.2f}°")


# --------------------------------------------------------------------------- schedule and selection


def _lr_at(step: int, total: int, cfg: OptimCfg, elapsed: float = 0.0) -> float:
    """Linear warm-up, then cosine decay over the steps or the time budget, whichever runs out first."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    p = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    if cfg.seconds:
        p = max(p, elapsed / cfg.seconds)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(p, 1.0)))


def _score(headline: dict) -> float:
    """Model selection: mean of the two F1s minus 1% per degree of median orientation error."""
    ori = headline["orientation_median_deg"]
    return (headline["boundary_f1"] + headline["grain_f1"]) / 2 - 0.01 * (ori if np.isfinite(ori) else 90.0)


def _seed_all(seed: int):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _where(data) -> str | list[str]:
    if isinstance(data, (list, tuple)):
        return [_where(d) for d in data]
    return str(data) if str(data) == "synthetic" else str(Path(data).resolve())



def _describe_model(model_cfg: dict) -> str:
    keys = ("arch", "group", "variant", "widths", "width", "levels", "degrees")
    if "layer_fields" in model_cfg:  # a pruned model: its widths are those before pruning
        keys = tuple(k for k in keys if k not in ("widths", "width")) + ("layer_fields",)
    return " ".join(f"{k}={model_cfg[k]}" for k in keys if k in model_cfg)


# --------------------------------------------------------------------------- checkpoints


def _resume_key(cfg_json: dict) -> dict:
    """What must match to resume: everything but the device and the number of epochs (which may grow)."""
    key = json.loads(json.dumps(cfg_json))
    key.pop("device", None)
    key.get("optim", {}).pop("epochs", None)
    return key


def save_state(path, model, opt, scaler, rng, epoch, best, history, cfg_json, elapsed: float = 0.0):
    """The whole training state (weights, optimizer, random generators, history) as ``last.pt``."""
    state = {
        # escnn's expanded filters are derived buffers whose presence depends on the module's mode
        # history; the trainable weights alone define the model.
        "model": {key: v for key, v in model.state_dict().items() if not _derived(key)}, "optimizer": opt.state_dict(),
        "scaler": scaler.state_dict(),
        # JSON strings keep the state loadable with weights_only=True (numpy's state has big ints).
        "numpy_rng": json.dumps(rng.bit_generator.state), "torch_rng": torch.get_rng_state(),
        "epoch": epoch, "best": best, "history": json.dumps(history), "config": cfg_json, "elapsed": float(elapsed),
    }
    tmp = Path(str(path) + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)  # a crash mid-save keeps the previous checkpoint


def _derived(key: str) -> bool:
    """State rebuilt from the architecture, not learned: escnn's expanded filters and biases, and its
    sampled bases (a buffer a model file need not carry; 3D models read theirs from a cache)."""
    return key.endswith((".filter", ".expanded_bias", ".sampled_basis"))


def _load_weights(model, state: dict, path):
    missing, unexpected = model.load_state_dict(state, strict=False)
    bad = [key for key in missing + unexpected if not _derived(key)]
    if bad:
        raise MicroSymError(f"{path}: checkpoint does not fit the configured model ({bad[0]} ...)")


#: Config keys in which an ``--init`` model may differ from the configured one: the lattice of a 2D
#: network's orientation head. Its body is copied and the head (``core.head``) starts afresh.
HEAD_ONLY_KEYS = frozenset({"k", "lattice"})


def _init_from(model, path, log=print):
    """Copy the weights of the model file ``path`` into ``model`` (same architecture required, except
    for the orientation head's lattice: then all but the head)."""
    from micro_sym.models import load_model

    source = load_model(path)
    if not hasattr(source, "state_dict") or getattr(source, "exported", False):
        raise MicroSymError(f"{path}: --init needs a trainable model file (.pt from micro-sym train), not an exported one")
    ours, theirs = dict(model.config), dict(source.config)
    differs = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
    new_head = bool(differs) and set(differs) <= HEAD_ONLY_KEYS and int(ours.get("ndim", 2)) == 2
    if differs and not new_head:
        raise MicroSymError(f"{path}: model differs from the configured one in {', '.join(differs)}")
    source.train()  # escnn state_dict keys depend on the mode; the run starts in train mode
    state = {k: v for k, v in source.state_dict().items() if not _derived(k)}
    if new_head:
        state = {k: v for k, v in state.items() if not k.startswith("core.head.")}
        head = {k: v for k, v in model.state_dict().items() if k.startswith("core.head.") and not _derived(k)}
        state |= head  # the configured model's freshly initialized head
        log(f"init: {path}'s body; a new orientation head for k = {ours['k']} (it maps k = {theirs['k']})")
    _load_weights(model, state, path)


def _load_state(path):
    if not Path(path).is_file():
        raise MicroSymError(f"{path}: no checkpoint to resume from")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise MicroSymError(f"{path}: unreadable checkpoint ({type(err).__name__})") from None

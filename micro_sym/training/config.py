"""One training config for 2D and 3D models (``micro-sym train CONFIG.yaml``).

A config names the model (``model:``, as :func:`micro_sym.models.build_model` or, with
``arch: gcnn3d``, :func:`micro_sym.models.gcnn3d.build_model3d` takes it) and how to train it. A 3D
model starts from :data:`DEFAULTS_3D`, the values its recipe differs in (small cubic crops, a
fixed boundary weight, no weight decay or warm-up); every key can still be set in the file.
Misspelt keys are errors, not silent defaults.

>>> cfg = load_train_config("train-default-2d", **{"optim.epochs": 3})   # doctest: +SKIP
>>> cfg.ndim, cfg.optim.epochs                                          # doctest: +SKIP
(2, 3)
"""

from __future__ import annotations

import copy
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from micro_sym.config_files import read_yaml_mapping, resolve_config_path, validate_model


class _Cfg(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataCfg(_Cfg):
    crop: int = Field(128, ge=8, description="random crop side (rounded down to the model's total stride)")
    batch_size: int = Field(8, ge=1)
    steps_per_epoch: int = Field(100, ge=1)
    val_fraction: float = Field(0.1, ge=0, lt=1, description="images held out for validation when no --val set is given")
    val_max_images: int = Field(8, ge=1, description="at most this many validation images per epoch (whole images)")


class AugCfg(_Cfg):
    rot_flip: Optional[bool] = Field(None, description="random grid rotations (2D: rot90 and mirrors; 3D: the 24 cube "
                                     "rotations); default: 2D unless the model is dihedral-equivariant, 3D always")
    contrast: tuple[float, float] = Field((0.7, 1.4), description="2D: multiplicative range on normalized intensities")
    offset: float = Field(0.2, ge=0, description="2D: additive offset range ±")
    noise: float = Field(0.15, ge=0, description="2D: max std of added Gaussian noise (normalized units)")
    blur: float = Field(1.0, ge=0, description="2D: max Gaussian blur sigma, px (applied to half the crops)")
    invert_prob: float = Field(0.0, ge=0, le=1, description="2D: probability of inverting contrast (bright-field look)")


class LossCfg(_Cfg):
    pos_weight: Optional[float] = Field(None, description="BCE weight of boundary pixels; default: per-batch negative/positive ratio, capped at 10")
    dice: float = Field(1.0, ge=0, description="2D: weight of the soft dice term")
    orientation: float = Field(1.0, ge=0, description="weight of the orientation loss")
    distill: float = Field(0.0, ge=0, description="2D: weight of matching a teacher model's outputs (train(teacher=...): "
                           "recovering a pruned model from the unpruned one)")
    low_angle_weight: float = Field(1.0, ge=1, description="2D: BCE weight of boundary pixels on interfaces misoriented by "
                                    "less than low_angle_max (weak lattice contrast; where predicted boundaries leak)")
    low_angle_max: float = Field(20.0, gt=0, description="degrees: interfaces below this count as low-angle")
    twin_weight: float = Field(1.0, ge=1, description="3D: BCE weight of boundary voxels on Σ3 twin boundaries (a "
                               "coherent twin continues its parent's lattice planes across the interface: the boundary "
                               "the network misses most)")


class OptimCfg(_Cfg):
    epochs: int = Field(20, ge=1)
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    warmup_steps: int = Field(100, ge=0)
    grad_clip: float = Field(1.0, ge=0, description="gradient norm clip; 0 = off")
    seconds: Optional[float] = Field(None, gt=0, description="wall-clock budget of the whole run (resumes included): "
                                     "training stops when it is spent, and the cosine schedule follows whichever of "
                                     "steps and seconds runs out first")


class EvalCfg(_Cfg):
    threshold: float = Field(5.0, gt=0, description="grain rule misorientation threshold, degrees")
    min_size: int = Field(32, ge=0)
    boundary_threshold: float = Field(0.5, gt=0, lt=1)


class SyntheticCfg(_Cfg):
    """3D volumes made on the fly by ``--data synthetic`` (:func:`micro_sym.training.train3d.make_volumes`)."""

    n_train: int = Field(12, ge=1)
    n_val: int = Field(3, ge=1)
    shape: tuple[int, int, int] = (32, 32, 32)
    grain_size: float = Field(12.0, gt=0)
    period: float = Field(3.5, gt=0)


class TrainConfig(_Cfg):
    model: dict = Field(default_factory=lambda: {"arch": "unet_equi", "group": "D4"})
    data: DataCfg = DataCfg()
    aug: AugCfg = AugCfg()
    loss: LossCfg = LossCfg()
    optim: OptimCfg = OptimCfg()
    eval: EvalCfg = EvalCfg()
    synthetic: SyntheticCfg = SyntheticCfg()
    seed: int = 0
    device: Literal["cpu", "cuda"] = "cpu"
    amp: Optional[Literal["fp16", "bf16"]] = Field(None, description="CUDA mixed precision (autocast)")
    threads: Optional[int] = Field(None, ge=1, description="torch CPU threads (default: torch's choice)")

    @property
    def ndim(self) -> int:
        return 3 if is_3d_model_config(self.model) else 2


#: What a 3D model's recipe starts from (the values in which it differs from the 2D defaults).
DEFAULTS_3D = {
    "model": {"arch": "gcnn3d", "variant": "octa", "width": 48, "levels": 2, "degrees": [4]},
    "data": {"crop": 24, "batch_size": 2, "val_fraction": 0.2},
    "loss": {"pos_weight": 2.0, "dice": 0.0, "orientation": 4.0},
    "optim": {"weight_decay": 0.0, "warmup_steps": 0, "grad_clip": 0.0},
    "eval": {"min_size": 20},
}


def is_3d_model_config(model: dict) -> bool:
    return isinstance(model, dict) and (model.get("arch") == "gcnn3d" or model.get("ndim") == 3)


def validate_config(data: dict, where: str = "config") -> TrainConfig:
    """A :class:`TrainConfig` from a plain mapping, over :data:`DEFAULTS_3D` when it describes a 3D model.

    Raises
    ------
    MicroSymError
        Invalid values or unknown keys (one line naming ``where`` and the field).
    """
    if is_3d_model_config(data.get("model", {})):
        merged = copy.deepcopy(DEFAULTS_3D)
        for key, value in data.items():
            if isinstance(value, dict) and key in merged:
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
        data = merged
    return validate_model(TrainConfig, data, where)


def finetuning_config(model, base: dict | None = None) -> TrainConfig:
    """The training config to continue training ``model``: ``base`` (default: the config its file
    records in ``meta['trained_on']``, unknown keys dropped) with the model's own architecture."""
    base = dict(base or (getattr(model, "meta", {}).get("trained_on", {}) or {}).get("config", {}) or {})
    base = {k: v for k, v in base.items() if k in TrainConfig.model_fields}
    base["model"] = dict(model.config)
    return validate_config(base)


def load_train_config(path=None, **overrides) -> TrainConfig:
    """Read and validate a YAML training config; ``overrides`` use dotted keys (``optim.epochs=3``).

    Parameters
    ----------
    path : str or Path, optional
        A YAML file or a bundled config name (:func:`micro_sym.config_files.bundled_configs`, e.g.
        ``"finetune-default-2d"``); default: the training defaults.

    Raises
    ------
    MicroSymError
        Missing file, unreadable YAML or invalid values (one line naming the file and the field).
    """
    data = {} if path is None else read_yaml_mapping(resolve_config_path(path))
    where = "config" if path is None else str(path)
    for key, value in overrides.items():
        if value is None:
            continue
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return validate_config(data, where)


def dataset_list(data) -> list:
    """``--data`` as a list of datasets (one path, ``"synthetic"``, or already a list)."""
    return list(data) if isinstance(data, (list, tuple)) else [data]

"""YAML config files (synthetic data, training): read one mapping, validate it, with one-line errors.

>>> from pydantic import BaseModel
>>> class Cfg(BaseModel):
...     epochs: int = 1
>>> validate_model(Cfg, {"epochs": "x"}, "train.yaml")
Traceback (most recent call last):
...
micro_sym.errors.MicroSymError: train.yaml: epochs: Input should be a valid integer, unable to parse string as an integer (1 problem(s))
"""

from __future__ import annotations

from pathlib import Path

from micro_sym.errors import MicroSymError

__all__ = ["CONFIGS_DIR", "bundled_configs", "read_yaml_mapping", "resolve_config_path", "validate_model"]

#: Training and fine-tuning configs installed with the package; named like the bundled models
#: (``finetune_default_2d.yaml`` is ``finetune-default-2d``), see :func:`bundled_configs`.
CONFIGS_DIR = Path(__file__).resolve().parent / "configs"


def bundled_configs() -> dict[str, Path]:
    """Bundled config names -> files in :data:`CONFIGS_DIR` (``"train-3d"`` -> ``.../train_3d.yaml``).

    >>> bundled_configs()["train-3d"].name
    'train_3d.yaml'
    """
    return {p.stem.replace("_", "-"): p for p in sorted(CONFIGS_DIR.glob("*.yaml"))}


def resolve_config_path(name_or_path) -> Path:
    """A bundled config name (``"finetune-default-2d"``) or a file path -> the file path.

    Raises
    ------
    MicroSymError
        Neither a bundled name nor an existing file (the message lists the bundled names).
    """
    key = str(name_or_path)
    bundled = bundled_configs()
    if key in bundled:
        return bundled[key]
    path = Path(key)
    if not path.is_file():
        raise MicroSymError(f"{path}: config file does not exist (or is not a regular file); "
                            f"bundled configs: {', '.join(bundled) or 'none in this installation'}")
    return path


def read_yaml_mapping(path) -> dict:
    """The top-level mapping of a YAML file (``{}`` for an empty file).

    Raises
    ------
    MicroSymError
        No such file, invalid YAML, or not a mapping at the top level (one line naming the file).
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise MicroSymError(f"{path}: config file does not exist (or is not a regular file)")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise MicroSymError(f"{path}: not valid YAML ({type(err).__name__})") from None
    if not isinstance(data, dict):
        raise MicroSymError(f"{path}: expected a mapping of settings at the top level")
    return data


def validate_model(cls, data: dict, where: str = "config"):
    """``cls.model_validate(data)`` for a pydantic model class; its first problem as a one-line error.

    Raises
    ------
    MicroSymError
        ``"WHERE: FIELD.PATH: message (N problem(s))"``.
    """
    from pydantic import ValidationError

    try:
        return cls.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        msg = first["msg"].removeprefix("Value error, ")
        raise MicroSymError(f"{where}: {loc + ': ' if loc else ''}{msg} ({len(err.errors())} problem(s))") from None

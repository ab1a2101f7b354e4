"""Sample data: the synthetic micrograph and volume committed in ``sample_data/`` (docs/design.md §1 layout).

A source checkout has the files; an installation without them (a wheel ships no ``sample_data/``)
regenerates sample 0 with :mod:`micro_sym.synth`, the recipe ``sample_data/README.md`` documents.
"""

from __future__ import annotations

import json
from pathlib import Path

SAMPLE_ROOT = Path(__file__).resolve().parents[2] / "sample_data"


def sample_micrograph():
    """``sample_data/micrographs/images/sample_000.tif``: 512² square-lattice micrograph, 55 grains."""
    return _sample("micrographs", "micrograph", dim=2)


def sample_volume():
    """``sample_data/volume/images/sample_000.tif``: 96³ simple-cubic lattice volume, 74 grains."""
    return _sample("volume", "volume", dim=3)


def _sample(folder: str, title: str, dim: int):
    root = SAMPLE_ROOT / folder
    path = root / "images" / "sample_000.tif"
    if path.is_file():
        import tifffile

        image = tifffile.imread(path)  # 0.5 / 0.9 MB: read eagerly so the sample needs no open file
        info = json.loads((root / "dataset.json").read_text())
        scale, unit = tuple(info["pixel_size"]), info.get("unit", "px")
        source = str(path)
    else:
        image, scale, unit = _regenerate(dim)
        source = "micro_sym.synth (regenerated: sample_data/ is not installed)"
    meta = {"path": source, "unit": unit, "pixel_size": scale, "description": f"synthetic {title}, sample_000"}
    # Short names: result layers are called "<image> grains", "<image> orientation ..." and must fit
    # the layer list.
    kwargs = {"name": title, "scale": scale, "metadata": meta}
    from micro_sym_napari._core import layer_units

    units = layer_units(unit, len(scale))
    if units is not None:
        kwargs["units"] = units
    return [(image, kwargs, "image")]


def _regenerate(dim: int):
    from micro_sym.synth import load_config, synth_2d, synth_3d

    config_dir = Path(__file__).resolve().parents[2] / "configs"
    if dim == 2:
        cfg = load_config(config_dir / "synth_2d.yaml" if (config_dir / "synth_2d.yaml").is_file() else None, 2,
                          size=[512, 512])
        s = synth_2d(cfg, seed=[0, 0])
    else:
        cfg = load_config(config_dir / "synth_3d.yaml" if (config_dir / "synth_3d.yaml").is_file() else None, 3,
                          size=[96, 96, 96])
        s = synth_3d(cfg, seed=[0, 0])
    return s.image, (float(cfg.pixel_size),) * dim, cfg.unit

"""Write generated samples as a labeled dataset (docs/design.md §1) that ``micro_sym.io.datasets`` reads.

::

    OUT/
      images/NAME.tif        2D uint16 counts or 3D uint8/float32 volume (zlib-compressed TIFF)
      grains/NAME.tif        uint32 grain ids, 1..N (every pixel labeled; no 0 = unlabeled)
      orientation/NAME.tif   2D float32 degrees in [0, 360/k); 3D float32 (4, z, y, x) quaternions
      boundary/NAME.tif      uint8 1 where the grain id changes to a face neighbour (extra, optional)
      dataset.json           lattice, pixel_size, unit, plus the generator config and per-sample seeds

Sample ``i`` of a dataset generated with seed ``S`` is ``synth_2d(config, seed=[S, i])`` (or
``synth_3d``), so every file can be regenerated from ``dataset.json`` alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from micro_sym import __version__
from micro_sym.errors import MicroSymError

FOLDERS = ("images", "grains", "orientation", "boundary")


def _imwrite(path, data, **kwargs):
    import tifffile

    # The horizontal predictor makes piecewise-constant label maps compress far better; the float
    # predictor needs the optional imagecodecs package, and constant float runs compress well anyway.
    predictor = np.issubdtype(data.dtype, np.integer)
    tifffile.imwrite(path, data, compression="zlib", compressionargs={"level": 9}, predictor=predictor, **kwargs)


def write_sample(root, name: str, sample, pixel_size: float, unit: str) -> None:
    """Write one :class:`Synth2DSample` or :class:`Synth3DSample` into dataset folder ``root``."""
    root = Path(root)
    image = sample.image
    meta = {"unit": unit}
    if image.ndim == 3:
        meta.update(spacing=pixel_size, axes="ZYX")
    # ImageJ-style tags carry the pixel size, which micro_sym.io reads back (uint32 is not ImageJ-legal,
    # so only the image itself is written in ImageJ flavour).
    _imwrite(root / "images" / f"{name}.tif", image, imagej=True, resolution=(1 / pixel_size, 1 / pixel_size), metadata=meta)
    _imwrite(root / "grains" / f"{name}.tif", sample.grains.astype(np.uint32))
    _imwrite(root / "orientation" / f"{name}.tif", sample.orientation.astype(np.float32))
    _imwrite(root / "boundary" / f"{name}.tif", sample.boundary.astype(np.uint8))


def _prepare(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise MicroSymError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise MicroSymError(f"{out}: directory is not empty (use --overwrite to replace its dataset)")
    for folder in FOLDERS:
        (out / folder).mkdir(parents=True, exist_ok=True)
        if overwrite:
            for f in (out / folder).glob("*.tif"):
                f.unlink()


def generate_dataset(out, config, n: int, seed: int = 0, *, overwrite: bool = False, progress=None) -> Path:
    """Generate ``n`` samples with ``config`` (2D or 3D) and write them as a labeled dataset.

    Parameters
    ----------
    out : str or Path
        Dataset directory; must be empty or absent unless ``overwrite``.
    config : Synth2DConfig or Synth3DConfig
    n : int
        Number of samples, named ``sample_000``, ``sample_001``, ...
    seed : int
        Sample ``i`` is generated from ``seed=[seed, i]``.
    overwrite : bool
        Replace the .tif files of an existing dataset.
    progress : callable, optional
        Called as ``progress(i, name, info)`` after each sample.

    Returns
    -------
    Path of the dataset.
    """
    from micro_sym.synth.config import Synth2DConfig
    from micro_sym.synth.lattice2d import synth_2d
    from micro_sym.synth.volume3d import synth_3d

    if n < 1:
        raise MicroSymError(f"--n: need at least one sample, got {n}")
    if seed < 0:
        raise MicroSymError(f"--seed: must be non-negative, got {seed}")
    out = Path(out)
    _prepare(out, overwrite)
    dim = 2 if isinstance(config, Synth2DConfig) else 3
    gen = synth_2d if dim == 2 else synth_3d
    samples = {}
    for i in range(n):
        name = f"sample_{i:03d}"
        sample = gen(config, seed=[seed, i])
        write_sample(out, name, sample, config.pixel_size, config.unit)
        samples[name] = {"seed": [seed, i], **sample.info}
        if progress:
            progress(i, name, sample.info)
    meta = {
        "lattice": config.lattice,
        "pixel_size": [config.pixel_size] * dim,
        "unit": config.unit,
        "generator": {
            "name": f"micro_sym.synth.synth_{dim}d",
            "version": __version__,
            "seed": seed,
            "config": config.model_dump(mode="json"),
        },
        "samples": samples,
    }
    (out / "dataset.json").write_text(json.dumps(meta, indent=1) + "\n")
    return out

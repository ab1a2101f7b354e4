"""Write generated samples as a labeled dataset (docs/design.md §1) that ``micro_sym.io.datasets`` reads.

::

    OUT/
      images/NAME.tif        2D uint16 counts or 3D uint8/float32 volume (zlib-compressed TIFF)
      grains/NAME.tif        uint32 grain ids, 1..N (every pixel labeled; no 0 = unlabeled)
      orientation/NAME.tif   2D float32 degrees in [0, 360/k); 3D float32 (4, z, y, x) quaternions
      boundary/NAME.tif      uint8 1 where the grain id changes to a face neighbour (extra, optional)
      dataset.json           lattice, pixel_size, unit, plus the generator config and per-sample seeds

Sample ``i`` of a dataset generated with seed ``S`` is ``synth_2d(config, seed=[S, i])`` (or
``synth_3d``, ``synth_atoms2d``, ``synth_atoms3d``), so every file can be regenerated from ``dataset.json`` alone.

Resuming (``resume=True``): ``OUT/.synth/generator.json`` records the generator, config and seed, and
``OUT/.synth/NAME.json`` (the sample's info, written after its images) marks a finished sample; a
resumed run skips finished samples and refuses a directory made with another config or seed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from micro_sym import __version__
from micro_sym.errors import MicroSymError

FOLDERS = ("images", "grains", "orientation", "boundary")
#: Resume state inside the dataset directory (hidden: not part of the labeled-dataset layout).
STATE = ".synth"


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


def _prepare(out: Path, overwrite: bool, resume: bool = False) -> None:
    if out.exists() and not out.is_dir():
        raise MicroSymError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not (overwrite or resume):
        raise MicroSymError(f"{out}: directory is not empty (use --overwrite to replace its dataset, --resume to finish it)")
    for folder in (*FOLDERS, STATE):
        (out / folder).mkdir(parents=True, exist_ok=True)
        if overwrite:
            for f in (out / folder).glob("*.tif" if folder != STATE else "*.json"):
                f.unlink()


def _generator(config):
    """(ndim, generator function, its name, the dataset.json lattice) for a config object."""
    from micro_sym.synth.atoms2d import Atoms2DConfig, synth_atoms2d
    from micro_sym.synth.atoms3d import Atoms3DConfig, synth_atoms3d
    from micro_sym.synth.config import Synth2DConfig
    from micro_sym.synth.lattice2d import synth_2d
    from micro_sym.synth.volume3d import synth_3d

    if isinstance(config, Atoms2DConfig):
        return 2, synth_atoms2d, "micro_sym.synth.synth_atoms2d", config.dataset_lattice
    if isinstance(config, Atoms3DConfig):
        return 3, synth_atoms3d, "micro_sym.synth.synth_atoms3d", config.dataset_lattice
    if isinstance(config, Synth2DConfig):
        return 2, synth_2d, "micro_sym.synth.synth_2d", config.lattice
    return 3, synth_3d, "micro_sym.synth.synth_3d", config.lattice


def _check_resume(out: Path, spec: dict) -> None:
    """Record the generator spec, or refuse to resume a directory made with a different one."""
    path = out / STATE / "generator.json"
    if path.is_file():
        old = json.loads(path.read_text())
        if {k: old.get(k) for k in ("name", "seed", "config")} != {k: spec[k] for k in ("name", "seed", "config")}:
            raise MicroSymError(f"{out}: was generated with another config or seed (see {path}); "
                                "use --overwrite to replace it or another --out")
    _write_json_atomic(path, spec)


def _write_json_atomic(path: Path, data) -> None:
    """Write JSON through a temporary file and a rename: an interrupted run leaves no half marker."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)


def generate_dataset(out, config, n: int, seed: int = 0, *, overwrite: bool = False, resume: bool = False,
                     progress=None) -> Path:
    """Generate ``n`` samples with ``config`` (2D, 3D or atomistic 3D) and write them as a labeled dataset.

    Parameters
    ----------
    out : str or Path
        Dataset directory; must be empty or absent unless ``overwrite``.
    config : Synth2DConfig, Synth3DConfig, Atoms2DConfig or Atoms3DConfig
    n : int
        Number of samples, named ``sample_000``, ``sample_001``, ...
    seed : int
        Sample ``i`` is generated from ``seed=[seed, i]``.
    overwrite : bool
        Replace the .tif files of an existing dataset.
    resume : bool
        Keep the samples an earlier run with the same config and seed finished; make the rest.
    progress : callable, optional
        Called as ``progress(i, name, info)`` after each sample (also for skipped finished ones,
        with ``info["resumed"] = True``).

    Returns
    -------
    Path of the dataset.
    """
    if n < 1:
        raise MicroSymError(f"--n: need at least one sample, got {n}")
    if seed < 0:
        raise MicroSymError(f"--seed: must be non-negative, got {seed}")
    out = Path(out)
    dim, gen, gen_name, lattice = _generator(config)
    spec = {"name": gen_name, "version": __version__, "seed": seed, "config": config.model_dump(mode="json")}
    _prepare(out, overwrite, resume)
    _check_resume(out, spec)
    samples = {}
    for i in range(n):
        name = f"sample_{i:03d}"
        marker = out / STATE / f"{name}.json"
        if resume and marker.is_file() and all((out / f / f"{name}.tif").is_file() for f in FOLDERS):
            samples[name] = json.loads(marker.read_text())
            if progress:
                progress(i, name, {**samples[name], "resumed": True})
            continue
        sample = gen(config, seed=[seed, i])
        write_sample(out, name, sample, sample.info.get("pixel_size", config.pixel_size), config.unit)
        samples[name] = {"seed": [seed, i], **sample.info}
        _write_json_atomic(marker, samples[name])
        if progress:
            progress(i, name, sample.info)
    sizes = {s.get("pixel_size", config.pixel_size) for s in samples.values()}
    meta = {
        "lattice": lattice,
        # one voxel size per sample (atoms3d's first_ring_voxels): each image file holds its own
        **({"pixel_size": [sizes.pop()] * dim} if len(sizes) == 1 else {}),
        "unit": config.unit,
        "generator": spec,
        "samples": samples,
    }
    (out / "dataset.json").write_text(json.dumps(meta, indent=1) + "\n")
    return out

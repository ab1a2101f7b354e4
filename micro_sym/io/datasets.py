"""Labeled datasets for training and evaluation (docs/design.md §1).

::

    DATASET/
      images/NAME.tif        2D image or 3D volume (or NAME.zarr)
      grains/NAME.tif        integer grain ids, 0 = boundary / unlabeled (same shape)
      orientation/NAME.tif   optional: 2D float32 degrees; 3D float32 (4, z, y, x) quaternions
      dataset.json           optional: {"lattice": ..., "pixel_size": [...], "unit": "nm"}

The structure is checked when the dataset is opened; each sample's contents (shapes, dtypes,
orientation ranges) are checked when it is loaded, so iterating streams one sample at a time.

>>> ds = LabeledDataset("sample_data/micrographs")   # doctest: +SKIP
>>> sample = ds[0]; sample.image.shape, ds.lattice     # doctest: +SKIP
((512, 512), 'square')
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from micro_sym.errors import MicroSymError
from micro_sym.io import TIFF_SUFFIXES, open_image, read_json
from micro_sym.orientation.symmetry import lattice


@dataclass
class Sample:
    name: str
    image: np.ndarray  # float32, (y, x) or (z, y, x)
    grains: np.ndarray  # uint32, same shape
    orientation: np.ndarray | None  # 2D: degrees (y, x); 3D: (4, z, y, x) quaternions


class LabeledDataset:
    """A directory of images with grain labels and optional orientation maps."""

    def __init__(self, root):
        self.root = Path(root)
        if not self.root.is_dir():
            raise MicroSymError(f"{self.root}: dataset directory does not exist")
        images_dir = self.root / "images"
        if not images_dir.is_dir():
            raise MicroSymError(f"{self.root}: not a labeled dataset (no images/ folder)")
        self._images = {_stem(p): p for p in sorted(images_dir.iterdir()) if _is_image(p)}
        if not self._images:
            raise MicroSymError(f"{images_dir}: no .tif/.tiff/.zarr images")
        self._grains = self._find("grains", required=True)
        self._orientation = self._find("orientation", required=False)
        meta_path = self.root / "dataset.json"
        self.meta = read_json(meta_path) if meta_path.exists() else {}
        self.lattice = self.meta.get("lattice", "square")
        self.k = lattice(str(self.lattice), where=str(meta_path)).k
        self.pixel_size = tuple(self.meta["pixel_size"]) if "pixel_size" in self.meta else None
        self.unit = self.meta.get("unit")
        self.names = list(self._images)
        self.ndim = open_image(self._images[self.names[0]]).ndim
        if (self.ndim == 3) != (self.lattice == "cubic"):
            raise MicroSymError(f"{self.root}: lattice '{self.lattice}' does not fit {self.ndim}D images")

    def _find(self, folder: str, required: bool) -> dict:
        directory = self.root / folder
        found = {_stem(p): p for p in sorted(directory.iterdir()) if _is_image(p)} if directory.is_dir() else {}
        missing = [n for n in self._images if n not in found]
        if required and missing:
            raise MicroSymError(f"{directory}: no {folder} file for image '{missing[0]}' ({len(missing)} missing)")
        return found

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self):
        for name in self.names:
            yield self[name]

    def __getitem__(self, key) -> Sample:
        name = self.names[key] if isinstance(key, (int, np.integer)) else key
        if name not in self._images:
            raise KeyError(name)
        image = open_image(self._images[name]).data.compute().astype(np.float32)
        if image.ndim != self.ndim:
            raise MicroSymError(f"{self._images[name]}: {image.ndim}D image in a {self.ndim}D dataset")
        if not np.isfinite(image).any() or np.nanmin(image) == np.nanmax(image):
            raise MicroSymError(f"{self._images[name]}: image is constant or has no finite values")
        grains = self._load_grains(name, image.shape)
        orientation = self._load_orientation(name, image.shape) if name in self._orientation else None
        return Sample(name, image, grains, orientation)

    def _load_grains(self, name: str, shape) -> np.ndarray:
        path = self._grains[name]
        grains = open_image(path).data.compute()
        if not np.issubdtype(grains.dtype, np.integer):
            raise MicroSymError(f"{path}: grain labels must be integers, not {grains.dtype}")
        if grains.shape != shape:
            raise MicroSymError(f"{path}: grain labels of shape {grains.shape} do not match image shape {shape}")
        if grains.min() < 0:
            raise MicroSymError(f"{path}: negative grain ids")
        return grains.astype(np.uint32)

    def _load_orientation(self, name: str, shape) -> np.ndarray:
        path = self._orientation[name]
        # Read directly: a (4, z, y, x) quaternion map is 4D, which the image reader rejects.
        import tifffile
        import zarr

        try:
            ori = tifffile.imread(path) if _is_tiff(path) else np.asarray(zarr.open_array(str(path), mode="r"))
        except Exception as err:
            raise MicroSymError(f"{path}: cannot read orientation map ({type(err).__name__})") from None
        ori = ori.astype(np.float32)
        expected = shape if self.ndim == 2 else (4, *shape)
        if ori.shape != expected:
            raise MicroSymError(f"{path}: orientation of shape {ori.shape}, expected {expected}")
        finite = ori[np.isfinite(ori)]
        if self.ndim == 2:
            period = 360.0 / self.k
            if finite.size and (finite.min() < 0 or finite.max() >= period + 1e-3):
                raise MicroSymError(f"{path}: angles must lie in [0, {period:g}) degrees for a {self.lattice} lattice")
        else:
            norms = np.linalg.norm(ori.reshape(4, -1), axis=0)
            norms = norms[np.isfinite(norms)]
            if norms.size and np.abs(norms - 1).max() > 1e-3:
                raise MicroSymError(f"{path}: quaternions are not unit length (max deviation {np.abs(norms - 1).max():.3g})")
        return ori


def _is_tiff(path: Path) -> bool:
    return path.suffix.lower() in TIFF_SUFFIXES


def _is_image(path: Path) -> bool:
    return _is_tiff(path) or path.suffix.lower() == ".zarr"


def _stem(path: Path) -> str:
    return path.name[: -len(path.suffix)]

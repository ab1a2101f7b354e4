"""The image every reader returns: a lazy dask array with its pixel size, unit and axes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import dask.array as da
import numpy as np

TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8")
# Processing-friendly chunk sizes: one network tile, not one TIFF strip or one whole file.
DEFAULT_CHUNKS = {2: (1024, 1024), 3: (128, 128, 128)}
SPATIAL_AXES = {2: "yx", 3: "zyx"}


@dataclass
class Image:
    """A lazily loaded 2D ``(y, x)`` or 3D ``(z, y, x)`` image and what is known about it."""

    data: da.Array
    path: Path
    pixel_size: tuple[float, ...] | None = None  # per spatial axis, in ``unit``
    unit: str | None = None
    axes: str = ""
    metadata: dict = field(default_factory=dict)
    store: object = None  # the zarr.Array behind ``data`` for Zarr inputs (storage chunks, direct reads)

    @property
    def ndim(self) -> int:
        return self.data.ndim

    def read(self, region) -> np.ndarray:
        """One region (a tuple of slices) as numpy.

        Straight from the Zarr array when there is one: dask's assembly of the many chunks a tile
        with a halo touches costs about as much as decompressing them. Else through dask.
        """
        s = self.store
        lead = s.ndim - self.ndim if s is not None else 0
        if s is not None and tuple(s.shape[lead:]) == tuple(self.data.shape):
            return np.asarray(s[(0,) * lead + tuple(region)])  # leading axes were singletons (squeezed)
        return np.asarray(self.data[tuple(region)].compute(scheduler="synchronous"))

    @property
    def name(self) -> str:
        name = self.path.name
        for suffix in (".ome.tiff", ".ome.tif", ".ome.zarr", *TIFF_SUFFIXES, ".zarr"):
            if name.lower().endswith(suffix):
                return name[: -len(suffix)]
        return self.path.stem

"""Data in and out: lazy images and volumes, EBSD maps, labeled datasets.

- :mod:`micro_sym.io.images`: TIFF/BigTIFF, Zarr and OME-Zarr read lazily as dask arrays; OME-Zarr out;
  :func:`open_image` also opens microscope files (:mod:`micro_sym.io.microscope`: Gatan ``.dm3/.dm4``,
  Velox ``.emd``, FEI ``.ser``, MRC, through rosettasciio), keeping their pixel size and unit.
- :mod:`micro_sym.io.ebsd`: EBSD maps (``.cpr/.crc``, ``.ctf``, ``.ang``).
- :mod:`micro_sym.io.datasets`: labeled datasets for training and evaluation (docs/design.md §1).

>>> from micro_sym.io import open_image                                 # doctest: +SKIP
>>> img = open_image("sample_data/micrographs/images/sample_000.tif")   # doctest: +SKIP
>>> img.data                                                            # a dask array  # doctest: +SKIP
"""

from micro_sym.io.base import DEFAULT_CHUNKS, SPATIAL_AXES, TIFF_SUFFIXES, Image
from micro_sym.io.images import (
    move_into_place,
    open_image,
    read_json,
    scratch_folder,
    value_range,
    write_ome_zarr,
)

__all__ = ["DEFAULT_CHUNKS", "SPATIAL_AXES", "TIFF_SUFFIXES", "Image", "move_into_place", "open_image", "read_json",
           "scratch_folder", "value_range", "write_ome_zarr"]

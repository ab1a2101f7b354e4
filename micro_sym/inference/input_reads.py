"""The input of a run, opened once per worker process and read by region (tasks reopen it by path:
nothing big is shipped to a worker)."""

from __future__ import annotations

import numpy as np

from micro_sym.errors import MicroSymError

_IMAGES: dict = {}


def opened_input(path: str, array, level, channel=None):
    """The input at ``path`` (and array, level, channel), opened once in this process."""
    from micro_sym.io import open_image

    key = (path, array, level, channel)
    img = _IMAGES.get(key)
    if img is None:
        img = open_image(path, array=array, level=level, channel=channel)
        _IMAGES[key] = img
    return img


def read_region(job: dict, region) -> np.ndarray:
    """A region of the input as a numpy array; a failing read names the input and the chunk."""
    img = opened_input(job["input"], job.get("array"), job.get("level", 0), job.get("channel"))
    try:
        return img.read(region)
    except MicroSymError:
        raise
    except Exception as err:
        from micro_sym.io.images import locate_bad_chunk

        raise MicroSymError(f"{job['input']}: {locate_bad_chunk(img, region, err)}") from None

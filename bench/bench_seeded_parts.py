"""Two parts of the seeded rule's engine cost, old way vs new way (the figures quoted in the README).

    python bench/bench_seeded_parts.py

1. Seed core of a 144³ tile (25 % boundary): the complement of ``scipy.ndimage.binary_dilation`` by the
   Euclidean ball of radius 3.5 vs :func:`micro_sym.grains.seeded.core_mask`, i.e. the complement of the
   compiled separable kernel ``within_radius`` (the same mask, checked here; the keys keep that name).
2. The last pass's halo read: a 146³ region of a 4-channel float32 map from Zarr arrays written in
   128³ blocks, stored as plain 128³ chunks vs 128³ shards of 64³ chunks (random data, Blosc LZ4).
Prints seconds (best of 3 after one untimed call) and writes bench/results/seeded_parts.json.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr
from scipy import ndimage

from _common import RESULTS, best_time, write_json
from micro_sym.grains.seeded import core_mask
from micro_sym.inference.writer import _compressor


def core_mask_times(radius=3.5):
    rng = np.random.default_rng(0)
    field = ndimage.gaussian_filter(rng.random((144, 144, 144)), 2)
    mask = field > np.quantile(field, 0.75)
    r = int(np.floor(radius))
    grid = np.mgrid[(slice(-r, r + 1),) * 3]
    ball = (grid**2).sum(0) <= radius * radius
    core_mask(mask, radius)  # compile
    assert np.array_equal(core_mask(mask, radius), ~ndimage.binary_dilation(mask, structure=ball))
    return {"ball_dilation_s": best_time(lambda: ~ndimage.binary_dilation(mask, structure=ball), 3),
            "within_radius_s": best_time(lambda: core_mask(mask, radius), 3)}


def halo_read_times():
    data = np.random.default_rng(0).random((4, 128, 128, 128), dtype=np.float32)
    out = {}
    root = Path(tempfile.mkdtemp())
    try:
        for name, kw in (("chunks_128", {"chunks": (4, 128, 128, 128)}),
                         ("shards_128_chunks_64", {"chunks": (4, 64, 64, 64), "shards": (4, 128, 128, 128)})):
            a = zarr.create_array(str(root / name), shape=(4, 384, 384, 384), dtype="float32",
                                  compressors=_compressor(), fill_value=float("nan"), **kw)
            t = time.perf_counter()
            for i in range(3):
                for j in range(3):
                    for k in range(3):
                        a[:, i * 128:(i + 1) * 128, j * 128:(j + 1) * 128, k * 128:(k + 1) * 128] = data
            write = (time.perf_counter() - t) / 27
            region = (slice(None),) + (slice(128 - 9, 256 + 9),) * 3
            out[name] = {"write_per_block_s": write, "read_146_region_s": best_time(lambda: a[region], 3)}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return out


def main():
    result = {"core_mask_144": core_mask_times(), "halo_read": halo_read_times()}
    print(json.dumps(result, indent=1))
    write_json(RESULTS / "seeded_parts.json", result, indent=1)


if __name__ == "__main__":
    main()

"""The engine reads and writes its own arrays through zarrs' codec pipeline (``writer.CODEC_PIPELINE``),
with the same outputs as zarr's own pipeline, readable by plain zarr."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr

from micro_sym.inference import segment
from micro_sym.inference import writer

from _helpers import read_output

SAMPLE = Path(__file__).resolve().parents[2] / "sample_data" / "micrographs" / "images" / "sample_000.tif"


def _array(path):
    zarr.create_array(str(path), shape=(96, 80), chunks=(16, 16), shards=(32, 32), dtype="uint32",
                      fill_value=0, zarr_format=3, compressors=writer._compressor())


def test_engine_arrays_open_with_the_zarrs_pipeline_and_zarr_reads_what_it_writes(tmp_path):
    configured = zarr.config.get("codec_pipeline.path")
    _array(tmp_path / "a")
    arr = writer.open_array(tmp_path / "a")
    assert type(arr.async_array.codec_pipeline).__name__ == "ZarrsCodecPipeline"
    assert zarr.config.get("codec_pipeline.path") == configured  # only the engine's arrays use it
    values = np.random.default_rng(0).integers(0, 7, (64, 64), dtype=np.uint32)
    arr[32:96, 0:64] = values  # whole shards
    arr[0:20, 70:80] = 5  # part of an edge shard, read, changed and rewritten
    plain = zarr.open_array(str(tmp_path / "a"), mode="r")[:]
    np.testing.assert_array_equal(plain[32:96, 0:64], values)
    np.testing.assert_array_equal(plain[0:20, 70:80], 5)
    assert not plain[0:32, 0:64].any() and not plain[20:32, 64:].any()
    np.testing.assert_array_equal(arr[10:50, 60:80], plain[10:50, 60:80])  # a read across shards
    writer.forget_arrays(tmp_path / "a")


def test_arrays_opened_side_by_side_leave_zarr_config_as_it_was(tmp_path):
    # Worker threads open arrays at the same time; a process-wide setting changed for each open and
    # restored after would be left changed when two opens interleave (inputs would then read through it).
    from concurrent.futures import ThreadPoolExecutor

    configured = zarr.config.get("codec_pipeline.path")
    paths = [tmp_path / f"a{i}" for i in range(64)]
    for p in paths:
        _array(p)
    with ThreadPoolExecutor(4) as pool:
        pipelines = list(pool.map(lambda p: type(writer.open_array(p).async_array.codec_pipeline).__name__, paths))
    assert set(pipelines) == {"ZarrsCodecPipeline"}
    assert zarr.config.get("codec_pipeline.path") == configured
    for p in paths:
        writer.forget_arrays(p)


def test_a_run_gives_the_same_outputs_with_either_pipeline(tmp_path, monkeypatch):
    # The bundled auto path on a real sample micrograph in 16 blocks: maps, seed labels, the flood
    # reading its neighbours' maps and labels, each grain's lattice and the renumbering pass.
    kw = dict(block=128, chunk=64)
    (fast,) = segment([SAMPLE], tmp_path / "zarrs", **kw)
    monkeypatch.setattr(writer, "CODEC_PIPELINE", None)  # zarr's own
    (plain,) = segment([SAMPLE], tmp_path / "zarr", **kw)
    assert fast.status == plain.status == "complete" and fast.n_blocks == 16
    assert fast.n_grains == plain.n_grains > 10
    a, b = read_output(tmp_path / "zarrs", SAMPLE.stem), read_output(tmp_path / "zarr", SAMPLE.stem)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    csv = f"{SAMPLE.stem}_grains.csv"
    assert (tmp_path / "zarrs" / csv).read_text() == (tmp_path / "zarr" / csv).read_text()

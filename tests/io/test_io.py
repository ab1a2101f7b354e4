"""Readers, writers, dataset loader and the CLI's handling of bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import dask.array as da
import numpy as np
import pytest
import tifffile
import zarr

from micro_sym.io.datasets import LabeledDataset
from micro_sym.errors import MicroSymError
from micro_sym.io import open_image, value_range, write_ome_zarr


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "micro_sym", *map(str, args)], capture_output=True, text=True)


@pytest.fixture
def image2d():
    rng = np.random.default_rng(0)
    return rng.integers(0, 60000, size=(300, 257), dtype=np.uint16)


# ------------------------------------------------------------------------------ round trips


def test_tiff_2d_is_lazy_and_exact(tmp_path, image2d):
    path = tmp_path / "a.tif"
    tifffile.imwrite(path, image2d, resolution=(1 / 0.25, 1 / 0.25), imagej=True, metadata={"unit": "nm"})
    img = open_image(path)
    assert isinstance(img.data, da.Array)
    assert img.axes == "yx" and img.pixel_size == pytest.approx((0.25, 0.25)) and img.unit == "nm"
    np.testing.assert_array_equal(img.data.compute(), image2d)


def test_tiled_bigtiff_reads_one_tile_without_the_rest(tmp_path):
    """A chunk of a tiled BigTIFF is read from its own tile: corrupting another tile doesn't matter."""
    data = np.arange(512 * 512, dtype=np.uint16).reshape(512, 512)
    path = tmp_path / "big.tif"
    tifffile.imwrite(path, data, tile=(256, 256), bigtiff=True)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        last_offset, last_count = page.dataoffsets[-1], page.databytecounts[-1]
    with open(path, "r+b") as fh:  # overwrite the bottom-right tile's bytes with garbage
        fh.seek(last_offset)
        fh.write(b"\xff" * last_count)
    img = open_image(path, chunks=(256, 256))
    np.testing.assert_array_equal(img.data[:256, :256].compute(), data[:256, :256])
    assert img.data[256:, 256:].compute().max() == 0xFFFF  # the garbage is really there


def test_multipage_tiff_is_3d(tmp_path):
    vol = np.random.default_rng(1).random((7, 20, 30), dtype=np.float32)
    path = tmp_path / "v.tif"
    tifffile.imwrite(path, vol)
    img = open_image(path)
    assert img.axes == "zyx"
    np.testing.assert_array_equal(img.data.compute(), vol)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zarr_array_round_trip(tmp_path, image2d, zarr_format):
    path = tmp_path / "a.zarr"
    z = zarr.create_array(str(path), shape=image2d.shape, chunks=(128, 128), dtype=image2d.dtype, zarr_format=zarr_format)
    z[...] = image2d
    img = open_image(path)
    assert img.data.chunks[0][0] == 128 or img.data.chunks[0][0] == image2d.shape[0]
    np.testing.assert_array_equal(img.data.compute(), image2d)


def test_tiff_to_ome_zarr_and_back(tmp_path):
    vol = np.random.default_rng(2).integers(0, 255, (9, 40, 33), dtype=np.uint8)
    tif = tmp_path / "v.tif"
    tifffile.imwrite(tif, vol, imagej=True, resolution=(2.0, 2.0), metadata={"spacing": 0.7, "unit": "um", "axes": "ZYX"})
    img = open_image(tif)
    labels = (img.data // 64).astype(np.uint32)
    quats = da.ones((4, *vol.shape), dtype=np.float32, chunks=(4, 5, 20, 20)) * 0.5
    out = write_ome_zarr(tmp_path / "out.zarr", {"image": img.data, "grains": labels, "orientation": quats},
                         pixel_size=img.pixel_size, unit=img.unit, chunks=(4, 16, 16))
    group = zarr.open_group(str(out), mode="r")
    ome = group.attrs["ome"]
    assert ome["version"] == "0.5"
    names = [ms["name"] for ms in ome["multiscales"]]
    assert names == ["image", "orientation"]  # grains: an NGFF label image, labels/grains
    orient_axes = [a["name"] for a in ome["multiscales"][1]["axes"]]
    assert orient_axes == ["c", "z", "y", "x"]
    assert group["labels/grains/0"].chunks == (4, 16, 16) and group["orientation/0"].chunks == (4, 4, 16, 16)
    back = open_image(out, array="image/0")
    np.testing.assert_array_equal(back.data.compute(), vol)
    assert back.pixel_size == pytest.approx((0.7, 0.5, 0.5))
    np.testing.assert_array_equal(open_image(out, array="labels/grains/0").data.compute(), vol // 64)
    np.testing.assert_array_equal(np.asarray(group["orientation/0"]), np.full((4, *vol.shape), 0.5, np.float32))


def test_ome_zarr_opens_level_0_by_default(tmp_path, image2d):
    path = tmp_path / "img.ome.zarr"
    g = zarr.open_group(str(path), mode="w", zarr_format=3)
    g.create_array("0", data=image2d, chunks=(128, 128))
    g.create_array("1", data=image2d[::2, ::2], chunks=(128, 128))
    g.attrs["ome"] = {"version": "0.5", "multiscales": [{"axes": [{"name": "y", "type": "space", "unit": "micrometer"},
                                                                 {"name": "x", "type": "space", "unit": "micrometer"}],
                      "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [0.1, 0.1]}]},
                                   {"path": "1", "coordinateTransformations": [{"type": "scale", "scale": [0.2, 0.2]}]}]}]}
    img = open_image(path)
    assert img.data.shape == image2d.shape and img.pixel_size == (0.1, 0.1) and img.unit == "µm"  # NGFF unit names read as micro_sym writes units
    assert open_image(path, level=1).data.shape == (150, 129)
    with pytest.raises(MicroSymError, match="level 2 does not exist"):
        open_image(path, level=2)


def test_dataset_loader(tmp_path):
    rng = np.random.default_rng(3)
    for sub in ("images", "grains", "orientation"):
        (tmp_path / sub).mkdir()
    for name in ("a", "b"):
        tifffile.imwrite(tmp_path / "images" / f"{name}.tif", rng.random((32, 40), dtype=np.float32))
        tifffile.imwrite(tmp_path / "grains" / f"{name}.tif", rng.integers(1, 5, (32, 40), dtype=np.uint16))
        tifffile.imwrite(tmp_path / "orientation" / f"{name}.tif", rng.uniform(0, 90, (32, 40)).astype(np.float32))
    (tmp_path / "dataset.json").write_text(json.dumps({"lattice": "square", "pixel_size": [0.02, 0.02], "unit": "nm"}))
    ds = LabeledDataset(tmp_path)
    assert len(ds) == 2 and ds.k == 4 and ds.ndim == 2
    samples = list(ds)
    assert samples[1].name == "b" and samples[1].grains.dtype == np.uint32 and samples[1].orientation.shape == (32, 40)
    # Angles outside [0, 90) for a square lattice are rejected.
    tifffile.imwrite(tmp_path / "orientation" / "b.tif", np.full((32, 40), 120, np.float32))
    with pytest.raises(MicroSymError, match=r"\[0, 90\)"):
        ds["b"]
    # Labels that do not match the image shape.
    tifffile.imwrite(tmp_path / "grains" / "a.tif", np.ones((31, 40), np.uint16))
    with pytest.raises(MicroSymError, match="do not match image shape"):
        ds["a"]
    # Float labels.
    tifffile.imwrite(tmp_path / "grains" / "a.tif", np.ones((32, 40), np.float32))
    with pytest.raises(MicroSymError, match="must be integers"):
        ds["a"]
    (tmp_path / "grains" / "a.tif").unlink()
    with pytest.raises(MicroSymError, match="no grains file for image 'a'"):
        LabeledDataset(tmp_path)


# ------------------------------------------------------------------------------ CLI and bad input


def test_info_prints_summary(tmp_path, image2d):
    path = tmp_path / "a.tif"
    tifffile.imwrite(path, image2d)
    res = run_cli("info", path)
    assert res.returncode == 0, res.stderr
    assert "300 x 257" in res.stdout and "uint16" in res.stdout
    assert f"{image2d.min()} .. {image2d.max()}" in res.stdout


def test_version():
    res = run_cli("--version")
    assert res.returncode == 0 and res.stdout.startswith("micro-sym ")


def _bad_inputs(tmp):
    """(path, expected message fragment) for every kind of bad input the issue lists."""
    good = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
    tifffile.imwrite(tmp / "good.tif", good)
    raw = (tmp / "good.tif").read_bytes()
    (tmp / "truncated.tif").write_bytes(raw[: len(raw) // 3])
    (tmp / "garbage.tif").write_bytes(b"this is not a tiff at all" * 10)
    tifffile.imwrite(tmp / "complex.tif", np.zeros((8, 8), np.complex64))
    tifffile.imwrite(tmp / "bool.tif", np.zeros((8, 8), bool))
    tifffile.imwrite(tmp / "nan.tif", np.full((8, 8), np.nan, np.float32))
    tifffile.imwrite(tmp / "constant.tif", np.full((8, 8), 7, np.uint8))
    zarr.create_array(str(tmp / "one_d.zarr"), shape=(100,), dtype="f4")
    zarr.create_array(str(tmp / "five_d.zarr"), shape=(2, 2, 3, 8, 8), dtype="f4")
    zarr.open_group(str(tmp / "group.zarr"), mode="w").create_array("raw", shape=(8, 8), dtype="u1")
    (tmp / "notes.txt").write_text("hello")
    (tmp / "folder").mkdir()
    return [
        (tmp / "missing.tif", "no such file"),
        (tmp / "folder", "not a Zarr array or group"),
        (tmp / "notes.txt", "unsupported file type"),
        (tmp / "truncated.tif", "truncated.tif"),
        (tmp / "garbage.tif", "not a readable TIFF"),
        (tmp / "complex.tif", "unsupported data type complex64"),
        (tmp / "bool.tif", "unsupported data type bool"),
        (tmp / "nan.tif", "no finite values"),
        (tmp / "constant.tif", "image is constant"),
        (tmp / "one_d.zarr", "1D data"),
        (tmp / "five_d.zarr", "5D data"),
        (tmp / "group.zarr", "name one of its arrays (raw)"),
    ]


def test_bad_inputs_give_one_line_errors(tmp_path):
    for path, fragment in _bad_inputs(tmp_path):
        before = sorted(p.name for p in tmp_path.iterdir())
        res = run_cli("info", path)
        assert res.returncode == 2, (path, res.stdout, res.stderr)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in res.stderr, (path, res.stderr)
        assert lines[0].startswith("micro-sym: error: ") and path.name in lines[0], lines[0]
        assert fragment in lines[0], (fragment, lines[0])
        assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_missing_named_zarr_array(tmp_path):
    zarr.open_group(str(tmp_path / "g.zarr"), mode="w").create_array("raw", shape=(8, 8), dtype="u1")
    with pytest.raises(MicroSymError, match="no array named 'nope'"):
        open_image(tmp_path / "g.zarr", array="nope")
    assert open_image(tmp_path / "g.zarr", array="raw").data.shape == (8, 8)


def test_value_range_on_truncated_data_names_file(tmp_path):
    tifffile.imwrite(tmp_path / "t.tif", np.ones((64, 64), np.uint16))
    raw = (tmp_path / "t.tif").read_bytes()
    (tmp_path / "t.tif").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(MicroSymError, match="t.tif"):
        value_range(open_image(tmp_path / "t.tif"))

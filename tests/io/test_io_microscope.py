"""Microscope formats through rosettasciio: .dm3/.dm4, .emd (Velox and Berkeley), .ser, MRC.

Small files are written here (DM and MRC by hand, Berkeley EMD with rsciio's writer, Velox EMD with
h5py) so every reader runs without the shared data; the two real micrographs in
``../shared/data/real_micrographs`` are checked too when present (required when ``CI=true``).
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import dask.array as da
import numpy as np
import pytest

from micro_sym.errors import MicroSymError
from micro_sym.io import open_image, value_range
from micro_sym.io.microscope import MICROSCOPE_SUFFIXES, _length, open_microscope

from _shared import shared_path

AU_EMD = "example_Au_nanoparticle.emd"  # Velox HAADF-STEM, 2048² uint16, 7.4984e-12 m per pixel
MOS2_DM3 = "example_Se_implanted_MoS2.dm3"  # 1024² (DataType 11: uint32), 0.0126953125 nm per pixel


def shared_file(name: str) -> Path:
    """A file of the shared real-micrograph data (skipped when absent, a failure on CI)."""
    return shared_path("real_micrographs", name)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "micro_sym", *map(str, args)], capture_output=True, text=True)


def assert_one_line_error(res, path):
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("micro-sym: error: ") and Path(path).name in lines[0], lines[0]
    assert "Traceback" not in res.stderr
    return lines[0]


# --------------------------------------------------------------------------------- file writers


_DM_TYPES = {  # numpy dtype -> (DM image DataType, DM tag element type of the Data array)
    np.dtype("int16"): (1, 2), np.dtype("float32"): (2, 6), np.dtype("complex64"): (3, 6),
    np.dtype("uint8"): (6, 10), np.dtype("int32"): (7, 3), np.dtype("uint16"): (10, 4),
    np.dtype("uint32"): (11, 5), np.dtype("float64"): (12, 7),
}


def write_dm(path, data, scales, units, version=3, name="test image") -> int:
    """A minimal Gatan DigitalMicrograph file (DM3 or DM4 tag layout) with one image.

    Returns the byte offset of the pixel data. ``scales``/``units`` are in array order.
    """
    data = np.ascontiguousarray(data)
    q = ">q" if version == 4 else ">i"
    code, eltype = _DM_TYPES[data.dtype]
    payload = data.astype(data.dtype.newbyteorder("<")).tobytes()
    n_elements = data.size * (2 if data.dtype.kind == "c" else 1)

    def tag(tag_id, name, body):
        head = bytes([tag_id]) + struct.pack(">h", len(name)) + name.encode()
        return head + (struct.pack(">q", len(body)) if version == 4 else b"") + body

    def data_tag(name, info, raw):
        return tag(0x15, name, b"%%%%" + struct.pack(q, len(info)) + b"".join(struct.pack(q, i) for i in info) + raw)

    def group(name, tags):
        return tag(0x14, name, b"\x00\x01" + struct.pack(q, len(tags)) + b"".join(tags))

    def long(name, v):
        return data_tag(name, [3], struct.pack("<i", v))

    def f4(name, v):
        return data_tag(name, [6], struct.pack("<f", v))

    def text(name, s):  # DM strings: arrays of uint16
        return data_tag(name, [20, 4, len(s)], np.array([ord(c) for c in s], "<u2").tobytes())

    dims = [group("", [f4("Origin", 0.0), f4("Scale", s), text("Units", u)]) for s, u in zip(scales[::-1], units[::-1])]
    image_data = group("ImageData", [
        group("Calibrations", [
            group("Brightness", [f4("Origin", 0.0), f4("Scale", 1.0), text("Units", "")]),
            group("Dimension", dims),
            long("DisplayCalibratedUnits", 1),
        ]),
        data_tag("Data", [20, eltype, n_elements], payload),
        long("DataType", code),
        group("Dimensions", [long("", s) for s in data.shape[::-1]]),  # DM lists x first
        long("PixelDepth", data.dtype.itemsize),
    ])
    image = group("", [image_data, group("ImageTags", []), text("Name", name)])
    root = b"\x00\x01" + struct.pack(q, 1) + group("ImageList", [image])
    blob = struct.pack(">i", version) + struct.pack(q, len(root) + 8) + struct.pack(">i", 1) + root
    Path(path).write_bytes(blob)
    return blob.index(payload)


_MRC_MODES = {np.dtype("uint8"): 0, np.dtype("int16"): 1, np.dtype("float32"): 2, np.dtype("complex64"): 4,
              np.dtype("uint16"): 6}


def write_mrc(path, data, voxel_angstrom=None, ispg=None, mz=None, endian="<") -> int:
    """An MRC2014 file; ``voxel_angstrom`` per axis in array order (None: no cell, uncalibrated)."""
    data = np.asarray(data)
    shape = (1,) * (3 - data.ndim) + data.shape
    nz, ny, nx = shape
    mx, my = nx, ny
    mz = (nz if ispg != 0 else 1) if mz is None else mz
    steps = (1.0,) * (3 - data.ndim) + tuple(voxel_angstrom) if voxel_angstrom is not None else (0.0, 0.0, 0.0)
    ispg = (1 if nz > 1 else 0) if ispg is None else ispg
    header = bytearray(1024)
    struct.pack_into(endian + "10i", header, 0, nx, ny, nz, _MRC_MODES[data.dtype], 0, 0, 0, mx, my, mz)
    struct.pack_into(endian + "6f", header, 40, steps[2] * mx, steps[1] * my, steps[0] * mz, 90, 90, 90)
    struct.pack_into(endian + "3i", header, 64, 1, 2, 3)
    struct.pack_into(endian + "2i", header, 88, ispg, 0)
    header[208:212] = b"MAP "
    header[212:214] = b"\x44\x44" if endian == "<" else b"\x11\x11"
    Path(path).write_bytes(bytes(header) + data.astype(data.dtype.newbyteorder(endian)).tobytes())
    return 1024


def write_velox(path, image=None, spectrum=None, image_group=False, detector="HAADF", pixel_m=5e-11,
                spectrum_image=False):
    """A small Velox-layout EMD: ``Data/Image/<uuid>/{Data (y, x, frames), Metadata}`` and/or a spectrum.

    ``spectrum_image`` adds an (empty) EDS ``Data/SpectrumImage`` group, written as Velox 10 does.
    """
    import h5py

    def metadata(group, md):
        raw = np.frombuffer(json.dumps(md).encode(), np.uint8)
        group.create_dataset("Metadata", data=raw.reshape(-1, 1))

    with h5py.File(path, "w") as f:
        version = 10 if spectrum_image else 11
        f.create_dataset("Version", data=[json.dumps({"format": "Velox", "version": version})], dtype=h5py.string_dtype())
        if spectrum_image:
            f.create_group("Presentation/Displays/ImageDisplay")
            f.create_group("Data/SpectrumImage")
        data = f.require_group("Data")
        if image is not None or image_group:
            images = data.create_group("Image")
        if image is not None:
            g = images.create_group("0123456789abcdef0123456789abcdef")
            g.create_dataset("Data", data=image, chunks=(max(1, image.shape[0] // 4), image.shape[1], 1))
            metadata(g, {
                "BinaryResult": {"PixelSize": {"width": str(pixel_m), "height": str(pixel_m)}, "PixelUnitX": "m",
                                 "PixelUnitY": "m", "Offset": {"x": "0", "y": "0"}, "Detector": detector},
                "Scan": {"FrameTime": "2.5"}, "Core": {}, "Acquisition": {}, "Optics": {}, "Instrument": {},
                "CustomProperties": {},
            })
        if spectrum is not None:
            g = data.create_group("Spectrum").create_group("fedcba9876543210fedcba9876543210")
            g.create_dataset("Data", data=spectrum)
            metadata(g, {"BinaryResult": {}, "Core": {}, "CustomProperties": {}})


_SER_TYPES = {np.dtype("uint8"): 1, np.dtype("uint16"): 2, np.dtype("uint32"): 3, np.dtype("int16"): 5,
              np.dtype("int32"): 6, np.dtype("float32"): 7, np.dtype("float64"): 8, np.dtype("complex64"): 9}


def write_ser(path, frames, pixel_m=2e-10):
    """A FEI TIA ``.ser`` series of 2D images (``frames``: ``(n, y, x)``), no ``.emi``."""
    frames = np.asarray(frames)
    n, ny, nx = frames.shape
    # One series dimension (size, offset, delta, element, no description, no unit); size 1 for one image.
    dims = struct.pack("<IddiII", n, 0.0, 1.0, 0, 0, 0)
    head = struct.pack("<HHHIIII", 0x4949, 0x0197, 0x0210, 0x4122, 0x4152, n, n)
    offsets_at = 30 + len(dims)
    first = offsets_at + 8 * n
    records, data_offsets, tag_offsets = b"", [], []
    for frame in frames:
        element = struct.pack("<ddiddi", 0.0, pixel_m, 0, 0.0, pixel_m, 0)
        element += struct.pack("<HII", _SER_TYPES[frame.dtype], nx, ny)
        element += frame[::-1].astype(frame.dtype.newbyteorder("<")).tobytes()  # TIA rows run bottom-up
        data_offsets.append(first + len(records))
        tag_offsets.append(first + len(records) + len(element))
        records += element + struct.pack("<HHI", 0x4152, 0, 0)
    body = struct.pack("<II", offsets_at, 1) + dims + struct.pack(f"<{n}I{n}I", *data_offsets, *tag_offsets)
    Path(path).write_bytes(head + body + records)


def write_berkeley_emd(path, data, axes):
    """Berkeley (NCEM) EMD through rsciio's own writer; ``axes`` = [(name, scale, unit), ...]."""
    from rsciio.emd import file_writer

    signal = {
        "data": data,
        "axes": [{"name": n, "size": s, "scale": sc, "offset": 0.0, "units": u, "navigate": False}
                 for (n, sc, u), s in zip(axes, data.shape)],
        "metadata": {"General": {"title": "berkeley"}, "Signal": {"signal_type": ""}},
        "original_metadata": {},
    }
    file_writer(str(path), signal)


@pytest.fixture
def h5_reads(monkeypatch):
    """Names of HDF5 datasets whose pixels were read (``[...]`` on a dataset called ``Data``).

    Empty reads (dask's ``x[0:0, 0:0]`` probe for the array type) do not count.
    """
    import h5py

    reads = []
    original = h5py.Dataset.__getitem__

    def spy(self, key):
        out = original(self, key)
        if self.name.endswith("/Data") and np.size(out) > 0:
            reads.append(self.name)
        return out

    monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
    return reads


# -------------------------------------------------------------------------------- real files


def test_real_velox_emd(h5_reads):
    path = shared_file(AU_EMD)
    img = open_image(path)
    assert isinstance(img.data, da.Array) and h5_reads == []  # lazy: no pixel read yet
    assert img.data.shape == (2048, 2048) and img.data.dtype == np.uint16 and img.axes == "yx"
    assert img.unit == "nm" and img.pixel_size == pytest.approx((0.0074984, 0.0074984), rel=1e-4)
    assert img.metadata["signal"] == "HAADF" and img.name == "example_Au_nanoparticle"
    img.data[:10, :10].compute()
    assert 0 < len(h5_reads) < img.data.npartitions  # one HDF5 chunk, not the whole image


def test_real_dm3():
    path = shared_file(MOS2_DM3)
    img = open_image(path)
    assert isinstance(img.data, da.Array)
    assert img.data.shape == (1024, 1024) and img.data.dtype == np.uint32  # DataType 11 in the file
    assert img.unit == "nm" and img.pixel_size == pytest.approx((0.0126953125, 0.0126953125), rel=1e-6)
    lo, hi = value_range(img)
    assert 0 < lo < hi


def test_real_files_in_cli_info():
    for name, size in ((AU_EMD, "0.0074984 x 0.0074984 nm"), (MOS2_DM3, "0.0126953 x 0.0126953 nm")):
        path = shared_file(name)
        res = run_cli("info", path)
        assert res.returncode == 0, res.stderr
        assert f"pixel size: {size}" in res.stdout, res.stdout


def test_truncated_real_dm3_is_one_line(tmp_path):
    raw = shared_file(MOS2_DM3).read_bytes()
    bad = tmp_path / "cut.dm3"
    bad.write_bytes(raw[: len(raw) // 2])
    line = assert_one_line_error(run_cli("info", bad), bad)
    assert "truncated or corrupt" in line


# ---------------------------------------------------------------------- Gatan DM (synthetic)


@pytest.mark.parametrize("version", [3, 4])
def test_dm_round_trip_angstrom_to_nm(tmp_path, version):
    data = np.random.default_rng(version).integers(0, 60000, (40, 30)).astype(np.uint16)
    path = tmp_path / f"a.dm{version}"
    write_dm(path, data, scales=(0.5, 0.25), units=("Å", "Å"), version=version)
    img = open_image(path)
    assert isinstance(img.data, da.Array) and img.data.dtype == np.uint16 and img.axes == "yx"
    assert img.unit == "nm" and img.pixel_size == pytest.approx((0.05, 0.025))
    assert img.metadata["signal"] == "test image" and img.metadata["format"] == "Gatan DigitalMicrograph"
    np.testing.assert_array_equal(img.data.compute(), data)


def test_dm_is_read_lazily(tmp_path):
    """Pixels come from the file when computed, not when opened: overwrite them in between."""
    data = np.arange(64 * 64, dtype=np.float32).reshape(64, 64)
    path = tmp_path / "lazy.dm3"
    offset = write_dm(path, data, (1.0, 1.0), ("pm", "pm"))
    img = open_image(path)
    assert img.unit == "nm" and img.pixel_size == pytest.approx((1e-3, 1e-3))
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(np.full(64, 7.0, "<f4").tobytes())  # first row
    got = img.data.compute()
    assert (got[0] == 7.0).all() and (got[1:] == data[1:]).all()


def test_dm_stack_takes_first_frame(tmp_path):
    stack = np.random.default_rng(2).random((5, 24, 16)).astype(np.float32)
    path = tmp_path / "series.dm3"
    write_dm(path, stack, (1.0, 0.2, 0.2), ("", "nm", "nm"))  # uncalibrated leading axis: a time series
    img = open_image(path)
    assert img.data.shape == (24, 16) and img.axes == "yx" and img.pixel_size == pytest.approx((0.2, 0.2))
    assert img.metadata["frame"] == 0 and img.metadata["frames"] == 5
    np.testing.assert_array_equal(img.data.compute(), stack[0])


def test_dm_uncalibrated_and_micrometre(tmp_path):
    path = tmp_path / "raw.dm3"
    write_dm(path, np.ones((8, 8), np.int16), (1.0, 1.0), ("", ""))
    img = open_image(path)
    assert img.pixel_size is None and img.unit is None
    write_dm(path, np.ones((8, 8), np.int16), (0.5, 0.5), ("um", "um"))
    img = open_image(path)
    assert img.unit == "µm" and img.pixel_size == pytest.approx((0.5, 0.5))


def test_dm_complex_is_one_line(tmp_path):
    path = tmp_path / "fft.dm3"
    write_dm(path, np.full((16, 16), 1 + 2j, np.complex64), (0.1, 0.1), ("nm", "nm"))
    with pytest.raises(MicroSymError, match="complex"):
        open_image(path)
    assert "complex" in assert_one_line_error(run_cli("info", path), path)


def test_dm_diffraction_pattern_is_not_an_image(tmp_path):
    path = tmp_path / "dp.dm3"
    write_dm(path, np.ones((16, 16), np.float32), (0.01, 0.01), ("1/nm", "1/nm"))
    with pytest.raises(MicroSymError, match="no 2D image"):
        open_image(path)


@pytest.mark.parametrize("keep", [10, 200, 400])
def test_truncated_dm3(tmp_path, keep):
    path = tmp_path / "t.dm3"
    write_dm(path, np.ones((16, 16), np.float32), (0.1, 0.1), ("nm", "nm"))
    path.write_bytes(path.read_bytes()[:keep])
    with pytest.raises(MicroSymError, match=r"t\.dm3: not a readable Gatan DigitalMicrograph file"):
        open_image(path)


# ------------------------------------------------------------------------------------- EMD


def test_velox_emd_image_and_stack(tmp_path, h5_reads):
    one = np.random.default_rng(3).integers(0, 4000, (64, 48, 1)).astype(np.uint16)
    path = tmp_path / "v.emd"
    write_velox(path, image=one, spectrum=np.ones((512, 1), np.uint32))
    img = open_image(path)
    assert h5_reads == [] and isinstance(img.data, da.Array)
    assert img.data.shape == (64, 48) and img.data.dtype == np.uint16
    assert img.unit == "nm" and img.pixel_size == pytest.approx((0.05, 0.05))  # 5e-11 m
    np.testing.assert_array_equal(img.data.compute(), one[:, :, 0])

    frames = np.random.default_rng(4).integers(0, 4000, (32, 40, 3)).astype(np.uint16)
    path = tmp_path / "stack.emd"
    write_velox(path, image=frames)
    img = open_image(path)
    assert img.data.shape == (32, 40) and img.metadata["frames"] == 3
    assert "frame 1 of a 3-frame stack" in img.metadata["source"]
    np.testing.assert_array_equal(img.data.compute(), frames[:, :, 0])


def test_velox_emd_with_eds_spectrum_image_reads_the_stem_image(tmp_path, h5_reads):
    """The EDS stream is never parsed (select_type="images"); the survey image's first frame is taken."""
    frames = np.ones((32, 32, 4), np.uint16) * np.arange(1, 5, dtype=np.uint16)
    path = tmp_path / "si.emd"
    write_velox(path, image=frames, spectrum_image=True)
    img = open_image(path)
    assert img.data.shape == (32, 32) and img.metadata["signal"] == "HAADF" and h5_reads == []
    assert (img.data.compute() == 1).all()


@pytest.mark.parametrize("kind", ["spectrum only", "empty image group", "no data"])
def test_emd_without_image_is_one_line(tmp_path, kind):
    path = tmp_path / f"{kind.replace(' ', '_')}.emd"
    write_velox(path, spectrum=np.ones((2048, 1), np.uint32) if kind == "spectrum only" else None,
                image_group=kind == "empty image group")
    with pytest.raises(MicroSymError, match="holds no image data"):
        open_image(path)
    if kind == "spectrum only":
        assert "no image data" in assert_one_line_error(run_cli("info", path), path)


def test_berkeley_emd_image_volume_and_stack(tmp_path):
    rng = np.random.default_rng(5)
    image = rng.random((30, 20)).astype(np.float32)
    path = tmp_path / "b.emd"
    write_berkeley_emd(path, image, [("y", 0.8, "Å"), ("x", 0.8, "Å")])
    img = open_image(path)
    assert img.data.shape == (30, 20) and img.unit == "nm" and img.pixel_size == pytest.approx((0.08, 0.08))
    np.testing.assert_array_equal(img.data.compute(), image)

    volume = rng.integers(0, 255, (6, 10, 12)).astype(np.uint8)
    path = tmp_path / "tomo.emd"
    write_berkeley_emd(path, volume, [("z", 2.0, "nm"), ("y", 1.0, "nm"), ("x", 1.0, "nm")])
    img = open_image(path)
    assert img.axes == "zyx" and img.data.shape == (6, 10, 12) and img.pixel_size == pytest.approx((2.0, 1.0, 1.0))

    path = tmp_path / "movie.emd"
    write_berkeley_emd(path, volume, [("t", 0.1, "s"), ("y", 1.0, "nm"), ("x", 1.0, "nm")])
    img = open_image(path)
    assert img.axes == "yx" and img.metadata["frames"] == 6
    np.testing.assert_array_equal(img.data.compute(), volume[0])


def test_berkeley_emd_complex_and_spectrum(tmp_path):
    path = tmp_path / "fft.emd"
    write_berkeley_emd(path, np.ones((8, 8), np.complex64), [("y", 1.0, "nm"), ("x", 1.0, "nm")])
    with pytest.raises(MicroSymError, match="complex"):
        open_image(path)
    path = tmp_path / "spectrum.emd"
    write_berkeley_emd(path, np.ones((8, 100), np.float32), [("y", 1.0, "nm"), ("Energy", 0.01, "keV")])
    with pytest.raises(MicroSymError, match="no 2D image"):
        open_image(path)


def test_truncated_emd(tmp_path):
    path = tmp_path / "v.emd"
    write_velox(path, image=np.ones((64, 64, 1), np.uint16))
    path.write_bytes(path.read_bytes()[:3000])
    with pytest.raises(MicroSymError, match="not a readable EMD"):
        open_image(path)


# ------------------------------------------------------------------------------------- MRC


def test_mrc_image_round_trip_and_laziness(tmp_path):
    data = np.random.default_rng(6).random((40, 36)).astype(np.float32)
    path = tmp_path / "img.mrc"
    offset = write_mrc(path, data, voxel_angstrom=(1.5, 1.5))
    img = open_image(path)
    assert isinstance(img.data, da.Array) and img.axes == "yx" and img.data.dtype == np.float32
    assert img.unit == "nm" and img.pixel_size == pytest.approx((0.15, 0.15))
    with open(path, "r+b") as fh:  # overwritten after opening: the data read sees it
        fh.seek(offset)
        fh.write(np.full(36, -1.0, "<f4").tobytes())
    got = img.data.compute()
    assert (got[0] == -1.0).all() and (got[1:] == data[1:]).all()


@pytest.mark.parametrize("suffix", [".mrc", ".rec"])
def test_mrc_volume(tmp_path, suffix):
    vol = np.random.default_rng(7).integers(-100, 100, (8, 12, 10)).astype(np.int16)
    path = tmp_path / f"tomo{suffix}"
    write_mrc(path, vol, voxel_angstrom=(20.0, 10.0, 10.0))
    img = open_image(path)
    assert img.axes == "zyx" and img.data.shape == (8, 12, 10) and img.data.dtype == np.int16
    assert img.unit == "nm" and img.pixel_size == pytest.approx((2.0, 1.0, 1.0))
    np.testing.assert_array_equal(img.data.compute(), vol)


@pytest.mark.parametrize("suffix, ispg", [(".mrcs", 1), (".st", 0), (".ali", 0), (".mrc", 0)])
def test_mrc_stacks_take_first_frame(tmp_path, suffix, ispg):
    stack = np.random.default_rng(8).integers(0, 60000, (4, 16, 20)).astype(np.uint16)
    path = tmp_path / f"series{suffix}"
    write_mrc(path, stack, voxel_angstrom=(1.0, 3.0, 3.0), ispg=ispg, mz=1 if ispg == 0 else None)
    img = open_image(path)
    assert img.axes == "yx" and img.data.shape == (16, 20) and img.metadata["frames"] == 4
    assert img.pixel_size == pytest.approx((0.3, 0.3)) and img.unit == "nm"
    np.testing.assert_array_equal(img.data.compute(), stack[0])


def test_mrc_big_endian_and_uncalibrated(tmp_path):
    data = np.arange(20 * 10, dtype=np.float32).reshape(20, 10)
    path = tmp_path / "be.mrc"
    write_mrc(path, data, voxel_angstrom=None, endian=">")
    img = open_image(path)
    assert img.pixel_size is None and img.unit is None
    np.testing.assert_array_equal(img.data.compute(), data)


def test_mrc_bad_files(tmp_path):
    path = tmp_path / "cut.mrc"
    write_mrc(path, np.ones((64, 64), np.float32), (1.0, 1.0))
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(MicroSymError, match=r"cut\.mrc: not a readable MRC file \(truncated"):
        open_image(path)
    path.write_bytes(b"MRC?" * 10)
    with pytest.raises(MicroSymError, match="truncated"):
        open_image(path)
    path = tmp_path / "fft.mrc"
    write_mrc(path, np.ones((8, 8), np.complex64), (1.0, 1.0))
    with pytest.raises(MicroSymError, match="complex"):
        open_image(path)
    assert "complex" in assert_one_line_error(run_cli("info", path), path)


# ------------------------------------------------------------------------------ misc and CLI


def test_cli_info_on_synthetic_file(tmp_path):
    path = tmp_path / "micrograph.dm4"
    write_dm(path, np.random.default_rng(9).random((32, 32)).astype(np.float32), (0.127, 0.127), ("Å", "Å"), version=4)
    res = run_cli("info", path)
    assert res.returncode == 0, res.stderr
    assert "pixel size: 0.0127 x 0.0127 nm" in res.stdout and "source: Gatan DigitalMicrograph" in res.stdout


def test_suffixes_and_unsupported(tmp_path):
    assert {".dm3", ".dm4", ".emd", ".ser", ".emi", ".mrc", ".mrcs", ".rec", ".st"} <= set(MICROSCOPE_SUFFIXES)
    path = tmp_path / "x.hdr"
    path.write_text("?")
    with pytest.raises(MicroSymError, match="unsupported file type '.hdr'.*dm3"):
        open_image(path)
    with pytest.raises(MicroSymError, match="not a microscope file"):
        open_microscope(path)


def test_tia_ser_image_and_series(tmp_path):
    image = np.random.default_rng(10).integers(0, 4000, (1, 24, 18)).astype(np.uint16)
    path = tmp_path / "tia_1.ser"
    write_ser(path, image, pixel_m=2e-10)
    img = open_image(path)
    assert isinstance(img.data, da.Array) and img.data.shape == (24, 18) and img.data.dtype == np.uint16
    assert img.unit == "nm" and img.pixel_size == pytest.approx((0.2, 0.2))
    np.testing.assert_array_equal(img.data.compute(), image[0])
    series = np.random.default_rng(11).random((3, 16, 20)).astype(np.float32)
    path = tmp_path / "series_1.ser"
    write_ser(path, series, pixel_m=5e-11)
    img = open_image(path)
    assert img.data.shape == (16, 20) and img.metadata["frames"] == 3 and img.pixel_size == pytest.approx((0.05, 0.05))
    np.testing.assert_array_equal(img.data.compute(), series[0])


def test_tia_emi_without_ser_and_bad_ser(tmp_path):
    path = tmp_path / "session.emi"
    path.write_bytes(b"<ObjectInfo></ObjectInfo>")
    with pytest.raises(MicroSymError, match=r"session\.emi: "):
        open_image(path)
    path = tmp_path / "session_1.ser"
    path.write_bytes(b"\x49\x49\x97\x01" + b"\x00" * 20)
    with pytest.raises(MicroSymError, match=r"session_1\.ser: not a readable FEI TIA file"):
        open_image(path)


@pytest.mark.parametrize("unit, expected", [
    ("Å", ("nm", 0.1)), ("\u212b", ("nm", 0.1)), ("pm", ("nm", 1e-3)), ("nm", ("nm", 1.0)),
    ("µm", ("µm", 1.0)), ("\u03bcm", ("µm", 1.0)), ("um", ("µm", 1.0)), ("", None), (None, None),
    ("<undefined>", None), ("1/nm", False), ("keV", False), ("s", False),
])
def test_length_units(unit, expected):
    assert _length(unit) == expected


def test_napari_reader_opens_microscope_files_scaled(tmp_path):
    from micro_sym_napari._reader import napari_get_reader

    path = tmp_path / "scan.dm3"
    data = np.arange(48 * 64, dtype=np.float32).reshape(48, 64)
    write_dm(path, data, scales=(0.5, 0.25), units=("Å", "Å"))
    reader = napari_get_reader(str(path))
    assert reader is not None
    [(layer_data, kwargs, kind)] = reader(str(path))
    assert kind == "image" and kwargs["scale"] == pytest.approx((0.05, 0.025))
    np.testing.assert_array_equal(np.asarray(layer_data), data)

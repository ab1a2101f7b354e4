"""``micro-sym ebsd``: real segment outputs (2D network, 2D classical hexagonal, 3D network) exported to
.ctf, .ang and .h5 and read back by micro_sym's readers and by orix (docs/design.md §1.8).

What is checked against the segment output itself: the not-indexed points (no grain or no orientation),
every exported point's orientation (the frame convention included: a 2D angle θ, counter-clockwise as
displayed, is ``Z(-θ)`` in the files' y-down frame), misorientations between points of different grains as
orix computes them, grain ids, the quality column and the pixel size.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _helpers import read_output

from micro_sym import orientation as ori
from micro_sym.cli import main as cli_main
from micro_sym.io import orientation_export
from micro_sym.io.ebsd import read_ang, read_ebsd

# orix warns when it reads the 4π Euler angles that mark not-indexed points in every .ang file.
pytestmark = pytest.mark.filterwarnings("ignore:Angles are quite high")

orix_io = pytest.importorskip("orix.io")
tifffile = pytest.importorskip("tifffile")
from orix.quaternion import Orientation, Rotation, symmetry
from orix.vector import Vector3d

ROOT = Path(__file__).resolve().parents[2]
MICROGRAPH = ROOT / "sample_data" / "micrographs" / "images" / "sample_000.tif"
VOLUME = ROOT / "sample_data" / "volume" / "images" / "sample_000.tif"
PIXEL_NM = 0.05  # the sample micrographs' pixel size
VOXEL_NM = (0.3, 0.2, 0.2)  # (z, y, x): anisotropic, so a swapped axis shows


def _from_orix(q) -> np.ndarray:
    """micro_sym's quaternion of orix ones: the conjugate (asserted in tests/orientation/test_orix_crosscheck.py)."""
    return np.asarray(q, dtype=np.float64) * [1.0, -1.0, -1.0, -1.0]


def run(args) -> int:
    """The console entry point in-process (typer exits with SystemExit on success)."""
    try:
        return cli_main([str(a) for a in args])
    except SystemExit as exc:
        return exc.code or 0


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """Segment outputs: a 128 x 128 micrograph crop (network; and classical with a hexagonal lattice) and a
    32 x 48 x 48 volume crop, with physical pixel sizes in nm."""
    if not (MICROGRAPH.exists() and VOLUME.exists()):
        pytest.skip("sample data not present")
    tmp = tmp_path_factory.mktemp("export")
    tifffile.imwrite(tmp / "crop.tif", tifffile.imread(MICROGRAPH)[:128, :128], imagej=True,
                     resolution=(1 / PIXEL_NM, 1 / PIXEL_NM), metadata={"unit": "nm"})
    tifffile.imwrite(tmp / "vol.tif", tifffile.imread(VOLUME)[:32, :48, :48], imagej=True,
                     resolution=(1 / VOXEL_NM[2], 1 / VOXEL_NM[1]),
                     metadata={"unit": "nm", "spacing": VOXEL_NM[0], "axes": "ZYX"})
    assert run(["segment", tmp / "crop.tif", tmp / "vol.tif", "--out", tmp / "seg"]) == 0
    assert run(["segment", tmp / "crop.tif", "--method", "classical", "--lattice", "hexagonal",
                "--out", tmp / "hex"]) == 0
    return {"square": tmp / "seg" / "crop.zarr", "hexagonal": tmp / "hex" / "crop.zarr",
            "volume": tmp / "seg" / "vol.zarr", "tmp": tmp}


def _maps(zarr_path: Path) -> dict:
    """The segment output's maps, plus the points an export must call indexed."""
    m = read_output(zarr_path.parent, zarr_path.name.removesuffix(".zarr"))
    q = m["orientation"]
    finite = np.isfinite(q).all(axis=0) if q.ndim == m["grains"].ndim + 1 else np.isfinite(q)
    m["indexed"] = finite & (m["grains"] > 0)
    return m


def _export(zarr_path: Path, dest: Path, *extra) -> Path:
    assert run(["ebsd", zarr_path, "--out", dest, *extra]) == 0
    return dest


def _expected_2d(theta, k: int) -> np.ndarray:
    """micro_sym quaternions (crystal -> file sample frame) of in-plane angles: ``Z(-θ)`` (y runs down the rows)."""
    return ori.axis_angle_to_quat(np.tile([0.0, 0.0, 1.0], (theta.size, 1)), -theta.ravel())


def _pairs(indexed, labels, n=3000, seed=0):
    """Random pairs of indexed points in different grains (flat indices)."""
    rng = np.random.default_rng(seed)
    idx = np.flatnonzero(indexed)
    a, b = rng.choice(idx, n), rng.choice(idx, n)
    keep = labels.ravel()[a] != labels.ravel()[b]
    return a[keep], b[keep]


# ------------------------------------------------------------------------------------------------ 2D text


@pytest.mark.parametrize("lattice", ["square", "hexagonal"])
def test_ctf_reads_back_in_micro_sym_and_orix(outputs, tmp_path, lattice):
    zarr_path = outputs[lattice]
    m = _maps(zarr_path)
    k, group = {"square": (4, symmetry.Oh), "hexagonal": (6, symmetry.D6h)}[lattice]
    path = _export(zarr_path, tmp_path / "m.ctf")
    theta, ok = m["orientation"], m["indexed"]
    assert 0 < ok.sum() < ok.size  # both kinds of points are there to compare

    mine = read_ebsd(path)
    assert mine.shape == theta.shape and mine.symmetry == {"square": "cubic", "hexagonal": "hexagonal"}[lattice]
    np.testing.assert_allclose(mine.step, (PIXEL_NM * 1e-3,) * 2, rtol=1e-9)  # µm, the format's unit
    np.testing.assert_array_equal(mine.mask, ok)
    got = np.moveaxis(mine.quaternions, 0, -1)[ok]
    want = _expected_2d(theta[ok], k)
    sym_name = "cubic" if lattice == "square" else "hexagonal"
    dis = _symmetric_angle(got, want, sym_name)
    assert dis.max() < 1e-3  # Euler angles are written to 1e-4°
    # Quality column: band contrast = 255 (1 - boundary probability).
    np.testing.assert_allclose(mine.extra["BC"], np.rint(255 * (1 - np.clip(m["boundary"], 0, 1))), atol=0.5)

    xmap = orix_io.load(path)
    assert xmap.shape == theta.shape and xmap.scan_unit == "um"
    np.testing.assert_allclose((xmap.dy, xmap.dx), (PIXEL_NM * 1e-3,) * 2, rtol=1e-6)
    np.testing.assert_array_equal(xmap.is_indexed.reshape(theta.shape), ok)
    o = Orientation(xmap.rotations.data, group)
    a, b = _pairs(ok, m["grains"])
    np.testing.assert_allclose(o[a].angle_with(o[b], degrees=True),
                               ori.misorientation_2d(theta.ravel()[a], theta.ravel()[b], k), atol=1e-3)


@pytest.mark.parametrize("suffix", [".ctf", ".ang"])
def test_text_export_streams_in_bands(outputs, tmp_path, monkeypatch, suffix):
    """Written in bands of whole chunk rows (here 2 bands of 64 rows), the file is the same as in one band."""
    whole = _export(outputs["square"], tmp_path / f"whole{suffix}").read_bytes()
    monkeypatch.setattr(orientation_export, "_BAND_POINTS", 1)  # one chunk row (64 rows) per band
    assert _export(outputs["square"], tmp_path / f"bands{suffix}").read_bytes() == whole


def _symmetric_angle(q1, q2, sym: str) -> np.ndarray:
    """Smallest rotation angle (degrees) between micro_sym quaternions over the crystal symmetry."""
    s = ori.symmetry_quats(sym)
    d = ori.quat_multiply(ori.quat_conjugate(q1), q2)
    w = np.abs(d @ (s * [1.0, -1.0, -1.0, -1.0]).T).max(axis=-1)
    return 2 * np.rad2deg(np.arccos(np.clip(w, -1, 1)))


def test_in_plane_angle_is_counter_clockwise_as_displayed(outputs, tmp_path):
    """The sign of the 2D convention: the crystal's [100] (the lattice's first basis vector) points at θ
    counter-clockwise on screen, i.e. along ``(cos θ, -sin θ)`` in the file's (x right, y down) frame."""
    m = _maps(outputs["square"])
    xmap = orix_io.load(_export(outputs["square"], tmp_path / "m.ctf"))
    ok = m["indexed"].ravel()
    crystal_x_in_sample = ~Orientation(xmap.rotations.data[ok]) * Vector3d.xvector()  # lab2crystal, inverted
    v = crystal_x_in_sample.data
    on_screen = np.rad2deg(np.arctan2(-v[:, 1], v[:, 0]))  # y up on screen = -y in the file
    assert np.abs(v[:, 2]).max() < 1e-6
    err = ori.misorientation_2d(on_screen, m["orientation"].ravel()[ok], 4)
    assert err.max() < 1e-3


@pytest.mark.parametrize("lattice", ["square", "hexagonal"])
def test_ang_reads_back_in_the_tsl_frame(outputs, tmp_path, lattice):
    zarr_path = outputs[lattice]
    sym_name, group = {"square": ("cubic", symmetry.Oh), "hexagonal": ("hexagonal", symmetry.D6h)}[lattice]
    m = _maps(zarr_path)
    ok = m["indexed"]
    ang, ctf = _export(zarr_path, tmp_path / "m.ang"), _export(zarr_path, tmp_path / "m.ctf")
    mine, ref = read_ebsd(ang), read_ebsd(ctf)  # read_ang turns the TSL frame back (φ1 - 90°)
    assert mine.symmetry == ref.symmetry == sym_name
    np.testing.assert_array_equal(mine.mask, ok)
    np.testing.assert_allclose(mine.step, ref.step, rtol=1e-9)
    got, want = (np.moveaxis(x.quaternions, 0, -1)[ok] for x in (mine, ref))
    assert _symmetric_angle(got, want, sym_name).max() < 1e-3
    np.testing.assert_allclose(mine.extra["iq"], np.rint(255 * (1 - np.clip(m["boundary"], 0, 1))), atol=0.5)
    # As stored: φ1 + 90° (the TSL frame), which in-plane symmetry alone would not reveal (180° is a symmetry).
    raw = read_ang(ang, tsl_to_oxford=False)
    turned = np.mod(raw.euler[0][ok] - ref.euler[0][ok] + 180.0, 360.0) - 180.0
    np.testing.assert_allclose(turned, 90.0, atol=1e-3)

    # orix reads the angles as stored: the .ctf orientations turned by the TSL frame's 90° about sample z
    # (stored φ1 + 90°, i.e. the orix quaternion times a -90° turn about z).
    xa, xc = orix_io.load(ang), orix_io.load(ctf)
    np.testing.assert_array_equal(xa.is_indexed.reshape(ok.shape), ok)
    flat = ok.ravel()
    turn = Rotation.from_axes_angles([0, 0, 1], -90, degrees=True)
    oa = Orientation(xa.rotations.data[flat], group)
    oc = Orientation((Rotation(xc.rotations.data[flat]) * turn).data, group)
    assert oa.angle_with(oc, degrees=True).max() < 1e-3
    if lattice == "hexagonal":  # a 90° turn about the 6-fold axis is no symmetry (about a 4-fold it is)
        assert Orientation(xc.rotations.data[flat], group).angle_with(oa, degrees=True).min() > 29.0


# ------------------------------------------------------------------------------------------------ orix HDF5


def test_h5_2d_holds_orientations_grain_ids_boundary_and_unit(outputs, tmp_path):
    m = _maps(outputs["square"])
    ok, theta = m["indexed"], m["orientation"]
    xmap = orix_io.load(_export(outputs["square"], tmp_path / "m.h5"))
    assert xmap.shape == theta.shape and xmap.scan_unit == "nm"
    np.testing.assert_allclose((xmap.dy, xmap.dx), (PIXEL_NM, PIXEL_NM), rtol=1e-6)
    np.testing.assert_array_equal(xmap.is_indexed.reshape(ok.shape), ok)
    np.testing.assert_array_equal(xmap.prop["grain_id"].reshape(ok.shape), m["grains"])
    np.testing.assert_allclose(xmap.prop["boundary"].reshape(ok.shape), m["boundary"])
    got = _from_orix(xmap.rotations.data)[ok.ravel()]
    assert _symmetric_angle(got, _expected_2d(theta[ok], 4), "cubic").max() < 1e-4  # arccos rounding near 0


def test_h5_3d_holds_the_quaternion_map(outputs, tmp_path):
    m = _maps(outputs["volume"])
    ok, q, labels = m["indexed"], m["orientation"], m["grains"]
    nz, ny, nx = labels.shape
    assert 0 < ok.sum() < ok.size
    xmap = orix_io.load(_export(outputs["volume"], tmp_path / "v.h5"))
    # orix maps are 2D: planes stacked along y; reshape recovers the volume.
    assert xmap.shape == (nz * ny, nx) and xmap.scan_unit == "nm"
    np.testing.assert_allclose((xmap.dy, xmap.dx), VOXEL_NM[1:], rtol=1e-6)
    np.testing.assert_allclose(xmap.prop["z"].reshape(nz, ny, nx)[:, 0, 0], np.arange(nz) * VOXEL_NM[0], rtol=1e-6)
    np.testing.assert_array_equal(xmap.is_indexed.reshape(nz, ny, nx), ok)
    np.testing.assert_array_equal(xmap.prop["grain_id"].reshape(nz, ny, nx), labels)
    assert xmap.phases[1].point_group.name == "m-3m"
    # Every point's quaternion, exactly (up to sign): orix stores the conjugate of micro_sym's.
    got = _from_orix(xmap.rotations.data).reshape(nz, ny, nx, 4)[ok]
    want = np.moveaxis(q, 0, -1)[ok]
    np.testing.assert_allclose(np.abs(np.einsum("ij,ij->i", got, want / np.linalg.norm(want, axis=1, keepdims=True))),
                               1.0, atol=1e-6)
    o = Orientation(xmap.rotations.data, symmetry.Oh)
    a, b = _pairs(ok, labels)
    qf = np.moveaxis(q, 0, -1).reshape(-1, 4)
    np.testing.assert_allclose(o[a].angle_with(o[b], degrees=True), ori.misorientation_cubic(qf[a], qf[b]), atol=1e-3)


# ------------------------------------------------------------------------------------------------ errors


def _one_line_error(capsys, *words):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("micro-sym: error: "), err
    assert all(w in err[0] for w in words), err[0]


def test_errors_are_one_line(outputs, tmp_path, capsys, monkeypatch):
    sq, vol = outputs["square"], outputs["volume"]
    capsys.readouterr()
    assert run(["ebsd", sq, "--out", tmp_path / "m.txt"]) == 2
    _one_line_error(capsys, "m.txt", "unknown", ".ctf, .ang or .h5")
    assert run(["ebsd", vol, "--out", tmp_path / "v.ang"]) == 2
    _one_line_error(capsys, "v.ang", "3D", ".h5")
    assert run(["ebsd", outputs["tmp"] / "crop.tif", "--out", tmp_path / "m.ctf"]) == 2
    _one_line_error(capsys, "crop.tif", "not a micro-sym segment output")
    (tmp_path / "m.ctf").write_text("mine")
    assert run(["ebsd", sq, "--out", tmp_path / "m.ctf"]) == 2
    _one_line_error(capsys, "m.ctf", "already exists", "--overwrite")
    assert (tmp_path / "m.ctf").read_text() == "mine"
    assert run(["ebsd", sq, "--out", tmp_path / "m.ctf", "--overwrite"]) == 0
    assert read_ebsd(tmp_path / "m.ctf").shape == (128, 128)
    assert run(["ebsd", sq, "--out", tmp_path / "m.ctf", "--lattice", "hexagonal", "--overwrite"]) == 2
    _one_line_error(capsys, "--lattice hexagonal", "square")
    n = 32 * 48 * 48
    monkeypatch.setattr(orientation_export, "MAX_ORIX_POINTS", n - 1)  # one point too many
    assert run(["ebsd", vol, "--out", tmp_path / "v.h5"]) == 2
    _one_line_error(capsys, "32x48x48", f"{n} points", "memory")
    monkeypatch.setattr(orientation_export, "MAX_ORIX_POINTS", n)
    need = n * orientation_export.ORIX_BYTES_PER_POINT
    monkeypatch.setattr(orientation_export, "_physical_memory", lambda: need - 1)  # a machine one byte short
    assert run(["ebsd", vol, "--out", tmp_path / "v.h5"]) == 2
    _one_line_error(capsys, "32x48x48", "GiB in memory", "this machine has")
    assert not list(tmp_path.glob("*.h5")) and not list(tmp_path.glob(".*tmp*"))
    monkeypatch.setattr(orientation_export, "_physical_memory", lambda: need)  # just enough, at the limit
    assert run(["ebsd", vol, "--out", tmp_path / "v.h5"]) == 0


def _copy_output(zarr_path: Path, dest: Path) -> Path:
    """A copy of an output with its run directory (``OUT/.NAME.run``)."""
    name = zarr_path.name.removesuffix(".zarr")
    dest.mkdir()
    shutil.copytree(zarr_path, dest / zarr_path.name)
    shutil.copytree(zarr_path.parent / f".{name}.run", dest / f".{name}.run")
    return dest / zarr_path.name


def test_incomplete_and_unrecorded_lattice(outputs, tmp_path, capsys):
    import zarr

    copy = _copy_output(outputs["square"], tmp_path / "out")
    manifest = copy.parent / ".crop.run" / "manifest.json"
    record = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**record, "status": "running"}))
    capsys.readouterr()
    assert run(["ebsd", copy, "--out", tmp_path / "m.h5"]) == 2
    _one_line_error(capsys, "crop.zarr", "incomplete", "running")
    manifest.write_text(json.dumps(record))
    # A network run that recorded no lattice (an output older than the recorded symmetry): the user names it.
    group = zarr.open_group(str(copy), mode="a")
    record = {k: v for k, v in group.attrs["micro_sym"].items() if k != "symmetry"}
    group.attrs["micro_sym"] = {**record, "method": {"name": "network"}}
    assert run(["ebsd", copy, "--out", tmp_path / "m.h5"]) == 2
    _one_line_error(capsys, "crop.zarr", "--lattice")
    assert run(["ebsd", copy, "--out", tmp_path / "m.h5", "--lattice", "square"]) == 0
    assert orix_io.load(tmp_path / "m.h5").phases[1].point_group.name == "m-3m"


def test_a_fringes_map_is_refused_with_one_line(outputs, tmp_path, capsys):
    """One set of fringes gives each grain a plane normal, not a crystal orientation: no orientation
    file can hold it, and the error says so (the segment run records its angles' symmetry)."""
    import zarr

    copy = _copy_output(outputs["square"], tmp_path / "out")
    group = zarr.open_group(str(copy), mode="a")
    group.attrs["micro_sym"] = {**group.attrs["micro_sym"], "symmetry": "fringes"}
    capsys.readouterr()
    assert run(["ebsd", copy, "--out", tmp_path / "m.ctf"]) == 2
    _one_line_error(capsys, "crop.zarr", "fringes map", "plane normal")


def test_cli_error_in_a_subprocess_has_no_traceback(outputs, tmp_path):
    script = Path(sys.executable).with_name("micro-sym")
    cli = [str(script)] if script.is_file() else [sys.executable, "-m", "micro_sym"]
    res = subprocess.run([*cli, "ebsd", str(outputs["volume"]), "--out", str(tmp_path / "v.ctf")],
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        (f"micro-sym: error: {tmp_path / 'v.ctf'}: .ctf holds 2D maps only and {outputs['volume']} is 3D 32x48x48; "
         f"write .h5 (orix HDF5) instead")]

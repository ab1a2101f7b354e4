"""Hostile and unusual inputs (issue 30): crafted TIFF sizes, colour TIFFs, saturated pixels, hexagonal EBSD.

Each case is a user error with one line on stderr and exit status 2, or an input that must simply work.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from micro_sym import orientation as ori
from micro_sym.cli import main as cli_main
from micro_sym.errors import MicroSymError
from micro_sym.io import open_image


def _cli(args, stdout=None):
    """``micro-sym ARGS`` in process: exit code and the non-empty stderr lines (stdout into ``stdout``)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(stdout or io.StringIO()):
        try:
            code = cli_main([str(a) for a in args]) or 0
        except SystemExit as exc:
            code = exc.code or 0
    return code, [ln for ln in err.getvalue().splitlines() if ln.strip()]


def _assert_one_line_error(code, lines, *needles):
    assert code == 2, (code, lines)
    assert len(lines) == 1 and lines[0].startswith("micro-sym: error:"), lines
    for needle in needles:
        assert needle in lines[0], lines


# ------------------------------------------------------------------ item 2: TIFF headers declaring huge sizes


def _patched_tiff(path, data, width, length, rows_per_strip=None, **kwargs):
    """A small real TIFF whose ImageWidth/ImageLength (and RowsPerStrip) tags are overwritten afterwards."""
    tifffile.imwrite(path, data, **kwargs)
    with tifffile.TiffFile(path, mode="r+b") as tif:
        tags = tif.pages[0].tags
        tags["ImageWidth"].overwrite(width)
        tags["ImageLength"].overwrite(length)
        if rows_per_strip is not None:
            tags["RowsPerStrip"].overwrite(rows_per_strip)
    return path


def _limited_memory():
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (2 * 2**30, 2 * 2**30))


def _info_with_2gb(path) -> str:
    """``micro-sym info PATH`` in a subprocess limited to 2 GB of address space and 60 s: its one error line."""
    proc = subprocess.run([sys.executable, "-m", "micro_sym", "info", str(path)], capture_output=True, text=True,
                          timeout=60, preexec_fn=_limited_memory)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("micro-sym: error:") and path.name in lines[0], lines
    return lines[0]


def test_tiff_declaring_4g_squared_pixels_is_refused_before_allocating(tmp_path):
    """8 KB on disk, 4,294,967,280² pixels in the header: one line and exit 2 under a 2 GB memory cap."""
    path = _patched_tiff(tmp_path / "bomb.tif", np.zeros((64, 64), np.uint16), 4294967280, 4294967280)
    assert path.stat().st_size < 10_000
    assert "4294967280" in _info_with_2gb(path)


@pytest.mark.parametrize(
    "case, kwargs, match",
    [
        # One strip claiming 100000² uint16 (20 GB) in a 9 KB uncompressed file: more than the file holds.
        ("uncompressed", dict(rows_per_strip=100000), "the file holds"),
        # A zlib-compressed tiled file whose size tags were enlarged: far more tiles needed than listed.
        ("tiled", dict(tile=(64, 64), compression="zlib"), "strips/tiles"),
        # One compressed strip that would decode to 18.6 GiB: no file size bounds compressed data.
        ("strip", dict(rows_per_strip=100000, compression="zlib"), "would decode to"),
    ],
)
def test_tiff_declared_sizes_are_checked_against_the_file(tmp_path, case, kwargs, match):
    path = _patched_tiff(tmp_path / f"{case}.tif", np.ones((128, 128), np.uint16), 100000, 100000, **kwargs)
    with pytest.raises(MicroSymError, match=match):
        open_image(path)


def test_tiff_description_declaring_ten_million_pages_is_refused(tmp_path):
    """tifffile trusts the shape in its own JSON description for a contiguous series: 82 GB in 17 KB."""
    path = tmp_path / "shaped.tif"
    tifffile.imwrite(path, np.zeros((2, 64, 64), np.uint16))
    with tifffile.TiffFile(path, mode="r+b") as tif:
        tif.pages[0].tags["ImageDescription"].overwrite('{"shape": [10000000, 64, 64]}')
    assert "the file holds" in _info_with_2gb(path)


def test_real_tiffs_still_open(tmp_path):
    """The checks pass real files: uncompressed, compressed strips and tiles, BigTIFF."""
    img = np.random.default_rng(0).integers(0, 60000, (300, 200)).astype(np.uint16)
    for i, kw in enumerate([{}, dict(compression="zlib"), dict(tile=(64, 64), compression="zlib"), dict(bigtiff=True)]):
        tifffile.imwrite(tmp_path / f"{i}.tif", img, **kw)
        np.testing.assert_array_equal(open_image(tmp_path / f"{i}.tif").data.compute(), img)


# ------------------------------------------------------------------------------- item 5: colour TIFFs


@pytest.fixture
def rgb(tmp_path):
    rng = np.random.default_rng(5)
    return rng.integers(0, 255, (3, 96, 96), dtype=np.uint8)


def test_planar_rgb_tiff_is_refused_not_segmented_as_a_volume(tmp_path, rgb):
    path = tmp_path / "planar.tif"
    tifffile.imwrite(path, rgb, photometric="rgb", planarconfig="separate")
    with pytest.raises(MicroSymError, match="RGB image"):
        open_image(path)
    _assert_one_line_error(*_cli(["info", path]), "planar.tif", "RGB image", "planar")
    code, lines = _cli(["segment", path, "--out", tmp_path / "out"])
    _assert_one_line_error(code, lines, "planar.tif", "RGB image")
    assert not (tmp_path / "out" / "planar.zarr").exists()


@pytest.mark.parametrize("layout", ["interleaved", "planar"])
def test_rgb_channel_can_be_chosen(tmp_path, rgb, layout):
    path = tmp_path / "rgb.tif"
    if layout == "planar":
        tifffile.imwrite(path, rgb, photometric="rgb", planarconfig="separate")
    else:
        tifffile.imwrite(path, np.moveaxis(rgb, 0, -1), photometric="rgb")
    with pytest.raises(MicroSymError, match="RGB image"):
        open_image(path)
    for c in range(3):
        img = open_image(path, channel=c)
        assert img.axes == "yx" and img.data.shape == (96, 96)
        np.testing.assert_array_equal(img.data.compute(), rgb[c])
    with pytest.raises(MicroSymError, match="channel 3 does not exist"):
        open_image(path, channel=3)


def test_multichannel_imagej_and_grey_alpha_are_refused(tmp_path, rgb):
    tifffile.imwrite(tmp_path / "ij.tif", rgb, imagej=True, metadata={"axes": "CYX"})
    with pytest.raises(MicroSymError, match="multi-channel image \\(3 channels\\)"):
        open_image(tmp_path / "ij.tif")
    np.testing.assert_array_equal(open_image(tmp_path / "ij.tif", channel=1).data.compute(), rgb[1])
    tifffile.imwrite(tmp_path / "ga.tif", rgb[:2], photometric="minisblack", planarconfig="separate", extrasamples=[2])
    with pytest.raises(MicroSymError, match="2 samples per pixel"):
        open_image(tmp_path / "ga.tif")


@pytest.mark.parametrize("flavour", ["pages", "imagej", "ome", "shaped"])
def test_grey_three_slice_stack_is_still_a_volume(tmp_path, rgb, flavour):
    path = tmp_path / "stack.tif"
    kw = {"pages": dict(photometric="minisblack"), "imagej": dict(imagej=True, metadata={"axes": "ZYX"}),
          "ome": dict(ome=True, metadata={"axes": "ZYX"}),
          "shaped": dict(photometric="minisblack", metadata={"axes": "ZYX"})}[flavour]
    tifffile.imwrite(path, rgb, **kw)
    img = open_image(path)
    assert img.axes == "zyx" and img.data.shape == (3, 96, 96)
    np.testing.assert_array_equal(img.data.compute(), rgb)
    code, lines = _cli(["info", path])
    assert code == 0 and not lines


def test_channel_of_a_grey_image(tmp_path, rgb):
    tifffile.imwrite(tmp_path / "grey.tif", rgb[0])
    np.testing.assert_array_equal(open_image(tmp_path / "grey.tif", channel=0).data.compute(), rgb[0])
    with pytest.raises(MicroSymError, match="single grey channel"):
        open_image(tmp_path / "grey.tif", channel=1)


# ----------------------------------------------------------------------- item 4: one saturated pixel


@pytest.fixture(scope="module")
def micrograph():
    from micro_sym.synth import Imaging2D, Synth2DConfig, micrograph_from_grains, synth_2d

    s = synth_2d(Synth2DConfig(size=(256, 256)), seed=21)
    angles = {int(g): float(np.median(s.orientation[s.grains == g])) for g in np.unique(s.grains)}
    table = np.array([angles.get(g, 0.0) for g in range(max(angles) + 1)])

    def make(dose):
        return micrograph_from_grains(s.grains.astype(np.uint32), table, imaging=Imaging2D(dose=float(dose), psf_sigma=1.0),
                                      seed=0, lattice="square", period=8.0)

    return make


@pytest.mark.parametrize("dose", [20, 1000])
def test_one_saturated_pixel_moves_neither_snr_nor_period(micrograph, dose):
    import dask.array as da

    from micro_sym.classical import estimate_period, fringe_snr

    clean = micrograph(dose)
    snr, period = fringe_snr(clean)
    assert abs(period - 8.0) < 0.1
    hot = clean.copy()
    hot[100, 100] = 65535
    for image in (hot, da.from_array(hot, chunks=128)):  # in memory and lazy
        snr_hot, period_hot = fringe_snr(image)
        assert abs(snr_hot - snr) < 1.0, (snr, snr_hot)
        assert abs(period_hot - period) < 0.02
        assert abs(estimate_period(image) - estimate_period(clean)) < 0.02
    # A cluster of hot pixels (a cosmic ray, 0.1 % of the image) as well.
    burst = clean.copy()
    burst[40:48, 60:68] = 65535
    assert abs(fringe_snr(burst)[0] - snr) < 1.0


@pytest.mark.parametrize("method, chosen", [("classical", "classical square, period 8.0"), ("auto", "auto: network")])
def test_saturated_pixel_does_not_stop_the_method_choice(micrograph, tmp_path, method, chosen):
    """`segment --method classical/auto` on a 20-count image with one 65535 pixel (in the middle, where
    the Welch window does not hide it): planned as for the clean image, not "no lattice fringes found"."""
    img = micrograph(20).astype(np.float32)
    img[128, 128] = 65535
    tifffile.imwrite(tmp_path / "hot.tif", img)
    out = io.StringIO()
    code, lines = _cli(["segment", tmp_path / "hot.tif", "--out", tmp_path / "o", "--method", method, "--dry-run"], out)
    assert code == 0 and chosen in out.getvalue(), (code, out.getvalue(), lines)


# --------------------------------------------------------------------------------- item 6: hexagonal EBSD


def _ebsd_map(symmetry="hexagonal", laue=9, ny=30, nx=40, seed=0):
    """Four grains of random orientation (in-sector Euler angles) in an EBSDMap."""
    from pathlib import Path

    from micro_sym.io.ebsd import EBSDMap

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:ny, 0:nx]
    grain = (yy >= ny // 2) * 2 + (xx >= nx // 2)
    eul = rng.uniform([0, 0, 0], [360, 90, 60], (4, 3))
    e = np.moveaxis(eul[grain], -1, 0)
    q = np.moveaxis(ori.euler_bunge_to_quat(e[0], e[1], e[2]), -1, 0)
    return EBSDMap(q, e, np.ones((ny, nx), np.int32), np.ones((ny, nx), bool), (0.5, 0.5), "µm",
                   [{"name": "Ti", "laue_group": laue, "symmetry": symmetry}], Path("synthetic"))


def _write_cpr(path, m, laue="9", step=("0.5", "0.5")):
    """An Oxford .cpr/.crc pair: phase byte and three float32 Euler angles (radians) per point."""
    ny, nx = m.shape
    path.with_suffix(".cpr").write_text(
        "[General]\nVersion=5.0\n"
        f"[Job]\nxCells={nx}\nyCells={ny}\nGridDistX={step[1]}\nGridDistY={step[0]}\n"
        f"[Phases]\nCount=1\n[Phase1]\nStructureName=Ti\nLaueGroup={laue}\n"
        "[Fields]\nCount=3\nField1=3\nField2=4\nField3=5\n"
    )
    rec = np.zeros((ny, nx), np.dtype([("phase", "u1"), ("phi1", "<f4"), ("Phi", "<f4"), ("phi2", "<f4")]))
    rec["phase"] = m.phase
    for name, e in zip(("phi1", "Phi", "phi2"), m.euler):
        rec[name] = np.deg2rad(e)
    rec.tofile(path.with_suffix(".crc"))
    return path.with_suffix(".cpr")


@pytest.mark.parametrize("fmt", ["ctf", "ang", "cpr"])
def test_hexagonal_ebsd_map_runs_end_to_end(tmp_path, fmt):
    from micro_sym.io.ebsd import read_ebsd, write_ang, write_ctf

    m = _ebsd_map()
    path = tmp_path / f"hex.{fmt}"
    {"ctf": write_ctf, "ang": write_ang, "cpr": _write_cpr}[fmt](path, m)
    assert read_ebsd(path).symmetry == "hexagonal"
    code, lines = _cli(["grains", path, "--out", tmp_path / "out"])
    assert code == 0, lines
    out = tmp_path / "out"
    for suffix in ("_grains.csv", "_summary.json", "_orientation.png", "_grain_map.png", ".zarr"):
        assert (out / f"hex{suffix}").exists(), suffix
    summary = json.loads((out / "hex_summary.json").read_text())
    assert summary["n_grains"] == 4 and summary["parameters"]["symmetry"] == "hexagonal"


@pytest.mark.parametrize("laue, symmetry", [("m-3m", "cubic"), ("m3m", "cubic"), ("6/mmm", "hexagonal"), (" 9 ", "hexagonal")])
def test_cpr_laue_group_as_symbol_or_number(tmp_path, laue, symmetry):
    from micro_sym.io.ebsd import read_ebsd

    m = read_ebsd(_write_cpr(tmp_path / "m.cpr", _ebsd_map(), laue=laue))
    assert m.symmetry == symmetry
    assert _cli(["grains", tmp_path / "m.cpr", "--out", tmp_path / "out"])[0] == 0


def test_cpr_unknown_laue_group_is_one_line(tmp_path):
    path = _write_cpr(tmp_path / "m.cpr", _ebsd_map(), laue="hexagonalish")
    _assert_one_line_error(*_cli(["grains", path, "--out", tmp_path / "out"]), "m.cpr", "LaueGroup 'hexagonalish'")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("fmt", ["cpr", "ctf", "ang"])
@pytest.mark.parametrize("bad", ["inf", "nan", "0", "-0.5"])
def test_non_finite_or_non_positive_step_is_one_line(tmp_path, fmt, bad):
    from micro_sym.io.ebsd import write_ang, write_ctf

    m = _ebsd_map()
    path = tmp_path / f"m.{fmt}"
    if fmt == "cpr":
        _write_cpr(path, m, step=(bad, bad))
    else:
        {"ctf": write_ctf, "ang": write_ang}[fmt](path, m)
        keys = {"ctf": ("XStep\t", "YStep\t"), "ang": ("# XSTEP: ", "# YSTEP: ")}[fmt]
        lines = path.read_text(encoding="latin-1").splitlines()
        for i, line in enumerate(lines):
            for key in keys:
                if line.startswith(key):
                    lines[i] = key + bad
        path.write_text("\n".join(lines) + "\n", encoding="latin-1")
    _assert_one_line_error(*_cli(["grains", path, "--out", tmp_path / "out"]), f"m.{fmt}", "finite positive")
    assert not (tmp_path / "out").exists()


def test_hexagonal_ipf_colours_are_symmetry_invariant():
    from micro_sym.grains.plots import ipf_colour_hexagonal, orientation_rgb

    rng = np.random.default_rng(3)
    q = ori.random_quaternions(500, rng)
    base = ipf_colour_hexagonal(q)
    for s in ori.hexagonal_symmetry_quats():
        np.testing.assert_allclose(ipf_colour_hexagonal(ori.quat_multiply(q, s)), base, atol=1e-9)
    np.testing.assert_allclose(ipf_colour_hexagonal(-q), base, atol=1e-12)
    # Key corners: [0001] red, [2-1-10] (x ∥ a1) green, [10-10] blue; rotating the crystal so that the
    # sample z axis lies along each corner gives that colour.
    corners = {(0.0, 0.0, 1.0): (1, 0, 0), (1.0, 0.0, 0.0): (0, 1, 0), (np.cos(np.pi / 6), np.sin(np.pi / 6), 0.0): (0, 0, 1)}
    for d, colour in corners.items():
        axis = np.cross(d, (0.0, 0.0, 1.0))
        angle = np.degrees(np.arccos(np.clip(d[2], -1, 1)))
        qd = ori.axis_angle_to_quat(axis / np.linalg.norm(axis), angle) if np.linalg.norm(axis) > 0 else np.array([1.0, 0, 0, 0])
        np.testing.assert_allclose(ipf_colour_hexagonal(qd), colour, atol=1e-6)
    rgb = orientation_rgb(np.moveaxis(q.reshape(20, 25, 4), -1, 0), "hexagonal")
    assert rgb.shape == (20, 25, 3) and np.isfinite(rgb).all()


def test_output_folders_get_the_users_permissions(tmp_path):
    """``micro-sym grains`` builds its output in a scratch folder (private, 0700) and renames it: the
    result must be as readable as any new folder (the umask's permissions)."""
    from micro_sym.io.ebsd import write_ctf

    path = tmp_path / "m.ctf"
    write_ctf(path, _ebsd_map(symmetry="cubic", laue=11))
    code, lines = _cli(["grains", path, "--out", tmp_path / "out"])
    assert code == 0, lines
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o777 & ~umask


def test_cli_errors_are_one_line_even_after_escnn_is_imported(tmp_path):
    """Loading an escnn model warns that py3nj is missing; a user's error after it is still one line."""
    volume = Path(__file__).resolve().parents[2] / "sample_data" / "volume" / "images" / "sample_000.tif"
    res = subprocess.run([sys.executable, "-m", "micro_sym", "segment", str(volume), "--out", "o", "--model", "default-2d"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2 and len(lines) == 1 and "default-3d" in lines[0], res.stderr


def _edit_ang_data(path, edit):
    """Apply ``edit(columns) -> columns`` to the first data line of an ``.ang`` file."""
    lines = path.read_text(encoding="latin-1").splitlines()
    i = next(n for n, line in enumerate(lines) if line and not line.startswith("#"))
    lines[i] = " ".join(edit(lines[i].split()))
    path.write_text("\n".join(lines) + "\n", encoding="latin-1")


def test_ang_phi1_far_out_of_range_is_one_line(tmp_path):
    # φ1 = 1e6 rad: the TSL -> Oxford shift (mod 360°) would otherwise wrap it into range silently.
    from micro_sym.io.ebsd import write_ang

    path = write_ang(tmp_path / "m.ang", _ebsd_map())
    _edit_ang_data(path, lambda c: ["1000000.0", *c[1:]])
    _assert_one_line_error(*_cli(["grains", path, "--out", tmp_path / "out"]), "m.ang", "phi1 out of range")


def test_ang_phase_id_missing_from_the_header_is_one_line(tmp_path):
    from micro_sym.io.ebsd import write_ang

    path = write_ang(tmp_path / "m.ang", _ebsd_map())  # one phase declared: data phase column 0
    _edit_ang_data(path, lambda c: [*c[:7], "3", *c[8:]])
    _assert_one_line_error(*_cli(["grains", path, "--out", tmp_path / "out"]), "m.ang", "declares phases 1..")


def test_segment_channel_option_picks_one_channel_of_a_colour_tiff(tmp_path):
    from _helpers import half_lattice

    lattice = half_lattice((192, 192), seed=6)
    grey = ((lattice - lattice.min()) / np.ptp(lattice) * 255).astype(np.uint8)
    noise = np.random.default_rng(7).integers(0, 255, grey.shape, dtype=np.uint8)
    path = tmp_path / "rgb.tif"
    tifffile.imwrite(path, np.stack([noise, grey, noise], -1), photometric="rgb")
    _assert_one_line_error(*_cli(["segment", path, "--out", tmp_path / "o1"]), "rgb.tif", "--channel (0 to 2)")
    code, lines = _cli(["segment", path, "--out", tmp_path / "o2", "--channel", "1", "--method", "classical"])
    assert code == 0, lines
    assert (tmp_path / "o2" / "rgb.zarr").exists()

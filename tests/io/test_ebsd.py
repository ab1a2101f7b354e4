"""EBSD readers: the real Oxford binary map, text formats written from it, and every bad input."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from micro_sym import orientation as ori
from micro_sym.cli import main as cli_main
from micro_sym.io.ebsd import read_ang, read_ctf, read_ebsd, write_ang, write_ctf
from micro_sym.errors import MicroSymError
from micro_sym.grains import reconstruct_grains

from _shared import shared_path



def run(args):
    try:
        return cli_main([str(a) for a in args])
    except SystemExit as exc:
        return exc.code or 0


@pytest.fixture(scope="module")
def oxford():
    return read_ebsd(shared_path("defdap_ebsd", "testDataEBSD.crc"))


@pytest.fixture
def oxford_copy(tmp_path):
    for s in (".cpr", ".crc"):
        shutil.copy(shared_path("defdap_ebsd", f"testDataEBSD{s}"), tmp_path / f"m{s}")
        (tmp_path / f"m{s}").chmod(0o644)
    return tmp_path / "m.cpr"


def test_oxford_binary(oxford):
    m = oxford
    assert m.shape == (243, 359) and m.step == (0.12, 0.12) and m.unit == "µm"
    assert m.symmetry == "cubic" and m.phases[0]["name"] == "Ni-superalloy"
    assert m.quaternions.shape == (4, 243, 359) and m.mask.all()
    np.testing.assert_allclose(np.linalg.norm(m.quaternions, axis=0), 1.0, atol=1e-12)
    # .crc angles are radians: the degrees we report stay within the Bunge ranges.
    assert 0 <= m.euler[0].min() and m.euler[0].max() <= 360 and m.euler[1].max() <= 180
    assert {"mad", "band_contrast", "band_slope"} <= set(m.extra)
    # Quaternions are Bunge ZXZ crystal -> sample: spot-check one point against the matrix product.
    e = np.deg2rad(m.euler[:, 100, 200])
    rz = lambda a: np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])  # noqa: E731
    rx = lambda a: np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])  # noqa: E731
    np.testing.assert_allclose(ori.quat_to_matrix(m.quaternions[:, 100, 200]), rz(e[0]) @ rx(e[1]) @ rz(e[2]), atol=1e-12)


def _partial(m, rows=60, cols=80):
    """A sub-map with some non-indexed points (phase 0) so the text readers' masks are exercised."""
    from micro_sym.io.ebsd import EBSDMap

    sub = EBSDMap(m.quaternions[:, :rows, :cols].copy(), m.euler[:, :rows, :cols].copy(),
                  m.phase[:rows, :cols].copy(), m.mask[:rows, :cols].copy(), m.step, m.unit, m.phases, m.path)
    sub.phase[5:8, 10:20] = 0
    sub.mask[5:8, 10:20] = False
    return sub


def _misorientation(a, b):
    d = ori.misorientation_cubic(np.moveaxis(a, 0, -1), np.moveaxis(b, 0, -1))
    return np.nan_to_num(d, nan=0.0)


def test_ctf_round_trip_matches_binary(oxford, tmp_path):
    sub = _partial(oxford)
    write_ctf(tmp_path / "m.ctf", sub)
    m = read_ebsd(tmp_path / "m.ctf")
    assert m.shape == sub.shape and m.step == sub.step and m.symmetry == "cubic"
    np.testing.assert_array_equal(m.mask, sub.mask)
    assert np.isnan(m.quaternions[:, ~sub.mask]).all()
    ok = sub.mask
    # 4-decimal degrees in the text: same orientation to ~1e-4°.
    np.testing.assert_allclose(m.euler[:, ok], sub.euler[:, ok], atol=6e-5)
    assert _misorientation(m.quaternions[:, ok], sub.quaternions[:, ok]).max() < 1e-3


def test_ang_round_trip_and_frame(oxford, tmp_path):
    sub = _partial(oxford)
    write_ang(tmp_path / "m.ang", sub)
    m = read_ang(tmp_path / "m.ang")
    np.testing.assert_array_equal(m.mask, sub.mask)
    ok = sub.mask
    assert _misorientation(m.quaternions[:, ok], sub.quaternions[:, ok]).max() < 1e-3
    # Without the TSL -> Oxford correction φ1 differs by the 90° frame rotation.
    raw = read_ang(tmp_path / "m.ang", tsl_to_oxford=False)
    d = np.mod(raw.euler[0, ok] - sub.euler[0, ok], 360)
    np.testing.assert_allclose(d, 90.0, atol=1e-3)


def test_text_formats_give_the_same_grains(oxford, tmp_path):
    sub = _partial(oxford, 120, 160)
    write_ctf(tmp_path / "m.ctf", sub)
    a = reconstruct_grains(sub.quaternions, mask=sub.mask, min_size=10, small="drop")
    b = read_ctf(tmp_path / "m.ctf")
    np.testing.assert_array_equal(reconstruct_grains(b.quaternions, mask=b.mask, min_size=10, small="drop"), a)


def test_cli_on_oxford_binary(oxford_copy, tmp_path):
    out = tmp_path / "out"
    assert run(["grains", oxford_copy, "--out", out, "--min-size", "10", "--small", "drop"]) == 0
    import csv
    import json

    rows = list(csv.DictReader(open(out / "m_grains.csv")))
    assert len(rows) == 109
    assert json.loads((out / "m_summary.json").read_text())["boundaries"]["sigma3_fraction"] > 0.3


# ----------------------------------------------------------------------------------- bad input


def _cli_fails(path, tmp_path, capsys, match):
    out = tmp_path / "never"
    assert run(["grains", path, "--out", out]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("micro-sym: error:") and "\n" not in err and match in err, err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".never")]


def test_bad_cpr_header(oxford_copy, tmp_path, capsys):
    oxford_copy.write_text("[General]\nVersion=5.0\n")
    with pytest.raises(MicroSymError, match="not an Oxford .cpr header"):
        read_ebsd(oxford_copy)
    _cli_fails(oxford_copy, tmp_path, capsys, "not an Oxford .cpr header")


def test_unknown_cpr_field(oxford_copy):
    oxford_copy.write_text(oxford_copy.read_text().replace("Field9=12", "Field9=77"))
    with pytest.raises(MicroSymError, match="unknown field id 77"):
        read_ebsd(oxford_copy)


def test_truncated_crc(oxford_copy, tmp_path, capsys):
    crc = oxford_copy.with_suffix(".crc")
    crc.write_bytes(crc.read_bytes()[:-1000])
    with pytest.raises(MicroSymError, match="truncated"):
        read_ebsd(oxford_copy)
    _cli_fails(oxford_copy, tmp_path, capsys, "truncated")


def test_missing_crc(oxford_copy):
    oxford_copy.with_suffix(".crc").unlink()
    with pytest.raises(MicroSymError, match="no such file"):
        read_ebsd(oxford_copy)


def test_euler_out_of_range(oxford, tmp_path, capsys):
    sub = _partial(oxford, 10, 12)
    sub.euler[1, 3, 4] = 200.0  # Φ must be <= 180°
    write_ctf(tmp_path / "bad.ctf", sub)
    with pytest.raises(MicroSymError, match="Euler angle Phi out of range"):
        read_ebsd(tmp_path / "bad.ctf")
    _cli_fails(tmp_path / "bad.ctf", tmp_path, capsys, "out of range")


def test_all_non_indexed(oxford, tmp_path, capsys):
    sub = _partial(oxford, 10, 12)
    sub.mask[:] = False
    sub.phase[:] = 0
    write_ctf(tmp_path / "empty.ctf", sub)
    write_ang(tmp_path / "empty.ang", sub)
    for p in ("empty.ctf", "empty.ang"):
        with pytest.raises(MicroSymError, match="no indexed points"):
            read_ebsd(tmp_path / p)
    _cli_fails(tmp_path / "empty.ang", tmp_path, capsys, "no indexed points")


def test_wrong_text_headers(tmp_path, capsys):
    (tmp_path / "x.ctf").write_text("hello\nworld\n")
    (tmp_path / "x.ang").write_text("# just a comment\n1 2 3\n")
    (tmp_path / "x.ebsd").write_text("")
    with pytest.raises(MicroSymError, match="not an Oxford .ctf"):
        read_ebsd(tmp_path / "x.ctf")
    with pytest.raises(MicroSymError, match="not an EDAX/TSL .ang"):
        read_ebsd(tmp_path / "x.ang")
    with pytest.raises(MicroSymError, match="unknown EBSD file type"):
        read_ebsd(tmp_path / "x.ebsd")
    _cli_fails(tmp_path / "x.ctf", tmp_path, capsys, "not an Oxford .ctf")


def test_truncated_text(oxford, tmp_path):
    sub = _partial(oxford, 10, 12)
    write_ang(tmp_path / "t.ang", sub)
    lines = (tmp_path / "t.ang").read_text().splitlines()
    (tmp_path / "t.ang").write_text("\n".join(lines[:-5]) + "\n")
    with pytest.raises(MicroSymError, match="truncated: 115 data lines"):
        read_ebsd(tmp_path / "t.ang")


def test_mismatched_mask_shape(oxford):
    with pytest.raises(MicroSymError, match=r"mask: shape \(10, 10\) does not match"):
        reconstruct_grains(oxford.quaternions, mask=np.ones((10, 10), bool))

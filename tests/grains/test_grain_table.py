"""One grain table for every command (issue 28, item 5): same columns, a sidecar that documents them,
Bunge Euler angles and a phase column for orientation tools (MTEX, orix, DefDAP)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr
from scipy.spatial.transform import Rotation

from micro_sym import orientation as ori
from micro_sym.grains import grain_table, write_grain_csv
from micro_sym.grains.table import columns, complete, euler_bunge_from_quat, header

from _helpers import quaternion_net_3d, smooth_image

#: Words that belong to the other dimensionality's description.
WRONG_WORDS = {2: ("voxel", "volume", "ellipsoid"), 3: ("pixel", "image", "ellipse ", "circle")}


def run(args) -> int:
    """The console entry point in-process (typer exits with SystemExit on success)."""
    from micro_sym.cli import main

    try:
        return main([str(a) for a in args])
    except SystemExit as exc:
        return exc.code or 0


def read_header(path: Path) -> list[str]:
    with open(path, newline="") as f:
        return next(csv.reader(f))


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def check_sidecar(csv_path: Path, ndim: int, command: str) -> dict:
    """The sidecar beside ``csv_path`` documents exactly its columns, in order, in ``ndim``-D words."""
    doc = json.loads(csv_path.with_suffix(".json").read_text())
    assert doc["csv"] == csv_path.name and doc["dimensions"] == ndim and command in doc["command"]
    assert [c["name"] for c in doc["columns"]] == read_header(csv_path)
    for c in doc["columns"]:
        assert c["meaning"] and not c["meaning"].startswith("(not a documented"), c
        text = c["meaning"].lower()
        assert not any(w in text for w in WRONG_WORDS[ndim]), (ndim, c)
    units = {c["quantity"]: c["unit"] for c in doc["columns"]}
    assert units["n_points"] == ("pixels" if ndim == 2 else "voxels")
    touches = next(c for c in doc["columns"] if c["quantity"] == "touches_border")["meaning"]
    assert ("image edge" if ndim == 2 else "volume edge") in touches
    assert doc["phases"]["1"]["symmetry"] == doc["symmetry"]
    return doc


# ------------------------------------------------------------------------------ Euler angles


def bunge_matrix(phi1, Phi, phi2):
    """The textbook Bunge orientation matrix g (sample -> crystal coordinates), angles in degrees."""
    p1, P, p2 = np.deg2rad([phi1, Phi, phi2])
    c1, s1, c, s, c2, s2 = np.cos(p1), np.sin(p1), np.cos(P), np.sin(P), np.cos(p2), np.sin(p2)
    return np.array([[c1 * c2 - s1 * s2 * c, s1 * c2 + c1 * s2 * c, s2 * s],
                     [-c1 * s2 - s1 * c2 * c, -s1 * s2 + c1 * c2 * c, c2 * s],
                     [s1 * s, -c1 * s, c]])


def test_euler_round_trips_random_rotations():
    q = ori.random_quaternions(2000, np.random.default_rng(0))
    phi1, Phi, phi2 = euler_bunge_from_quat(q)
    assert (phi1 >= 0).all() and (phi1 < 360).all() and (phi2 >= 0).all() and (phi2 < 360).all()
    assert (Phi >= 0).all() and (Phi <= 180).all()
    back = ori.euler_bunge_to_quat(phi1, Phi, phi2)
    np.testing.assert_allclose(np.abs(np.sum(q * back, -1)), 1.0, atol=1e-12)  # the same rotation (q ~ -q)
    # Either sign and any norm give the same angles.
    np.testing.assert_allclose(np.stack(euler_bunge_from_quat(-3 * q)), np.stack([phi1, Phi, phi2]), atol=1e-9)
    # Angles -> quaternion -> angles is the identity away from Phi = 0 / 180.
    e = np.random.default_rng(1).uniform([0, 1, 0], [360, 179, 360], (2000, 3))
    np.testing.assert_allclose(np.stack(euler_bunge_from_quat(ori.euler_bunge_to_quat(*e.T)), 1), e, atol=1e-9)


def test_euler_up_to_cubic_symmetry():
    """Any of the 24 cubic equivalents gives angles that describe the same crystal orientation."""
    q = ori.random_quaternions(50, np.random.default_rng(2))
    for s in ori.cubic_symmetry_quats():
        qs = ori.quat_multiply(q, s)
        back = ori.euler_bunge_to_quat(*euler_bunge_from_quat(qs))
        assert ori.misorientation_cubic(q, back).max() < 1e-5


def test_euler_matches_independent_formulas():
    """Quaternion matrix = transpose of the textbook Bunge g = scipy's intrinsic ZXZ rotation."""
    e = np.random.default_rng(3).uniform([0, 0, 0], [360, 180, 360], (200, 3))
    q = ori.euler_bunge_to_quat(*e.T)
    mats = ori.quat_to_matrix(q)
    for m, angles in zip(mats, e):
        np.testing.assert_allclose(m, bunge_matrix(*angles).T, atol=1e-12)
    np.testing.assert_allclose(mats, Rotation.from_euler("ZXZ", e, degrees=True).as_matrix(), atol=1e-12)
    # And from scipy's matrices back to our angles: the same rotations.
    scipy_q = ori.matrix_to_quat(Rotation.from_euler("ZXZ", e, degrees=True).as_matrix())
    got = np.stack(euler_bunge_from_quat(scipy_q), 1)
    for m, angles in zip(mats, got):
        np.testing.assert_allclose(bunge_matrix(*angles).T, m, atol=1e-9)


@pytest.mark.parametrize("q, expected", [
    ([1, 0, 0, 0], (0, 0, 0)),                                            # cube
    (ori.axis_angle_to_quat([0, 0, 1], 90.0), (90, 0, 0)),                # Phi = 0: all in phi1
    (ori.axis_angle_to_quat([0, 0, 1], -30.0), (330, 0, 0)),
    (ori.axis_angle_to_quat([1, 0, 0], 90.0), (0, 90, 0)),
    (ori.axis_angle_to_quat([1, 0, 0], 180.0), (0, 180, 0)),
    (ori.axis_angle_to_quat([0, 1, 0], 180.0), (180, 180, 0)),            # Phi = 180: phi2 = 0
    (ori.axis_angle_to_quat([1, 1, 1], 120.0), (90, 90, 0)),              # x -> y -> z -> x
    (ori.euler_bunge_to_quat(0.0, 45.0, 0.0), (0, 45, 0)),                # Goss
    (ori.euler_bunge_to_quat(90.0, 35.26, 45.0), (90, 35.26, 45)),        # copper
])
def test_known_rotations(q, expected):
    got = np.array([float(a) for a in euler_bunge_from_quat(np.asarray(q, float))])
    np.testing.assert_allclose(got, expected, atol=1e-9)


def test_goss_puts_crystal_011_along_sample_z():
    """Bunge (0, 45, 0) is Goss {110}<001>: sample Z (normal) along crystal [011], sample X along [100]."""
    q = ori.euler_bunge_to_quat(0.0, 45.0, 0.0)
    m = ori.quat_to_matrix(q)  # crystal -> sample; its transpose takes sample vectors to crystal ones
    np.testing.assert_allclose(m.T @ [0, 0, 1], np.array([0, 1, 1]) / np.sqrt(2), atol=1e-12)
    np.testing.assert_allclose(m.T @ [1, 0, 0], [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose([float(a) for a in euler_bunge_from_quat(q)], (0, 45, 0), atol=1e-9)


def test_euler_of_nan_is_nan():
    assert all(np.isnan(a) for a in euler_bunge_from_quat(np.full(4, np.nan)))


# ---------------------------------------------------------------------- table and its writer


def test_grain_table_has_the_documented_columns_and_suffixed_tables_round_trip(tmp_path):
    q = np.moveaxis(ori.random_quaternions(6, np.random.default_rng(4)), -1, 0)[:, :, None].repeat(10, 2).repeat(5, 1)
    lab = np.repeat(np.arange(1, 7), 5)[:, None].repeat(10, 1).astype(np.uint32)
    phase = np.where(lab > 3, 2, 1)
    t = grain_table(lab, q, symmetry="cubic", pixel_size=(0.5, 0.5), unit="µm", phase=phase)
    # Orientations measured from the image (segment) are not in a table made from a map alone.
    measured = ["lattice_qw", "lattice_qx", "lattice_qy", "lattice_qz", "lattice_quality"]
    assert list(t) == [c.name for c in columns(2, "quaternion") if c.name not in measured]
    assert t["phase"].tolist() == [1, 1, 1, 2, 2, 2]
    np.testing.assert_allclose(ori.euler_bunge_to_quat(t["phi1"], t["Phi"], t["phi2"]) *
                               np.sign(t["mean_qw"])[:, None], np.stack([t[f"mean_q{c}"] for c in "wxyz"], 1),
                               atol=1e-9)
    write_grain_csv(tmp_path / "a_grains.csv", t, "µm", pixel_size=(0.5, 0.5), symmetry="cubic", command="test")
    head = read_header(tmp_path / "a_grains.csv")
    assert head == [header(c, "µm") for c in columns(2, "quaternion")] and "phi1_deg" in head and "area_um2" in head
    doc = check_sidecar(tmp_path / "a_grains.csv", 2, "test")
    assert doc["pixel_size"] == [0.5, 0.5] and doc["unit"] == "µm" and doc["not_computed"] == measured
    # A table read back from the CSV (headers with units, as the napari reader gives) writes the same CSV.
    rows = read_rows(tmp_path / "a_grains.csv")
    back = {h: np.array([float(r[h]) if r[h] else np.nan for r in rows]) for h in head}
    back["grain"] = back["grain"].astype(int)
    back["n_points"] = back["n_points"].astype(int)
    back["touches_border"] = back["touches_border"].astype(int)
    back["n_neighbours"] = back["n_neighbours"].astype(int)
    back["phase"] = back["phase"].astype(int)
    write_grain_csv(tmp_path / "b_grains.csv", back, "px")
    assert read_header(tmp_path / "b_grains.csv") == head
    assert (tmp_path / "b_grains.csv").read_text() == (tmp_path / "a_grains.csv").read_text()


def test_block_engine_table_is_completed():
    """The block engine's table (no gos, no phase, no Euler) gets the full column set; gos empty."""
    t = {"grain": np.arange(1, 3), "n_points": np.array([4, 5]), "volume": np.array([4.0, 5.0]),
         "mean_qw": np.array([1.0, np.sqrt(0.5)]), "mean_qx": np.zeros(2), "mean_qy": np.zeros(2),
         "mean_qz": np.array([0.0, np.sqrt(0.5)])}
    full, unit, missing = complete(t, "nm")
    assert list(full) == [c.name for c in columns(3, "quaternion")] and unit == "nm"
    assert "gos" in missing and "phase" not in missing and "phi1" not in missing
    assert full["phase"].tolist() == [1, 1] and full["phi1"].tolist() == pytest.approx([0.0, 90.0])


# ---------------------------------------------------------------------- every command alike


@pytest.fixture(scope="module")
def lattice_tif(tmp_path_factory):
    """A clean two-grain square-lattice micrograph with 0.05 nm pixels (ImageJ metadata)."""
    from micro_sym.synth import render_lattice_2d

    ids = np.ones((192, 192), np.int32)
    ids[:, 96:] = 2
    img = render_lattice_2d(ids, {0: 0.0, 1: 12.3, 2: 51.7}, lattice="square", period=8.0, rng=3)
    path = tmp_path_factory.mktemp("img") / "img.tif"
    tifffile.imwrite(path, (img * 1000).astype(np.uint16), imagej=True, resolution=(20.0, 20.0),
                     metadata={"unit": "nm"})
    return path


def test_2d_commands_write_the_same_columns(tmp_path, lattice_tif):
    seg, cls, gr = tmp_path / "seg", tmp_path / "cls", tmp_path / "gr"
    assert run(["segment", lattice_tif, "--out", seg, "--method", "classical", "--tile", "96", "--chunk", "96"]) == 0
    assert run(["classical", lattice_tif, "--out", cls]) == 0
    assert run(["grains", seg / "img.zarr", "--out", gr]) == 0
    expected = [header(c, "nm") for c in columns(2, "angle")]
    assert "mean_angle_deg" in expected and "phase" in expected and "phi1_deg" not in expected
    docs = {}
    for out, command in ((seg, "segment"), (cls, "classical"), (gr, "grains")):
        assert read_header(out / "img_grains.csv") == expected, command
        docs[command] = check_sidecar(out / "img_grains.csv", 2, command)
        assert docs[command]["pixel_size"] == pytest.approx([0.05, 0.05]) and docs[command]["unit"] == "nm"
        assert docs[command]["symmetry"] == "square" and docs[command]["grain_rule"]
        assert "No Euler angles" in docs[command]["conventions"]["orientation"]
        rows = read_rows(out / "img_grains.csv")
        assert len(rows) >= 2 and {r["phase"] for r in rows} == {"1"}
    # The block engine cannot sum the orientation spread: written empty, and said so.
    assert docs["segment"]["not_computed"] == ["gos"]
    assert {r["gos_deg"] for r in read_rows(seg / "img_grains.csv")} == {""}
    assert docs["classical"]["not_computed"] == []
    # `grains` works from the written maps, without the image: no measured lattice angles.
    assert docs["grains"]["not_computed"] == ["lattice_angle", "lattice_strength", "fringes_angle", "fringes_strength"]
    assert all("neighbour pair" in docs[c]["grain_rule"]["name"] for c in ("classical", "grains"))
    # The summary JSON of `grains` describes the same columns in the same (2D) words.
    summary = json.loads((gr / "img_summary.json").read_text())["csv_columns"]
    assert list(summary) == expected
    assert summary["n_points"] == {"unit": "pixels", "meaning": "number of pixels in the grain"}


def test_3d_segment_and_grains_write_the_same_columns(tmp_path):
    from micro_sym.inference import segment

    vol = smooth_image((24, 24, 24), seed=2, sigma=2.0)
    zarr.create_array(str(tmp_path / "v.zarr"), data=vol, chunks=(16, 16, 16))
    (res,) = segment([tmp_path / "v.zarr"], tmp_path / "seg", model=quaternion_net_3d(), block=16, chunk=16,
                     threshold=10.0, min_size=0, workers=1)
    assert res.status == "complete", res.error
    assert run(["grains", tmp_path / "seg" / "v.zarr", "--out", tmp_path / "gr", "--threshold", "10"]) == 0
    expected = [header(c, "px") for c in columns(3, "quaternion")]
    euler = expected.index("phi1_deg")
    assert expected[euler:euler + 3] == ["phi1_deg", "Phi_deg", "phi2_deg"] and "volume_px3" in expected
    for out, command in ((tmp_path / "seg", "segment"), (tmp_path / "gr", "grains")):
        path = out / "v_grains.csv"
        assert read_header(path) == expected, command
        doc = check_sidecar(path, 3, command)
        assert doc["symmetry"] == "cubic" and doc["pixel_size"] == [1.0, 1.0, 1.0] and doc["unit"] == "px"
        assert "Bunge" in doc["conventions"]["orientation"]
        rows = read_rows(path)
        assert rows
        # The test network rotates about z only: Phi = 0 and phi1 + phi2 = the rotation angle.
        for r in rows:
            w, z = float(r["mean_qw"]), float(r["mean_qz"])
            assert float(r["Phi_deg"]) == pytest.approx(0.0, abs=1e-3)
            d = (float(r["phi1_deg"]) + float(r["phi2_deg"]) - np.rad2deg(2 * np.arctan2(z, w))) % 360
            assert min(d, 360 - d) < 1e-3


def test_ebsd_grains_give_back_the_files_euler_angles_and_phases(tmp_path):
    """Grains of a .ctf map: per grain the Euler angles the file holds and the file's phase ids."""
    from micro_sym.io.ebsd import EBSDMap, write_ctf

    rng = np.random.default_rng(5)
    ny, nx = 30, 40
    yy, xx = np.mgrid[0:ny, 0:nx]
    grain = (yy >= ny // 2) * 2 + (xx >= nx // 2)
    eul = rng.uniform([0, 10, 0], [360, 80, 90], (4, 3)).round(2)
    e = np.moveaxis(eul[grain], -1, 0)
    q = np.moveaxis(ori.euler_bunge_to_quat(e[0], e[1], e[2]), -1, 0)
    phase = np.where(grain >= 2, 2, 1).astype(np.int32)
    phases = [{"name": "Ni", "laue_group": 11, "symmetry": "cubic"},
              {"name": "Fe", "laue_group": 11, "symmetry": "cubic"}]
    write_ctf(tmp_path / "m.ctf", EBSDMap(q, e, phase, np.ones((ny, nx), bool), (0.5, 0.5), "µm", phases, Path("m")))
    assert run(["grains", tmp_path / "m.ctf", "--out", tmp_path / "out"]) == 0
    path = tmp_path / "out" / "m_grains.csv"
    assert read_header(path) == [header(c, "µm") for c in columns(2, "quaternion")]
    doc = check_sidecar(path, 2, "grains")
    assert doc["phases"] == {"1": {"name": "Ni", "symmetry": "cubic"}, "2": {"name": "Fe", "symmetry": "cubic"}}
    assert doc["pixel_size"] == [0.5, 0.5] and doc["unit"] == "µm"
    rows = read_rows(path)
    assert len(rows) == 4
    for r in rows:
        cy, cx = float(r["centroid_y_um"]) / 0.5, float(r["centroid_x_um"]) / 0.5
        g = grain[round(cy), round(cx)]
        got = [float(r[k]) for k in ("phi1_deg", "Phi_deg", "phi2_deg")]
        np.testing.assert_allclose(got, eul[g], atol=1e-3)
        assert int(r["phase"]) == (2 if g >= 2 else 1)

"""The per-boundary table (one row per pair of touching grains) and its CSV / sidecar."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from micro_sym import orientation as ori
from micro_sym.cli import main as cli_main
from micro_sym.grains.boundary_table import boundary_table, write_boundary_csv
from micro_sym.grains.stats import SIGMA3_BRANDON_DEG
from micro_sym.io import write_ome_zarr

SIGMA3 = ori.axis_angle_to_quat(np.array([1.0, 1.0, 1.0]), 60.0)
R45_001 = ori.axis_angle_to_quat(np.array([0.0, 0.0, 1.0]), 45.0)
R5 = ori.axis_angle_to_quat(np.array([1.0, -1.0, 0.0]), 5.0)  # perpendicular to the twin axis
G = ori.axis_angle_to_quat(np.array([0.3, -0.5, 0.8]), 37.0)  # a general parent orientation
SYM = ori.cubic_symmetry_quats()


def angle(q):
    """Rotation angle (degrees) of quaternions ``(..., 4)``."""
    return 2 * np.rad2deg(np.arccos(np.clip(np.abs(np.asarray(q)[..., 0]), 0, 1)))


def brute_misorientation(dq):
    """Cubic misorientation angle of ``dq`` by brute force: smallest angle of ``dq ⊗ s`` over the 24 ``s``."""
    return float(angle(ori.quat_multiply(dq, SYM)).min())


def brute_sigma3_deviation(dq):
    """Smallest angle between ``dq`` and any ``s1 ⊗ Σ3 ⊗ s2`` (576 variants, brute force)."""
    variants = ori.quat_multiply(ori.quat_multiply(SYM[:, None], SIGMA3), SYM[None, :]).reshape(-1, 4)
    return float(angle(ori.quat_multiply(ori.quat_conjugate(variants), dq)).min())


def quaternion_map(labels, per_grain):
    """``(4, ...)`` quaternion map with ``per_grain[id]`` at every point of grain ``id``."""
    q = np.stack([per_grain[int(v)] for v in labels.ravel()]).reshape(labels.shape + (4,))
    return np.moveaxis(q, -1, 0)


def three_grain_volume():
    """Labels (z, y, x) = (3, 4, 9) and exact quaternions.

    z = 0, 1: grain 2 | grain 1 | grain 3 along x (3 columns each); z = 2: grain 4 above grain 1, label 0
    elsewhere. Grain 2 is grain 1's Σ3 twin, grain 3 is 45° about [001] from it, grain 4 is the twin
    plus 5° about [1-10]. Pairs: 1-2 and 1-3 across x (2 x 4 = 8 faces each), 1-4 across z (4 x 3 = 12
    faces); grains 2 and 3 touch only label 0 at z = 2.
    """
    lab = np.zeros((3, 4, 9), np.uint32)
    lab[:2, :, 0:3] = 2
    lab[:2, :, 3:6] = 1
    lab[:2, :, 6:9] = 3
    lab[2, :, 3:6] = 4
    twin = ori.quat_multiply(G, SIGMA3)
    per_grain = {0: np.full(4, np.nan), 1: G, 2: twin, 3: ori.quat_multiply(G, R45_001),
                 4: ori.quat_multiply(twin, R5)}
    return lab, quaternion_map(lab, per_grain)


def test_3d_cubic_sigma3_classification_and_anisotropic_areas():
    lab, q = three_grain_volume()
    t = boundary_table(lab, q, symmetry="cubic", pixel_size=(2.0, 0.5, 0.25), unit="µm")
    assert list(t) == ["grain_a", "grain_b", "n_faces", "area", "misorientation", "sigma3_deviation", "sigma3"]
    assert t["grain_a"].tolist() == [1, 1, 1] and t["grain_b"].tolist() == [2, 3, 4]  # label 0 ignored, 2-3 apart
    assert t["n_faces"].tolist() == [8, 8, 12]
    # Faces across x are dz * dy = 2.0 * 0.5; faces across z are dy * dx = 0.5 * 0.25.
    np.testing.assert_allclose(t["area"], [8 * 1.0, 8 * 1.0, 12 * 0.125])
    expected_mis = [60.0, 45.0, brute_misorientation(ori.quat_multiply(SIGMA3, R5))]
    assert expected_mis[2] == pytest.approx(60.18864, abs=1e-4)
    np.testing.assert_allclose(t["misorientation"], expected_mis, atol=1e-4)
    dev45 = brute_sigma3_deviation(R45_001)
    assert dev45 > 40
    np.testing.assert_allclose(t["sigma3_deviation"], [0.0, dev45, 5.0], atol=1e-4)
    assert t["sigma3"].dtype == bool and t["sigma3"].tolist() == [True, False, True]


def test_sigma3_flag_follows_the_brandon_limit():
    """Twin plus 8° is Σ3, twin plus 9.5° is not (limit 15°/√3 = 8.66°)."""
    lab = np.zeros((1, 2, 3), np.uint32)
    lab[0, 0, :] = 1
    lab[0, 1, 0] = 2
    lab[0, 1, 1] = 3
    lab[0, 1, 2] = 4
    twin = ori.quat_multiply(G, SIGMA3)
    extra = {2: 8.0, 3: 9.5, 4: 0.0}
    per_grain = {1: G, **{g: ori.quat_multiply(twin, ori.axis_angle_to_quat(np.array([1.0, -1.0, 0.0]), a))
                         for g, a in extra.items()}}
    t = boundary_table(lab, quaternion_map(lab, per_grain), symmetry="cubic")
    rows = {int(b): (d, s) for a, b, d, s in zip(t["grain_a"], t["grain_b"], t["sigma3_deviation"], t["sigma3"])
            if a == 1}
    assert rows[2][0] == pytest.approx(8.0, abs=1e-4) and rows[2][1]
    assert rows[3][0] == pytest.approx(9.5, abs=1e-4) and not rows[3][1]
    assert rows[4][0] == pytest.approx(0.0, abs=1e-4) and rows[4][1]
    assert SIGMA3_BRANDON_DEG == pytest.approx(8.6603, abs=1e-4)


def test_median_ignores_an_outlier_face_and_undefined_orientations():
    lab, q = three_grain_volume()
    q = q.copy()
    # One voxel of grain 3 on the 1-3 boundary misindexed (30° off), one of grain 2 on the 1-2 boundary NaN.
    q[:, 0, 0, 6] = ori.quat_multiply(q[:, 0, 0, 6], ori.axis_angle_to_quat(np.array([1.0, 0.0, 0.0]), 30.0))
    q[:, 1, 2, 2] = np.nan
    t = boundary_table(lab, q, symmetry="cubic")
    assert t["n_faces"].tolist() == [8, 8, 12]  # geometry counts every face
    np.testing.assert_allclose(t["misorientation"][:2], [60.0, 45.0], atol=1e-4)  # a mean would move
    # A boundary whose faces all lack an orientation: no misorientation, not Σ3.
    q[:, 2] = np.nan
    t = boundary_table(lab, q, symmetry="cubic")
    assert math.isnan(t["misorientation"][2]) and math.isnan(t["sigma3_deviation"][2]) and not t["sigma3"][2]


def test_2d_angle_map_lengths_and_misorientation():
    # Rows 0-3: grain 1 (cols 0-2, 10°) | grain 2 (cols 3-5, 95°); row 4: grain 3 (30°); row 5: label 0.
    lab = np.zeros((6, 6), np.int32)
    lab[:4, :3], lab[:4, 3:], lab[4] = 1, 2, 3
    theta = np.select([lab == 1, lab == 2, lab == 3], [10.0, 95.0, 30.0], np.nan)
    t = boundary_table(lab, theta, symmetry="square", pixel_size=(0.5, 2.0), unit="nm")
    assert list(t) == ["grain_a", "grain_b", "n_faces", "length", "misorientation"]  # no CSL for angles
    assert t["grain_a"].tolist() == [1, 1, 2] and t["grain_b"].tolist() == [2, 3, 3]
    assert t["n_faces"].tolist() == [4, 3, 3]
    # 1-2 runs down the image (faces across x): each edge dy = 0.5 long; 1-3 and 2-3 run across: dx = 2.0.
    np.testing.assert_allclose(t["length"], [2.0, 6.0, 6.0])
    # Square lattice (k = 4): 95 - 10 = 85° is 5° away; 30 - 10 = 20°; 95 - 30 = 65° is 25° away.
    np.testing.assert_allclose(t["misorientation"], [5.0, 20.0, 25.0], atol=1e-9)


def test_no_boundaries_gives_an_empty_table():
    lab = np.array([[1, 1, 0, 2, 2]])
    t = boundary_table(lab, np.array([[1.0, 1.0, 5.0, 30.0, 30.0]]), symmetry="square")
    assert all(len(v) == 0 for v in t.values()) and "length" in t


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_csv_and_sidecar(tmp_path):
    lab, q = three_grain_volume()
    t = boundary_table(lab, q, symmetry="cubic", pixel_size=(2.0, 0.5, 0.25), unit="µm")
    path = write_boundary_csv(tmp_path / "v_boundaries.csv", t, "µm", pixel_size=(2.0, 0.5, 0.25), symmetry="cubic",
                              command="test")
    rows = read_rows(path)
    assert list(rows[0]) == ["grain_a", "grain_b", "n_faces", "area_um2", "misorientation_deg",
                             "sigma3_deviation_deg", "sigma3"]
    assert [(r["grain_a"], r["grain_b"], r["n_faces"], r["area_um2"], r["sigma3"]) for r in rows] == [
        ("1", "2", "8", "8", "1"), ("1", "3", "8", "8", "0"), ("1", "4", "12", "1.5", "1")]
    assert float(rows[2]["sigma3_deviation_deg"]) == pytest.approx(5.0, abs=1e-4)
    doc = json.loads((tmp_path / "v_boundaries.json").read_text())
    assert doc["csv"] == "v_boundaries.csv" and doc["dimensions"] == 3 and doc["n_boundaries"] == 3
    assert doc["pixel_size"] == [2.0, 0.5, 0.25] and doc["unit"] == "µm" and doc["command"] == "test"
    assert doc["sigma3_tolerance_deg"] == pytest.approx(15 / math.sqrt(3))
    assert [c["name"] for c in doc["columns"]] == list(rows[0])
    units = {c["quantity"]: c["unit"] for c in doc["columns"]}
    assert units == {"grain_a": "", "grain_b": "", "n_faces": "", "area": "um2", "misorientation": "deg",
                     "sigma3_deviation": "deg", "sigma3": ""}
    assert all(c["meaning"] and "pixel" not in c["meaning"] for c in doc["columns"])  # 3D words
    # 2D, no pixel size: lengths in px, no Σ3 columns.
    lab2 = np.array([[1, 1, 2, 2]])
    t2 = boundary_table(lab2, np.array([[0.0, 0.0, 40.0, 40.0]]), symmetry="square")
    write_boundary_csv(tmp_path / "i_boundaries.csv", t2, "px", symmetry="square")
    assert read_rows(tmp_path / "i_boundaries.csv") == [
        {"grain_a": "1", "grain_b": "2", "n_faces": "1", "length_px": "1", "misorientation_deg": "40"}]
    doc2 = json.loads((tmp_path / "i_boundaries.json").read_text())
    assert doc2["dimensions"] == 2 and doc2["sigma3_tolerance_deg"] is None and "sigma3" not in doc2["conventions"]


def run(args):
    """The console entry point in-process (typer exits with SystemExit on success)."""
    try:
        return cli_main(args)
    except SystemExit as exc:
        return exc.code or 0


def test_cli_writes_the_boundary_table(tmp_path, capsys):
    lab, q = three_grain_volume()
    write_ome_zarr(tmp_path / "v.zarr", {"boundary": np.zeros(lab.shape, np.float32),
                                         "orientation": q.astype(np.float32)}, pixel_size=(2.0, 0.5, 0.25), unit="µm")
    out = tmp_path / "out"
    assert run(["grains", str(tmp_path / "v.zarr"), "--out", str(out)]) == 0
    assert "v_boundaries.csv (3 grain boundaries, columns in v_boundaries.json)" in capsys.readouterr().out
    from micro_sym.io.images import output_array

    grains = np.asarray(output_array(out / "v.zarr", "grains")[...])
    # The command numbers grains itself: name them by one voxel each.
    ids = {k: int(grains[0, 0, x]) for k, x in ((1, 3), (2, 0), (3, 6))}
    ids[4] = int(grains[2, 0, 3])
    rows = {(int(r["grain_a"]), int(r["grain_b"])): r for r in read_rows(out / "v_boundaries.csv")}

    def row(a, b):
        return rows[(min(ids[a], ids[b]), max(ids[a], ids[b]))]

    assert len(rows) == 3
    assert (row(1, 2)["n_faces"], row(1, 2)["area_um2"], row(1, 2)["sigma3"]) == ("8", "8", "1")
    assert (row(1, 3)["n_faces"], row(1, 3)["area_um2"], row(1, 3)["sigma3"]) == ("8", "8", "0")
    assert (row(1, 4)["n_faces"], row(1, 4)["area_um2"], row(1, 4)["sigma3"]) == ("12", "1.5", "1")
    assert float(row(1, 3)["misorientation_deg"]) == pytest.approx(45.0, abs=1e-3)  # float32 map
    assert float(row(1, 4)["sigma3_deviation_deg"]) == pytest.approx(5.0, abs=1e-3)
    doc = json.loads((out / "v_boundaries.json").read_text())
    assert doc["command"] == "micro-sym grains" and doc["symmetry"] == "cubic"

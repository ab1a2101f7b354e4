"""Grain statistics, KAM, writers, plots and the ``micro-sym grains`` command."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from micro_sym import orientation as ori
from micro_sym.cli import main as cli_main
from micro_sym.grains import plots
from micro_sym.grains.stats import (
    grain_table,
    kam_map,
    map_summary,
    sigma3_deviation,
    write_grain_csv,
    write_summary_json,
)
from micro_sym.io import write_ome_zarr


def test_shape_measures_2d():
    lab = np.zeros((40, 60), np.uint32)
    lab[5:15, 10:40] = 1  # 10 x 30 rectangle, horizontal
    yy, xx = np.mgrid[0:40, 0:60]
    lab[(yy - 28) ** 2 + (xx - 30) ** 2 <= 64] = 2  # disk of radius 8
    t = grain_table(lab, pixel_size=0.5, unit="µm")
    assert t["n_points"][0] == 300 and t["area"][0] == pytest.approx(75.0)
    assert t["perimeter"][0] == pytest.approx(2 * (10 + 30) * 0.5)
    assert t["centroid_x"][0] == pytest.approx(24.5 * 0.5) and t["centroid_y"][0] == pytest.approx(9.5 * 0.5)
    # Ellipse of equal second moments: full axes 4 sqrt(var); var of a uniform length-L bar ~ L²/12.
    assert t["major_axis"][0] == pytest.approx(4 * math.sqrt((30**2 - 1) / 12) * 0.5)
    assert t["aspect_ratio"][0] == pytest.approx(math.sqrt((30**2 - 1) / (10**2 - 1)))
    assert t["ellipse_angle"][0] == pytest.approx(0.0, abs=1e-6) or t["ellipse_angle"][0] == pytest.approx(180.0)
    assert t["ecd"][1] == pytest.approx(2 * math.sqrt(t["area"][1] / math.pi))
    assert t["aspect_ratio"][1] == pytest.approx(1.0, abs=0.02)
    assert t["n_neighbours"].tolist() == [0, 0] and t["touches_border"].tolist() == [0, 0]


def test_ellipse_angle_is_counter_clockwise_as_displayed():
    lab = np.zeros((30, 30), np.uint32)
    for i in range(20):  # a diagonal streak going up-right on screen (row decreases as x grows)
        lab[25 - i, 5 + i] = 1
        lab[24 - i, 5 + i] = 1
    assert grain_table(lab)["ellipse_angle"][0] == pytest.approx(45.0, abs=3.0)


def test_shape_measures_3d_and_neighbours():
    lab = np.zeros((10, 12, 14), np.uint32)
    lab[:, :, :7] = 1
    lab[:, :, 7:] = 2
    lab[2:5, 2:5, 2:5] = 3  # a cube inside grain 1
    t = grain_table(lab, pixel_size=(2.0, 1.0, 1.0), unit="nm")
    assert t["volume"][2] == pytest.approx(27 * 2.0)
    assert t["esd"][2] == pytest.approx((6 * 54 / math.pi) ** (1 / 3))
    assert t["surface_area"][2] == pytest.approx(2 * 9 * 1 + 4 * 9 * 2)
    assert t["n_neighbours"].tolist() == [2, 1, 1]
    assert t["touches_border"].tolist() == [1, 1, 0]


def test_mean_angle_across_the_wrap_and_gos():
    theta = np.array([[89.0, 1.0, 88.0, 2.0]])
    lab = np.ones((1, 4), np.uint32)
    t = grain_table(lab, theta, symmetry="square")
    # Circular mean of 4θ: -1, 1, -2, 2 -> 0; a naive mean would give 45.
    assert min(t["mean_angle"][0], 90 - t["mean_angle"][0]) < 1e-6
    assert t["gos"][0] == pytest.approx(1.5)


def test_cubic_mean_orientation_uses_symmetry():
    rng = np.random.default_rng(2)
    q0 = ori.random_quaternions(1, rng)[0]
    sym = ori.cubic_symmetry_quats()
    spread = ori.axis_angle_to_quat(rng.normal(size=(50, 3)), rng.uniform(0, 2, 50))
    pts = ori.quat_multiply(ori.quat_multiply(q0, spread), sym[rng.integers(0, 24, 50)])  # random equivalents
    pts[::3] *= -1
    q = pts.T.reshape(4, 5, 10)
    t = grain_table(np.ones((5, 10), np.uint32), q, symmetry="cubic")
    mean = np.array([t[f"mean_q{c}"][0] for c in "wxyz"])
    assert ori.misorientation_cubic(mean, q0) < 0.5
    assert 0.3 < t["gos"][0] < 1.5


def test_sigma3_and_boundary_summary():
    rng = np.random.default_rng(4)
    q0 = ori.random_quaternions(1, rng)[0]
    twin = ori.quat_multiply(q0, ori.axis_angle_to_quat([1, -1, 1], 60.0))  # Σ3 variant
    other = ori.quat_multiply(q0, ori.axis_angle_to_quat([1, 0, 0], 30.0))
    dq = ori.quat_multiply(ori.quat_conjugate(q0[None]), np.stack([twin, other]))
    dev = sigma3_deviation(dq)
    assert dev[0] == pytest.approx(0.0, abs=1e-5) and dev[1] > 20
    q = np.zeros((4, 6, 9))
    q[:, :, :3] = q0[:, None, None]
    q[:, :, 3:6] = twin[:, None, None]
    q[:, :, 6:] = other[:, None, None]
    lab = np.repeat(np.array([1, 2, 3]), 3)[None].repeat(6, 0)
    s = map_summary(lab, q, symmetry="cubic", pixel_size=(1.0, 1.0), unit="µm")
    b = s["boundaries"]
    assert b["n_pairs"] == 12 and b["sigma3_fraction"] == pytest.approx(0.5)
    assert b["high_angle_fraction"] == pytest.approx(1.0)


def test_astm_numbers_follow_the_formulas():
    lab = np.arange(1, 101, dtype=np.uint32).reshape(10, 10).repeat(10, 0).repeat(10, 1)  # 100 grains of 10x10 px
    s = map_summary(lab, pixel_size=(1.0, 1.0), unit="µm")
    inner = 64  # grains not on the edge
    n_a = (inner + 0.5 * 36) / (100 * 100 * 1e-6)
    assert s["astm"]["e112_planimetric_G"] == pytest.approx(3.3219 * math.log10(n_a) - 2.954)
    assert s["astm"]["e2627_G"] == pytest.approx(-3.3223 * math.log10(100e-6) - 2.995)
    assert map_summary(lab)["astm"]["e2627_G"] is None  # no physical unit


def test_kam():
    theta = np.zeros((8, 8), np.float32)
    theta[:, 4:] = 3.0
    theta[:, 6:] = 30.0
    k = kam_map(theta, symmetry="square", threshold=5.0, connectivity=1)
    # Points next to the 3° step see one 3° neighbour out of four.
    assert k[0, 0] == 0.0 and k[4, 4] == pytest.approx(0.75) and k[4, 3] == pytest.approx(0.75)
    assert k[4, 6] == 0.0  # the 27° neighbour is a boundary, left out
    lab = np.ones((8, 8), np.uint32)
    lab[:, 4:] = 2
    assert kam_map(theta, symmetry="square", labels=lab, connectivity=1)[4, 3] == 0.0


def test_writers_and_plots(tmp_path):
    q = np.moveaxis(ori.random_quaternions(6, np.random.default_rng(0)), -1, 0)[:, :, None].repeat(10, 2)
    q = q.repeat(5, 1)  # 6 stripes of 5 x 10
    lab = np.repeat(np.arange(1, 7), 5)[:, None].repeat(10, 1).astype(np.uint32)
    t = grain_table(lab, q, pixel_size=(0.1, 0.1), unit="µm")
    s = map_summary(lab, q, pixel_size=(0.1, 0.1), unit="µm", table=t)
    write_grain_csv(tmp_path / "g.csv", t, "µm")
    write_summary_json(tmp_path / "s.json", s, t, "µm")
    rows = list(csv.DictReader(open(tmp_path / "g.csv")))
    assert len(rows) == 6 and float(rows[0]["area_um2"]) == pytest.approx(0.5) and "gos_deg" in rows[0]
    doc = json.loads((tmp_path / "s.json").read_text())
    assert doc["n_grains"] == 6 and doc["csv_columns"]["area_um2"]["unit"] == "um2"
    plots.plot_size_histogram(tmp_path / "a.png", t, "µm")
    plots.plot_misorientation_histogram(tmp_path / "b.png", s)
    plots.plot_orientation_map(tmp_path / "c.png", q, labels=lab, pixel_size=(0.1, 0.1), unit="µm")
    plots.plot_orientation_map(tmp_path / "d.png", np.linspace(0, 89, 100).reshape(10, 10), symmetry="square")
    plots.plot_grain_map(tmp_path / "e.png", lab)
    for name in "abcde":
        assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG"


def test_ipf_colours_of_the_triangle_corners():
    for axis, rgb in (((0, 0, 1), (1, 0, 0)), ((1, 0, 1), (0, 1, 0)), ((1, 1, 1), (0, 0, 1))):
        np.testing.assert_allclose(ori.ipf_colour_from_crystal_direction(np.array(axis, float)), rgb, atol=1e-9)
    # Identity orientation: sample Z = crystal [001] -> red.
    np.testing.assert_allclose(ori.ipf_colour_cubic(np.array([1.0, 0, 0, 0])), (1, 0, 0), atol=1e-9)


# ------------------------------------------------------------------------------------------ CLI


def run(args):
    """The console entry point in-process (typer exits with SystemExit on success)."""
    try:
        return cli_main(args)
    except SystemExit as exc:
        return exc.code or 0


def test_cli_on_segmentation_zarr(tmp_path, capsys):
    theta = np.zeros((30, 40), np.float32)
    theta[:, 20:] = 40.0
    theta[10:20, 5:12] = 70.0
    boundary = np.zeros_like(theta)
    boundary[:, 19:21] = 0.9
    write_ome_zarr(tmp_path / "s.zarr", {"boundary": boundary, "orientation": theta}, pixel_size=(0.02, 0.02), unit="µm")
    out = tmp_path / "out"
    assert run(["grains", str(tmp_path / "s.zarr"), "--out", str(out), "--connectivity", "8"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["s.zarr", "s_boundaries.csv", "s_boundaries.json", "s_grain_map.png", "s_grains.csv",
                     "s_grains.json", "s_misorientation_hist.png", "s_orientation.png", "s_size_hist.png",
                     "s_summary.json"]
    doc = json.loads((out / "s_summary.json").read_text())
    assert doc["n_grains"] == 3 and doc["parameters"]["connectivity"] == 8
    # Existing outputs are not replaced without --overwrite, and the refusal writes nothing.
    before = sorted(p.name for p in tmp_path.iterdir())
    assert run(["grains", str(tmp_path / "s.zarr"), "--out", str(out)]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert run(["grains", str(tmp_path / "s.zarr"), "--out", str(out), "--connectivity", "26"]) == 2
    assert "not valid for a 2D map" in capsys.readouterr().err

"""``--method auto`` on an image of lattice fringes: both 2D networks run and their grains are fused
(:mod:`micro_sym.inference.fusion`): the rule, the two-phase output, its table, resume."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import tifffile

from micro_sym.synth.atoms2d import Atoms2DConfig, synth_atoms2d

from _helpers import read_output

KW = dict(block=128, chunk=128, workers=1)


@pytest.fixture(scope="module")
def fringes_film(tmp_path_factory):
    """A HAADF-STEM film of Au grains each showing one set of fringes (period 8 px, dose 50), vacuum and
    amorphous carbon between them; on it robust-2d maps a grain that fringes-2d leaves unassigned."""
    cfg = Atoms2DConfig(mode="haadf", size=(256, 256), pixel_size_angstrom=2.04 / 8, haadf={"dose": (50.0, 50.0)},
                        film={"grain_size": 20.4, "vacuum_fraction": 0.1, "amorphous_fraction": 0.1,
                              "fringe_fraction": 0.8})
    s = synth_atoms2d(cfg, seed=1)
    path = tmp_path_factory.mktemp("film") / "film.tif"
    tifffile.imwrite(path, s.image.astype(np.float32))
    return path, s


@pytest.fixture(scope="module")
def runs(tmp_path_factory, fringes_film):
    """auto's fused output, and each network run alone on the same image with the same blocks."""
    from micro_sym.inference import segment

    path, _ = fringes_film
    out = tmp_path_factory.mktemp("runs")
    results = {"auto": segment([path], out / "auto", **KW)[0]}
    for model in ("fringes-2d", "robust-2d"):
        results[model] = segment([path], out / model, model=model, **KW)[0]
    for r in results.values():
        assert r.status == "complete", r.error
    return out, results


def _rows(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))


def _reference_fusion(fringes, square):
    """The rule in plain numpy on whole maps: robust-2d grains more than half outside fringes-2d's grains
    are added there, numbered after fringes-2d's in robust-2d's order."""
    out = fringes.astype(np.int64).copy()
    free = fringes == 0
    n = int(square.max()) + 1
    inside = np.bincount(square[free], minlength=n)
    total = np.bincount(square.ravel(), minlength=n)
    add = [g for g in range(1, n) if inside[g] > total[g] / 2]
    for i, g in enumerate(add):
        out[free & (square == g)] = fringes.max() + 1 + i
    return out, len(add)


def test_auto_fuses_the_two_networks_grains_on_a_fringes_film(runs, fringes_film):
    out, res = runs
    manifest = json.loads((out / "auto" / ".film.run" / "manifest.json").read_text())
    assert manifest["model"]["name"] == "fringes-2d+robust-2d" and manifest["method"]["name"] == "fused"
    assert manifest["method"]["auto"]["measured"]["lattice"] == "fringes"
    fused = read_output(out / "auto", "film")
    fringes, square = read_output(out / "fringes-2d", "film"), read_output(out / "robust-2d", "film")
    expected, n_added = _reference_fusion(fringes["grains"], square["grains"])
    assert n_added >= 1 and np.array_equal(fused["grains"], expected)
    assert res["auto"].n_grains == int(fringes["grains"].max()) + n_added == manifest["method"]["added_grains"] + \
        res["fringes-2d"].n_grains
    added = fused["grains"] > fringes["grains"].max()
    for name in ("orientation", "boundary"):  # each pixel's from the network whose grain it is
        assert np.array_equal(fused[name][added], square[name][added])
        assert np.array_equal(fused[name][~added], fringes[name][~added], equal_nan=True)
    # The runs of the two networks were scratch: only the fused output stays.
    assert not any(p.name in ("fringes-2d", "robust-2d") for p in (out / "auto" / ".film.run").iterdir())


def test_the_fused_table_has_each_grain_in_its_phase(runs):
    """fringes-2d's rows unchanged but for their neighbours, the added grains' rows from their own pixels
    at the square phase; geometry and neighbours as the whole-image table of the fused map gives them."""
    from micro_sym.grains.stats import grain_table

    out, res = runs
    rows = _rows(out / "auto" / "film_grains.csv")
    alone = _rows(out / "fringes-2d" / "film_grains.csv")
    n_fringes = len(alone)
    for mine, theirs in zip(rows, alone):
        assert {k: v for k, v in mine.items() if k != "n_neighbours"} == \
            {k: v for k, v in theirs.items() if k != "n_neighbours"}
    added = rows[n_fringes:]
    assert added and all(r["phase"] == "2" for r in added) and all(r["phase"] == "1" for r in rows[:n_fringes])
    assert all(0 <= float(r["mean_angle_deg"]) < 90 for r in added)
    grains = read_output(out / "auto", "film")["grains"]
    whole = grain_table(grains)
    for column in ("n_points", "perimeter", "touches_border", "n_neighbours"):
        got = np.array([float(r[next(k for k in r if k.startswith(column))]) for r in rows])
        assert np.allclose(got, whole[column]), column
    sidecar = json.loads((out / "auto" / "film_grains.json").read_text())
    assert sidecar["phases"] == {"1": {"name": "fringes", "symmetry": "fringes"},
                                 "2": {"name": "square", "symmetry": "square"}}


def test_fused_grains_score_at_least_the_fringes_network_s(runs, fringes_film):
    """Fit only (the training renderer's family of films, a new draw): the added grain is a real one."""
    from micro_sym.metrics import evaluate_sample

    out, _ = runs
    _, truth = fringes_film
    scores = {name: evaluate_sample(read_output(out / name, "film"), truth.grains, None, 2)["grain_f1"]
              for name in ("auto", "fringes-2d")}
    assert scores["auto"] > scores["fringes-2d"], scores


def test_an_interrupted_fused_run_resumes_to_the_same_bytes(tmp_path, runs, fringes_film):
    from micro_sym.inference import segment

    out, res = runs
    path, _ = fringes_film
    n = res["fringes-2d"].n_blocks
    seen = []

    class Stop(Exception):
        pass

    def stop_in_the_second_run(stage, block_id):
        seen.append(stage)
        if len(seen) == 2 * n + 1:  # fringes-2d done (maps and grains of each block), robust-2d's first block mapped
            raise Stop

    with pytest.raises(Stop):
        segment([path], tmp_path, on_block=stop_in_the_second_run, **KW)
    (res,) = segment([path], tmp_path, **KW)
    assert res.status == "complete" and res.blocks_run == n - 1, res  # robust-2d's other blocks only
    first, again = read_output(out / "auto", "film"), read_output(tmp_path, "film")
    for name in first:
        assert np.array_equal(first[name], again[name], equal_nan=True), name
    assert (out / "auto" / "film_grains.csv").read_text() == (tmp_path / "film_grains.csv").read_text()
    (res,) = segment([path], tmp_path, **KW)
    assert res.status == "skipped" and res.n_grains == int(again["grains"].max())


def test_a_grain_half_outside_is_not_added():
    """More than half, counted exactly over blocks: 2 of 4 pixels free is not enough, 3 of 5 is."""
    from micro_sym.inference.fusion import added_grains

    counts = [(np.array([1, 2]), np.array([1, 2]), np.array([2, 3])), (np.array([1, 2]), np.array([1, 1]), np.array([2, 2]))]
    lut = added_grains(counts, n_fringes=7, n_square=3)
    assert lut.tolist() == [0, 0, 8, 0]


def test_the_cli_says_both_networks_ran(runs):
    from micro_sym.cli.segment import _method_line

    out, _ = runs
    line = _method_line(json.loads((out / "auto" / ".film.run" / "manifest.json").read_text())["plan"]["method"])
    assert "networks fringes-2d and robust-2d, grains fused" in line and "(phase 2, square)" in line
    assert "--model fringes-2d" not in line


def test_the_output_records_each_phase_s_grains(runs):
    import zarr

    out, res = runs
    attrs = zarr.open_group(str(out / "auto" / "film.zarr"), mode="r").attrs["micro_sym"]
    n = res["fringes-2d"].n_grains
    assert attrs["phases"] == [{"name": "fringes", "symmetry": "fringes", "grains": [1, n]},
                               {"name": "square", "symmetry": "square", "grains": [n + 1, res["auto"].n_grains]}]


def test_the_napari_widget_s_auto_fuses_alike(runs, fringes_film, tmp_path):
    """The widget's in-memory auto, same tiles: the engine's fused grains, maps and table rows (the
    whole-map table also has each grain's orientation spread at its phase's order); what it saves
    names both phases."""
    from micro_sym.inference.interactive import AUTO, SegmentSettings, save_result
    from micro_sym.inference.interactive import segment as interactive_segment

    out, res = runs
    path, _ = fringes_film
    r = interactive_segment(tifffile.imread(path), SegmentSettings(model=AUTO, tile=128))
    assert "grains fused" in r.method and r.info["added_grains"] == res["auto"].n_grains - res["fringes-2d"].n_grains
    written = read_output(out / "auto", "film")
    assert np.array_equal(r.grains, written["grains"])
    for name in ("orientation", "boundary"):  # the forward's float rounding differs in and out of process
        np.testing.assert_allclose(getattr(r, name), written[name], atol=1e-3, err_msg=name)
    rows = _rows(out / "auto" / "film_grains.csv")
    for column in ("phase", "n_neighbours"):
        assert [int(v[column]) for v in rows] == np.asarray(r.table[column]).tolist(), column
    for column in ("mean_angle", "lattice_angle", "fringes_angle"):
        np.testing.assert_allclose([float(v[f"{column}_deg"] or "nan") for v in rows], r.table[column], atol=1e-3)
    assert np.isfinite(r.table["gos"]).all()
    save_result(r, tmp_path, "film")
    sidecar = json.loads((tmp_path / "film_grains.json").read_text())
    assert set(sidecar["phases"]) == {"1", "2"}


def test_an_ebsd_export_writes_the_square_grains_and_leaves_the_fringes_out(runs, tmp_path):
    """A .ctf of the fused map: the square phase's grains indexed (their angles), the fringes grains not
    (one plane normal is no crystal orientation), and the CLI's note says so."""
    from typer.testing import CliRunner

    from micro_sym.cli import app
    from micro_sym.io.ebsd import read_ctf
    from micro_sym.io.orientation_export import in_plane_euler, open_segment_output

    out, res = runs
    result = CliRunner().invoke(app, ["ebsd", str(out / "auto" / "film.zarr"), "--out", str(tmp_path / "film.ctf")])
    assert result.exit_code == 0, result.output
    assert "not indexed" in result.output and "fringes" in result.output
    grains = read_output(out / "auto", "film")["grains"]
    square = grains > res["fringes-2d"].n_grains
    written = read_ctf(tmp_path / "film.ctf")
    assert np.array_equal(written.mask, square & np.isfinite(read_output(out / "auto", "film")["orientation"]))
    source = open_segment_output(out / "auto" / "film.zarr")
    assert source.lattice.name == "square"
    theta = read_output(out / "auto", "film")["orientation"][square]
    np.testing.assert_allclose(written.euler[0][square], in_plane_euler(theta, source.lattice)[0], atol=1e-3)


def test_grains_refuses_a_map_of_two_phases_in_one_line(runs, tmp_path):
    import contextlib
    import io

    from micro_sym.cli import main

    out, _ = runs
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["grains", str(out / "auto" / "film.zarr"), "--out", str(tmp_path / "g")])
    lines = [line for line in err.getvalue().splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "two phases" in lines[0] and "--symmetry" in lines[0], lines
    assert not (tmp_path / "g").exists()


def test_a_dry_run_plans_both_networks(fringes_film, tmp_path):
    from micro_sym.inference import segment

    path, _ = fringes_film
    (res,) = segment([path], tmp_path, dry_run=True, **KW)
    assert res.status == "planned" and res.plan["method"]["name"] == "fused" and res.n_blocks == 8
    assert res.plan["outputs"] == [str(tmp_path / "film.zarr"), str(tmp_path / "film_grains.csv")]
    assert not any(tmp_path.iterdir())  # nothing written
    from micro_sym.cli.segment import _method_line

    assert "grains fused" in _method_line(res.plan["method"]) and "--model fringes-2d" not in _method_line(res.plan["method"])


def test_a_process_pool_fuses_to_the_same_bytes(runs, fringes_film, tmp_path):
    """Both networks and the fusion passes in worker processes (fringes-2d reaches them as a file)."""
    from micro_sym.inference import segment

    out, _ = runs
    path, _ = fringes_film
    (res,) = segment([path], tmp_path, scheduler="processes", **{**KW, "workers": 2})
    assert res.status == "complete", res.error
    first, again = read_output(out / "auto", "film"), read_output(tmp_path, "film")
    for name in first:
        assert np.array_equal(first[name], again[name], equal_nan=True), name
    assert (out / "auto" / "film_grains.csv").read_text() == (tmp_path / "film_grains.csv").read_text()

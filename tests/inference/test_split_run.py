"""``segment --split-grains`` (:mod:`micro_sym.inference.split_run`): the written map's grains that hold
two lattice orientations split block by block, as the rule splits the whole map; the table, the phases
of a fused map, resume, refusals."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import tifffile
import zarr

from micro_sym.grains.split import split_map
from micro_sym.synth.lattice2d import render_lattice_2d

from _helpers import read_output, same_partition

#: Small blocks, so that grains span several; a grain threshold under which the 8° pair is one grain.
KW = dict(block=64, chunk=64, workers=1, threshold=15.0)
SHAPE = (256, 256)


def _truth():
    truth = np.ones(SHAPE, np.int64)
    truth[:, 128:] = 2  # 20° left, 28° (fringes: 30°) right: joined at a 15° threshold
    truth[160:] = 3
    return truth


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A square lattice whose 20° and 28° regions the network joins, and a film of fringes (20° / 30°)
    with a square-lattice patch that robust-2d adds to fringes-2d's grains (a fused map)."""
    root = tmp_path_factory.mktemp("split")
    truth = _truth()
    noise = np.random.default_rng(1).normal(0, 0.3, SHAPE)
    square = render_lattice_2d(truth, {1: 20.0, 2: 28.0, 3: 60.0}, period=8.0, rng=np.random.default_rng(0))
    fringes = render_lattice_2d(truth, {1: 20.0, 2: 30.0, 3: 100.0}, lattice="fringes", period=8.0,
                                rng=np.random.default_rng(0))
    fringes[:88, :88] = 0  # a square-lattice patch, 16 px of blank film from the fringes
    fringes[:72, :72] = render_lattice_2d(np.ones((72, 72), np.int64), {1: 40.0}, period=8.0)
    paths = {}
    for name, image in (("square", square), ("fringes", fringes)):
        paths[name] = root / f"{name}.tif"
        tifffile.imwrite(paths[name], (image + noise).astype(np.float32))
    return paths, truth


@pytest.fixture(scope="module")
def runs(tmp_path_factory, images):
    """Each image segmented without and with --split-grains."""
    from micro_sym.inference import segment

    paths, _ = images
    out = tmp_path_factory.mktemp("runs")
    res = {}
    for name, path in paths.items():
        for split in (False, True):
            (r,) = segment([path], out / f"{name}_{split}", split_grains=split, **KW)
            assert r.status == "complete", r.error
            res[name, split] = r
    return out, res


def _phases(out, name):
    attrs = zarr.open_group(str(out / f"{name}.zarr"), mode="r").attrs["micro_sym"]
    return attrs.get("phases") or [{"symmetry": attrs["symmetry"], "grains": [1, attrs["n_grains"]]}], attrs


def _reference_split(out, name, image_path):
    """The rule on the whole unsplit map (:func:`split_labels`), numbered as the engine numbers them."""
    from micro_sym.classical.filter_bank import lattice_constant
    from micro_sym.orientation.symmetry import lattice

    maps = read_output(out, name)
    phases, attrs = _phases(out, name)
    setting = json.loads((out / f".{name}.run" / "manifest.json").read_text())["method"]
    setting = (setting["runs"][-1]["method"] if setting.get("name") == "fused" else setting)["grain_lattice"]

    def phase(g):
        return next(p for p in phases if p["grains"][0] <= g <= p["grains"][1])

    ranges = [tuple(p["grains"]) for p in phases] if attrs.get("phases") else None
    labels, n_split, _, ranges = split_map(maps["grains"], maps["orientation"], tifffile.imread(image_path),
                                      k_of=lambda g: lattice(phase(g)["symmetry"]).k,
                                      lattice_of=lambda g: phase(g)["symmetry"], phase_ranges=ranges,
                                      period=lattice_constant(setting["ring_frequency"], setting["lattice"]))
    return labels, n_split, ranges


def _rows(path) -> dict:
    with open(path, newline="") as f:
        return {int(r["grain"]): r for r in csv.DictReader(line for line in f if not line.startswith("#"))}


def test_split_grains_writes_the_rule_on_the_whole_map(runs, images):
    out, res = runs
    paths, truth = images
    expected, n_split, _ = _reference_split(out / "square_False", "square", paths["square"])
    split = read_output(out / "square_True", "square")
    assert n_split == 1 and np.array_equal(split["grains"], expected)
    assert res["square", True].n_grains == res["square", False].n_grains + 1
    # The 28° region, joined to the 20° one without the option, is a grain of its own with it.
    piece = split["grains"] == res["square", True].n_grains
    region = (truth == 2)
    assert (piece & region).sum() / (piece | region).sum() > 0.85
    plain = read_output(out / "square_False", "square")
    for name in ("orientation", "boundary"):
        assert np.array_equal(plain[name], split[name], equal_nan=True)
    method = json.loads((out / "square_True" / ".square.run" / "manifest.json").read_text())["method"]
    assert method["split_grains"]["grains_split"] == 1 and method["split_grains"]["grains_added"] == 1


def test_the_table_keeps_the_rows_of_grains_not_split(runs):
    out, res = runs
    plain, split = _rows(out / "square_False" / "square_grains.csv"), _rows(out / "square_True" / "square_grains.csv")
    assert len(split) == len(plain) + 1
    for g, row in plain.items():
        if g == 1:  # the split grain
            assert float(split[g]["area_px2"]) < float(row["area_px2"])
            continue
        for key, value in row.items():
            if key != "n_neighbours":
                assert split[g][key] == value, (g, key)
    new = split[len(split)]
    assert float(new["area_px2"]) + float(split[1]["area_px2"]) == pytest.approx(float(plain[1]["area_px2"]))
    assert abs(float(new["lattice_angle_deg"]) - float(split[1]["lattice_angle_deg"])) > 5.0


def test_a_fused_map_is_split_with_each_phase_contiguous(runs, images):
    out, res = runs
    paths, _ = images
    phases, _ = _phases(out / "fringes_True", "fringes")
    before, _ = _phases(out / "fringes_False", "fringes")
    assert [p["symmetry"] for p in phases] == ["fringes", "square"]
    assert before[1]["grains"][1] >= before[1]["grains"][0]  # robust-2d added a grain: phase 2 is not empty
    expected, n_split, ranges = _reference_split(out / "fringes_False", "fringes", paths["fringes"])
    split = read_output(out / "fringes_True", "fringes")
    assert n_split and np.array_equal(split["grains"], expected)
    assert [p["grains"] for p in phases] == [list(r) for r in ranges]
    n_fringes = phases[0]["grains"][1]
    assert phases[0]["grains"][0] == 1 and phases[1]["grains"][0] == n_fringes + 1
    # Each phase's grains lie on the unsplit map's grains of that phase.
    unsplit = read_output(out / "fringes_False", "fringes")["grains"]
    on = split["grains"] > 0
    assert ((split["grains"][on] <= n_fringes) == (unsplit[on] <= before[0]["grains"][1])).all()
    rows = _rows(out / "fringes_True" / "fringes_grains.csv")
    assert all(int(r["phase"]) == (1 if g <= n_fringes else 2) for g, r in rows.items())
    assert same_partition(read_output(out / "fringes_False", "fringes")["grains"] > 0, split["grains"] > 0)


def test_an_interrupted_split_resumes_to_the_same_bytes(tmp_path, runs, images, monkeypatch):
    from micro_sym.inference import segment, split_run

    out, _ = runs
    paths, _ = images
    write, calls = split_run.write_task, []

    class Stop(Exception):
        pass

    def write_then_stop(*args):
        calls.append(1)
        if len(calls) == 4:
            raise Stop
        return write(*args)

    monkeypatch.setattr(split_run, "write_task", write_then_stop)
    with pytest.raises(Stop):
        segment([paths["square"]], tmp_path, split_grains=True, **KW)
    monkeypatch.setattr(split_run, "write_task", write)
    (res,) = segment([paths["square"]], tmp_path, split_grains=True, **KW)
    assert res.status == "complete" and res.blocks_run == 0  # the unsplit run was complete
    first, again = read_output(out / "square_True", "square"), read_output(tmp_path, "square")
    for name in first:
        assert np.array_equal(first[name], again[name], equal_nan=True), name
    assert (out / "square_True" / "square_grains.csv").read_text() == (tmp_path / "square_grains.csv").read_text()
    (res,) = segment([paths["square"]], tmp_path, split_grains=True, **KW)
    assert res.status == "skipped"


def test_split_grains_refuses_a_volume_without_a_lattice_and_an_unsplit_run(tmp_path, runs, images):
    from micro_sym.inference import segment

    out, _ = runs
    paths, _ = images
    volume = tmp_path / "volume.tif"
    tifffile.imwrite(volume, np.random.default_rng(0).random((16, 32, 32)).astype(np.float32))
    (res,) = segment([volume], tmp_path / "v", split_grains=True, model="default-3d", workers=1)
    assert res.status == "failed" and "--split-grains on a volume needs" in res.error  # noise: no lattice ring
    (res,) = segment([paths["square"]], out / "square_False", split_grains=True, **KW)
    assert res.status == "failed" and "split_grains" in res.error and "--overwrite" in res.error


@pytest.mark.parametrize("name", ["square", "fringes"])
def test_the_widgets_in_memory_split_gives_the_same_grains(runs, images, name):
    from micro_sym.inference.interactive import SegmentSettings, segment

    out, res = runs
    paths, _ = images
    result = segment(tifffile.imread(paths[name]), SegmentSettings(model="auto", threshold=KW["threshold"],
                                                                    split_grains=True))
    written = read_output(out / f"{name}_True", name)
    assert np.array_equal(result.grains, written["grains"]) and result.n_grains == res[name, True].n_grains
    assert result.info["split_grains"]["grains_split"] >= 1 and "split in two lattice orientations" in result.method
    rows = _rows(out / f"{name}_True" / f"{name}_grains.csv")
    measured = np.asarray(result.table["lattice_angle"], float)
    assert np.allclose(measured, [float(rows[g]["lattice_angle_deg"] or "nan") for g in result.table["grain"]],
                       atol=1e-3, equal_nan=True)
    if name == "fringes":
        assert [p["grains"] for p in result.info["phases"]] == [p["grains"] for p in _phases(out / f"{name}_True", name)[0]]


def test_a_dry_run_plans_the_split_and_writes_nothing(tmp_path, images):
    from micro_sym.inference import segment

    paths, _ = images
    (res,) = segment([paths["square"]], tmp_path / "plan", split_grains=True, dry_run=True, **KW)
    assert res.status == "planned" and res.plan["method"]["split_grains"]["rule"]["confirm"] == 5.0
    assert res.plan["outputs"] == [str(tmp_path / "plan" / "square.zarr"), str(tmp_path / "plan" / "square_grains.csv")]
    assert not (tmp_path / "plan").exists()

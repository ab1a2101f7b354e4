"""``segment --split-grains`` on a volume (:mod:`micro_sym.inference.refine3d_run`): atoms-3d's grains split
and joined by the volume's measured lattice, block by block, as the rule does it on the whole volume;
the same grains for any tiling, the same bytes after an interrupted run; refusals."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import tifffile

from micro_sym.grains.split3d import refine_volume

from _helpers import read_output

#: A bcc W polycrystal of the held-out imaging setting (variant 0, seed 3) in which atoms-3d's grains
#: hold two split and one pair joined (found by a search over seeds 0-3 of two variants).
VARIANT, SEED, SIZE = 0, 3, 64


@pytest.fixture(scope="module")
def volume(tmp_path_factory):
    from micro_sym.synth.atoms3d import load_atoms3d_config, synth_atoms3d

    cfg = load_atoms3d_config("synth-atoms3d-heldout-imaging").variant(VARIANT).model_copy(update={"size": [SIZE] * 3})
    sample = synth_atoms3d(cfg, seed=SEED)
    vol = np.asarray(sample.image, np.float32)
    path = tmp_path_factory.mktemp("refine3d") / "w.tif"
    tifffile.imwrite(path, vol)
    return path, vol, np.asarray(sample.grains)


@pytest.fixture(scope="module")
def runs(volume, tmp_path_factory):
    """The volume segmented with --split-grains in one block and in 8 blocks of 32³, and without it."""
    from micro_sym.inference import segment

    root = tmp_path_factory.mktemp("refine3d_runs")
    out = {}
    for key, kw in {"whole": {}, "blocks": {"block": 32, "chunk": 32}, "plain": {"split": False}}.items():
        split = kw.pop("split", True)
        (r,) = segment([volume[0]], root / key, model="atoms-3d", split_grains=split, workers=1, **kw)
        assert r.status == "complete", r.error
        out[key] = (root / key, r)
    return out


def _grains(out):
    return read_output(out, "w")["grains"]


def test_the_engine_refines_as_the_rule_refines_the_whole_volume(volume, runs):
    from micro_sym.inference.network import as_network
    from micro_sym.models import load_model
    from micro_sym.training.train3d import network_grains

    out, res = runs["whole"]
    net = as_network(load_model("atoms-3d", export=True), export=False)
    maps, labels = network_grains(net, volume[1], period="measure", threshold_deg=5.0, min_size=32)
    plain = _grains(runs["plain"][0])
    assert np.array_equal(labels, plain)  # the flood's grains, as the engine's run without the option
    ring = res.plan["method"]["grain_orientation"]["ring_frequency"]
    expected = refine_volume(labels, maps["orientation"], volume[1], ring=ring, degrees=net.grain_field)
    assert np.array_equal(_grains(out), expected)
    record = res.plan["method"]["split_grains"]
    assert record["grains_split"] == 2 and record["grains_joined"] == 1
    assert res.n_grains == int(plain.max()) + record["grains_added"] - record["grains_joined"] == int(expected.max())


def test_any_tiling_gives_the_same_grains(runs):
    # The grains exactly; the maps within the network's tiled rounding (orientation: each grain's mean).
    whole, blocks = read_output(runs["whole"][0], "w"), read_output(runs["blocks"][0], "w")
    assert np.array_equal(whole["grains"], blocks["grains"])
    for name in ("orientation", "boundary"):
        np.testing.assert_allclose(whole[name], blocks[name], atol=1e-4, equal_nan=True, err_msg=name)
    rows = [[r[:2] for r in csv.reader(open(runs[k][0] / "w_grains.csv")) if not r[0].startswith("#")]
            for k in ("whole", "blocks")]
    assert rows[0] == rows[1]


def test_the_table_has_a_row_per_grain_with_its_measured_orientation(runs):
    out, res = runs["whole"]
    rows = [r for r in csv.DictReader(line for line in open(out / "w_grains.csv") if not line.startswith("#"))]
    assert [int(r["grain"]) for r in rows] == list(range(1, res.n_grains + 1))
    assert sum(r["lattice_qw"] not in ("", "nan") for r in rows) >= res.n_grains - 2
    grains = _grains(out)
    assert [int(r["n_points"]) for r in rows] == np.bincount(grains.ravel(), minlength=res.n_grains + 1)[1:].tolist()


def test_the_table_s_measured_orientations_are_those_of_the_output_s_grains(volume, runs):
    # Grains the join left alone keep their measurement from before the join; joined ones are measured
    # again: together, what measuring the written grains gives.
    from micro_sym.classical.grain_orientation3d import grain_orientations

    out, res = runs["whole"]
    rows = [r for r in csv.DictReader(line for line in open(out / "w_grains.csv") if not line.startswith("#"))]
    table = np.array([[float(r[f"lattice_q{c}"] or "nan") for c in "wxyz"] for r in rows])
    ring = res.plan["method"]["grain_orientation"]["ring_frequency"]
    fresh = grain_orientations(volume[1], _grains(out), ring_frequency=ring, ids=np.arange(1, res.n_grains + 1))
    np.testing.assert_allclose(table, fresh["quaternions"], atol=1e-6)


def test_an_interrupted_refinement_resumes_to_the_same_bytes(tmp_path, volume, runs, monkeypatch):
    from micro_sym.inference import refine3d_run, segment

    stats, calls = refine3d_run.stats_task, []

    class Stop(Exception):
        pass

    def stats_then_stop(*args):  # the split map is written; its statistics stop half way
        calls.append(1)
        if len(calls) == 4:
            raise Stop
        return stats(*args)

    monkeypatch.setattr(refine3d_run, "stats_task", stats_then_stop)
    with pytest.raises(Stop):
        segment([volume[0]], tmp_path, model="atoms-3d", split_grains=True, workers=1, block=32, chunk=32)
    monkeypatch.setattr(refine3d_run, "stats_task", stats)
    (r,) = segment([volume[0]], tmp_path, model="atoms-3d", split_grains=True, workers=1, block=32, chunk=32)
    assert r.status == "complete" and r.blocks_run == 0, r.error  # the flood was complete
    first, again = read_output(runs["blocks"][0], "w"), read_output(tmp_path, "w")
    for name in first:
        assert np.array_equal(first[name], again[name], equal_nan=True), name
    assert (runs["blocks"][0] / "w_grains.csv").read_text() == (tmp_path / "w_grains.csv").read_text()
    (r,) = segment([volume[0]], tmp_path, model="atoms-3d", split_grains=True, workers=1, block=32, chunk=32)
    assert r.status == "skipped"


def test_the_widgets_in_memory_run_gives_the_same_grains(volume, runs):
    # ... and the same orientation map: each grain's measured orientation where measured.
    from micro_sym.inference.interactive import SegmentSettings, segment

    result = segment(volume[1], SegmentSettings(model="atoms-3d", split_grains=True))
    assert np.array_equal(result.grains, _grains(runs["whole"][0]))
    assert len(result.table["grain"]) == runs["whole"][1].n_grains
    np.testing.assert_allclose(result.orientation, read_output(runs["whole"][0], "w")["orientation"], atol=1e-6)


@pytest.mark.parametrize("key", ["whole", "plain"])
def test_the_orientation_map_shows_each_grain_s_measured_orientation(runs, key):
    # The measured orientation (a fraction of a degree off where the lattice shows) where the table has
    # one, the network's mean elsewhere; the map holds one orientation per grain and none off grains, and
    # the table's mean_q* (and so its Euler angles) is the map's.
    from micro_sym.grains.table import euler_bunge_from_quat

    out, res = runs[key]
    rows = [r for r in csv.DictReader(line for line in open(out / "w_grains.csv") if not line.startswith("#"))]
    measured = np.array([[float(r[f"lattice_q{c}"] or "nan") for c in "wxyz"] for r in rows])
    shown = np.array([[float(r[f"mean_q{c}"]) for c in "wxyz"] for r in rows])
    have = np.isfinite(measured).all(1)
    assert have.sum() >= res.n_grains - 2
    np.testing.assert_allclose(shown[have], measured[have], atol=1e-5)
    euler = np.array([[float(r[a]) for a in ("phi1_deg", "Phi_deg", "phi2_deg")] for r in rows])
    np.testing.assert_allclose(euler, np.stack(euler_bunge_from_quat(shown), -1), atol=0.05)  # 6 digits in the CSV
    maps = read_output(out, "w")
    grains, q = maps["grains"], np.moveaxis(maps["orientation"], 0, -1)
    assert np.isnan(q[grains == 0]).all()
    np.testing.assert_allclose(np.abs((q[grains > 0] * shown[grains[grains > 0] - 1]).sum(-1)), 1.0, atol=1e-5)
    assert res.plan["method"]["grain_orientation"]["ring_frequency"] > 0


def test_evaluate_scores_the_refined_grains(volume, runs):
    from micro_sym.models import load_model
    from micro_sym.training.train3d import boundary_from_grains, evaluate3d_volumes, grain_f1

    _, vol, truth = volume
    (row,) = evaluate3d_volumes(load_model("atoms-3d", export=True), [(vol, truth, None)], period="measure",
                                min_size=32, split_grains=True)
    expected = grain_f1(_grains(runs["whole"][0]), np.where(boundary_from_grains(truth), 0, truth))
    assert row["grain_f1"] == expected


def test_a_volume_without_a_harmonic_network_or_ring_is_refused(tmp_path):
    from micro_sym.inference import segment

    noise = tmp_path / "noise.tif"
    tifffile.imwrite(noise, np.random.default_rng(0).random((32, 32, 32)).astype(np.float32))
    (res,) = segment([noise], tmp_path / "out", split_grains=True, model="atoms-3d", workers=1)
    assert res.status == "failed" and "--split-grains on a volume needs" in res.error


def test_the_widget_refuses_to_split_a_volume_without_a_harmonic_field(volume, monkeypatch):
    # As segment refuses it (above): a 3D network whose grains do not come from a harmonic field.
    from micro_sym.errors import MicroSymError
    from micro_sym.inference.interactive import SegmentSettings, segment
    from micro_sym.inference.network import Network

    monkeypatch.setattr(Network, "grain_field", property(lambda self: None))
    with pytest.raises(MicroSymError, match="needs a 3D network with a harmonic field"):
        segment(volume[1], SegmentSettings(model="atoms-3d", split_grains=True))


def test_grains_are_read_in_batches_no_larger_than_the_largest_grain_box():
    # Memory stays that of one grain: each batch's union of boxes holds at most the budget, unless a
    # single box is larger (then it is read alone), and at most twice its boxes' points; every grain is
    # read once, in order.
    from micro_sym.inference.refine3d_run import read_batches

    rng = np.random.default_rng(0)
    lo = np.cumsum(rng.integers(0, 12, (60, 3)), axis=0)  # neighbours overlap, as grains numbered in raster order
    hi = lo + rng.integers(10, 30, (60, 3))
    hi[7] = lo[7] + 60  # 216,000 points: over the budget alone
    lo[40], hi[40] = (500, 500, 500), (510, 510, 510)  # far from the others
    budget = 40 ** 3
    batches = read_batches(lo, hi, budget)
    assert [i for b in batches for i in b] == list(range(60))
    assert [7] in batches and [40] in batches and len(batches) < 40
    for b in batches:
        union = np.prod(hi[b].max(0) - lo[b].min(0))
        assert len(b) == 1 or (union <= budget and union <= 2 * np.prod(hi[b] - lo[b], axis=1).sum())

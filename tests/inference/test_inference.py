"""Streaming inference engine and `micro-sym segment` (issue 6)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tifffile
import torch
import zarr
from torch import nn
from typer.testing import CliRunner

from micro_sym.cli import app
from micro_sym.grains import reconstruct_grains
from micro_sym.grains.rules import grains_by_rule, network_rule, pair_rule
from micro_sym.inference import as_network, load_network, plan_blocks, predict_array, segment
from micro_sym.inference.whole_image import grains_from_maps, segment_image

from _helpers import half_lattice, read_output, same_partition, smooth_image

THRESHOLD = 20.0  # 3D (Tiny3D's quaternions vary strongly)
# The untrained plain CNN's angle field varies by only ~0.04° over an image: 2D tests with it use a
# threshold at that scale, so that grains (and the region merging of 2D networks) are real decisions.
THRESHOLD_2D = 0.01


class Tiny2D(nn.Module):
    """A 2D SegModel-like net with fixed filters: the lattice angle follows the smoothed intensity
    (90° over the intensity range, so the grain rule has many real decisions to make, region merging
    included) and the boundary logit is high where the intensity changes fastest."""

    ndim, k, total_stride, halo = 2, 4, 1, 6
    config = {"arch": "tiny2d"}

    def __init__(self):
        super().__init__()
        self.smooth = nn.Conv2d(1, 1, 5, padding=2, bias=False)
        self.sobel = nn.Conv2d(1, 2, 3, padding=1, bias=False)
        self.cut = 0.0
        with torch.no_grad():
            self.smooth.weight.fill_(1 / 25)
            sx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]]) / 8
            self.sobel.weight.copy_(torch.stack([sx, sx.T])[:, None])
            x = torch.from_numpy(smooth_image((96, 96), seed=9).astype(np.float32) / 127.5 - 1)[None, None]
            self.cut = float(torch.quantile(self.forward(x)[0, 0].flatten(), 0.8))  # ~20% boundary

    def forward(self, x):
        f = self.smooth(x)
        g = self.sobel(f)
        logit = 400 * g.pow(2).sum(1, keepdim=True).sqrt() - self.cut
        return torch.cat([logit, torch.cos(np.pi * f), torch.sin(np.pi * f)], 1)


class Tiny3D(nn.Module):
    """A 3D SegModel-like conv net with one 2x down/up-sampling (total stride 2), quaternion head."""

    ndim, k, total_stride, halo = 3, 24, 2, 8
    orientation_encoding, normalization = "quaternion", "unit"
    config = {"arch": "tiny3d"}

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.a = nn.Conv3d(1, 4, 3, padding=1)
        self.b = nn.Conv3d(4, 4, 3, padding=1)
        self.head = nn.Conv3d(8, 5, 1)
        with torch.no_grad():  # shift boundary logits so ~75% of voxels are grain interior
            x = torch.from_numpy(smooth_image((16, 16, 16), seed=8, sigma=2.0).astype(np.float32) / 255)[None, None]
            self.head.bias[0] -= float(torch.quantile(self.forward(x)[0, 0].flatten(), 0.75))

    def forward(self, x):
        f = torch.relu(self.a(x))
        g = nn.functional.interpolate(torch.relu(self.b(nn.functional.max_pool3d(f, 2))), scale_factor=2)
        return self.head(torch.cat([f, g], 1))


def _check_table(csv_path, labels, orientation, symmetry, columns):
    """The engine's per-grain CSV (block sums) equals the whole-image table of the same grains."""
    import csv

    from micro_sym.grains import grain_table

    rows = list(csv.DictReader(line for line in csv_path.read_text().splitlines() if not line.startswith("#")))
    ref = grain_table(labels, orientation, symmetry=symmetry)
    assert len(rows) == labels.max() == len(ref["grain"])
    for col in columns:
        head = next(h for h in rows[0] if h == col or h.rsplit("_", 1)[0] == col)  # headers carry units
        np.testing.assert_allclose([float(r[head]) for r in rows], ref[col], rtol=1e-5, atol=1e-3, err_msg=col)


@pytest.fixture(scope="module")
def model2d(segmenter2d):
    return segmenter2d


@pytest.fixture(scope="module")
def model_file(segmenter2d_file):
    return segmenter2d_file


def test_plan_blocks_are_chunk_aligned_and_cover_the_image():
    plan = plan_blocks((203, 171), 64, halo=12, stride=4, chunk=32)
    cover = np.zeros((203, 171), int)
    for b in plan.blocks:
        cover[b.core] += 1
        for s, p in zip(b.core, plan.chunk):
            assert s.start % p == 0
        assert all((s.stop - s.start + lo + hi) % 4 == 0 for s, (lo, hi) in zip(b.tile, b.pad))
    assert (cover == 1).all()


def test_tiled_2d_equals_whole_image(tmp_path):
    img = smooth_image((194, 171))  # blocks of 64: the last row of blocks is 2 px, thinner than the merge reach
    tifffile.imwrite(tmp_path / "a.tif", img)
    model = Tiny2D()
    ref = segment_image(model, img, threshold=5.0, min_size=5)
    assert ref["grains"].max() >= 20  # the comparison must involve real grains cut by block borders
    # ... and the seeded rule must differ from the plain pair rule, or the test would not check its block-wise
    # version; seed merging too.
    for other in (pair_rule(5.0), {**network_rule(5.0, 2), "merge_threshold": None, "reach": 0}):
        assert not same_partition(grains_from_maps(ref, 4, threshold=5.0, min_size=5, rule=other), ref["grains"])
    (res,) = segment([tmp_path / "a.tif"], tmp_path / "out", model=as_network(model), block=64, chunk=32,
                     threshold=5.0, min_size=5)
    assert res.status == "complete" and res.n_blocks == 12
    g = zarr.open_group(str(tmp_path / "out" / "a.zarr"), mode="r")
    # Written a shard (= output chunk) at a time, read back (halos of the last pass) in half chunks.
    assert g["boundary/0"].shards == (32, 32) and g["boundary/0"].chunks == (16, 16)
    out = read_output(tmp_path / "out", "a")
    np.testing.assert_allclose(out["boundary"], ref["boundary"], atol=1e-5)
    d = np.abs(out["orientation"] - ref["orientation"])
    assert np.minimum(d, 90 - d).max() < 1e-4  # degrees; angles wrap at 360/k
    np.testing.assert_array_equal(out["grains"], ref["grains"])  # same ids, not just the same partition
    _check_table(tmp_path / "out" / "a_grains.csv", ref["grains"], ref["orientation"], "square",
                 ("n_points", "perimeter", "centroid_y", "centroid_x", "major_axis", "n_neighbours", "mean_angle"))


def test_tiled_3d_equals_whole_volume(tmp_path):
    net = as_network(Tiny3D())
    vol = smooth_image((37, 45, 29), seed=2, sigma=2.0)
    zarr.create_array(str(tmp_path / "v.zarr"), data=vol, chunks=(16, 16, 16))
    ref = predict_array(net, vol)
    (res,) = segment([tmp_path / "v.zarr"], tmp_path / "out", model=net, block=16, chunk=16, threshold=THRESHOLD,
                     min_size=0)
    assert res.status == "complete", res.error
    out = read_output(tmp_path / "out", "v")
    np.testing.assert_allclose(out["boundary"], ref["boundary"], atol=1e-5)
    np.testing.assert_allclose(out["orientation"], ref["orientation"], atol=1e-5)
    whole = grains_by_rule(ref["orientation"], ref["boundary"], network_rule(THRESHOLD, 3), symmetry="cubic", min_size=0)
    assert whole.max() >= 2
    pair = reconstruct_grains(ref["orientation"], symmetry="cubic", threshold=THRESHOLD, boundary=ref["boundary"])
    assert not same_partition(pair, whole)  # the seeded rule's block-wise form is what is checked
    np.testing.assert_array_equal(out["grains"], whole)
    _check_table(tmp_path / "out" / "v_grains.csv", whole, ref["orientation"], "cubic",
                 ("n_points", "surface_area", "centroid_z", "centroid_x", "axis_a", "n_neighbours", "touches_border"))


CRASH = """
import os, sys
import numpy as np
from micro_sym.inference import segment
n = {{"k": 0}}
def crash(stage, block_id):
    n["k"] += 1
    if n["k"] == {kill_at}:
        os._exit(3)  # a hard kill: no cleanup, no exception handling
segment([sys.argv[1]], sys.argv[2], model=sys.argv[3], block=64, chunk=32, threshold={thr}, min_size=5,
        workers=1, on_block=crash)
"""


@pytest.mark.parametrize("kill_at, stage", [(5, "maps"), (17, "grains")])  # 12 blocks: 12 maps markers, then grains
def test_resume_after_kill_is_identical_and_writes_no_block_twice(tmp_path, model_file, kill_at, stage):
    img = smooth_image((203, 171), seed=3)
    tifffile.imwrite(tmp_path / "a.tif", img)
    script = tmp_path / "crash.py"
    script.write_text(textwrap.dedent(CRASH.format(thr=THRESHOLD_2D, kill_at=kill_at)))
    p = subprocess.run([sys.executable, str(script), str(tmp_path / "a.tif"), str(tmp_path / "out"), str(model_file)])
    assert p.returncode == 3
    marker_dir = tmp_path / "out" / ".a.run" / ("done1" if stage == "maps" else "done2")
    done = {f.name for f in marker_dir.iterdir()}
    assert 0 < len(done) < 12
    manifest = json.loads((tmp_path / "out" / ".a.run" / "manifest.json").read_text())
    assert manifest["status"] == "running"  # never reported complete
    rerun = []
    (res,) = segment([tmp_path / "a.tif"], tmp_path / "out", model=str(model_file), block=64, chunk=32,
                     threshold=THRESHOLD_2D, min_size=5, workers=1, on_block=lambda s, b: rerun.append((s, b)))
    assert res.status == "complete", res.error
    stage_rerun = {b for s, b in rerun if s == stage}
    assert not stage_rerun & done and len(stage_rerun | done) == 12
    if stage == "grains":  # the seeded flood's per-block statistics of the first run were kept and reused
        assert not {b for s, b in rerun if s == "maps"}
    (clean,) = segment([tmp_path / "a.tif"], tmp_path / "clean", model=str(model_file), block=64, chunk=32,
                       threshold=THRESHOLD_2D, min_size=5, workers=1)
    a, b = read_output(tmp_path / "out", "a"), read_output(tmp_path / "clean", "a")
    assert a["grains"].max() > 1
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert (tmp_path / "out" / "a_grains.csv").read_bytes() == (tmp_path / "clean" / "a_grains.csv").read_bytes()
    # Complete: skipped; different settings: refused.
    (again,) = segment([tmp_path / "a.tif"], tmp_path / "out", model=str(model_file), block=64, chunk=32,
                       threshold=THRESHOLD_2D, min_size=5)
    assert again.status == "skipped"
    (other,) = segment([tmp_path / "a.tif"], tmp_path / "out", model=str(model_file), block=64, chunk=32,
                       threshold=THRESHOLD_2D + 1, min_size=5)
    assert other.status == "failed" and "different run" in other.error and "threshold" in other.error


CRASH_3D = """
import os, sys
from micro_sym.inference import segment
n = {"k": 0}
def crash(stage, block_id):
    n["k"] += 1
    if n["k"] == 11:
        os._exit(3)
segment([sys.argv[1]], sys.argv[2], model="default-3d", block=16, chunk=16, workers=1, measure_grains=False,
        on_block=crash)
"""


def test_3d_field_run_killed_in_its_grain_pass_resumes_to_the_same_bytes(tmp_path):
    """default-3d's grains come from its harmonic field (scratch field.zarr) and its orientation map is
    painted per grain after the last pass: a run killed among the grain blocks resumes without
    rerunning a network block and ends with the bytes of an uninterrupted run; a resume asking for
    per-voxel orientations is refused."""
    vol = tifffile.imread("sample_data/volume/images/sample_000.tif")[:32, :32, :32]
    zarr.create_array(str(tmp_path / "v.zarr"), data=vol, chunks=(16, 16, 16))
    script = tmp_path / "crash.py"
    script.write_text(CRASH_3D)
    p = subprocess.run([sys.executable, str(script), str(tmp_path / "v.zarr"), str(tmp_path / "out")])
    assert p.returncode == 3
    assert (tmp_path / "out" / ".v.run" / "field.zarr").is_dir()
    assert len(list((tmp_path / "out" / ".v.run" / "done2").iterdir())) == 3  # 8 maps blocks, then 3 of 8 grains
    rerun = []
    kw = dict(model="default-3d", block=16, chunk=16, workers=1, measure_grains=False)
    (res,) = segment([tmp_path / "v.zarr"], tmp_path / "out", on_block=lambda s, b: rerun.append(s), **kw)
    assert res.status == "complete", res.error
    assert rerun.count("maps") == 0 and rerun.count("grains") == 5
    assert not (tmp_path / "out" / ".v.run" / "field.zarr").exists()  # scratch gone
    segment([tmp_path / "v.zarr"], tmp_path / "clean", **kw)
    a, b = read_output(tmp_path / "out", "v"), read_output(tmp_path / "clean", "v")
    assert a["grains"].max() > 1 and np.isfinite(a["orientation"][:, a["grains"] > 0]).all()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert (tmp_path / "out" / "v_grains.csv").read_bytes() == (tmp_path / "clean" / "v_grains.csv").read_bytes()
    (other,) = segment([tmp_path / "v.zarr"], tmp_path / "out", voxel_orientations=True, **kw)
    assert other.status == "failed" and "orientation_map" in other.error


def test_cli_corrupt_chunk_names_input_and_chunk_others_complete(tmp_path, model_file):
    good, bad = smooth_image((100, 90), seed=4), smooth_image((100, 90), seed=5)
    zarr.create_array(str(tmp_path / "good.zarr"), data=good, chunks=(32, 32))
    zarr.create_array(str(tmp_path / "bad.zarr"), data=bad, chunks=(32, 32))
    (tmp_path / "bad.zarr" / "c" / "1" / "2").write_bytes(b"garbage, not zstd")
    r = CliRunner().invoke(app, ["segment", str(tmp_path / "bad.zarr"), str(tmp_path / "good.zarr"), "--out",
                                 str(tmp_path / "out"), "--model", str(model_file), "--tile", "32"],
                           catch_exceptions=False)
    assert r.exit_code == 1
    assert "bad.zarr" in r.output and "chunk (1, 2)" in r.output and "1 of 2 inputs failed" in r.output
    assert json.loads((tmp_path / "out" / ".good.run" / "manifest.json").read_text())["status"] == "complete"
    bad_manifest = tmp_path / "out" / ".bad.run" / "manifest.json"
    assert not bad_manifest.exists() or json.loads(bad_manifest.read_text())["status"] != "complete"


def _one_line_error(args):
    from micro_sym.cli import main

    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(args)
    lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
    return code, lines


def test_bad_inputs_give_one_line_errors(tmp_path, model_file, capfd):
    tifffile.imwrite(tmp_path / "a.tif", smooth_image((40, 40)))
    tifffile.imwrite(tmp_path / "vol.tif", smooth_image((8, 40, 40)))
    (tmp_path / "notes.txt").write_text("not an image")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cases = [
        ([str(tmp_path / "vol.tif"), "--out", str(tmp_path / "o1")], "is for 2D data but the input is a 3D volume"),
        ([str(tmp_path / "notes.txt"), "--out", str(tmp_path / "o2")], "unsupported file type"),
        ([str(tmp_path / "a.tif"), "--out", str(blocker / "sub")], "cannot write to output directory"),
        ([str(tmp_path / "missing*.tif"), "--out", str(tmp_path / "o3")], "no file matches"),
        ([str(tmp_path / "a.tif"), "--out", str(tmp_path / "o4"), "--forward-memory", "0"],
         "forward memory 0 (--forward-memory or $MICRO_SYM_FORWARD_MB): expected a positive number of MB"),
    ]
    for args, expected in cases:
        code, lines = _one_line_error(["segment", *args, "--model", str(model_file)])
        err = capfd.readouterr().err.strip().splitlines()
        lines = lines or err
        assert code == 2, (args, lines)
        assert len(lines) == 1 and lines[0].startswith("micro-sym: error:") and expected in lines[0], lines


def test_volumes_without_a_model_run_the_bundled_3d_network(tmp_path):
    zarr.create_array(str(tmp_path / "v.zarr"), data=smooth_image((24, 24, 24), sigma=2.0), chunks=(16, 16, 16))
    (res,) = segment([tmp_path / "v.zarr"], tmp_path / "out", dry_run=True)
    assert res.status == "planned" and res.plan["method"]["name"] == "network"
    assert res.plan["method"]["scale"]["source"] == "unmeasured"  # smooth noise: no lattice ring
    assert res.plan["halo"] >= load_network("default-3d").halo  # the 3D network's plan, not a 2D one


def test_dry_run_prints_plan_and_writes_nothing(tmp_path, model_file):
    tifffile.imwrite(tmp_path / "a.tif", smooth_image((300, 200)))
    r = CliRunner().invoke(app, ["segment", str(tmp_path / "a.tif"), "--out", str(tmp_path / "out"), "--model",
                                 str(model_file), "--tile", "128", "--chunk", "64", "--dry-run"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "a.zarr" in r.output and "MiB" in r.output and "6" in r.output
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_local_cluster_two_processes_byte_identical(tmp_path, model_file):
    img = smooth_image((150, 130), seed=6)
    tifffile.imwrite(tmp_path / "a.tif", img)
    kw = dict(model=str(model_file), block=64, chunk=32, threshold=THRESHOLD_2D, min_size=5)
    (a,) = segment([tmp_path / "a.tif"], tmp_path / "threads", **kw)
    (b,) = segment([tmp_path / "a.tif"], tmp_path / "cluster", scheduler="local-cluster", workers=2, **kw)
    assert a.status == b.status == "complete", b.error
    ga, gb = read_output(tmp_path / "threads", "a")["grains"], read_output(tmp_path / "cluster", "a")["grains"]
    assert ga.max() > 1 and ga.tobytes() == gb.tobytes()


def test_region_merge_across_a_block_thinner_than_the_reach():
    """Two regions 4 px apart, the 3-px boundary between them exactly one block: merged as in the whole image."""
    from micro_sym.grains import reconstruct_grains
    from micro_sym.grains.regions import merge_regions
    from micro_sym.inference import label_block, merge_blocks

    ang = np.zeros((9, 6), np.float32)
    ang[6:] = 3.0  # a 3° sub-grain boundary: one grain under the 5° rule
    boundary = np.zeros((9, 6), np.float32)
    boundary[3:6] = 1.0  # drawn by the network as a 3-px band
    whole = merge_regions(reconstruct_grains(ang, symmetry="square", threshold=3.5, boundary=boundary), ang, k=4,
                          threshold=5.0, reach=4)
    assert whole.max() == 1
    plan = plan_blocks((9, 6), 3, halo=0, stride=1, chunk=3)
    data = {b.id: label_block(ang[b.core], boundary[b.core], symmetry="square", threshold=3.5,
                              origin=tuple(s.start for s in b.core), image_shape=(9, 6), reach=4).to_arrays()
            for b in plan.blocks}
    merged = merge_blocks(plan, lambda b: data[b.id], symmetry="square", threshold=3.5, merge_threshold=5.0, reach=4)
    assert merged.n_grains == 1


def test_progress_moves_inside_a_block_while_its_orientation_decodes(tmp_path):
    """A volume of one block whose every voxel is decoded (--voxel-orientations) reports fractions of its
    maps step (after the forward, then per decoded z slab) instead of sitting at 0 until the block
    ends; the steps never go back."""
    vol = tifffile.imread("sample_data/volume/images/sample_000.tif")[:24, :32, :32]
    zarr.create_array(str(tmp_path / "v.zarr"), data=vol, chunks=(32, 32, 32))
    seen = []
    (res,) = segment([tmp_path / "v.zarr"], tmp_path / "out", block=32, chunk=32, voxel_orientations=True,
                     progress=lambda done, total: seen.append((done, total)))
    assert res.status == "complete" and res.n_blocks == 1
    done = [d for d, _ in seen]
    # maps, grains, each grain's orientation measured (the map is decoded per voxel: not painted)
    assert {t for _, t in seen} == {3} and done[0] == 0 and done[-1] == 3
    assert done == sorted(done)
    inside = [d for d in done if 0 < d < 1]
    assert inside[0] == 0.5 and len(inside) == 3, done  # forward done, then 2 of 3 slabs of 8 planes


@pytest.mark.parametrize("kind", ["micrograph", "volume"])
def test_progress_reaches_its_total_only_when_the_input_is_done(tmp_path, monkeypatch, kind):
    """The passes after the grains pass (a micrograph's grains measured and renumbered; a volume's grain
    orientations measured and painted) are block-steps too: 100 % is reported once, at the end."""
    from micro_sym.inference import engine

    if kind == "micrograph":
        img = half_lattice((320, 448), seed=3)
        tifffile.imwrite(tmp_path / "a.tif", img)
        path, kw, last = tmp_path / "a.tif", dict(model="default-2d", block=128, chunk=64), "relabel_task"
    else:
        vol = tifffile.imread("sample_data/volume/images/sample_000.tif")[:48, :48, :48]
        zarr.create_array(str(tmp_path / "a.zarr"), data=vol, chunks=(32, 32, 32))
        path, kw, last = tmp_path / "a.zarr", dict(block=32, chunk=32), "paint_task"
    seen, at_last_pass = [], []
    task = getattr(engine, last)

    def watched(*args):
        at_last_pass.append(seen[-1])
        return task(*args)

    monkeypatch.setattr(engine, last, watched)
    (res,) = segment([path], tmp_path / "out", progress=lambda done, total: seen.append((done, total)), workers=1, **kw)
    assert res.status == "complete", res.error
    totals = {t for _, t in seen}
    assert totals == {4 * res.n_blocks}, totals  # maps, grains and two passes after them
    done = [d for d, _ in seen]
    assert done == sorted(done) and done[-1] == 4 * res.n_blocks and done.count(done[-1]) == 1
    assert at_last_pass and max(d for d, _ in at_last_pass) < 4 * res.n_blocks

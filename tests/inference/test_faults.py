"""Reliability of `micro-sym segment` / `export` under faults and misuse (issue 30).

Concurrent runs on one output, a ``--scheduler`` address that is not a Dask scheduler, tile-invariant
3D mean orientations, model files that must fail with one line, foreign files in ``--out`` and
colliding input names.
"""

from __future__ import annotations

import contextlib
import csv
import io
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import zarr
from torch import nn

from micro_sym.errors import MicroSymError
from micro_sym.inference import as_network, segment
from micro_sym.models import build_model

from _helpers import read_output, smooth_image

THRESHOLD_2D = 0.01  # the untrained plain CNN's angles vary by ~0.04° over an image (see test_inference)


@pytest.fixture(scope="module")
def model_file(segmenter2d_file):
    return segmenter2d_file


def _cli(args):
    """``micro-sym ARGS`` in process: (exit code, non-empty stderr lines)."""
    from micro_sym.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as done:  # typer's standalone mode exits on success
            code = done.code or 0
    return code, [ln for ln in err.getvalue().splitlines() if ln.strip()]


# ----------------------------------------------------------------------------- 1. output lock


def test_second_run_on_the_same_output_is_refused_and_the_first_is_intact(tmp_path, model_file):
    tifffile.imwrite(tmp_path / "a.tif", smooth_image((96, 96), seed=3))
    kw = dict(model=str(model_file), block=32, chunk=32, threshold=THRESHOLD_2D, min_size=5, workers=1)
    out = tmp_path / "out"
    started = threading.Event()

    def slow(stage, block_id):  # keeps the first run busy while the second one starts
        started.set()
        time.sleep(0.15)

    first = {}
    t = threading.Thread(target=lambda: first.update(res=segment([tmp_path / "a.tif"], out, on_block=slow, **kw)))
    t.start()
    try:
        assert started.wait(60)
        code, lines = _cli(["segment", tmp_path / "a.tif", "--out", out, "--model", model_file, "--tile", 32,
                            "--chunk", 32, "--threshold", THRESHOLD_2D, "--min-size", 5, "--workers", 1])
    finally:
        t.join(120)
    assert code == 2, lines
    assert len(lines) == 1 and "a: another micro-sym run is writing" in lines[0], lines
    assert str(out / "a.zarr") in lines[0] and ".a.lock" in lines[0] and "--out" in lines[0]
    (res,) = first["res"]
    assert res.status == "complete", res.error
    segment([tmp_path / "a.tif"], tmp_path / "solo", **kw)
    a, b = read_output(out, "a"), read_output(tmp_path / "solo", "a")
    assert a["grains"].max() > 1
    for k in a:
        assert a[k].tobytes() == b[k].tobytes(), k
    assert (out / "a_grains.csv").read_bytes() == (tmp_path / "solo" / "a_grains.csv").read_bytes()
    # The lock went with the first run: a rerun finds the output complete.
    (again,) = segment([tmp_path / "a.tif"], out, **kw)
    assert again.status == "skipped"


def test_a_lock_left_by_a_killed_process_does_not_block(tmp_path, model_file):
    import subprocess
    import sys

    tifffile.imwrite(tmp_path / "a.tif", smooth_image((64, 64), seed=4))
    out = tmp_path / "out"
    script = (
        "import os, sys\n"
        "from micro_sym.inference import segment\n"
        "def die(stage, block_id):\n"
        "    os._exit(3)\n"
        f"segment([sys.argv[1]], sys.argv[2], model=sys.argv[3], block=32, chunk=32, threshold={THRESHOLD_2D},\n"
        "        min_size=5, workers=1, on_block=die)\n"
    )
    p = subprocess.run([sys.executable, "-c", script, str(tmp_path / "a.tif"), str(out), str(model_file)])
    assert p.returncode == 3 and (out / ".a.lock").exists()
    (res,) = segment([tmp_path / "a.tif"], out, model=str(model_file), block=32, chunk=32, threshold=THRESHOLD_2D,
                     min_size=5, workers=1)
    assert res.status == "complete", res.error


# ----------------------------------------------------------------------------- 2. scheduler handshake


@contextlib.contextmanager
def _server(reply: bytes | None):
    """A TCP server on localhost that accepts and then stays silent (``reply=None``) or sends ``reply`` and closes."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    stop = threading.Event()
    conns = []

    def serve():
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                c, _ = srv.accept()
            except OSError:
                continue
            conns.append(c)
            if reply is not None:
                try:
                    c.sendall(reply)
                finally:
                    c.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield f"tcp://127.0.0.1:{srv.getsockname()[1]}"
    finally:
        stop.set()
        t.join(5)
        for c in conns:
            c.close()
        srv.close()


def _closed_port() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    return f"tcp://127.0.0.1:{port}"


def _make_runner_within(address, seconds, **kw):
    """``make_runner(address)`` in a thread: (exception or runner, elapsed); fails if it does not return in time."""
    from micro_sym.inference.scheduler import make_runner

    box = {}

    def go():
        try:
            box["out"] = make_runner(address, **kw)
        except BaseException as err:  # noqa: BLE001 - handed to the test
            box["out"] = err

    t0 = time.perf_counter()
    t = threading.Thread(target=go, daemon=True)  # a hang must not keep the test process alive
    t.start()
    t.join(seconds)
    assert "out" in box, f"make_runner({address}) still waiting after {seconds} s"
    return box["out"], time.perf_counter() - t0


def test_silent_peer_is_not_a_dask_scheduler():
    with _server(None) as addr:
        err, dt = _make_runner_within(addr, 30, connect_timeout=2)
    assert isinstance(err, MicroSymError), err
    assert str(err) == f"{addr}: not a Dask scheduler (no handshake within 2 s)"
    assert dt < 10


def test_http_reply_is_not_a_dask_scheduler():
    with _server(b"HTTP/1.1 200 OK\r\n\r\n") as addr:
        err, dt = _make_runner_within(addr, 30, connect_timeout=2)
    assert isinstance(err, MicroSymError), err
    assert str(err).startswith(f"{addr}: not a Dask scheduler") and "\n" not in str(err), err
    assert "HTTP/1.1 200 OK" in str(err)
    assert dt < 10


def test_closed_port_is_connection_refused():
    addr = _closed_port()
    err, dt = _make_runner_within(addr, 30, connect_timeout=2)
    assert isinstance(err, MicroSymError), err
    assert str(err) == f"{addr}: connection refused"
    assert dt < 10


@pytest.mark.parametrize("peer", ["silent", "http", "closed"])
def test_cli_scheduler_that_is_not_dask_exits_2_within_20_s(tmp_path, model_file, peer):
    tifffile.imwrite(tmp_path / "a.tif", smooth_image((32, 32)))
    server = (contextlib.nullcontext(_closed_port()) if peer == "closed" else
              _server(None if peer == "silent" else b"HTTP/1.1 200 OK\r\n\r\n"))
    with server as addr:
        box = {}
        t0 = time.perf_counter()
        t = threading.Thread(target=lambda: box.update(r=_cli(["segment", tmp_path / "a.tif", "--out", tmp_path / "o",
                                                                 "--model", model_file, "--scheduler", addr])),
                             daemon=True)
        t.start()
        t.join(40)
        dt = time.perf_counter() - t0
    assert "r" in box, "the CLI still waits for the peer after 40 s"
    code, lines = box["r"]
    assert code == 2 and len(lines) == 1, lines
    expected = {"silent": f"{addr}: not a Dask scheduler (no handshake within 10 s)",
                "http": f"{addr}: not a Dask scheduler (it answered 'HTTP/1.1 200 OK')",
                "closed": f"{addr}: connection refused"}[peer]
    assert lines[0] == f"micro-sym: error: {expected}"
    assert dt < 20


def test_a_real_scheduler_passes_the_probe(tmp_path, model_file):
    from distributed import LocalCluster

    from micro_sym.inference.scheduler import probe_scheduler

    tifffile.imwrite(tmp_path / "a.tif", smooth_image((64, 64), seed=7))
    kw = dict(model=str(model_file), block=32, chunk=32, threshold=THRESHOLD_2D, min_size=5)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp", host="127.0.0.1",
                      dashboard_address=None) as cluster:
        addr = cluster.scheduler_address
        assert addr.startswith("tcp://")
        probe_scheduler(addr, timeout=5)
        (res,) = segment([tmp_path / "a.tif"], tmp_path / "dask", scheduler=addr, **kw)
    assert res.status == "complete", res.error
    segment([tmp_path / "a.tif"], tmp_path / "threads", **kw)
    assert read_output(tmp_path / "dask", "a")["grains"].tobytes() == read_output(tmp_path / "threads", "a")["grains"].tobytes()


# ----------------------------------------------------------------------------- 3. tile-invariant 3D means


def _axis_angle(axis, deg):
    axis = np.asarray(axis, np.float64)
    axis = axis / np.linalg.norm(axis)
    h = np.deg2rad(deg) / 2
    return np.concatenate([[np.cos(h)], np.sin(h) * axis])


class MapNet3D(nn.Module):
    """A 3D "network" that decodes a designed quaternion map from the input intensities (halo 0).

    Intensity ``100 g + t`` means grain ``g`` (0: boundary) at ``base[g] ⊗ rot(axis[g], t°)``; ``lo``/``hi`` of
    the volume are given so that the unit normalization can be undone. Element-wise, so every tiling
    sees identical maps and only the engine's statistics can differ.
    """

    ndim, k, total_stride, halo = 3, 24, 1, 0
    orientation_encoding, normalization = "quaternion", "unit"
    config = {"arch": "mapnet3d"}

    def __init__(self, base, axes, lo, hi):
        super().__init__()
        self.register_buffer("base", torch.tensor(np.asarray(base), dtype=torch.float64))
        self.register_buffer("axes", torch.tensor(np.asarray(axes), dtype=torch.float64))
        self.lo, self.hi = float(lo), float(hi)

    def forward(self, x):
        raw = x.double() * (self.hi - self.lo) + self.lo
        g = torch.clamp(torch.round(raw / 100), 0, len(self.base) - 1).long()[:, 0]
        t = torch.deg2rad(raw[:, 0] - 100 * g) / 2
        ax = self.axes[g]  # (B, z, y, x, 3)
        r = torch.cat([torch.cos(t)[..., None], torch.sin(t)[..., None] * ax], -1)
        b = self.base[g]
        w1, v1 = b[..., :1], b[..., 1:]
        w2, v2 = r[..., :1], r[..., 1:]
        q = torch.cat([w1 * w2 - (v1 * v2).sum(-1, keepdim=True), w1 * v2 + w2 * v1 + torch.cross(v1, v2, dim=-1)], -1)
        logit = torch.where(g == 0, 20.0, -20.0).double()[:, None]
        return torch.cat([logit, q.movedim(-1, 1)], 1).float()


def _designed_volume(seed=0):
    """A 40³ volume of 8 box grains (boundary planes between them): half with a few degrees of noise around
    an orientation on the cubic fundamental-zone boundary (45° about z), half with a smooth 60° turn across
    the grain (as network maps turn across a grain) plus noise."""
    rng = np.random.default_rng(seed)
    n = 40
    z, y, x = np.meshgrid(*(np.arange(n),) * 3, indexing="ij")
    cell = (z >= n // 2) * 4 + (y >= n // 2) * 2 + (x >= n // 2) + 1
    boundary = (z == n // 2) | (y == n // 2) | (x == n // 2)
    g = np.where(boundary, 0, cell)
    base = [_axis_angle([0, 0, 1], 0)]
    axes = [[0.0, 0, 1]]
    t = np.zeros((n, n, n))
    for i in range(1, 9):
        if i % 2:  # near the fundamental-zone boundary, a few degrees of noise
            base.append(_axis_angle([0, 0, 1], 45.0))
            axes.append(rng.normal(size=3))
            t = np.where(cell == i, rng.normal(0, 3.0, size=t.shape), t)
        else:  # a 60° turn along x across the grain, noise on top
            base.append(_axis_angle(rng.normal(size=3), rng.uniform(0, 180)))
            axes.append([0.0, 0, 1])
            t = np.where(cell == i, -30 + 60 * (x % (n // 2)) / (n // 2) + rng.normal(0, 2.0, size=t.shape), t)
    t = np.clip(t, -45, 45)
    vol = np.where(g == 0, 0.0, 100.0 * g + t).astype(np.float32)
    return vol, np.array(base), np.array(axes, np.float64)


def _mean_quaternions_csv(path):
    rows = list(csv.DictReader(ln for ln in Path(path).read_text().splitlines() if not ln.startswith("#")))
    q = np.array([[float(r[f"mean_q{c}"]) for c in "wxyz"] for r in rows])
    # Renormalized: the CSV's 6 significant digits leave |q| - 1 ~ 1e-6, which arccos turns into 0.1°.
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def test_3d_mean_orientations_do_not_depend_on_the_tile(tmp_path):
    from micro_sym.models.normalize import intensity_range
    from micro_sym.orientation import misorientation_cubic

    vol, base, axes = _designed_volume()
    zarr.create_array(str(tmp_path / "v.zarr"), data=vol, chunks=(8, 8, 8))
    lo, hi = intensity_range(vol)
    net = as_network(MapNet3D(base, axes, lo, hi))
    kw = dict(model=net, threshold=15.0, min_size=0)
    (one,) = segment([tmp_path / "v.zarr"], tmp_path / "one", block=40, chunk=40, **kw)
    (tiled,) = segment([tmp_path / "v.zarr"], tmp_path / "tiled", block=8, chunk=8, **kw)
    assert one.status == tiled.status == "complete", (one.error, tiled.error)
    assert one.n_blocks == 1 and tiled.n_blocks == 125
    a, b = read_output(tmp_path / "one", "v"), read_output(tmp_path / "tiled", "v")
    np.testing.assert_array_equal(a["orientation"], b["orientation"])  # same maps: only statistics may differ
    np.testing.assert_array_equal(a["grains"], b["grains"])
    n = int(a["grains"].max())
    assert n >= 8  # the eight cells (a noise outlier may stand alone)
    qa, qb = _mean_quaternions_csv(tmp_path / "one" / "v_grains.csv"), _mean_quaternions_csv(tmp_path / "tiled" / "v_grains.csv")
    assert qa.shape == qb.shape == (n, 4) and np.isfinite(qa).all()
    deg = misorientation_cubic(qa, qb)
    assert deg.max() < 0.01, deg


# ----------------------------------------------------------------------------- 4. one-line export errors


def test_export_of_an_exported_file_reexports_or_says_so(tmp_path):
    from micro_sym.deploy.export import export_model, load_deployed

    torch.manual_seed(0)
    m = build_model({"arch": "unet_plain", "widths": [4, 8]}).eval()
    pt = export_model(m, tmp_path / "m.pt")
    code, lines = _cli(["export", pt, "--out", tmp_path / "m.onnx", "--latency-size", 32])
    assert code == 0, lines
    x = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(load_deployed(tmp_path / "m.onnx")(x), m(x), atol=1e-4)
    # TorchScript converts too (its layers are rebuilt from the stored spec).
    code, lines = _cli(["export", pt, "--out", tmp_path / "m.ts", "--latency-size", 32])
    assert code == 0, lines
    code, lines = _cli(["export", tmp_path / "m.ts", "--out", tmp_path / "m2.safetensors", "--latency-size", 32])
    assert code == 0, lines
    with torch.no_grad():
        assert torch.allclose(load_deployed(tmp_path / "m2.safetensors")(x), m(x), atol=1e-4)
    # ONNX holds no torch layers to convert: one line saying what to do.
    code, lines = _cli(["export", tmp_path / "m.onnx", "--out", tmp_path / "m2.ts", "--latency-size", 32])
    assert code == 2 and len(lines) == 1, lines
    assert "already exported (onnx)" in lines[0] and str(tmp_path / "m.onnx") in lines[0]


def test_export_of_the_bundled_3d_model(tmp_path):
    """default-3d is stored exported (plain torch): exporting it converts, instead of a traceback."""
    code, lines = _cli(["export", "default-3d", "--out", tmp_path / "d3.safetensors", "--latency-size", 16])
    assert code == 0, lines
    assert (tmp_path / "d3.safetensors").stat().st_size > 0


@pytest.mark.parametrize("config, key", [({"arch": "unet_plain", "widths": [200_000, 400_000]}, "widths"),
                                         ({"arch": "unet_equi", "widths": [2, 4, 8, 16, 32, 64, 128, 256, 512, 1024,
                                                                            2048, 4096, 8192, 16384]}, "widths"),
                                         ({"arch": "gcnn3d", "width": 200_000}, "width"),
                                         ({"arch": "gcnn3d", "levels": 40}, "levels")])
def test_absurd_model_sizes_are_refused_before_building(tmp_path, config, key):
    f = tmp_path / "huge.pt"
    torch.save({"config": config, "state_dict": {}, "meta": {}}, f)
    t0 = time.perf_counter()
    code, lines = _cli(["export", f, "--out", tmp_path / "x.onnx"])
    assert code == 2 and len(lines) == 1, lines
    assert str(f) in lines[0] and f"'{key}'" in lines[0], lines
    assert time.perf_counter() - t0 < 10


def test_bundled_model_sizes_pass_the_size_check():
    from micro_sym.models.registry import complete_config

    complete_config({"arch": "unet_plain"})
    complete_config({"arch": "unet_equi", "widths": [8, 16, 32, 64]})


# ----------------------------------------------------------------------------- 5. foreign files, --overwrite, names


def test_foreign_grain_table_is_not_overwritten(tmp_path, model_file):
    tifffile.imwrite(tmp_path / "a.tif", smooth_image((64, 64), seed=5))
    out = tmp_path / "out"
    out.mkdir()
    (out / "a_grains.csv").write_text("my own notes\n")
    args = ["segment", tmp_path / "a.tif", "--out", out, "--model", model_file, "--threshold", THRESHOLD_2D]
    code, lines = _cli(args)
    assert code == 2 and len(lines) == 1, lines
    assert str(out / "a_grains.csv") in lines[0] and "--overwrite" in lines[0]
    assert (out / "a_grains.csv").read_text() == "my own notes\n"
    code, lines = _cli(args + ["--overwrite"])
    assert code == 0, lines
    assert (out / "a_grains.csv").read_text().startswith(("grain", "#"))


def test_refused_rerun_says_how_to_start_afresh(tmp_path, model_file):
    tifffile.imwrite(tmp_path / "a.tif", smooth_image((64, 64), seed=6))
    out = tmp_path / "out"
    kw = dict(model=str(model_file), block=32, chunk=32, min_size=5)
    (first,) = segment([tmp_path / "a.tif"], out, threshold=THRESHOLD_2D, **kw)
    assert first.status == "complete"
    (other,) = segment([tmp_path / "a.tif"], out, threshold=THRESHOLD_2D * 2, **kw)
    assert other.status == "failed" and "threshold" in other.error and "--overwrite" in other.error
    (fresh,) = segment([tmp_path / "a.tif"], out, threshold=THRESHOLD_2D * 2, overwrite=True, **kw)
    assert fresh.status == "complete" and fresh.blocks_run == fresh.n_blocks
    segment([tmp_path / "a.tif"], tmp_path / "solo", threshold=THRESHOLD_2D * 2, **kw)
    assert (out / "a_grains.csv").read_bytes() == (tmp_path / "solo" / "a_grains.csv").read_bytes()
    assert read_output(out, "a")["grains"].tobytes() == read_output(tmp_path / "solo", "a")["grains"].tobytes()


def test_inputs_with_the_same_name_refuse_the_batch(tmp_path, model_file):
    (tmp_path / "d1").mkdir()
    (tmp_path / "d2").mkdir()
    tifffile.imwrite(tmp_path / "d1" / "a.tif", smooth_image((32, 32), seed=1))
    zarr.create_array(str(tmp_path / "d2" / "a.zarr"), data=smooth_image((32, 32), seed=2), chunks=(32, 32))
    code, lines = _cli(["segment", tmp_path / "d1" / "a.tif", tmp_path / "d2" / "a.zarr", "--out", tmp_path / "out",
                        "--model", model_file])
    assert code == 2 and len(lines) == 1, lines
    assert str(tmp_path / "d1" / "a.tif") in lines[0] and str(tmp_path / "d2" / "a.zarr") in lines[0]
    assert not (tmp_path / "out" / "a.zarr").exists()


def test_overwrite_never_deletes_the_input(tmp_path, model_file):
    out = tmp_path / "out"
    out.mkdir()
    zarr.create_array(str(out / "a.zarr"), data=smooth_image((32, 32), seed=3), chunks=(32, 32))
    (res,) = segment([out / "a.zarr"], out, model=str(model_file), overwrite=True)
    assert res.status == "failed" and "would delete this input" in res.error and "--out" in res.error
    assert zarr.open_array(str(out / "a.zarr"), mode="r").shape == (32, 32)


def test_a_batch_of_micrographs_and_volumes_runs_each_with_its_method(tmp_path):
    """Without --model, micrographs get auto's choice and volumes the bundled 3D network, in one batch."""
    root = Path(__file__).resolve().parents[2] / "sample_data"
    tifffile.imwrite(tmp_path / "img.tif", tifffile.imread(root / "micrographs" / "images" / "sample_000.tif")[:128, :128])
    tifffile.imwrite(tmp_path / "vol.tif", tifffile.imread(root / "volume" / "images" / "sample_000.tif")[:24, :24, :24])
    results = segment([tmp_path / "img.tif", tmp_path / "vol.tif"], tmp_path / "out")
    assert [Path(r.input).name for r in results] == ["img.tif", "vol.tif"]
    assert all(r.status == "complete" for r in results), [r.error for r in results]
    assert read_output(tmp_path / "out", "vol")["orientation"].shape == (4, 24, 24, 24)

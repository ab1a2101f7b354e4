"""Streamed (block-wise) segmentation against whole-image segmentation, and resume after a kill.

Three checks of the block engine (``micro_sym.inference.segment``) on the bundled sample data, the
figures that the engine tests (tests/inference/test_tiling.py, test_inference.py) assert on small
inputs:

* **tiled vs whole**: default-2d on ``sample_000`` of the sample micrographs (512², blocks 128²,
  chunks 64²) against ``segment_image`` on the whole image, and default-3d on a 32 × 48 × 48 crop of
  the sample volume (blocks and chunks 16³) against the whole crop's grains from its harmonic field
  (``micro_sym.grains.field``): largest boundary-probability difference, largest orientation
  difference (degrees, 2D; 1 − |q·q'| of the grains' mean orientations in 3D), grains identical;
* **resume after a kill**: default-2d on ``sample_000`` (16 blocks) in a subprocess killed hard
  (``os._exit``) after the 5th block of the maps pass and, separately, of the grains pass; the
  rerun resumes and its outputs (boundary, orientation, grains arrays and the grain CSV) are compared
  byte for byte with a clean run; blocks run again by the rerun are counted;
* **classical method, streamed vs whole image**: ``micro-sym segment --method classical``
  (block-wise, no boundary gap closing) and ``micro-sym classical`` (whole image) on ``sample_000``,
  run as CLI commands: grain counts and grain F1 against the sample's true grains.

Prints a summary and writes ``bench/results/engine_checks.json``. About a minute on 2 cores.

    python bench/bench_engine_checks.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import tifffile
from _common import RESULTS, ROOT, machine_info, write_json

warnings.filterwarnings("ignore", message=".*py3nj.*")

MICROGRAPH = ROOT / "sample_data" / "micrographs" / "images" / "sample_000.tif"
VOLUME = ROOT / "sample_data" / "volume" / "images" / "sample_000.tif"
BLOCK_2D, CHUNK_2D = 128, 64
KILL_AFTER = 5  # blocks of the killed pass written before the kill

CRASH = """
import os, sys
sys.path.insert(0, {root!r})
from micro_sym.inference import segment
n = {{"k": 0}}
def crash(stage, block_id):
    if stage == {stage!r}:
        n["k"] += 1
        if n["k"] == {kill_after}:
            os._exit(3)  # a hard kill: no cleanup, no exception handling
segment([sys.argv[1]], sys.argv[2], model="default-2d", block={block}, chunk={chunk}, workers=1, on_block=crash)
"""


def read_output(out: Path, name: str) -> dict:
    import zarr

    from micro_sym.io.images import output_array

    g = zarr.open_group(str(out / f"{name}.zarr"), mode="r")
    return {k: output_array(g, k)[:] for k in ("boundary", "orientation", "grains")}


def tiled_vs_whole(tmp: Path) -> dict:
    import zarr

    from micro_sym.grains.field import grain_orientations, paint
    from micro_sym.grains.rules import grains_by_rule, network_rule
    from micro_sym.inference import as_network, segment
    from micro_sym.inference.tiles import predict_raw, rule_maps
    from micro_sym.inference.whole_image import DEFAULT_MIN_SIZE
    from micro_sym.inference.whole_image import segment_image
    from micro_sym.models import load_model

    img = tifffile.imread(MICROGRAPH)
    model = load_model("default-2d", export=True)
    whole = segment_image(model, img)
    (res,) = segment([MICROGRAPH], tmp / "tiled2d", model=as_network(model, name="default-2d"), block=BLOCK_2D,
                     chunk=CHUNK_2D)
    out = read_output(tmp / "tiled2d", MICROGRAPH.stem)
    d = np.abs(out["orientation"] - whole["orientation"])
    r2 = {"model": "default-2d", "input": "sample_data/micrographs/images/sample_000.tif", "shape": list(img.shape),
          "block": BLOCK_2D, "chunk": CHUNK_2D, "status": res.status, "blocks": res.n_blocks,
          "boundary_max_abs_difference": float(np.abs(out["boundary"] - whole["boundary"]).max()),
          "orientation_max_difference_deg": float(np.minimum(d, 90 - d).max()),
          "grains": int(whole["grains"].max()), "grains_identical": bool(np.array_equal(out["grains"], whole["grains"]))}

    vol = tifffile.imread(VOLUME)[:32, :48, :48]
    zarr.create_array(str(tmp / "v.zarr"), data=vol, chunks=(16, 16, 16))
    net = as_network(load_model("default-3d"), name="default-3d")
    ref = rule_maps(net, predict_raw(net, vol))  # the whole crop: unit harmonic fields, grains, painted means
    grains = grains_by_rule(ref["orientation"], ref["boundary"], network_rule(5.0, 3), symmetry="cubic",
                            min_size=DEFAULT_MIN_SIZE)
    painted = paint(grains, grain_orientations(ref["orientation"], grains, net.grain_field))
    (res,) = segment([tmp / "v.zarr"], tmp / "tiled3d", model=net, block=16, chunk=16)
    out = read_output(tmp / "tiled3d", "v")
    in_grain = grains > 0
    dot = np.abs((out["orientation"] * painted).sum(0))[in_grain]
    r3 = {"model": "default-3d", "input": "sample_data/volume/images/sample_000.tif[:32, :48, :48]",
          "shape": list(vol.shape), "block": 16, "chunk": 16, "status": res.status, "blocks": res.n_blocks,
          "boundary_max_abs_difference": float(np.abs(out["boundary"] - ref["boundary"]).max()),
          "grains": int(grains.max()), "grains_identical": bool(np.array_equal(out["grains"], grains)),
          "orientation_max_one_minus_dot": float((1 - dot).max())}
    return {"2d": r2, "3d": r3}


def resume_after_kill(tmp: Path) -> dict:
    from micro_sym.inference import segment

    (clean,) = segment([MICROGRAPH], tmp / "clean", model="default-2d", block=BLOCK_2D, chunk=CHUNK_2D, workers=1)
    ref = read_output(tmp / "clean", MICROGRAPH.stem)
    ref_csv = (tmp / "clean" / f"{MICROGRAPH.stem}_grains.csv").read_bytes()
    rows = []
    for stage in ("maps", "grains"):
        out = tmp / f"killed_{stage}"
        script = tmp / "crash.py"
        script.write_text(textwrap.dedent(CRASH.format(root=str(ROOT), stage=stage, kill_after=KILL_AFTER,
                                                       block=BLOCK_2D, chunk=CHUNK_2D)))
        p = subprocess.run([sys.executable, str(script), str(MICROGRAPH), str(out)], capture_output=True, text=True,
                           check=False)
        rerun = []
        (res,) = segment([MICROGRAPH], out, model="default-2d", block=BLOCK_2D, chunk=CHUNK_2D, workers=1,
                         on_block=lambda s, b, rerun=rerun: rerun.append(s))
        got = read_output(out, MICROGRAPH.stem)
        rows.append({"killed_in": stage, "killed_after_blocks": KILL_AFTER, "kill_exit_code": p.returncode,
                     "rerun_status": res.status, "blocks": clean.n_blocks,
                     "rerun_blocks": {s: rerun.count(s) for s in ("maps", "grains")},
                     "arrays_byte_identical": all(got[k].tobytes() == ref[k].tobytes() for k in ref),
                     "csv_byte_identical": (out / f"{MICROGRAPH.stem}_grains.csv").read_bytes() == ref_csv})
    return {"model": "default-2d", "input": "sample_data/micrographs/images/sample_000.tif", "block": BLOCK_2D,
            "chunk": CHUNK_2D, "runs": rows,
            "all_byte_identical": all(r["arrays_byte_identical"] and r["csv_byte_identical"] for r in rows)}


def classical_streamed_vs_whole(tmp: Path) -> dict:
    from micro_sym.io.datasets import LabeledDataset
    from micro_sym.metrics import grain_f1

    truth = LabeledDataset(ROOT / "sample_data" / "micrographs")[MICROGRAPH.stem].grains
    cli = str(Path(sys.executable).with_name("micro-sym"))
    cli = [cli] if os.path.exists(cli) else [sys.executable, "-m", "micro_sym.cli"]
    commands = {"streamed": [*cli, "segment", str(MICROGRAPH), "--out", str(tmp / "cl_streamed"), "--method", "classical"],
                "whole": [*cli, "classical", str(MICROGRAPH), "--out", str(tmp / "cl_whole")]}
    out = {"input": "sample_data/micrographs/images/sample_000.tif", "true_grains": len(np.unique(truth[truth > 0]))}
    for name, cmd in commands.items():
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, cwd=str(ROOT))
        g = read_output(Path(cmd[cmd.index("--out") + 1]), MICROGRAPH.stem)["grains"]
        r = grain_f1(g, truth)
        out[name] = {"command": " ".join(["micro-sym", *cmd[len(cli):]]).replace(str(tmp), "OUT").replace(str(ROOT) + "/", ""),
                     "grains": len(np.unique(g[g > 0])), "grain_f1": float(r["f1"]),
                     "seconds": round(time.perf_counter() - t, 2)}
    return out


def main():

    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="engine_checks_"))
    try:
        result = {"benchmark": "block engine vs whole image, resume after a kill, classical streamed vs whole"}
        result["tiled_vs_whole"] = tiled_vs_whole(tmp)
        for k, r in result["tiled_vs_whole"].items():
            print(f"tiled vs whole {k}: {r}")
        result["resume_after_kill"] = resume_after_kill(tmp)
        for r in result["resume_after_kill"]["runs"]:
            print(f"resume: {r}")
        result["classical_streamed_vs_whole"] = c = classical_streamed_vs_whole(tmp)
        print(f"classical on sample_000 ({c['true_grains']} true grains): streamed {c['streamed']['grains']} grains "
              f"(F1 {c['streamed']['grain_f1']:.3f}), whole {c['whole']['grains']} (F1 {c['whole']['grain_f1']:.3f})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    result["machine"] = machine_info(with_torch=True)
    print(f"wrote {write_json(RESULTS / 'engine_checks.json', result)}")


if __name__ == "__main__":
    main()

"""The bundled 3D network's forward on one engine tile: time and memory as written, with split decoder
convolutions, and in z slabs (issue 27).

Usage::

    python bench/bench_forward3d.py [--size 156] [--model default-3d] [--precisions fp32 bf16 int8] [--out FILE]

One tile of ``size³`` voxels (the engine's interior tile for 128³ blocks: block + 2 × halo 14) of the
bundled sample volume, mirrored, runs through the network in a *fresh subprocess* per setting, fp32
and bf16, 2 threads, as ``Network.forward`` runs it in the engine (channels-last torch):

- ``as written``: the deployed U-Net module itself (the runtime before the split decoder);
- ``split``: the runtime's :mod:`micro_sym.deploy.subpixel` module (split decoder convolutions,
  fused convolution + ReLU), one forward over the tile;
- ``split, slabs``: the same with the default activation budget (:mod:`micro_sym.inference.forward_slabs`).

Reported per setting: seconds (best of 3 after a warm-up), the process's peak RSS above its RSS
before the first forward (the forward's memory: activations, the output and its float32 copy), the
slabs, and the largest difference from the ``as written`` outputs. ``int8`` (:mod:`micro_sym.deploy.int8`,
scales calibrated on the tile) has no ``as written`` form: its ``split`` and ``split, slabs`` are the
int8 network (its decoder split into skip and upsampled parts), compared with float32 as written.
Writes bench/results/forward3d.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
from _common import RESULTS, ROOT, best_time, mirrored, write_json

SETTINGS = ("as written", "split", "split, slabs")


def child(size: int, model: str, precision: str, setting: str, reference: str | None) -> None:
    """Run in a fresh process: one setting, print JSON."""
    import dataclasses

    import psutil
    import tifffile
    import torch

    from micro_sym.deploy.runtime import torch_threads
    from micro_sym.inference.network import load_network

    torch.set_num_threads(2)
    net = dataclasses.replace(load_network(model), precision=precision)
    if setting != "split, slabs":
        net = dataclasses.replace(net, forward_memory=1 << 50)  # one forward over the tile
    cell = tifffile.imread(ROOT / "sample_data" / "volume" / "images" / "sample_000.tif").astype(np.float32)
    value_range = (float(cell.min()), float(cell.max()))
    x = net.normalize(mirrored(cell, size), *value_range)[None]
    if precision == "int8":  # the tile's own scales, as the engine calibrates an input
        from micro_sym.inference.int8_ranges import int8_ranges

        net = dataclasses.replace(net, int8_ranges=int8_ranges(net, mirrored(cell, size), value_range))
    if setting == "as written":
        import copy

        module = copy.deepcopy(net.module.net).eval().to(memory_format=torch.channels_last_3d)

        def run():
            with torch.inference_mode(), torch_threads(2), torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
                t = torch.from_numpy(x)[:, None].contiguous(memory_format=torch.channels_last_3d)
                return module(t).float().contiguous().numpy()
    else:
        def run():
            return net.forward(x)

    before = psutil.Process().memory_info().rss
    seconds = best_time(run, 3)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    y = run()
    result = {"setting": setting, "precision": precision, "seconds": seconds,
              "forward_memory_mb": (peak - before) / 2**20, "slabs": len(net.slab_edges(x.shape[1:])) - 1}
    if reference:
        result["max_abs_diff"] = float(np.abs(y - np.load(reference)).max())
    else:
        np.save(os.environ["FORWARD3D_REFERENCE"], y)
    print(json.dumps(result))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=156)
    ap.add_argument("--model", default="default-3d")
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"],
                    help="int8 runs the runtime settings only, compared with fp32 as written (run fp32 first)")
    ap.add_argument("--out", type=Path, default=RESULTS / "forward3d.json")
    ap.add_argument("--child", nargs=5, metavar=("SIZE", "MODEL", "PRECISION", "SETTING", "REFERENCE"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        size, model, precision, setting, reference = args.child
        child(int(size), model, precision, setting, reference if reference != "-" else None)
        return
    import tempfile

    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for precision in args.precisions:
            # int8 has no "as written" form: it is compared with float32's.
            reference = str(Path(tmp) / f"{'fp32' if precision == 'int8' else precision}.npy")
            for setting in SETTINGS[1:] if precision == "int8" else SETTINGS:
                env = dict(os.environ, FORWARD3D_REFERENCE=reference)
                ref_arg = "-" if setting == "as written" else reference
                if precision == "int8" and not Path(reference).exists():  # no float32 run to compare with
                    ref_arg, env["FORWARD3D_REFERENCE"] = "-", str(Path(tmp) / "int8.npy")
                out = subprocess.run([sys.executable, __file__, "--child", str(args.size), args.model, precision, setting,
                                      ref_arg], capture_output=True, text=True, env=env, check=True).stdout
                r = json.loads(out.strip().splitlines()[-1])
                runs.append(r)
                print(f"{args.size}³ {precision} {setting:13s}: {r['seconds']:.2f} s, forward memory "
                      f"{r['forward_memory_mb']:.0f} MB, {r['slabs']} slab(s)"
                      + (f", max |Δ| vs as written {r['max_abs_diff']:.2g}" if "max_abs_diff" in r else ""), flush=True)
    write_json(args.out, {"machine": {"cpu": platform.processor() or platform.machine(), "threads": 2},
                          "tile": [args.size] * 3, "model": args.model, "runs": runs})


if __name__ == "__main__":
    main()

"""CPU backends for the exported networks: torch as it is, channels-last torch, onnxruntime.

    python bench/bench_runtime.py [--threads 2] [--repeats 3] [--size2d 1024] [--size3d 64]

For each bundled network (exported plain torch) and each backend of ``micro_sym.deploy.runtime``:
seconds per forward of one ``size2d``² image / one ``size3d``³ volume (batch 1, best of ``--repeats``
after one warm-up; the machine is shared, so the best run is the least disturbed one), megapixels
(megavoxels) per second, and the largest difference from plain torch relative to the output scale.
Prints a table and writes ``bench/results/runtime.json``. The product uses the backend ``auto``
picks (printed).
"""

from __future__ import annotations

import argparse
import warnings

import torch

from _common import RESULTS, best_time, machine_info, write_json

warnings.filterwarnings("ignore", message=".*py3nj.*")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--size2d", type=int, default=1024)
    ap.add_argument("--size3d", type=int, default=64)
    ap.add_argument("--models", nargs="+", default=["default-2d", "robust-2d", "default-3d"])
    ap.add_argument("--out", default=str(RESULTS / "runtime.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from micro_sym.deploy.runtime import CpuRunner, chosen_backend
    from micro_sym.models import load_model

    rows = []
    for name in args.models:
        model = load_model(name, export=True)
        module = getattr(model, "net", model)  # a deployed file keeps its plain-torch network in .net
        ndim = int(model.ndim)
        side = args.size2d if ndim == 2 else args.size3d
        x = torch.randn((1, 1) + (side,) * ndim, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            ref = module(x)
        scale = max(1.0, ref.abs().max().item())
        for backend in ("torch", "channels-last", "onnxruntime"):
            runner = CpuRunner(module, ndim, backend)
            with torch.no_grad():
                err = (runner(x) - ref).abs().max().item() / scale
                t = best_time(lambda: runner(x), args.repeats)
            rows.append({"model": name, "ndim": ndim, "input": [side] * ndim, "backend": backend,
                         "auto": backend == chosen_backend(ndim, "auto"), "seconds": round(t, 4),
                         "mega_per_s": round(side ** ndim / t / 1e6, 3), "rel_err_vs_torch": err})
    result = {"threads": args.threads, "machine": machine_info(with_torch=True), "rows": rows}
    print(f"{'model':<12}{'input':>10}{'backend':>15}{'seconds':>9}{'M/s':>8}{'rel.err':>10}")
    for r in rows:
        mark = " <- auto" if r["auto"] else ""
        print(f"{r['model']:<12}{'x'.join(map(str, r['input'])):>10}{r['backend']:>15}{r['seconds']:>9.3f}"
              f"{r['mega_per_s']:>8.2f}{r['rel_err_vs_torch']:>10.1e}{mark}")
    out = write_json(args.out, result)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

"""Benchmark the 3D model variants: voxels/s, escnn module vs exported plain torch, at equal width.

    python bench/bench_models3d.py                  # CPU (small sizes), and CUDA when available
    python bench/bench_models3d.py --size 64 --width 48 --batch 2 --cuda-size 96 --cuda-batch 4

Every variant has the same U-Net topology and the same number of channels per level (``width``), so
the exported models should cost about the same as the plain baseline. "module" rows time the
unexported models in eval mode: escnn caches its expanded filters in eval mode, the point-group
models expand their filters on every call. On CUDA, fp32 and bf16/fp16 autocast are timed.
Prints a table and writes ``bench/results/models3d.json``.
"""

from __future__ import annotations

import argparse
import platform
import warnings

import torch

from _common import RESULTS, best_time, write_json

warnings.filterwarnings("ignore")


def _time(fn, x, reps, device, autocast=None):
    def call():
        with torch.no_grad():
            if autocast is not None:
                with torch.autocast(device_type=device, dtype=autocast):
                    fn(x)
            else:
                fn(x)
        if device == "cuda":
            torch.cuda.synchronize()

    return best_time(call, reps)  # the untimed first call: cuDNN autotune, escnn caches


def run(device, size, batch, width, reps, variants, levels):
    from micro_sym.models.gcnn3d import build_model3d

    rows = []
    x = torch.randn(batch, 1, size, size, size, device=device)
    nvox = batch * size**3
    for name, cfg in variants.items():
        cfg = {**cfg, "width": width, "levels": levels}
        m = build_model3d(cfg, measure_halo=False).to(device)
        m.train()
        with torch.no_grad():
            m(x[:1, :, :16, :16, :16])  # non-trivial batch-norm statistics
        m.eval()
        exported = m.export().to(device).eval()
        params = sum(p.numel() for p in m.parameters())
        for mode, net in (("escnn/module", m), ("exported", exported)):
            precisions = [("fp32", None)]
            if device == "cuda":
                precisions += [("bf16", torch.bfloat16), ("fp16", torch.float16)]
            for prec, ac in precisions:
                try:
                    t = _time(net, x, reps, device, ac)
                    rows.append({"variant": name, "mode": mode, "device": device, "precision": prec, "size": size,
                                 "batch": batch, "width": width, "params": params, "seconds": t,
                                 "voxels_per_s": nvox / t})
                except RuntimeError as err:  # e.g. out of memory or an op without half support
                    rows.append({"variant": name, "mode": mode, "device": device, "precision": prec,
                                 "error": str(err).splitlines()[0]})
        del m, exported
        if device == "cuda":
            torch.cuda.empty_cache()
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=24, help="CPU cube edge (voxels)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--width", type=int, default=24, help="channels at level 0 for every variant")
    ap.add_argument("--levels", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (shared machines: keep small)")
    ap.add_argument("--cuda-size", type=int, default=96)
    ap.add_argument("--cuda-batch", type=int, default=4)
    ap.add_argument("--cuda-width", type=int, default=48)
    ap.add_argument("--out", default=str(RESULTS / "models3d.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    variants = {
        "octa (escnn, O)": {"variant": "octa"},
        "so3 (escnn, L=2 gated)": {"variant": "so3", "so3_max_frequency": 2},
        "pointgroup O": {"variant": "pointgroup", "group": "O"},
        "pointgroup T": {"variant": "pointgroup", "group": "T"},
        "plain": {"variant": "plain"},
    }
    rows = run("cpu", args.size, args.batch, args.width, args.reps, variants, args.levels)
    if torch.cuda.is_available():
        rows += run("cuda", args.cuda_size, args.cuda_batch, args.cuda_width, args.reps, variants, args.levels)
    print(f"{'variant':<24} {'mode':<13} {'dev':<5} {'prec':<5} {'size':>5} {'width':>5} {'params':>8} {'Mvox/s':>8}")
    for r in rows:
        if "error" in r:
            print(f"{r['variant']:<24} {r['mode']:<13} {r['device']:<5} {r['precision']:<5} error: {r['error']}")
            continue
        print(f"{r['variant']:<24} {r['mode']:<13} {r['device']:<5} {r['precision']:<5} {r['size']:>5} {r['width']:>5} "
              f"{r['params']:>8} {r['voxels_per_s'] / 1e6:>8.3f}")
    out = {"machine": {"platform": platform.platform(), "torch": torch.__version__, "cpu_threads": args.threads,
                       "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
           "args": vars(args), "rows": rows}
    write_json(args.out, out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Throughput of the 2D segmenter: exported (plain torch) vs escnn, network alone and whole pipeline.

    python bench/bench_model2d.py [--model default-2d] [--size 1024] [--threads 2] [--repeats 3]

Prints a table and writes ``bench/results/model2d.json``. Megapixels per second of input image, batch 1,
CPU, ``torch.inference_mode``; the best of ``--repeats`` runs after one warm-up (the machine is shared,
so the best run is the least disturbed one). The input is a synthetic lattice micrograph (default
generator config), so the grain step sees realistic maps; the classical filter-bank method runs on the
same image for comparison. ``network, exported`` is the plain-torch module; the row after it runs
it the way the product does (``micro_sym.deploy.runtime``: onnxruntime unless
``MICRO_SYM_CPU_BACKEND`` says otherwise), as do ``predict_image`` and ``segment_image``. The
held-out accuracy stored with the weights is copied into the JSON so one file describes the shipped
model.
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import torch

from _common import RESULTS, best_time, machine_info, write_json

warnings.filterwarnings("ignore", message=".*py3nj.*")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default-2d")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(RESULTS / "model2d.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from micro_sym.classical import classical_segment
    from micro_sym.deploy.runtime import chosen_backend, cpu_forward
    from micro_sym.models import load_model
    from micro_sym.inference.whole_image import predict_image, segment_image
    from micro_sym.synth import Synth2DConfig, synth_2d

    model = load_model(args.model)
    exported = model.export()
    n = args.size
    image = synth_2d(Synth2DConfig.model_validate({"size": (n, n)}), seed=4242).image.astype(np.float32)
    mp = n * n / 1e6
    x = torch.from_numpy((image[None, None] - image.mean()) / image.std())

    rows = []

    def net(m):
        with torch.inference_mode():
            m(x)

    def runtime_net():
        with torch.inference_mode():
            cpu_forward(exported, 2, x)

    for name, fn in [
        ("network, exported", lambda: net(exported)),
        (f"network, exported, {chosen_backend(2)}", runtime_net),
        ("network, escnn", lambda: net(model)),
        ("predict_image, exported", lambda: predict_image(exported, image)),
        ("segment_image, exported", lambda: segment_image(exported, image)),
        ("classical_segment", lambda: classical_segment(image)),
    ]:
        t = best_time(fn, args.repeats if "escnn" not in name else max(1, args.repeats - 1))
        rows.append({"what": name, "seconds": round(t, 4), "mpix_per_s": round(mp / t, 3)})

    n_params = sum(p.numel() for p in model.parameters())
    result = {
        "model": args.model,
        "model_path": model.meta.get("path"),
        "config": model.config,
        "params": n_params,
        "halo": model.halo,
        "total_stride": model.total_stride,
        "image_size": [n, n],
        "threads": args.threads,
        "machine": machine_info(with_torch=True),
        "rows": rows,
        "heldout_metrics": model.meta.get("metrics", {}),
    }
    print(f"{args.model}: {n_params} parameters, halo {model.halo}, {n}x{n} input, {args.threads} threads")
    print(f"{'':<34}{'seconds':>9}{'MP/s':>9}")
    for r in rows:
        print(f"{r['what']:<34}{r['seconds']:>9.3f}{r['mpix_per_s']:>9.2f}")
    out = write_json(args.out, result)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

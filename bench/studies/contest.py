"""Accuracy contest: the classical filter-bank method vs the bundled network(s) on the same images.

Conditions (held-out synthetic micrographs from ``micro_sym.synth``, seeds disjoint from training's
low seeds by an offset):

* ``dose_2`` ... ``dose_100``: counts per pixel, medium grains (80 px), default imaging;
* ``grains_small`` / ``grains_medium`` / ``grains_large``: 40 / 80 / 160 px grains at 100 counts/px;
* ``blur``: PSF sigma 2.5 px (default 1.0) at 100 counts/px;
* ``inverted``: bright-field contrast at 100 counts/px;
* ``scan_distortion``: jitter 0.5 px, drift 3 px, shear 0.03 at 100 counts/px;
* ``ebsd_dose_*``: grain shapes of the real EBSD map (DefDAP's ``testDataEBSD``), its grains by
  ``reconstruct_grains`` on the quaternions (cubic, 5°), each EBSD point blown up to ``--ebsd-scale``
  pixels, rendered as a square lattice with an in-plane angle per grain derived from its mean
  orientation (the in-plane angle of the cube axis closest to the map plane).

(The images come from ``bench/_common.py``, which ``bench/provenance/calibrate_method_choice.py`` draws
from too, on other seeds.)

Methods: ``classical`` (whole-image filter bank with boundary closing), ``network:NAME`` for each
bundled network, and ``auto``, the product's default (:func:`micro_sym.inference.method_choice.auto_segment`:
per image, classical below the calibrated fringe SNR, else robust-2d). Speed is seconds per megapixel
over all images, each method's first call (warm-up) not counted.

Each method is scored with ``micro_sym.metrics`` (boundary F1 at 2 px, grain F1 at IoU > 0.5, median
orientation error away from boundaries), counts pooled over the images of a condition. Writes
``bench/results/contest.json`` and ``bench/results/contest.png`` (metrics vs dose per method).

Usage::

    python bench/studies/contest.py                       # quick: 384² images, 2 per condition
    python bench/studies/contest.py --size 1024 --n 8     # the fuller run
    python bench/studies/contest.py --networks robust-2d runs/prune/robust_r30.pt   # chosen networks only
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/, for _common

from _common import (  # noqa: E402
    DOSES, RESULTS, conditions, ebsd_samples, load_networks, nan_to_none, synthetic_samples, write_json)
from micro_sym.metrics import aggregate, evaluate_sample  # noqa: E402

SEED_OFFSET = 900_000  # held out: training/validation sets use small seeds


def run_method(method, model, image, lattice="square"):
    if method == "classical":
        from micro_sym.classical import classical_segment

        return classical_segment(image, lattice=lattice)
    if method == "auto":
        from micro_sym.inference.method_choice import auto_segment

        return auto_segment(image, model=model)
    from micro_sym.inference.whole_image import segment_image

    return segment_image(model, image)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=384, help="side of each synthetic image (px)")
    ap.add_argument("--n", type=int, default=2, help="images per condition")
    ap.add_argument("--ebsd-scale", type=int, default=3, help="image pixels per EBSD point")
    ap.add_argument("--ebsd-size", type=int, default=512, help="crop of the rendered EBSD image (0 = all)")
    ap.add_argument("--ebsd-doses", type=str, default="5,100", help="doses for the EBSD-morphology images")
    ap.add_argument("--skip-network", action="store_true", help="score the classical method only")
    ap.add_argument("--networks", nargs="+", default=None,
                    help="these square 2D networks (bundled names or model files) instead of every bundled one")
    ap.add_argument("--out", type=Path, default=RESULTS / "contest.json")
    args = ap.parse_args(argv)

    methods = {"classical": None}
    if not args.skip_network:
        from micro_sym.inference.method_choice import AUTO_MODEL

        if args.networks:
            from micro_sym.models import load_model

            methods.update({f"network:{name}": load_model(name, export=True) for name in args.networks})
        else:
            methods.update(load_networks())
        if f"network:{AUTO_MODEL}" in methods:  # the product default: classical or this network, per image
            methods["auto"] = methods[f"network:{AUTO_MODEL}"]
    jobs = []
    for ci, (name, ov) in enumerate(conditions(args.size)):
        jobs.append((name, lambda name=name, ov=ov, ci=ci: synthetic_samples(name, ov, args.size, args.n, SEED_OFFSET + 1000 * ci)))
    for d in [int(x) for x in args.ebsd_doses.split(",") if x]:
        jobs.append((f"ebsd_dose_{d}", lambda d=d: ebsd_samples(d, args.n, SEED_OFFSET + 50_000 + d, args.ebsd_scale, args.ebsd_size)))

    results = {m: {} for m in methods}
    timing = {m: [0.0, 0] for m in methods}
    warm = False  # the first call of each method (thread pools, FFT plans, torch) is not timed
    t_all = time.time()
    for cond, make in jobs:
        per = {m: {} for m in methods}
        for sname, image, gt, theta in make():
            if not warm:
                for m, model in methods.items():
                    run_method(m, model, image)
                warm = True
            for m, model in methods.items():
                t = time.perf_counter()
                pred = run_method(m, model, image)
                dt = time.perf_counter() - t
                timing[m][0] += dt
                timing[m][1] += image.size
                per[m][sname] = evaluate_sample(pred, gt, theta, 4)
        for m in methods:
            rep = aggregate(per[m])
            results[m][cond] = rep
            o = rep["overall"]
            print(f"{cond:>18} {m:>22}: boundary F1 {o['boundary_f1']:.3f}  grain F1 {o['grain_f1']:.3f}  "
                  f"median err {o['orientation_median_deg']:.2f}°  grains {o['n_grains_pred']}/{o['n_grains_true']}",
                  flush=True)
    speed = {m: (t / max(n, 1) * 1e6) for m, (t, n) in timing.items()}
    report = {
        "command": "python bench/studies/contest.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "settings": {"size": args.size, "n_per_condition": args.n, "ebsd_scale": args.ebsd_scale,
                     "ebsd_size": args.ebsd_size, "seed_offset": SEED_OFFSET, "lattice": "square", "period_px": 8.0},
        "methods": list(methods),
        "networks_available": len(methods) > 1,
        "seconds_per_megapixel": speed,
        "wall_seconds": time.time() - t_all,
        "results": {m: {c: r["overall"] for c, r in res.items()} for m, res in results.items()},
        "images": {m: {c: r["images"] for c, r in res.items()} for m, res in results.items()},
    }
    write_json(args.out, report, default=nan_to_none)
    plot(report, args.out.with_suffix(".png"))
    print("seconds per megapixel: " + ", ".join(f"{m} {v:.2f}" for m, v in speed.items()))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


def plot(report, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [("boundary_f1", "boundary F1 (2 px)"), ("grain_f1", "grain F1 (IoU > 0.5)"),
               ("orientation_median_deg", "median orientation error (°)")]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, (key, label) in zip(axes, metrics):
        for m, res in report["results"].items():
            ys = [res.get(f"dose_{d}", {}).get(key, np.nan) for d in DOSES]
            (line,) = ax.plot(DOSES, ys, "o-", label=f"{m} (synthetic)")
            eb = sorted((int(c.split("_")[-1]), r[key]) for c, r in res.items() if c.startswith("ebsd_dose_"))
            if eb:
                ax.plot([e[0] for e in eb], [e[1] for e in eb], "s--", color=line.get_color(), label=f"{m} (EBSD shapes)")
        ax.set_xscale("log")
        ax.set_xlabel("dose (counts / pixel)")
        ax.set_title(label)
        ax.grid(alpha=0.3)
        if key != "orientation_median_deg":
            ax.set_ylim(0, 1)
        else:
            ax.set_yscale("log")  # failed networks reach 10-20°, the classical method 0.1°
    axes[0].legend(fontsize=8)
    s = report["settings"]
    fig.suptitle(f"micro_sym contest: {s['size']}² px, {s['n_per_condition']} images per condition, period 8 px")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()

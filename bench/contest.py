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

Methods: ``classical`` (whole-image filter bank with boundary closing), ``network:NAME`` for each
bundled network, and ``auto``, the product's default (:func:`micro_sym.inference.method_choice.auto_segment`:
per image, classical below the calibrated fringe SNR, else robust-2d). Speed is seconds per megapixel
over all images, each method's first call (warm-up) not counted.

Each method is scored with ``micro_sym.metrics`` (boundary F1 at 2 px, grain F1 at IoU > 0.5, median
orientation error away from boundaries), counts pooled over the images of a condition. Writes
``bench/results/contest.json`` and ``bench/results/contest.png`` (metrics vs dose per method).

Usage::

    python bench/contest.py                       # quick: 384² images, 2 per condition
    python bench/contest.py --size 1024 --n 8     # the fuller run
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from micro_sym.metrics import aggregate, evaluate_sample  # noqa: E402

EBSD_PATH = ROOT.parent / "shared" / "data" / "defdap_ebsd" / "testDataEBSD.cpr"
SEED_OFFSET = 900_000  # held out: training/validation sets use small seeds
DOSES = (2, 5, 20, 100)


def conditions(size: int):
    """(name, config overrides) of every synthetic condition."""
    base_im = {"dose": 100.0}
    out = [(f"dose_{d}", {"imaging": {"dose": float(d)}}) for d in DOSES]
    for name, gs in (("small", 40.0), ("medium", 80.0), ("large", 160.0)):
        out.append((f"grains_{name}", {"imaging": base_im, "microstructure": {"grain_size": gs}}))
    out.append(("blur", {"imaging": {**base_im, "psf_sigma": 2.5}}))
    out.append(("inverted", {"imaging": {**base_im, "contrast": "bright_field"}}))
    out.append(("scan_distortion", {"imaging": {**base_im, "jitter": 0.5, "drift": 3.0, "shear": 0.03}}))
    return out


def synthetic_samples(name, overrides, size, n, seed0):
    from micro_sym.synth import Synth2DConfig, synth_2d

    cfg = Synth2DConfig.model_validate({"size": (size, size), **overrides})
    for i in range(n):
        s = synth_2d(cfg, seed=seed0 + i)
        yield f"{name}_{i}", s.image, s.grains, s.orientation


def ebsd_ground_truth(scale: int):
    """Grain map and per-grain in-plane square-lattice angles from the real EBSD map."""
    from micro_sym.ebsd import read_ebsd
    from micro_sym.grains import reconstruct_grains
    from micro_sym.orientation import quat_to_matrix

    m = read_ebsd(EBSD_PATH)
    ids = reconstruct_grains(m.quaternions, symmetry="cubic", threshold=5.0, mask=m.mask, min_size=4, small="merge")
    # Unindexed / dropped points: take the nearest grain, so the rendered image is all crystal.
    if (ids == 0).any():
        from scipy import ndimage

        idx = ndimage.distance_transform_edt(ids == 0, return_distances=False, return_indices=True)
        ids = ids[tuple(idx)]
    n = int(ids.max()) + 1
    angles = np.full(n, np.nan)
    q = np.moveaxis(m.quaternions, 0, -1)
    for g in range(1, n):
        sel = np.flatnonzero((ids == g).ravel() & m.mask.ravel())
        if not len(sel):
            angles[g] = 0.0
            continue
        rot = quat_to_matrix(q.reshape(-1, 4)[sel[len(sel) // 2]])  # a representative point of the grain
        # Columns = crystal axes in the sample frame; the one closest to the map plane sets the
        # in-plane square lattice (mod 90° by the cube's 4-fold axes).
        axis = rot[:, int(np.argmin(np.abs(rot[2])))]
        angles[g] = np.degrees(np.arctan2(axis[1], axis[0])) % 90.0
    angles[0] = 0.0
    ids = np.repeat(np.repeat(ids, scale, 0), scale, 1)
    return ids, angles


def ebsd_samples(dose, n, seed0, scale, size):
    from micro_sym.grains import reconstruct_grains
    from micro_sym.synth import Imaging2D, micrograph_from_grains

    ids, angles = ebsd_ground_truth(scale)
    if size:
        ids = ids[: min(size, ids.shape[0]), : min(size, ids.shape[1])]
    theta = angles[ids].astype(np.float32)
    # Ground truth grains of the *image*: neighbours whose in-plane angles are within 5° look like one
    # crystal in a lattice image, so apply the grain rule to the in-plane angle map.
    gt = reconstruct_grains(theta, symmetry="square", threshold=5.0, connectivity=1).astype(np.uint32)
    for i in range(n):
        img = micrograph_from_grains(ids.astype(np.uint32), angles, imaging=Imaging2D(dose=float(dose)),
                                     seed=seed0 + i, lattice="square", period=8.0)
        yield f"ebsd_dose_{dose}_{i}", img, gt, theta


def load_networks():
    """The bundled 2D networks present in this installation, exported."""
    from micro_sym.models import BUNDLED, load_model

    out = {}
    for name in BUNDLED:
        try:
            model = load_model(name, export=True)
            if model.ndim == 2:  # the contest is on micrographs
                out[f"network:{name}"] = model
        except Exception as err:  # noqa: BLE001 - absence of a model is a result, not a crash
            print(f"no bundled network {name}: {type(err).__name__}: {err}", file=sys.stderr)
    return out


def run_method(method, model, image, lattice="square"):
    if method == "classical":
        from micro_sym.classical import classical_segment

        return classical_segment(image, lattice=lattice)
    if method == "auto":
        from micro_sym.inference.method_choice import auto_segment

        return auto_segment(image, model=model)
    from micro_sym.predict import segment_image

    return segment_image(model, image)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=384, help="side of each synthetic image (px)")
    ap.add_argument("--n", type=int, default=2, help="images per condition")
    ap.add_argument("--ebsd-scale", type=int, default=3, help="image pixels per EBSD point")
    ap.add_argument("--ebsd-size", type=int, default=512, help="crop of the rendered EBSD image (0 = all)")
    ap.add_argument("--ebsd-doses", type=str, default="5,100", help="doses for the EBSD-morphology images")
    ap.add_argument("--skip-network", action="store_true", help="score the classical method only")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "contest.json")
    args = ap.parse_args(argv)

    methods = {"classical": None}
    if not args.skip_network:
        from micro_sym.inference.method_choice import AUTO_MODEL

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
        "command": "python bench/contest.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "settings": {"size": args.size, "n_per_condition": args.n, "ebsd_scale": args.ebsd_scale,
                     "ebsd_size": args.ebsd_size, "seed_offset": SEED_OFFSET, "lattice": "square", "period_px": 8.0},
        "methods": list(methods),
        "networks_available": len(methods) > 1,
        "seconds_per_megapixel": speed,
        "wall_seconds": time.time() - t_all,
        "results": {m: {c: r["overall"] for c, r in res.items()} for m, res in results.items()},
        "images": {m: {c: r["images"] for c, r in res.items()} for m, res in results.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=lambda x: None if x != x else x) + "\n")
    plot(report, args.out.with_suffix(".png"))
    print(f"seconds per megapixel: " + ", ".join(f"{m} {v:.2f}" for m, v in speed.items()))
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

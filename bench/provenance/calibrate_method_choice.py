"""Calibration of ``micro-sym segment --method auto``: where does the classical method beat the network?

``--method auto`` measures one number per input before segmenting it, the signal-to-noise ratio of
its lattice fringes (:func:`micro_sym.classical.fringe_snr`: first-ring power over the white shot-noise
floor, dB; it falls with dose and blur), and runs the classical filter bank below
``micro_sym.inference.method_choice.CLASSICAL_BELOW_DB``, the network above. This script is where
that constant comes from. It scores, per image, the classical method and each bundled network on
the conditions of ``bench/studies/contest.py`` (plus 3 counts/px, and the EBSD-morphology images at 2 counts/px),
generated from *calibration* seeds (``CALIBRATION_SEED_OFFSET`` in ``_common``, disjoint from the contest's held-out
seeds and from training's), then picks the threshold that maximizes the mean grain F1 of the auto
choice over these images. Also reported ("hybrid"): the network's boundary map with the filter bank's
orientation map, its orientation error and the grain F1 of the network grain rule on that pair, to
show whether combining them would pay.

Writes ``bench/results/method_choice.json``. Usage::

    python bench/provenance/calibrate_method_choice.py            # 384² images, 3 per condition (≈5 min, 2 cores)
    python bench/provenance/calibrate_method_choice.py --lattice hexagonal   # the same on hexagonal lattices,
                                                                  # atoms-2d-hex: method_choice_hexagonal.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/, for _common

from _common import (  # noqa: E402
    CALIBRATION_SEED_OFFSET, RESULTS, calibration_jobs, load_networks, nan_to_none, write_json)
from micro_sym.classical import classical_segment, fringe_snr  # noqa: E402
from micro_sym.metrics import evaluate_sample  # noqa: E402

TIE = 0.005  # mean grain F1 differences below this count as ties (see best_threshold)


def score(pred, gt, theta, order: int = 4):
    r = evaluate_sample(pred, gt, theta, order)
    return {k: float(r[k]) for k in ("boundary_f1", "grain_f1", "orientation_median_deg")}


def best_threshold(rows, network: str):
    """Threshold (dB) maximizing the mean grain F1 of 'classical below, network at or above'.

    Candidates are the midpoints between consecutive observed SNRs (and just outside their range).
    Differences under ``TIE`` of mean grain F1 are one image tipping either way at this sample size,
    so among the candidates that close to the best, the midpoint of the widest gap wins (the largest
    margin to the images on both sides).
    """
    v = sorted({r["fringe_snr_db"] for r in rows})
    cands = [(v[0] - 0.5, 0.0)] + [((a + b) / 2, b - a) for a, b in zip(v, v[1:])] + [(v[-1] + 0.5, 0.0)]
    scored = [(float(np.mean([r["classical" if r["fringe_snr_db"] < t else network]["grain_f1"] for r in rows])), gap, t)
              for t, gap in cands]
    best = max(f for f, _, _ in scored)
    f1, _, t = max((s for s in scored if s[0] >= best - TIE), key=lambda s: s[1])
    return round(t, 2), f1


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=384)
    ap.add_argument("--n", type=int, default=3, help="images per condition")
    ap.add_argument("--ebsd-scale", type=int, default=3)
    ap.add_argument("--ebsd-size", type=int, default=512)
    ap.add_argument("--lattice", choices=("square", "hexagonal"), default="square",
                    help="the images' lattice (hexagonal: the bundled k = 6 networks and the hexagonal filter bank)")
    ap.add_argument("--out", type=Path, default=None, help="default: method_choice.json (method_choice_hexagonal.json)")
    args = ap.parse_args(argv)
    out = args.out or RESULTS / ("method_choice.json" if args.lattice == "square" else f"method_choice_{args.lattice}.json")

    from micro_sym.inference.whole_image import grains_from_maps, segment_image
    from micro_sym.orientation.symmetry import lattice as find_lattice

    k = find_lattice(args.lattice, ndim=2).k
    networks = load_networks(k)
    rows = []
    t0 = time.time()
    for cond, samples in calibration_jobs(args.size, args.n, args.ebsd_scale, args.ebsd_size, args.lattice):
        for sname, image, gt, theta in samples:
            snr, _ = fringe_snr(image)
            cl = classical_segment(image, lattice=args.lattice)
            row = {"condition": cond, "image": sname, "fringe_snr_db": snr, "classical": score(cl, gt, theta, k)}
            for name, model in networks.items():
                pred = segment_image(model, image)
                row[name] = score(pred, gt, theta, k)
                # Network boundaries with the filter bank's angles, grains by the network grain rule.
                hybrid = dict(pred, orientation=cl["orientation"])
                hybrid["grains"] = grains_from_maps(hybrid, k)
                h = score(hybrid, gt, theta, k)
                row[name]["hybrid_orientation_median_deg"] = h["orientation_median_deg"]
                row[name]["hybrid_grain_f1"] = h["grain_f1"]
            rows.append(row)
        sub = [r for r in rows if r["condition"] == cond]
        print(f"{cond:>16} fringe SNR {np.mean([r['fringe_snr_db'] for r in sub]):5.1f} dB  "
              + "  ".join(f"{m.split(':')[-1]} gF1 {np.mean([r[m]['grain_f1'] for r in sub]):.2f}"
                          for m in ["classical", *networks]), flush=True)
    thresholds = {name: best_threshold(rows, name) for name in networks}
    for name, (t, f1) in thresholds.items():
        never = np.mean([r[name]["grain_f1"] for r in rows])
        always = np.mean([r["classical"]["grain_f1"] for r in rows])
        hybrid = np.mean([r[name]["hybrid_grain_f1"] for r in rows])
        print(f"{name}: classical below {t:.2f} dB -> mean grain F1 {f1:.3f} (network only {never:.3f}, classical only "
              f"{always:.3f}, network boundaries + classical angles {hybrid:.3f})")
    report = {
        "command": ("python bench/provenance/calibrate_method_choice.py "
                    + " ".join(sys.argv[1:] if argv is None else argv)),
        "settings": {"size": args.size, "n_per_condition": args.n, "seed_offset": CALIBRATION_SEED_OFFSET, "lattice": args.lattice},
        "thresholds_db": {name: {"classical_below": t, "mean_grain_f1": f1} for name, (t, f1) in thresholds.items()},
        "wall_seconds": time.time() - t0,
        "images": rows,
    }
    write_json(out, report, default=nan_to_none)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

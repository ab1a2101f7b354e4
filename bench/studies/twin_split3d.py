"""Splitting grains that hold two lattices (Σ3 twins merged with their parent), on held-out atomistic
volumes (docs/design.md §6.7).

Usage::

    python bench/studies/twin_split3d.py [--data data/atoms3d_heldout_imaging] [--model atoms-3d]
        [--cache /tmp/micro_sym_twin_split3d] [--grow 4] [--volumes NAME ...] [--out FILE]

For every volume of an atomistic dataset (default: the held-out imaging set; nothing any bundled
model trained on):

- **network** (``before`` / ``after``): the model's whole-volume grains exactly as ``micro-sym
  evaluate`` makes them (:func:`micro_sym.training.train3d.evaluate3d_volumes`: ``predict_array`` at
  the volume's own sampling, ``grains_by_rule`` with ``network_rule``, the CLI's defaults: 5°, min
  size 32, boundary threshold 0.5; the maps are cached under ``--cache``, delete it after changing
  the model), before and after :func:`micro_sym.classical.twin_split3d.split_grains`. Scores: grain
  F1 (IoU > 0.5 against the boundary-zeroed truth, as evaluate does), Σ3 twin-boundary recall and
  precision (:func:`micro_sym.metrics3d.sigma3_boundaries`, 1-voxel reach as evaluate, and with a
  2-voxel reach, ``*_reach2``) with each grain's orientation measured from the volume
  (:func:`micro_sym.training.train3d.measured_grain_orientations`), and the median misorientation of
  those measured orientations over the true grains' interior voxels.
- **network grown** (``grown`` / ``grown_split``): the same grains first grown ``--grow`` face steps
  into their unassigned voxels (:func:`micro_sym.grains.stats.grow_into_gaps`), before and after
  splitting: the network leaves thin twin lamellae in its boundary band, where no grain can be split.
- **true grains, twins merged**: the true labels with adjacent Σ3-related grains merged pairwise
  (each grain into one pair at most, the pairs with the most twin-boundary area first: a twin with
  its parent), then split: the Σ3 scores before and after isolate the splitting from the network.

Writes bench/results/twin_split3d.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/, for _common
from _common import RESULTS, ROOT, log, write_json  # noqa: E402


def network_maps(model_name, name, img, cache: Path):
    """The model's boundary probability and orientation maps of one volume, as evaluate3d_volumes
    computes them (period None: the volume's own sampling), cached as ``cache/NAME.npz``."""
    path = cache / f"{name}.npz"
    if path.exists():
        with np.load(path) as z:
            return z["boundary"], z["orientation"]
    from micro_sym.inference.network import as_network
    from micro_sym.inference.tiles import predict_array
    from micro_sym.models import load_model

    net = as_network(load_model(model_name, device="cpu", export=True), export=False)
    maps = predict_array(net, img, device="cpu")
    cache.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, boundary=maps["boundary"], orientation=maps["orientation"])
    return maps["boundary"], maps["orientation"]


def scores(img, labels, grains, quats, inside):
    """Grain F1, Σ3 counts with measured orientations, median measured misorientation inside true grains."""
    from micro_sym.metrics3d import sigma3_boundaries
    from micro_sym.orientation import misorientation_cubic
    from micro_sym.training.train3d import grain_f1, measured_grain_orientations

    measured = measured_grain_orientations(img, labels)
    have = np.isfinite(measured[0])
    err = misorientation_cubic(np.moveaxis(measured, 0, -1)[inside & have], np.moveaxis(quats, 0, -1)[inside & have])
    return {"grain_f1": grain_f1(labels, np.where(inside, grains, 0)), "n_grains": int(len(np.unique(labels[labels > 0]))),
            "measured_misorientation_deg": float(np.nanmedian(err)) if err.size else float("nan"),
            **sigma3_boundaries(labels, measured, grains, quats),
            **{f"{k}_reach2": v for k, v in sigma3_boundaries(labels, measured, grains, quats, reach=2).items()}}


def merge_twins(grains, quats) -> np.ndarray:
    """The true labels with Σ3 pairs merged: adjacent true grains whose mean orientations are Σ3-related
    (:func:`micro_sym.metrics3d.sigma3_pairs`), each grain into at most one pair, pairs with the most
    twin-boundary area first (a twin and its parent; the label ids of dataset.json's domains are not
    the label volume's)."""
    from micro_sym.grains.stats import grow_into_gaps
    from micro_sym.metrics3d import _axis_pair_slices, sigma3_faces

    true = grains.astype(np.int64)
    grown = grow_into_gaps(true, 1)
    faces = sigma3_faces(true, quats)
    base = int(grown.max()) + 1
    keys = []
    for axis, f in enumerate(faces):
        lo, hi = _axis_pair_slices(3, axis)
        a, b = grown[lo][f], grown[hi][f]
        keys.append(np.minimum(a, b) * base + np.maximum(a, b))
    pairs, counts = np.unique(np.concatenate(keys), return_counts=True)
    table = np.arange(base)
    used = set()
    for key in pairs[np.argsort(-counts, kind="stable")]:
        a, b = int(key // base), int(key % base)
        if a in used or b in used:
            continue
        used |= {a, b}
        table[b] = a
    return table[true].astype(np.uint32)


def pooled(rows, key):
    from micro_sym.metrics3d import pool

    p = pool([r[key] for r in rows])
    p2 = pool([{k.removesuffix("_reach2"): v for k, v in r[key].items() if k.endswith("_reach2")} for r in rows])
    return {"grain_f1": float(np.mean([r[key]["grain_f1"] for r in rows])),
            "measured_misorientation_deg": float(np.nanmean([r[key]["measured_misorientation_deg"] for r in rows])),
            "n_grains": int(sum(r[key]["n_grains"] for r in rows)),
            **{k: v for k, v in p.items() if k.startswith("sigma3")},
            **{f"{k}_reach2": v for k, v in p2.items() if k.startswith("sigma3")}}


def main():
    from micro_sym.classical.lattice_measure3d import measure_lattice_3d
    from micro_sym.classical.twin_split3d import split_grains
    from micro_sym.grains.stats import grow_into_gaps
    from micro_sym.grains.rules import grains_by_rule, network_rule
    from micro_sym.training.train3d import boundary_from_grains, load_volumes

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(ROOT / "data" / "atoms3d_heldout_imaging"))
    ap.add_argument("--model", default="atoms-3d")
    ap.add_argument("--cache", default="/tmp/micro_sym_twin_split3d")
    ap.add_argument("--threshold", type=float, default=5.0)
    ap.add_argument("--min-size", type=int, default=32)
    ap.add_argument("--boundary-threshold", type=float, default=0.5)
    ap.add_argument("--grow", type=int, default=4, help="the 'grown' rows: network grains grown this many face "
                    "steps into their unassigned voxels (grow_into_gaps) before splitting")
    ap.add_argument("--skip-true", action="store_true", help="leave out the true-grain part")
    ap.add_argument("--volumes", nargs="*", help="only these volumes (names)")
    ap.add_argument("--out", default=str(RESULTS / "twin_split3d.json"))
    args = ap.parse_args()
    samples = json.loads((Path(args.data) / "dataset.json").read_text())["samples"]
    cache = Path(args.cache) / Path(args.model).name
    rule = network_rule(args.threshold, 3)
    rows, true_rows, seconds, seconds_grown = [], [], 0.0, 0.0
    for name, img, grains, quats in load_volumes(args.data, None):
        if args.volumes and name not in args.volumes:
            continue
        s = samples[name]
        kind = s["structure"] + (" particle" if s["kind"] == "particle" else "")
        f0 = measure_lattice_3d(img)["ring_frequency"]
        inside = ~boundary_from_grains(grains)
        prob, q = network_maps(args.model, name, img, cache)
        labels = grains_by_rule(q, prob, rule, symmetry="cubic", min_size=args.min_size,
                                boundary_threshold=args.boundary_threshold)
        t0 = time.perf_counter()
        split, info = split_grains(img, labels, ring_frequency=f0)
        seconds += time.perf_counter() - t0
        grown = grow_into_gaps(labels.astype(np.int64), args.grow).astype(np.uint32)
        t0 = time.perf_counter()
        gsplit, ginfo = split_grains(img, grown, ring_frequency=f0, family=info["family"])
        seconds_grown += time.perf_counter() - t0
        row = {"volume": name, "structure": kind, "grains_split": int(len(np.unique(info["parent"]))),
               "grown_grains_split": int(len(np.unique(ginfo["parent"]))),
               "before": scores(img, labels, grains, quats, inside), "after": scores(img, split, grains, quats, inside),
               "grown": scores(img, grown, grains, quats, inside), "grown_split": scores(img, gsplit, grains, quats, inside)}
        rows.append(row)
        b, a = row["before"], row["after"]
        log(f"{name} {kind:14s} network: split {row['grains_split']:2d} grains | grain F1 {b['grain_f1']:.3f} -> "
            f"{a['grain_f1']:.3f} | Σ3 recall {b['sigma3_recall']:.3f} -> {a['sigma3_recall']:.3f}, precision "
            f"{b['sigma3_precision']:.3f} -> {a['sigma3_precision']:.3f} | measured misorientation "
            f"{b['measured_misorientation_deg']:.2f}° -> {a['measured_misorientation_deg']:.2f}°")
        b, a = row["grown"], row["grown_split"]
        log(f"{'':10s} {kind:14s} grown {args.grow}: split {row['grown_grains_split']:2d} grains | grain F1 {b['grain_f1']:.3f} -> "
            f"{a['grain_f1']:.3f} | Σ3 recall {b['sigma3_recall']:.3f} -> {a['sigma3_recall']:.3f}, precision "
            f"{b['sigma3_precision']:.3f} -> {a['sigma3_precision']:.3f} | measured misorientation "
            f"{b['measured_misorientation_deg']:.2f}° -> {a['measured_misorientation_deg']:.2f}°")
        if args.skip_true:
            continue
        merged = merge_twins(grains, quats)
        tsplit, tinfo = split_grains(img, merged, ring_frequency=f0)
        trow = {"volume": name, "structure": kind, "grains_split": int(len(np.unique(tinfo["parent"]))),
                "before": scores(img, merged, grains, quats, inside), "after": scores(img, tsplit, grains, quats, inside)}
        true_rows.append(trow)
        b, a = trow["before"], trow["after"]
        log(f"{'':10s} {kind:14s} true, twins merged: split {trow['grains_split']:2d} | Σ3 recall {b['sigma3_recall']:.3f} "
            f"-> {a['sigma3_recall']:.3f}, precision {b['sigma3_precision']:.3f} -> {a['sigma3_precision']:.3f} "
            f"| grain F1 {b['grain_f1']:.3f} -> {a['grain_f1']:.3f}")
    summary = {"network": {k: pooled(rows, k) for k in ("before", "after", "grown", "grown_split")}}
    if true_rows:
        summary["true_twins_merged"] = {k: pooled(true_rows, k) for k in ("before", "after")}
    for part, v in summary.items():
        for k in v:
            e = v[k]
            log(f"{part:18s} {k:6s} grain F1 {e['grain_f1']:.3f}  Σ3 recall {e['sigma3_recall']:.3f} "
                f"({e['sigma3_faces_found']}/{e['sigma3_faces_true']})  precision {e['sigma3_precision']:.3f}  "
                f"[reach 2: recall {e['sigma3_recall_reach2']:.3f} precision {e['sigma3_precision_reach2']:.3f}]  "
                f"measured misorientation {e['measured_misorientation_deg']:.2f}°  grains {e['n_grains']}")
    log(f"split_grains: {seconds / max(len(rows), 1):.1f} s per volume on the network grains, "
        f"{seconds_grown / max(len(rows), 1):.1f} s on the grown ones")
    write_json(args.out, {"what": "splitting grains that hold two lattices (Σ3 twins merged with their parent), "
                                  "held-out atomistic volumes, before and after",
                          "command": "python bench/studies/twin_split3d.py " + " ".join(sys.argv[1:]),
                          "data": str(Path(args.data).relative_to(ROOT)) if Path(args.data).is_relative_to(ROOT) else args.data,
                          "model": args.model, "threshold_deg": args.threshold, "min_size": args.min_size,
                          "boundary_threshold": args.boundary_threshold,
                          "grow": args.grow,
                          "seconds_per_volume": {"network": seconds / max(len(rows), 1),
                                                 "grown": seconds_grown / max(len(rows), 1)},
                          "summary": summary, "volumes": rows, "true_twins_merged": true_rows})


if __name__ == "__main__":
    main()

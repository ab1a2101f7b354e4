"""Accuracy of the per-grain 3D orientation measurement on true grains (issue 27; docs/design.md §6.7).

Usage::

    python bench/studies/grain_orientation3d.py [--data data/atoms3d_heldout_imaging] [--out FILE]

For every volume of an atomistic dataset (default: the held-out imaging set, ``micro-sym synth
synth-atoms3d-heldout-imaging``; nothing any bundled model trained on) the first lattice ring is
measured (``measure_lattice_3d``), then each *true* grain's orientation is measured from the volume
inside it (``micro_sym.classical.grain_orientation3d.grain_orientations``) and compared with the mean of
its true orientations (cubic misorientation). Segmentation is left out on purpose: this is the
measurement alone. Reported per structure and grain size (equivalent diameter in first-ring periods):
grains, the fraction measured (quality ≥ MIN_QUALITY), median and 90th percentile error, the fraction
over 5°, and milliseconds per grain. Writes bench/results/grain_orientation3d.json.
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


def main():
    from micro_sym.classical import grain_orientation3d as go
    from micro_sym.classical.lattice_measure3d import measure_lattice_3d
    from micro_sym.orientation import misorientation_cubic, quat_normalize, reduce_to_reference
    from micro_sym.training.train3d import load_volumes

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(ROOT / "data" / "atoms3d_heldout_imaging"))
    ap.add_argument("--out", default=str(RESULTS / "grain_orientation3d.json"))
    args = ap.parse_args()
    samples = json.loads((Path(args.data) / "dataset.json").read_text())["samples"]
    rows, volumes, seconds, n_measured = [], [], 0.0, 0
    for name, img, grains, quats in load_volumes(args.data, None):
        s = samples[name]
        f0 = measure_lattice_3d(img)["ring_frequency"]
        ids, counts = np.unique(grains[grains > 0], return_counts=True)
        t0 = time.perf_counter()
        res = go.grain_orientations(img, grains, ring_frequency=f0, ids=ids)
        seconds += time.perf_counter() - t0
        n_measured += len(ids)
        q = np.moveaxis(quats, 0, -1)
        kind = s["structure"] + (" particle" if s["kind"] == "particle" else "")
        for k, g in enumerate(ids):
            qg = q[grains == g]
            qg = qg[np.isfinite(qg).all(1)]
            truth = quat_normalize(reduce_to_reference(qg, qg[0]).mean(0))
            found = np.isfinite(res["quaternions"][k]).all()
            rows.append({"volume": name, "structure": kind, "grain": int(g),
                         "diameter_periods": float((6 * counts[k] / np.pi) ** (1 / 3) * f0),
                         "quality": float(res["quality"][k]),
                         "error_deg": float(misorientation_cubic(truth, res["quaternions"][k])) if found else None})
        volumes.append({"volume": name, "structure": kind, "ring_frequency": f0, "family": res["volume_family"],
                        "grains": len(ids)})
        log(f"{name} {kind}: period {1 / f0:.2f} voxels, family {res['volume_family']}, {len(ids)} grains")
    summary = []
    for min_d in (0.0, 4.0):
        for kind in sorted({r["structure"] for r in rows}):
            sel = [r for r in rows if r["structure"] == kind and r["diameter_periods"] >= min_d]
            err = np.array([r["error_deg"] for r in sel if r["error_deg"] is not None])
            summary.append({"structure": kind, "min_diameter_periods": min_d, "grains": len(sel),
                            "measured": len(err) / len(sel) if sel else None,
                            "median_deg": float(np.median(err)) if err.size else None,
                            "p90_deg": float(np.percentile(err, 90)) if err.size else None,
                            "over_5deg": float(np.mean(err > 5)) if err.size else None})
            e = summary[-1]
            log(f"  d >= {min_d:g} periods, {kind:16s} {e['grains']:4d} grains, measured {e['measured']:.2f}, "
                f"median {e['median_deg']:.2f}°, p90 {e['p90_deg']:.2f}°, over 5° {e['over_5deg']:.2f}")
    log(f"{1000 * seconds / max(n_measured, 1):.0f} ms per grain")
    write_json(args.out, {"what": "per-grain 3D orientation measured on the true grains of held-out atomistic volumes",
                          "command": "python bench/studies/grain_orientation3d.py " + " ".join(sys.argv[1:]),
                          "data": str(Path(args.data).relative_to(ROOT)) if Path(args.data).is_relative_to(ROOT) else args.data,
                          "min_quality": go.MIN_QUALITY, "ms_per_grain": 1000 * seconds / max(n_measured, 1),
                          "volumes": volumes, "summary": summary, "grains": rows})


if __name__ == "__main__":
    main()

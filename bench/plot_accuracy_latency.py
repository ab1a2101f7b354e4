"""Accuracy against latency of the networks a contest run scored (issue 29: pruned models' trade-off).

Usage::

    python bench/plot_accuracy_latency.py bench/results/contest_robust_fast.json [--out FILE.png]

Reads a ``bench/studies/contest.py`` result: per network, the mean over its conditions of the grain F1
and boundary F1 (each condition's images pooled), and its seconds per megapixel (whole-image
segmentation with onnxruntime, maps and grains, timed in the contest run). Plots grain F1 against
seconds per megapixel, one point per network, and writes the table beside the plot as JSON
(``FILE.json``) and prints it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from _common import write_json


def tradeoff(report: dict) -> list[dict]:
    """One row per network of a contest report: name, mean grain and boundary F1, seconds per megapixel."""
    rows = []
    for method, conditions in report["results"].items():
        if not method.startswith("network:"):
            continue
        rows.append({"network": method.removeprefix("network:"),
                     "mean_grain_f1": float(np.mean([c["grain_f1"] for c in conditions.values()])),
                     "mean_boundary_f1": float(np.mean([c["boundary_f1"] for c in conditions.values()])),
                     "seconds_per_megapixel": float(report["seconds_per_megapixel"][method]),
                     "conditions": len(conditions)})
    return sorted(rows, key=lambda r: r["seconds_per_megapixel"])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("contest", type=Path, help="a bench/studies/contest.py result file")
    ap.add_argument("--out", type=Path, default=None, help="PNG (default: beside the input, _tradeoff.png)")
    args = ap.parse_args(argv)
    out = args.out or args.contest.with_name(args.contest.stem + "_tradeoff.png")
    report = json.loads(args.contest.read_text())
    rows = tradeoff(report)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for i, r in enumerate(rows):
        ax.plot(r["seconds_per_megapixel"], r["mean_grain_f1"], "o")
        ax.annotate(Path(r["network"]).stem, (r["seconds_per_megapixel"], r["mean_grain_f1"]),
                    textcoords="offset points", xytext=(5, 5 if i % 2 else -12), fontsize=8)
    ax.set_xlabel("seconds per megapixel (whole image, onnxruntime)")
    ax.set_ylabel(f"mean grain F1 over {rows[0]['conditions'] if rows else 0} contest conditions")
    ax.set_title("accuracy against latency")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    write_json(out.with_suffix(".json"), {"command": "python bench/plot_accuracy_latency.py " + str(args.contest),
                                          "source": report.get("command"), "networks": rows})
    for r in rows:
        print(f"{r['network']:>40}: grain F1 {r['mean_grain_f1']:.3f}, boundary F1 {r['mean_boundary_f1']:.3f}, "
              f"{r['seconds_per_megapixel']:.3f} s/MP")
    print(f"wrote {out} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()

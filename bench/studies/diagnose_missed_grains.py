"""Why true grains are missed: a breakdown of the unmatched true grains (IoU <= 0.5) of a 2D model.

    python bench/studies/diagnose_missed_grains.py --data data/synth2d_tune data/synth2d_more16 [--model default-2d]

Per unmatched true grain, in this order: ``tiny`` (under 16 px: border slivers, one-pixel label
islands), ``small`` (16-63 px), ``merged`` (one predicted grain covers more than half of it, so it
was joined with a neighbour), ``split`` (its two or more largest predicted pieces each cover more
than 20 %), ``other`` (cut down by the boundary band or partly flooded by neighbours). The product's
grain rule (:func:`micro_sym.inference.whole_image.grains_from_maps`). Tuning sets only; prints and writes JSON.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

warnings.filterwarnings("ignore", message=".*py3nj.*")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/, for _common

from _common import RESULTS, write_json  # noqa: E402
from micro_sym.io.datasets import LabeledDataset  # noqa: E402
from micro_sym.models import load_model  # noqa: E402
from micro_sym.inference.whole_image import grains_from_maps, predict_image  # noqa: E402


def classify(true, pred) -> dict:
    """Counts of unmatched true grains by cause (see the module docstring)."""
    nt, npred = int(true.max()) + 1, int(pred.max()) + 1
    cnt = np.bincount((true.astype(np.int64) * npred + pred).ravel(), minlength=nt * npred).reshape(nt, npred)
    size_t, size_p = cnt.sum(1), cnt.sum(0)
    inter = cnt[1:, 1:]
    iou = inter / (size_t[1:, None] + size_p[None, 1:] - inter + 1e-12)
    out = {"true": nt - 1, "missed": 0, "tiny": 0, "small": 0, "merged": 0, "split": 0, "other": 0}
    for t in np.flatnonzero(~(iou > 0.5).any(1)):
        size = size_t[t + 1]
        out["missed"] += 1
        if size < 16:
            out["tiny"] += 1
        elif size < 64:
            out["small"] += 1
        elif inter[t].max() > 0.5 * size:
            out["merged"] += 1
        elif (inter[t] > 0.2 * size).sum() >= 2:
            out["split"] += 1
        else:
            out["other"] += 1
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default-2d")
    ap.add_argument("--data", type=Path, nargs="+", required=True)
    ap.add_argument("--out", type=Path, default=RESULTS / "missed_grains.json")
    args = ap.parse_args()
    model = load_model(args.model, export=True)
    total = {}
    for root in args.data:
        ds = LabeledDataset(root)
        for name in ds.names:
            s = ds[name]
            for k, v in classify(s.grains, grains_from_maps(predict_image(model, s.image), model.k)).items():
                total[k] = total.get(k, 0) + v
    print(total)
    write_json(args.out, {"model": args.model, "data": [str(d) for d in args.data], "counts": total}, indent=1)


if __name__ == "__main__":
    main()

"""Does a 3D model file give the same maps in this environment as where it was trained?

    python bench/check_model_portability.py --model runs/octa_synth3d/model.pt

Loads the file (weights only), predicts a 40³ crop of the bundled sample volume and prints the
boundary-probability mean, the fraction of predicted boundary voxels and the number of seeded grains.
Run it in two environments and compare: the octahedral model of configs/train_3d_synth.yaml gave
different numbers in a fresh venv than in the one it was trained in (see the README's 3D item).
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import tifffile

warnings.filterwarnings("ignore", message=".*py3nj.*")

from micro_sym.grains.rules import grains_by_rule, network_rule  # noqa: E402
from micro_sym.inference import load_network, predict_array  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    args = ap.parse_args()
    vol = tifffile.imread(sorted((ROOT / "sample_data" / "volume" / "images").glob("*.tif"))[0])[:40, :40, :40]
    out = predict_array(load_network(args.model), vol)
    b = out["boundary"]
    grains = grains_by_rule(out["orientation"], b, network_rule(5.0, 3), symmetry="cubic", min_size=32)
    print(f"boundary mean {b.mean():.3f}  boundary voxels {(b >= 0.5).mean():.3f}  grains {int(grains.max())}")


if __name__ == "__main__":
    main()

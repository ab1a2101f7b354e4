"""Training and validation data for the bundled ``robust-2d`` model: a mixture of imaging conditions.

    python bench/provenance/make_robust_2d_data.py [--out data] [--size 512] [--lattice hexagonal|fringes]

Writes ``OUT/robust2d_train`` and ``OUT/robust2d_val`` (``robust2d_hex_*`` for the hexagonal lattice,
the analytic half of ``atoms-2d-hex``'s training data; ``robust2d_fringes_*`` for one set of lattice
planes per grain, ``fringes-2d``'s training data), labeled datasets (docs/design.md §1) whose images
come from the project's generator under the conditions a lab meets and the default model never saw:
low dose (2-20 counts/px), small and large grains, a blurred probe, bright-field contrast and scan
distortion, beside the default conditions. Seeds (10 000 + 100·condition + image for training,
20 000 + ... for validation) are disjoint from the default model's (1000-3000) and from
``bench/studies/contest.py``'s held-out seeds (900 000 and up), so the contest scores this model on images
it was not trained on.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", message=".*py3nj.*")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/, for _common

from _common import ROOT, write_json  # noqa: E402
from micro_sym.synth import Synth2DConfig, synth_2d  # noqa: E402
from micro_sym.synth.dataset import FOLDERS, write_sample  # noqa: E402

#: (name, config overrides, training images, validation images)
CONDITIONS = [
    ("dose2", {"imaging": {"dose": 2.0}}, 8, 1),
    ("dose5", {"imaging": {"dose": 5.0}}, 6, 1),
    ("dose20", {"imaging": {"dose": 20.0}}, 6, 0),
    ("dose100", {"imaging": {"dose": 100.0}}, 4, 0),
    ("default", {}, 4, 1),
    ("small_grains", {"microstructure": {"grain_size": 40.0}, "imaging": {"dose": 50.0}}, 6, 1),
    ("small_grains_dose5", {"microstructure": {"grain_size": 40.0}, "imaging": {"dose": 5.0}}, 4, 0),
    ("large_grains", {"microstructure": {"grain_size": 160.0}, "imaging": {"dose": 50.0}}, 3, 0),
    ("blur", {"imaging": {"dose": 50.0, "psf_sigma": 2.5}}, 4, 0),
    ("bright_field", {"imaging": {"dose": 50.0, "contrast": "bright_field"}}, 4, 1),
    ("scan_distortion", {"imaging": {"dose": 50.0, "jitter": 0.5, "drift": 3.0, "shear": 0.03}}, 4, 1),
]


#: Folder name prefix per lattice.
_PREFIX = {"square": "", "hexagonal": "hex_", "fringes": "fringes_"}


def write_mixture(out: Path, size: int, split: str, seed_base: int, lattice: str = "square") -> int:
    for folder in FOLDERS:
        (out / folder).mkdir(parents=True, exist_ok=True)
    n_total = 0
    manifest = {"lattice": lattice, "pixel_size": None, "unit": "nm", "conditions": {}}
    for c, (name, overrides, n_train, n_val) in enumerate(CONDITIONS):
        n = n_train if split == "train" else n_val
        cfg = Synth2DConfig.model_validate({"size": (size, size), "lattice": lattice, **overrides})
        manifest["pixel_size"] = [cfg.pixel_size, cfg.pixel_size]
        seeds = [seed_base + 100 * c + i for i in range(n)]
        manifest["conditions"][name] = {"overrides": overrides, "seeds": seeds}
        for seed in seeds:
            write_sample(out, f"{name}_{seed}", synth_2d(cfg, seed=seed), cfg.pixel_size, cfg.unit)
            n_total += 1
        print(f"{split}: {name}: {n} image(s)", flush=True)
    write_json(out / "dataset.json", manifest)
    return n_total


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "data")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--lattice", choices=tuple(_PREFIX), default="square")
    args = p.parse_args()
    for split, seed_base in (("train", 10_000), ("val", 20_000)):
        out = args.out / f"robust2d_{_PREFIX[args.lattice]}{split}"
        if (out / "dataset.json").is_file():
            print(f"{out}: exists, kept")
            continue
        n = write_mixture(out, args.size, split, seed_base, args.lattice)
        print(f"wrote {n} images to {out}")


if __name__ == "__main__":
    main()

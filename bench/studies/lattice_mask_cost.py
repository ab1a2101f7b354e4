"""What the lattice mask costs where every pixel is crystalline: `segment` (auto) with and without it on
synthetic micrographs (the training renderer) under six imaging conditions, one 512² image each (seed
900001), scored against the true grains; plus the median local ring contrast of each image.

    python bench/studies/lattice_mask_cost.py

Prints a table and writes ``bench/results/lattice_mask_cost.json``.
"""

from __future__ import annotations

import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import tifffile

warnings.filterwarnings("ignore", message=".*py3nj.*")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/, for _common

from _common import RESULTS, write_json  # noqa: E402
from micro_sym.classical import measure_lattice  # noqa: E402
from micro_sym.classical.crystallinity import ring_contrast  # noqa: E402
from micro_sym.inference.engine import segment  # noqa: E402
from micro_sym.io.images import output_array  # noqa: E402
from micro_sym.metrics import grain_f1  # noqa: E402
from micro_sym.synth import Synth2DConfig, synth_2d  # noqa: E402

CONDITIONS = {"dose 2": {"dose": 2}, "dose 5": {"dose": 5}, "dose 20": {"dose": 20},
              "blur (PSF 2.5 px), dose 50": {"dose": 50, "psf_sigma": 2.5},
              "bright field, dose 50": {"dose": 50, "contrast": "bright_field"}, "dose 100": {"dose": 100}}


def main():
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, imaging in CONDITIONS.items():
            sample = synth_2d(Synth2DConfig.model_validate({"size": (512, 512), "imaging": imaging}), seed=900001)
            path = Path(tmp) / "img.tif"
            tifffile.imwrite(path, sample.image)
            f0 = measure_lattice(sample.image.astype(np.float32)).ring_frequency
            row = {"median_ring_contrast": round(float(np.median(ring_contrast(sample.image, f0))), 3)}
            for mask in (False, True):
                (res,) = segment([path], Path(tmp) / f"out{int(mask)}", overwrite=True, lattice_mask=mask)
                grains = output_array(Path(tmp) / f"out{int(mask)}" / "img.zarr", "grains")[:]
                row["with_mask" if mask else "without_mask"] = {
                    "method": res.plan["method"]["auto"]["chose"],
                    "grain_f1": round(grain_f1(grains, sample.grains)["f1"], 4),
                    "unassigned": round(float(np.mean(grains == 0)), 4)}
            rows[name] = row
            print(f"{name:28s} contrast {row['median_ring_contrast']:6.2f} | grain F1 without "
                  f"{row['without_mask']['grain_f1']:.3f}, with {row['with_mask']['grain_f1']:.3f} "
                  f"({row['with_mask']['method']})", flush=True)
    out = write_json(RESULTS / "lattice_mask_cost.json",
                     {"command": "python bench/studies/lattice_mask_cost.py", "seed": 900001, "size": 512, "rows": rows})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

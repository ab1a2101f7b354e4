"""Does a model file give the same maps in this environment as where it was made?

    python bench/provenance/check_model_portability.py --model default-3d
    python bench/provenance/check_model_portability.py --model runs/octa_synth3d/model.pt --write-reference tests/data/default_3d_reference.json
    python bench/provenance/check_model_portability.py --model default-3d --reference tests/data/default_3d_reference.json
    python bench/provenance/check_model_portability.py --model default-2d --write-reference tests/data/default_2d_reference.json
    python bench/provenance/check_model_portability.py --model runs/atoms3d_canonical/model.pt --input tests/data/atoms_3d_crop.npy --write-reference tests/data/atoms_3d_reference.json

Loads the file (weights only), predicts a 40³ crop of the bundled sample volume (2D models: a 128²
crop of the first sample micrograph; ``--input``: a crop saved as ``.npy``, for a model trained at
another lattice period: atoms-3d's is a 40³ crop of ``synth-atoms3d-train-canonical``'s validation
volume ``sample_000``, seed 200; the reference names its input) and prints the boundary-probability mean, the fraction of
predicted boundary points and the seeded grains (their count and a hash of the partition). ``--write-reference`` also stores the raw
network outputs on a sub-grid of that crop; ``--reference`` compares against such a file and exits 1
when they differ (tests/models/test_models3d.py and tests/models/test_models2d.py do the same for the bundled
default-3d and default-2d; default-2d ships as an escnn file, so this is what shows that its D4 bases
are the same in every installation). Run it in two environments and compare: the escnn file of the octahedral
model of micro_sym/configs/train_3d_synth.yaml gave different numbers in a fresh venv than in the one it was
trained in (escnn builds octahedral bases numerically); its exported plain-torch file, the bundled
default-3d, gives the same numbers everywhere.

Writes the summary (without the raw outputs), the comparison with ``--reference`` (largest raw
difference, same grains or not) and the environment (python, torch, escnn versions) to
``bench/results/portability_<model>.json`` (``--json`` another path; ``portability_default_3d.json``
for ``--model default-3d``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import sys
import warnings
from pathlib import Path

import numpy as np
import tifffile

warnings.filterwarnings("ignore", message=".*py3nj.*")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/, for _common

from _common import RESULTS, ROOT, write_json  # noqa: E402
from micro_sym.grains.rules import grains_by_rule, network_rule  # noqa: E402
from micro_sym.inference import load_network  # noqa: E402
from micro_sym.models.normalize import intensity_range  # noqa: E402
from micro_sym.orientation.symmetry import lattice  # noqa: E402

#: The grain rule's 2D lengths the references were recorded with (the seeded rule's first defaults):
#: the check is about the model's outputs, so a later change of the product's rule keeps them valid.
REFERENCE_RULE = {2: {"core_radius": 2.5, "steps": 4, "reach": 12}}
CROP = {3: 40, 2: 128}  # points per side, from the corner of the first sample volume / micrograph
STEP = {3: 8, 2: 16}  # the reference keeps raw outputs at every STEP-th point
TOLERANCE = 1e-3  # max abs difference of raw outputs (logits / harmonic coefficients, O(1) values)


def sample_crop(ndim: int, source: str | None = None) -> np.ndarray:
    """The crop: of the first bundled sample volume / micrograph, or of ``source`` (a ``.npy`` file
    under the repository: a model trained at another lattice period needs an input at its own)."""
    if source:
        return np.load(ROOT / source)[(slice(CROP[ndim]),) * ndim]
    folder = ROOT / "sample_data" / ("volume" if ndim == 3 else "micrographs") / "images"
    return tifffile.imread(sorted(folder.glob("*.tif"))[0])[(slice(CROP[ndim]),) * ndim]


def raw_and_maps(model, source: str | None = None):
    """The network's raw output on the crop (C, D, H, W) and its decoded maps."""
    net = load_network(model)
    crop = sample_crop(net.ndim, source)
    lo, hi = intensity_range(crop)
    raw = net.forward(np.nan_to_num(net.normalize(crop, lo, hi), nan=0.0)[None])[0]  # CROP is a multiple of the stride
    return raw, net.decode(raw), net


def summary(model, source: str | None = None) -> dict:
    raw, maps, net = raw_and_maps(model, source)
    b = maps["boundary"]
    symmetry = "cubic" if net.ndim == 3 else lattice(net.k, ndim=2).name
    grains = grains_by_rule(maps["orientation"], b, {**network_rule(5.0, net.ndim), **REFERENCE_RULE.get(net.ndim, {})},
                            symmetry=symmetry, min_size=32)
    sub = raw[(slice(None),) + (slice(None, None, STEP[net.ndim]),) * net.ndim]
    return {"boundary_mean": float(b.mean()), "boundary_fraction": float((b >= 0.5).mean()), "grains": int(grains.max()),
            "grains_sha256": partition_hash(grains),
            "input": source, "crop": CROP[net.ndim], "step": STEP[net.ndim], "raw_shape": list(sub.shape),
            "raw": np.round(sub, 6).ravel().tolist()}


def partition_hash(labels: np.ndarray) -> str:
    """SHA-256 of a label map renumbered in raster order of first appearance (0 stays 0): equal
    hashes mean the same grains, whatever their ids."""
    flat = labels.ravel()
    ids, first = np.unique(flat, return_index=True)
    order = ids[np.argsort(first)]
    order = order[order != 0]
    lut = np.zeros(int(flat.max()) + 1, np.uint32)
    lut[order] = np.arange(1, len(order) + 1, dtype=np.uint32)
    return hashlib.sha256(lut[flat].astype("<u4").tobytes()).hexdigest()


def compare(got: dict, ref: dict) -> list[str]:
    """Differences between two summaries, as readable lines (empty when they agree)."""
    problems = []
    if got["raw_shape"] != ref["raw_shape"]:
        return [f"raw output shape {got['raw_shape']} != reference {ref['raw_shape']}"]
    err = float(np.abs(np.asarray(got["raw"]) - np.asarray(ref["raw"])).max())
    if not err <= TOLERANCE:
        problems.append(f"raw outputs differ from the reference by up to {err:.3g} (tolerance {TOLERANCE})")
    if got["grains"] != ref["grains"]:
        problems.append(f"{got['grains']} seeded grains, reference {ref['grains']}")
    elif got["grains_sha256"] != ref["grains_sha256"]:
        problems.append("the seeded grains differ from the reference's (same count, other grains)")
    return problems


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--write-reference", type=Path)
    ap.add_argument("--reference", type=Path, help="compare with this file, on the input it names")
    ap.add_argument("--input", help="a .npy crop (repository path) instead of the bundled sample's")
    ap.add_argument("--json", type=Path, help="results file (default bench/results/portability_<model>.json)")
    args = ap.parse_args()
    ref = json.loads(args.reference.read_text()) if args.reference else None
    got = summary(args.model, args.input or (ref or {}).get("input"))
    print(f"boundary mean {got['boundary_mean']:.3f}  boundary points {got['boundary_fraction']:.3f}  grains {got['grains']}")
    if args.write_reference:
        args.write_reference.write_text(json.dumps({"model": str(args.model), **got}) + "\n")
        print(f"wrote {args.write_reference}")
    problems = None
    result = {"model": str(args.model), **{k: v for k, v in got.items() if k != "raw"}}
    if ref is not None:
        problems = compare(got, ref)
        result["reference"] = {"file": str(args.reference), "model": ref.get("model"), "boundary_mean": ref["boundary_mean"],
                               "grains": ref["grains"], "matches": not problems, "problems": problems}
        if got["raw_shape"] == ref["raw_shape"]:
            result["reference"]["raw_max_abs_difference"] = float(np.abs(np.asarray(got["raw"]) - np.asarray(ref["raw"])).max())
            result["reference"]["tolerance"] = TOLERANCE
        print("\n".join(problems) or "matches the reference")
    result["environment"] = {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version(),
                             **{m: _version(m) for m in ("numpy", "torch", "escnn")}}
    slug = re.sub(r"\W+", "_", Path(str(args.model)).stem if str(args.model).endswith(".pt") else str(args.model)).strip("_")
    print(f"wrote {write_json(args.json or RESULTS / f'portability_{slug}.json', result)}")
    if problems is not None:
        sys.exit(1 if problems else 0)


def _version(module: str):
    try:
        return __import__(module).__version__
    except Exception:  # noqa: BLE001 - absent or broken: record that
        return None


if __name__ == "__main__":
    main()

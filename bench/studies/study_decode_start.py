"""The figures behind the cubic-harmonic decoder's start search and its number of candidates.

    python bench/studies/study_decode_start.py

- ``grid_gap``: misorientation (cubic) from 20,000 random orientations to the nearest of the
  decoder's 1,000 start orientations (``_start_grid``): median and worst.
- ``rotation_agreement``: an untrained octahedral l = 4+6 network (the test suite's
  ``octa_l46`` case, 12³ input): fraction of voxels whose decoded orientation of the rotated input
  equals the rotated decoded orientation (misorientation < 0.5°), for 3 and 5 candidates, and
  with 5 candidates at each retry threshold. The network's weights come from escnn's numerically
  built basis, which differs between installs (README, issue 7), so these fractions do too.
- ``default_3d``: the bundled model on the 96³ sample volume: forward seconds, decode seconds for
  3 and 5 candidates, and the fraction of voxels whose orientation changes by > 0.5° between them;
  then, with 5 candidates, for each retry threshold (``MULTI_START_RESIDUAL``: residual per degree
  above which a voxel is refined from the other candidates too; ``inf`` = never): decode seconds,
  the fraction of voxels retried and the fraction whose orientation changes by > 0.5° against the
  lowest threshold.

Writes ``bench/results/decode_start.json``. The CPU is shared on this machine: compare within a run.
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import numpy as np

#: Retry thresholds compared (the first is the reference of the "changed" fractions).
RETRY_THRESHOLDS = (0.15, 0.25, 0.5, 0.75, float("inf"))  # 0.15: the product's value before this study

warnings.filterwarnings("ignore")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/, for _common

from _common import RESULTS, ROOT, write_json  # noqa: E402


def grid_gap() -> dict:
    from micro_sym.orientation.cubic_harmonics import _random_quats, _start_grid  # noqa: F401  (same seed as the grid)
    from micro_sym.orientation import matrix_to_quat, misorientation_cubic

    grid = matrix_to_quat(_start_grid((4,))[0])
    probes = _random_quats(20000, np.random.default_rng(1))
    best = np.full(len(probes), np.inf)
    for i in range(0, len(grid), 50):
        best = np.minimum(best, misorientation_cubic(probes[:, None, :], grid[None, i : i + 50]).min(axis=1))
    return {"grid": len(grid), "probes": len(probes), "median_deg": float(np.median(best)), "max_deg": float(best.max())}


def rotation_agreement() -> dict:
    import torch

    sys.path.insert(0, str(ROOT / "tests" / "models"))
    import test_models3d as t  # the equivariance test's model and input

    from micro_sym.orientation.cubic_harmonics import MULTI_START_RESIDUAL, sh_to_quat
    from micro_sym.models.gcnn3d import cube_grid_rotations, rotate_volume
    from micro_sym.orientation import misorientation_cubic, quat_multiply

    model = t._model(t.CONFIGS["octa_l46"])
    exported = model.export()
    x = t._input(2)[..., 2:-2, 2:-2, 2:-2]
    with torch.no_grad():
        y0 = model(x)[0, 1:].double().numpy()
        rotated = {gi: exported(rotate_volume(x, cube_grid_rotations()[gi]))[0, 1:].double().numpy()
                   for gi in (5, 23)}  # the test's two elements

    def agreement(gi: int, candidates: int, retry: float = MULTI_START_RESIDUAL) -> float:
        r = cube_grid_rotations()[gi]
        q0 = sh_to_quat(np.moveaxis(y0, 0, -1), (4, 6), candidates=candidates, retry_residual=retry)
        q1 = sh_to_quat(np.moveaxis(rotated[gi], 0, -1), (4, 6), candidates=candidates, retry_residual=retry)
        expected = quat_multiply(r.quat, rotate_volume(np.moveaxis(q0, -1, 0), r).transpose(1, 2, 3, 0))
        return float(np.mean(misorientation_cubic(q1, expected) < 0.5))

    out = {str(c): [agreement(gi, c) for gi in rotated] for c in (3, 5)}
    for threshold in RETRY_THRESHOLDS:
        out[f"5, retry above {threshold:g}"] = [agreement(gi, 5, threshold) for gi in rotated]
    return out


def default_3d() -> dict:
    import tifffile

    from micro_sym.orientation.cubic_harmonics import sh_to_quat
    from micro_sym.inference import load_network
    from micro_sym.models.normalize import intensity_range
    from micro_sym.orientation import misorientation_cubic

    net = load_network("default-3d")
    vol = tifffile.imread(ROOT / "sample_data" / "volume" / "images" / "sample_000.tif")
    lo, hi = intensity_range(vol)
    x = net.normalize(vol, lo, hi)[None]
    t0 = time.perf_counter()
    raw = net.forward(x)[0]
    forward = time.perf_counter() - t0
    coeffs = np.moveaxis(raw[1:], 0, -1)
    sh_to_quat(coeffs[:2])  # compile / load the kernels outside the timing
    out = {"shape": list(vol.shape), "forward_s": forward}
    quats = {}
    for candidates in (3, 5):
        t0 = time.perf_counter()
        quats[candidates] = sh_to_quat(coeffs, (4,), candidates=candidates)
        out[f"decode_s_candidates_{candidates}"] = time.perf_counter() - t0
    out["changed_over_0.5deg"] = float(np.mean(misorientation_cubic(quats[3], quats[5]) > 0.5))
    from micro_sym.orientation.cubic_harmonics import sh_to_matrix

    _, first = sh_to_matrix(coeffs, (4,), candidates=1)  # residual after the nearest start alone
    sweep, reference = [], None
    for threshold in RETRY_THRESHOLDS:
        t0 = time.perf_counter()
        q = sh_to_quat(coeffs, (4,), candidates=5, retry_residual=threshold)
        seconds = time.perf_counter() - t0
        reference = q if reference is None else reference
        sweep.append({"retry_above": threshold if np.isfinite(threshold) else "never", "decode_s": seconds,
                      "retried": float(np.mean(first > threshold)),
                      "changed_over_0.5deg": float(np.mean(misorientation_cubic(q, reference) > 0.5))})
    out["retry_threshold"] = sweep
    return out


def main():
    result = {"command": "python bench/studies/study_decode_start.py", "grid_gap": grid_gap()}
    print("grid gap:", result["grid_gap"])
    result["rotation_agreement"] = rotation_agreement()
    print("rotation agreement (fraction of voxels, two group elements):", result["rotation_agreement"])
    result["default_3d"] = default_3d()
    print("default-3d on the sample volume:", result["default_3d"])
    out = write_json(RESULTS / "decode_start.json", result, indent=1)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

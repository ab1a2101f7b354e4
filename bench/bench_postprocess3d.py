"""Per-voxel costs after a 3D network's forward pass: cubic-harmonic decoding and block grain labelling.

    python bench/bench_postprocess3d.py [--n 20000] [--block 128] [--repeats 3]

- ``sh_to_quat``: decoding the octahedral models' cubic-harmonic output (l = 4, and l = 4 + 6) to
  quaternions, on exact coefficients and on coefficients with Gaussian noise of 0.05 (a trained
  network's output is off the harmonic manifold; noisy rows take the multi-start path);
- ``sh_to_quat`` on real outputs: the bundled ``default-3d``'s raw field on a ``--crop``³ corner of
  the sample volume (trained outputs lie further off the manifold than the noisy rows: most voxels
  take the multi-start path);
- ``label_block``: the streaming engine's per-block grain labelling of a quaternion map (cubic
  misorientation rule, face connectivity, block statistics with symmetry-reduced orientation sums)
  on a ``block³`` map of 32³ cells with 0.01 noise and 5 % boundary voxels, as the engine runs it
  for every block.

Best of ``--repeats`` wall times after one untimed call, voxels/s; writes ``bench/results/postprocess3d.json``. The CPU is
shared on this machine, so compare runs made back to back.
"""

from __future__ import annotations

import argparse
import platform
import warnings
from pathlib import Path

import numpy as np

from _common import RESULTS, ROOT, best_time, write_json

warnings.filterwarnings("ignore")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000, help="voxels per decoding run")
    ap.add_argument("--block", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--crop", type=int, default=48, help="side of the sample-volume crop for the default-3d row")
    ap.add_argument("--out", type=Path, default=RESULTS / "postprocess3d.json")
    args = ap.parse_args()

    from micro_sym.orientation.cubic_harmonics import quat_to_sh4, sh_to_quat
    from micro_sym.grains.blockwise import label_block

    rng = np.random.default_rng(0)
    q = rng.normal(size=(args.n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    rows = []
    for degrees in ((4,), (4, 6)):
        exact = quat_to_sh4(q, degrees=degrees)
        noisy = exact + 0.05 * rng.normal(size=exact.shape)
        for name, c in (("exact", exact), ("noise 0.05", noisy)):
            s = best_time(lambda: sh_to_quat(c, degrees=degrees), args.repeats)
            rows.append({"step": "sh_to_quat", "degrees": list(degrees), "input": name, "voxels": args.n,
                         "seconds": s, "voxels_per_s": args.n / s})
            print(f"sh_to_quat l={'+'.join(map(str, degrees)):<4} {name:>10}: {args.n / s:>10,.0f} voxels/s")

    real = _default_3d_field(args.crop)
    s = best_time(lambda: sh_to_quat(real, degrees=(4,)), args.repeats)
    rows.append({"step": "sh_to_quat", "degrees": [4], "input": f"default-3d, sample {args.crop}³", "voxels": len(real),
                 "seconds": s, "voxels_per_s": len(real) / s})
    print(f"sh_to_quat l=4    default-3d: {len(real) / s:>10,.0f} voxels/s")

    n = args.block
    cells = rng.normal(size=(4,) + (max(n // 32, 1),) * 3)
    quats = np.kron(cells, np.ones((1, 32, 32, 32)))[(slice(None),) + (slice(0, n),) * 3]
    quats = quats + 0.01 * rng.normal(size=quats.shape)
    quats = (quats / np.linalg.norm(quats, axis=0, keepdims=True)).astype(np.float32)
    boundary = (rng.random((n,) * 3) < 0.05).astype(np.float32)
    s = best_time(lambda: label_block(quats, boundary, symmetry="cubic", threshold=5.0), args.repeats)
    rows.append({"step": "label_block", "block": [n] * 3, "seconds": s, "voxels_per_s": n**3 / s})
    print(f"label_block {n}³ cubic: {s:.2f} s, {n**3 / s:,.0f} voxels/s")

    out = write_json(args.out, {"command": "python bench/bench_postprocess3d.py", "machine": platform.machine(),
                                "repeats": args.repeats, "rows": rows}, indent=1)
    print(f"wrote {out}")


def _default_3d_field(crop: int) -> np.ndarray:
    """The bundled default-3d's raw l = 4 coefficients on a crop of the sample volume, (voxels, 9)."""
    import tifffile

    from micro_sym.inference import load_network
    from micro_sym.models.normalize import intensity_range

    net = load_network("default-3d")
    vol = tifffile.imread(ROOT / "sample_data" / "volume" / "images" / "sample_000.tif")[:crop, :crop, :crop]
    lo, hi = intensity_range(vol)
    raw = net.forward(net.normalize(vol, lo, hi)[None])[0]
    return np.moveaxis(raw[1:], 0, -1).reshape(-1, raw.shape[0] - 1).astype(np.float64)


if __name__ == "__main__":
    main()

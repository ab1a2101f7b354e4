"""Can the 3D grain rule compare neighbours by their cubic-harmonic outputs instead of decoded orientations?

Usage::

    python bench/studies/harmonic_pair_test.py [--data data/atoms3d_heldout_imaging] [--model atoms-3d] [--volumes 4]

Decoding every voxel's orientation from the network's l = 4 (+6) harmonics costs more than the network
itself (about 110k voxels/s on this machine's two cores), and 1024³ voxels would take hours. The
harmonic field of an orientation R is D(R) c₀, with D orthogonal, so the normalized inner product of
two voxels' fields depends only on R₁⁻¹R₂; it is 1 exactly when they are cubic-equivalent, and for a
small misorientation θ it falls as 1 - κθ² whatever the axis (the cubic group leaves only the
isotropic quadratic form). If a threshold on ``1 - <h₁, h₂>`` makes the same decisions as the grain
rule's 5° misorientation test on real network outputs, grains can be built without decoding voxels,
and only each grain's mean field needs decoding (it is linear).

For the volumes of ``--data`` (run through ``--model`` at the measured lattice period, as `segment`
does) this compares, for every pair of face neighbours off the predicted boundaries, the decoded
misorientation ≤ 5° with ``1 - <h₁, h₂> ≤ τ``: ``τ`` from exact harmonics (a 5° rotation about random
axes), and the best ``τ`` for these outputs; the agreement of the decisions at both. Writes
bench/results/harmonic_pair_test.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/, for _common
from _common import RESULTS, write_json  # noqa: E402

THRESHOLD_DEG = 5.0


def normalized_fields(y: np.ndarray, degrees) -> np.ndarray:
    """``(..., d)`` harmonic coefficients of raw outputs ``(C, ...)``, each degree scaled to unit length and
    the degrees averaged (so that the inner product of two voxels is 1 for equal orientations)."""
    from micro_sym.orientation.cubic_harmonics import _normalize_blocks

    h = np.moveaxis(y[1:], 0, -1).astype(np.float64)
    flat = _normalize_blocks(h.reshape(-1, h.shape[-1]), degrees) / np.sqrt(len(degrees))
    return flat.reshape(h.shape)


def exact_tau(degrees, angle_deg: float = THRESHOLD_DEG, n: int = 2000, seed: int = 0) -> dict:
    """``1 - <h(R), h(R δ)>`` for exact fields of random R and rotations δ by ``angle_deg`` about random axes."""
    from micro_sym.orientation import quat_multiply
    from micro_sym.orientation.cubic_harmonics import quat_to_sh4

    rng = np.random.default_rng(seed)
    q = rng.standard_normal((n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    axis = rng.standard_normal((n, 3))
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    half = np.deg2rad(angle_deg) / 2
    delta = np.concatenate([np.full((n, 1), np.cos(half)), np.sin(half) * axis], axis=1)
    a = quat_to_sh4(q, degrees)
    b = quat_to_sh4(quat_multiply(q, delta), degrees)
    y = np.stack([np.zeros(n), *a.T])[:, :, None]
    z = np.stack([np.zeros(n), *b.T])[:, :, None]
    d = 1 - np.sum(normalized_fields(y, degrees) * normalized_fields(z, degrees), axis=-1)
    return {"median": float(np.median(d)), "min": float(d.min()), "max": float(d.max())}


def neighbour_pairs(maps: dict, fields: np.ndarray, boundary_threshold: float = 0.5):
    """(misorientation in degrees, 1 - <h1, h2>) of every pair of face neighbours off the boundaries."""
    from micro_sym.orientation import misorientation_cubic

    q = np.moveaxis(maps["orientation"], 0, -1)
    inside = (maps["boundary"] < boundary_threshold) & np.isfinite(q).all(-1)
    mis, dist = [], []
    for axis in range(3):
        lo = tuple(slice(0, -1) if a == axis else slice(None) for a in range(3))
        hi = tuple(slice(1, None) if a == axis else slice(None) for a in range(3))
        ok = inside[lo] & inside[hi]
        mis.append(misorientation_cubic(q[lo][ok], q[hi][ok]))
        dist.append(1 - np.sum(fields[lo][ok] * fields[hi][ok], axis=-1))
    return np.concatenate(mis), np.concatenate(dist)


def agreement(mis, dist, tau) -> float:
    return float(np.mean((mis <= THRESHOLD_DEG) == (dist <= tau)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="data/atoms3d_heldout_imaging")
    ap.add_argument("--model", default="atoms-3d")
    ap.add_argument("--volumes", type=int, default=4)
    ap.add_argument("--out", type=Path, default=RESULTS / "harmonic_pair_test.json")
    args = ap.parse_args()

    from micro_sym.inference import load_network
    from micro_sym.inference.rescale import adapt_to_image
    from micro_sym.inference.tiles import predict_raw
    from micro_sym.training.train3d import load_volumes

    net = load_network(args.model)
    degrees = (4, 6) if net.orientation == "harmonics46" else (4,)
    rows, all_mis, all_dist = [], [], []
    for name, image, _grains, _quats in load_volumes(args.data, None)[: args.volumes]:
        adapted, scale, _ring = adapt_to_image(net, image, lattice_mask=False)  # period measured, as `segment` does
        y = predict_raw(adapted, image)
        maps = net.decode(y)
        mis, dist = neighbour_pairs(maps, normalized_fields(y, degrees))
        all_mis.append(mis)
        all_dist.append(dist)
        rows.append({"volume": name, "pairs": int(len(mis)), "scale": (scale or {}).get("scale"),
                     "fraction_within_threshold": float(np.mean(mis <= THRESHOLD_DEG))})
        print(f"{name}: {len(mis):,} pairs, {rows[-1]['fraction_within_threshold']:.3f} within {THRESHOLD_DEG:g}°", flush=True)
    mis, dist = np.concatenate(all_mis), np.concatenate(all_dist)
    tau = exact_tau(degrees)
    candidates = np.quantile(dist, np.linspace(0.01, 0.99, 393))
    scores = [agreement(mis, dist, t) for t in candidates]
    best = int(np.argmax(scores))
    result = {
        "model": args.model, "data": args.data, "degrees": list(degrees), "threshold_deg": THRESHOLD_DEG,
        "volumes": rows, "pairs": int(len(mis)),
        "exact_tau": tau,
        "agreement_at_exact_tau": agreement(mis, dist, tau["median"]),
        "best_tau": float(candidates[best]), "agreement_at_best_tau": scores[best],
        "pairs_within_threshold": float(np.mean(mis <= THRESHOLD_DEG)),
    }
    write_json(args.out, result)
    print(f"exact tau for {THRESHOLD_DEG:g}°: median {tau['median']:.2e} (min {tau['min']:.2e}, max {tau['max']:.2e}); "
          f"agreement with the decoded test {result['agreement_at_exact_tau']:.4f}; best tau {result['best_tau']:.2e}: "
          f"{result['agreement_at_best_tau']:.4f} ({len(mis):,} pairs, {result['pairs_within_threshold']:.3f} within)")


if __name__ == "__main__":
    main()

"""3D grains from the network's harmonic field, without decoding voxels: scored on grain F1.

Usage::

    python bench/studies/study_harmonic_grains.py [--model atoms-3d] [--tune data/atoms3d_cubic_val]
        [--heldout data/atoms3d_heldout_imaging]

``harmonic_pair_test.py`` showed that ``1 - <h₁, h₂>`` of two neighbours' normalized l = 4 (+6) fields
makes the same decision as the decoded 5° test on only about 91 % of pairs. That compares two
rules, neither of which is the truth; this study scores both against the true grains.

For every volume the network runs once (at the measured lattice period, as ``micro-sym evaluate``
does). Grains then come from the seeded rule twice over the same boundary map: with the decoded
quaternions (the product today), and with the normalized harmonic fields, neighbours joined where
``<h₁, h₂> >= 1 - τ`` (seeds) and the flood's tie-break by the same inner product. Each harmonic
grain's orientation is the decode of its mean field (the field is linear in the orientation
distribution, so the mean decodes to a mean orientation): one decode per grain instead of one per
voxel. ``τ`` is chosen on the ``--tune`` volumes (the model's validation set) among multiples of the
exact-field value for 5° and then applied unchanged to ``--heldout``. Writes
bench/results/harmonic_grains.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/, for _common
from _common import RESULTS, write_json  # noqa: E402
from harmonic_pair_test import exact_tau, normalized_fields  # noqa: E402

THRESHOLD_DEG = 5.0
MIN_SIZE = 20  # micro-sym evaluate's 3D default
TAU_FACTORS = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)


def pair_dots(h: np.ndarray) -> list[np.ndarray]:
    """Per axis, ``<h(p), h(p + e_axis)>`` (float32, shape of the pair slices)."""
    out = []
    for axis in range(3):
        lo = tuple(slice(0, -1) if a == axis else slice(None) for a in range(3))
        hi = tuple(slice(1, None) if a == axis else slice(None) for a in range(3))
        out.append(np.einsum("...c,...c->...", h[lo], h[hi]).astype(np.float32))
    return out


def components(mask: np.ndarray, joins: list[np.ndarray]) -> np.ndarray:
    """Connected components of ``mask`` points over the face pairs where ``joins[axis]`` holds (int64, 0 outside)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    index = np.arange(mask.size).reshape(mask.shape)
    rows, cols = [], []
    for axis, ok in enumerate(joins):
        lo = tuple(slice(0, -1) if a == axis else slice(None) for a in range(3))
        hi = tuple(slice(1, None) if a == axis else slice(None) for a in range(3))
        both = ok & mask[lo] & mask[hi]
        rows.append(index[lo][both])
        cols.append(index[hi][both])
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(r.size, np.int8), (r, c)), shape=(mask.size, mask.size))
    _, comp = connected_components(graph, directed=False)
    comp = comp.reshape(mask.shape)
    labels = np.zeros(mask.shape, np.int64)
    _, first = np.unique(np.where(mask, comp, -1), return_inverse=True)
    labels[mask] = first.reshape(mask.shape)[mask]  # -1 sorts first, so mask components get 1, 2, ...
    return labels


def harmonic_grains(h: np.ndarray, boundary: np.ndarray, tau: float, rule: dict, boundary_threshold: float = 0.5):
    """The seeded rule (:func:`micro_sym.grains.seeded.seeded_grains`) with harmonic inner products for misorientations."""
    from micro_sym.grains.reconstruct import filter_small_grains
    from micro_sym.grains.seeded import core_mask, flood

    valid = np.isfinite(h).all(-1) & (boundary < boundary_threshold)
    core = valid & core_mask(boundary >= boundary_threshold, rule["core_radius"])
    dots = pair_dots(h)
    seeds = components(core, [d >= 1 - tau for d in dots])
    seeds = filter_small_grains(seeds, MIN_SIZE, small="drop").astype(np.int64)
    free = valid & (seeds == 0)
    return flood(seeds, boundary, free, dots, rule["steps"]).astype(np.uint32)


def grain_mean_orientations(h: np.ndarray, labels: np.ndarray, degrees) -> np.ndarray:
    """Each grain's decoded mean field painted over it, ``(4, *shape)`` (NaN outside grains)."""
    from micro_sym.orientation.cubic_harmonics import sh_to_quat

    n = int(labels.max()) + 1
    flat = labels.ravel()
    sums = np.stack([np.bincount(flat, weights=h[..., c].ravel(), minlength=n) for c in range(h.shape[-1])], -1)
    table = np.full((n, 4), np.nan)
    if n > 1:
        table[1:] = sh_to_quat(sums[1:], degrees)
    return np.moveaxis(table[labels], -1, 0)


def scores(labels, q, grains, quats) -> dict:
    from micro_sym.metrics3d import sigma3_boundaries, vacuum_unassigned
    from micro_sym.orientation import misorientation_cubic
    from micro_sym.training.train3d import boundary_from_grains, grain_f1

    true_boundary = boundary_from_grains(grains)
    row = {"grain_f1": grain_f1(labels, np.where(true_boundary, 0, grains)), "grains": int(labels.max())}
    inside = ~true_boundary & (labels > 0)
    err = misorientation_cubic(np.moveaxis(q, 0, -1)[inside], np.moveaxis(quats, 0, -1)[inside])
    row["median_misorientation_deg"] = float(np.nanmedian(err))
    row |= vacuum_unassigned(labels, grains)
    row |= sigma3_boundaries(labels, q, grains, quats)
    return row


def run_volume(net, image, grains, quats, taus, rule, degrees) -> dict:
    from micro_sym.grains.rules import grains_by_rule
    from micro_sym.inference.rescale import rescale_for_input
    from micro_sym.inference.tiles import predict_raw

    run, _ = rescale_for_input(net, image, period=None)
    y = predict_raw(run, image)
    boundary = net.boundary_of(y)
    t0 = time.perf_counter()
    q = net.decode(y)["orientation"]
    t_decode = time.perf_counter() - t0
    t0 = time.perf_counter()
    decoded = grains_by_rule(q, boundary, rule, symmetry="cubic", min_size=MIN_SIZE)
    t_decoded_rule = time.perf_counter() - t0
    out = {"decoded": scores(decoded, q, grains, quats) | {"seconds": t_decode + t_decoded_rule,
                                                           "decode_seconds": t_decode}}
    # the decoded rule's grains with each grain's mean field: isolates the per-grain orientation
    out["decoded_grain_mean"] = scores(decoded, grain_mean_orientations(normalized_fields(y, degrees), decoded, degrees),
                                       grains, quats)
    t0 = time.perf_counter()
    h = normalized_fields(y, degrees).astype(np.float32)
    t_fields = time.perf_counter() - t0
    for factor, tau in taus.items():
        t0 = time.perf_counter()
        labels = harmonic_grains(h, boundary, tau, rule)
        qg = grain_mean_orientations(h, labels, degrees)
        out[f"harmonic_x{factor:g}"] = scores(labels, qg, grains, quats) | {"seconds": t_fields + time.perf_counter() - t0}
    return out


def pooled(rows: list[dict]) -> dict:
    from micro_sym.training.train3d import pool3d

    return {m: {k: v for k, v in pool3d([r[m] for r in rows]).items() if not isinstance(v, (list, dict))}
            | {"seconds": float(sum(r[m]["seconds"] for r in rows if "seconds" in r[m]))}
            for m in rows[0]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="atoms-3d")
    ap.add_argument("--tune", default="data/atoms3d_cubic_val")
    ap.add_argument("--heldout", default="data/atoms3d_heldout_imaging")
    ap.add_argument("--out", type=Path, default=RESULTS / "harmonic_grains.json")
    args = ap.parse_args()

    from micro_sym.grains.rules import network_rule
    from micro_sym.inference import load_network
    from micro_sym.training.train3d import load_volumes

    net = load_network(args.model)
    degrees = (4, 6) if net.orientation == "harmonics46" else (4,)
    tau5 = exact_tau(degrees, THRESHOLD_DEG)["median"]
    taus = {f: f * tau5 for f in TAU_FACTORS}
    rule = network_rule(THRESHOLD_DEG, 3)
    result = {"model": args.model, "degrees": list(degrees), "tau_5deg": tau5, "rule": rule, "min_size": MIN_SIZE}
    for role, data in (("tune", args.tune), ("heldout", args.heldout)):
        rows = []
        for name, image, grains, quats in load_volumes(data, None):
            rows.append(run_volume(net, image, grains, quats, taus, rule, degrees))
            print(f"{role} {name}: " + "  ".join(f"{m} {r['grain_f1']:.3f}" for m, r in rows[-1].items()), flush=True)
        result[role] = {"data": data, "pooled": pooled(rows), "volumes": rows}
    best = max(TAU_FACTORS, key=lambda f: result["tune"]["pooled"][f"harmonic_x{f:g}"]["grain_f1"])
    result["chosen_tau_factor"] = best
    write_json(args.out, result)
    for role in ("tune", "heldout"):
        print(f"--- {role} ({result[role]['data']})")
        for m, p in result[role]["pooled"].items():
            print(f"{m:<22} grain F1 {p['grain_f1']:.3f}  misorientation {p['median_misorientation_deg']:.2f}°  "
                  f"vacuum {p['vacuum_unassigned']:.3f}  Σ3 recall {p.get('sigma3_recall', float('nan')):.3f}  "
                  f"{p['seconds']:.1f} s")
    print(f"τ chosen on the tuning volumes: {best:g} × {tau5:.3e}")


if __name__ == "__main__":
    main()

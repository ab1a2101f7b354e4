"""How much of each kind of true interface a 3D network's boundary output finds: Σ3 twin boundaries
against every other grain boundary, on atomistic volumes (docs/design.md §2.5).

Usage::

    python bench/studies/twin_boundary_visibility3d.py [--model atoms-3d ...] [--data data/atoms3d_heldout_imaging]
        [--out FILE]

For every model and volume (the network at its training period, as ``micro-sym evaluate --period
measure`` runs it), each face between two face-adjacent voxels of different true grains (the truth
grown one step into its gaps, as :func:`micro_sym.metrics3d.sigma3_boundaries` does) is a *twin face*
when the two grains are Σ3-related, else an *other face*. Reported, pooled over the volumes:

- ``found``: the share of faces with a boundary probability >= 0.5 on either of its voxels (inside
  true grains: a false boundary);
- ``field_length``: the median length of the network's harmonic output on the weaker of the two voxels
  (:func:`micro_sym.orientation.cubic_harmonics` fields have length 1 for one orientation; it falls
  where the network sees two), with the same median over the faces inside true grains at least 4
  voxels from every true boundary (``inside``).

Writes bench/results/twin_boundary_visibility3d.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/, for _common
from _common import RESULTS, log, write_json  # noqa: E402


def face_values(raw, grains, quats):
    """Per face kind ("twin", "other", "inside"): (boundary found?, weaker voxel's field length) arrays."""
    from scipy import ndimage

    from micro_sym.grains.stats import grow_into_gaps
    from micro_sym.metrics3d import _axis_pair_slices, sigma3_faces
    from micro_sym.training.train3d import boundary_from_grains

    prob = 1 / (1 + np.exp(-raw[0].astype(np.float64)))
    length = np.linalg.norm(raw[1:10], axis=0)  # the l = 4 block
    lab = grains.astype(np.int64)
    grown = grow_into_gaps(lab, 1)
    twin = sigma3_faces(lab, quats)
    far = ndimage.distance_transform_edt(~boundary_from_grains(grains)) >= 4
    out = {k: ([], []) for k in ("twin", "other", "inside")}
    for axis, tw in enumerate(twin):
        lo, hi = _axis_pair_slices(3, axis)
        a, b = grown[lo], grown[hi]
        boundary = (a != b) & (a > 0) & (b > 0)
        kinds = {"twin": tw & boundary, "other": boundary & ~tw, "inside": (a == b) & (a > 0) & far[lo] & far[hi]}
        found = np.maximum(prob[lo], prob[hi]) >= 0.5
        weaker = np.minimum(length[lo], length[hi])
        for k, m in kinds.items():
            out[k][0].append(found[m])
            out[k][1].append(weaker[m])
    return {k: (np.concatenate(f), np.concatenate(s)) for k, (f, s) in out.items()}


def main():
    from micro_sym.inference.network import as_network
    from micro_sym.inference.rescale import rescale_for_input
    from micro_sym.inference.tiles import predict_raw
    from micro_sym.models import load_model
    from micro_sym.training.train3d import load_volumes

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", nargs="+", default=["atoms-3d"])
    ap.add_argument("--data", default="data/atoms3d_heldout_imaging")
    ap.add_argument("--out", default=str(RESULTS / "twin_boundary_visibility3d.json"))
    args = ap.parse_args()

    volumes = [v for v in load_volumes(args.data, None) if v[3] is not None]
    result = {}
    for model in args.model:
        net = as_network(load_model(model, device="cpu", export=True), export=False)
        pooled = {k: ([], []) for k in ("twin", "other", "inside")}
        for name, img, grains, quats in volumes:
            run, _ = rescale_for_input(net, img, period=None)
            for k, (f, s) in face_values(predict_raw(run, img, device="cpu"), grains, quats).items():
                pooled[k][0].append(f)
                pooled[k][1].append(s)
            log(f"{model} {name}")
        result[model] = {k: {"faces": int(sum(len(x) for x in f)), "found": float(np.concatenate(f).mean()),
                             "field_length": float(np.median(np.concatenate(s)))} for k, (f, s) in pooled.items()}
        r = result[model]
        log(f"{model}: boundary found on twin faces {r['twin']['found']:.2f}, other faces {r['other']['found']:.2f}, "
            f"inside {r['inside']['found']:.3f}; field length twin {r['twin']['field_length']:.2f}, other "
            f"{r['other']['field_length']:.2f}, inside {r['inside']['field_length']:.2f}")
    write_json(args.out, {"what": "share of true Σ3 twin faces and other grain-boundary faces that the boundary output finds",
                          "command": "python bench/studies/twin_boundary_visibility3d.py " + " ".join(sys.argv[1:]),
                          "data": args.data, "models": result})


if __name__ == "__main__":
    main()

"""Nanoparticles in vacuum: is a single crystal one grain, a decahedron five, an icosahedron twenty? (issue 27)

    python bench/bench_particles3d.py [--model atoms-3d] [--seeds 3]

Particles of four shapes (a single-crystal truncated octahedron and cuboctahedron, a decahedron of
five twin domains, an icosahedron of twenty) are built as atoms and imaged with the held-out imaging
setting (``synth-atoms3d-heldout-imaging``'s particle variant: fcc Pt on a carbon support, 0.6 Å
voxels, a 60° missing wedge, wider and longer atom blobs and more noise than any training volume),
``--seeds`` particles of each shape. The model runs as ``micro-sym evaluate --period measure`` runs it
(its training period, grains by the seeded rule at 5°, seeds under 20 voxels dropped). Reported per
shape: the true domains (grains of the truth), the predicted grains, how often their number equals the
truth's, grain F1 (IoU > 0.5 against the boundary-zeroed truth) and the vacuum left unassigned.
atoms-3d trained on single-crystal and decahedral particles (Au, Pt) at another imaging setting and
never on icosahedra. Prints a table and writes ``bench/results/particles3d.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import numpy as np
from _common import RESULTS, machine_info, write_json

warnings.filterwarnings("ignore", message=".*py3nj.*")

CONFIG, PARTICLE_VARIANT = "synth-atoms3d-heldout-imaging", 3
SHAPES = {"truncated_octahedron": "single crystal", "cuboctahedron": "single crystal",
          "decahedron": "5 twin domains", "icosahedron": "20 twin domains"}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="atoms-3d", help="bundled 3D model name or model file")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", default=str(RESULTS / "particles3d.json"))
    args = ap.parse_args()

    from micro_sym.inference.network import as_network
    from micro_sym.metrics3d import vacuum_unassigned
    from micro_sym.models import load_model
    from micro_sym.synth.atoms3d import load_atoms3d_config, synth_atoms3d
    from micro_sym.training.train3d import boundary_from_grains, grain_f1, network_grains

    net = as_network(load_model(args.model, device="cpu", export=True), export=False)
    base = load_atoms3d_config(CONFIG).variant(PARTICLE_VARIANT)
    rows = []
    for shape, what in SHAPES.items():
        cfg = base.model_copy(update={"particle": base.particle.model_copy(update={"shape": shape})})
        for seed in range(args.seeds):
            t = time.perf_counter()
            sample = synth_atoms3d(cfg, seed=seed)
            img, truth = np.asarray(sample.image, np.float32), np.asarray(sample.grains)
            _, labels = network_grains(net, img, period="measure")
            rows.append({"shape": shape, "truth": what, "seed": seed, "true_grains": int(truth.max()),
                         "predicted_grains": int(labels.max()),
                         "grain_f1": grain_f1(labels, np.where(boundary_from_grains(truth), 0, truth)),
                         "vacuum_unassigned": vacuum_unassigned(labels, truth)["vacuum_unassigned"],
                         "seconds": round(time.perf_counter() - t, 1)})
            r = rows[-1]
            print(f"{shape:<22} seed {seed}: {r['true_grains']:>2} true, {r['predicted_grains']:>2} predicted, "
                  f"grain F1 {r['grain_f1']:.3f}, vacuum unassigned {r['vacuum_unassigned']:.3f} ({r['seconds']} s)",
                  flush=True)
    summary = {}
    for shape in SHAPES:
        mine = [r for r in rows if r["shape"] == shape]
        summary[shape] = {"truth": SHAPES[shape], "true_grains": [r["true_grains"] for r in mine],
                          "predicted_grains": [r["predicted_grains"] for r in mine],
                          "count_right": sum(r["predicted_grains"] == r["true_grains"] for r in mine) / len(mine),
                          "grain_f1": float(np.mean([r["grain_f1"] for r in mine])),
                          "vacuum_unassigned": float(np.mean([r["vacuum_unassigned"] for r in mine]))}
    print(f"\n{'shape':<22}{'truth':>20}{'true':>12}{'predicted':>14}{'count right':>13}{'grain F1':>10}{'vacuum':>8}")
    for shape, s in summary.items():
        print(f"{shape:<22}{s['truth']:>20}{str(s['true_grains']):>12}{str(s['predicted_grains']):>14}"
              f"{s['count_right']:>13.2f}{s['grain_f1']:>10.3f}{s['vacuum_unassigned']:>8.3f}")
    write_json(args.out, {"command": "python bench/bench_particles3d.py " + " ".join(sys.argv[1:]),
                          "model": args.model, "config": CONFIG, "variant": PARTICLE_VARIANT, "summary": summary,
                          "volumes": rows, "machine": machine_info(with_torch=True)})


if __name__ == "__main__":
    main()

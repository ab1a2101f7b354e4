"""Grain reconstruction on a real EBSD map against DefDAP's own grain maps.

The DefDAP Ni-superalloy test map (``../shared/data/defdap_ebsd/testDataEBSD.cpr``, 359 × 243, cubic)
is reconstructed with DefDAP's rule (5°, 4-connected, neighbour-to-neighbour test, grains under the
minimum size dropped) for minimum sizes 0, 10 and 100 px, and compared with the grain maps DefDAP
wrote for the same settings (``ebsd_grains_5deg_{0,10,100}.npz`` beside it): grain counts, same
partition (same grains up to renumbering) and same numbering (identical arrays), and the time of
each ``reconstruct_grains`` call. ``pytest tests -k defdap_partition`` asserts the same; this script
keeps the figures. Prints a table and writes ``bench/results/ebsd_grains.json``.

    python bench/bench_ebsd_grains.py
"""

from __future__ import annotations

import time

import numpy as np
from _common import EBSD_PATH, RESULTS, machine_info, write_json

from micro_sym.grains import reconstruct_grains
from micro_sym.io.ebsd import read_ebsd

MIN_SIZES = (0, 10, 100)


def same_partition(a, b) -> bool:
    """Same grains up to renumbering (0 = no grain in both)."""
    if a.shape != b.shape or not np.array_equal(a == 0, b == 0):
        return False
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


def main():
    m = read_ebsd(EBSD_PATH)
    rows = []
    for min_size in MIN_SIZES:
        ref = np.load(EBSD_PATH.parent / f"ebsd_grains_5deg_{min_size}.npz")["grains"]
        ref = np.where(ref > 0, ref, 0)  # DefDAP: -2 = dropped small grain, 0 = not indexed
        t = time.perf_counter()
        lab = reconstruct_grains(m.quaternions, symmetry="cubic", threshold=5.0, connectivity=1, mask=m.mask,
                                 phase=m.phase, min_size=min_size, small="drop")
        seconds = time.perf_counter() - t
        rows.append({"min_size": min_size, "grains": int(lab.max()), "defdap_grains": int(ref.max()),
                     "same_partition": bool(same_partition(lab, ref)), "same_numbering": bool(np.array_equal(lab, ref)),
                     "seconds": round(seconds, 3)})
    print(f"{'min size':>8} {'grains':>7} {'DefDAP':>7} {'same partition':>15} {'same numbering':>15} {'s':>6}")
    for r in rows:
        print(f"{r['min_size']:>8} {r['grains']:>7} {r['defdap_grains']:>7} {r['same_partition']!s:>15} "
              f"{r['same_numbering']!s:>15} {r['seconds']:>6.3f}")
    out = {"benchmark": "reconstruct_grains on the DefDAP EBSD map vs DefDAP's grain maps",
           "map": {"file": EBSD_PATH.name, "shape": list(m.quaternions.shape[1:]), "indexed": int(m.mask.sum())},
           "rule": {"threshold_deg": 5.0, "connectivity": 4, "symmetry": "cubic", "small": "drop"},
           "rows": rows, "all_equal": all(r["same_numbering"] for r in rows),
           "machine": machine_info()}
    print(f"wrote {write_json(RESULTS / 'ebsd_grains.json', out)}")


if __name__ == "__main__":
    main()

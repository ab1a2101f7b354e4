"""Cubic-harmonic orientation field: how exactly exact coefficients decode back to the orientation.

3,000 random orientations (``random_quaternions``, seed 0) are encoded with ``quat_to_sh4`` (degree
4 alone, and degrees 4 + 6, the 3D networks' heads) and decoded with ``sh_to_quat``; the error is the
cubic misorientation between the orientation and its decode (degrees): max, median, and the decode's
time. ``pytest tests -k decode_recovers_random_orientations`` asserts the max is below 1e-4°; this
script keeps the figures. Decode speed on noisy and real network outputs is
``bench/bench_postprocess3d.py``. Prints a table and writes ``bench/results/decode_accuracy.json``.

    python bench/bench_decode_accuracy.py
"""

from __future__ import annotations

import time

import numpy as np
from _common import RESULTS, machine_info, write_json

from micro_sym.orientation import misorientation_cubic, random_quaternions
from micro_sym.orientation.cubic_harmonics import quat_to_sh4, sh_to_quat

N, SEED = 3000, 0


def main():
    q = random_quaternions(N, np.random.default_rng(SEED))
    rows = []
    for degrees in ((4,), (4, 6)):
        c = quat_to_sh4(q, degrees)
        t = time.perf_counter()
        decoded = sh_to_quat(c, degrees)
        seconds = time.perf_counter() - t
        err = misorientation_cubic(q, decoded)
        rows.append({"degrees": list(degrees), "max_error_deg": float(err.max()),
                     "median_error_deg": float(np.median(err)), "decode_s": round(seconds, 3)})
        print(f"l = {'+'.join(map(str, degrees)):4s} max error {err.max():.2e}°  median {np.median(err):.2e}°  "
              f"decode {seconds:.2f} s")
    out = {"benchmark": "cubic-harmonic encode -> decode of exact coefficients", "orientations": N, "seed": SEED,
           "rows": rows, "max_error_deg": max(r["max_error_deg"] for r in rows),
           "machine": machine_info()}
    print(f"wrote {write_json(RESULTS / 'decode_accuracy.json', out)}")


if __name__ == "__main__":
    main()

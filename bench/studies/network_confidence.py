"""Can ``--method auto`` choose by the network's own confidence? (issue 26)

Usage::

    python bench/studies/network_confidence.py [--size 384] [--n 3] [--out FILE]

``--method auto`` runs the filter bank below a fringe SNR of 1.13 dB, a threshold fitted on the
analytic renderer. The issue asks for a choice by what the image and the network say instead. This
study measures, per image, two signals of the network's own confidence over the pixels the lattice
mask keeps (ring contrast >= 1), with the network auto would run, at the measured period:

- orientation certainty: the median length of the predicted ``(cos kθ, sin kθ)`` (trained with a
  squared error, so its length is what the network expects of its own angle);
- boundary certainty: the mean of ``|2p - 1|`` over the boundary probability ``p``;

and the fringe SNR auto uses today. Two sets of images:

- calibration (fit): the analytic images of ``bench/provenance/calibrate_method_choice.py`` (same
  seeds, robust-2d), with each image's grain F1 of robust-2d and of the filter bank from
  ``method_choice.json``. For each signal, the threshold ("filter bank below") that maximizes the mean
  grain F1 of the choice.
- atomistic held-out films (generalization; ``bench/_data/atoms2d``, made by
  ``bench/studies/atoms2d_heldout.py``): the same signals per image; the grain F1 of auto's network and
  of the filter bank per condition from the result files in :data:`HELDOUT_RESULTS` (pooled over the
  condition's two images; only conditions where auto ran the network on both images). Each calibrated
  threshold applied to these images: the mean grain F1 of its choice (an image counts its condition's
  score of the method chosen), against always the network.

Writes bench/results/network_confidence.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/, for _common
from _common import DATA, RESULTS, calibration_jobs, log, write_json  # noqa: E402

#: Result files of atoms2d_heldout.py with auto and classical per condition (the first file naming a
#: condition gives its scores).
HELDOUT_RESULTS = ("atoms2d_heldout_mask_after.json", "atoms2d_heldout_hex_mask_after.json",
                   "atoms2d_heldout_fringes_edge.json", "atoms2d_heldout_lowdose.json")
SIGNALS = ("fringe_snr_db", "orientation_certainty", "boundary_certainty")


def confidence_signals(auto, networks: dict, image: np.ndarray) -> dict:
    """The fringe SNR and the network's two certainties over the lattice mask, for one image."""
    from micro_sym.classical.crystallinity import crystalline_contrast
    from micro_sym.inference.whole_image import segment_image

    record = auto.decide(image)
    row = {"fringe_snr_db": record["fringe_snr_db"], "lattice": record["lattice"]}
    if record["lattice"] not in networks:
        return row
    maps = segment_image(networks[record["lattice"]], image, period=record["period_px"])
    mask = crystalline_contrast(image, record["measured"]["ring_frequency"]) >= 1
    if not mask.any():
        return row
    p = np.asarray(maps["boundary"], np.float64)[mask]
    return row | {"orientation_certainty": float(np.median(maps["confidence"][mask])),
                  "boundary_certainty": float(np.abs(2 * p - 1).mean()), "mask_fraction": float(mask.mean())}


def best_threshold(rows, signal: str) -> tuple[float, float]:
    """``(threshold, mean grain F1)``: "filter bank below" maximizing the mean grain F1 of the choice."""
    v = sorted({r[signal] for r in rows})
    cands = [v[0] - 1e-3] + [(a + b) / 2 for a, b in zip(v, v[1:])] + [v[-1] + 1e-3]
    scored = [(choice_f1(rows, signal, t), t) for t in cands]
    f1, t = max(scored)
    return float(t), f1


def choice_f1(rows, signal: str, t: float) -> float:
    return float(np.mean([r["classical_f1"] if r[signal] < t else r["network_f1"] for r in rows]))


def heldout_scores() -> dict:
    """condition -> (network grain F1, classical grain F1, file), where auto ran the network on every image."""
    out = {}
    for name in HELDOUT_RESULTS:
        for c in json.loads((RESULTS / name).read_text())["conditions"]:
            m = c["methods"]
            if c["condition"] in out or not {"auto", "classical"} <= set(m):
                continue
            if all(s.startswith("auto: network") for s in m["auto"]["cli_says"]):
                out[c["condition"]] = (m["auto"]["grain_f1"], m["classical"]["grain_f1"], name)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=384, help="calibration image size (as calibrate_method_choice.py)")
    ap.add_argument("--n", type=int, default=3, help="calibration images per condition")
    ap.add_argument("--out", type=Path, default=RESULTS / "network_confidence.json")
    args = ap.parse_args(argv)

    import tifffile

    from micro_sym.inference.method_choice import AUTO_MODEL, AUTO_MODELS_BY_LATTICE, CLASSICAL_BELOW_DB, AutoMethod
    from micro_sym.inference.network import as_network
    from micro_sym.models import load_model

    networks = {"square": load_model(AUTO_MODEL, export=True)}
    networks |= {lat: load_model(name, export=True) for lat, name in AUTO_MODELS_BY_LATTICE.items()}
    auto = AutoMethod(as_network(networks["square"], export=False),
                      other_networks={lat: (name, lambda lat=lat: as_network(networks[lat], export=False))
                                      for lat, name in AUTO_MODELS_BY_LATTICE.items()})

    scores = {r["image"]: r for r in json.loads((RESULTS / "method_choice.json").read_text())["images"]}
    calibration = []
    for cond, samples in calibration_jobs(args.size, args.n, 3, 512):
        for name, image, _, _ in samples:
            s = scores[name]
            calibration.append({"condition": cond, "image": name, **confidence_signals(auto, networks, image),
                                "network_f1": s[f"network:{AUTO_MODEL}"]["grain_f1"],
                                "classical_f1": s["classical"]["grain_f1"]})
        log(f"calibration {cond} done")

    heldout, f1 = [], heldout_scores()
    for cond, (net_f1, cl_f1, source) in sorted(f1.items()):
        images = sorted((DATA / "atoms2d" / cond / "images").glob("*.tif"))
        if not images:
            raise SystemExit(f"{cond}: no images under bench/_data/atoms2d; run the command of {source} first")
        for path in images:
            row = confidence_signals(auto, networks, tifffile.imread(path).astype(np.float32))
            heldout.append({"condition": cond, "image": path.name, **row, "network_f1": net_f1,
                            "classical_f1": cl_f1, "scores_from": source})
        log(f"held-out {cond}: network {net_f1:.2f}, classical {cl_f1:.2f}")

    summary = {}
    for signal in SIGNALS:
        cal = [r for r in calibration if signal in r]
        held = [r for r in heldout if signal in r]
        t, cal_f1 = best_threshold(cal, signal)
        summary[signal] = {
            "threshold": t, "calibration_mean_f1": cal_f1,
            "calibration_network_only_f1": choice_f1(cal, signal, -np.inf),
            "heldout_mean_f1": choice_f1(held, signal, t),
            "heldout_network_only_f1": choice_f1(held, signal, -np.inf),
            "heldout_images_to_filter_bank": int(sum(r[signal] < t for r in held)), "heldout_images": len(held),
        }
        s = summary[signal]
        if signal == "fringe_snr_db":  # and auto's threshold as shipped
            s["shipped_threshold"] = CLASSICAL_BELOW_DB
            s["shipped_calibration_mean_f1"] = choice_f1(cal, signal, CLASSICAL_BELOW_DB)
            s["shipped_heldout_mean_f1"] = choice_f1(held, signal, CLASSICAL_BELOW_DB)
            s["shipped_heldout_images_to_filter_bank"] = int(sum(r[signal] < CLASSICAL_BELOW_DB for r in held))
        print(f"{signal:>22}: threshold {t:.3f}; calibration mean grain F1 {cal_f1:.3f} (network only "
              f"{s['calibration_network_only_f1']:.3f}); held-out {s['heldout_mean_f1']:.3f} (network only "
              f"{s['heldout_network_only_f1']:.3f}), {s['heldout_images_to_filter_bank']} of {len(held)} images "
              "to the filter bank")
    s = summary["fringe_snr_db"]
    print(f"shipped {CLASSICAL_BELOW_DB} dB: calibration {s['shipped_calibration_mean_f1']:.3f}, held-out "
          f"{s['shipped_heldout_mean_f1']:.3f}, {s['shipped_heldout_images_to_filter_bank']} images to the filter bank")
    write_json(args.out, {"command": "python bench/studies/network_confidence.py "
                          + " ".join(sys.argv[1:] if argv is None else argv),
                          "what": __doc__.split("\n\n")[2], "summary": summary,
                          "calibration": calibration, "heldout": heldout})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

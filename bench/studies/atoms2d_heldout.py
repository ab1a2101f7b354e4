"""Generalization benchmark on atomistic micrographs (issue 26): renderers no shipped model was trained on.

Usage::

    python bench/studies/atoms2d_heldout.py [--n 2] [--size 512] [--modes haadf hrtem] [--periods 4 8 16 32]
                                          [--doses 5 50] [--methods auto network classical] [--models FILE ...]
                                          [--zone 001|111] [--out FILE]

The images come from ``micro-sym synth atoms2d`` (docs/design.md §6.5): polycrystalline films built as
atoms with ASE and imaged as HAADF-STEM (incoherent Z-contrast, probe, scan distortion) or HRTEM
(abTEM multislice, CTF), with vacuum and amorphous cells (truth: no grain). default-2d, robust-2d
(auto) and the classical method never saw this renderer, so their scores measure generalization to a
new renderer and imaging physics, not fit; atoms-2d was trained on its HAADF-STEM images of fcc and bcc
metals, so for it only the HRTEM and Si rows are generalization (docs/results.md).

Conditions: each imaging mode × projected period (px; Au [001], 2.04 Å, by the pixel size) × dose
(counts/px), plus a "materials" set per mode (Au, Pt fcc; Fe bcc; Si diamond at 0.25 Å/px, periods
7.5-8.2 px) and a "fringes" set per mode (Au at 8 px, 30 % of the cells tilted to show one set of
fringes, which are grains, and 10 % tilted so that no plane set is edge-on, which are not). Grains are about 10 periods across; 10 % of cells are vacuum and 10 % amorphous carbon.
Datasets are generated once under ``bench/_data/atoms2d/`` (resumable). Each image is segmented as a
user would, ``micro-sym segment IMAGE --out OUT --method METHOD`` in a child process (auto: the lattice
measured, the method chosen, resampled to the model's period, lattice mask; network: default-2d, the
same adaptation; classical: the filter bank; each ``--models`` entry: ``--method network --model M``), and
its written maps are scored against the truth:

- boundary F1 and grain F1 (``micro_sym.metrics``, counts pooled over the condition's images);
- median orientation error over grain-interior pixels (all images pooled);
- no lattice left unassigned: the fraction of vacuum/amorphous pixels farther than one period from
  any grain that the output leaves out of every grain (label 0).

``--zone 111`` views every crystal down [111], a hexagonal projection (condition names start with
``hex_``; periods are Au's columns, a/√6 = 1.665 Å; the materials set is bcc W and Fe, diamond Si
and Au at 0.29 Å/px, periods 5.7-8.9 px), and adds polycrystalline monolayers of 2D crystals
(2H-MoS2, graphene) at an 8-px period, with holes and amorphous carbon 5-15 Å thick (HRTEM at 100
times the dose: a monolayer's phase contrast is about 2 %). atoms-2d-hex was trained on HAADF-STEM of fcc metals down
[111] at 6.3-9.8 px, so for it the HAADF Au rows are fit and the HRTEM rows and the bcc and Si
materials are generalization.

``--fringes-only`` replaces the conditions by films whose every grain is tilted to show one set of
fringes (80 % of the cells; vacuum and amorphous the rest), per mode × period × dose and a materials
set: the truth is the fringes' plane normal modulo 180°, and a square network's angles are compared
modulo 90°. fringes-2d was trained on HAADF-STEM of such fcc and bcc films, so for it the HAADF Au rows
are fit and the HRTEM rows and Si are generalization.

Writes bench/results/atoms2d_heldout.json.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/, for _common
from _common import DATA, RESULTS, ROOT, log, write_json  # noqa: E402

AU_PERIOD = {"001": 2.04, "111": 1.665}  # Å, Au fcc projected column spacing: [001] a / 2, [111] a / √6
#: Films as most real ones are: 30 % of the cells tilted to show one set of fringes (grains), 10 % with no
#: plane set edge-on (no grain).
FRINGES = {"fringe_fraction": 0.3, "off_zone_fraction": 0.1}
#: Films whose every grain shows one set of fringes (``--fringes-only``): the truth is the fringes' plane
#: normal modulo 180° (k = 2).
FRINGES_ONLY = {"fringe_fraction": 0.8}
from micro_sym.synth.material import TWO_D_CRYSTALS  # noqa: E402

MATERIALS = {"001": ([{"lattice": "fcc", "element": "Au"}, {"lattice": "fcc", "element": "Pt"},
                      {"lattice": "bcc", "element": "Fe"}, {"lattice": "diamond", "element": "Si"}], 0.25),
             "111": ([{"lattice": "bcc", "element": "W"}, {"lattice": "bcc", "element": "Fe"},
                      {"lattice": "diamond", "element": "Si"}, {"lattice": "fcc", "element": "Au"}], 0.29)}


def conditions(modes, periods, doses, zone="001", fringes_only=False):
    """``(name, config overrides)`` of every condition."""
    out = []
    prefix = "hex_" if zone == "111" else ""
    variants, pixel_size = MATERIALS[zone]
    if fringes_only:
        for mode in modes:
            for period in periods:
                for dose in doses:
                    out.append((f"{prefix}{mode}_fringesonly_p{period}_d{dose}",
                                {"mode": mode, "period": period, "dose": dose, "zone": zone, "film": FRINGES_ONLY}))
            out.append((f"{prefix}{mode}_fringesonly_materials_d50", {"mode": mode, "period": 8, "dose": 50, "zone": zone,
                        "variants": variants, "pixel_size": pixel_size, "film": FRINGES_ONLY}))
        return out
    for mode in modes:
        for period in periods:
            for dose in doses:
                out.append((f"{prefix}{mode}_p{period}_d{dose}", {"mode": mode, "period": period, "dose": dose, "zone": zone}))
        out.append((f"{prefix}{mode}_materials_d50", {"mode": mode, "period": 8, "dose": 50, "variants": variants,
                                                      "pixel_size": pixel_size, "zone": zone}))
        out.append((f"{prefix}{mode}_fringes_d50", {"mode": mode, "period": 8, "dose": 50, "film": FRINGES, "zone": zone}))
        if zone == "111":  # hexagonal 2D crystals, one layer thick, at an 8-px period
            for crystal, (element, a) in TWO_D_CRYSTALS.items():
                # A monolayer's HRTEM phase contrast is about 2 %: below 100 times the dose no lattice
                # stands out of the shot noise (as at the microscope, where 2D crystals get high doses).
                for dose in ([100 * d for d in doses] if mode == "hrtem" else doses):
                    out.append((f"{prefix}{mode}_{crystal}_d{dose}", {
                        "mode": mode, "period": 8, "dose": dose, "zone": zone, "pixel_size": a / 8,
                        "variants": [{"lattice": crystal, "element": element}],
                        "film": {"grain_size": 10 * a, "thickness": (5.0, 15.0)}}))
    return out


def make_dataset(name: str, cond: dict, n: int, size: int, root: Path | None = None, seed_offset: int = 0) -> Path:
    """The condition's images under ``root`` (default ``bench/_data/atoms2d``), made once (resumable);
    ``seed_offset`` draws other images of the same condition."""
    from micro_sym.synth.atoms2d import Atoms2DConfig
    from micro_sym.synth.dataset import generate_dataset

    zone = cond.get("zone", "001")
    px = cond.get("pixel_size", AU_PERIOD[zone] / cond["period"])
    grain = 10 * AU_PERIOD["001"]  # the same grain sizes (Å) for both zones (2D crystals: 10 periods)
    dose = (float(cond["dose"]), float(cond["dose"]))
    cfg = Atoms2DConfig(mode=cond["mode"], zone=zone, size=(size, size), pixel_size_angstrom=px,
                        film={"grain_size": grain, "vacuum_fraction": 0.1, "amorphous_fraction": 0.1, **cond.get("film", {})},
                        haadf={"dose": dose}, hrtem={"dose": dose}, variants=tuple(cond.get("variants", ())))
    out = (root or DATA / "atoms2d") / name
    generate_dataset(out, cfg, n, seed=700 + sum(map(ord, name)) + seed_offset, resume=True)
    return out


def draw_dataset(name: str, n: int, size: int, seed_offset: int) -> Path:
    """Other images of the condition called ``name`` (any zone, period, dose or film of this study):
    its generator with ``seed_offset`` added to the seed, under ``bench/_data/atoms2d_draws/OFFSET``."""
    every = {c: cond for zone in ("001", "111") for fringes_only in (False, True)
             for c, cond in conditions(["haadf", "hrtem"], [4, 8, 16, 32], [5, 50], zone, fringes_only)}
    if name not in every:
        raise SystemExit(f"no condition {name!r} in this study")
    return make_dataset(name, every[name], n, size, DATA / "atoms2d_draws" / str(seed_offset), seed_offset)


def method_args(method: str) -> list[str]:
    """``auto``, ``network``, ``classical`` or ``model:NAME_OR_FILE`` -> the segment options."""
    if method.startswith("model:"):
        return ["--method", "network", "--model", method.split(":", 1)[1]]
    return ["--method", method]


def run_segment(image: Path, out: Path, method: str, options: tuple[str, ...] = ()) -> dict:
    cmd = [sys.executable, "-m", "micro_sym", "segment", str(image), "--out", str(out), "--overwrite",
           *method_args(method), *options]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=str(ROOT), env=dict(os.environ))
    res = {"rc": p.returncode, "wall_s": round(time.perf_counter() - t0, 2)}
    lines = (p.stdout + p.stderr).strip().splitlines()
    # the line naming the method, the measured lattice and the scale, e.g. "auto: network (...); measured ..."
    res["cli_says"] = next((ln.split(": ", 1)[1] for ln in lines if f"{image.name}: " in ln and "period" in ln), "")
    if p.returncode:
        res["error"] = lines[-1] if lines else "no output"
    return res


def read_maps(out: Path, stem: str) -> dict:
    """The written maps, plus ``grain_angle`` and ``fringes_angle``: each grain's measured ``lattice_angle``
    and ``fringes_angle`` from the grain table painted over its pixels (NaN where the table has none)."""
    import csv

    import zarr

    from micro_sym.io.images import output_array
    from micro_sym.orientation.symmetry import lattice

    z = out / f"{stem}.zarr"
    maps = {"grains": np.asarray(output_array(z, "grains")[...]),
            "orientation": np.asarray(output_array(z, "orientation")[...], dtype=np.float64),
            "boundary": np.asarray(output_array(z, "boundary")[...], dtype=np.float64)}
    columns = {"grain_angle": "lattice_angle_deg", "fringes_angle": "fringes_angle_deg"}
    angles = {key: np.full(int(maps["grains"].max()) + 1, np.nan) for key in columns}
    with open(out / f"{stem}_grains.csv", newline="") as f:
        for row in csv.DictReader(line for line in f if not line.startswith("#")):
            for key, column in columns.items():
                if row.get(column):
                    angles[key][int(row["grain"])] = float(row[column])
    maps |= {key: values[maps["grains"]] for key, values in angles.items()}
    run = zarr.open_group(str(z), mode="r").attrs["micro_sym"]
    # A fused map holds grains of two phases (fringes mod 180°, square mod 90°): its angles are
    # compared modulo the coarsest phase's period.
    maps["k"] = math.lcm(*(lattice(p["symmetry"]).k for p in run.get("phases") or [{"symmetry": run["symmetry"]}]))
    return maps


def score_condition(root: Path, methods, tmp: Path, options: tuple[str, ...] = ()) -> dict:
    from scipy import ndimage

    from micro_sym.io.datasets import LabeledDataset
    from micro_sym.metrics import evaluate_sample, orientation_errors

    ds = LabeledDataset(root)
    info = ds.meta.get("samples", {})
    out = {}
    for method in methods:
        b = {"tp_pred": 0, "n_pred": 0, "tp_gt": 0, "n_gt": 0}
        g = {"tp": 0, "n_pred": 0, "n_gt": 0}
        errors, grain_errors, interior, measured, free, free_left, runs = [], [], 0, 0, 0, 0, []
        fringes_errors, crystal, fringes_called = [], 0, 0
        for s in ds:
            where = tmp / method.replace(":", "_").replace("/", "_")
            run = run_segment(root / "images" / f"{s.name}.tif", where, method, options)
            runs.append(run)
            if run["rc"]:
                continue
            pred = read_maps(where, s.name)
            # Angles compared modulo the coarser of the truth's and the output's periods (square output
            # angles on fringes truth: mod 90°).
            k = math.lcm(ds.k, pred["k"])
            ev = evaluate_sample(pred, s.grains, s.orientation, k)
            for key in b:
                b[key] += ev["boundary"][key]
            for key in g:
                g[key] += ev["grain"][key]
            errors.append(ev["orientation_errors"])
            grain_errors.append(orientation_errors(pred["grain_angle"], s.orientation, s.grains, k))
            interior += ev["orientation_errors"].size
            measured += grain_errors[-1].size
            # Pixels of true grains whose output grain reads as one set of fringes (the table's fringes_angle).
            crystal += int((s.grains > 0).sum())
            fringes_called += int(((s.grains > 0) & np.isfinite(pred["fringes_angle"])).sum())
            if ds.k == 2:  # fringes-only films: the truth is the plane normal modulo 180°
                fringes_errors.append(orientation_errors(pred["fringes_angle"], s.orientation, s.grains, 2))
            period = float(info[s.name]["period_px"])
            far = ndimage.distance_transform_edt(s.grains == 0) > period
            free += int(far.sum())
            free_left += int((far & (pred["grains"] == 0)).sum())
        bp = b["tp_pred"] / b["n_pred"] if b["n_pred"] else 0.0
        br = b["tp_gt"] / b["n_gt"] if b["n_gt"] else 0.0
        gp = g["tp"] / g["n_pred"] if g["n_pred"] else 0.0
        gr = g["tp"] / g["n_gt"] if g["n_gt"] else 0.0
        err = np.concatenate(errors) if errors else np.zeros(0)
        out[method] = {
            "boundary_f1": 2 * bp * br / (bp + br) if bp + br else 0.0,
            "grain_f1": 2 * gp * gr / (gp + gr) if gp + gr else 0.0,
            "grains": g,
            "orientation_median_deg": float(np.median(err)) if err.size else None,
            "grain_lattice_median_deg": float(np.median(np.concatenate(grain_errors))) if measured else None,
            "grain_lattice_coverage": measured / interior if interior else None,
            "fringes_called": fringes_called / crystal if crystal else None,
            "fringes_median_deg": (float(np.median(np.concatenate(fringes_errors)))
                                   if fringes_errors and sum(e.size for e in fringes_errors) else None),
            "no_lattice_unassigned": free_left / free if free else None,
            "failed_runs": sum(1 for r in runs if r["rc"]),
            "wall_s": [r["wall_s"] for r in runs],
            "cli_says": [r["cli_says"] for r in runs],
            "errors": [r["error"] for r in runs if r["rc"]],
        }
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2, help="images per condition")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--modes", nargs="+", default=["haadf", "hrtem"])
    ap.add_argument("--periods", nargs="+", type=int, default=[4, 8, 16, 32])
    ap.add_argument("--doses", nargs="+", type=int, default=[5, 50])
    ap.add_argument("--methods", nargs="*", default=["auto", "network", "classical"])
    ap.add_argument("--models", nargs="*", default=[], help="also run --method network --model M for each")
    ap.add_argument("--zone", choices=("001", "111"), default="001", help="111: hexagonal projections")
    ap.add_argument("--fringes-only", action="store_true",
                    help="films whose every grain shows one set of fringes (truth mod 180°), instead of the usual set")
    ap.add_argument("--segment-options", default="", help='more `segment` options for every run, e.g. "--threshold 3"')
    ap.add_argument("--out", default=str(RESULTS / "atoms2d_heldout.json"))
    args = ap.parse_args()
    options = tuple(shlex.split(args.segment_options))
    methods = [*args.methods, *(f"model:{m}" for m in args.models)]

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, cond in conditions(args.modes, args.periods, args.doses, args.zone, args.fringes_only):
            t0 = time.perf_counter()
            root = make_dataset(name, cond, args.n, args.size)
            gen_s = time.perf_counter() - t0
            scores = score_condition(root, methods, Path(tmp), options)
            results.append({"condition": name, **{k: v for k, v in cond.items() if k != "variants"},
                            "materials": [m["element"] for m in cond.get("variants", [])] or ["Au"],
                            "generate_s": round(gen_s, 1), "methods": scores})
            cells = "  ".join(f"{m}: {s['boundary_f1']:.2f}/{s['grain_f1']:.2f}/"
                              f"{s['orientation_median_deg'] if s['orientation_median_deg'] is None else round(s['orientation_median_deg'], 2)}°"
                              f"/{s['no_lattice_unassigned'] if s['no_lattice_unassigned'] is None else round(s['no_lattice_unassigned'], 2)}"
                              f" (grain lattice {s['grain_lattice_median_deg'] if s['grain_lattice_median_deg'] is None else round(s['grain_lattice_median_deg'], 2)}°"
                              f" on {s['grain_lattice_coverage'] if s['grain_lattice_coverage'] is None else round(s['grain_lattice_coverage'], 2)};"
                              f" fringes on {s['fringes_called'] if s['fringes_called'] is None else round(s['fringes_called'], 2)}"
                              f" at {s['fringes_median_deg'] if s['fringes_median_deg'] is None else round(s['fringes_median_deg'], 2)}°)"
                              for m, s in scores.items())
            log(f"{name}: {cells}")
    doc = {
        "what": "atomistic micrographs (micro-sym synth atoms2d): HAADF-STEM and HRTEM of ASE films, "
                "a renderer no bundled model was trained on (generalization)",
        "command": "python bench/studies/atoms2d_heldout.py " + " ".join(sys.argv[1:]),
        "images_per_condition": args.n,
        "size": args.size,
        "scores": "boundary F1 / grain F1 (pooled counts), median orientation error (deg), "
                  "fraction of no-lattice pixels (> 1 period from a grain) left unassigned",
        "conditions": results,
    }
    path = write_json(args.out, doc)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

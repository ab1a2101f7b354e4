"""Real-data benchmark: segment the two real micrographs with every method and score against hand annotations.

The networks were trained on micro_sym's own renderer only; this checks what they (and the classical filter
bank) do on real experimental images. Inputs are the GPL-3.0 example images of temul-toolkit in
``../shared/data/real_micrographs/`` (not copied into the repository); the annotations are
``bench/real_data/annotations/*.json`` (how they were made: ``bench/real_data/README.md``).

For each image and method the product runs as a user would run it, through the CLI in a child process::

    micro-sym segment IMAGE --out TMP/METHOD --method auto                 # no model: robust-2d or classical
    micro-sym segment IMAGE --out TMP/METHOD --method network              # default-2d
    micro-sym segment IMAGE --out TMP/METHOD --method classical [--lattice hexagonal]   # MoS2: hexagonal

and its written maps are read back (``NAME.zarr``: ``labels/grains/0``, ``orientation/0``, ``boundary/0``,
through ``micro_sym.io.images.output_array``). Scores, per image and method:

- grain count: distinct nonzero labels with area >= (2 periods)², period = the median annotated fringe
  period (hexagonal: the lattice constant, period / cos 30°), against ``expected_grains`` (within ±20 %?)
  and against the annotated range ``[expected_grains, expected_grains_max]``;
- vacuum: the fraction of vacuum-polygon pixels left unassigned (label 0);
- per annotated grain polygon: the dominant nonzero label and the fraction of the polygon it covers, the
  unassigned fraction, and the circular mean of the output orientation inside the polygon against the
  annotated angle; ``merged``: pairs of high-confidence annotated grains whose dominant labels coincide;
- boundaries: median distance from the annotated grain-grain polylines (points 1 px apart) to the nearest
  predicted boundary pixel, (a) boundary map >= 0.5 and (b) label changes (a pixel whose label differs
  from a 4-neighbour, label 0 included), in px and in periods, with the fraction of the image that is
  boundary (a map that is boundary everywhere is close to every line);
- wall time of the CLI run (child process: start-up, reading, segmentation, writing).

Angle conventions. The annotation gives the fringe normal (strongest FFT peak) counter-clockwise from +x
with y up, mod 180 (fringes), 90 (square), 60 (hexagonal). micro_sym's 2D orientation (docs/design.md
§1.2) is the angle of the first *real-space* basis vector, same frame, stored mod 90 (square models and
``--lattice square``) or mod 60 (``--lattice hexagonal``). For a square lattice the basis vectors are the
fringe normals of its {10} fringes, so ``product ≡ fringe normal (mod 90)``; for a hexagonal lattice the
fringe normals are 30° from the basis vectors, so ``product ≡ fringe normal − 30° (mod 60)``. The script
checks this mapping first (``calibration``): it renders single-crystal synthetic images at 20° (square,
period 8 px; hexagonal, lattice constant 23 px) with ``micro_sym.synth.render_lattice_2d``, measures their
fringe normal with the annotation's own FFT code and runs the same CLI commands on them. Comparisons are
then made modulo the coarser of the two symmetries that both the annotation and the output can express:
fringes (mod 180) vs a square output (mod 90) -> mod 90; hexagonal vs hexagonal -> mod 60; hexagonal vs a
square output -> mod 30 (gcd), where any angle is within 15° and chance gives 7.5° on average (22.5° for
mod 90). A crossed lattice (two fringe sets) is also scored against the nearer of its two directions.

    python bench/bench_real_micrographs.py                       # both images, all methods (~2-4 min, 2 cores)
    python bench/bench_real_micrographs.py --methods classical   # one method
    python bench/bench_real_micrographs.py --png-dir /tmp/real_overlays   # where the overlay PNGs go
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import BENCH, RESULTS, ROOT, nan_to_none, write_json
from scipy import ndimage

sys.path.insert(0, str(BENCH / "real_data"))
import annotate_fft  # the annotation's own FFT measurement, for the calibration

ANNOTATIONS = BENCH / "real_data" / "annotations"
DATA = ROOT.parent / "shared" / "data" / "real_micrographs"
METHODS = ("auto", "network", "classical")
#: Run only when named: ``split`` is auto with ``--split-grains``.
OPTIONAL_METHODS = ("split",)
SYM = {"fringes": 180.0, "square": 90.0, "hexagonal": 60.0}
CALIBRATION_ANGLE = 20.0


# -- running the product ------------------------------------------------------------------------


def cli_args(method: str, lattice: str | None) -> list[str]:
    """The ``segment`` options of one method (classical: the annotated lattice, hexagonal or the default;
    ``model:NAME_OR_FILE``: that network)."""
    if method.startswith("model:"):
        return ["--method", "network", "--model", method.split(":", 1)[1]]
    if method == "split":
        return ["--method", "auto", "--split-grains"]
    args = ["--method", method]
    if method == "classical" and lattice == "hexagonal":
        args += ["--lattice", "hexagonal"]
    return args


CODE = ROOT  # the micro_sym source the CLI runs from (--code; default this checkout)


def child_env() -> dict:
    env = dict(os.environ)
    if CODE != ROOT:
        env["PYTHONPATH"] = os.pathsep.join([str(CODE), *filter(None, [env.get("PYTHONPATH")])])
    return env


def run_segment(image: Path, out: Path, extra: list[str]) -> dict:
    """Run ``micro-sym segment`` in a child process; returns the command, rc, wall time and output tail."""
    cmd = [sys.executable, "-m", "micro_sym", "segment", str(image), "--out", str(out), "--overwrite", *extra]
    t0 = time.perf_counter()
    # cwd = the code folder: ``python -m`` puts the working directory first on sys.path
    p = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=str(CODE), env=child_env())
    wall = time.perf_counter() - t0
    shown = ["micro-sym", "segment", image.name, "--out", "TMP", *extra]
    res = {"command": " ".join(shown), "rc": p.returncode, "wall_s": round(wall, 2)}
    text = (p.stdout + p.stderr).strip().splitlines()
    # the method-choice / period line(s) the CLI prints, e.g. "NAME: classical hexagonal, period 23.1 px"
    res["cli_says"] = [ln.strip().replace(str(image.parent) + "/", "") for ln in text
                       if f"{image.name}:" in ln and "block-steps" not in ln][:3]
    if p.returncode:
        res["error"] = text[-1] if text else "no output"
    return res


def read_outputs(out: Path, stem: str) -> dict:
    """Grain labels, orientation, boundary map and the run's metadata of one written output."""
    import zarr

    from micro_sym.io.images import output_array

    z = out / f"{stem}.zarr"
    meta = dict(zarr.open_group(str(z), mode="r").attrs.get("micro_sym", {}))
    labels = np.asarray(output_array(z, "grains")[...])
    orient = np.asarray(output_array(z, "orientation")[...], dtype=np.float64)
    boundary = np.asarray(output_array(z, "boundary")[...], dtype=np.float64)
    method = meta.get("method") or {}
    out_sym = SYM.get(meta.get("symmetry"), 90.0)  # what the output's angles are modulo
    # Each grain's lattice angle measured from the image (the grain table's lattice_angle), modulo 360/k.
    grain_lattice = method.get("grain_lattice") if isinstance(method, dict) else None
    if meta.get("phases"):  # a fused map: grains of two phases, its angles compared modulo the coarsest's period
        out_sym = min(SYM.get(p["symmetry"], 90.0) for p in meta["phases"])
        grain_lattice = {"k": round(360.0 / out_sym)}
    # and, for a grain that shows one set of fringes, their plane normal modulo 180° (fringes_angle).
    columns = {"grain_angle": "lattice_angle_deg", "fringes_angle": "fringes_angle_deg"}
    measured = {key: np.full(int(labels.max()) + 1, np.nan) for key in columns}
    csv_path = out / f"{stem}_grains.csv"
    if grain_lattice and csv_path.exists():
        with open(csv_path, newline="") as f:
            for row in csv.DictReader(line for line in f if not line.startswith("#")):
                for key, column in columns.items():
                    if row.get(column):
                        measured[key][int(row["grain"])] = float(row[column])
    return {"labels": labels, "orientation": orient, "boundary": boundary, "out_sym": out_sym, "meta": meta,
            "threshold": float(meta.get("boundary_threshold", 0.5)), **measured,
            "grain_sym": 360.0 / grain_lattice["k"] if grain_lattice else None}


def method_summary(meta: dict) -> dict:
    """What ran: the output's ``micro_sym.method`` record (name, lattice, period, auto choice, resampling) and model."""
    m = meta.get("method")
    keep = dict(m) if isinstance(m, dict) else {"name": m}
    keep["model"] = (meta.get("model") or {}).get("name")
    return keep


# -- angles -------------------------------------------------------------------------------------


def circ_mean(angles, sym: float):
    """Circular mean (degrees, in [0, sym)) and resultant length R (1 = all equal) of angles mod ``sym``."""
    a = np.asarray(angles, np.float64)
    a = a[np.isfinite(a)]
    if a.size == 0:
        return float("nan"), float("nan")
    t = np.deg2rad(a) * (360.0 / sym)
    c, s = np.cos(t).mean(), np.sin(t).mean()
    return float(np.rad2deg(np.arctan2(s, c)) * sym / 360.0 % sym), float(np.hypot(c, s))


def angdiff(a: float, b: float, sym: float) -> float:
    """|a − b| modulo ``sym``, in [0, sym/2]."""
    return float(abs((a - b + sym / 2.0) % sym - sym / 2.0))


def compare_sym(ann_lattice: str, out_sym: float) -> float:
    """The symmetry both the annotation and the output can express (see module doc)."""
    return float(math.gcd(int(SYM[ann_lattice]), int(out_sym)))


def expected_output_angle(fft_angle: float, ann_lattice: str, out_sym: float) -> float:
    """The output angle an exact method would give for an annotated fringe normal (mod the compare symmetry)."""
    offset = -30.0 if (ann_lattice == "hexagonal" and out_sym == 60.0) else 0.0
    return (fft_angle + offset) % compare_sym(ann_lattice, out_sym)


# -- calibration: the angle convention on synthetic images ---------------------------------------


def safe(method: str) -> str:
    """A method's name as a file name (``model:runs/x/model.pt`` -> ``model_runs_x_model.pt``)."""
    return method.replace(":", "_").replace("/", "_")


def calibrate(tmp: Path, methods) -> list[dict]:
    """Run the product on single-crystal synthetic images of known angle; compare with the FFT measurement."""
    import tifffile

    from micro_sym.synth import render_lattice_2d

    ids = np.ones((256, 256), np.uint32)
    rng = np.random.default_rng(0)
    rows = []
    # Fringes at the angle plus 90°: an output that confused the normal with the fringes' direction, or
    # kept it only modulo 90°, would show it.
    for lattice, period, angle in (("square", 8.0, CALIBRATION_ANGLE), ("hexagonal", 23.0, CALIBRATION_ANGLE),
                                   ("fringes", 12.0, CALIBRATION_ANGLE + 90.0)):
        img = render_lattice_2d(ids, {1: angle}, lattice=lattice, period=period, rng=0)
        img = rng.poisson(np.clip(img, 0, None) * 50 + 5).astype(np.float32)  # 5-55 counts/px
        path = tmp / f"calib_{lattice}.tif"
        tifffile.imwrite(path, img)
        poly = [[16, 16], [16, 240], [240, 240], [240, 16]]
        fft, _ = annotate_fft.fft_peak(img.astype(np.float64), poly, window=128, n_peaks=3)
        ann_lat = lattice
        for method in methods:
            if lattice == "hexagonal" and method == "network":
                continue  # default-2d maps square lattices only
            out = tmp / f"calib_{lattice}_{safe(method)}"
            run = run_segment(path, out, cli_args(method, lattice))
            row = {"lattice": lattice, "period_px": period, "true_angle_deg": angle,
                   "fft_fringe_normal_deg": fft["angle_deg"], "method": method, "rc": run["rc"],
                   "wall_s": run["wall_s"]}
            if run["rc"]:
                row["error"] = run.get("error")
                rows.append(row)
                continue
            o = read_outputs(out, path.stem)
            mean, r = circ_mean(o["orientation"], o["out_sym"])
            cs = compare_sym(ann_lat, o["out_sym"])
            exp = expected_output_angle(fft["angle_deg"], ann_lat, o["out_sym"])
            row.update(output_sym_deg=o["out_sym"], output_mean_deg=round(mean, 2), output_R=round(r, 3),
                       expected_from_fft_deg=round(exp, 2), error_deg=round(angdiff(mean, exp, cs), 2),
                       error_vs_truth_deg=round(angdiff(mean, angle, o["out_sym"]), 2),
                       mirrored_error_deg=round(angdiff(mean, -exp, cs), 2),
                       model=(o["meta"].get("model") or {}).get("name"))
            rows.append(row)
    return rows


# -- scoring ------------------------------------------------------------------------------------


def polyline_points(points) -> np.ndarray:
    """Points every ~1 px along a polyline of (row, col) vertices."""
    p = np.asarray(points, np.float64)
    out = [p[:1]]
    for a, b in itertools.pairwise(p):
        n = max(int(np.ceil(np.hypot(*(b - a)))), 1)
        t = np.arange(1, n + 1)[:, None] / n
        out.append(a + t * (b - a))
    return np.concatenate(out)


def label_edges(labels: np.ndarray) -> np.ndarray:
    """Pixels whose label differs from a 4-neighbour (label 0 counts as a label)."""
    e = np.zeros(labels.shape, bool)
    d = labels[1:, :] != labels[:-1, :]
    e[1:, :] |= d
    e[:-1, :] |= d
    d = labels[:, 1:] != labels[:, :-1]
    e[:, 1:] |= d
    e[:, :-1] |= d
    return e


def distance_to(mask: np.ndarray, pts: np.ndarray):
    if not mask.any():
        return None
    dist = ndimage.distance_transform_edt(~mask)
    r = np.clip(np.rint(pts[:, 0]).astype(int), 0, mask.shape[0] - 1)
    c = np.clip(np.rint(pts[:, 1]).astype(int), 0, mask.shape[1] - 1)
    return dist[r, c]


def annotation_period(ann: dict) -> float:
    """Median annotated period; for a hexagonal lattice the lattice constant (fringe period / cos 30°)."""
    per = []
    for g in ann["grains"]:
        if g.get("period_px"):
            per.append(g["period_px"] / (math.cos(math.radians(30)) if g["lattice"] == "hexagonal" else 1.0))
    return float(np.median(per))


def score(ann: dict, o: dict) -> dict:
    labels, orient, bnd = o["labels"], o["orientation"], o["boundary"]
    shape = labels.shape
    period = annotation_period(ann)
    min_area = (2 * period) ** 2
    areas = np.bincount(labels.ravel().astype(np.int64))
    ids = np.nonzero(areas)[0]
    ids = ids[ids != 0]
    n_big = int((areas[ids] >= min_area).sum())
    exp = ann["expected_grains"]
    exp_max = ann.get("expected_grains_max", exp)
    res = {
        "grains": {"n_labels": int(ids.size), "n_labels_ge_min_area": n_big, "min_area_px": round(min_area),
                   "expected": exp, "expected_max": exp_max,
                   "within_20pct": bool(abs(n_big - exp) <= 0.2 * exp),
                   "within_annotated_range": bool(exp <= n_big <= exp_max),
                   "unassigned_fraction_of_image": round(float((labels == 0).mean()), 4)},
        "output_sym_deg": o["out_sym"],
    }
    # vacuum
    if ann["vacuum"]:
        vm = np.zeros(shape, bool)
        for poly in ann["vacuum"]:
            vm |= annotate_fft.polygon_mask(shape, poly)
        lv = labels[vm]
        cnt = np.bincount(lv.astype(np.int64))
        cnt[0] = 0
        res["vacuum"] = {"pixels": int(vm.sum()), "unassigned_fraction": round(float((lv == 0).mean()), 4),
                         "n_labels_covering_ge_1pct": int((cnt >= 0.01 * lv.size).sum()),
                         "largest_label_fraction": round(float(cnt.max() / lv.size), 4) if lv.size else None}
    else:
        res["vacuum"] = None
    # grains
    rows, dominant = [], {}
    for g in ann["grains"]:
        m = annotate_fft.polygon_mask(shape, g["polygon"])
        lg = labels[m].astype(np.int64)
        cnt = np.bincount(lg)
        unassigned = float(cnt[0] / lg.size) if cnt.size else 0.0
        cnt[0] = 0
        dom = int(cnt.argmax()) if cnt.sum() else 0
        row = {"id": g["id"], "name": g.get("name"), "confidence": g.get("confidence", "high"),
               "dominant_label": dom, "dominant_fraction": round(float(cnt[dom] / lg.size), 3) if dom else 0.0,
               "unassigned_fraction": round(unassigned, 3), "n_labels_inside": int((cnt > 0).sum())}
        if g.get("angle_deg") is not None:
            cs = compare_sym(g["lattice"], o["out_sym"])
            mean, r = circ_mean(orient[m], o["out_sym"])
            exp_angle = expected_output_angle(g["angle_deg"], g["lattice"], o["out_sym"])
            err = angdiff(mean, exp_angle, cs) if np.isfinite(mean) else float("nan")
            row.update(annotated_angle_deg=g["angle_deg"], expected_output_deg=round(exp_angle, 1), compare_mod_deg=cs,
                       output_mean_deg=round(mean, 1), output_R=round(r, 3), angle_error_deg=round(err, 1),
                       chance_error_deg=cs / 4.0)
            if o["grain_sym"] and dom:
                gs = compare_sym(g["lattice"], o["grain_sym"])
                measured = o["grain_angle"][dom]
                row.update(grain_lattice_angle_deg=None if np.isnan(measured) else round(float(measured), 2),
                           grain_lattice_error_deg=None if np.isnan(measured) else round(angdiff(
                               measured, expected_output_angle(g["angle_deg"], g["lattice"], o["grain_sym"]), gs), 2))
            if g["lattice"] == "fringes" and dom:  # the fringes' plane normal, modulo 180° as annotated
                normal = o["fringes_angle"][dom]
                row.update(fringes_angle_deg=None if np.isnan(normal) else round(float(normal), 2),
                           fringes_error_deg=None if np.isnan(normal) else round(angdiff(normal, g["angle_deg"], 180.0), 2))
            alts = [g["angle_deg"]] + ([g["second_angle_deg"]] if g.get("second_angle_deg") is not None else [])
            if len(alts) > 1 and np.isfinite(mean):
                row["angle_error_nearest_set_deg"] = round(min(
                    angdiff(mean, expected_output_angle(a, g["lattice"], o["out_sym"]), cs) for a in alts), 1)
        rows.append(row)
        if row["confidence"] == "high" and dom:
            dominant.setdefault(dom, []).append(g["id"])
    res["grain_polygons"] = rows
    res["merged_high_confidence"] = [v for v in dominant.values() if len(v) > 1]
    scored = [r for r in rows if r.get("angle_error_deg") is not None and r["confidence"] == "high"]
    res["median_angle_error_deg"] = round(float(np.nanmedian([r["angle_error_deg"] for r in scored])), 1) if scored else None
    lat_err = [r["grain_lattice_error_deg"] for r in scored if r.get("grain_lattice_error_deg") is not None]
    res["median_grain_lattice_error_deg"] = round(float(np.median(lat_err)), 2) if lat_err else None
    res["grain_lattice_scored"] = f"{len(lat_err)} of {len(scored)}"
    fringes_err = [r["fringes_error_deg"] for r in scored if r.get("fringes_error_deg") is not None]
    res["median_fringes_error_deg"] = round(float(np.median(fringes_err)), 2) if fringes_err else None
    res["fringes_scored"] = f"{len(fringes_err)} of {sum(1 for r in scored if 'fringes_error_deg' in r)}"
    # R: how coherent the output orientation is inside the polygons (1 = one angle; ~0 = noise, where the
    # "error" of the mean is meaningless)
    res["median_output_R"] = round(float(np.nanmedian([r["output_R"] for r in scored])), 2) if scored else None
    # boundaries
    if ann["boundaries"]:
        pts = np.concatenate([polyline_points(b["points"]) for b in ann["boundaries"]])
        bmask = bnd >= o["threshold"]
        emask = label_edges(labels)
        out = {"points": len(pts), "boundary_fraction_of_image": round(float(bmask.mean()), 4),
               "label_edge_fraction_of_image": round(float(emask.mean()), 4)}
        for key, mask in (("map", bmask), ("label_change", emask)):
            d = distance_to(mask, pts)
            med = None if d is None else float(np.median(d))
            out[f"median_dist_{key}_px"] = None if med is None else round(med, 1)
            out[f"median_dist_{key}_periods"] = None if med is None else round(med / period, 2)
        res["boundaries"] = out
    else:
        res["boundaries"] = None
    return res


def lattice_on_polygons(img: np.ndarray, ann: dict) -> dict:
    """The product's per-grain lattice measurement (micro_sym.classical.grain_lattice) run on the
    annotation's own polygons, with the image's measured lattice: how far the two measurements of
    one region differ, apart from any segmentation."""
    from micro_sym.classical import measure_lattice
    from micro_sym.classical.grain_lattice import grain_lattice_angles

    m = measure_lattice(img)
    family = m.family()
    labels = np.zeros(img.shape, np.int32)
    grains = [g for g in ann["grains"] if g.get("angle_deg") is not None]
    for g in grains:
        labels[annotate_fft.polygon_mask(img.shape, g["polygon"]) & (labels == 0)] = g["id"]
    r = grain_lattice_angles(img, labels, period=m.period, lattice=family, ids=[g["id"] for g in grains])
    sym = 360.0 / (6 if family == "hexagonal" else 4)
    rows = {}
    for g, angle in zip(grains, r["angle_deg"]):
        cs = compare_sym(g["lattice"], sym)
        rows[g["id"]] = {"confidence": g.get("confidence", "high"), "measured_deg": None if np.isnan(angle) else round(float(angle), 2),
                         "error_deg": None if np.isnan(angle) else round(angdiff(angle, expected_output_angle(g["angle_deg"], g["lattice"], sym), cs), 2)}
    high = [v["error_deg"] for v in rows.values() if v["confidence"] == "high" and v["error_deg"] is not None]
    return {"lattice": family, "period_px": round(m.period, 2), "grains": rows,
            "median_error_high_deg": round(float(np.median(high)), 2) if high else None}


# -- overlays -----------------------------------------------------------------------------------


def overlay(img: np.ndarray, ann: dict, o: dict, title: str, path: Path) -> None:
    """Labels coloured over the image | orientation (cyclic) with the boundary map; annotation outlined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = max(1, img.shape[0] // 1024)
    im = img[::s, ::s]
    lo, hi = np.percentile(im, [1, 99])
    gray = np.clip((im - lo) / (hi - lo), 0, 1)
    lab = o["labels"][::s, ::s]
    rng = np.random.default_rng(1)
    colours = rng.uniform(0.15, 1.0, (int(lab.max()) + 1, 3))
    rgb = np.repeat(gray[..., None], 3, -1)
    a = 0.45
    col = colours[lab]
    rgb = np.where(lab[..., None] > 0, (1 - a) * rgb + a * col, rgb * 0.6 + 0.4 * np.array([0.0, 0.0, 0.3]))
    ori = o["orientation"][::s, ::s]
    orgb = plt.get_cmap("twilight")(np.nan_to_num(ori / o["out_sym"]))[..., :3] * (0.35 + 0.65 * gray[..., None])
    orgb[o["boundary"][::s, ::s] >= o["threshold"]] = 1.0
    fig, axes = plt.subplots(1, 2, figsize=(16, 8.4))
    for ax, pic, sub in ((axes[0], rgb, "labels (0 = dark blue)"),
                         (axes[1], orgb, f"orientation mod {o['out_sym']:.0f}° (twilight), boundary >= 0.5 white")):
        ax.imshow(pic, extent=(-0.5, img.shape[1] - 0.5, img.shape[0] - 0.5, -0.5))
        for poly in ann["vacuum"]:
            p = np.asarray(poly + poly[:1], float)
            ax.plot(p[:, 1], p[:, 0], "r--", lw=1.2)
        for g in ann["grains"]:
            p = np.asarray(g["polygon"] + g["polygon"][:1], float)
            ax.plot(p[:, 1], p[:, 0], "y-", lw=1.0)
            ax.text(p[:, 1].mean(), p[:, 0].mean(), str(g["id"]), color="y", fontsize=11)
        for b in ann["boundaries"]:
            p = np.asarray(b["points"], float)
            ax.plot(p[:, 1], p[:, 0], "m-", lw=2)
        ax.set_title(sub, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    plt.close(fig)


# -- main ---------------------------------------------------------------------------------------


def code_state() -> dict:
    """Which micro_sym the CLI ran: its import path, and this checkout's commit and uncommitted micro_sym files."""
    def run(*a, cwd=ROOT):
        p = subprocess.run(list(a), check=False, capture_output=True, text=True, cwd=str(cwd), env=child_env())
        return p.stdout

    state = {"micro_sym_imported_from": run(sys.executable, "-c", "import micro_sym; print(micro_sym.__file__)",
                                            cwd=CODE).strip()}
    state["checkout_commit"] = run("git", "rev-parse", "--short", "HEAD").strip()
    if CODE == ROOT:
        state["micro_sym_uncommitted"] = [ln[3:] for ln in run("git", "status", "--porcelain", "--", "micro_sym").splitlines()]
    else:
        state["code_dir"] = str(CODE)
    return state


def fmt(x, nd=1):
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "-"
    return f"{x:.{nd}f}" if isinstance(x, float) else str(x)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), help=f"{', '.join(METHODS + OPTIONAL_METHODS)}")
    ap.add_argument("--models", nargs="*", default=[], help="also run --method network --model M for each")
    ap.add_argument("--images", nargs="+", default=None, help="annotation stems (default: every annotation)")
    ap.add_argument("--png-dir", default=str(Path(tempfile.gettempdir()) / "real_micrographs_overlays"))
    ap.add_argument("--no-calibration", action="store_true")
    ap.add_argument("--code", help="run the CLI from this micro_sym source folder (e.g. a `git archive` of another "
                                   "commit) instead of this checkout")
    ap.add_argument("--out-json", default=str(RESULTS / "real_micrographs.json"))
    args = ap.parse_args()
    bad = [m for m in args.methods if m not in METHODS + OPTIONAL_METHODS]
    if bad:
        ap.error(f"unknown method(s) {', '.join(bad)}; choose from {', '.join(METHODS + OPTIONAL_METHODS)}")
    args.methods = [*args.methods, *(f"model:{m}" for m in args.models)]
    global CODE
    if args.code:
        CODE = Path(args.code).resolve()
    png_dir = Path(args.png_dir)
    png_dir.mkdir(parents=True, exist_ok=True)
    ann_files = sorted(ANNOTATIONS.glob("*.json"))
    if args.images:
        ann_files = [f for f in ann_files if f.stem in args.images]

    result = {"benchmark": "real micrographs (temul-toolkit examples, GPL-3.0) vs the project's hand annotations",
              "date": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
              "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU", "code": code_state(),
              "angle_mapping": "product ≡ fringe normal (mod 90) for square outputs; ≡ fringe normal − 30° (mod 60) for "
                               "hexagonal outputs; compared modulo gcd(annotation symmetry, output symmetry)",
              "overlays": str(png_dir), "images": {}}
    with tempfile.TemporaryDirectory(prefix="real_micrographs_") as tmp:
        tmp = Path(tmp)
        if not args.no_calibration:
            print("calibration (synthetic single crystals at 20°):", flush=True)
            result["calibration"] = calibrate(tmp, args.methods)
            for r in result["calibration"]:
                if r["rc"]:
                    print(f"  {r['lattice']:>9} {r['method']:>9}: failed ({r.get('error')})")
                else:
                    print(f"  {r['lattice']:>9} {r['method']:>9}: FFT fringe normal {r['fft_fringe_normal_deg']:.1f}°, "
                          f"output {r['output_mean_deg']:.1f}° mod {r['output_sym_deg']:.0f} (expected "
                          f"{r['expected_from_fft_deg']:.1f}°, error {r['error_deg']:.1f}°, mirrored {r['mirrored_error_deg']:.1f}°)")
        table = []
        for af in ann_files:
            ann = json.loads(af.read_text())
            image = DATA / ann["image"]
            img = annotate_fft.load_image(image)
            lattice = ann["grains"][0]["lattice"] if ann["grains"] else None
            per_image = {"annotation": af.relative_to(ROOT).as_posix(), "shape": list(img.shape),
                         "period_px": round(annotation_period(ann), 2),
                         "grain_lattice_on_polygons": lattice_on_polygons(img, ann), "methods": {}}
            for method in args.methods:
                lat = "hexagonal" if any(g["lattice"] == "hexagonal" for g in ann["grains"]) else lattice
                out = tmp / f"{af.stem}_{safe(method)}"
                print(f"{ann['image']} --method {method} ...", flush=True)
                run = run_segment(image, out, cli_args(method, lat))
                entry = dict(run)
                if run["rc"] == 0:
                    o = read_outputs(out, image.stem)
                    entry["ran"] = method_summary(o["meta"])
                    entry.update(score(ann, o))
                    png = png_dir / f"{af.stem}_{safe(method)}.png"
                    ran = entry["ran"]
                    what = ran.get("model") or ran.get("name")
                    if ran.get("period"):
                        what += f", period {ran['period']:.1f} px"
                    if isinstance(ran.get("scale"), dict) and ran["scale"].get("scale"):
                        what += f", resampled x{ran['scale']['scale']:.3f}"
                    overlay(img, ann, o, f"{ann['image']}  --method {method}: {what}", png)
                    entry["overlay_png"] = png.name
                per_image["methods"][method] = entry
                table.append((af.stem, method, entry))
            result["images"][af.stem] = per_image

    path = write_json(args.out_json, result, default=nan_to_none)
    hdr = (f"{'image':<26} {'method':<9} {'ran':<22} {'wall s':>6} {'grains':>6} {'exp':>5} {'±20%':>5} "
           f"{'vac 0':>6} {'ang err':>7} {'R':>5} {'bnd px':>7} {'bnd P':>6}")
    print("\n" + hdr + "\n" + "-" * len(hdr))
    for stem, method, e in table:
        if e["rc"]:
            print(f"{stem[:26]:<26} {method:<9} FAILED rc={e['rc']}: {e.get('error', '')[:80]}")
            continue
        ran = e["ran"]
        ran_s = ran.get("model") or ran.get("name") or "?"
        sc = ran.get("scale")
        if isinstance(sc, dict) and sc.get("scale"):
            ran_s += f" x{sc['scale']:.2f}"
        ran_s = ran_s[:22]
        g = e["grains"]
        vac = e["vacuum"]["unassigned_fraction"] if e["vacuum"] else None
        b = e["boundaries"] or {}
        print(f"{stem[:26]:<26} {method:<9} {ran_s:<22} {e['wall_s']:>6.1f} {g['n_labels_ge_min_area']:>6} "
              f"{str(g['expected']) + ('-' + str(g['expected_max']) if g['expected_max'] != g['expected'] else ''):>5} "
              f"{'yes' if g['within_20pct'] else 'no':>5} {fmt(vac, 2):>6} {fmt(e['median_angle_error_deg']):>7} "
              f"{fmt(e['median_output_R'], 2):>5} "
              f"{fmt(b.get('median_dist_map_px')):>7} {fmt(b.get('median_dist_map_periods'), 2):>6}")
    print("grains: nonzero labels >= (2 periods)²; exp: annotated count (range); vac 0: fraction of vacuum unassigned; "
          "ang err: median over high-confidence grains of |output mean − expected| (deg, mod the compare symmetry); "
          "R: median resultant length of the output angles in those polygons (1 coherent, ~0 noise); "
          "bnd: median distance from the annotated grain-grain line to boundary-map >= 0.5 pixels (px, periods)")
    print("\nper grain polygon (dominant label: covering fraction; angle: output mean vs expected, error mod compare):")
    for stem, method, e in table:
        if e["rc"]:
            continue
        for r in e["grain_polygons"]:
            ang = ""
            if "angle_error_deg" in r:
                ang = (f"  angle {fmt(r['output_mean_deg'])} vs {r['expected_output_deg']} mod {r['compare_mod_deg']:.0f}: "
                       f"err {fmt(r['angle_error_deg'])} (chance {r['chance_error_deg']:.1f}, R {fmt(r['output_R'], 2)})")
                if "angle_error_nearest_set_deg" in r:
                    ang += f", nearest set {fmt(r['angle_error_nearest_set_deg'])}"
            print(f"  {stem[:12]:<12} {method:<9} #{r['id']} {r['name'] or '':<13} [{r['confidence'][0]}] label "
                  f"{r['dominant_label']:>4}: {r['dominant_fraction']:.2f}  unassigned {r['unassigned_fraction']:.2f}{ang}")
        if e["merged_high_confidence"]:
            print(f"  {stem[:12]:<12} {method:<9} merged (same dominant label): {e['merged_high_confidence']}")
    print(f"\nwrote {path}; overlays in {png_dir}")


if __name__ == "__main__":
    main()

"""Helpers shared by the bench scripts (timed benchmarks, studies, provenance): paths, timing, JSON output,
and the test images and grain-F1 pooling that more than one study uses. Not a script; no script imports another.

Scripts in ``bench/`` import it directly (a script's own folder is on ``sys.path``); scripts in
``bench/studies/`` and ``bench/provenance/`` first put ``bench/`` on the path, the same line in each::

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/, for _common
    from _common import RESULTS, ROOT, write_json  # noqa: E402

Importing it also puts the repository root on ``sys.path``, so the scripts run this checkout's
``micro_sym`` even where the package is not installed.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent  # the repository root
RESULTS = BENCH / "results"  # every script's JSON / PNG output (committed)
DATA = BENCH / "_data"  # generated inputs (git-ignored)

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


# -- timing and output --------------------------------------------------------------------------


def best_time(fn, repeats: int) -> float:
    """Best of ``repeats`` wall times (seconds) of ``fn()``, after one untimed warm-up call
    (oneDNN primitive creation, allocator, FFT plans, caches)."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def log(msg: str) -> None:
    """Print ``msg`` with a wall-clock time stamp, flushed (long runs)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def write_json(path, obj, *, indent: int = 2, default=None) -> Path:
    """Write ``obj`` as JSON to ``path`` (parent folders created, trailing newline); returns the path.

    A run never erases an earlier one: each is also appended, with the time and the command line,
    to ``history/NAME.jsonl`` beside ``path`` (``path`` itself holds the latest run).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(obj, indent=indent, default=default)
    path.write_text(text + "\n")
    history = path.parent / "history" / f"{path.stem}.jsonl"
    history.parent.mkdir(exist_ok=True)
    record = {"written": time.strftime("%Y-%m-%dT%H:%M:%S"), "command": " ".join(sys.argv), "result": json.loads(text)}
    with open(history, "a") as f:
        f.write(json.dumps(record) + "\n")
    return path


def cpu_model() -> str:
    """The CPU's model name and model number from /proc/cpuinfo (machines of one name differ: a
    session's machine is not always the last one's), with AMX if it has it; "" where unknown."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    fields = dict(line.split(":", 1) for line in text.split("\n\n")[0].splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    amx = ", AMX" if "amx_bf16" in fields.get("flags", "").split() else ""
    return f"{fields.get('model name', '')} (family {fields.get('cpu family', '?')}, model {fields.get('model', '?')}{amx})"


def machine_info(with_torch: bool = False) -> dict:
    """Where a result was measured: machine, CPU model, cores, OS, Python and numpy (and torch) versions."""
    import os
    import platform

    info = {"machine": platform.machine(), "cpu_model": cpu_model(), "cpus": os.cpu_count(),
            "platform": platform.platform(), "python": platform.python_version(), "numpy": np.__version__}
    if with_torch:
        import torch

        info["torch"] = torch.__version__
    return info


def nan_to_none(x):
    """``default=`` for :func:`write_json`, called for values ``json`` cannot write (numpy float32): NaN as null."""
    return None if x != x else x


# -- engine benchmarks (bench_engine_2d.py, bench_engine_3d.py, bench_segment_cli.py) ----------------

#: Engine functions whose time the engine benchmarks sum: (module, class or None, function) -> label.
#: Nested ones are inside their callers' time (the forward and the ring contrast are inside the maps pass).
ENGINE_PARTS = {
    ("micro_sym.inference.engine", None, "maps_task"): "maps pass (per block)",
    ("micro_sym.deploy.runtime", None, "cpu_forward"): "  network forward (inside the forward lock)",
    ("micro_sym.inference.lattice_mask", None, "crystalline_contrast"): "  lattice mask (ring contrast)",
    ("micro_sym.inference.network", "Network", "decode"): "  decode",
    ("micro_sym.inference.engine", None, "rule_maps"): "  unit harmonic fields (3D)",
    ("micro_sym.inference.engine", None, "label_tile"): "  seed labels",
    ("micro_sym.inference.engine", None, "read_tile"): "  read input tile",
    ("micro_sym.inference.engine", None, "merge_blocks"): "merge across blocks",
    ("micro_sym.inference.engine", None, "flood_task"): "grains pass (per block)",
    ("micro_sym.inference.engine", None, "neighbours_task"): "neighbour counts (per block)",
    ("micro_sym.inference.engine", None, "extents_task"): "grain extents (per block)",
    ("micro_sym.inference.engine", None, "lattice_task"): "grain lattice measured whole (per block)",
    ("micro_sym.inference.engine", None, "relabel_task"): "grains showing no lattice left out (per block)",
    ("micro_sym.inference.engine", None, "final_table"): "grain table",
    ("micro_sym.inference.engine", None, "measured_orientations"): "grain orientations (measured, 3D)",
    ("micro_sym.inference.engine", None, "paint_task"): "orientation map painted per grain (3D, per block)",
    ("micro_sym.inference.engine", None, "write_grain_csv"): "CSV",
    ("micro_sym.inference.method_choice", "AutoMethod", "choose"): "lattice measurement + method choice",
    ("micro_sym.models.normalize", None, "intensity_range"): "intensity range",
}


def time_parts(parts: dict, rss_by_part: dict | None = None) -> dict:
    """Wrap the functions of ``parts`` (as :data:`ENGINE_PARTS`) so that their seconds, summed over
    threads, collect in the returned dict (call before the run, in the process that runs it).

    With ``rss_by_part`` (a dict), a thread samples the process's resident memory every 0.2 s and
    keeps there, per label, the largest value (MB) seen while a call of it ran: which stage holds the
    peak memory (``"(any)"``: the largest sample overall)."""
    import collections
    import importlib
    import threading

    seconds, lock = collections.defaultdict(float), threading.Lock()
    running = collections.Counter()
    for (module, cls, name), label in parts.items():
        owner = importlib.import_module(module)
        owner = getattr(owner, cls) if cls else owner
        original = getattr(owner, name)

        def timed(*args, _f=original, _label=label, **kwargs):
            t = time.perf_counter()
            with lock:
                running[_label] += 1
            try:
                return _f(*args, **kwargs)
            finally:
                with lock:
                    seconds[_label] += time.perf_counter() - t
                    running[_label] -= 1

        setattr(owner, name, timed)
    if rss_by_part is not None:
        threading.Thread(target=_sample_rss, args=(running, lock, rss_by_part), daemon=True).start()
    return seconds


def _sample_rss(running, lock, out: dict, every: float = 0.2) -> None:
    import os

    page_mb = os.sysconf("SC_PAGE_SIZE") / 2**20
    while True:
        with open("/proc/self/statm") as f:
            mb = int(f.read().split()[1]) * page_mb
        with lock:
            for label in ["(any)", *(k for k, n in running.items() if n > 0)]:
                out[label] = round(max(out.get(label, 0.0), mb), 1)
        time.sleep(every)


def mirrored_micrograph(n: int) -> Path:
    """``bench/_data/micrograph{n}.zarr``: the bundled sample micrograph mirrored to ``n × n`` (uint16,
    chunks 1024²; written once). Mirroring keeps the lattice and the grains continuous at the seams."""
    import tifffile
    import zarr

    path = DATA / f"micrograph{n}.zarr"
    if path.exists():
        return path
    tile = tifffile.imread(ROOT / "sample_data" / "micrographs" / "images" / "sample_000.tif")
    DATA.mkdir(parents=True, exist_ok=True)
    zarr.create_array(str(path), data=mirrored(tile, n), chunks=(1024, 1024))
    return path


def mirrored(tile: np.ndarray, n: int) -> np.ndarray:
    """``tile`` (2D or 3D) repeated to ``n`` points per axis, every other copy flipped along that axis."""
    out = tile
    for axis in range(tile.ndim):
        reps = -(-n // tile.shape[axis])
        out = np.concatenate([out if i % 2 == 0 else np.flip(out, axis) for i in range(reps)], axis=axis)
    return np.ascontiguousarray(out[(slice(0, n),) * tile.ndim])


# -- 2D test images: the contest (studies/contest.py) and the method-choice calibration --------
# -- (provenance/calibrate_method_choice.py) draw them from different seed ranges -----------------

EBSD_PATH = ROOT.parent / "shared" / "data" / "defdap_ebsd" / "testDataEBSD.cpr"
DOSES = (2, 5, 20, 100)  # counts per pixel of the dose conditions


def conditions(size: int):
    """(name, config overrides) of every synthetic condition."""
    base_im = {"dose": 100.0}
    out = [(f"dose_{d}", {"imaging": {"dose": float(d)}}) for d in DOSES]
    for name, gs in (("small", 40.0), ("medium", 80.0), ("large", 160.0)):
        out.append((f"grains_{name}", {"imaging": base_im, "microstructure": {"grain_size": gs}}))
    out.append(("blur", {"imaging": {**base_im, "psf_sigma": 2.5}}))
    out.append(("inverted", {"imaging": {**base_im, "contrast": "bright_field"}}))
    out.append(("scan_distortion", {"imaging": {**base_im, "jitter": 0.5, "drift": 3.0, "shear": 0.03}}))
    return out


def synthetic_samples(name, overrides, size, n, seed0):
    """``(name, image, grains, orientation)`` of ``n`` synthetic micrographs of one condition."""
    from micro_sym.synth import Synth2DConfig, synth_2d

    cfg = Synth2DConfig.model_validate({"size": (size, size), **overrides})
    for i in range(n):
        s = synth_2d(cfg, seed=seed0 + i)
        yield f"{name}_{i}", s.image, s.grains, s.orientation


def ebsd_ground_truth(scale: int):
    """Grain map and per-grain in-plane square-lattice angles from the real EBSD map."""
    from micro_sym.grains import reconstruct_grains
    from micro_sym.io.ebsd import read_ebsd
    from micro_sym.orientation import quat_to_matrix

    m = read_ebsd(EBSD_PATH)
    ids = reconstruct_grains(m.quaternions, symmetry="cubic", threshold=5.0, mask=m.mask, min_size=4, small="merge")
    # Unindexed / dropped points: take the nearest grain, so the rendered image is all crystal.
    if (ids == 0).any():
        from scipy import ndimage

        idx = ndimage.distance_transform_edt(ids == 0, return_distances=False, return_indices=True)
        ids = ids[tuple(idx)]
    n = int(ids.max()) + 1
    angles = np.full(n, np.nan)
    q = np.moveaxis(m.quaternions, 0, -1)
    for g in range(1, n):
        sel = np.flatnonzero((ids == g).ravel() & m.mask.ravel())
        if not len(sel):
            angles[g] = 0.0
            continue
        rot = quat_to_matrix(q.reshape(-1, 4)[sel[len(sel) // 2]])  # a representative point of the grain
        # Columns = crystal axes in the sample frame; the one closest to the map plane sets the
        # in-plane square lattice (mod 90° by the cube's 4-fold axes).
        axis = rot[:, int(np.argmin(np.abs(rot[2])))]
        angles[g] = np.degrees(np.arctan2(axis[1], axis[0])) % 90.0
    angles[0] = 0.0
    ids = np.repeat(np.repeat(ids, scale, 0), scale, 1)
    return ids, angles


def ebsd_samples(dose, n, seed0, scale, size, lattice="square"):
    """``(name, image, grains, orientation)`` of ``n`` micrographs rendered on the EBSD map's grain shapes
    (a hexagonal ``lattice`` takes each grain's square-lattice angle modulo 60°: any angle will do)."""
    from micro_sym.grains import reconstruct_grains
    from micro_sym.orientation.symmetry import lattice as find_lattice
    from micro_sym.synth import Imaging2D, micrograph_from_grains

    ids, angles = ebsd_ground_truth(scale)
    angles = np.mod(angles, find_lattice(lattice, ndim=2).period)
    if size:
        ids = ids[: min(size, ids.shape[0]), : min(size, ids.shape[1])]
    theta = angles[ids].astype(np.float32)
    # Ground truth grains of the *image*: neighbours whose in-plane angles are within 5° look like one
    # crystal in a lattice image, so apply the grain rule to the in-plane angle map.
    gt = reconstruct_grains(theta, symmetry=lattice, threshold=5.0, connectivity=1).astype(np.uint32)
    for i in range(n):
        img = micrograph_from_grains(ids.astype(np.uint32), angles, imaging=Imaging2D(dose=float(dose)),
                                     seed=seed0 + i, lattice=lattice, period=8.0)
        yield f"ebsd_dose_{dose}_{i}", img, gt, theta


#: Seeds of the method-choice calibration images: not the contest's (900_000) nor training's (small seeds).
CALIBRATION_SEED_OFFSET = 700_000


def calibration_jobs(size: int, n: int, ebsd_scale: int, ebsd_size: int, lattice: str = "square"):
    """``(condition, samples)`` of the method-choice calibration images (provenance/calibrate_method_choice.py):
    the contest's conditions plus 3 counts/px, and the EBSD grain shapes at 2, 5 and 100 counts/px."""
    conds = conditions(size) + [("dose_3", {"imaging": {"dose": 3.0}})]
    for ci, (name, ov) in enumerate(conds):
        yield name, synthetic_samples(name, {**ov, "lattice": lattice}, size, n, CALIBRATION_SEED_OFFSET + 1000 * ci)
    for d in (2, 5, 100):
        yield f"ebsd_dose_{d}", ebsd_samples(d, n, CALIBRATION_SEED_OFFSET + 50_000 + d, ebsd_scale, ebsd_size, lattice)


def load_networks(k: int = 4):
    """The bundled 2D networks for a k-fold lattice (default: square) present in this installation,
    exported, as ``{"network:NAME": model}``."""
    from micro_sym.models import BUNDLED, load_model

    out = {}
    for name in BUNDLED:
        try:
            model = load_model(name, export=True)
            if model.ndim == 2 and model.k == k:  # the contest is on micrographs of one lattice
                out[f"network:{name}"] = model
        except Exception as err:  # noqa: BLE001 - absence of a model is a result, not a crash
            print(f"no bundled network {name}: {type(err).__name__}: {err}", file=sys.stderr)
    return out


# -- 2D grain rules scored on a labeled dataset (studies/tune_grain_rule.py, study_grains2d_*.py) --


def predicted(model, root) -> list:
    """``(sample, maps)`` for every sample of the labeled dataset at ``root``: what :func:`pooled` scores."""
    from micro_sym.inference.whole_image import predict_image
    from micro_sym.io.datasets import LabeledDataset

    return [(s, predict_image(model, s.image)) for s in LabeledDataset(root)]


def pooled(cache, labels_of) -> dict:
    """Grain F1 pooled over ``(sample, maps)`` pairs, with grains ``labels_of(maps)``."""
    return pooled_grain_f1((labels_of(maps), sample.grains) for sample, maps in cache)


def pooled_grain_f1(pairs) -> dict:
    """Grain F1 pooled over ``(predicted, true)`` label-map pairs (matches and counts summed first)."""
    from micro_sym.metrics import grain_f1

    tp = n_pred = n_gt = 0
    for pred, gt in pairs:
        r = grain_f1(pred, gt)
        tp, n_pred, n_gt = tp + r["tp"], n_pred + r["n_pred"], n_gt + r["n_gt"]
    p, r = tp / max(n_pred, 1), tp / max(n_gt, 1)
    return {"grain_f1": 2 * p * r / (p + r) if p + r else 0.0, "tp": tp, "n_pred": n_pred, "n_gt": n_gt}


def rule_choice_sets(size: int, n: int, atomistic) -> list:
    """``(set name, [(image, true grains), ...])`` of the images grain-rule choices are made on: the
    method-choice calibration images (``analytic:CONDITION``, ``n`` per condition) and the atomistic
    sets ``data/NAME`` (``atomistic:NAME``)."""
    sets = [(f"analytic:{cond}", [(image, gt) for _, image, gt, _ in samples])
            for cond, samples in calibration_jobs(size, n, 3, 512)]
    return sets + [(f"atomistic:{name}", [(image, gt) for _, image, gt in atomistic_samples(name)]) for name in atomistic]


def atomistic_samples(name: str):
    """``(stem, image, true grains)`` of the atomistic set ``data/NAME`` (made by ``micro-sym synth atoms2d``)."""
    import tifffile

    root = ROOT / "data" / name
    if not (root / "images").is_dir():
        raise SystemExit(f"{root}: missing; make it with micro-sym synth atoms2d (see the calling script's docstring)")
    for path in sorted((root / "images").glob("*.tif")):
        yield path.stem, tifffile.imread(path), tifffile.imread(root / "grains" / path.name)

"""Issue 4 studies of the 2D segmenter: data efficiency of p4m vs a plain CNN, and the group order.

    python bench/studies/study_2d.py [--study data|group|both] [--steps 500] [--crop 128] [--batch 6]
                                     [--test-images 16] [--threads 2] [--out bench/results/study_2d.json]

What it measures (all accuracies on ONE held-out synthetic test set, generated with a seed that no
training or validation image uses, scored by :func:`micro_sym.inference.evaluate.evaluate_model` on the exported
model: boundary F1, grain F1, median orientation error):

1. **Data efficiency** (``--study data``): the shipped p4m architecture (``unet_equi``, group D4,
   widths 1-2-4-8-16 fields, i.e. 8-16-32-64-128 channels) against ``unet_plain`` with the same
   channels per level (so the same deployed layer shapes and latency) trained with the training loop's
   default rotation/flip augmentation, each on 4, 16 and 64 training images (nested subsets: sample i
   is the same image in every set) at EQUAL training compute: every run takes the same
   ``--steps`` x ``--batch`` x ``--crop``² pixels. The goal tested: p4m on 16 images beats the plain
   CNN on 64 (printed at the end, whichever way it comes out).
2. **Group order** (``--study group``): ``unet_equi`` over C1, C4, D4, C8, D8, D16 at an equal width
   budget: the same channels per level (``--budget``, default 32-32-32-64-128), so fields per level =
   channels / |G| (D16, |G| = 32, keeps one field at the finest levels). Trained identically on
   ``--group-n-train`` images with the training loop's defaults (rotation/flip augmentation unless the
   group is dihedral: C1, C4 and C8 see rotated and mirrored crops); reported: held-out accuracy, trainable (escnn) and deployed parameter
   counts, MACs per pixel, training time per step, equivariance error on the 8 exact D4 grid symmetries
   (D8/D16/C8 are only approximately equivariant on the pixel grid, docs/design.md §2) and CPU latency of
   the exported model (``--threads`` threads, median of ``--repeats`` runs on a ``--latency-size``²
   input). Equal channels mean (nearly) equal deployed cost by construction: |G| buys weight sharing,
   paid for in fewer independent filters. Tests "a big gain up to |G| = 4, diminishing beyond".

Data (the project's generator, default config, square lattice) goes to ``bench/_data/study2d/`` and
is reused when present: training images seed 1000, validation seed 2000 (model selection: the
validation-best checkpoint is scored), test seed 3000. Runs are written under
``bench/_data/study2d/runs/<out name>/``. The JSON is rewritten after every run, and a re-run skips
runs already in it (same settings required) and a run interrupted mid-training continues from its
``last.pt``, so an interrupted study resumes; a PNG plot is written next to it.
Full run (defaults): about 30-35 min on 2 unshared CPU cores, roughly a quarter of it the data study.
Smoke test: ``--steps 3 --size 64 --crop 32 --n-train 2 4 --group-n-train 2 --test-images 2 --val-images 1
--threads 1 --latency-size 64 --workdir /tmp/study2d --out /tmp/study2d/s.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import sys
import time
import warnings
from pathlib import Path

import torch

warnings.filterwarnings("ignore")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/, for _common

from _common import BENCH, RESULTS, log, write_json  # noqa: E402
from micro_sym.io.datasets import LabeledDataset  # noqa: E402
from micro_sym.deploy.measure import count_macs, count_parameters, cpu_latency  # noqa: E402
from micro_sym.models.base import equivariance_error  # noqa: E402
from micro_sym.inference.evaluate import evaluate_model  # noqa: E402
from micro_sym.models import load_model  # noqa: E402
from micro_sym.synth import load_config  # noqa: E402
from micro_sym.synth.dataset import generate_dataset  # noqa: E402
from micro_sym.training.config import load_train_config  # noqa: E402
from micro_sym.training.loop import train  # noqa: E402

DATA = BENCH / "_data" / "study2d"
TRAIN_SEED, VAL_SEED, TEST_SEED = 1000, 2000, 3000
# Topology of the bundled default (micro_sym/configs/train_default_2d.yaml): 5 levels, one decoder conv, 3x3 head;
# the widths are those of the previous, 37k-parameter default, on which the studies ran.
TOPOLOGY = dict(lattice="square", convs_per_level=2, dec_convs=1, stem_kernel=5, head_kernel=3)
P4M = dict(arch="unet_equi", group="D4", widths=[1, 2, 4, 8, 16], **TOPOLOGY)
PLAIN = dict(arch="unet_plain", widths=[8, 16, 32, 64, 128], **TOPOLOGY)  # the same channels as P4M
GROUP_ORDER = {"C1": 1, "C4": 4, "D4": 8, "C8": 8, "D8": 16, "D16": 32}
METRICS = ("boundary_f1", "grain_f1", "orientation_median_deg")


def parse():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--study", choices=["data", "group", "both"], default="both")
    p.add_argument("--steps", type=int, default=500, help="training steps per run (every run, both studies)")
    p.add_argument("--epochs", type=int, default=5, help="validation points per run (steps are split evenly)")
    p.add_argument("--crop", type=int, default=128, help="training crop side, px")
    p.add_argument("--batch", type=int, default=6, help="crops per step")
    p.add_argument("--size", type=int, default=256, help="side of every synthetic image, px")
    p.add_argument("--n-train", type=int, nargs="+", default=[4, 16, 64], help="training set sizes of the data study")
    p.add_argument("--group-n-train", type=int, default=16, help="training images of the group study")
    p.add_argument("--budget", type=int, nargs="+", default=[32, 32, 32, 64, 128],
                   help="channels per level of the group study (fields = channels / |G|, at least 1)")
    p.add_argument("--groups", nargs="+", default=list(GROUP_ORDER), choices=list(GROUP_ORDER))
    p.add_argument("--val-images", type=int, default=4)
    p.add_argument("--test-images", type=int, default=16)
    p.add_argument("--seed", type=int, default=0, help="training seed (the same for every run)")
    p.add_argument("--threads", type=int, default=2, help="torch threads for training, evaluation and latency")
    p.add_argument("--latency-size", type=int, default=512)
    p.add_argument("--repeats", type=int, default=5, help="latency runs (median reported)")
    p.add_argument("--out", default=str(RESULTS / "study_2d.json"))
    p.add_argument("--workdir", default=str(DATA), help="datasets and runs (reused when present)")
    p.add_argument("--remeasure-latency", action="store_true",
                   help="only re-time the exported models of the runs in --out (e.g. on a quiet machine) and re-plot")
    return p.parse_args()


# --------------------------------------------------------------------------- data


def dataset(workdir, kind: str, n: int, seed: int, size: int) -> Path:
    """A synthetic labeled dataset, generated once: sample i is ``synth_2d(config, [seed, i])``."""
    path = Path(workdir) / f"{kind}_s{size}_n{n}_seed{seed}"
    if not (path / "dataset.json").is_file():  # absent or interrupted mid-generation
        t = time.time()
        generate_dataset(path, load_config(None, dim=2, size=(size, size)), n, seed, overwrite=True)
        log(f"generated {path} ({n} images, {time.time() - t:.0f} s)")
    return path


# --------------------------------------------------------------------------- one run


def train_config(model_cfg: dict, args):
    epochs = max(1, min(args.epochs, args.steps))
    return load_train_config(None, **{
        "model": model_cfg,
        "data.crop": args.crop, "data.batch_size": args.batch, "data.steps_per_epoch": args.steps // epochs,
        "data.val_max_images": args.val_images,
        "optim.epochs": epochs, "optim.warmup_steps": min(50, args.steps // 10),
        "seed": args.seed, "threads": args.threads,
    })


def run_one(name: str, model_cfg: dict, train_dir: Path, val_dir: Path, test_dir: Path, args) -> dict:
    """Train (or reuse / resume a finished or interrupted run of the same config), then score it."""
    config = train_config(model_cfg, args)
    run = Path(args.workdir) / "runs" / Path(args.out).stem / name.replace(":", "_")
    key = {"config": config.model_dump(mode="json"), "train": str(train_dir), "val": str(val_dir)}
    same = (run / "study_key.json").is_file() and json.loads((run / "study_key.json").read_text()) == key
    if not (same and (run / "model.pt").is_file()):
        resume = same and (run / "last.pt").is_file()
        if not resume:
            shutil.rmtree(run, ignore_errors=True)
            run.mkdir(parents=True)
            (run / "study_key.json").write_text(json.dumps(key, indent=2))
        train(config, train_dir, run, val=val_dir, resume=resume, log=lambda m: log(f"  {m}"))
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines() if line.strip()]
    train_s = sum(h["train_s"] for h in history)

    torch.set_num_threads(args.threads)
    model = load_model(run / "best.pt")  # the validation-best checkpoint
    exported = model.export()
    t = time.time()
    e = config.eval
    report = evaluate_model(exported, LabeledDataset(test_dir), threshold=e.threshold, min_size=e.min_size,
                            boundary_threshold=e.boundary_threshold)
    eval_s = time.time() - t
    lat = cpu_latency(exported, args.latency_size, repeats=args.repeats, threads=args.threads)
    return {
        "model": model.config,
        "train_images": len(LabeledDataset(train_dir)),
        "test": {key: report["overall"][key] for key in (*METRICS, "boundary_precision", "boundary_recall",
                                                         "grain_precision", "grain_recall", "orientation_p90_deg",
                                                         "n_images", "n_grains_true", "n_grains_pred")},
        "best_epoch": model.meta.get("metrics", {}).get("epoch"),
        "params_trainable": int(sum(p.numel() for p in model.parameters())),
        "params_deployed": count_parameters(exported),
        "macs_per_pixel": round(count_macs(exported, args.latency_size)["per_pixel"]),
        "equivariance_error_d4": equivariance_error(exported)["max"],
        "latency_s": lat["seconds"],
        "latency_mpix_per_s": lat["mpix_per_s"],
        "steps": len(history) * config.data.steps_per_epoch,
        "train_s": round(train_s, 1),
        "s_per_step": round(train_s / max(1, len(history) * config.data.steps_per_epoch), 3),
        "eval_s": round(eval_s, 1),
        "run_dir": str(run),
    }


# --------------------------------------------------------------------------- the studies


def data_runs(args):
    """(name, model config, training set size) of the data-efficiency study."""
    return [(f"data:{label}:n{n}", cfg, n) for n in args.n_train for label, cfg in (("p4m", P4M), ("plain", PLAIN))]


def group_runs(args):
    out = []
    for g in args.groups:
        fields = [max(1, c // GROUP_ORDER[g]) for c in args.budget]
        out.append((f"group:{g}", dict(arch="unet_equi", group=g, widths=fields, **TOPOLOGY), args.group_n_train))
    return out


def fmt(v, spec):
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def print_row(name, r):
    t = r["test"]
    print(f"  {name:<18}{r['train_images']:>4} img  bF1 {fmt(t['boundary_f1'], '.3f')}  gF1 {fmt(t['grain_f1'], '.3f')}  "
          f"ori {fmt(t['orientation_median_deg'], '5.2f')}°  params {r['params_trainable']:>7} "
          f"({r['params_deployed']} deployed)  {r['latency_mpix_per_s']:.2f} MP/s  "
          f"equi {r['equivariance_error_d4']:.1e}  {r['s_per_step']:.2f} s/step", flush=True)


def summary(runs: dict) -> dict:
    """The two claims, computed from whatever runs are present (nothing asserted)."""
    out = {}
    a, b = runs.get("data:p4m:n16"), runs.get("data:plain:n64")
    if a and b:
        cmp = {}
        for key in METRICS:
            va, vb = a["test"][key], b["test"][key]
            d = _diff(va, vb)
            better = None if d is None else bool(d < 0 if key.startswith("orientation") else d > 0)
            cmp[key] = {"p4m_n16": va, "plain_n64": vb, "p4m_n16_better": better}
        out["p4m_n16_vs_plain_n64"] = cmp
    groups = {name.split(":")[1]: r for name, r in runs.items() if name.startswith("group:")}
    if "C1" in groups:
        base = groups["C1"]["test"]
        out["group_gain_vs_C1"] = {g: {key: _diff(r["test"][key], base[key]) for key in METRICS}
                                   for g, r in sorted(groups.items(), key=lambda kv: GROUP_ORDER[kv[0]])}
    return out


def _diff(x, y):
    return None if x is None or y is None or not (math.isfinite(x) and math.isfinite(y)) else x - y


def _clean(obj):
    """JSON without NaN/Infinity (null instead)."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def settings(args) -> dict:
    keys = ("workdir", "steps", "epochs", "crop", "batch", "size", "n_train", "group_n_train", "budget", "val_images",
            "test_images", "seed", "threads", "latency_size", "repeats")
    return {k: getattr(args, k) for k in keys}


def plot(result: dict, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result["runs"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.4))
    ax = axes[0]
    for label, color in (("p4m", "tab:blue"), ("plain", "tab:orange")):
        rs = sorted([r for name, r in runs.items() if name.startswith(f"data:{label}:")], key=lambda r: r["train_images"])
        if rs:
            n = [r["train_images"] for r in rs]
            ax.plot(n, [r["test"]["grain_f1"] for r in rs], "o-", color=color, label=f"{label}: grain F1")
            ax.plot(n, [r["test"]["boundary_f1"] for r in rs], "s--", color=color, label=f"{label}: boundary F1")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("training images")
    ax.set_ylabel("held-out F1")
    ax.set_title(f"data efficiency (equal compute: {result['settings']['steps']} steps)")
    ax.legend(fontsize=8)
    groups = sorted([(name.split(":")[1], r) for name, r in runs.items() if name.startswith("group:")],
                    key=lambda gr: GROUP_ORDER[gr[0]])
    side = result["settings"]["latency_size"]
    threads = result["settings"].get("threads_latency", result["settings"]["threads"])
    for ax, xkey, xlabel in ((axes[1], None, "|G| (group order)"),
                             (axes[2], "latency_s", f"CPU latency, ms per {side}² image ({threads} threads, exported)")):
        for metric, marker in (("grain_f1", "o"), ("boundary_f1", "s")):
            xs = [GROUP_ORDER[g] if xkey is None else 1000 * r[xkey] for g, r in groups]
            ys = [r["test"][metric] for g, r in groups]
            ax.plot(xs, ys, marker + ("-" if xkey is None else ""), label=metric.replace("_", " "))
            for (g, _), x, y in zip(groups, xs, ys):
                ax.annotate(g, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        if xkey is None:
            ax.set_xscale("log", base=2)
        else:
            ax.ticklabel_format(axis="x", style="plain", useOffset=False)
            ax.xaxis.set_major_locator(plt.MaxNLocator(5))
        ax.set_xlabel(xlabel)
        ax.set_ylabel("held-out F1")
        ax.set_title(f"group order (equal channels {'-'.join(map(str, result['settings']['budget']))})")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def remeasure_latency(result: dict, args) -> None:
    """Re-time every run's exported best checkpoint, all in one quiet sitting, interleaved by repeat."""
    models = {name: load_model(Path(r["run_dir"]) / "best.pt").export() for name, r in result["runs"].items()}
    times = {name: [] for name in models}
    for _ in range(args.repeats):
        for name, m in models.items():
            times[name].append(cpu_latency(m, args.latency_size, repeats=1, threads=args.threads)["seconds"])
    mp = args.latency_size ** 2 / 1e6
    for name, ts in times.items():
        t = sorted(ts)[len(ts) // 2]
        result["runs"][name].update(latency_s=t, latency_mpix_per_s=mp / t, latency_threads=args.threads)
        log(f"{name}: {1000 * t:.0f} ms per {args.latency_size}² image ({mp / t:.2f} MP/s, {args.threads} threads)")
    result["latency_note"] = f"re-measured together, interleaved, {args.threads} threads, median of {args.repeats}"


def main():
    args = parse()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    if args.remeasure_latency:
        result = json.loads(out.read_text())
        remeasure_latency(result, args)
        result["settings"]["threads_latency"] = args.threads
        write_json(out, _clean(result))
        plot(result, out.with_suffix(".png"))
        log(f"wrote {out} and {out.with_suffix('.png')}")
        return
    result = {"benchmark": "study_2d", "settings": settings(args), "runs": {}}
    if out.is_file():
        old = json.loads(out.read_text())
        if old.get("settings") != result["settings"]:
            raise SystemExit(f"{out}: written with other settings {old.get('settings')}; use another --out or delete it")
        result["runs"] = old.get("runs", {})
    result.update(torch=torch.__version__, cpu=platform.processor() or platform.machine(),
                  seeds={"train": TRAIN_SEED, "val": VAL_SEED, "test": TEST_SEED})

    val_dir = dataset(args.workdir, "val", args.val_images, VAL_SEED, args.size)
    test_dir = dataset(args.workdir, "test", args.test_images, TEST_SEED, args.size)
    plan = (data_runs(args) if args.study in ("data", "both") else []) + (group_runs(args) if args.study in ("group", "both") else [])
    log(f"{len(plan)} runs, {args.steps} steps x {args.batch} x {args.crop}² each; test set {test_dir}")
    for name, model_cfg, n in plan:
        if name in result["runs"]:
            print_row(name, result["runs"][name])
            continue
        log(f"{name}: {model_cfg['arch']} {model_cfg.get('group', '')} widths {model_cfg['widths']}, {n} training images")
        t = time.time()
        try:
            r = run_one(name, model_cfg, dataset(args.workdir, "train", n, TRAIN_SEED, args.size), val_dir, test_dir, args)
        except Exception as err:  # one architecture failing must not lose the others
            log(f"{name}: FAILED {type(err).__name__}: {err}")
            result.setdefault("failed", {})[name] = f"{type(err).__name__}: {err}"
            continue
        r["wall_s"] = round(time.time() - t, 1)
        result["runs"][name] = r
        result.get("failed", {}).pop(name, None)
        print_row(name, r)
        result["summary"] = summary(result["runs"])
        write_json(out, _clean(result))

    result["summary"] = summary(result["runs"])
    write_json(out, _clean(result))
    plot(result, out.with_suffix(".png"))
    s = result["summary"]
    if "p4m_n16_vs_plain_n64" in s:
        print("p4m on 16 images vs plain CNN on 64 (held-out):")
        for key, c in s["p4m_n16_vs_plain_n64"].items():
            print(f"  {key:<24} p4m {fmt(c['p4m_n16'], '.3f')}  plain {fmt(c['plain_n64'], '.3f')}  "
                  f"-> {({True: 'p4m better', False: 'p4m NOT better'}).get(c['p4m_n16_better'], 'undecided')}")
    if "group_gain_vs_C1" in s:
        print("group order, change vs C1 (held-out):")
        for g, d in s["group_gain_vs_C1"].items():
            print(f"  {g:<4} |G|={GROUP_ORDER[g]:<3} " + "  ".join(f"{k} {fmt(v, '+.3f')}" for k, v in d.items()))
    log(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()

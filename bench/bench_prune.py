"""Field-wise pruning of the bundled 2D p4m model: latency, accuracy and equivariance before/after,
a generic per-channel pruning contrast, and an accuracy-latency curve beside a plain CNN.

Rows (all on the held-out test set, grain F1 by micro_sym.metrics):

- ``p4m r=R``: the bundled default pruned by R of its prunable fields (field = all 8 channels of a
  D4 regular field; global ranking by field weight norm), then fine-tuned with the training loop.
- ``channel-L1 r=0.5``: generic per-channel L1 pruning of the exported plain-torch default at the
  same ratio (fields ignored), without and with the same fine-tuning budget (plain weights, rot/flip
  augmentation, as a plain CNN would be fine-tuned).
- ``plain CNN``: ``unet_plain`` whose per-level channels match the 50%-pruned model (so the same
  layer shapes and latency), trained from scratch for ``--plain-steps`` steps.

Latency is the median forward time of the deployed network on one 512² image (torch, exported plain
form, inference mode) and of its ONNX file on onnxruntime, measured interleaved over several rounds
because the CPU is shared. Never asserted anywhere.

Quick run (≈15 min on 2 shared cores): ``python bench/bench_prune.py --quick``.
Fuller run: ``python bench/bench_prune.py --epochs 3 --steps 100 --plain-steps 1400 --test-images 8``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

warnings.filterwarnings("ignore")

from _common import RESULTS, ROOT, log, write_json  # noqa: E402
from micro_sym.deploy.export import export_model, load_deployed  # noqa: E402
from micro_sym.deploy.measure import count_macs, count_parameters, evaluate_accuracy  # noqa: E402
from micro_sym.models.base import equivariance_error  # noqa: E402
from micro_sym.deploy.prune import channel_prune_plain, prune_model  # noqa: E402
from micro_sym.models.fields import layer_fields  # noqa: E402
from micro_sym.training.finetune import finetune_model  # noqa: E402
from micro_sym.models import load_model  # noqa: E402


def parse():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default-2d")
    p.add_argument("--train", default=str(ROOT / "data/synth2d_train"))
    p.add_argument("--val", default=str(ROOT / "data/synth2d_val"))
    p.add_argument("--test", default=str(ROOT / "data/synth2d_test"))
    p.add_argument("--test-images", type=int, default=8)
    p.add_argument("--ratios", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    p.add_argument("--criterion", default="norm")
    p.add_argument("--scope", default="global")
    p.add_argument("--epochs", type=int, default=3, help="fine-tuning epochs per pruned model")
    p.add_argument("--steps", type=int, default=100, help="fine-tuning steps per epoch")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--plain-steps", type=int, default=1400, help="training steps of the plain CNN from scratch (0: skip it)")
    p.add_argument("--latency-size", type=int, default=512)
    p.add_argument("--rounds", type=int, default=3, help="interleaved latency rounds")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2, help="torch threads for training and evaluation")
    p.add_argument("--latency-threads", type=int, nargs="+", default=[1, 2],
                   help="thread counts for latency; the first is the headline (1 is robust on a shared CPU)")
    p.add_argument("--calibrate-batches", type=int, default=10, help="batch-norm re-estimation batches after pruning")
    p.add_argument("--quick", action="store_true", help="≈15 min: 4 test images, 1x40 fine-tuning steps, 300 plain steps")
    p.add_argument("--latency-models", nargs="+", default=None, metavar="MODEL",
                   help="only time these model files (escnn SegModel export, deployed .pt with folded batch norm, "
                        "ONNX), interleaved, and write --out")
    p.add_argument("--out", default=str(RESULTS / "prune.json"))
    p.add_argument("--workdir", default=str(ROOT / "runs/bench_prune"))
    a = p.parse_args()
    if a.quick:
        a.test_images, a.epochs, a.steps, a.plain_steps, a.rounds = 4, 1, 40, 300, 3
    return a


def accuracy(model, args):
    t = time.time()
    acc = evaluate_accuracy(model, args.test, max_images=args.test_images)
    acc["eval_s"] = round(time.time() - t, 1)
    return acc


def train_config(base_model, args):
    """The bundled model's own training config (augmentation, loss), with the bench's step budget."""
    cfg = dict((base_model.meta.get("trained_on", {}) or {}).get("config", {}) or {})
    cfg.pop("model", None)
    cfg["threads"] = args.threads
    return cfg


def plain_finetune(model, args, base_cfg, steps):
    """Fine-tune an exported (plain torch) network with the training loop's batches and loss.

    The training loop builds models from configs, which cannot describe a channel-pruned plain net;
    this loop reuses its data pipeline and loss unchanged (rot/flip augmentation: a plain CNN).
    """
    from micro_sym.training.config import TrainConfig
    from micro_sym.training.train2d import load_training_data, random_batch, segmentation_loss

    cfg = TrainConfig.model_validate({**base_cfg, "model": {"arch": "unet_plain"}})
    data = load_training_data(args.train, model.k)
    crop = (cfg.data.crop // model.total_stride) * model.total_stride
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=cfg.optim.weight_decay)
    for step in range(steps):
        x, b, v, m, _ = random_batch(data, cfg, crop, model.k, True, rng)
        loss, _ = segmentation_loss(model(x), b, v, m, cfg.loss)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        opt.step()
    return model.eval()


def matched_plain_widths(pruned):
    """Per-level channel counts of a plain U-Net with (about) the pruned model's layer shapes.

    The plain baseline has one width per level; taking the rounded mean of the pruned model's
    per-level channel counts gives nearly the same MACs at every resolution, hence latency.
    """
    cfg = pruned.config
    n_levels, cpl, dec = len(cfg["widths"]), cfg["convs_per_level"], cfg["dec_convs"] or cfg["convs_per_level"]
    f = pruned.config["layer_fields"]
    G = 8
    enc = [f[i * cpl:(i + 1) * cpl] for i in range(n_levels)]
    decs = [f[n_levels * cpl + j * dec:n_levels * cpl + (j + 1) * dec] for j in range(n_levels - 1)]
    per_level = [list(enc[i]) for i in range(n_levels)]
    for j, d in enumerate(decs):
        per_level[n_levels - 2 - j] += list(d)
    return [max(1, int(round(np.mean(lv) * G))) for lv in per_level]


def latency_table(entries, args, threads):
    """Interleaved latency of every entry (torch deployed form and ONNX file): median and min over rounds.

    Interleaving (round robin over models, several rounds) spreads the load of other jobs on the
    shared CPU over all models instead of penalizing whichever ran during a busy spell.
    """
    torch.set_num_threads(threads)
    for _, onnx_model in entries.values():
        onnx_model.__dict__["_rt"] = None  # rebuild sessions with this thread count
    x = torch.randn(1, 1, args.latency_size, args.latency_size, generator=torch.Generator().manual_seed(0))
    times = {name: {"torch": [], "onnx": []} for name in entries}
    with torch.inference_mode():
        for _ in range(args.rounds):
            for name, (plain, onnx_model) in entries.items():
                for kind, net in (("torch", plain), ("onnx", onnx_model)):
                    net(x)  # warm-up
                    for _ in range(args.repeats):
                        t0 = time.perf_counter()
                        net(x)
                        times[name][kind].append(time.perf_counter() - t0)
    torch.set_num_threads(args.threads)
    return {name: {kind: {"median": statistics.median(v), "min": min(v)} for kind, v in d.items()} for name, d in times.items()}


def latency_only(args):
    """Interleaved latency of model files in every deployed form (no training, no accuracy)."""
    d = Path(tempfile.mkdtemp(prefix="bench_prune_lat_"))
    forms = {}
    for i, name in enumerate(args.latency_models):
        m = load_model(name)
        forms[f"{name} | SegModel.export()"] = m.export().eval()
        forms[f"{name} | deployed .pt (BN folded)"] = load_deployed(export_model(m, d / f"{i}.pt"))
        forms[f"{name} | onnxruntime"] = load_deployed(export_model(m, d / f"{i}.onnx"))
    x = torch.randn(1, 1, args.latency_size, args.latency_size, generator=torch.Generator().manual_seed(0))
    res = {}
    for th in args.latency_threads:
        torch.set_num_threads(th)
        times = {k: [] for k in forms}
        with torch.inference_mode():
            for _ in range(args.rounds):
                for k, net in forms.items():
                    if hasattr(net, "__dict__") and "_rt" in net.__dict__:
                        net.__dict__["_rt"] = None if _ == 0 else net.__dict__["_rt"]
                    net(x)
                    for _r in range(args.repeats):
                        t0 = time.perf_counter()
                        net(x)
                        times[k].append(time.perf_counter() - t0)
        res[f"{th}_threads"] = {k: {"median": statistics.median(v), "min": min(v)} for k, v in times.items()}
        log(f"{th} thread(s):")
        for k, v in res[f"{th}_threads"].items():
            print(f"  {k:<70} median {v['median']:.4f} s  min {v['min']:.4f} s")
    out = write_json(args.out, {"latency_size": args.latency_size, "rounds": args.rounds, "repeats": args.repeats,
                                "torch": torch.__version__, "results": res})
    log(f"wrote {out}")


def main():
    args = parse()
    if args.latency_models:
        return latency_only(args)
    torch.set_num_threads(args.threads)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    base = load_model(args.model)
    base_cfg = train_config(base, args)
    rows, deployed = [], {}
    onnx_dir = Path(tempfile.mkdtemp(prefix="bench_prune_"))

    def add(name, model, kind, extra):
        plain = model if getattr(model, "exported", False) else model.export()
        onnx_path = export_model(model, onnx_dir / f"{len(rows)}.onnx")
        deployed[name] = (plain.eval(), load_deployed(onnx_path))
        eq = equivariance_error(model)
        row = {"name": name, "kind": kind, "parameters": count_parameters(model, deployed=True), "macs_per_pixel": count_macs(model)["per_pixel"],
               "equivariance_error_max": eq["max"], "equivariance_per_element": {p["element"]: p["error"] for p in eq["per_element"]},
               **extra}
        if "accuracy" not in row:
            row["accuracy"] = accuracy(plain, args)
        rows.append(row)
        log(f"{name}: params {row['parameters']:,} MACs/px {row['macs_per_pixel']:.0f} eq {eq['max']:.1e} "
            f"grain F1 {row['accuracy']['grain_f1']:.4f} boundary F1 {row['accuracy']['boundary_f1']:.4f}")
        return row

    log(f"model {args.model}: fields {layer_fields(base)}")
    add("p4m r=0 (bundled)", base, "p4m", {"ratio": 0.0, "layer_fields": layer_fields(base), "finetune_steps": 0})

    pruned_models = {}
    for r in args.ratios:
        pruned, info = prune_model(base, r, criterion=args.criterion, scope=args.scope, calibrate=args.train,
                                   calibrate_batches=args.calibrate_batches)
        acc0 = accuracy(pruned.export(), args)
        log(f"pruned r={r}: fields {info['fields_after']} (removed {info['removed_fraction']:.3f}); after BN re-estimation, "
            f"before fine-tuning: grain F1 {acc0['grain_f1']:.4f} boundary F1 {acc0['boundary_f1']:.4f}")
        t0 = time.time()
        tuned = finetune_model(pruned, args.train, val=args.val, epochs=args.epochs, steps_per_epoch=args.steps, lr=args.lr,
                               threads=args.threads, train_config=base_cfg, out=work / f"ft_{r}", log=lambda s: None)
        ft_s = time.time() - t0
        pruned_models[r] = tuned
        add(f"p4m r={r}", tuned, "p4m", {"ratio": r, "layer_fields": info["fields_after"], "removed_fraction": info["removed_fraction"],
                                         "accuracy_before_finetune": acc0, "finetune_steps": args.epochs * args.steps,
                                         "finetune_s": round(ft_s, 1)})

    # Contrast: generic per-channel L1 pruning of the exported plain network (fields ignored).
    ref_ratio = 0.5
    chan = channel_prune_plain(base.export(), ref_ratio)
    add(f"channel-L1 r={ref_ratio} (no fine-tuning)", chan, "channel", {"ratio": ref_ratio, "channels": chan.meta["channel_pruning"]["channels"],
                                                                   "finetune_steps": 0})
    t0 = time.time()
    chan_ft = plain_finetune(channel_prune_plain(base.export(), ref_ratio), args, base_cfg, args.epochs * args.steps)
    add(f"channel-L1 r={ref_ratio} + fine-tuning", chan_ft, "channel", {"ratio": ref_ratio, "finetune_steps": args.epochs * args.steps,
                                                                   "finetune_s": round(time.time() - t0, 1)})

    # Plain CNN with the layer shapes (hence latency) of the 50%-pruned p4m model, trained from scratch.
    if ref_ratio in pruned_models and args.plain_steps > 0:
        from micro_sym.training.config import TrainConfig
        from micro_sym.training.loop import train

        widths = matched_plain_widths(pruned_models[ref_ratio])
        cfg = {**base_cfg, "model": {**{k: base.config[k] for k in ("convs_per_level", "dec_convs", "stem_kernel", "head_kernel")},
                                     "arch": "unet_plain", "widths": widths}}
        steps = args.plain_steps
        cfg["optim"] = {**cfg.get("optim", {}), "epochs": max(1, steps // args.steps)}
        cfg["data"] = {**cfg.get("data", {}), "steps_per_epoch": min(args.steps, steps)}
        t0 = time.time()
        train(TrainConfig.model_validate(cfg), args.train, work / "plain", val=args.val, log=lambda s: None)
        plain = load_model(work / "plain" / "model.pt")
        add(f"plain CNN widths={widths}", plain, "plain", {"widths": widths, "train_steps": cfg["optim"]["epochs"] * cfg["data"]["steps_per_epoch"],
                                                          "train_s": round(time.time() - t0, 1)})

    lat = {}
    for th in args.latency_threads:
        log(f"latency (interleaved, {th} thread(s))")
        lat[th] = latency_table(deployed, args, th)
    head = args.latency_threads[0]
    for row in rows:
        row["latency"] = {f"{th}_threads": lat[th][row["name"]] for th in args.latency_threads}
        row["latency_torch_s"] = lat[head][row["name"]]["torch"]["median"]
        row["latency_onnx_s"] = lat[head][row["name"]]["onnx"]["median"]
    b = rows[0]
    for row in rows:
        row["latency_ratio_torch"] = b["latency_torch_s"] / row["latency_torch_s"]
        row["latency_ratio_onnx"] = b["latency_onnx_s"] / row["latency_onnx_s"]
        row["grain_f1_delta_points"] = 100 * (row["accuracy"]["grain_f1"] - b["accuracy"]["grain_f1"])

    result = {
        "model": args.model, "config": base.config, "test": args.test, "test_images": args.test_images,
        "criterion": args.criterion, "scope": args.scope, "finetune": {"epochs": args.epochs, "steps_per_epoch": args.steps, "lr": args.lr},
        "latency_size": args.latency_size, "threads": args.threads, "latency_threads": args.latency_threads,
        "headline_latency": f"median, {args.latency_threads[0]} thread(s)", "rounds": args.rounds, "repeats": args.repeats,
        "quick": args.quick, "torch": torch.__version__, "cpu": platform.machine(),
        "note": "CPU shared with other jobs: latencies are medians of interleaved rounds, ratios are the robust quantity.",
        "wall_s": round(time.time() - t_start, 1), "rows": rows,
    }
    out = write_json(args.out, result)
    print()
    print(f"{'model':<44} {'params':>8} {'MAC/px':>7} {'torch s':>8} {'x':>5} {'onnx s':>7} {'x':>5} {'grainF1':>8} {'bndF1':>6} {'eq err':>8}")
    for r in rows:
        print(f"{r['name']:<44} {r['parameters']:>8,} {r['macs_per_pixel']:>7.0f} {r['latency_torch_s']:>8.4f} {r['latency_ratio_torch']:>5.2f} "
              f"{r['latency_onnx_s']:>7.4f} {r['latency_ratio_onnx']:>5.2f} {r['accuracy']['grain_f1']:>8.4f} "
              f"{r['accuracy']['boundary_f1']:>6.3f} {r['equivariance_error_max']:>8.1e}")
    plot(result, out.with_suffix(".png"))
    log(f"wrote {out} and {out.with_suffix('.png')} ({result['wall_s']:.0f} s)")


def plot(result, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    style = {"p4m": ("o-", "tab:blue"), "channel": ("x", "tab:red"), "plain": ("s", "tab:green")}
    for ax, key, label in ((axes[0], "latency_torch_s", "torch (exported)"), (axes[1], "latency_onnx_s", "onnxruntime")):
        p4m = sorted([r for r in result["rows"] if r["kind"] == "p4m"], key=lambda r: r[key])
        ax.plot([r[key] for r in p4m], [r["accuracy"]["grain_f1"] for r in p4m], style["p4m"][0], color=style["p4m"][1], label="p4m, field-pruned + FT")
        for r in p4m:
            ax.annotate(f"{int(100 * r['ratio'])}%", (r[key], r["accuracy"]["grain_f1"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
        for kind, lab in (("channel", "channel-L1 pruned"), ("plain", "plain CNN, matched shapes")):
            rs = [r for r in result["rows"] if r["kind"] == kind]
            if rs:
                ax.plot([r[key] for r in rs], [r["accuracy"]["grain_f1"] for r in rs], style[kind][0], color=style[kind][1], ls="", label=lab)
        ax.set_xlabel(f"latency, s per {result['latency_size']}² image ({label}, {result['latency_threads'][0]} thread)")
        ax.set_ylabel("grain F1 (held-out)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle("Field-wise pruning of the bundled p4m model" + (" (quick run)" if result["quick"] else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()

"""Field-wise structured pruning of escnn U-Nets (docs/design.md §4).

The pruning unit is a **field**: all |G| channels of a regular field (or all dimensions of an irrep
field). Removing a whole field keeps every layer a map between G-representations, so the smaller
network is still exactly equivariant; removing single channels (what generic channel pruners do)
drops one orientation from a field and breaks the symmetry (see :func:`channel_prune_plain`).

Supported models: the 2D ``unet_equi`` :class:`~micro_sym.models.SegModel` (any group) and the 3D
``gcnn3d`` variant ``octa`` (24 cube rotations, regular fields). Heads (output types are the
boundary/orientation contract) and the stem convolution (input layer) are never pruned.

The pruned model is a regular escnn model: its config gains ``layer_fields``, the number of output
fields of every convolution in module order (encoder blocks, then decoder blocks), and the model
builders rebuild that structure from the config (a small hook calls :func:`shrink_structure`), so a
pruned model saves with :func:`micro_sym.models.save_model` and loads with ``load_model`` like any other.

>>> from micro_sym.models import build_model                       # doctest: +SKIP
>>> small, info = prune_model(build_model({"widths": [2, 4]}), 0.5)  # doctest: +SKIP
>>> small.config["layer_fields"]                                   # doctest: +SKIP
[2, 2, 2, 2, 2]
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from micro_sym.errors import MicroSymError

CRITERIA = ("norm", "bn")
SCOPES = ("global", "layer")


# --------------------------------------------------------------------------- model structure


@dataclass
class _Layer:
    """One prunable convolution: where it sits and what its output fields feed."""

    index: int
    where: tuple  # ("enc" | "decs", block index, child index)
    conv: object
    bn: object | None
    consumers: list = field(default_factory=list)  # (conv, channel offset of this layer's output in its input)


def _holder(model):
    """The module holding the U-Net pieces and the names of its lists (2D core / 3D model itself)."""
    if getattr(model, "exported", False):
        raise MicroSymError("prune: the model is an exported (plain torch) copy; prune the escnn model")
    cfg = getattr(model, "config", {}) or {}
    if int(getattr(model, "ndim", 2)) == 3:
        if cfg.get("variant") != "octa":
            raise MicroSymError(f"prune: 3D variant '{cfg.get('variant')}' is not supported (field pruning needs the "
                                "escnn regular-field variant 'octa')")
        return model, {"enc": "enc", "pools": "pools", "ups": "ups", "decs": "dec", "head": "head"}, model.in_type
    if cfg.get("arch") != "unet_equi":
        raise MicroSymError(f"prune: arch '{cfg.get('arch')}' has no fields to prune (field pruning needs an escnn "
                            "'unet_equi' model; use channel_prune_plain for plain CNNs)")
    core = model.core
    return core, {"enc": "enc", "pools": "pools", "ups": "ups", "decs": "decs", "head": "head"}, core.wrap.in_type


def _is_conv(m) -> bool:
    return type(m).__name__ in ("R2Conv", "R3Conv")


def _children(block):
    return list(block._modules.values())


def _layers(model) -> tuple[list[_Layer], object]:
    """Prunable convolutions (all but the head) in module order, with their consumers; and the head."""
    holder, names, _ = _holder(model)
    enc, decs, head = getattr(holder, names["enc"]), getattr(holder, names["decs"]), getattr(holder, names["head"])
    layers = []
    for part, blocks in (("enc", enc), ("decs", decs)):
        for b, block in enumerate(blocks):
            kids = _children(block)
            for c, m in enumerate(kids):
                if _is_conv(m):
                    bn = next((n for n in kids[c + 1:] if type(n).__name__ == "InnerBatchNorm"), None)
                    layers.append(_Layer(len(layers), (part, b, c), m, bn))
    convs_of = lambda block: [m for m in _children(block) if _is_conv(m)]  # noqa: E731
    # Consumers: follow the topology. Within a block, conv j feeds conv j+1. The last conv of encoder
    # level i feeds encoder level i+1 (through the pool) and, if i is not the bottleneck, the decoder
    # at level i through the skip concatenation (skip first, so offset 0). A decoder block's last conv
    # feeds the next decoder block after the upsampled half of the concatenation (offset = skip size),
    # or the head.
    by_block = {}
    for L in layers:
        by_block.setdefault(L.where[:2], []).append(L)
    n_enc = len(enc)
    for key, ls in by_block.items():
        for a, b in zip(ls[:-1], ls[1:]):
            a.consumers.append((b.conv, 0))
    for i in range(n_enc):
        last = by_block[("enc", i)][-1]
        if i + 1 < n_enc:
            last.consumers.append((by_block[("enc", i + 1)][0].conv, 0))
            dec_j = n_enc - 2 - i  # decoder blocks run from the deepest level up
            last.consumers.append((convs_of(decs[dec_j])[0], 0))
        else:  # bottleneck feeds the first decoder block after its skip
            if len(decs):
                skip = by_block[("enc", n_enc - 2)][-1].conv.out_type.size
                last.consumers.append((convs_of(decs[0])[0], skip))
            else:
                last.consumers.append((head, 0))
    for j in range(len(decs)):
        last = by_block[("decs", j)][-1]
        if j + 1 < len(decs):
            skip = by_block[("enc", n_enc - 3 - j)][-1].conv.out_type.size
            last.consumers.append((convs_of(decs[j + 1])[0], skip))
        else:
            last.consumers.append((head, 0))
    return layers, head


def layer_fields(model) -> list[int]:
    """Number of output fields of every prunable convolution, in module order."""
    return [len(L.conv.out_type) for L in _layers(model)[0]]


def group_order(model) -> int:
    """|G| of the model's group (channels per regular field)."""
    holder, _, in_type = _holder(model)
    return int(in_type.fibergroup.order())


# --------------------------------------------------------------------------- importance


def _field_slices(ftype):
    off = np.cumsum([0] + [r.size for r in ftype.representations])
    return [slice(int(a), int(b)) for a, b in zip(off[:-1], off[1:])]


@torch.no_grad()
def field_importance(model, criterion: str = "norm") -> list[np.ndarray]:
    """Importance of every output field of every prunable convolution.

    Parameters
    ----------
    model : SegModel or 3D octa model (escnn)
    criterion : {"norm", "bn"}
        ``"norm"``: RMS of the field's expanded filter rows (output side, how it is computed) times
        the RMS of the filter columns that read it in every consumer (input side, how much it is
        used), each divided by its layer mean so that layers of different fan-in compare in a global
        ranking. ``"bn"``: the field's InnerBatchNorm scale ``|gamma|`` over its layer mean (network
        slimming): batch norm makes the producer's weight scale meaningless, gamma is what survives.

    Returns
    -------
    list of (n_fields,) float arrays, one per layer (module order), layer mean 1.
    """
    if criterion not in CRITERIA:
        raise MicroSymError(f"prune: unknown criterion '{criterion}' (expected one of {', '.join(CRITERIA)})")
    layers, _ = _layers(model)
    was = model.training
    model.eval()
    filt = {}

    def filter_of(conv):
        if id(conv) not in filt:
            filt[id(conv)] = conv.expand_parameters()[0].detach().float()
        return filt[id(conv)]

    scores = []
    for L in layers:
        sl = _field_slices(L.conv.out_type)
        if criterion == "bn":
            if L.bn is None:
                raise MicroSymError("prune: criterion 'bn' needs a batch norm after every convolution")
            s = _bn_field_values(L.bn, "weight").abs().numpy()
        else:
            w = filter_of(L.conv)
            out_side = np.array([w[s].pow(2).mean().sqrt().item() for s in sl])
            in_side = np.zeros(len(sl))
            for conv, off in L.consumers:
                wc = filter_of(conv)
                in_side += np.array([wc[:, s.start + off:s.stop + off].pow(2).mean().sqrt().item() for s in sl])
            s = (out_side / max(out_side.mean(), 1e-12)) * (in_side / max(in_side.mean(), 1e-12))
        scores.append(np.asarray(s, dtype=np.float64) / max(float(np.mean(s)), 1e-12))
    model.train(was)
    return scores


def _bn_field_values(bn, name: str) -> torch.Tensor:
    """Per-field values of an InnerBatchNorm parameter/buffer, in field order."""
    out = torch.zeros(len(bn.in_type))
    rank = {}
    for f, r in enumerate(bn.in_type.representations):
        rank.setdefault(r.size, []).append(f)
    for s, fields in rank.items():
        vals = getattr(getattr(bn, f"batch_norm_[{s}]"), name).detach().cpu().reshape(-1)
        out[fields] = vals.float()
    return out


def select_fields(scores: list[np.ndarray], ratio: float, scope: str = "global", protect: tuple = (0,)) -> list[list[int]]:
    """Choose the fields to keep.

    Parameters
    ----------
    scores : list of arrays
        From :func:`field_importance`.
    ratio : float in [0, 1)
        Fraction of the prunable fields to remove (``round(ratio * n)``; every layer keeps at least one).
    scope : {"global", "layer"}
        ``"layer"``: each layer loses ``round(ratio * n_layer)`` fields; ``"global"``: the lowest-scoring
        fields over all layers go first (layers then shrink unevenly).
    protect : tuple of int
        Layer indices never pruned (default: the stem convolution, the input layer).

    Returns
    -------
    list of sorted lists of kept field indices, one per layer.
    """
    if not 0 <= ratio < 1:
        raise MicroSymError(f"prune: ratio must be in [0, 1), got {ratio}")
    if scope not in SCOPES:
        raise MicroSymError(f"prune: unknown scope '{scope}' (expected one of {', '.join(SCOPES)})")
    keep = [set(range(len(s))) for s in scores]
    prunable = [i for i in range(len(scores)) if i not in protect]
    if scope == "layer":
        for i in prunable:
            n = len(scores[i])
            drop = min(int(math.floor(ratio * n + 0.5)), n - 1)
            for f in np.argsort(scores[i], kind="stable")[:drop]:
                keep[i].discard(int(f))
    else:
        cand = sorted((float(scores[i][f]), i, f) for i in prunable for f in range(len(scores[i])))
        total = sum(len(scores[i]) for i in prunable)
        drop = int(math.floor(ratio * total + 0.5))
        for _, i, f in cand:
            if drop == 0:
                break
            if len(keep[i]) > 1:  # a layer with no field left would cut the network
                keep[i].discard(f)
                drop -= 1
    return [sorted(k) for k in keep]


# --------------------------------------------------------------------------- rebuilding


def _sub_type(ftype, keep):
    from escnn import nn as enn

    return enn.FieldType(ftype.gspace, [ftype.representations[i] for i in keep])


def _ranks(ftype, key):
    """For each field: its rank among the fields with the same ``key`` (repr name or size)."""
    seen, out = {}, []
    for r in ftype.representations:
        k = key(r)
        out.append(seen.get(k, 0))
        seen[k] = seen.get(k, 0) + 1
    return out


def _channels(ftype, keep) -> list[int]:
    sl = _field_slices(ftype)
    return [c for f in keep for c in range(sl[f].start, sl[f].stop)]


@torch.no_grad()
def _new_conv(old, in_type, keep_in, keep_out, check: bool = True):
    """Smaller R2Conv/R3Conv reading fields ``keep_in`` of ``old.in_type``, writing ``keep_out``.

    escnn stores a convolution's weights as basis coefficients grouped by (input repr, output repr)
    pair, each group laid out as ``(out occurrences, in occurrences, basis)`` in field order; the
    surviving fields' coefficients are therefore a sub-block of each group and are copied exactly.
    """
    out_type = _sub_type(old.out_type, keep_out)
    kw = dict(padding=old.padding, stride=old.stride, dilation=old.dilation, padding_mode=old.padding_mode,
              groups=old.groups, bias=old.bias is not None, initialize=False)
    new = type(old)(in_type, out_type, old.kernel_size, **kw)
    ob, nb = old._basisexpansion, new._basisexpansion
    in_name, out_name = [r.name for r in old.in_type.representations], [r.name for r in old.out_type.representations]
    in_rank, out_rank = _ranks(old.in_type, lambda r: r.name), _ranks(old.out_type, lambda r: r.name)
    w = torch.zeros_like(new.weights.data)
    for pair, (s, e) in nb._weights_ranges.items():
        os_, oe = ob._weights_ranges[pair]
        n_out, n_in = ob._out_count[pair[1]], ob._in_count[pair[0]]
        block = old.weights.data[os_:oe].view(n_out, n_in, -1)
        oi = [out_rank[f] for f in keep_out if out_name[f] == pair[1]]
        ii = [in_rank[f] for f in keep_in if in_name[f] == pair[0]]
        w[s:e] = block[oi][:, ii].reshape(-1)
    new.weights.data.copy_(w)
    if old.bias is not None and new.bias is not None:
        group = old.out_type.fibergroup
        n_triv = [sum(group.irrep(*irr).is_trivial() for irr in r.irreps) for r in old.out_type.representations]
        off = np.cumsum([0] + n_triv)
        idx = [b for f in keep_out for b in range(off[f], off[f + 1])]
        new.bias.data.copy_(old.bias.data[idx])
    if check:  # the copy must reproduce the surviving part of the expanded filter exactly
        of, obias = old.expand_parameters()
        nf, nbias = new.expand_parameters()
        ci, co = _channels(old.in_type, keep_in), _channels(old.out_type, keep_out)
        ref = of[co][:, ci]
        if nf.shape != ref.shape or not torch.allclose(nf, ref, atol=1e-6 * max(1.0, ref.abs().max().item())):
            raise MicroSymError("prune: rebuilt convolution does not reproduce the surviving filters (escnn basis mismatch)")
        if obias is not None and not torch.allclose(nbias, obias[co], atol=1e-6):
            raise MicroSymError("prune: rebuilt convolution does not reproduce the surviving biases")
    return new


@torch.no_grad()
def _new_bn(old, keep):
    """InnerBatchNorm over the kept fields, with their affine parameters and running statistics."""
    from escnn import nn as enn

    t = _sub_type(old.in_type, keep)
    new = enn.InnerBatchNorm(t, eps=old.eps, momentum=old.momentum, affine=old.affine,
                             track_running_stats=old.track_running_stats)
    size_rank = _ranks(old.in_type, lambda r: r.size)
    sizes = [r.size for r in old.in_type.representations]
    for s in new._nfields:
        src, dst = getattr(old, f"batch_norm_[{s}]"), getattr(new, f"batch_norm_[{s}]")
        idx = [size_rank[f] for f in keep if sizes[f] == s]
        for name in ("weight", "bias", "running_mean", "running_var"):
            a, b = getattr(src, name, None), getattr(dst, name, None)
            if a is not None and b is not None:
                b.data.copy_(a.data[idx])
        if getattr(src, "num_batches_tracked", None) is not None:
            dst.num_batches_tracked.copy_(src.num_batches_tracked)
    return new


def _retype(old, t):
    """A pointwise module (ReLU, max pool, upsampling) rebuilt for field type ``t``."""
    from escnn import nn as enn

    name = type(old).__name__
    if name == "ReLU":
        return enn.ReLU(t, inplace=getattr(old, "_inplace", True))
    if name in ("PointwiseMaxPool2D", "PointwiseMaxPool3D", "PointwiseAvgPool2D", "PointwiseAvgPool3D"):
        return type(old)(t, old.kernel_size, stride=old.stride, padding=old.padding)
    if name in ("R2Upsampling", "R3Upsampling"):
        kw = {} if old._mode == "nearest" else {"align_corners": old._align_corners}
        return type(old)(t, scale_factor=old._scale_factor, size=old._size, mode=old._mode, **kw)
    raise MicroSymError(f"prune: cannot rebuild module {name} for a smaller field type")


def _rebuild_block(block, in_type, keep_in, keeps, counter, check):
    """Rebuild a SequentialModule of conv/bn/relu with new field selections; returns (block, type, keep)."""
    from escnn import nn as enn

    mods, t, k_in, k_cur = [], in_type, keep_in, None
    for m in _children(block):
        if _is_conv(m):
            k_cur = keeps[counter[0]]
            counter[0] += 1
            m2 = _new_conv(m, t, k_in, k_cur, check)
            t, k_in = m2.out_type, k_cur
        elif type(m).__name__ == "InnerBatchNorm":
            m2 = _new_bn(m, k_cur)
        else:
            m2 = _retype(m, t)
        mods.append(m2)
    return enn.SequentialModule(*mods), t, k_cur


def _apply_keeps(model, keeps, check: bool = True):
    """Replace the U-Net pieces of ``model`` (in place) by smaller ones keeping fields ``keeps``."""
    from torch import nn

    holder, names, in_type = _holder(model)
    enc, pools = getattr(holder, names["enc"]), getattr(holder, names["pools"])
    ups, decs, head = getattr(holder, names["ups"]), getattr(holder, names["decs"]), getattr(holder, names["head"])
    if len(keeps) != sum(1 for b in list(enc) + list(decs) for m in _children(b) if _is_conv(m)):
        raise MicroSymError("prune: layer_fields does not match the number of convolutions of this architecture")
    counter = [0]
    t, k = in_type, list(range(len(in_type)))
    old_t = in_type
    new_enc, new_pools, skips = [], [], []
    for i, block in enumerate(enc):
        if i > 0:
            new_pools.append(_retype(pools[i - 1], t))
        last_old = [m for m in _children(block) if _is_conv(m)][-1].out_type
        b, t, k = _rebuild_block(block, t, k, keeps, counter, check)
        new_enc.append(b)
        skips.append((last_old, t, k))
        old_t = last_old
    skips.pop()  # the bottleneck is not a skip
    new_ups, new_decs = [], []
    for up, block in zip(ups, decs):
        new_ups.append(_retype(up, t))
        s_old, s_new, s_keep = skips.pop()
        cat_keep = list(s_keep) + [len(s_old) + f for f in k]  # concatenation order: (skip, up)
        last_old = [m for m in _children(block) if _is_conv(m)][-1].out_type
        b, t, k = _rebuild_block(block, s_new + t, cat_keep, keeps, counter, check)
        new_decs.append(b)
        old_t = last_old
    del old_t
    new_head = _new_conv(head, t, k, list(range(len(head.out_type))), check)
    setattr(holder, names["enc"], nn.ModuleList(new_enc))
    setattr(holder, names["pools"], nn.ModuleList(new_pools))
    setattr(holder, names["ups"], nn.ModuleList(new_ups))
    setattr(holder, names["decs"], nn.ModuleList(new_decs))
    setattr(holder, names["head"], new_head)
    return model


def shrink_structure(model, fields: list[int]):
    """Give a freshly built model the field counts ``fields`` (config ``layer_fields``), in place.

    Called by the model builders when a config has ``layer_fields`` (loading a pruned model); the
    weights kept here are placeholders that ``load_state_dict`` overwrites.
    """
    current = layer_fields(model)
    fields = [int(f) for f in fields]
    if len(fields) != len(current) or any(f < 1 or f > c for f, c in zip(fields, current)):
        raise MicroSymError(f"model config: layer_fields {fields} does not fit the architecture's field counts {current}")
    was = model.training
    _apply_keeps(model, [list(range(f)) for f in fields], check=False)
    model.train(was)
    return model


# --------------------------------------------------------------------------- public entry points


def prune_model(model, ratio: float, *, criterion: str = "norm", scope: str = "global", steps: int = 1,
                finetune=None, calibrate=None, calibrate_batches: int = 10, protect_stem: bool = True, log=None):
    """Remove a fraction of whole fields and rebuild a smaller escnn model with the surviving weights.

    Parameters
    ----------
    model : SegModel (2D ``unet_equi``) or 3D ``octa`` model
        Not modified (a pruned copy is returned).
    ratio : float in [0, 1)
        Fraction of the prunable fields (all but the stem's and the head's) to remove, counted on the
        original model.
    criterion : {"norm", "bn"}
        See :func:`field_importance`.
    scope : {"global", "layer"}
        See :func:`select_fields`.
    steps : int
        Iterative schedule: prune in ``steps`` rounds to cumulative ratios ``1 - (1 - ratio)^(s/steps)``,
        scoring again (and calling ``finetune``) after each round.
    finetune : callable, optional
        ``finetune(model, step) -> model`` called after every round (e.g. :func:`finetune_model`).
    calibrate : path, optional
        2D labeled dataset: re-estimate batch-norm statistics after every round (before fine-tuning),
        see :func:`recalibrate_bn`.
    calibrate_batches : int
    protect_stem : bool
        Never prune the first convolution (the input layer).
    log : callable, optional
        Receives one line per round.

    Returns
    -------
    pruned : same type as ``model``, eval mode
        ``config["layer_fields"]`` holds the new field counts.
    info : dict
        ``fields_before``, ``fields_after`` (per layer), ``removed_fraction``, ``group_order``.

    Examples
    --------
    >>> from micro_sym.models import build_model                                  # doctest: +SKIP
    >>> pruned, info = prune_model(build_model({"widths": [2, 4, 8]}), 0.5)       # doctest: +SKIP
    >>> info["removed_fraction"]                                                  # doctest: +SKIP
    0.5
    """
    if int(steps) < 1:
        raise MicroSymError(f"prune: steps must be >= 1, got {steps}")
    if not 0 <= ratio < 1:
        raise MicroSymError(f"prune: ratio must be in [0, 1), got {ratio}")
    before = layer_fields(model)
    protect = (0,) if protect_stem else ()
    n_prunable = sum(f for i, f in enumerate(before) if i not in protect)
    current = _shell_copy(model)
    for s in range(1, int(steps) + 1):
        target = 1.0 - (1.0 - ratio) ** (s / steps)
        now = layer_fields(current)
        have = sum(f for i, f in enumerate(now) if i not in protect)
        want_removed = int(math.floor(target * n_prunable + 0.5)) - (n_prunable - have)
        step_ratio = max(0.0, want_removed / max(have, 1))
        keeps = select_fields(field_importance(current, criterion), min(step_ratio, 0.999), scope, protect)
        _apply_keeps(current, keeps)
        _set_fields(current, layer_fields(current))
        _eval(current)
        if log:
            log(f"prune round {s}/{steps}: fields {sum(now)} -> {sum(layer_fields(current))}")
        if calibrate is not None:
            recalibrate_bn(current, calibrate, batches=calibrate_batches)
        if finetune is not None:
            current = _eval(finetune(current, s))
    after = layer_fields(current)
    kept = sum(f for i, f in enumerate(after) if i not in protect)
    info = {"fields_before": before, "fields_after": after, "group_order": group_order(model),
            "removed_fraction": 1.0 - kept / max(n_prunable, 1), "criterion": criterion, "scope": scope,
            "ratio": ratio, "steps": int(steps)}
    current.meta = dict(getattr(model, "meta", {}))
    current.meta["pruning"] = info
    return _eval(current), info


def _eval(model):
    """Switch to eval mode without autograd history: escnn caches expanded filters on ``eval()``, and
    filters computed with grad enabled are non-leaf tensors that ``copy.deepcopy`` refuses."""
    with torch.no_grad():
        model.train()
        model.eval()
    return model


def safe_copy(model):
    """``copy.deepcopy`` of an escnn model in eval mode (the original's mode is restored)."""
    was = model.training
    _eval(model)
    out = copy.deepcopy(model)
    with torch.no_grad():
        model.train(was)
    return out


def _shell_copy(model):
    """A copy whose U-Net pieces can be replaced without touching ``model``.

    Pruning builds every convolution, batch norm, pooling and upsampling module anew, so only the
    containers need copying (escnn's 3D groups cannot be deep-copied at all); the stateless
    wrappers that survive (input wrap, concatenations) are shared.
    """
    import collections

    def shallow(m):
        c = copy.copy(m)
        c._modules = collections.OrderedDict(m._modules)
        c._parameters = collections.OrderedDict(m._parameters)
        c._buffers = collections.OrderedDict(m._buffers)
        return c

    out = shallow(model)
    if int(getattr(model, "ndim", 2)) == 2:
        out.core = shallow(model.core)
    out.config = dict(model.config)
    out.meta = dict(getattr(model, "meta", {}))
    return out


def _set_fields(model, fields):
    cfg = dict(model.config)
    cfg["layer_fields"] = [int(f) for f in fields]
    model.config = cfg


def finetune_model(model, data, *, epochs: int = 2, out=None, val=None, steps_per_epoch: int | None = None,
                   lr: float = 1e-3, crop: int | None = None, batch_size: int | None = None, seed: int = 0,
                   threads: int | None = None, log=print, train_config: dict | None = None,
                   teacher=None, distill: float = 0.0):
    """Fine-tune a (pruned) 2D model with :func:`micro_sym.training.train2d.train`, starting from its weights.

    The training loop builds its model from the config; starting it from given weights uses its own
    resume mechanism: a checkpoint at epoch 0 holding these weights (and a fresh optimizer) is
    written to ``out/last.pt`` and the run is resumed from it.

    Parameters
    ----------
    model : SegModel (escnn, 2D)
    data : path
        Labeled training dataset.
    epochs, steps_per_epoch, lr, crop, batch_size, seed, threads :
        Overrides of the training config (defaults: the model's own training config when its file
        records one, else the training defaults).
    out : path, optional
        Run directory (default: a temporary one, removed afterwards).
    val : path, optional
        Validation dataset (default: the training loop's split of ``data``).
    train_config : dict, optional
        Base training config (``TrainConfig`` fields); default: ``model.meta['trained_on']['config']``.
    teacher, distill :
        Also match this model's outputs (typically the unpruned model) with weight ``distill``
        (:func:`micro_sym.training.train2d.distillation_loss`).

    Returns
    -------
    SegModel
        The fine-tuned model (eval mode; weights of the last epoch, as the training loop's ``model.pt``).
    """
    import shutil
    import tempfile
    from pathlib import Path

    import numpy as np

    from micro_sym.training import train2d as T
    from micro_sym.models import load_model

    if int(getattr(model, "ndim", 2)) != 2:
        raise MicroSymError("finetune: only 2D models have a training loop here (3D: micro_sym.training.train3d)")
    cfg = T.finetuning_config(model, train_config)
    cfg.optim.epochs = int(epochs)
    cfg.optim.lr = float(lr)
    cfg.optim.warmup_steps = min(cfg.optim.warmup_steps, 20)  # weights are trained: a short ramp suffices
    if steps_per_epoch:
        cfg.data.steps_per_epoch = int(steps_per_epoch)
    if crop:
        cfg.data.crop = int(crop)
    if batch_size:
        cfg.data.batch_size = int(batch_size)
    if threads:
        cfg.threads = int(threads)
    cfg.seed = int(seed)
    cfg.device = "cpu"
    cfg.loss.distill = float(distill)
    tmp = out is None
    out = Path(tempfile.mkdtemp(prefix="micro_sym_finetune_")) if tmp else Path(out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        work = safe_copy(model).train()
        opt = torch.optim.AdamW(work.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
        scaler = torch.amp.GradScaler("cuda", enabled=False)
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        T._save_state(out / "last.pt", work, opt, scaler, rng, 0, -float("inf"), [], cfg.model_dump(mode="json"))
        (out / "history.jsonl").unlink(missing_ok=True)
        T.train(cfg, data, out, val=val, resume=True, log=log, teacher=teacher if distill > 0 else None)
        tuned = load_model(out / "model.pt")
        tuned.meta = dict(getattr(model, "meta", {}), finetune={"data": str(data), "epochs": int(epochs), "lr": float(lr),
                                                                "steps_per_epoch": cfg.data.steps_per_epoch,
                                                                "distill": float(distill)})
        return tuned.eval()
    finally:
        if tmp:
            shutil.rmtree(out, ignore_errors=True)


# --------------------------------------------------------------------------- contrast: channel pruning


@torch.no_grad()
def channel_prune_plain(plain_model, ratio: float, protect_stem: bool = True):
    """Generic per-channel L1 pruning of an exported (plain torch) 2D U-Net, ignoring field structure.

    What a generic structured pruner does (e.g. Torch-Pruning's magnitude pruner): per convolution,
    remove the ``round(ratio * C)`` output channels with the smallest filter L1 norm, with their
    batch-norm entries and the matching input channels of every consumer (through the skip
    concatenations). Channels of one escnn field are scored independently, so some fields lose only
    some of their |G| orientation channels and the network stops being equivariant. This exists as
    the benchmark's contrast to :func:`prune_model`.

    Parameters
    ----------
    plain_model : SegModel with ``exported=True`` (2D)
    ratio : float in [0, 1)

    Returns
    -------
    SegModel (exported, plain torch), eval mode; ``meta["channel_pruning"]`` has the channel counts.
    """
    from torch import nn

    if not getattr(plain_model, "exported", False) or int(getattr(plain_model, "ndim", 2)) != 2:
        raise MicroSymError("channel_prune_plain: expects an exported (plain torch) 2D model")
    m = copy.deepcopy(plain_model).eval()
    core = m.core
    convs = []  # (block list name, block idx, child idx)
    for part in ("enc", "decs"):
        for b, block in enumerate(getattr(core, part)):
            for c, mod in enumerate(block):
                if isinstance(mod, nn.Conv2d):
                    convs.append((part, b, c))
    keeps = []
    for i, (part, b, c) in enumerate(convs):
        conv = getattr(core, part)[b][c]
        n = conv.out_channels
        if i == 0 and protect_stem:
            keeps.append(list(range(n)))
            continue
        score = conv.weight.abs().sum(dim=(1, 2, 3)).numpy()
        drop = min(int(math.floor(ratio * n + 0.5)), n - 1)
        keeps.append(sorted(int(j) for j in np.argsort(score, kind="stable")[drop:]))

    def slice_conv(conv, cin, cout):
        new = nn.Conv2d(len(cin), len(cout), conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                        bias=conv.bias is not None)
        new.weight.data.copy_(conv.weight.data[cout][:, cin])
        if conv.bias is not None:
            new.bias.data.copy_(conv.bias.data[cout])
        return new

    def slice_bn(bn, keep):
        new = nn.BatchNorm2d(len(keep), eps=bn.eps, momentum=bn.momentum)
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(new, name).data.copy_(getattr(bn, name).data[keep])
        return new.eval()

    counter = [0]

    def redo(block, cin):
        mods, k = [], cin
        for mod in block:
            if isinstance(mod, nn.Conv2d):
                kc = keeps[counter[0]]
                counter[0] += 1
                mods.append(slice_conv(mod, k, kc))
                k_prev_out = kc
                k = kc
            elif isinstance(mod, nn.BatchNorm2d):
                mods.append(slice_bn(mod, k_prev_out))
            else:
                mods.append(copy.deepcopy(mod))
        return nn.Sequential(*mods), k

    k = [0]
    skips = []
    new_enc = []
    for block in core.enc:
        out_ch = [mod for mod in block if isinstance(mod, nn.Conv2d)][-1].out_channels
        blk, k = redo(block, k)
        new_enc.append(blk)
        skips.append((out_ch, k))
    skips.pop()
    new_decs = []
    for block in core.decs:
        s_n, s_k = skips.pop()
        out_ch = [mod for mod in block if isinstance(mod, nn.Conv2d)][-1].out_channels
        blk, k = redo(block, list(s_k) + [s_n + j for j in k])
        new_decs.append(blk)
    core.enc, core.decs = nn.ModuleList(new_enc), nn.ModuleList(new_decs)
    core.head = slice_conv(core.head, k, list(range(core.head.out_channels)))
    m.meta = dict(m.meta, channel_pruning={"ratio": ratio, "channels": [len(x) for x in keeps]})
    return m.eval()


def shrink_core(core, fields):
    """:func:`shrink_structure` for a bare 2D ``UNetCore`` (the hook in the 2D model registry)."""
    from types import SimpleNamespace

    shim = SimpleNamespace(core=core, config={"arch": "unet_equi"}, ndim=2, exported=False,
                           training=core.training, train=core.train)
    shrink_structure(shim, fields)
    return shim.core


@torch.no_grad()
def recalibrate_bn(model, data, *, batches: int = 20, batch_size: int = 6, crop: int = 160, seed: int = 0):
    """Re-estimate every batch norm's running statistics on training crops (in place; returns the model).

    Removing fields shifts the mean and variance of every downstream pre-activation, so the stored
    statistics no longer normalize what the pruned network computes; re-estimating them (a
    cumulative average over ``batches`` batches, no weights change) restores much of the accuracy
    before any fine-tuning and gives fine-tuning a far better start.

    Parameters
    ----------
    model : SegModel (2D, escnn or exported)
    data : path
        Labeled training dataset (images are normalized as in training).
    """
    from micro_sym.training import train2d as T

    cfg = T.TrainConfig.model_validate({"model": {"arch": "unet_plain"}, "data": {"crop": crop, "batch_size": batch_size}})
    samples = T.load_training_data(data, model.k)
    crop = min(crop, min(min(d.image.shape) for d in samples))
    cfg.data.crop = crop
    c = (crop // model.total_stride) * model.total_stride
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum) for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch counts equally
    rng = np.random.default_rng(seed)
    model.train()
    for _ in range(int(batches)):
        x, *_ = T.random_batch(samples, cfg, c, model.k, False, rng)
        model(x)
    for m, mom in zip(bns, saved):
        m.momentum = mom
    return _eval(model)

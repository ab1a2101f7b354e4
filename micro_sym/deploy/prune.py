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
builders rebuild that structure from the config (:func:`micro_sym.models.fields.shrink_structure`), so a
pruned model saves with :func:`micro_sym.models.save_model` and loads with ``load_model`` like any other.

>>> from micro_sym.models import build_model                       # doctest: +SKIP
>>> small, info = prune_model(build_model({"widths": [2, 4]}), 0.5)  # doctest: +SKIP
>>> small.config["layer_fields"]                                   # doctest: +SKIP
[2, 2, 2, 2, 2]
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch

from micro_sym.errors import MicroSymError
from micro_sym.models.fields import (apply_keeps, eval_mode, field_slices, group_order, layer_fields, prunable_layers,
                                     set_fields, shell_copy)
from micro_sym.training.finetune import recalibrate_bn

CRITERIA = ("norm", "bn")
SCOPES = ("global", "layer")


# --------------------------------------------------------------------------- model structure


# --------------------------------------------------------------------------- importance


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
    layers, _ = prunable_layers(model)
    was = model.training
    model.eval()
    filt = {}

    def filter_of(conv):
        if id(conv) not in filt:
            filt[id(conv)] = conv.expand_parameters()[0].detach().float()
        return filt[id(conv)]

    scores = []
    for L in layers:
        sl = field_slices(L.conv.out_type)
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
        ``finetune(model, step) -> model`` called after every round (e.g. :func:`micro_sym.training.finetune.finetune_model`).
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
    current = shell_copy(model)
    for s in range(1, int(steps) + 1):
        target = 1.0 - (1.0 - ratio) ** (s / steps)
        now = layer_fields(current)
        have = sum(f for i, f in enumerate(now) if i not in protect)
        want_removed = int(math.floor(target * n_prunable + 0.5)) - (n_prunable - have)
        step_ratio = max(0.0, want_removed / max(have, 1))
        keeps = select_fields(field_importance(current, criterion), min(step_ratio, 0.999), scope, protect)
        apply_keeps(current, keeps)
        set_fields(current, layer_fields(current))
        eval_mode(current)
        if log:
            log(f"prune round {s}/{steps}: fields {sum(now)} -> {sum(layer_fields(current))}")
        if calibrate is not None:
            recalibrate_bn(current, calibrate, batches=calibrate_batches)
        if finetune is not None:
            current = eval_mode(finetune(current, s))
    after = layer_fields(current)
    kept = sum(f for i, f in enumerate(after) if i not in protect)
    info = {"fields_before": before, "fields_after": after, "group_order": group_order(model),
            "removed_fraction": 1.0 - kept / max(n_prunable, 1), "criterion": criterion, "scope": scope,
            "ratio": ratio, "steps": int(steps)}
    current.meta = dict(getattr(model, "meta", {}))
    current.meta["pruning"] = info
    return eval_mode(current), info


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



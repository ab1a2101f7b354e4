"""The field structure of escnn models: which convolutions' output fields can be removed, and
rebuilding a model with fewer fields (docs/design.md §4).

A field is all |G| channels of a regular field (or all dimensions of an irrep field). A model whose
config has ``layer_fields`` (the output field count of every convolution in module order: encoder
blocks, then decoder blocks) is rebuilt here with that structure (:func:`shrink_structure`), which
is how a pruned model (:mod:`micro_sym.deploy.prune`) saves and loads like any other.

Supported models: the 2D ``unet_equi`` :class:`~micro_sym.models.SegModel` (any group) and the 3D
``gcnn3d`` variant ``octa`` (24 cube rotations, regular fields).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch

from micro_sym.errors import MicroSymError


@dataclass
class _Layer:
    """One prunable convolution: where it sits and what its output fields feed."""

    index: int
    where: tuple  # ("enc" | "decs", block index, child index)
    conv: object
    bn: object | None
    consumers: list = field(default_factory=list)  # (conv, channel offset of this layer's output in its input)


def unet_parts(model):
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


def prunable_layers(model) -> tuple[list[_Layer], object]:
    """Prunable convolutions (all but the head) in module order, with their consumers; and the head."""
    holder, names, _ = unet_parts(model)
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
    return [len(L.conv.out_type) for L in prunable_layers(model)[0]]


def group_order(model) -> int:
    """|G| of the model's group (channels per regular field)."""
    holder, _, in_type = unet_parts(model)
    return int(in_type.fibergroup.order())


def field_slices(ftype):
    off = np.cumsum([0] + [r.size for r in ftype.representations])
    return [slice(int(a), int(b)) for a, b in zip(off[:-1], off[1:])]


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
    sl = field_slices(ftype)
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


def apply_keeps(model, keeps, check: bool = True):
    """Replace the U-Net pieces of ``model`` (in place) by smaller ones keeping fields ``keeps``."""
    from torch import nn

    holder, names, in_type = unet_parts(model)
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
    apply_keeps(model, [list(range(f)) for f in fields], check=False)
    model.train(was)
    return model


def shrink_core(core, fields):
    """:func:`shrink_structure` for a bare 2D ``UNetCore`` (the hook in the 2D model registry)."""
    from types import SimpleNamespace

    shim = SimpleNamespace(core=core, config={"arch": "unet_equi"}, ndim=2, exported=False,
                           training=core.training, train=core.train)
    shrink_structure(shim, fields)
    return shim.core


def eval_mode(model):
    """Switch to eval mode without autograd history: escnn caches expanded filters on ``eval()``, and
    filters computed with grad enabled are non-leaf tensors that ``copy.deepcopy`` refuses."""
    with torch.no_grad():
        model.train()
        model.eval()
    return model


def safe_copy(model):
    """``copy.deepcopy`` of an escnn model in eval mode (the original's mode is restored)."""
    was = model.training
    eval_mode(model)
    out = copy.deepcopy(model)
    with torch.no_grad():
        model.train(was)
    return out


def shell_copy(model):
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


def set_fields(model, fields):
    cfg = dict(model.config)
    cfg["layer_fields"] = [int(f) for f in fields]
    model.config = cfg

"""Export micro_sym models to files that run without escnn: plain PyTorch, TorchScript, ONNX.

Formats (chosen by :func:`export_model`'s ``fmt`` or the file suffix):

``torch`` (``.pt``)
    ``{"format": "micro_sym.deployed", "spec", "state_dict", "meta"}``: a JSON-like description of the
    plain layers (``Conv2d``/``Conv3d``, ``BatchNorm``, ``ReLU``, pooling, ``Upsample``) and their
    weights; loads with ``torch.load(path, weights_only=True)`` and is rebuilt by
    :class:`DeployedUNet` (plain torch, no pickled code).
``safetensors`` (``.safetensors``)
    The same weights as a safetensors file; spec and metadata as JSON in its string metadata.
``torchscript`` (``.ts``)
    ``torch.jit.script`` of :class:`DeployedUNet`; metadata in the extra file ``micro_sym.json``.
``onnx`` (``.onnx``)
    Opset-17 graph with dynamic batch and spatial axes; metadata in ``metadata_props``
    (key ``micro_sym``, JSON). Runs with onnxruntime.

Every file carries the SegModel metadata ``ndim``, ``k``, ``halo``, ``total_stride`` (plus
``normalization``, ``config``, provenance), and :func:`load_deployed` returns a module with the
SegModel interface, so ``predict_image``, ``segment_image``, the tiled engine and
``micro-sym segment --model FILE`` run any of them.

This module never imports escnn: exporting takes an already built model (whose ``export()`` uses
escnn), loading needs only torch (and onnxruntime for ``.onnx``).
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import List

import torch
from torch import nn

from micro_sym.errors import MicroSymError

FORMATS = ("torch", "safetensors", "torchscript", "onnx")
SUFFIX = {"torch": ".pt", "safetensors": ".safetensors", "torchscript": ".ts", "onnx": ".onnx"}
DEPLOYED_TAG = "micro_sym.deployed"
META_KEY = "micro_sym"
ONNX_OPSET = 17


# --------------------------------------------------------------------------- the deployed network


class DeployedUNet(nn.Module):
    """The plain-torch U-Net every deployed file holds (2D and 3D), written to be TorchScript-able.

    ``forward``: ``[pre_i, enc_i]`` for every level (``pre_0`` is the identity, ``pre_i`` the pooling
    into level i), then ``[up, cat(skip, up), dec]`` per decoder level, then the head. This is the
    topology of both ``micro_sym.models.unet.UNetCore`` and the 3D ``PlainUNet3D``.
    """

    def __init__(self, enc, pre, ups, decs, head):
        super().__init__()
        self.enc, self.pre = nn.ModuleList(enc), nn.ModuleList(pre)
        self.ups, self.decs, self.head = nn.ModuleList(ups), nn.ModuleList(decs), head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips: List[torch.Tensor] = []
        for pre, block in zip(self.pre, self.enc):
            x = block(pre(x))
            skips.append(x)
        skips.pop()  # the bottleneck is not a skip
        for up, dec in zip(self.ups, self.decs):
            x = dec(torch.cat([skips.pop(), up(x)], 1))
        return self.head(x)


def _plain_pieces(model):
    """(enc, pre, ups, decs, head) plain-torch modules of an exported 2D or 3D model."""
    core = model.core
    if hasattr(core, "cats"):  # 2D UNetCore (wrap/unwrap are identities once exported)
        enc, pools, ups, decs, head = core.enc, core.pools, core.ups, core.decs, core.head
    else:  # 3D PlainUNet3D
        enc, pools, ups, decs, head = core.enc, core.pools, core.ups, core.dec, core.head
    return list(enc), [nn.Identity()] + list(pools), list(ups), list(decs), head


def _leaf_spec(m) -> dict:
    """JSON-able constructor arguments of a plain layer."""
    t = type(m).__name__
    tup = lambda v: list(v) if isinstance(v, (tuple, list)) else v  # noqa: E731
    if t in ("Conv2d", "Conv3d"):
        return {"type": t, "in_channels": m.in_channels, "out_channels": m.out_channels, "kernel_size": tup(m.kernel_size),
                "stride": tup(m.stride), "padding": tup(m.padding), "dilation": tup(m.dilation), "groups": m.groups,
                "bias": m.bias is not None, "padding_mode": m.padding_mode}
    if t in ("BatchNorm2d", "BatchNorm3d"):
        return {"type": t, "num_features": m.num_features, "eps": m.eps, "momentum": m.momentum, "affine": m.affine,
                "track_running_stats": m.track_running_stats}
    if t == "ReLU":
        return {"type": t}
    if t in ("MaxPool2d", "MaxPool3d"):
        return {"type": t, "kernel_size": tup(m.kernel_size), "stride": tup(m.stride), "padding": tup(m.padding),
                "dilation": tup(m.dilation), "ceil_mode": m.ceil_mode}
    if t in ("AvgPool2d", "AvgPool3d"):
        return {"type": t, "kernel_size": tup(m.kernel_size), "stride": tup(m.stride), "padding": tup(m.padding),
                "ceil_mode": m.ceil_mode}
    if t == "Upsample":
        sf = m.scale_factor
        return {"type": t, "scale_factor": float(sf) if not isinstance(sf, (tuple, list)) else [float(s) for s in sf],
                "mode": m.mode, "align_corners": m.align_corners}
    if t == "Identity":
        return {"type": t}
    if t == "Sequential":
        return {"type": t, "children": [_leaf_spec(c) for c in m]}
    raise MicroSymError(f"export: layer {t} has no deployed form (supported: conv, batch norm, ReLU, pooling, upsampling)")


def _build_leaf(spec: dict) -> nn.Module:
    s = dict(spec)
    t = s.pop("type")
    tup = lambda v: tuple(v) if isinstance(v, list) else v  # noqa: E731
    if t == "Sequential":
        return nn.Sequential(*[_build_leaf(c) for c in s["children"]])
    if t == "ReLU":
        return nn.ReLU(inplace=True)  # saves a full-resolution memory pass per layer
    if t == "Identity":
        return nn.Identity()
    if t == "Upsample":
        sf = s["scale_factor"]
        return nn.Upsample(scale_factor=tuple(sf) if isinstance(sf, list) else sf, mode=s["mode"], align_corners=s["align_corners"])
    cls = getattr(nn, t, None)
    if cls is None or t not in ("Conv2d", "Conv3d", "BatchNorm2d", "BatchNorm3d", "MaxPool2d", "MaxPool3d", "AvgPool2d", "AvgPool3d"):
        raise MicroSymError(f"deployed file: unknown layer type '{t}'")
    return cls(**{k: tup(v) for k, v in s.items()})


def network_spec(model) -> dict:
    """Layer description of an exported model's :class:`DeployedUNet` (JSON-able)."""
    enc, pre, ups, decs, head = _plain_pieces(model)
    return {"enc": [_leaf_spec(m) for m in enc], "pre": [_leaf_spec(m) for m in pre], "ups": [_leaf_spec(m) for m in ups],
            "decs": [_leaf_spec(m) for m in decs], "head": _leaf_spec(head)}


def build_from_spec(spec: dict) -> DeployedUNet:
    """Inverse of :func:`network_spec` (random weights; load a state dict after)."""
    b = lambda key: [_build_leaf(s) for s in spec[key]]  # noqa: E731
    return DeployedUNet(b("enc"), b("pre"), b("ups"), b("decs"), _build_leaf(spec["head"]))


def deployed_network(model, fold_bn: bool = True) -> tuple[DeployedUNet, dict]:
    """Plain :class:`DeployedUNet` with the weights of ``model`` (escnn models are exported first) and its metadata.

    Parameters
    ----------
    model : SegModel-like
    fold_bn : bool
        Fold every eval-mode batch norm into the convolution before it (``W' = W·γ/σ``,
        ``b' = (b − μ)·γ/σ + β``): the same function with one full-resolution memory pass less per
        layer. InnerBatchNorm shares γ, β, μ, σ over the |G| channels of a field, so the folded
        filters stay exactly as equivariant as before.

    An already deployed file (:class:`DeployedModel`, e.g. the bundled ``default-3d``) converts too:
    plain torch and safetensors files hold the :class:`DeployedUNet` itself, TorchScript files its
    weights under the same names (rebuilt from the stored layer spec). ONNX files cannot be turned
    back into torch layers and raise :class:`MicroSymError`.
    """
    if isinstance(model, DeployedModel):
        return _redeployed_network(model, fold_bn)
    src = model
    if not getattr(model, "exported", False):
        if not hasattr(model, "export"):
            raise MicroSymError("export: model has no export()")
        with torch.no_grad():
            src = model.export()
    src.eval()
    enc, pre, ups, decs, head = _plain_pieces(src)
    ref = DeployedUNet(enc, pre, ups, decs, head).eval()
    if fold_bn:
        ref = _fold_batch_norms(ref)
    spec = network_spec_of(ref)
    net = build_from_spec(spec)
    net.load_state_dict(ref.state_dict(), strict=True)
    return net.eval(), {"spec": spec, "batch_norm_folded": bool(fold_bn), **model_metadata(model)}


def _redeployed_network(model: DeployedModel, fold_bn: bool) -> tuple[DeployedUNet, dict]:
    """:func:`deployed_network` of a deployed file: its plain network again, with its metadata."""
    where = model.meta.get("path", "model")
    if model.fmt in ("torch", "safetensors"):
        ref = model.net
    elif model.fmt == "torchscript" and getattr(model, "spec", None):
        ref = build_from_spec(model.spec)
        try:
            ref.load_state_dict(model._runtime().state_dict(), strict=True)
        except RuntimeError as err:
            raise MicroSymError(f"{where}: TorchScript weights do not fit its layer spec ({str(err).splitlines()[0]})") from None
    else:
        raise MicroSymError(f"{where}: already exported ({model.fmt}); {model.fmt} holds no torch layers to convert: "
                            f"export the source model, or its .pt, .safetensors or .ts export, to the format you need")
    ref = copy_module(ref).cpu().eval()
    folded = bool(model.meta.get("batch_norm_folded", False))
    if fold_bn and not folded:
        ref = _fold_batch_norms(ref)
    spec = network_spec_of(ref)
    net = build_from_spec(spec)
    net.load_state_dict(ref.state_dict(), strict=True)
    # The interface values and the provenance of the original source carry over; this file's own
    # path, hash and format do not (the new file gets its own).
    meta = {k: v for k, v in model.meta.items() if k not in ("path", "sha256", "format", "spec", "batch_norm_folded")}
    meta["converted_from"] = {k: model.meta[k] for k in ("path", "sha256", "format") if k in model.meta}
    return net.eval(), {"spec": spec, "batch_norm_folded": folded or bool(fold_bn), **json.loads(json.dumps(meta, default=str))}


def copy_module(m: nn.Module) -> nn.Module:
    """A deep copy (the deployed model keeps its own network untouched by folding and ``.cpu()``)."""
    import copy

    return copy.deepcopy(m)


@torch.no_grad()
def _fold_batch_norms(net: DeployedUNet) -> DeployedUNet:
    """Copy of ``net`` with every (Conv, BatchNorm) pair inside a Sequential merged into one Conv."""
    import copy

    out = copy.deepcopy(net)

    def fold(seq):
        mods, kids = [], list(seq)
        i = 0
        while i < len(kids):
            m = kids[i]
            nxt = kids[i + 1] if i + 1 < len(kids) else None
            if isinstance(m, (nn.Conv2d, nn.Conv3d)) and isinstance(nxt, (nn.BatchNorm2d, nn.BatchNorm3d)) and nxt.track_running_stats:
                conv = type(m)(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation, m.groups,
                               bias=True, padding_mode=m.padding_mode)
                # float64 arithmetic: the folded filters differ from conv-then-BN by float32 rounding only
                scale = (nxt.weight.double() if nxt.affine else torch.ones_like(nxt.running_var, dtype=torch.float64)) / torch.sqrt(nxt.running_var.double() + nxt.eps)
                shift = nxt.bias.double() if nxt.affine else torch.zeros_like(scale)
                b = m.bias.double() if m.bias is not None else torch.zeros_like(scale)
                conv.weight.copy_((m.weight.double() * scale.view(-1, *([1] * (m.weight.dim() - 1)))).float())
                conv.bias.copy_(((b - nxt.running_mean.double()) * scale + shift).float())
                mods.append(conv)
                i += 2
                continue
            mods.append(fold(m) if isinstance(m, nn.Sequential) else m)
            i += 1
        return nn.Sequential(*mods)

    out.enc = nn.ModuleList([fold(b) if isinstance(b, nn.Sequential) else b for b in out.enc])
    out.decs = nn.ModuleList([fold(b) if isinstance(b, nn.Sequential) else b for b in out.decs])
    return out.eval()


def network_spec_of(net: DeployedUNet) -> dict:
    """Layer description of a :class:`DeployedUNet` (JSON-able)."""
    return {"enc": [_leaf_spec(m) for m in net.enc], "pre": [_leaf_spec(m) for m in net.pre], "ups": [_leaf_spec(m) for m in net.ups],
            "decs": [_leaf_spec(m) for m in net.decs], "head": _leaf_spec(net.head)}


def model_metadata(model) -> dict:
    """The SegModel interface values and provenance stored in every deployed file."""
    cfg = dict(getattr(model, "config", {}) or {})
    meta = dict(getattr(model, "meta", {}) or {})
    ndim = int(getattr(model, "ndim", 2))
    out = {
        "ndim": ndim, "k": int(getattr(model, "k", 4)), "halo": int(model.halo), "total_stride": int(model.total_stride),
        "normalization": str(getattr(model, "normalization", "pm1")),
        "out_channels": int(getattr(model, "out_channels", 3)), "config": cfg,
        "source": {key: meta[key] for key in ("path", "sha256", "metrics", "pruning", "finetune", "trained_on") if key in meta},
        "torch": torch.__version__,
    }
    if meta.get("lattice_period_px"):  # the period its images had: inputs of other periods are resampled to it
        out["lattice_period_px"] = float(meta["lattice_period_px"])
    if ndim == 3:
        out["degrees"] = [int(d) for d in getattr(model, "degrees", cfg.get("degrees", [4]))]
        out["lattice"] = str(getattr(model, "lattice", "cubic"))
    return json.loads(json.dumps(out, default=str))  # plain types only (weights_only loading, JSON metadata)


# --------------------------------------------------------------------------- writing


def export_model(model, path, fmt: str | None = None, *, example_size: int | None = None, check: bool = True,
                 fold_bn: bool = True) -> Path:
    """Write a deployable file of ``model`` (an escnn or exported SegModel, 2D or 3D).

    Parameters
    ----------
    model : SegModel or 3D model
    path : str or Path
    fmt : {"torch", "safetensors", "torchscript", "onnx"}, optional
        Default: from the suffix (``.pt``, ``.safetensors``, ``.ts``, ``.onnx``).
    example_size : int, optional
        Spatial side of the tracing/check input (default ``2 * total_stride``, at least 16).
    fold_bn : bool
        Fold batch norms into the preceding convolutions (see :func:`deployed_network`).
    check : bool
        Load the written file back and compare its outputs with the model's (max abs error must be
        below 1e-4 relative to the output scale), raising ``MicroSymError`` otherwise.

    Returns
    -------
    Path

    Examples
    --------
    >>> export_model(load_model("default-2d"), "default.onnx")      # doctest: +SKIP
    """
    path = Path(path)
    fmt = fmt or _fmt_from_suffix(path)
    if fmt not in FORMATS:
        raise MicroSymError(f"export: unknown format '{fmt}' (expected one of {', '.join(FORMATS)})")
    net, meta = deployed_network(model, fold_bn=fold_bn)
    meta["format"] = fmt
    path.parent.mkdir(parents=True, exist_ok=True)
    ndim = meta["ndim"]
    side = example_size or max(16, 2 * meta["total_stride"])
    x = torch.randn((1, 1) + (side,) * ndim, generator=torch.Generator().manual_seed(0))
    tmp = path.with_name(path.name + ".tmp")
    if fmt == "torch":
        state = {key: v.detach().cpu().clone() for key, v in net.state_dict().items()}
        torch.save({"format": DEPLOYED_TAG, "spec": meta.pop("spec"), "state_dict": state, "meta": meta}, tmp)
    elif fmt == "safetensors":
        from safetensors.torch import save_file

        state = {key: v.detach().cpu().contiguous().clone() for key, v in net.state_dict().items()}
        save_file(state, str(tmp), metadata={"format": DEPLOYED_TAG, META_KEY: json.dumps(meta)})
    elif fmt == "torchscript":
        scripted = torch.jit.script(net)
        torch.jit.save(scripted, str(tmp), _extra_files={f"{META_KEY}.json": json.dumps(meta)})
    else:
        _write_onnx(net, x, tmp, meta)
    tmp.replace(path)  # a crash mid-write never leaves a half file under the real name
    if check:
        with torch.no_grad():
            model.eval()
            ref = model(x)  # the source model itself, so folding and conversion are both checked
            got = load_deployed(path)(x)
        err = (got - ref).abs().max().item() / max(1.0, ref.abs().max().item())
        if not err < 1e-4:
            raise MicroSymError(f"{path}: exported {fmt} outputs differ from the model's (rel. error {err:.2e})")
    return path


def _fmt_from_suffix(path: Path) -> str:
    for fmt, suf in SUFFIX.items():
        if path.name.endswith(suf):
            return fmt
    raise MicroSymError(f"{path}: cannot tell the export format from the suffix (use .pt, .safetensors, .ts or .onnx)")


def ort_session(payload: bytes, threads: int | None = None):
    """An onnxruntime CPU session for ONNX bytes, with torch's thread count unless ``threads`` is given."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, int(threads or torch.get_num_threads()))
    opts.inter_op_num_threads = 1
    # Idle pool threads sleep instead of spinning: the engine's other workers label and write blocks
    # on the same cores while a forward runs, and spinning threads take their time.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # A memory pattern is planned and kept per input shape: the engine's tiles come in several shapes
    # (image edges and corners), so peak memory grew with every shape seen, at no gain in speed
    # (bench/bench_engine_2d.py).
    opts.enable_mem_pattern = False
    return ort.InferenceSession(payload, opts, providers=["CPUExecutionProvider"])


def onnx_bytes(net: nn.Module, x: torch.Tensor) -> bytes:
    """ONNX graph (opset :data:`ONNX_OPSET`) of a plain-torch network, batch and spatial axes dynamic.

    ``x`` is an example input ``(1, 1, *spatial)``; its dimensionality names the axes.
    """
    import warnings

    ndim = x.ndim - 2
    axes = {0: "batch", **{2 + i: ax for i, ax in enumerate(("z", "y", "x")[-ndim:])}}
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter warns that dynamo is the future
        # dynamo=False: the TorchScript-based exporter needs no onnxscript and handles dynamic H/W axes
        torch.onnx.export(net, (x,), buf, input_names=["image"], output_names=["maps"], opset_version=ONNX_OPSET,
                          dynamic_axes={"image": axes, "maps": axes}, dynamo=False)
    return buf.getvalue()


def _write_onnx(net, x, path, meta):
    import onnx

    proto = onnx.load_from_string(onnx_bytes(net, x))
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps(meta)
    proto.producer_name = "micro_sym"
    onnx.save(proto, str(path))


# --------------------------------------------------------------------------- loading


class DeployedModel(nn.Module):
    """A deployed file with the SegModel interface (``exported = True``).

    Attributes ``ndim``, ``k``, ``halo``, ``total_stride``, ``normalization``, ``config``, ``meta``
    (file metadata, with ``path``, ``sha256`` and ``format``); ``forward(x)`` takes and returns
    float32 torch tensors ``(B, 1, *spatial) -> (B, C, *spatial)``. ONNX runs on onnxruntime (CPU);
    TorchScript and plain torch run on torch. Picklable (the engine ships networks to workers):
    runtimes are rebuilt from the file bytes after unpickling.
    """

    exported = True

    def __init__(self, meta: dict, fmt: str, payload: bytes | None = None, module: nn.Module | None = None):
        super().__init__()
        self.fmt = fmt
        self.ndim = int(meta["ndim"])
        self.k = int(meta["k"])
        self.halo = int(meta["halo"])
        self.total_stride = int(meta["total_stride"])
        self.normalization = str(meta.get("normalization", "pm1"))
        self.out_channels = int(meta.get("out_channels", 3))
        self.config = dict(meta.get("config", {}))
        if self.ndim == 3:
            self.degrees = tuple(meta.get("degrees", (4,)))
            self.lattice = meta.get("lattice", "cubic")
        self.meta = dict(meta)
        self._payload = payload
        if module is not None:
            self.net = module  # plain torch: a real submodule (state_dict, .to(device) work)
        self.__dict__["_rt"] = None  # runtime objects stay out of nn.Module's registries and pickles

    def _runtime(self):
        if self.__dict__.get("_rt") is None:
            if self.fmt == "onnx":
                self.__dict__["_rt"] = ort_session(self._payload)
            elif self.fmt == "torchscript":
                self.__dict__["_rt"] = torch.jit.load(io.BytesIO(self._payload), map_location="cpu").eval()
        return self.__dict__["_rt"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, *spatial)`` normalized float32 -> ``(B, C, *spatial)`` raw maps."""
        if self.fmt in ("torch", "safetensors"):
            return self.net(x)
        if self.fmt == "torchscript":
            dev = x.device
            return self._runtime()(x.float().cpu()).to(dev)
        sess = self._runtime()
        arr = x.detach().float().cpu().contiguous().numpy()
        (y,) = sess.run(None, {"image": arr})
        return torch.from_numpy(y).to(x.device)

    def export(self):
        return self

    def normalize(self, x, lo: float, hi: float):
        """Network input from raw intensities, as the source model normalized them."""
        from micro_sym.models.normalize import normalize_by_tag

        return normalize_by_tag(self.normalization, x, lo, hi)

    def __getstate__(self):
        state = super().__getstate__() if hasattr(super(), "__getstate__") else dict(self.__dict__)
        state = dict(state)
        state["_rt"] = None
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self.__dict__["_rt"] = None

    def extra_repr(self) -> str:
        return f"format={self.fmt}, ndim={self.ndim}, k={self.k}, halo={self.halo}, total_stride={self.total_stride}"


def is_deployed_file(path) -> bool:
    """True for ``.onnx``/``.ts``/``.safetensors`` files and ``.pt`` files written by :func:`export_model`."""
    p = Path(path)
    if p.suffix in (".onnx", ".ts", ".safetensors"):
        return True
    if p.suffix == ".pt" and p.is_file():
        try:
            blob = torch.load(p, map_location="cpu", weights_only=True)
        except Exception:
            return False
        return isinstance(blob, dict) and blob.get("format") == DEPLOYED_TAG
    return False


def load_deployed(path, device: str = "cpu") -> DeployedModel:
    """Load a file written by :func:`export_model` (no escnn needed).

    Parameters
    ----------
    path : str or Path
        ``.pt`` (deployed plain torch), ``.safetensors``, ``.ts`` or ``.onnx``.
    device : str
        Plain-torch formats move to it; TorchScript and ONNX run on the CPU.

    Returns
    -------
    DeployedModel
        Eval mode, with ``ndim``, ``k``, ``halo``, ``total_stride``, ``config`` and ``meta``.

    Raises
    ------
    MicroSymError
        Missing file, unknown suffix, or a file without micro_sym metadata.
    """
    path = Path(path)
    if not path.is_file():
        raise MicroSymError(f"{path}: model file does not exist")
    raw = path.read_bytes()
    sha = hashlib.sha256(raw).hexdigest()
    fmt = _fmt_from_suffix(path)
    try:
        if fmt == "torch":
            blob = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
            if not isinstance(blob, dict) or blob.get("format") != DEPLOYED_TAG:
                raise MicroSymError(f"{path}: not a deployed micro_sym file (write one with micro-sym export)")
            meta, net = dict(blob["meta"]), build_from_spec(blob["spec"])
            net.load_state_dict(blob["state_dict"], strict=True)
            model = DeployedModel(meta, fmt, module=net.eval())
        elif fmt == "safetensors":
            from safetensors import safe_open
            from safetensors.torch import load as st_load

            with safe_open(str(path), framework="pt") as f:
                header = f.metadata() or {}
            if header.get("format") != DEPLOYED_TAG:
                raise MicroSymError(f"{path}: not a deployed micro_sym file (no micro_sym metadata)")
            meta = json.loads(header[META_KEY])
            net = build_from_spec(meta["spec"])
            net.load_state_dict(st_load(raw), strict=True)
            model = DeployedModel(meta, fmt, module=net.eval())
        elif fmt == "torchscript":
            extra = {f"{META_KEY}.json": ""}
            torch.jit.load(io.BytesIO(raw), map_location="cpu", _extra_files=extra)
            if not extra[f"{META_KEY}.json"]:
                raise MicroSymError(f"{path}: TorchScript file without micro_sym metadata")
            meta = json.loads(extra[f"{META_KEY}.json"])
            model = DeployedModel(meta, fmt, payload=raw)
        else:
            import onnx

            proto = onnx.load_from_string(raw)
            props = {p.key: p.value for p in proto.metadata_props}
            if META_KEY not in props:
                raise MicroSymError(f"{path}: ONNX file without micro_sym metadata")
            meta = json.loads(props[META_KEY])
            model = DeployedModel(meta, fmt, payload=raw)
    except MicroSymError:
        raise
    except Exception as err:  # truncated or foreign files
        raise MicroSymError(f"{path}: unreadable {fmt} model file ({type(err).__name__}: {str(err).splitlines()[0][:120]})") from None
    model.meta.update({"path": str(path), "sha256": sha, "format": fmt})
    # The layer spec leaves the metadata (reports print it) but stays with the model: a TorchScript
    # file is converted to other formats by rebuilding its layers from it.
    model.spec = model.meta.pop("spec", None)
    return model.to(device).eval()

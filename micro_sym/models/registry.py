"""SegModel, the architecture registry, and model files (see the package docstring for the contract)."""

from __future__ import annotations

import copy
import datetime
import hashlib
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from micro_sym.errors import MicroSymError
from micro_sym.models.limits import MAX_CHANNELS, MAX_CONVS, MAX_KERNEL, MAX_LEVELS, MAX_PARAMETERS
from micro_sym.orientation.symmetry import lattice

FORMAT_VERSION = 1
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
#: Bundled model names -> files in ``micro_sym/weights/``.
BUNDLED = {"default-2d": "default_2d.pt", "default-2d-fast": "default_2d_fast.pt", "robust-2d": "robust_2d.pt",
           "atoms-2d": "atoms_2d.pt", "atoms-2d-hex": "atoms_2d_hex.pt", "fringes-2d": "fringes_2d.pt",
           "default-3d": "default_3d.pt", "atoms-3d": "atoms_3d.pt"}

_ARCHS = {}


def register_model(name: str):
    """Decorator adding an architecture builder ``fn(config) -> (core module, ndim, k, total_stride)``."""

    def deco(fn):
        _ARCHS[name] = fn
        return fn

    return deco


def list_models() -> list[str]:
    """Names accepted as ``config["arch"]``."""
    return sorted(_ARCHS)


DEFAULTS = {
    "unet_equi": dict(group="D4", widths=[2, 4, 8, 16], convs_per_level=2, kernel_size=3, stem_kernel=5, upsample="bilinear", head_kernel=1, dec_convs=None),
    "unet_plain": dict(widths=[16, 32, 64, 128], convs_per_level=2, kernel_size=3, stem_kernel=5, upsample="bilinear", head_kernel=1, dec_convs=None),
}


def check_config_sizes(cfg: dict) -> None:
    """Raise :class:`MicroSymError` naming the key of a completed 2D config with sizes no model has.

    Channels are ``widths`` times the group order for ``unet_equi`` (regular fields). The parameter
    estimate counts every 3x3 (``kernel_size``) convolution of encoder and decoder at full width;
    it is an upper bound of the order of the real count, enough to refuse terabytes.
    """
    widths = cfg["widths"]
    group = str(cfg.get("group", "C1")) if cfg["arch"] == "unet_equi" else "C1"
    mult = int(group[1:]) * (2 if group[0] == "D" else 1) if group[1:].isdigit() else 1
    hint = "; the file is damaged or not a micro_sym model"
    if len(widths) > MAX_LEVELS:
        raise MicroSymError(f"model config: 'widths' has {len(widths)} levels (at most {MAX_LEVELS}){hint}")
    for i, w in enumerate(widths):
        if w * mult > MAX_CHANNELS:
            raise MicroSymError(f"model config: 'widths' asks for {w * mult:,} channels at level {i} "
                                f"(at most {MAX_CHANNELS:,}){hint}")
    for key, top in (("kernel_size", MAX_KERNEL), ("stem_kernel", MAX_KERNEL), ("head_kernel", MAX_KERNEL),
                     ("convs_per_level", MAX_CONVS)):
        v = cfg.get(key)
        if isinstance(v, int) and not 1 <= v <= top:
            raise MicroSymError(f"model config: '{key}' is {v} (expected 1 to {top}){hint}")
    k2 = int(cfg.get("kernel_size", 3)) ** 2
    convs = int(cfg.get("convs_per_level", 2))
    est = sum(3 * convs * k2 * (w * mult) ** 2 for w in widths)
    if est > MAX_PARAMETERS:
        raise MicroSymError(f"model config: 'widths' {widths} ask for about {est:.2g} weights "
                            f"(at most {MAX_PARAMETERS:.0e}){hint}")


def _arch_kwargs(config):
    out = dict(DEFAULTS[config["arch"]])
    out.update({key: v for key, v in config.items() if key in out})
    return out


@register_model("unet_equi")
def _unet_equi(config):
    from micro_sym.models.unet import build_equivariant_unet

    kw = _arch_kwargs(config)
    core = build_equivariant_unet(k=config["k"], **{**kw, "widths": tuple(kw["widths"])})
    if config.get("layer_fields"):  # field-pruned model: rebuild its smaller field types (micro_sym.models.fields)
        from micro_sym.models.fields import shrink_core; core = shrink_core(core, config["layer_fields"])  # noqa: E702
    return core, 2 ** (len(kw["widths"]) - 1)


@register_model("unet_plain")
def _unet_plain(config):
    from micro_sym.models.unet import build_plain_unet

    kw = _arch_kwargs(config)
    core = build_plain_unet(k=config["k"], **{**kw, "widths": tuple(kw["widths"])})
    return core, 2 ** (len(kw["widths"]) - 1)


def complete_config(config: dict) -> dict:
    """Fill defaults into a model config and check it (``arch``, ``lattice``/``k`` and sizes).

    Raises
    ------
    MicroSymError
        Unknown architecture, group or lattice, or bad sizes.
    """
    if not isinstance(config, dict):
        raise MicroSymError(f"model config must be a mapping, got {type(config).__name__}")
    cfg = dict(config)
    cfg.setdefault("arch", "unet_equi")
    if cfg["arch"] not in _ARCHS:
        raise MicroSymError(f"model config: unknown arch '{cfg['arch']}' (expected one of {', '.join(list_models())})")
    lat = lattice(str(cfg.setdefault("lattice", "square")), ndim=2, where="model config")
    cfg.setdefault("k", lat.k)
    if cfg["k"] != lat.k:
        raise MicroSymError(f"model config: k={cfg['k']} does not fit a {lat.name} lattice")
    for key, value in DEFAULTS[cfg["arch"]].items():
        cfg.setdefault(key, value)
    cfg["widths"] = [int(w) for w in cfg["widths"]]
    if not cfg["widths"] or min(cfg["widths"]) < 1:
        raise MicroSymError("model config: widths must be a non-empty list of positive integers")
    if cfg["arch"] == "unet_equi":
        from micro_sym.models.unet import GROUPS

        if cfg["group"] not in GROUPS:
            raise MicroSymError(f"model config: unknown group '{cfg['group']}' (expected one of {', '.join(GROUPS)})")
    check_config_sizes(cfg)
    cfg["ndim"] = 2
    return cfg


class SegModel(nn.Module):
    """A 2D grain-segmentation network with the micro_sym interface.

    Attributes
    ----------
    ndim : int
        2.
    k : int
        Lattice symmetry order of the orientation field (4 square, 6 hexagonal).
    total_stride : int
        Input height and width must be multiples of it (:func:`micro_sym.inference.whole_image.predict_image` pads).
    halo : int
        Receptive-field radius in pixels, measured by :func:`measure_halo`, rounded up to a multiple of
        ``total_stride``; tiles overlapping by ``halo`` reproduce whole-image inference.
    config : dict
        The complete model config (rebuilds the architecture).
    exported : bool
        True for the plain-torch copy returned by :meth:`export`.
    """

    def __init__(self, core: nn.Module, config: dict, total_stride: int, halo: int = 0, exported: bool = False):
        super().__init__()
        self.core = core
        self.config = dict(config)
        self.ndim = 2
        self.k = int(config["k"])
        self.total_stride = int(total_stride)
        self.halo = int(halo)
        self.exported = exported
        self.meta: dict = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W)`` normalized float32 -> ``(B, 3, H, W)``: boundary logit, cos kθ, sin kθ."""
        return self.core(x)

    def export(self) -> "SegModel":
        """Plain-torch copy (no escnn) with the same interface and outputs; switches this model to eval."""
        self.eval()
        if self.exported or self.config["arch"] != "unet_equi":
            core = copy.deepcopy(self.core)
        else:
            core = self.core.export()
        out = SegModel(core.eval(), self.config, self.total_stride, self.halo, exported=True)
        out.meta = dict(self.meta)
        return out.eval()

    def extra_repr(self) -> str:
        return f"arch={self.config['arch']}, k={self.k}, total_stride={self.total_stride}, halo={self.halo}, exported={self.exported}"


def build_model(config: dict) -> SegModel:
    """Build an untrained :class:`SegModel` from a config dict (``arch`` names a registered builder).

    The halo is measured right away (the receptive field does not depend on the weights' values).

    Examples
    --------
    >>> m = build_model({"arch": "unet_plain", "widths": [4, 8]})
    >>> m(torch.zeros(1, 1, 32, 32)).shape, m.total_stride
    (torch.Size([1, 3, 32, 32]), 2)
    """
    if isinstance(config, dict) and (config.get("ndim") == 3 or config.get("arch") == "gcnn3d"):  # 3D hook
        from micro_sym.models.gcnn3d import build_model3d; return build_model3d(config)  # noqa: E702
    cfg = complete_config(config)
    core, stride = _ARCHS[cfg["arch"]](cfg)
    model = SegModel(core, cfg, stride)
    model.halo = measure_halo(model)
    return model


def measure_halo(model: SegModel, size: int | None = None, trials: int = 3) -> int:
    """Receptive-field radius by a gradient probe, rounded up to a multiple of ``total_stride``.

    The gradient of the centre output pixels with respect to the input is non-zero exactly inside the
    receptive field; max pooling routes the gradient through one pixel per window, so the union over a
    few random inputs (and over a stride-sized block of output pixels) is taken.
    """
    from micro_sym.models.unet import analytic_receptive_radius

    cfg = model.config
    bound = analytic_receptive_radius(cfg["widths"], cfg["convs_per_level"], cfg["kernel_size"], cfg["stem_kernel"], cfg["head_kernel"], cfg["dec_convs"])
    s = model.total_stride
    size = size or int(math.ceil((2 * bound + 2 * s + 8) / s) * s)
    # Probe a copy: export() switches a model to eval mode, and escnn's state_dict keys depend on the mode.
    probe = copy.deepcopy(model)
    probe = (probe.export() if (cfg["arch"] == "unet_equi" and not probe.exported) else probe).eval()
    gen = torch.Generator().manual_seed(0)
    reach = np.zeros((size, size), dtype=bool)
    c = size // 2
    for _ in range(trials):
        x = torch.randn(1, 1, size, size, generator=gen, requires_grad=True)
        y = probe(x)
        y[:, :, c - s // 2 : c - s // 2 + s, c - s // 2 : c - s // 2 + s].abs().sum().backward()
        reach |= (x.grad[0, 0].abs() > 0).numpy()
    ys, xs = np.nonzero(reach)
    if ys.size == 0:
        return s
    radius = int(max(np.abs(ys - c).max(), np.abs(xs - c).max()))
    return int(math.ceil(max(radius, 1) / s) * s)


# --------------------------------------------------------------------------- files


def save_model(model: SegModel, path, *, trained_on: dict, metrics: dict | None = None, extra: dict | None = None) -> Path:
    """Write ``{"config", "state_dict", "meta"}`` with ``torch.save`` (loads with ``weights_only=True``).

    The escnn model is saved in eval mode (its expanded filters are buffers that exist in eval mode)
    and :func:`load_model` loads it in eval mode. An exported model cannot be saved: save the escnn one.

    Parameters
    ----------
    model : SegModel
    path : str or Path
    trained_on : dict
        Provenance: dataset path/fingerprint, command, seeds, config.
    metrics : dict, optional
        Held-out metrics to ship with the weights.
    extra : dict, optional
        More metadata (plain Python types only).
    """
    if model.exported and model.config["arch"] == "unet_equi":
        raise MicroSymError(f"{path}: save the escnn model, not its export()")
    was_training = model.training
    model.eval()
    state = {key: v.detach().cpu().clone() for key, v in model.state_dict().items()}
    model.train(was_training)
    meta = {
        "format_version": FORMAT_VERSION,
        "halo": int(model.halo),
        "total_stride": int(model.total_stride),
        "trained_on": trained_on,
        "metrics": metrics or {},
        "saved": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        # The training images' lattice period travels with the weights (pruned, fine-tuned copies too).
        "lattice_period_px": (getattr(model, "meta", None) or {}).get("lattice_period_px"),
        **(extra or {}),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"config": dict(model.config), "state_dict": state, "meta": _plain(meta)}, tmp)
    tmp.replace(path)  # atomic: a crash mid-write never leaves a half file under the real name
    return path


def _plain(obj):
    """Keep metadata loadable with weights_only=True: only dict/list/str/number/bool/None."""
    if isinstance(obj, dict):
        return {str(key): _plain(v) for key, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if obj is None or isinstance(obj, bool):
        return obj
    # Rebuild builtins exactly: subclasses (torch's TorchVersion is a str) are refused by weights_only.
    for t in (int, float, str):
        if isinstance(obj, t):
            return t(obj)
    return str(obj)


def resolve_model_path(name_or_path) -> Path:
    """A bundled name (``"default-2d"``) or a file path -> the file path."""
    key = str(name_or_path)
    if key in BUNDLED:
        path = WEIGHTS_DIR / BUNDLED[key]
        if not path.is_file():
            raise MicroSymError(f"{path}: bundled model '{key}' is missing from this installation")
        return path
    path = Path(key)
    if not path.is_file():
        raise MicroSymError(f"{path}: model file does not exist (bundled names: {', '.join(BUNDLED)})")
    return path


def load_model(name_or_path="default-2d", device="cpu", export: bool = False) -> SegModel:
    """Load a model file (or a bundled name) in eval mode.

    Parameters
    ----------
    name_or_path : str or Path
        ``"default-2d"`` or a path written by :func:`save_model`.
    device : str or torch.device
    export : bool
        Return the plain-torch :meth:`SegModel.export` copy (what inference should run).

    Raises
    ------
    MicroSymError
        Missing, unreadable or malformed files.
    """
    path = resolve_model_path(name_or_path)
    if path.suffix in (".onnx", ".ts", ".safetensors"):  # deployed files (micro_sym.deploy.export)
        from micro_sym.deploy.export import load_deployed; return load_deployed(path, device)  # noqa: E702
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors, truncated files, foreign formats
        raise MicroSymError(f"{path}: not a micro_sym model file ({type(err).__name__})") from None
    if isinstance(blob, dict) and blob.get("format") == "micro_sym.deployed":  # exported plain-torch file
        from micro_sym.deploy.export import load_deployed; return load_deployed(path, device)  # noqa: E702
    if not isinstance(blob, dict) or not {"config", "state_dict", "meta"} <= set(blob):
        raise MicroSymError(f"{path}: not a micro_sym model file (expected config, state_dict and meta)")
    if isinstance(blob["config"], dict) and blob["config"].get("arch") == "gcnn3d":  # 3D hook
        from micro_sym.models.gcnn3d import model3d_from_blob; return model3d_from_blob(blob, path, device, export)  # noqa: E702
    try:
        cfg = complete_config(blob["config"])
    except MicroSymError as err:  # name the file: the config came from it
        raise MicroSymError(f"{path}: {err}") from None
    core, stride = _ARCHS[cfg["arch"]](cfg)
    model = SegModel(core, cfg, stride, halo=int(blob["meta"].get("halo", 0)))
    model.eval()
    try:
        model.load_state_dict(blob["state_dict"], strict=True)
    except RuntimeError as err:
        raise MicroSymError(f"{path}: weights do not fit the stored config ({str(err).splitlines()[0]})") from None
    model.meta = dict(blob["meta"])
    model.meta["path"] = str(path)
    model.meta["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    if export:
        model = model.export()
    return model.to(device).eval()

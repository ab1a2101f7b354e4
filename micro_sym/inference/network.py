"""The network as the engine sees it: module + normalization + decoding, shippable as bytes.

Any module with the SegModel interface works (``ndim``, ``k``, ``halo``, ``total_stride``,
``config``, ``forward``): the 2D :class:`micro_sym.models.SegModel`, the 3D ``SegModel3D`` variants,
or a small torch network with those attributes (tests, benchmarks). :func:`as_network` exports it to
plain torch once; :meth:`Network.to_bytes` / :func:`network_from_bytes` move it to workers, which
keep one copy per process (:func:`cached_network`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import pickle
import threading
from dataclasses import dataclass, field

import numpy as np

from micro_sym.inference.forward_slabs import (activation_bytes, chosen_forward_memory, forward_in_slabs,
                                               peak_values_per_width, plan_slabs, thickest_slab)
from micro_sym.orientation.symmetry import lattice

#: One network forward at a time per process. The block engine's worker threads share one network;
#: two tiles in it at once would double the peak memory (the activations of a tile dominate it),
#: while the other workers keep the remaining cores busy reading, decoding, labelling and writing
#: (bench/bench_engine_2d.py).
FORWARD_LOCK = threading.Lock()

#: Intra-op threads of a forward that holds :data:`FORWARD_LOCK` (onnxruntime's, or torch's for the 3D
#: channels-last runner; None: torch's thread count). The
#: thread runner gives it every core of the process: one forward at a time runs on both of a 2-core
#: machine's cores (a single-block image would otherwise run its forward on one), while the other
#: workers' labelling and writing share the cores between forwards.
_exclusive_threads: int | None = None


def set_exclusive_forward_threads(threads: int | None) -> None:
    """Set :data:`_exclusive_threads` (the engine's thread runner; None restores the default)."""
    global _exclusive_threads
    _exclusive_threads = int(threads) if threads else None


@dataclass
class Network:
    """A deployable network and everything needed to run it on tiles.

    Attributes
    ----------
    module : torch.nn.Module
        Plain-torch (exported) module in eval mode: ``(B, 1, *tile) -> (B, C, *tile)``.
    ndim, k, halo, total_stride : int
        As in the SegModel interface.
    symmetry : str
        ``"square"``/``"hexagonal"`` (2D angle maps) or ``"cubic"`` (3D quaternions).
    orientation : str
        How channels 1.. decode: ``"angle"`` (cos kθ, sin kθ), ``"harmonics4"``/``"harmonics46"``
        (cubic harmonics, :func:`micro_sym.orientation.cubic_harmonics.sh_to_quat`) or ``"quaternion"``
        (4 channels, normalized).
    norm : str
        ``"pm1"`` (:func:`micro_sym.models.normalize`, lo -> -1, hi -> 1) or ``"unit"`` (lo -> 0, hi -> 1,
        the 3D models' convention).
    name, sha256 : str
        Where it came from and a hash of its weights and config (for run manifests).
    lattice_period : float or None
        Lattice period (px) of the images the 2D model was trained on (its file's ``lattice_period_px``);
        images of another period are resampled to it (:mod:`.rescale`). None: unknown, never resampled.
    precision : str
        ``"fp32"`` (exact) or ``"bf16"`` (bfloat16 autocast: several times faster for 3D networks on
        CPUs with bf16 units, outputs within about a percent; :func:`micro_sym.deploy.runtime.cpu_forward`).
        ``"int8"``: 8-bit integers (3D U-Nets; :mod:`micro_sym.deploy.int8`), a network 2-3 times faster
        than fp32 on CPUs without bf16 units, exactly equivariant, with ``int8_ranges`` (the engine
        calibrates them on each input). Default ``$MICRO_SYM_PRECISION``, else fp32.
    int8_ranges : dict or None
        Activation ranges of an int8 forward (:func:`micro_sym.deploy.int8.activation_ranges`).
    forward_memory : int
        Budget (bytes) for one forward's activations: a 3D tile whose estimate exceeds it runs in slabs
        along z, with the same outputs (:mod:`.forward_slabs`). Default ``$MICRO_SYM_FORWARD_MB``, else 640 MiB.
    """

    module: object
    ndim: int
    k: int
    halo: int
    total_stride: int
    symmetry: str
    orientation: str
    norm: str
    name: str = ""
    sha256: str = ""
    width: int = 0
    out_channels: int = 0
    meta: dict = field(default_factory=dict)
    lattice_period: float | None = None
    precision: str = "fp32"
    int8_ranges: dict | None = None
    forward_memory: int = field(default_factory=chosen_forward_memory)

    def grain_rule(self, threshold: float, ndim: int) -> dict:
        """Grain-rule parameters for this network's maps (:func:`micro_sym.grains.rules.network_rule`)."""
        from micro_sym.grains.rules import network_rule

        return network_rule(threshold, ndim)

    def normalize(self, x: np.ndarray, lo: float, hi: float) -> np.ndarray:
        """Float32 network input from raw intensities, with the whole image's ``lo``/``hi``."""
        from micro_sym.models.normalize import normalize_by_tag

        return normalize_by_tag(self.norm, x, lo, hi)

    def decode(self, y: np.ndarray) -> dict:
        """Raw ``(C, *spatial)`` outputs -> ``boundary`` float32 and ``orientation`` float32.

        2D orientation is degrees in ``[0, 360/k)``, with ``confidence`` in ``[0, 1]`` (the length of
        the predicted ``(cos kθ, sin kθ)``); 3D is quaternions ``(4, *spatial)``.
        """
        boundary = self.boundary_of(y)
        if self.orientation == "angle":
            from micro_sym.orientation import decode_angle

            theta, length = decode_angle(y[1:3], self.k)
            return {"boundary": boundary, "orientation": theta.astype(np.float32),
                    "confidence": np.clip(length, 0.0, 1.0).astype(np.float32)}
        if self.orientation == "quaternion":
            from micro_sym.inference._kernels import unit_quaternions

            return {"boundary": boundary, "orientation": unit_quaternions(y[1:5])}
        from micro_sym.orientation.cubic_harmonics import sh_to_quat

        degrees = (4, 6) if self.orientation == "harmonics46" else (4,)
        q = sh_to_quat(np.moveaxis(y[1:], 0, -1), degrees)
        return {"boundary": boundary, "orientation": np.moveaxis(q, -1, 0).astype(np.float32)}

    @property
    def grain_field(self) -> tuple | None:
        """The harmonic degrees, ``(4,)`` or ``(4, 6)``, of a 3D network whose grains come from its
        field (:func:`micro_sym.inference.tiles.rule_maps`); None for every other network."""
        if self.ndim == 3 and str(self.orientation).startswith("harmonics"):
            return (4, 6) if self.orientation == "harmonics46" else (4,)
        return None

    def boundary_of(self, y: np.ndarray) -> np.ndarray:
        """Boundary probability alone from raw outputs (what :meth:`decode` returns as ``boundary``)."""
        return _sigmoid(y[0])

    def forward(self, x: np.ndarray, device: str = "cpu", *, exclusive: bool = True) -> np.ndarray:
        """Run the module on a batch ``(B, *tile)`` of normalized tiles; returns ``(B, C, *tile)``.

        ``exclusive``: one forward at a time in this process (:data:`FORWARD_LOCK`). A 3D tile too large
        for :attr:`forward_memory` runs in z slabs (:func:`.forward_slabs.forward_in_slabs`)."""
        import torch

        from micro_sym.deploy.runtime import cpu_forward

        threads = _exclusive_threads if exclusive else None

        def run(part):
            t = torch.from_numpy(np.ascontiguousarray(part, np.float32))[:, None].to(device)
            return cpu_forward(self.module, self.ndim, t, threads, self.precision, self.int8_ranges).float().cpu().numpy()

        with FORWARD_LOCK if exclusive else contextlib.nullcontext(), torch.inference_mode():
            return forward_in_slabs(run, x, self.halo, self.slab_edges(x.shape[1:], len(x)))

    def activation_bytes(self, spatial_shape, batch: int = 1) -> int | None:
        """Estimated peak bytes of a 3D forward over ``batch`` tiles of ``spatial_shape``, in its slabs
        (:func:`.forward_slabs.activation_bytes`); None for 2D networks."""
        if self.ndim != 3 or not self.width:
            return None
        thickest = thickest_slab(self.slab_edges(spatial_shape, batch), self.halo)
        return activation_bytes((thickest, *spatial_shape[1:]), **self._activation_terms(), batch=batch)

    def _activation_terms(self) -> dict:
        """This network's terms of :func:`.forward_slabs.activation_bytes` besides the shape and batch.
        int8 counts as bf16: its peak on a 156³ tile (1,367 MB in one forward, the float32 head's input
        included) is about bf16's (1,332), and float32's slabs (7) took it twice its one-forward time."""
        return {"width": self.width, "itemsize": 2 if self.precision in ("bf16", "int8") else 4,
                "per_width": peak_values_per_width(self.module)}

    def slab_edges(self, spatial_shape, batch: int = 1) -> list[int]:
        """Where a forward over a batch of tiles of ``spatial_shape`` is cut along z (:func:`.plan_slabs`):
        ``[0, size]`` for one forward (2D networks, and 3D tiles within :attr:`forward_memory`)."""
        if self.ndim != 3 or not self.width:
            return [0, int(spatial_shape[0])]
        return plan_slabs(spatial_shape, budget=self.forward_memory, halo=self.halo, stride=self.total_stride,
                          batch=batch, **self._activation_terms())

    def to_bytes(self) -> bytes:
        """Serialized form shipped to workers (pickle of the exported module, as dask ships tasks)."""
        return pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)


def _sigmoid(logits) -> np.ndarray:
    """float32 ``1 / (1 + exp(-x))``, computed in float64 in place (no volume-sized temporaries)."""
    z = np.negative(logits, dtype=np.float64)
    np.exp(z, out=z)
    z += 1.0
    np.divide(1.0, z, out=z)
    return z.astype(np.float32)


def network_from_bytes(payload: bytes) -> Network:
    """Inverse of :meth:`Network.to_bytes`."""
    return pickle.loads(payload)


@dataclass(frozen=True)
class NetworkFile:
    """Where a serialized network (:meth:`Network.to_bytes`) lies on disk: what a process pool's tasks
    carry instead of the bytes (:class:`~.scheduler.ProcessRunner`), read at most once per process."""

    path: str


_CACHE: dict = {}
_CACHE_LOCK = threading.Lock()


def cached_network(payload, sha256: str, device: str = "cpu", torch_threads: int | None = None) -> Network:
    """The network for ``sha256`` in this process, deserialized at most once per worker process.

    ``payload``: its bytes, or a :class:`NetworkFile` (read only when this process does not hold it yet)."""
    with _CACHE_LOCK:
        net = _CACHE.get((sha256, device))
        if net is None:
            import torch

            if torch_threads:
                torch.set_num_threads(int(torch_threads))
            if isinstance(payload, NetworkFile):
                with open(payload.path, "rb") as f:
                    payload = f.read()
            net = network_from_bytes(payload if isinstance(payload, bytes) else bytes(payload))
            if getattr(net, "module", None) is not None:  # the classical method has no torch module
                net.module.to(device).eval()
            _CACHE[(sha256, device)] = net
        return net


def weights_hash(module, config=None) -> str:
    """SHA-256 of a module's parameters and buffers (sorted by name) and its config."""
    h = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    h.update(json.dumps(config or {}, sort_keys=True, default=str).encode())
    return h.hexdigest()


def as_network(model, *, name: str = "", export: bool = True) -> Network:
    """Wrap a SegModel (2D or 3D) or any module with its attributes as a :class:`Network`.

    Parameters
    ----------
    model : torch.nn.Module
        Needs ``ndim``, ``halo``, ``total_stride`` and (2D) ``k``. Optional: ``config``,
        ``orientation_encoding`` (``"angle"``, ``"quaternion"``, ``"harmonics4"``), ``normalization``
        (``"pm1"``/``"unit"``), ``export()``.
    name : str
        Model name or path, recorded in manifests.
    export : bool
        Run the plain-torch export (default; faster, same outputs to float rounding). False runs the
        module itself, e.g. a model being trained.
    """
    from micro_sym.deploy.runtime import chosen_precision
    from micro_sym.models.base import check_model

    check_model(model, name)
    ndim = int(model.ndim)
    config = dict(getattr(model, "config", {}) or {})
    model.eval()
    sha = getattr(model, "meta", {}).get("sha256") if isinstance(getattr(model, "meta", None), dict) else None
    sha = sha or weights_hash(model, config)
    module = model
    exported = getattr(model, "exported", False)
    if export and hasattr(model, "export") and not exported:
        module = model.export()
    module.eval()
    if ndim == 2:
        k = int(model.k)
        symmetry = lattice(k, ndim=2, where=f"model {name}").name
        encoding, norm = getattr(model, "orientation_encoding", "angle"), getattr(model, "normalization", "pm1")
    else:
        k = int(getattr(model, "k", 24))
        symmetry = "cubic"
        degrees = tuple(getattr(model, "degrees", config.get("degrees", (4,))))
        default = "harmonics46" if 6 in degrees else "harmonics4"
        encoding = getattr(model, "orientation_encoding", default)
        # SegModel3D maps [lo, hi] to [0, 1] (its own normalize); 2D models to [-1, 1].
        norm = getattr(model, "normalization", "unit")
    convs = [m for m in module.modules() if hasattr(m, "out_channels") and hasattr(m, "weight")]
    width = max((int(m.out_channels) for m in convs), default=16)
    out_channels = int(convs[-1].out_channels) if convs else 0
    file_meta = getattr(model, "meta", None) if isinstance(getattr(model, "meta", None), dict) else {}
    period = file_meta.get("lattice_period_px")
    return Network(module, ndim, k, int(model.halo), int(model.total_stride), symmetry, encoding, norm,
                   name=name or type(model).__name__, sha256=sha, width=width, out_channels=out_channels,
                   meta={"config": config}, lattice_period=float(period) if period else None,
                   precision=chosen_precision())


def load_network(name_or_path, device: str = "cpu") -> Network:
    """Load a model by bundled name or file path as a Network: escnn files as their plain-torch export,
    cached on disk (:mod:`micro_sym.deploy.cache`), so that inference needs no escnn."""
    from micro_sym.deploy.cache import load_for_inference

    return as_network(load_for_inference(name_or_path, device="cpu"), name=str(name_or_path))

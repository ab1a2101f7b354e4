"""Run exported (plain-torch) networks fast on the CPU: onnxruntime for 2D, channels-last torch for 3D.

Why: our U-Nets have few channels per layer (8-192), where torch's default NCHW convolutions are
slow on a CPU. onnxruntime's fused convolutions ran the bundled 2D networks 3-3.6 times faster
than torch on 2 cores, channels-last torch 1.4-1.7 times faster in 2D and 1.3-1.4 times in 3D, where
onnxruntime gained nothing (``python bench/bench_runtime.py``). A deployed 3D U-Net runs with its
decoders' first convolutions split and its convolutions fused with their ReLUs (:mod:`.subpixel`). The outputs equal the torch module's to float
rounding (``tests/deploy/test_runtime.py``).

Only frozen networks are converted: :func:`cpu_forward` caches one runner per module and rebuilds it
when any of the module's tensors has been modified in place (an optimizer step, ``load_state_dict``),
so a network that is still being trained is never run from stale weights.

The backend is chosen by ``MICRO_SYM_CPU_BACKEND``: ``auto`` (default), ``onnxruntime``,
``channels-last`` or ``torch`` (the module as it is).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import threading
import weakref

import numpy as np
import torch
from torch import nn

from micro_sym.deploy.export import onnx_bytes, ort_session
from micro_sym.deploy.subpixel import SubpixelUNet3D, splittable
from micro_sym.errors import MicroSymError

BACKENDS = ("auto", "onnxruntime", "channels-last", "torch")
ENV_VAR = "MICRO_SYM_CPU_BACKEND"

log = logging.getLogger(__name__)


def chosen_backend(ndim: int, backend: str | None = None) -> str:
    """The backend ``auto`` (or ``$MICRO_SYM_CPU_BACKEND``) resolves to for a ``ndim``-D network."""
    backend = backend or os.environ.get(ENV_VAR, "auto")
    if backend not in BACKENDS:
        raise MicroSymError(f"{ENV_VAR}={backend}: expected one of {', '.join(BACKENDS)}")
    if backend != "auto":
        return backend
    if ndim == 2:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return "channels-last"
        return "onnxruntime"
    return "channels-last"


class CpuRunner:
    """Callable ``(B, 1, *spatial)`` float32 CPU tensor -> ``(B, C, *spatial)``, like the module.

    Parameters
    ----------
    module : torch.nn.Module
        A plain-torch network in eval mode (not escnn: it is traced to ONNX or copied).
    ndim : int
        2 or 3.
    backend : str, optional
        See the module docstring; default from ``$MICRO_SYM_CPU_BACKEND``, else ``auto``.
    """

    def __init__(self, module: nn.Module, ndim: int, backend: str | None = None):
        self.ndim = int(ndim)
        self.backend = chosen_backend(self.ndim, backend)
        self._payload = None
        self._sessions = {}  # intra-op threads -> onnxruntime session of the same graph
        self._module = module
        if self.backend == "onnxruntime":
            try:
                self._payload = self._onnx(module)
                self._session(None)
            except Exception as err:  # an op the exporter lacks: same outputs from torch, just slower
                log.info("onnxruntime conversion failed (%s: %s); using channels-last torch", type(err).__name__, err)
                self.backend = "channels-last"
        if self.backend == "channels-last":
            module = copy.deepcopy(module).eval()
            if self.ndim == 3 and splittable(module):  # same function, fewer operations, smaller peak
                module = SubpixelUNet3D(module).eval()
            self._module = module.to(memory_format=self._memory_format)

    @property
    def _memory_format(self):
        return torch.channels_last if self.ndim == 2 else torch.channels_last_3d

    def _onnx(self, module) -> bytes:
        side = max(16, 2 * int(getattr(module, "total_stride", 8)))
        with torch.inference_mode(False), torch.no_grad():
            return onnx_bytes(module, torch.zeros((1, 1) + (side,) * self.ndim))

    def _session(self, threads: int | None):
        threads = max(1, int(threads or torch.get_num_threads()))
        if threads not in self._sessions:
            self._sessions[threads] = ort_session(self._payload, threads)
        return self._sessions[threads]

    def __call__(self, x: torch.Tensor, threads: int | None = None) -> torch.Tensor:
        """The module's output; ``threads``: intra-op threads of this call, onnxruntime's or (channels-last)
        torch's (default torch's thread count)."""
        if self.backend == "onnxruntime":
            arr = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
            (y,) = self._session(threads).run(None, {"image": arr})
            return torch.from_numpy(y)
        if self.backend == "channels-last":
            with torch_threads(threads):
                return self._module(x.contiguous(memory_format=self._memory_format)).contiguous()
        return self._module(x)

    def release_memory(self) -> None:
        """Give the memory the last forwards held back to the system (onnxruntime keeps its arena at
        the size of the largest tile otherwise): one tiny run with arena shrinkage on."""
        if self.backend != "onnxruntime":
            return
        import onnxruntime as ort

        options = ort.RunOptions()
        options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        side = max(16, 2 * int(getattr(self._module, "total_stride", 8)))
        for session in list(self._sessions.values()):
            session.run(None, {"image": np.zeros((1, 1) + (side,) * self.ndim, np.float32)}, options)


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """torch's (process-wide) intra-op threads set to ``threads`` inside the block, restored after; the
    engine's exclusive forward (one at a time per process) is the only torch work then running."""
    previous = torch.get_num_threads()
    if not threads or threads == previous:
        yield
        return
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def release_memory() -> None:
    """:meth:`CpuRunner.release_memory` for every cached runner: between the network pass of a run and its
    grain pass, which needs no network."""
    with _LOCK:
        runners = [cached[1] for cached in _RUNNERS.values()]
    for runner in runners:
        if isinstance(runner, CpuRunner):
            runner.release_memory()


_RUNNERS: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def _fingerprint(module: nn.Module) -> tuple:
    """Changes whenever a parameter or buffer is replaced or modified in place."""
    return tuple((t.data_ptr(), t._version) for t in list(module.parameters()) + list(module.buffers()))


def _is_plain_torch(module: nn.Module) -> bool:
    return not any(type(m).__module__.startswith("escnn") for m in module.modules())


PRECISIONS = ("fp32", "bf16", "int8")
PRECISION_VAR = "MICRO_SYM_PRECISION"


def chosen_precision(precision: str | None = None) -> str:
    """``precision``, else ``$MICRO_SYM_PRECISION``, else ``fp32``; checked."""
    precision = precision or os.environ.get(PRECISION_VAR) or "fp32"
    if precision not in PRECISIONS:
        raise MicroSymError(f"precision {precision} (--precision or ${PRECISION_VAR}): expected one of "
                            f"{', '.join(PRECISIONS)}")
    return precision


def cpu_forward(model: nn.Module, ndim: int, x: torch.Tensor, threads: int | None = None,
                precision: str = "fp32", int8_ranges: dict | None = None) -> torch.Tensor:
    """``model(x)``; on the CPU by the fastest backend for plain-torch networks (cached per module).

    Inputs on another device (CUDA), escnn models (still trainable, not traceable to ONNX), ONNX and
    TorchScript files (already on their own runtime) run as they are. ``threads``: intra-op threads
    for this call (onnxruntime's, or torch's for channels-last; default torch's thread count).

    ``precision="bf16"`` runs torch modules under bfloat16 autocast (CPU: channels-last torch, whose
    oneDNN convolutions use the CPU's bf16 units; CUDA likewise) and returns float32. It is not exact:
    outputs move by about a percent of their range (docs/design.md §2.4). ONNX and TorchScript files
    stay float32.

    ``precision="int8"`` runs a deployed 3D U-Net in 8-bit integers (:mod:`.int8`) with the activation
    ranges ``int8_ranges``; not exact either, but exactly equivariant.
    """
    fmt = getattr(model, "fmt", None)
    if precision == "int8":
        from micro_sym.deploy.int8 import int8_module

        if int8_ranges is None:
            raise MicroSymError("precision int8 needs the activation ranges of its input (micro_sym.deploy.int8)")
        with torch_threads(threads):
            return int8_module(getattr(model, "net", model), int8_ranges)(x)
    if precision == "bf16" and fmt not in ("onnx", "torchscript"):
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            return _forward(model, ndim, x, threads, "channels-last").float()
    return _forward(model, ndim, x, threads, None)


def _forward(model, ndim, x, threads, backend):
    fmt = getattr(model, "fmt", None)
    if x.device.type != "cpu" or fmt in ("onnx", "torchscript"):
        return model(x)
    module = model.net if fmt in ("torch", "safetensors") else model
    backend = backend or chosen_backend(ndim)
    if backend == "torch" or getattr(module, "exported", True) is False:
        return module(x)
    with _LOCK:
        key = (_fingerprint(module), backend)
        cached = _RUNNERS.get(module)
        if cached is None or cached[0] != key:
            runner = CpuRunner(module, ndim, backend) if _is_plain_torch(module) else module
            cached = (key, runner)
            _RUNNERS[module] = cached
    runner = cached[1]
    return runner(x, threads) if isinstance(runner, CpuRunner) else runner(x)

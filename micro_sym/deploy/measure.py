"""What a deployment report measures: parameters, convolution MACs, CPU latency, equivariance error.

All functions take any module with the SegModel interface (escnn, exported, or
:class:`~micro_sym.deploy.export.DeployedModel`); escnn models are exported first for MACs and
latency because the exported form is what runs in production.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch
from torch import nn

from micro_sym.models.base import equivariance_error

# The 8 elements of D4 on (..., H, W): np.rot90 by r quarter turns (counter-clockwise as displayed),
# then an optional left-right mirror (x -> -x); the same convention as tests/models/test_models2d.py.


def _plain(model):
    """The deployed form, built outside inference mode: escnn recomputes its cached filters on every
    ``eval()``, and filters made inside ``torch.inference_mode`` could not be used outside it later."""
    with torch.no_grad():
        if getattr(model, "exported", False) or not hasattr(model, "export"):
            return model.eval()
        return model.export().eval()


def count_parameters(model, *, deployed: bool = False) -> int:
    """Trainable parameters of ``model`` as given, the number training optimizes and reports.

    An escnn model trains basis coefficients and expands them into filters, so its exported plain-torch
    module holds many more weights for the same model; ``deployed=True`` counts those (the weights of
    ``model.export()``) instead. 0 for ONNX/TorchScript files, which hold no torch parameters.
    """
    net = _plain(model) if deployed else model
    params = getattr(net, "parameters", None)
    if params is None:
        return 0
    return int(sum(p.numel() for p in params() if p.requires_grad))


#: What the ``parameters`` and ``parameters_deployed`` entries of :func:`report` count.
PARAMETERS_COUNTED = ("parameters: trainable parameters of the module as given (escnn: its basis coefficients, "
                      "as training reports); parameters_deployed: weights of the exported plain-torch module")


def count_macs(model, size: int | None = None) -> dict:
    """Multiply-accumulates of all convolutions for one input of side ``size``, counted with hooks.

    Parameters
    ----------
    model : SegModel-like (plain torch after export; ONNX/TorchScript files cannot be hooked)
    size : int, optional
        Input side (default 256 in 2D, 64 in 3D), rounded up to the total stride.

    Returns
    -------
    dict
        ``macs`` (total), ``per_pixel`` (per input pixel/voxel), ``size``.
    """
    net = _plain(model).eval()
    ndim = int(getattr(model, "ndim", 2))
    s = int(model.total_stride)
    size = size or (256 if ndim == 2 else 64)
    size = -(-size // s) * s
    total = [0]

    def hook(mod, inp, out):
        k = int(np.prod(mod.kernel_size))
        total[0] += int(out.numel()) * (mod.in_channels // mod.groups) * k

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))]
    try:
        with torch.inference_mode():
            net(torch.zeros((1, 1) + (size,) * ndim))
    finally:
        for h in handles:
            h.remove()
    return {"macs": total[0], "per_pixel": total[0] / size**ndim, "size": size}


def cpu_latency(model, size: int | None = None, *, repeats: int = 5, warmup: int = 2, threads: int | None = None) -> dict:
    """Median wall time of one forward pass on a ``(1, 1, size, size[, size])`` input on the CPU.

    Parameters
    ----------
    model : SegModel-like
        escnn models are exported first (the deployed form is what is timed).
    size : int, optional
        Default 512 (2D) or 64 (3D), rounded up to the total stride.
    repeats, warmup : int
    threads : int, optional
        torch CPU threads for the measurement (restored afterwards).

    Returns
    -------
    dict
        ``seconds`` (median), ``min``, ``mpix_per_s``, ``size``, ``threads``.
    """
    net = _plain(model).eval()
    ndim = int(getattr(model, "ndim", 2))
    s = int(model.total_stride)
    size = -(-(size or (512 if ndim == 2 else 64)) // s) * s
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        x = torch.randn((1, 1) + (size,) * ndim, generator=torch.Generator().manual_seed(0))
        # inference_mode, as predict_image runs: measurably faster on CPU than no_grad here
        with torch.inference_mode():
            for _ in range(warmup):
                net(x)
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                net(x)
                times.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(old)
    med = statistics.median(times)
    return {"seconds": med, "min": min(times), "mpix_per_s": size**ndim / med / 1e6, "size": size,
            "threads": int(threads or old)}


def evaluate_accuracy(model, data, *, max_images: int | None = None) -> dict:
    """Boundary F1, grain F1 and orientation error on a labeled 2D dataset (:func:`micro_sym.inference.evaluate.evaluate_model`)."""
    from micro_sym.io.datasets import LabeledDataset
    from micro_sym.inference.evaluate import evaluate_model

    ds = LabeledDataset(data)
    names = list(ds.names)[: max_images] if max_images else None
    rep = evaluate_model(model, ds, names=names)
    ov = rep["overall"]
    return {key: ov[key] for key in ("boundary_f1", "grain_f1", "orientation_median_deg", "n_images") if key in ov}


def report(model, *, data=None, latency_size: int | None = None, repeats: int = 5, threads: int | None = 1,
           max_images: int | None = None, equivariance: bool = True) -> dict:
    """One column of a before/after report: parameters (see :data:`PARAMETERS_COUNTED`), MACs, latency,
    equivariance, accuracy.

    Latency defaults to one thread: on a CPU shared with other jobs, multi-threaded timings wait
    for descheduled threads and vary several-fold, single-threaded ones compare fairly.
    """
    out = {}
    if not getattr(model, "fmt", None) in ("onnx", "torchscript"):
        out["parameters"] = count_parameters(model)
        out["parameters_deployed"] = count_parameters(model, deployed=True)
        out["parameters_counted"] = PARAMETERS_COUNTED
        out["macs"] = count_macs(model)
    out["latency"] = cpu_latency(model, latency_size, repeats=repeats, threads=threads)
    if equivariance:
        eq = equivariance_error(model)
        out["equivariance_error"] = {"max": eq["max"], "per_element": {p["element"]: p["error"] for p in eq["per_element"]}}
    if data is not None and int(getattr(model, "ndim", 2)) == 2:
        out["accuracy"] = evaluate_accuracy(model, data, max_images=max_images)
    return out

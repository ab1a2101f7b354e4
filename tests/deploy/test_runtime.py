"""The fast CPU runtime (micro_sym.deploy.runtime): same outputs as torch, same symmetry, never stale."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import torch

from micro_sym.deploy.runtime import CpuRunner, chosen_backend, cpu_forward
from micro_sym.errors import MicroSymError
from micro_sym.models import load_model

warnings.filterwarnings("ignore", message=".*py3nj.*")

BACKENDS = ("onnxruntime", "channels-last", "torch")
D4 = [(r, m) for m in (False, True) for r in range(4)]


@pytest.fixture(scope="module")
def exported2d():
    return load_model("default-2d", export=True)


def _rel_err(a, b):
    return float((a - b).abs().max() / max(1.0, b.abs().max()))


def _smooth_input(shape, seed=0):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    pool = torch.nn.functional.avg_pool2d if len(shape) == 4 else torch.nn.functional.avg_pool3d
    return pool(x, 3, 1, 1) * 3.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_runner_matches_torch_2d(exported2d, backend):
    x = _smooth_input((2, 1, 64, 96))
    with torch.no_grad():
        ref = exported2d(x)
        got = CpuRunner(exported2d, 2, backend)(x)
    assert got.shape == ref.shape and got.is_contiguous()
    assert _rel_err(got, ref) < 1e-5


@pytest.mark.parametrize("backend", ("onnxruntime", "channels-last"))
def test_runner_exported_2d_equivariant_all_8_p4m_elements(exported2d, backend):
    from _helpers import act, expected_output

    runner = CpuRunner(exported2d, 2, backend)
    assert runner.backend == backend
    x = _smooth_input((1, 1, 64, 64), seed=3)
    with torch.no_grad():
        y = runner(x)
        for r, mirror in D4:
            err = _rel_err(runner(act(x, r, mirror).contiguous()), expected_output(y, r, mirror))
            assert err < 1e-5, (r, mirror, err)


def test_runner_matches_torch_3d():
    net = load_model("default-3d")  # the bundled 3D model is an exported plain-torch file
    x = _smooth_input((1, 1, 16, 16, 16))
    with torch.no_grad():
        ref = net(x)
        for backend in ("auto", "channels-last"):
            runner = CpuRunner(net.net, 3, backend)
            assert runner.backend == "channels-last"  # onnxruntime is not faster on the 3D networks
            assert _rel_err(runner(x), ref) < 1e-5


def test_cpu_forward_rebuilds_after_weights_change(exported2d):
    import copy

    model = copy.deepcopy(exported2d)
    x = _smooth_input((1, 1, 32, 32))
    with torch.inference_mode():
        before = cpu_forward(model, 2, x)
    with torch.no_grad():
        conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        conv.weight.mul_(1.5)  # in place, as an optimizer step or load_state_dict would
        expect = model(x)
    with torch.inference_mode():
        after = cpu_forward(model, 2, x)
    assert _rel_err(before, expect) > 1e-3  # the change is visible...
    assert _rel_err(after, expect) < 1e-5  # ...and the runner follows it


def test_escnn_model_runs_as_is_and_stays_picklable():
    from micro_sym.inference.network import as_network

    model = load_model("default-2d")  # escnn: trainable, never traced
    x = _smooth_input((1, 1, 32, 32))
    with torch.no_grad():
        assert torch.equal(cpu_forward(model, 2, x), model(x))
    net = as_network(model)
    net.forward(np.zeros((1, 32, 32), np.float32))
    assert pickle.loads(net.to_bytes()).ndim == 2  # the cached runner is not part of the network


def test_backend_choice_and_bad_setting(monkeypatch):
    assert chosen_backend(2) == "onnxruntime" and chosen_backend(3) == "channels-last"
    monkeypatch.setenv("MICRO_SYM_CPU_BACKEND", "torch")
    assert chosen_backend(2) == "torch"
    monkeypatch.setenv("MICRO_SYM_CPU_BACKEND", "fastest")
    with pytest.raises(MicroSymError, match="MICRO_SYM_CPU_BACKEND=fastest"):
        chosen_backend(2)

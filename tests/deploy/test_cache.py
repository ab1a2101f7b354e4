"""Inference loads escnn model files as their cached plain-torch export (micro_sym.deploy.cache)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from micro_sym.deploy.cache import ENV_VAR, load_for_inference
from micro_sym.inference import load_network
from micro_sym.models import equivariance_error


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv(ENV_VAR, str(folder))
    return folder


def _outputs(net, seed=0):
    x = np.random.default_rng(seed).random((1, 64, 64), dtype=np.float32)
    return net.forward(x)


def test_cold_and_cached_loads_give_the_same_network(cache):
    cold = load_network("robust-2d")
    (copy,) = cache.iterdir()
    warm = load_network("robust-2d")
    assert (warm.sha256, warm.lattice_period, warm.name, warm.symmetry) == (cold.sha256, cold.lattice_period, "robust-2d", "square")
    np.testing.assert_array_equal(_outputs(warm), _outputs(cold))
    assert warm.module.meta["path"].endswith("robust_2d.pt") and copy.suffix == ".pt"


def test_the_cached_export_is_exactly_d4_equivariant(cache):
    model = load_for_inference("robust-2d")
    eq = equivariance_error(model, size=64)
    assert len(eq["per_element"]) == 8 and eq["max"] < 1e-4, eq


def test_a_damaged_copy_is_rebuilt_and_an_unwritable_cache_only_costs_speed(cache, tmp_path, monkeypatch):
    reference = _outputs(load_network("atoms-2d"))
    (copy,) = cache.iterdir()
    copy.write_bytes(b"not a torch file")
    np.testing.assert_array_equal(_outputs(load_network("atoms-2d")), reference)
    assert copy.stat().st_size > 1000  # rewritten
    blocked = tmp_path / "file"
    blocked.write_text("a file where the cache folder should be")
    monkeypatch.setenv(ENV_VAR, str(blocked / "cache"))
    np.testing.assert_array_equal(_outputs(load_network("atoms-2d")), reference)


def test_a_cached_model_loads_without_escnn(cache):
    load_network("robust-2d")
    code = "import sys; from micro_sym.inference import load_network; load_network('robust-2d'); print('escnn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, env={**os.environ, ENV_VAR: str(cache)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"

"""bfloat16 inference (--precision bf16): close to float32, recorded in the run, refused when unknown."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import zarr

from micro_sym.deploy.runtime import PRECISION_VAR, chosen_precision
from micro_sym.errors import MicroSymError
from micro_sym.inference import load_network, segment


def test_precision_comes_from_the_argument_then_the_environment(monkeypatch):
    monkeypatch.delenv(PRECISION_VAR, raising=False)
    assert chosen_precision() == "fp32" and chosen_precision("bf16") == "bf16"
    monkeypatch.setenv(PRECISION_VAR, "bf16")
    assert chosen_precision() == "bf16" and load_network("default-3d").precision == "bf16"
    with pytest.raises(MicroSymError, match="fp16 .*: expected one of fp32, bf16"):
        chosen_precision("fp16")


@pytest.mark.parametrize("name,size", [("atoms-3d", 24), ("robust-2d", 96)])
def test_bf16_outputs_stay_within_a_few_percent_of_float32(name, size):
    # float32 is exactly equivariant (tests/models/test_model_contract.py), so bf16's equivariance
    # error is at most twice this deviation.
    import dataclasses

    net = load_network(name)
    x = np.random.default_rng(0).random((1,) + (size,) * net.ndim, dtype=np.float32)
    exact = net.forward(x)
    fast = dataclasses.replace(net, precision="bf16").forward(x)
    assert fast.dtype == np.float32 and fast.shape == exact.shape
    deviation = np.abs(fast - exact).max() / np.abs(exact).max()
    assert 0 < deviation < 0.05, deviation


def test_a_bf16_run_gives_nearly_the_same_grains_and_is_recorded(tmp_path):
    vol = tifffile.imread("sample_data/volume/images/sample_000.tif")[:48, :48, :48]
    zarr.create_array(str(tmp_path / "v.zarr"), data=vol, chunks=(48, 48, 48))
    grains = {}
    for precision in ("fp32", "bf16"):
        (res,) = segment([tmp_path / "v.zarr"], tmp_path / precision, precision=precision)
        assert res.status == "complete", res.error
        grains[precision] = zarr.open_group(str(tmp_path / precision / "v.zarr"), mode="r")["labels/grains/0"][:]
        manifest = json.loads((tmp_path / precision / ".v.run" / "manifest.json").read_text())
        assert manifest["model"].get("precision", "fp32") == precision
    assert np.mean(grains["fp32"] == grains["bf16"]) > 0.98
    # A resumed run with another precision would mix two arithmetics: it is refused.
    (res,) = segment([tmp_path / "v.zarr"], tmp_path / "fp32", precision="bf16")
    assert res.status == "failed" and "--overwrite" in res.error

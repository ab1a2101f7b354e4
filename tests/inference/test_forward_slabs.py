"""A 3D forward in z slabs (a tile too large for the activation budget) gives one forward's outputs."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
import tifffile
import zarr

from micro_sym.errors import MicroSymError
from micro_sym.inference import load_network, segment
from micro_sym.inference.forward_slabs import (FORWARD_MEMORY_VAR, activation_bytes, chosen_forward_memory,
                                               forward_in_slabs, peak_values_per_width, plan_slabs,
                                               thickest_slab)

from _helpers import read_output

warnings.filterwarnings("ignore", message=".*py3nj.*")


def test_budget_comes_from_the_argument_then_the_environment(monkeypatch):
    monkeypatch.delenv(FORWARD_MEMORY_VAR, raising=False)
    assert chosen_forward_memory() == 640 * 2**20 and chosen_forward_memory(100) == 100 * 2**20
    monkeypatch.setenv(FORWARD_MEMORY_VAR, "512")
    assert chosen_forward_memory() == 512 * 2**20 and load_network("default-3d").forward_memory == 512 * 2**20
    for bad in (0, -5, "lots"):
        with pytest.raises(MicroSymError, match="expected a positive number of MB"):
            chosen_forward_memory(bad)


@pytest.mark.parametrize("size,budget_planes", [(148, 200), (148, 84), (148, 57), (96, 30), (64, 1)])
def test_slabs_lie_on_the_stride_grid_and_the_thickest_fits_the_budget(size, budget_planes):
    halo, stride, width = 10, 2, 96
    budget = activation_bytes((budget_planes, size, size), width, 2)
    edges = plan_slabs((size, size, size), width=width, itemsize=2, budget=budget, halo=halo, stride=stride)
    assert edges[0] == 0 and edges[-1] == size and all(e % stride == 0 for e in edges)
    assert all(b - a >= 2 * halo for a, b in zip(edges[:-1], edges[1:])) or len(edges) == 2
    if budget_planes >= size:
        assert edges == [0, size]
    elif thickest_slab(edges, halo) > budget_planes:  # only where slabs would be thinner than two halos
        assert len(edges) - 1 == size // (2 * halo)
    else:  # the fewest slabs that fit
        fewer = plan_slabs((size, size, size), width=width, itemsize=2, budget=10**15, halo=halo, stride=stride)
        assert fewer == [0, size] and len(edges) > 2


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_bundled_3d_network_in_slabs_equals_one_forward(precision):
    net = dataclasses.replace(load_network("default-3d"), precision=precision)
    x = np.random.default_rng(1).random((2, 46, 30, 26), dtype=np.float32)
    whole = dataclasses.replace(net, forward_memory=10**12).forward(x)
    budget = activation_bytes((30, 30, 26), net.width, 2 if precision == "bf16" else 4, 2, peak_values_per_width(net.module))
    sliced = dataclasses.replace(net, forward_memory=budget)
    edges = sliced.slab_edges(x.shape[1:], len(x))
    assert len(edges) >= 3  # the budget cut the tile
    np.testing.assert_array_equal(sliced.forward(x), whole)
    # The halo is what makes them equal: slabs grown by less than the receptive field differ.
    run = lambda part: net.forward(part, exclusive=False)  # noqa: E731
    short = forward_in_slabs(run, x, net.halo - 2 * net.total_stride, edges)
    assert np.abs(short - whole).max() > 1e-3


def test_a_volume_segmented_with_slabbed_forwards_is_byte_identical(tmp_path):
    vol = tifffile.imread("sample_data/volume/images/sample_000.tif")[:48, :32, :32]
    zarr.create_array(str(tmp_path / "v.zarr"), data=vol, chunks=(16, 16, 16))
    net = load_network("default-3d")
    kw = dict(model=net, block=16, chunk=16, measure_grains=False)
    (plan,) = segment([tmp_path / "v.zarr"], tmp_path / "plan", dry_run=True, forward_memory=1, **kw)
    assert len(dataclasses.replace(net, forward_memory=2**20).slab_edges(plan.plan["tile"])) > 2
    outs = {}
    for name, mb in (("one", None), ("slabs", 1)):
        (res,) = segment([tmp_path / "v.zarr"], tmp_path / name, forward_memory=mb, **kw)
        assert res.status == "complete", res.error
        outs[name] = read_output(tmp_path / name, "v")
    assert outs["one"]["grains"].max() >= 2
    for key in ("boundary", "orientation", "grains"):
        assert outs["one"][key].tobytes() == outs["slabs"][key].tobytes(), key

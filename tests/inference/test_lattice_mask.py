"""Grains only where the image shows its lattice (micro_sym.inference.lattice_mask), through the block engine."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from _helpers import half_lattice, read_output
from micro_sym.inference.engine import segment
from micro_sym.inference.whole_image import DEFAULT_MIN_SIZE, default_min_size, grain_min_size, segment_image


def test_lattice_free_half_gets_no_grain_and_tiles_match_the_whole_image(tmp_path):
    # Left half a lattice (period 10 px), right half smooth lattice-free noise. With the mask the
    # right half is unassigned and the lattice half keeps its grain; without it the network gives
    # the noise a grain too. Small blocks: the mask's halo (16 periods) must make tiles agree with
    # the whole image.
    from micro_sym.models import load_model

    img = half_lattice((320, 448), seed=3)
    tifffile.imwrite(tmp_path / "a.tif", img)
    (res,) = segment([tmp_path / "a.tif"], tmp_path / "out", model="default-2d", block=128, chunk=64)
    assert res.status == "complete" and res.n_blocks > 4, res.error
    assert res.plan["method"]["lattice_mask"]["ring_frequency"] > 0
    grains = read_output(tmp_path / "out", "a")["grains"]
    lattice, free = grains[:, 40:180], grains[:, 270:-40]
    assert np.mean(free == 0) > 0.9 and np.mean(lattice > 0) > 0.8
    whole = segment_image(load_model("default-2d", export=True), img, period="measure")
    np.testing.assert_array_equal(grains, whole["grains"])

    # A grain seed must hold 2 cells of the measured lattice (about 10 px: 200 px), whole image and tiles alike.
    ring = res.plan["method"]["lattice_mask"]["ring_frequency"]
    assert _recorded_min_size(tmp_path / "out", "a") == default_min_size(ring)
    assert 190 < default_min_size(ring) < 210

    (res,) = segment([tmp_path / "a.tif"], tmp_path / "all", model="default-2d", lattice_mask=False)
    assert "lattice_mask" not in res.plan["method"]
    assert np.mean(read_output(tmp_path / "all", "a")["grains"][:, 270:-40] > 0) > 0.5
    assert _recorded_min_size(tmp_path / "all", "a") == DEFAULT_MIN_SIZE  # no lattice mask: the plain default


def _recorded_min_size(out, name) -> int:
    import zarr

    return zarr.open_group(str(out / f"{name}.zarr"), mode="r").attrs["micro_sym"]["min_size"]


def test_a_grain_seed_holds_two_lattice_cells_by_default():
    # Patches of vacuum noise or amorphous speckle that pass the ring contrast give seeds of a cell or
    # two; the default smallest seed is 2 cells of the ring spacing, never below the plain 32 px.
    assert default_min_size(None) == DEFAULT_MIN_SIZE == 32
    assert default_min_size(1 / 8) == 128
    assert default_min_size(1 / 10.25) == 211  # 210.1 px, rounded up
    assert default_min_size(1 / 3.0) == DEFAULT_MIN_SIZE
    # What a run uses: a given size as it is; the cells only for a network's seeds.
    assert grain_min_size(7, 1 / 8) == 7
    assert grain_min_size(None, 1 / 8) == 128
    assert grain_min_size(None, 1 / 8, seeded=False) == grain_min_size(None) == DEFAULT_MIN_SIZE


def test_the_network_runs_on_the_part_of_each_tile_it_needs():
    # With the engine's margin the network sees each tile cut to its own halo + margin around the core
    # (the ring contrast's halo is wider); outputs there equal the whole tile's, at the image edges and
    # inside, for a network at its own sampling (stride 16, padded edge tiles) and a resampled one.
    from micro_sym.inference.blocks import grown_crop, plan_blocks
    from micro_sym.inference.lattice_mask import LatticeMasked
    from micro_sym.inference.network import load_network
    from micro_sym.inference.rescale import RescaledNetwork
    from micro_sym.inference.tiles import prepare_tile
    from micro_sym.models.normalize import intensity_range

    img = half_lattice((400, 520), seed=4)
    net = load_network("robust-2d")
    margin = 3
    for inner in (net, RescaledNetwork(net, 1.25, img.shape)):
        # A ring at 0.07 cycles/px: the contrast's halo (16 periods) beyond the network's
        whole_tile, part = LatticeMasked(inner, 0.07), LatticeMasked(inner, 0.07, margin=margin)
        assert part.halo > inner.halo + margin
        plan = plan_blocks(img.shape, 128, halo=part.halo + margin, stride=inner.total_stride, chunk=(64, 64),
                           pad=bool(getattr(inner, "pad_to_stride", True)) and inner.total_stride > 1)
        cut = 0
        for block in plan.blocks:
            x = prepare_tile(inner, img[block.tile], intensity_range(img), block.pad, plan.pad_mode)[None]
            a, b = whole_tile.forward_tiles([block], x)[0], part.forward_tiles([block], x)[0]
            region = (slice(None, -1), *grown_crop(block, margin, img.shape))
            np.testing.assert_array_equal(b[region], a[region])
            # The ring contrast (last channel) of a tile told its context: transformed without padding there.
            contrast = (-1, *region[1:])
            np.testing.assert_allclose(b[contrast], a[contrast], rtol=1e-5, atol=1e-6)
            cut += int((b[:-1] == 0).all(axis=0).any())
        assert cut >= len(plan.blocks) // 2  # most tiles did run on a part


def _voronoi_lattice(shape=(320, 448), n=6, seed=7):
    """``n`` square-lattice grains (period 8 px, random angles) in Voronoi cells, with noise; grain 3 holds
    two crystals 30° apart on top of each other (its 4-fold ring spots cancel in part)."""
    from micro_sym.synth.lattice2d import render_lattice_2d

    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 1, (n, 2)) * shape
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    labels = (((yy[..., None] - centres[:, 0]) ** 2 + (xx[..., None] - centres[:, 1]) ** 2).argmin(-1) + 1).astype(np.int32)
    angles = {i + 1: float(a) for i, a in enumerate(rng.uniform(0, 90, n))}
    img = np.asarray(render_lattice_2d(labels, angles, lattice="square", period=8.0), np.float32)
    turned = np.asarray(render_lattice_2d(labels, {g: a + 30.0 for g, a in angles.items()}, lattice="square",
                                          period=8.0), np.float32)
    img[labels == 3] = 0.5 * (img[labels == 3] + turned[labels == 3])
    return img + (0.3 * rng.standard_normal(shape)).astype(np.float32)


@pytest.fixture
def forward_threads():
    """torch's threads set as the engine's forward runs (one per core) for the test, then given back: a
    network's rounding depends on them, and the whole-image result is compared with the engine's."""
    import torch

    from micro_sym.inference.scheduler import available_cores

    previous = torch.get_num_threads()
    torch.set_num_threads(available_cores())
    yield
    torch.set_num_threads(previous)


def test_grains_showing_no_lattice_are_left_out_alike_in_blocks_and_whole(tmp_path, monkeypatch, forward_threads):
    # Each final grain is measured whole (its window read by the block holding the window's first pixel),
    # so whether it shows its lattice does not depend on the blocks: here the bar is raised above the
    # weakest grains (a grain of two crystals: strength 0.4-0.9 as the network's rounding moves its
    # outline; the others about 0.93), and the engine in 12 blocks leaves out the same grains as the whole image,
    # renumbers the others alike, and its table holds the kept grains' own strengths and neighbours.
    import csv

    import torch

    from micro_sym.classical import grain_lattice
    from micro_sym.grains import grain_table
    from micro_sym.models import load_model

    from micro_sym.inference.lattice_mask import grain_lattice as lattice_setting
    from micro_sym.inference.lattice_mask import measure_grains
    from micro_sym.inference.network import as_network
    from micro_sym.inference.rescale import adapt_to_image

    img = _voronoi_lattice()
    tifffile.imwrite(tmp_path / "a.tif", img)
    model = load_model("robust-2d", export=True)
    every = segment_image(model, img, period="measure")["grains"]
    n = int(every.max())
    # 6 when run alone; one full test run found 4 (the network's rounding depends on the process's earlier work).
    assert n >= 4
    # The bar: in the widest gap between the lower half's strengths (the network's rounding, which
    # depends on the process's earlier work, decides how weak the grain of two crystals comes out).
    _, scale, _ = adapt_to_image(as_network(model), img)
    sums = measure_grains(img, every, lattice_setting(as_network(model), scale))
    strength = np.maximum(np.abs(sums["ck"]), np.abs(sums["c2"])) / sums["c0"]
    ranked = np.sort(strength)
    gap = int(np.argmax(np.diff(ranked)[: len(ranked) // 2]))
    weakest, second = ranked[gap], ranked[gap + 1]
    assert second - weakest > 0.03
    monkeypatch.setattr(grain_lattice, "WEAK_LATTICE_STRENGTH", (weakest + second) / 2)
    whole = segment_image(model, img, period="measure")["grains"]
    left_out = sums["ids"][strength <= weakest]
    kept = n - left_out.size
    assert whole.max() == kept and np.array_equal(whole > 0, (every > 0) & ~np.isin(every, left_out))
    threads = torch.get_num_threads()
    (res,) = segment([tmp_path / "a.tif"], tmp_path / "out", model="robust-2d", block=128, chunk=64)
    assert res.status == "complete" and res.n_blocks >= 12, res.error
    # The engine gives the caller's torch threads back: a network's rounding depends on them, and this
    # image's grains with it (left at 1 thread, the whole image above came out otherwise).
    assert torch.get_num_threads() == threads
    grains = read_output(tmp_path / "out", "a")["grains"]
    np.testing.assert_array_equal(grains, whole)
    rows = list(csv.DictReader(line for line in (tmp_path / "out" / "a_grains.csv").read_text().splitlines()
                               if not line.startswith("#")))
    assert [int(r["grain"]) for r in rows] == list(range(1, kept + 1))
    assert min(float(r["lattice_strength"]) for r in rows) >= (weakest + second) / 2
    ref = grain_table(whole, np.zeros(whole.shape, np.float32), symmetry="square")
    assert [int(r["n_neighbours"]) for r in rows] == list(ref["n_neighbours"])

    # A run that dies while renumbering resumes to the same bytes: the grains' sums were kept, and a block
    # is renumbered from the flooded scratch, so renumbering it again changes nothing.
    from micro_sym.errors import MicroSymError
    from micro_sym.inference import engine

    renumber = engine.relabel_task
    calls = []

    def dies_after_three(job, block, lut):
        calls.append(block.id)
        if len(calls) > 3:
            raise MicroSymError("killed while renumbering")
        renumber(job, block, lut)

    monkeypatch.setattr(engine, "relabel_task", dies_after_three)
    kw = dict(model="robust-2d", block=128, chunk=64, workers=1)
    (res,) = segment([tmp_path / "a.tif"], tmp_path / "resumed", **kw)
    markers = list((tmp_path / "resumed" / ".a.run" / "done3").iterdir())
    assert res.status == "failed" and 1 <= len(markers) <= 3  # the blocks done before the failure was seen
    markers[0].unlink()  # as if killed between writing a block and marking it: doing it again is harmless
    monkeypatch.setattr(engine, "relabel_task", renumber)
    (res,) = segment([tmp_path / "a.tif"], tmp_path / "resumed", **kw)
    assert res.status == "complete", res.error
    np.testing.assert_array_equal(read_output(tmp_path / "resumed", "a")["grains"], whole)
    assert (tmp_path / "resumed" / "a_grains.csv").read_bytes() == (tmp_path / "out" / "a_grains.csv").read_bytes()

"""The first lattice ring of a volume (micro_sym.classical.measure_lattice_3d): at the analytic
renderer's period, at the first ring of atomistic fcc, bcc and simple-cubic volumes, from a lazy
array reading a few tiles only, and nothing in noise."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from micro_sym.classical import measure_lattice_3d
from micro_sym.classical.lattice_measure3d import MAX_TILES
from micro_sym.synth import Synth3DConfig, synth_3d
from micro_sym.synth.atoms3d import Atoms3DConfig, synth_atoms3d


@pytest.mark.parametrize("period", [4.0, 6.0, 10.0])
def test_period_of_the_analytic_renderer(period):
    # Simple cubic (first ring {100} at 1/a), 40-voxel grains, twins, missing wedge, noise, uint8.
    # Measured on seeds 0-2: within 1.2 %.
    s = synth_3d(Synth3DConfig(size=(96, 96, 96), period=period), seed=1)
    m = measure_lattice_3d(s.volume)
    assert m["found"] and m["n_spots"] > 0
    assert m["period"] == pytest.approx(period, rel=0.03)
    assert m["ring_frequency"] == pytest.approx(1 / m["period"]) and m["frequency"] == m["ring_frequency"]
    assert m["snr_db"] > 5


# First ring times the lattice constant: fcc {111} √3, bcc {110} √2, simple cubic {100} 1.
@pytest.mark.parametrize("spec, ring", [
    ({"lattice": "fcc", "element": "Au", "voxel_size": 0.5}, math.sqrt(3)),   # a = 8.2 voxels
    ({"lattice": "bcc", "element": "Fe", "voxel_size": 0.4}, math.sqrt(2)),   # a = 7.2 voxels
    ({"lattice": "sc", "element": "Po", "voxel_size": 0.5}, 1.0),             # a = 6.7 voxels
    ({"kind": "particle", "voxel_size": 0.5, "particle": {"shape": "decahedron", "diameter": 28}}, math.sqrt(3)),
])
def test_first_ring_of_atomistic_volumes(spec, ring):
    # Polycrystals of 24 Å grains and a five-fold twinned Au particle in vacuum, imaged like atomic
    # electron tomography (missing wedge, noise, uint8). Seeds 0-2: within 2.9 %.
    cfg = Atoms3DConfig(size=(64, 64, 64), polycrystal={"grain_size": 24.0}, **spec)
    s = synth_atoms3d(cfg, seed=0)
    m = measure_lattice_3d(s.volume)
    assert m["found"]
    a = cfg.a / cfg.voxel_size
    assert m["ring_frequency"] * a == pytest.approx(ring, rel=0.04)


@pytest.mark.parametrize("kind", ["white", "smooth", "coloured", "poisson", "gradient", "constant"])
@pytest.mark.parametrize("size", [48, 96])
def test_noise_has_no_lattice(kind, size):
    rng = np.random.default_rng(size)
    w = rng.standard_normal((size,) * 3).astype(np.float32)
    z = np.linspace(0, 1, size, dtype=np.float32)[:, None, None]
    volume = {"white": w, "smooth": ndimage.gaussian_filter(w, 1.5),
              "coloured": ndimage.gaussian_filter(w, (1.5, 0.7, 0.7)),  # blurred along the beam axis
              "poisson": rng.poisson(3.0, w.shape).astype(np.uint8), "gradient": w + 20 * z,
              "constant": np.full(w.shape, 7, np.uint8)}[kind]
    m = measure_lattice_3d(volume)
    assert not m["found"] and m["period"] is None and m["reason"]


class _CountingArray:
    """A lazy array that counts its reads."""

    def __init__(self, a):
        self.a, self.shape, self.dtype, self.reads = a, a.shape, a.dtype, 0

    def __getitem__(self, key):
        self.reads += 1
        return self.a[key]


def test_lazy_volume_reads_a_few_tiles_and_agrees():
    dask_array = pytest.importorskip("dask.array")
    s = synth_3d(Synth3DConfig(size=(128, 128, 128), period=5.0), seed=0)
    ref = measure_lattice_3d(s.volume, tile=64)
    lazy = _CountingArray(s.volume)
    assert measure_lattice_3d(lazy, tile=64) == ref
    assert lazy.reads == MAX_TILES
    assert measure_lattice_3d(dask_array.from_array(s.volume, chunks=32), tile=64) == ref
    assert ref["period"] == pytest.approx(5.0, rel=0.03)

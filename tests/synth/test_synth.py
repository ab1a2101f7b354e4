"""Synthetic data generator: the ground truth is checked against independent measurements.

Orientation is re-measured from the rendered pixels by Fourier analysis (not read back from the
generator), the boundary mask and the 5° grain rule are re-derived from the saved maps, and the CLI
output is loaded with the project's own dataset reader.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from micro_sym.errors import MicroSymError
from micro_sym.orientation import misorientation_2d, quat_to_matrix, random_quaternions
from micro_sym.orientation.symmetry import lattice as find_lattice
from micro_sym.synth import (
    Imaging2D,
    Synth2DConfig,
    Synth3DConfig,
    micrograph_from_grains,
    render_lattice_2d,
    render_lattice_3d,
    synth_2d,
    synth_3d,
)


def _taper(mask, width=6.0):
    """Smooth window that is 1 inside the mask and falls to 0 at its edge (limits FFT sidelobes)."""
    d = ndimage.distance_transform_edt(np.pad(mask, 1))[(slice(1, -1),) * mask.ndim]
    t = np.clip(d / width, 0, 1)
    return t * t * (3 - 2 * t)


def _spectrum_peak(img, mask, pad: int):
    """Sub-bin position (in cycles/pixel, array axis order) of the strongest non-DC Fourier peak."""
    w = _taper(mask)
    x = (img - img[mask].mean()) * w
    size = [pad * n for n in img.shape]
    p = np.abs(np.fft.fftn(x, s=size)) ** 2
    freqs = np.meshgrid(*[np.fft.fftfreq(n) for n in size], indexing="ij")
    r = np.sqrt(sum(f**2 for f in freqs))
    p[r < 0.04] = 0  # DC and the slow background are not lattice
    idx = np.array(np.unravel_index(np.argmax(p), p.shape))
    # Power-weighted centroid of the 3^d neighbourhood gives sub-bin accuracy.
    offsets = np.stack(np.meshgrid(*[np.arange(-1, 2)] * len(size), indexing="ij"), -1).reshape(-1, len(size))
    wts = p[tuple(np.mod(idx + offsets, size).T)]
    centre = idx + (offsets * wts[:, None]).sum(0) / wts.sum()
    size = np.array(size)
    return (np.mod(centre + size / 2, size) - size / 2) / size  # signed frequencies


def _fft_angle_2d(img, mask, lattice):
    """In-plane lattice angle (degrees, docs/design.md convention) measured from the Fourier peaks."""
    kr, kc = _spectrum_peak(img, mask, pad=4)
    ang = np.degrees(np.arctan2(-kr, kc))  # y is up: a row frequency kr is -ky
    # Square (and fringes: the plane normal): reciprocal basis parallel to the direct one. Hexagonal:
    # rotated by 30°.
    if lattice == "hexagonal":
        ang -= 30.0
    return float(np.mod(ang, find_lattice(lattice).period)), float(np.hypot(kr, kc))


@pytest.mark.parametrize("lattice", ["square", "hexagonal", "fringes"])
@pytest.mark.parametrize("angle", [0.3, 17.0, 44.5, 59.0, 88.9, 133.0])
def test_render_given_grain_map_fft_angle(lattice, angle):
    """A single grain rendered at a given angle shows its lattice peaks exactly there (fringes: the
    plane normal, modulo 180°)."""
    angle = float(np.mod(angle, find_lattice(lattice).period))
    ids = np.ones((160, 160), dtype=np.uint32)
    img = render_lattice_2d(ids, {1: angle}, lattice=lattice, period=8.0, rng=1)
    measured, freq = _fft_angle_2d(img, ids > 0, lattice)
    assert misorientation_2d(measured, angle, find_lattice(lattice).k) < 1.0
    expected_freq = 2 / (8.0 * np.sqrt(3)) if lattice == "hexagonal" else 1 / 8.0
    assert abs(freq - expected_freq) < 0.02 * expected_freq


@pytest.mark.parametrize("lattice", ["square", "hexagonal", "fringes"])
def test_synth_2d_orientation_matches_fft_of_each_grain(lattice):
    """Every large grain of a generated (noise-free) image has the stored angle, measured by FFT."""
    cfg = Synth2DConfig(size=(320, 320), lattice=lattice, microstructure={"grain_size": 110, "twin_fraction": 0.5})
    s = synth_2d(cfg, seed=4)
    k = find_lattice(lattice).k
    checked = 0
    for g in np.argsort(np.bincount(s.grains.ravel()))[::-1][:5]:
        mask = s.grains == g
        if mask.sum() < 3000:
            continue
        stored = s.orientation[mask]
        if np.ptp(stored) > 0:  # a grain with a sub-grain inside has two angles; test single-angle grains
            continue
        measured, _ = _fft_angle_2d(s.clean, mask, lattice)
        assert misorientation_2d(measured, stored[0], k) < 1.0, (g, measured, stored[0])
        checked += 1
    assert checked >= 2
    period = 360.0 / k
    assert s.orientation.dtype == np.float32 and s.orientation.min() >= 0 and s.orientation.max() < period


def test_grain_ids_boundary_and_five_degree_rule():
    cfg = Synth2DConfig(size=(256, 256), microstructure={"grain_size": 50, "subgrain_fraction": 0.3, "low_angle_fraction": 0.3})
    s = synth_2d(cfg, seed=11)
    g = s.grains
    assert g.dtype == np.uint32 and g.min() == 1
    assert np.array_equal(np.unique(g), np.arange(1, g.max() + 1))  # consecutive ids
    # Boundary mask == pixels with a differently labelled 4-neighbour, recomputed independently.
    expected = np.zeros(g.shape, bool)
    dv, dh = g[1:] != g[:-1], g[:, 1:] != g[:, :-1]
    expected[1:] |= dv
    expected[:-1] |= dv
    expected[:, 1:] |= dh
    expected[:, :-1] |= dh
    assert np.array_equal(s.boundary, expected)
    # Each grain id is one connected region.
    for gid in range(1, g.max() + 1):
        assert ndimage.label(g == gid)[1] == 1
    # The 5° rule, re-derived on pixels: across every grain boundary the misorientation is at least
    # the threshold, and joining 4-neighbours closer than it yields exactly one region per grain
    # (sub-grain boundaries of a few degrees exist inside grains, so the rule decided something).
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    o = s.orientation.astype(np.float64)
    index = np.arange(g.size).reshape(g.shape)
    across, inside, edges = [], [], []
    for a, b, oa, ob, ia, ib in [
        (g[1:], g[:-1], o[1:], o[:-1], index[1:], index[:-1]),
        (g[:, 1:], g[:, :-1], o[:, 1:], o[:, :-1], index[:, 1:], index[:, :-1]),
    ]:
        m = misorientation_2d(oa, ob, 4)
        across.append(m[a != b])
        inside.append(m[(a == b) & (m > 0)])
        join = m < 5.0
        edges.append(np.stack([ia[join], ib[join]]))
    across, inside, edges = np.concatenate(across), np.concatenate(inside), np.concatenate(edges, 1)
    assert across.min() >= 5.0
    assert inside.size and inside.min() < 5.0
    graph = coo_matrix((np.ones(edges.shape[1]), (edges[0], edges[1])), shape=(g.size, g.size))
    assert connected_components(graph, directed=False)[0] == g.max()
    assert ((across > 5) & (across < 15)).any()  # low-angle grain boundaries present


def test_twin_misorientation_is_coherent_sigma5():
    cfg = Synth2DConfig(size=(256, 256), microstructure={"grain_size": 90, "twin_fraction": 1.0, "subgrain_fraction": 0, "low_angle_fraction": 0})
    s = synth_2d(cfg, seed=2)
    assert s.info["n_twins"] >= 1
    g, o = s.grains, s.orientation.astype(np.float64)
    m = misorientation_2d(o[:, 1:], o[:, :-1], 4)[g[:, 1:] != g[:, :-1]]
    sigma5 = 90 - 2 * np.degrees(np.arctan(0.5))  # 36.87°: mirror across a <12> lattice row
    assert np.isclose(m, sigma5, atol=1e-3).any()


def test_determinism_per_seed():
    cfg = Synth2DConfig(size=(128, 128), imaging={"jitter": 0.3, "contrast": "random"})
    a, b, c = synth_2d(cfg, seed=7), synth_2d(cfg, seed=7), synth_2d(cfg, seed=8)
    for field in ("image", "grains", "orientation", "boundary"):
        assert np.array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.image, c.image)


def test_imaging_knobs_act():
    ids = np.ones((128, 128), dtype=np.uint32)
    ids[:, 64:] = 2
    ang = {1: 10.0, 2: 40.0}
    low = micrograph_from_grains(ids, ang, imaging=Imaging2D(dose=20), seed=0)
    high = micrograph_from_grains(ids, ang, imaging=Imaging2D(dose=2000), seed=0)
    assert abs(low.mean() - 20) < 1 and abs(high.mean() - 2000) < 50
    assert low.std() / low.mean() > high.std() / high.mean()  # relative shot noise falls with dose
    dark = micrograph_from_grains(ids, ang, imaging=Imaging2D(contrast="dark_field", dose=1000, read_noise=0), seed=0)
    bright = micrograph_from_grains(ids, ang, imaging=Imaging2D(contrast="bright_field", dose=1000, read_noise=0), seed=0)
    assert np.corrcoef(dark.ravel(), bright.ravel())[0, 1] < -0.5  # contrast inversion
    with pytest.raises(MicroSymError):
        render_lattice_2d(ids.astype(float), ang)
    with pytest.raises(MicroSymError):
        render_lattice_2d(ids, [0.0, 1.0])  # no angle for grain id 2


def _cubic_axes_match(direction, rot, tol_deg):
    cosines = np.abs(rot.T @ (direction / np.linalg.norm(direction)))
    return np.degrees(np.arccos(np.clip(cosines.max(), -1, 1))) < tol_deg


def test_3d_single_grain_fft_matches_quaternion():
    """The strongest 3D Fourier peaks of a rendered grain lie along its rotated cube axes."""
    rng = np.random.default_rng(5)
    for q in random_quaternions(3, rng):
        ids = np.ones((48, 48, 48), dtype=np.uint32)
        vol = render_lattice_3d(ids, np.stack([q, q]), period=6.0, disorder_width=0, rng=rng)
        kz, ky, kx = _spectrum_peak(vol, ids > 0, pad=2)
        k = np.array([kx, ky, kz])  # physical (x, y, z) = (last, middle, first) axis
        assert _cubic_axes_match(k, quat_to_matrix(q), 2.5)
        assert abs(np.linalg.norm(k) - 1 / 6.0) < 0.05 / 6.0


def test_synth_3d_ground_truth():
    cfg = Synth3DConfig(size=(48, 48, 48), period=5.0, microstructure={"grain_size": 40})
    s = synth_3d(cfg, seed=3)
    assert s.orientation.shape == (4, 48, 48, 48) and s.orientation.dtype == np.float32
    assert np.abs(np.linalg.norm(s.orientation, axis=0) - 1).max() < 1e-6
    g = s.grains
    expected = np.zeros(g.shape, bool)
    for ax in range(3):
        d = np.moveaxis(g, ax, 0)
        e = np.moveaxis(expected, ax, 0)
        diff = d[1:] != d[:-1]
        e[1:] |= diff
        e[:-1] |= diff
    assert np.array_equal(s.boundary, expected)
    assert np.array_equal(np.unique(g), np.arange(1, g.max() + 1))
    # The largest grain's lattice (noise-free) agrees with its stored quaternion.
    gid = np.argmax(np.bincount(g.ravel()))
    mask = g == gid
    qs = s.orientation[:, mask][:, 0]
    # The part of the grain rendered with exactly that quaternion (a grain may hold a sub-grain).
    sub = mask & np.all(s.orientation == qs[:, None, None, None], axis=0)
    qs = qs.astype(np.float64)
    kz, ky, kx = _spectrum_peak(s.clean, sub, pad=2)
    assert _cubic_axes_match(np.array([kx, ky, kz]), quat_to_matrix(qs), 3.0)
    assert s.volume.dtype == np.uint8
    t = synth_3d(cfg, seed=3)
    assert np.array_equal(t.volume, s.volume) and np.array_equal(t.orientation, s.orientation)


def _cli(args):
    """Exit status of ``micro-sym ARGS`` run in-process (typer exits through SystemExit)."""
    from micro_sym.cli import main

    try:
        return main(args)
    except SystemExit as exc:
        return exc.code


def test_cli_writes_valid_dataset(tmp_path):
    main = _cli
    from micro_sym.io.datasets import LabeledDataset

    out = tmp_path / "ds"
    assert main(["synth", "2d", "--out", str(out), "--n", "2", "--size", "96x128", "--seed", "5", "--lattice", "hexagonal"]) == 0
    ds = LabeledDataset(out)
    assert len(ds) == 2 and ds.lattice == "hexagonal" and ds.pixel_size == (0.05, 0.05)
    sample = ds["sample_001"]
    assert sample.image.shape == (96, 128) and sample.orientation.max() < 60
    meta = json.loads((out / "dataset.json").read_text())
    # The dataset records enough to regenerate any sample exactly.
    cfg = Synth2DConfig.model_validate(meta["generator"]["config"])
    again = synth_2d(cfg, seed=meta["samples"]["sample_001"]["seed"])
    assert np.array_equal(again.image, sample.image.astype(np.uint16))
    assert np.array_equal(again.grains, sample.grains)
    out3 = tmp_path / "vol"
    assert main(["synth", "3d", "--out", str(out3), "--size", "32", "--config", "configs/synth_3d.yaml"]) == 0
    ds3 = LabeledDataset(out3)
    assert ds3.lattice == "cubic" and ds3[0].orientation.shape == (4, 32, 32, 32)


@pytest.mark.parametrize(
    "args",
    [
        ["synth", "2d", "--out", "{tmp}/a", "--n", "0"],
        ["synth", "2d", "--out", "{tmp}/a", "--size", "12x"],
        ["synth", "2d", "--out", "{tmp}/a", "--size", "8"],
        ["synth", "3d", "--out", "{tmp}/a", "--size", "32x32"],
        ["synth", "2d", "--out", "{tmp}/a", "--lattice", "triangular"],
        ["synth", "2d", "--out", "{tmp}/a", "--config", "{tmp}/missing.yaml"],
        ["synth", "2d", "--out", "{tmp}/a", "--config", "{tmp}/bad.yaml"],
        ["synth", "2d", "--out", "{tmp}/full"],
        ["synth", "2d", "--n", "1"],
    ],
)
def test_cli_bad_arguments_exit_2(tmp_path, capsys, args):
    (tmp_path / "bad.yaml").write_text("imaging:\n  dose: -3\n  colour: red\n")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("keep me")
    args = [a.format(tmp=tmp_path) for a in args]
    assert _cli(args) == 2  # click's own usage errors (missing --out) exit 2 as well
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip()
    assert (tmp_path / "full" / "x.txt").exists()


def test_blockwise_power_diagram_equals_full_query():
    """The convex-cell shortcut used for speed gives exactly the brute-force power diagram."""
    from micro_sym.synth.microstructure import power_diagram, power_diagram_grid, seed_cells

    rng = np.random.default_rng(0)
    h, w = 200, 150
    rows = np.arange(h, dtype=float)[:, None]
    pos = np.stack([np.arange(w)[None, :] + 0.05 * rows, np.broadcast_to(-rows, (h, w))])  # sheared grid
    seeds, weights = seed_cells(pos.reshape(2, -1).min(1), pos.reshape(2, -1).max(1), 30, 0.5, 1, rng)
    full = power_diagram(pos.reshape(2, -1).T, seeds, weights).reshape(h, w)
    assert np.array_equal(power_diagram_grid(pos, seeds, weights, block=8), full)
    # Brute force on a few pixels: argmin of the power distance.
    idx = rng.integers(0, h * w, 200)
    p = pos.reshape(2, -1).T[idx]
    brute = np.argmin(((p[:, None] - seeds[None]) ** 2).sum(-1) - weights[None], axis=1)
    assert np.array_equal(full.ravel()[idx], brute)


def test_3d_twins_are_sigma3():
    from micro_sym.orientation import misorientation_cubic

    cfg = Synth3DConfig(size=(40, 40, 40), period=4.0, microstructure={"grain_size": 30, "twin_fraction": 1.0})
    s = synth_3d(cfg, seed=1)
    assert s.info["n_twins"] >= 1
    q = np.moveaxis(s.orientation, 0, -1).astype(np.float64)
    diff = s.grains[:, :, 1:] != s.grains[:, :, :-1]
    m = misorientation_cubic(q[:, :, 1:][diff], q[:, :, :-1][diff])
    assert np.isclose(m, 60.0, atol=0.01).any()
    assert m.min() >= 5.0


def test_figure_written(tmp_path):
    from micro_sym.synth.figure import save_figure_2d

    path = save_figure_2d(synth_2d(Synth2DConfig(size=(96, 96)), seed=0), tmp_path / "f.png")
    assert path.stat().st_size > 10_000

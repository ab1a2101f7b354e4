"""Atomistic 3D volumes (micro_sym.synth.atoms3d): the truth is checked against the atoms and the pixels.

Domain orientations are checked against the atoms' own bond vectors, the lattice period and the
frame convention against the rendered volume's Fourier peaks (a conjugated quaternion would put them
elsewhere), and the vacuum against the distance to the nearest atom.
"""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
from scipy.spatial import cKDTree

from micro_sym.errors import MicroSymError
from micro_sym.orientation import (
    axis_angle_to_quat,
    misorientation_cubic,
    quat_conjugate,
    quat_multiply,
    quat_to_matrix,
)
from micro_sym.synth import (
    Atoms3DConfig,
    build_particle,
    build_polycrystal,
    render_structure,
    synth_atoms3d,
)
from micro_sym.synth.atoms3d import (
    COVERING_RADIUS,
    NEAREST_NEIGHBOUR,
    load_atoms3d_config,
)

AU = 4.08  # ASE's lattice constant for Au, Å
QUIET = {"noise": 0.0, "background": 0.0, "background_variation": 0.0, "jitter": 0.0, "tilt_range": 90.0}


def _particle_cfg(shape, size=40, diameter=16.0, imaging=None, **particle):
    return Atoms3DConfig(kind="particle", size=(size,) * 3, voxel_size=0.5, dtype="float32",
                         particle={"shape": shape, "diameter": diameter, **particle}, imaging=imaging or {})


@functools.cache
def _particle(shape, seed=0, substrate=False, diameter=16.0):
    """(config, structure, sample) of a small particle, built once per test session."""
    cfg = _particle_cfg(shape, diameter=diameter, substrate=substrate)
    rng = np.random.default_rng(seed)
    st = build_particle(cfg, rng)
    return cfg, st, render_structure(st, cfg, rng)


@functools.cache
def _twinned_polycrystal():
    cfg = Atoms3DConfig(size=(40, 40, 40), voxel_size=0.8, dtype="float32",
                        polycrystal={"grain_size": 20.0, "twin_fraction": 1.0, "low_angle_fraction": 0.3, "twin_width": (0.3, 0.5)})
    rng = np.random.default_rng(4)
    st = build_polycrystal(cfg, rng)
    return cfg, st, render_structure(st, cfg, rng)


def _bond_error(st, domain_id, a=AU):
    """Largest distance (Å) from a nearest-neighbour bond inside a domain to the closest fcc <110> bond
    of the domain's stored orientation: small only if the quaternion describes the atoms."""
    pos = st.positions[st.domain == domain_id]
    pairs = cKDTree(pos).query_pairs(1.15 * a / np.sqrt(2), output_type="ndarray")
    bonds = pos[pairs[:, 1]] - pos[pairs[:, 0]]
    ideal = np.array([[1, 1, 0], [1, -1, 0], [1, 0, 1], [1, 0, -1], [0, 1, 1], [0, 1, -1]], float) * a / 2
    ideal = np.concatenate([ideal, -ideal]) @ quat_to_matrix(st.quaternions[domain_id]).T
    return float(np.linalg.norm(bonds[:, None] - ideal[None], axis=2).min(1).max())


# --------------------------------------------------------------------------------------- truth


def test_every_domain_carries_its_quaternion_and_vacuum_none():
    cfg, st, s = _twinned_polycrystal()
    present = np.unique(s.cells)
    assert len(present[present > 0]) >= 5
    ori = np.moveaxis(s.orientation, 0, -1)
    for d in present[present > 0]:
        assert np.array_equal(ori[s.cells == d], np.broadcast_to(st.quaternions[d].astype(np.float32), ori[s.cells == d].shape))
        if np.sum(st.domain == d) >= 20:
            assert _bond_error(st, d) < 1e-3  # the stored quaternion is the atoms' lattice (undistorted grains)
    assert np.isnan(ori[s.cells == 0]).all()
    assert ((s.grains == 0) == (s.cells == 0)).all()
    # Every domain that has atoms inside the grid shows up in the truth.
    inside = np.all((st.positions >= 0) & (st.positions <= (np.array(cfg.size) - 1) * cfg.voxel_size), axis=1)
    assert set(np.unique(st.domain[inside])) <= set(present)


def test_twin_slab_is_sigma3_about_111_and_coherent():
    _, st, s = _twinned_polycrystal()
    twins = [r for r in s.info["domains"] if r["relation"] == "twin" and r["n_atoms"] > 30]
    assert twins, "expected twin slabs with twin_fraction 1"
    nn = NEAREST_NEIGHBOUR["fcc"] * AU
    for r in twins:
        qp, qt = st.quaternions[r["parent"]], st.quaternions[r["id"]]
        assert misorientation_cubic(qp, qt) == pytest.approx(60.0, abs=1e-3)
        # q_p* q_t is 60° about a crystal <111>: all three axis components of equal magnitude.
        d = quat_multiply(quat_conjugate(qp), qt)
        assert 2 * np.degrees(np.arccos(min(1.0, abs(d[0])))) == pytest.approx(60.0, abs=1e-3)
        assert np.allclose(np.abs(d[1:]), np.abs(d[1:]).mean(), atol=1e-5)
        assert r["sigma3"] is True
        # Coherent {111} faces: no twin atom is closer to a parent atom than the nearest-neighbour distance.
        dist, _ = cKDTree(st.positions[st.domain == r["parent"]]).query(st.positions[st.domain == r["id"]])
        assert dist.min() > 0.99 * nn
    low = [r for r in s.info["domains"] if r["relation"] == "low_angle"]
    assert all(6.0 - 1e-3 <= r["misorientation_to_parent"] <= 14.0 + 1e-3 and not r["sigma3"] for r in low)


def test_no_two_atoms_overlap_at_boundaries():
    cfg, st, _ = _twinned_polycrystal()
    dist, _ = cKDTree(st.positions).query(st.positions, 2)
    assert dist[:, 1].min() >= cfg.min_distance * NEAREST_NEIGHBOUR["fcc"] * AU - 1e-9


def test_single_crystal_particle_is_one_grain_in_vacuum():
    _, st, s = _particle("cuboctahedron")
    assert s.info["n_cells"] == 1 and s.grains.max() == 1
    assert (np.unique(s.grains) == [0, 1]).all()
    assert s.info["vacuum_fraction"] > 0.5
    assert _bond_error(st, 1) < 1e-3


def test_vacuum_voxels_are_unassigned():
    """Voxels farther from every atom than the lattice's largest hole are vacuum; amorphous atoms give no grain."""
    cfg, st, s = _particle("cuboctahedron", substrate=True)
    zz, yy, xx = np.indices(cfg.size)
    centres = np.stack([xx, yy, zz], -1).reshape(-1, 3) * cfg.voxel_size
    crystal = st.domain > 0
    to_crystal = cKDTree(st.positions[crystal]).query(centres)[0].reshape(cfg.size)
    to_amorphous = cKDTree(st.positions[~crystal]).query(centres)[0].reshape(cfg.size)
    # The truth reaches 1.1 x the largest hole (fcc: a / 2) from the jittered atoms; 0.5 Å covers the jitter.
    outside = to_crystal > 1.1 * COVERING_RADIUS["fcc"] * AU + 0.5
    assert (outside & (to_amorphous < 1.0)).sum() > 100  # the support film is among them
    assert (s.cells[outside] == 0).all() and (s.grains[outside] == 0).all()
    assert np.isnan(s.orientation[:, outside]).all() and s.boundary[outside].all()
    assert (s.cells[to_crystal < 0.4 * COVERING_RADIUS["fcc"] * AU] == 1).all()


def test_decahedron_has_five_domains_sixty_degrees_apart():
    _, st, s = _particle("decahedron")
    ids = np.unique(s.cells[s.cells > 0])
    assert ids.tolist() == [1, 2, 3, 4, 5]
    q = st.quaternions
    for j in range(1, 6):
        k = j % 5 + 1  # the adjacent domain around the five-fold axis
        assert misorientation_cubic(q[j], q[k]) == pytest.approx(60.0, abs=0.5)  # 72° about <110>: Σ3 + 1.5°
        assert misorientation_cubic(q[j], q[(j + 1) % 5 + 1]) > 10  # non-adjacent domains are not one grain
        assert _bond_error(st, j) < 0.15  # the five-fold closure strains each domain by ~2 %
    assert s.info["n_grains"] == 5
    assert all(r["sigma3"] for r in s.info["domains"][1:])


def test_icosahedron_has_twenty_domains():
    _, st, s = _particle("icosahedron", diameter=24.0)
    assert len(np.unique(s.cells[s.cells > 0])) == 20
    for r in s.info["domains"][1:]:
        assert r["misorientation_to_parent"] == pytest.approx(60.0, abs=1.0) and r["sigma3"]
    populated = [d for d in range(1, 21) if np.sum(st.domain == d) >= 10]
    assert len(populated) >= 10
    assert max(_bond_error(st, d) for d in populated) < 0.3  # radially compressed tetrahedra


# --------------------------------------------------------------------------------------- imaging


def _peaks(vol, n_peaks, k_min):
    """Signed frequencies (cycles/voxel, physical (kx, ky, kz)) of the ``n_peaks`` strongest local
    maxima of the power spectrum above ``k_min``, each refined by the power-weighted 3³ centroid."""
    x = vol - vol.mean()
    p = np.abs(np.fft.fftn(x)) ** 2
    shape = np.array(p.shape)
    freqs = np.meshgrid(*[np.fft.fftfreq(n) for n in p.shape], indexing="ij")
    p[np.sqrt(sum(f**2 for f in freqs)) < k_min] = 0
    offsets = np.stack(np.meshgrid(*[np.arange(-1, 2)] * 3, indexing="ij"), -1).reshape(-1, 3)
    out = []
    for flat in np.argsort(p, axis=None)[::-1]:
        idx = np.array(np.unravel_index(flat, p.shape))
        wts = p[tuple(np.mod(idx + offsets, shape).T)]
        if p[tuple(idx)] < wts.max():
            continue  # not a local maximum
        centre = idx + (offsets * wts[:, None]).sum(0) / wts.sum()
        k = (np.mod(centre + shape / 2, shape) - shape / 2) / shape
        if any(np.linalg.norm(k - o[::-1]) < 2 / shape[0] or np.linalg.norm(k + o[::-1]) < 2 / shape[0] for o in out):
            continue  # the same peak (or its Friedel mate) again
        out.append(k[::-1])  # (kz, ky, kx) -> (kx, ky, kz)
        if len(out) == n_peaks:
            return np.array(out)
    return np.array(out)


def test_lattice_period_from_power_spectrum():
    """The strongest reflection of an Au particle (missing wedge, noise, uint8) is {111} or {200} at a / voxel."""
    cfg = Atoms3DConfig(kind="particle", size=(64, 64, 64), voxel_size=0.5, particle={"shape": "truncated_octahedron", "diameter": 28})
    s = synth_atoms3d(cfg, seed=2)
    assert s.volume.dtype == np.uint8
    k = np.linalg.norm(_peaks(s.volume.astype(np.float64), 1, k_min=0.1)[0])
    expected = {"111": np.sqrt(3) * cfg.voxel_size / AU, "200": 2 * cfg.voxel_size / AU}
    family = min(expected, key=lambda f: abs(k / expected[f] - 1))
    assert k == pytest.approx(expected[family], rel=0.03)


@pytest.mark.parametrize("lattice,element", [("fcc", "Cu"), ("bcc", "Mo"), ("diamond", "Si"), ("sc", "Po")])
def test_first_ring_voxels_puts_every_lattice_at_one_measured_period(lattice, element):
    """``first_ring_voxels`` picks each sample's voxel size so that the measured first ring of any
    cubic lattice lies that many voxels apart (the period a model is trained and run at)."""
    from micro_sym.classical import measure_lattice_3d

    cfg = Atoms3DConfig(lattice=lattice, element=element, size=(64, 64, 64), first_ring_voxels=5.0,
                        polycrystal={"grain_size": 200.0, "twin_fraction": 0.0, "low_angle_fraction": 0.0})
    s = synth_atoms3d(cfg, seed=1)
    assert s.info["voxel_size_angstrom"] != cfg.voxel_size and s.info["pixel_size"] == s.info["voxel_size_angstrom"] / 10
    found = measure_lattice_3d(s.volume.astype(np.float32))
    assert found["found"] and found["period"] == pytest.approx(5.0, rel=0.03)


def test_orientation_convention_pins_the_frame():
    """Peaks of a particle rotated by q sit at R(q) G for the crystal's {111} and {200} reciprocal
    vectors G, not at R(q)^T G."""
    q = axis_angle_to_quat(np.array([1.0, 2.0, 3.0]), 35.0)
    cfg = _particle_cfg("truncated_octahedron", size=64, diameter=28.0, imaging=QUIET, orientation=tuple(q))
    s = synth_atoms3d(cfg, seed=0)
    g = np.array([[1, 1, 1], [1, 1, -1], [1, -1, 1], [-1, 1, 1], [2, 0, 0], [0, 2, 0], [0, 0, 2]], float) * cfg.voxel_size / AU
    g = np.concatenate([g, -g])
    found = _peaks(s.volume, 6, k_min=0.1)
    assert len(found) == 6

    def worst_miss(rot):
        predicted = g @ rot.T
        return max(np.linalg.norm(predicted - f, axis=1).min() for f in found)

    bin_width = 1 / 64
    assert worst_miss(quat_to_matrix(q)) < 0.5 * bin_width
    assert worst_miss(quat_to_matrix(q).T) > 3 * bin_width  # the conjugate convention fails
    assert np.allclose(s.info["domains"][0]["quaternion"], q, atol=1e-6)


def test_heavier_atoms_are_brighter_and_substrate_faint():
    cfg, st, s = _particle("cuboctahedron", substrate=True)
    vox = np.clip(np.rint(st.positions[:, ::-1] / cfg.voxel_size).astype(int), 0, np.array(cfg.size) - 1)
    at_atom = s.clean[tuple(vox.T)]
    au, carbon = at_atom[st.domain > 0].mean(), at_atom[st.domain == 0].mean()
    assert au > 0.8 and carbon < 0.15 * au  # (6 / 79) ** 1.5 = 0.02 plus overlapping tails


def test_rendering_is_deterministic_for_a_seed():
    cfg = Atoms3DConfig(size=(24, 24, 24), voxel_size=0.8, polycrystal={"grain_size": 12.0})
    a, b, c = synth_atoms3d(cfg, seed=[3, 1]), synth_atoms3d(cfg, seed=[3, 1]), synth_atoms3d(cfg, seed=[3, 2])
    assert np.array_equal(a.volume, b.volume) and np.array_equal(a.cells, b.cells)
    assert np.array_equal(a.orientation, b.orientation, equal_nan=True)
    assert not np.array_equal(a.volume, c.volume)


# --------------------------------------------------------------------------------------- config, dataset, CLI


def test_config_rejects_what_ase_cannot_build():
    with pytest.raises(ValueError, match="give lattice_constant"):
        Atoms3DConfig(lattice="bcc", element="Au")
    with pytest.raises(ValueError, match="particles"):
        Atoms3DConfig(kind="particle", lattice="bcc", element="Fe")
    with pytest.raises(ValueError, match="same for every sample"):
        Atoms3DConfig(variants=[{"voxel_size": 1.0}])
    with pytest.raises(ValueError, match="same for every sample"):
        Atoms3DConfig(variants=[{"first_ring_voxels": 5.0}])
    assert Atoms3DConfig(lattice="bcc", element="Au", lattice_constant=3.0).a == 3.0


def test_heldout_config_shares_no_lattice_or_shape_with_training():
    def materials(name):
        cfg = load_atoms3d_config(name)
        out = set()
        for v in (cfg.variant(i) for i in range(len(cfg.variants))):
            out.add(v.lattice if v.kind == "polycrystal" else v.particle.shape)
        return out

    train, heldout = materials("synth-atoms3d-train"), materials("synth-atoms3d-heldout")
    assert heldout and not (train & heldout)
    assert {"bcc", "diamond", "icosahedron"} <= heldout


def test_cli_makes_a_resumable_dataset(tmp_path):
    from micro_sym.cli import main
    from micro_sym.io.datasets import LabeledDataset

    def cli(*args):
        try:
            return main(["synth", "atoms3d", "--out", str(tmp_path / "ds"), "--size", "24", "--voxel-size", "0.8", *args])
        except SystemExit as exc:
            return exc.code

    assert cli("--n", "1", "--seed", "7", "--kind", "particle") == 0
    first = (tmp_path / "ds" / "images" / "sample_000.tif").stat().st_mtime_ns
    assert cli("--n", "2", "--seed", "7", "--kind", "particle") == 2  # not empty, no --resume
    assert cli("--n", "2", "--seed", "7", "--kind", "particle", "--resume") == 0
    assert (tmp_path / "ds" / "images" / "sample_000.tif").stat().st_mtime_ns == first  # kept, not redone
    assert cli("--n", "2", "--seed", "8", "--kind", "particle", "--resume") == 2  # another seed: refused
    ds = LabeledDataset(tmp_path / "ds")
    assert len(ds) == 2 and ds.lattice == "cubic" and ds.pixel_size == (0.08, 0.08, 0.08)
    sample = ds["sample_001"]
    assert np.isnan(sample.orientation[:, sample.grains == 0]).all()
    meta = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    assert meta["generator"]["name"] == "micro_sym.synth.synth_atoms3d"
    again = synth_atoms3d(Atoms3DConfig.model_validate(meta["generator"]["config"]), seed=meta["samples"]["sample_001"]["seed"])
    assert np.array_equal(again.grains, sample.grains)


def test_dataset_of_samples_at_their_own_voxel_size(tmp_path):
    """With ``first_ring_voxels`` each image file carries its own voxel size and the dataset claims none."""
    import tifffile

    from micro_sym.io.datasets import LabeledDataset
    from micro_sym.synth.dataset import generate_dataset

    cfg = Atoms3DConfig(size=(24, 24, 24), first_ring_voxels=4.0, variants=[{"element": "Au"}, {"lattice": "bcc", "element": "Fe"}])
    generate_dataset(tmp_path / "ds", cfg, n=4, seed=3)
    meta = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    sizes = {name: info["pixel_size"] for name, info in meta["samples"].items()}
    assert "pixel_size" not in meta and len(set(sizes.values())) == 2
    assert LabeledDataset(tmp_path / "ds").pixel_size is None
    for name, size in sizes.items():
        with tifffile.TiffFile(tmp_path / "ds" / "images" / f"{name}.tif") as tif:
            assert tif.imagej_metadata["spacing"] == pytest.approx(size)


def test_empty_volume_is_a_user_error():
    cfg = Atoms3DConfig(kind="particle", size=(16, 16, 16), voxel_size=0.5, particle={"diameter": 10})
    assert synth_atoms3d(cfg, seed=0).info["n_atoms"] > 0
    with pytest.raises(MicroSymError):
        from micro_sym.synth.atoms3d import AtomStructure

        render_structure(AtomStructure(np.zeros((0, 3)), np.zeros(0, int), np.zeros(0, np.int32), np.full((1, 4), np.nan)), cfg,
                         np.random.default_rng(0))


def test_imaging_ranges_draw_each_volume_inside_the_intervals_and_never_in_the_gap():
    gaps = {"atom_sigma": [[0.30, 0.42], [0.48, 0.60]], "noise": [[0.02, 0.07], [0.09, 0.15]], "tilt_range": [[63.0, 63.0]]}
    cfg = Atoms3DConfig(imaging_ranges=gaps)
    drawn = [cfg.with_drawn_imaging(np.random.default_rng(s)).imaging for s in range(200)]
    for name, intervals in gaps.items():
        values = np.array([getattr(im, name) for im in drawn])
        inside = np.zeros(len(values), bool)
        for lo, hi in intervals:
            inside |= (values >= lo) & (values <= hi)
        assert inside.all(), name
    sigma = np.array([im.atom_sigma for im in drawn])
    assert (sigma < 0.42).any() and (sigma > 0.48).any()  # both intervals are used
    assert {im.jitter for im in drawn} == {cfg.imaging.jitter}  # a field without a range keeps its value
    # Without ranges nothing is drawn, so the datasets made before ranges existed come out the same.
    rng = np.random.default_rng(0)
    assert Atoms3DConfig().with_drawn_imaging(rng) == Atoms3DConfig() and rng.random() == np.random.default_rng(0).random()


def test_imaging_ranges_are_recorded_and_reproducible():
    cfg = Atoms3DConfig(kind="particle", size=(24, 24, 24), voxel_size=0.8, particle={"diameter": 12},
                        imaging_ranges={"atom_sigma": [[0.3, 0.6]], "elongation": [[1.0, 2.0]]})
    a, b, c = synth_atoms3d(cfg, seed=5), synth_atoms3d(cfg, seed=5), synth_atoms3d(cfg, seed=6)
    assert a.info["imaging"] == b.info["imaging"] != c.info["imaging"]
    assert np.array_equal(a.volume, b.volume)
    assert 0.3 <= a.info["imaging"]["atom_sigma"] <= 0.6


@pytest.mark.parametrize("ranges, message", [
    ({"sigma": [[0.3, 0.4]]}, "not an imaging field"),
    ({"atom_sigma": [[0.5, 0.4]]}, "lo <= hi"),
    ({"atom_sigma": []}, "lo <= hi"),
    ({"tilt_range": [[60.0, 120.0]]}, "imaging_ranges.tilt_range: 120.0"),
])
def test_imaging_ranges_reject_what_cannot_be_drawn(ranges, message):
    with pytest.raises(ValueError, match=message):
        Atoms3DConfig(imaging_ranges=ranges)
    with pytest.raises(ValueError, match="same for every sample"):
        Atoms3DConfig(variants=[{"imaging_ranges": {"noise": [[0.0, 0.1]]}}])


def test_imaging_range_training_set_leaves_the_heldout_imaging_settings_in_its_gaps_and_beyond():
    train = load_atoms3d_config("synth-atoms3d-train-range")
    heldout = load_atoms3d_config("synth-atoms3d-heldout-imaging").imaging
    assert set(train.imaging_ranges) == {"atom_sigma", "elongation", "jitter", "tilt_range", "noise"}
    for name, intervals in train.imaging_ranges.items():
        value = getattr(heldout, name)
        assert not any(lo <= value <= hi for lo, hi in intervals), name
        assert min(lo for lo, _ in intervals) < value < max(hi for _, hi in intervals), name  # spanned, not beyond
    far = load_atoms3d_config("synth-atoms3d-heldout-far").imaging  # beyond every interval, on the harder side
    assert far.atom_sigma > 0.60 and far.elongation > 2.0 and far.jitter > 0.12 and far.noise > 0.15 and far.tilt_range < 50
    for name, intervals in train.imaging_ranges.items():
        assert not any(lo <= getattr(far, name) <= hi for lo, hi in intervals), name

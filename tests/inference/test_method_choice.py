"""``--method auto``: fringe SNR, the per-input choice between classical and network, its record and resume."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tifffile

from micro_sym.classical import fringe_snr
from micro_sym.errors import MicroSymError
from micro_sym.synth import Imaging2D, Synth2DConfig, micrograph_from_grains, synth_2d

from _helpers import read_output


@pytest.fixture(scope="module")
def grains_and_angles():
    s = synth_2d(Synth2DConfig(size=(256, 256)), seed=21)
    angles = {int(g): float(np.median(s.orientation[s.grains == g])) for g in np.unique(s.grains)}
    n = max(angles) + 1
    return s.grains, np.array([angles.get(g, 0.0) for g in range(n)])


def _image(grains_and_angles, dose, seed=0, psf=1.0):
    ids, angles = grains_and_angles
    return micrograph_from_grains(ids.astype(np.uint32), angles, imaging=Imaging2D(dose=float(dose), psf_sigma=psf),
                                  seed=seed, lattice="square", period=8.0)


def test_fringe_snr_follows_dose_and_blur_not_intensity_scale(grains_and_angles):
    """Same microstructure: SNR rises ~3 dB per doubling of dose, falls with blur, ignores affine intensity maps."""
    snr = {d: fringe_snr(_image(grains_and_angles, d))[0] for d in (2, 4, 8, 100)}
    assert snr[2] < snr[4] < snr[8] < snr[100]
    for lo, hi in ((2, 4), (4, 8)):
        assert 1.5 < snr[hi] - snr[lo] < 4.5, snr  # white shot noise: 3 dB per doubling
    img = _image(grains_and_angles, 8)
    base, period = fringe_snr(img)
    assert abs(period - 8.0) < 0.1
    for other in (3.0 * img + 50.0, img.max() - img):
        assert abs(fringe_snr(other)[0] - base) < 1e-6
    assert fringe_snr(_image(grains_and_angles, 8, psf=2.5))[0] < base - 3


def test_fringe_snr_noise_only_is_a_one_line_error():
    rng = np.random.default_rng(0)
    with pytest.raises(MicroSymError, match="no lattice fringes"):
        fringe_snr(rng.poisson(5.0, (256, 256)).astype(np.float32))


def _manifest(out, name):
    return json.loads((out / f".{name}.run" / "manifest.json").read_text())


@pytest.fixture(scope="module")
def low_high(tmp_path_factory, grains_and_angles):
    """A 2-count/px and a 100-count/px TIFF of one microstructure."""
    d = tmp_path_factory.mktemp("auto")
    for name, dose in (("low", 2), ("high", 100)):
        tifffile.imwrite(d / f"{name}.tif", _image(grains_and_angles, dose, seed=5).astype(np.float32))
    return d / "low.tif", d / "high.tif"


def test_auto_runs_classical_at_low_dose_and_the_network_at_high_dose(tmp_path, low_high):
    """Each input gets exactly what the chosen method alone produces; the manifest says why."""
    from micro_sym.inference import segment
    from micro_sym.inference.method_choice import AUTO_MODEL, CLASSICAL_BELOW_DB

    kw = dict(block=128, chunk=128, workers=1)
    res = segment(list(low_high), tmp_path / "auto", **kw)  # no model, no method: auto
    assert [r.status for r in res] == ["complete", "complete"], [r.error for r in res]
    low, high = (_manifest(tmp_path / "auto", n)["method"] for n in ("low", "high"))
    assert low["name"] == "classical" and low["auto"]["chose"] == "classical"
    assert low["auto"]["fringe_snr_db"] < CLASSICAL_BELOW_DB <= high["auto"]["fringe_snr_db"]
    assert high["name"] == "network" and high["auto"]["chose"] == "network"
    assert _manifest(tmp_path / "auto", "high")["model"]["name"] == AUTO_MODEL
    (c,) = segment([low_high[0]], tmp_path / "classical", method="classical", **kw)
    (n,) = segment([low_high[1]], tmp_path / "network", model=AUTO_MODEL, **kw)
    assert c.status == n.status == "complete"
    for name, ref in (("low", tmp_path / "classical"), ("high", tmp_path / "network")):
        a, b = read_output(tmp_path / "auto", name), read_output(ref, name)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_auto_resume_keeps_the_recorded_choice(tmp_path, low_high, monkeypatch):
    """An interrupted auto run resumes with its recorded choice (no second measurement), identically."""
    from micro_sym.inference import segment
    from micro_sym.inference.method_choice import AutoMethod

    kw = dict(block=64, chunk=64, workers=1)

    class Stop(Exception):
        pass

    def stop_at_third(stage, block_id, count=[0]):
        count[0] += 1
        if count[0] == 3:
            raise Stop

    with pytest.raises(Stop):
        segment([low_high[0]], tmp_path / "out", on_block=stop_at_third, **kw)

    def no_measure(*a, **k):
        raise AssertionError("the choice must come from the manifest")

    with monkeypatch.context() as m:
        m.setattr(AutoMethod, "_measure", staticmethod(no_measure))
        (res,) = segment([low_high[0]], tmp_path / "out", **kw)
    assert res.status == "complete" and 0 < res.blocks_run < res.n_blocks, res.error
    (clean,) = segment([low_high[0]], tmp_path / "clean", **kw)
    a, b = read_output(tmp_path / "out", "low"), read_output(tmp_path / "clean", "low")
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert _manifest(tmp_path / "out", "low")["method"]["auto"]["chose"] == "classical"


def test_auto_3d_input_runs_the_network():
    from types import SimpleNamespace

    from micro_sym.inference.method_choice import AutoMethod

    net = SimpleNamespace(ndim=3, k=4)
    chosen, record = AutoMethod(net).choose(SimpleNamespace(ndim=3, path="vol.zarr", data=None))
    assert chosen is net and record["chose"] == "network" and record["fringe_snr_db"] is None


def test_cli_auto_reports_the_choice_and_fails_cleanly_without_lattice(tmp_path, low_high):
    import contextlib
    import io

    from typer.testing import CliRunner

    from micro_sym.cli import app, main

    r = CliRunner().invoke(app, ["segment", str(low_high[0]), "--out", str(tmp_path / "o"), "--dry-run"],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "auto: classical (fringe SNR" in r.output and "period" in r.output
    noise = tmp_path / "noise.tif"
    tifffile.imwrite(noise, np.random.default_rng(1).poisson(5.0, (128, 128)).astype(np.uint16))
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = main(["segment", str(noise), "--out", str(tmp_path / "o2")])
        except SystemExit as e:
            code = e.code
    lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("micro-sym: error:") and "no lattice fringes" in lines[0] and "--method network" in lines[0]


def _lattice_micrograph(tmp_path_factory, lattice: str, name: str):
    """A 256² micrograph of ``lattice`` (dose 100, period 10 px) written as ``NAME.tif``, and its truth."""
    s = synth_2d(Synth2DConfig.model_validate({"size": (256, 256), "lattice": lattice, "period": 10.0,
                                               "imaging": {"dose": 100.0}}), seed=31)
    path = tmp_path_factory.mktemp(name) / f"{name}.tif"
    tifffile.imwrite(path, s.image.astype(np.float32))
    return path, s


@pytest.fixture(scope="module")
def hexagonal_image(tmp_path_factory):
    """A hexagonal-lattice micrograph (lattice constant 10 px) and its truth."""
    return _lattice_micrograph(tmp_path_factory, "hexagonal", "hex")


def test_auto_runs_the_hexagonal_network_on_a_hexagonal_lattice(tmp_path, hexagonal_image):
    """No model: a hexagonal lattice goes to atoms-2d-hex (angles mod 60) and it finds the grains; with
    --model robust-2d (square only) auto gives the same image to the classical filter bank."""
    from micro_sym.inference import segment
    from micro_sym.inference.method_choice import AUTO_MODELS_BY_LATTICE
    from micro_sym.metrics import evaluate_sample

    path, truth = hexagonal_image
    kw = dict(block=128, chunk=128, workers=1)
    (res,) = segment([path], tmp_path / "auto", **kw)
    assert res.status == "complete", res.error
    manifest = _manifest(tmp_path / "auto", "hex")
    assert manifest["method"]["auto"]["chose"] == "network" and manifest["method"]["auto"]["lattice"] == "hexagonal"
    assert manifest["method"]["auto"]["network"] == manifest["model"]["name"] == AUTO_MODELS_BY_LATTICE["hexagonal"]
    out = read_output(tmp_path / "auto", "hex")
    assert float(np.nanmax(out["orientation"])) < 60.0
    ev = evaluate_sample(out, truth.grains, truth.orientation, 6)
    # atoms-2d-hex on this image: boundary F1 0.91, grain F1 0.58, 0.45° (the filter bank: 0.53, 0.62, 0.27°)
    scores = (ev["boundary_f1"], ev["grain_f1"], ev["orientation_median_deg"])
    assert scores[0] > 0.85 and scores[1] > 0.5 and scores[2] < 1.0, scores
    from micro_sym.cli.segment import _method_line

    assert "fringes-2d" not in _method_line(manifest["method"])
    (res,) = segment([path], tmp_path / "square", model="robust-2d", method="auto", **kw)
    assert res.status == "complete" and _manifest(tmp_path / "square", "hex")["method"]["name"] == "classical"


def test_a_process_pool_reads_the_second_network_from_a_file(tmp_path, hexagonal_image):
    """With --scheduler processes, auto's hexagonal network (not the one the pool was started with) goes
    to the tasks as a file reference, read once per process, and the outputs are the threads run's."""
    from micro_sym.inference import segment
    from micro_sym.inference.network import NetworkFile, as_network, cached_network
    from micro_sym.inference.scheduler import ProcessRunner
    from micro_sym.io.images import output_array
    from micro_sym.models import load_model

    hexagonal = as_network(load_model("atoms-2d-hex", export=True), export=False)
    runner = ProcessRunner(1)
    runner.net = object()  # the bound network: any other one is "another"
    ref = runner.net_ref(hexagonal)
    assert isinstance(ref, NetworkFile) and runner.net_ref(hexagonal) is ref
    assert cached_network(ref, hexagonal.sha256).sha256 == hexagonal.sha256
    runner.close()
    assert not os.path.exists(ref.path)

    path, _ = hexagonal_image
    kw = dict(block=128, chunk=128, workers=2)
    (threads,) = segment([path], tmp_path / "threads", **kw)
    (processes,) = segment([path], tmp_path / "processes", scheduler="processes", **kw)
    assert threads.status == processes.status == "complete", processes.error
    assert _manifest(tmp_path / "processes", "hex")["model"]["name"] == "atoms-2d-hex"
    for name in ("boundary", "orientation", "grains"):
        a, b = (np.asarray(output_array(r.zarr, name)[...]) for r in (threads, processes))
        assert np.array_equal(a, b, equal_nan=True), name


@pytest.fixture(scope="module")
def fringes_image(tmp_path_factory):
    """One set of lattice fringes per grain (fringe spacing 10 px) and its truth (mod 180°)."""
    return _lattice_micrograph(tmp_path_factory, "fringes", "fringes")


def test_the_fringes_network_maps_fringes_modulo_180_degrees(tmp_path, fringes_image):
    """--model fringes-2d: the plane normals modulo 180° (grains whose fringes cross at right angles stay
    apart); with --method auto it keeps the fringes and gives a 2D lattice to the filter bank. robust-2d
    maps fringes on its square lattice (angles mod 90°); auto without a model fuses the two."""
    from micro_sym.inference import segment
    from micro_sym.metrics import evaluate_sample

    path, truth = fringes_image
    kw = dict(block=128, chunk=128, workers=1)
    (res,) = segment([path], tmp_path / "fringes", model="fringes-2d", **kw)
    assert res.status == "complete", res.error
    manifest = _manifest(tmp_path / "fringes", "fringes")
    assert manifest["model"]["name"] == "fringes-2d" and manifest["method"]["scale"]["lattice"] == "fringes"
    assert manifest["method"]["grain_lattice"]["k"] == 2
    out = read_output(tmp_path / "fringes", "fringes")
    assert 90.0 < float(np.nanmax(out["orientation"])) < 180.0
    ev = evaluate_sample(out, truth.grains, truth.orientation, 2)
    # On this image fringes-2d: boundary F1 0.80, grain F1 0.81, 1.00°; robust-2d: 0.52, 0.35, 1.88°
    # (mod 90°); the filter bank with --lattice fringes: 0.67, 0.58, 0.27°.
    scores = (ev["boundary_f1"], ev["grain_f1"], ev["orientation_median_deg"])
    assert scores[0] > 0.75 and scores[1] > 0.7 and scores[2] < 1.5, scores
    (res,) = segment([path], tmp_path / "auto", model="fringes-2d", method="auto", **kw)
    assert res.status == "complete" and _manifest(tmp_path / "auto", "fringes")["method"]["auto"]["chose"] == "network"
    (res,) = segment([path], tmp_path / "square", model="robust-2d", **kw)
    assert res.status == "complete", res.error
    square = read_output(tmp_path / "square", "fringes")
    assert float(np.nanmax(square["orientation"])) < 90.0
    assert evaluate_sample(square, truth.grains, truth.orientation, 4)["grain_f1"] < scores[1] - 0.2
    # auto without a model runs both networks and keeps fringes-2d's grains (tests/inference/test_fusion.py).
    (res,) = segment([path], tmp_path / "both", **kw)
    assert res.status == "complete" and _manifest(tmp_path / "both", "fringes")["method"]["name"] == "fused"
    both = read_output(tmp_path / "both", "fringes")
    assert evaluate_sample(both, truth.grains, None, 2)["grain_f1"] >= scores[1], scores
    (res,) = segment([path], tmp_path / "classical", method="classical", lattice="fringes", **kw)
    assert res.status == "complete", res.error
    assert 90.0 < float(np.nanmax(read_output(tmp_path / "classical", "fringes")["orientation"])) < 180.0


def test_the_fringes_network_refuses_a_lattice(tmp_path, hexagonal_image):
    """fringes-2d maps one set of planes: on a measured 2D lattice its k = 2 field is zero by symmetry,
    so it refuses the image with one line naming what maps it; under --method auto the filter bank
    maps that image instead."""
    from micro_sym.inference import segment

    path, _ = hexagonal_image
    (res,) = segment([path], tmp_path / "refused", model="fringes-2d", block=128, chunk=128, workers=1)
    assert res.status == "failed" and "measures hexagonal" in res.error and "--model atoms-2d-hex" in res.error
    (res,) = segment([path], tmp_path / "auto", model="fringes-2d", method="auto", block=128, chunk=128, workers=1)
    assert res.status == "complete" and _manifest(tmp_path / "auto", "hex")["method"]["name"] == "classical"


def test_auto_loads_another_lattice_s_network_only_when_an_input_needs_it():
    from types import SimpleNamespace

    from micro_sym.inference.method_choice import AutoMethod

    loaded = []
    hexnet = SimpleNamespace(ndim=2, k=6, name="hex")
    auto = AutoMethod(SimpleNamespace(ndim=2, k=4, name="square"),
                      other_networks={"hexagonal": ("hex", lambda: loaded.append(1) or hexnet)})
    assert auto.network_for("square").name == "square" and not loaded
    assert auto.network_for("hexagonal") is hexnet and auto.network_for("hexagonal") is hexnet and loaded == [1]
    assert auto.network_for("fringes") is None


def test_interactive_auto_runs_the_hexagonal_network(hexagonal_image):
    """The napari widget's auto: the same choice and grains as `segment` (angles mod 60)."""
    import tifffile as tf

    from micro_sym.inference.interactive import AUTO, SegmentSettings
    from micro_sym.inference.interactive import segment as interactive_segment
    from micro_sym.metrics import evaluate_sample

    path, truth = hexagonal_image
    r = interactive_segment(tf.imread(path), SegmentSettings(model=AUTO))
    assert "atoms-2d-hex" in r.method and r.symmetry == "hexagonal"
    ev = evaluate_sample({"grains": r.grains, "boundary": r.boundary, "orientation": r.orientation},
                         truth.grains, truth.orientation, 6)
    assert ev["boundary_f1"] > 0.85 and ev["grain_f1"] > 0.5 and ev["orientation_median_deg"] < 1.0


def test_a_square_network_refuses_a_measured_hexagonal_lattice(tmp_path, hexagonal_image):
    """default-2d's angles on a hexagonal lattice would mean nothing: one line naming what maps it,
    unless the user names the lattice (then it runs)."""
    import tifffile as tf

    from micro_sym.inference import segment
    from micro_sym.inference.interactive import SegmentSettings
    from micro_sym.inference.interactive import segment as interactive_segment

    path, _ = hexagonal_image
    kw = dict(block=128, chunk=128, workers=1)
    (res,) = segment([path], tmp_path / "refused", model="default-2d", **kw)
    assert res.status == "failed" and "measures hexagonal" in res.error and "--model atoms-2d-hex" in res.error
    assert "\n" not in res.error
    (res,) = segment([path], tmp_path / "named", model="default-2d", lattice="square", **kw)
    assert res.status == "complete", res.error
    with pytest.raises(MicroSymError, match="measures hexagonal"):
        interactive_segment(tf.imread(path), SegmentSettings(model="default-2d"))

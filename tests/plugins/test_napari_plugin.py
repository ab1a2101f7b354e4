"""napari plugin (plugins/micro_sym_napari): manifest, core, widgets, reader, screenshots.

GUI tests need a display: ``QT_QPA_PLATFORM=offscreen xvfb-run -a python -m pytest tests/plugins/test_napari_plugin.py``
(as ``make test`` runs them). The 2D runs use the bundled ``default-2d`` network; the 3D widget test uses
a tiny *untrained* 3D network, so it checks the mechanics (tiles, layers, features), not accuracy.
Set ``MICRO_SYM_DOCS_IMAGES=1`` to (re)write ``docs/images/napari_2d.png`` and ``napari_3d.png``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

napari = pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from micro_sym.errors import MicroSymError  # noqa: E402
from micro_sym.inference import interactive  # noqa: E402
from micro_sym_napari import _core, _widgets  # noqa: E402
from micro_sym_napari._reader import napari_get_reader  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_2D = ROOT / "sample_data" / "micrographs" / "images" / "sample_000.tif"
SAMPLE_3D = ROOT / "sample_data" / "volume" / "images" / "sample_000.tif"
needs_samples = pytest.mark.skipif(not SAMPLE_2D.is_file() or not SAMPLE_3D.is_file(), reason="sample_data/ missing")
TIMEOUT_MS = 90_000


# ------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", autouse=True)
def gl_info_cached(qapp):
    """Query OpenGL's extensions and texture limits once, from napari's own hidden canvas.

    napari caches both (lru_cache) but first asks while building the first layer's visual, through
    the new viewer's canvas; under xvfb that canvas's context is now and then not current yet, and
    ``glGetString`` returns None (a flaky AttributeError in the first GUI test). Asked here, before
    any viewer exists, napari makes a canvas of its own current for the query.
    """
    from napari._vispy.utils.gl import get_gl_extensions, get_max_texture_sizes

    for attempt in range(3):
        try:
            get_gl_extensions()
            get_max_texture_sizes()
            return
        except AttributeError:
            get_gl_extensions.cache_clear()
            get_max_texture_sizes.cache_clear()
            qapp.processEvents()


@pytest.fixture(scope="module")
def tiny_3d_model(tmp_path_factory):
    """A real but untrained 3D network file (plain variant, 4 channels): tests loading and refusal paths."""
    import torch

    from micro_sym.models import build_model, save_model

    torch.manual_seed(0)
    model = build_model({"arch": "gcnn3d", "variant": "plain", "width": 4, "levels": 2})
    return save_model(model.eval(), tmp_path_factory.mktemp("m3d") / "tiny3d.pt", trained_on={"note": "untrained, test only"})


@pytest.fixture
def errors(monkeypatch):
    """Record the notifications the widgets show (the real napari notification still runs)."""
    shown = []
    original = _widgets._show_error

    def spy(message):
        shown.append(message)
        original(message)

    monkeypatch.setattr(_widgets, "_show_error", spy)
    return shown


def _run_to_end(qtbot, widget):
    worker = widget.run()
    assert worker is not None, "the widget refused to start"
    qtbot.waitUntil(lambda: widget.worker is None, timeout=TIMEOUT_MS)
    return worker


def _snapshot(viewer):
    """Names, types and data identities of all layers: 'no existing layer changed' is checked against it."""
    return [(layer.name, _widgets._layer_type(layer), id(layer.data), layer.data.shape) for layer in viewer.layers]


# ------------------------------------------------------------------------------------- manifest


def test_manifest_validates_and_commands_import():
    res = subprocess.run([sys.executable, "-m", "npe2", "validate", "micro-sym"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    from npe2 import PluginManager
    from npe2.manifest.utils import import_python_name

    pm = PluginManager.instance()
    pm.discover()
    manifest = pm.get_manifest("micro-sym")
    commands = manifest.contributions.commands
    assert {c.id for c in commands} >= {"micro-sym.get_reader", "micro-sym.sample_micrograph", "micro-sym.sample_volume",
                                        "micro-sym.segment_widget", "micro-sym.stats_widget", "micro-sym.retrain_widget"}
    for c in commands:
        assert callable(import_python_name(c.python_name)), c.python_name
    # Heavy libraries stay out of import time (docs/CONTRIBUTING.md): importing the plugin must not load torch.
    code = "import sys, micro_sym_napari._reader, micro_sym_napari._sample_data, micro_sym_napari._core; " \
           "print('torch' in sys.modules, 'escnn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout.split()
    assert out == ["False", "False"]


# ----------------------------------------------------------------------------------------- core


@needs_samples
def test_core_tiles_reproduce_whole_image_segmentation():
    """Tiling is exact: the tiled core gives the same grains as whole-image inference."""
    import tifffile

    from micro_sym.models import load_model
    from micro_sym.inference.whole_image import segment_image

    image = tifffile.imread(SAMPLE_2D)
    steps = []
    gen = interactive.iter_segment(image, interactive.SegmentSettings(model="default-2d", tile=192))
    while True:
        try:
            steps.append(next(gen))
        except StopIteration as stop:
            res = stop.value
            break
    assert sum(s.stage.startswith("tile ") for s in steps) == 9  # 512 / 192 -> 3 x 3 tiles, one yield each
    ref = segment_image(load_model("default-2d", export=True), image, period="measure")  # as napari: lattice measured
    np.testing.assert_array_equal(res.grains, ref["grains"])
    np.testing.assert_allclose(res.boundary, ref["boundary"], atol=1e-5)
    assert res.n_grains == int(ref["grains"].max()) > 20
    assert list(res.table["grain"]) == list(range(1, res.n_grains + 1))


@needs_samples
def test_core_large_results_live_on_disk_and_stay_lazy(monkeypatch):
    """Beyond IN_MEMORY_MAX_BYTES the maps go to a temporary Zarr store; layers read it lazily."""
    import tifffile
    import zarr

    image = tifffile.imread(SAMPLE_2D)[:256, :320]
    settings = interactive.SegmentSettings(model="default-2d", tile=128)
    ref = interactive.segment(image, settings)
    monkeypatch.setattr(interactive, "IN_MEMORY_MAX_BYTES", 0)
    res = interactive.segment(image, settings)
    assert isinstance(res.grains, zarr.Array) and isinstance(res.orientation, zarr.Array)
    np.testing.assert_array_equal(res.grains[...], ref.grains)
    layers = {kw["name"]: d for d, kw, kind in _core.result_layers(res, "crop")}
    edges = layers["crop grain boundaries"]
    assert not isinstance(edges, np.ndarray)  # dask, computed chunk by chunk on display
    np.testing.assert_array_equal(np.asarray(edges), _core.boundary_mask(ref.grains))
    # Past WHOLE_TABLE_MAX_PIXELS the table comes from the blocks: neighbours are counted as whole.
    monkeypatch.setattr(interactive, "WHOLE_TABLE_MAX_PIXELS", 0)
    big = interactive.segment(image, settings)
    assert big.n_grains == ref.n_grains and np.median(ref.table["n_neighbours"]) >= 2
    np.testing.assert_array_equal(big.table["n_neighbours"], ref.table["n_neighbours"])


@needs_samples
def test_core_3d_harmonic_network_gives_the_engines_grains_and_orientations(tmp_path):
    """default-3d in the plugin's core (tiles in memory) and in `segment` (blocks on disk): grains from
    the harmonic field, each grain's orientation over its voxels (measured where measured, else the
    mean), the same table."""
    import tifffile
    import zarr

    from _helpers import read_output
    from micro_sym.grains.field import table_orientations
    from micro_sym.inference import segment

    vol = tifffile.imread(SAMPLE_3D)[:24, :32, :32]
    res = interactive.segment(vol, interactive.SegmentSettings(model="default-3d", tile=16))
    zarr.create_array(str(tmp_path / "v.zarr"), data=vol, chunks=(16, 16, 16))
    segment([tmp_path / "v.zarr"], tmp_path / "out", model="default-3d", block=16, chunk=16)
    out = read_output(tmp_path / "out", "v")
    np.testing.assert_array_equal(res.grains, out["grains"])
    assert res.n_grains >= 2 and res.orientation.shape == (4,) + vol.shape
    np.testing.assert_array_equal(np.isnan(res.orientation), np.isnan(out["orientation"]))
    in_grain = out["grains"] > 0
    np.testing.assert_allclose(np.abs((res.orientation * out["orientation"]).sum(0))[in_grain], 1.0, atol=1e-6)
    q = table_orientations(res.table, res.n_grains)
    np.testing.assert_allclose(q[res.grains[in_grain]], np.moveaxis(res.orientation[:, in_grain], 0, -1), atol=1e-6)


def test_core_auto_runs_the_chosen_method_and_says_why():
    """'auto' in the widget: the filter bank at 2 counts/px, robust-2d at 100, each as if chosen alone."""
    from micro_sym.synth import Synth2DConfig, synth_2d

    for dose, method in ((2.0, "classical"), (100.0, "robust-2d")):
        image = synth_2d(Synth2DConfig.model_validate({"size": (256, 256), "imaging": {"dose": dose}}), seed=7).image
        res = interactive.segment(image, interactive.SegmentSettings(model=interactive.AUTO, tile=128))
        alone = interactive.segment(image, interactive.SegmentSettings(model=method, tile=128))
        assert res.method.startswith(f"auto: {alone.method}, fringe SNR"), res.method
        assert res.info["auto"]["chose"] == ("classical" if method == "classical" else "network")
        np.testing.assert_array_equal(res.grains, alone.grains)
    assert interactive.available_models()[0] == interactive.AUTO


def test_core_auto_runs_the_bundled_3d_network_on_volumes(monkeypatch):
    """'auto' on a volume: the bundled default-3d (auto's choice is between 2D methods)."""
    interactive.check_settings(interactive.SegmentSettings(model=interactive.AUTO), 3)  # accepted for volumes
    seen = {}

    def fake_network(image, settings, pixel_size, unit, net):
        seen["model"] = settings.model
        return interactive.SegmentResult(np.zeros(image.shape, np.uint32), None, None, {}, "cubic", f"network {settings.model}",
                                   None, None, 1, 0.0, {})
        yield  # a generator, like the real one

    monkeypatch.setattr(interactive, "_iter_network", fake_network)
    res = interactive.segment(np.zeros((16, 16, 16), np.float32), interactive.SegmentSettings(model=interactive.AUTO))
    assert seen["model"] == "default-3d" and res.method == "auto: network default-3d (3D volume)"


def test_core_rejects_bad_images_with_clear_messages():
    with pytest.raises(MicroSymError, match="4D"):
        _core.check_image(np.zeros((2, 3, 32, 32)), name="t")
    with pytest.raises(MicroSymError, match="RGB"):
        _core.check_image(np.zeros((32, 32, 3)), name="rgb", rgb=True)
    with pytest.raises(MicroSymError, match="Labels layer"):
        _core.check_image(np.zeros((32, 32), np.uint32), name="g", layer_type="labels")
    with pytest.raises(MicroSymError, match="does not exist"):
        interactive.check_settings(interactive.SegmentSettings(model="/nonexistent/model.pt"), 2)
    with pytest.raises(MicroSymError, match="2D micrographs only"):
        interactive.check_settings(interactive.SegmentSettings(model=interactive.CLASSICAL), 3)


# -------------------------------------------------------------------------------------- widgets


@needs_samples
def test_segment_widget_2d_and_statistics(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    viewer.open_sample("micro-sym", "micrograph")
    image = viewer.layers[0]
    assert image.data.shape == (512, 512) and tuple(image.scale) == (0.05, 0.05)
    w = _widgets.SegmentWidget(viewer)
    viewer.window.add_dock_widget(w)
    stats = _widgets.GrainStatsWidget(viewer)
    viewer.window.add_dock_widget(stats)
    w.set_model("default-2d")
    w.tile_spin.setValue(256)
    stages = []
    worker = w.run()
    worker.yielded.connect(lambda p: stages.append(p.stage))
    qtbot.waitUntil(lambda: w.worker is None, timeout=TIMEOUT_MS)
    assert sum(s.startswith("tile ") for s in stages) >= 3  # yields arrive per tile (4 tiles)
    assert w.progress.value() == w.progress.maximum() == 1

    name = image.name
    grains = viewer.layers[f"{name} grains"]
    ori = viewer.layers[f"{name} orientation"]
    edges = viewer.layers[f"{name} grain boundaries"]
    prob = viewer.layers[f"{name} P(boundary)"]
    assert _widgets._layer_type(grains) == "labels" and _widgets._layer_type(edges) == "labels"
    assert _widgets._layer_type(ori) == "image" and _widgets._layer_type(prob) == "image"
    assert "orientation colour key" in viewer.layers
    for layer in (grains, ori, edges, prob):
        assert layer.data.shape == (512, 512)
        np.testing.assert_allclose(layer.scale, image.scale)
        assert [str(u) for u in layer.units] == ["nanometer"] * 2
    assert tuple(ori.contrast_limits) == (0.0, 90.0)
    assert "twilight" in ori.colormap.name
    n = int(grains.data.max())
    f = grains.features
    assert len(f) == n > 20 and list(f["index"]) == list(range(1, n + 1))
    assert {"area", "ecd", "mean_angle", "gos", "n_neighbours"} <= set(f.columns)
    # Areas are physical (pixel size 0.05 nm): n_points x 0.0025 nm².
    np.testing.assert_allclose(f["area"], f["n_points"] * 0.05**2)
    assert np.all((f["mean_angle"] >= 0) & (f["mean_angle"] < 90))

    # Statistics widget follows the new layer; sorting by area puts the largest grain first.
    assert stats.layer is grains
    assert stats.table.rowCount() == n
    header = [stats.table.horizontalHeaderItem(j).text() for j in range(stats.table.columnCount())]
    # Headers carry units, as the CSV does.
    assert header[:4] == ["grain", "n_points", "area_nm2", "ecd_nm"] and "mean_angle_deg" in header
    from qtpy.QtCore import Qt

    stats.table.sortItems(header.index("area_nm2"), Qt.SortOrder.DescendingOrder)
    top = int(stats.table.item(0, header.index("grain")).value)
    assert top == int(f.loc[f["area"].idxmax(), "grain"])
    stats.select_row(0)
    assert grains.selected_label == top and grains.show_selected_label and grains.visible
    row = f.loc[f["grain"] == top].iloc[0]
    np.testing.assert_allclose(_widgets._camera(viewer).center[-2:], (row["centroid_y"], row["centroid_x"]), atol=1e-6)
    # Picking a grain in the canvas (selected_label) highlights its row.
    grains.selected_label = 5
    sel = {i.row() for i in stats.table.selectedIndexes()}
    assert len(sel) == 1 and int(stats.table.item(sel.pop(), header.index("grain")).value) == 5
    out = stats.export_csv(tmp_path / "grains.csv")
    lines = out.read_text().splitlines()
    assert len(lines) == n + 1 and lines[0].startswith("grain,n_points,area_nm2,ecd_nm")
    # Save in the segmentation-output layout; the reader brings the same grains and statistics back.
    zpath, csv = w.save(tmp_path / "seg")
    assert w.save(tmp_path / "seg") is None  # refuses to overwrite silently
    layers = {kw["name"]: (d, kw) for d, kw, kind in napari_get_reader(str(zpath))(str(zpath))}
    data, kw = layers["micrograph grains"]
    np.testing.assert_array_equal(np.asarray(data), grains.data)
    np.testing.assert_allclose(kw["features"]["area_nm2"], f["area"], rtol=1e-5)
    assert tuple(kw["scale"]) == (0.05, 0.05)


@needs_samples
def test_cancel_leaves_no_partial_layers_and_viewer_usable(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.open_sample("micro-sym", "micrograph")
    w = _widgets.SegmentWidget(viewer)
    w.set_model("default-2d")
    w.tile_spin.setValue(64)  # 64 tiles: plenty of chances to cancel mid-run
    before = _snapshot(viewer)
    stages = []

    def on_progress(p):
        stages.append(p.stage)
        if p.stage == "tile 3/64":
            w.cancel_button.click()

    worker = w.run()
    worker.yielded.connect(on_progress)
    qtbot.waitUntil(lambda: w.worker is None, timeout=TIMEOUT_MS)
    assert "tile 3/64" in stages and "tile 64/64" not in stages
    assert "cancelled" in w.status.text()
    assert _snapshot(viewer) == before
    assert w.run_button.isEnabled() and not w.cancel_button.isEnabled()
    # Still usable: a second run (whole-image tiles) completes and adds the layers.
    w.tile_spin.setValue(0)
    _run_to_end(qtbot, w)
    assert f"{viewer.layers[0].name} grains" in viewer.layers


def test_bad_inputs_notify_and_change_nothing(make_napari_viewer, qtbot, errors):
    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    viewer.add_image(rng.random((2, 3, 64, 64)).astype(np.float32), name="stack 4D")
    viewer.add_image(rng.random((64, 64, 3)).astype(np.float32), name="colour photo", rgb=True)
    viewer.add_labels(np.ones((64, 64), np.uint32), name="some labels")
    viewer.add_image(rng.random((24, 32, 32)).astype(np.float32), name="small volume")
    w = _widgets.SegmentWidget(viewer)
    before = _snapshot(viewer)
    expected = [("stack 4D", "default-2d", "4D"), ("colour photo", "default-2d", "RGB"),
                ("some labels", "default-2d", "Labels layer"), ("small volume", "/no/such/model.pt", "does not exist"),
                ("small volume", interactive.CLASSICAL, "2D micrographs only")]
    for layer, model, message in expected:
        w.image_combo.setCurrentText(layer)
        w.set_model(model)
        assert w.run() is None  # refused before any worker starts
        assert message in errors[-1], errors[-1]
    # Errors found inside the worker (a 2D model on a volume) come back as one notification too.
    w.image_combo.setCurrentText("small volume")
    w.set_model("default-2d")
    _run_to_end(qtbot, w)
    assert "segments 2D images" in errors[-1] and "3D" in errors[-1]
    assert len(errors) == len(expected) + 1
    assert _snapshot(viewer) == before


@needs_samples
def test_segment_widget_3d(make_napari_viewer, qtbot, tiny_3d_model, monkeypatch):
    viewer = make_napari_viewer()
    viewer.open_sample("micro-sym", "volume")
    vol = viewer.layers[0]
    assert vol.data.shape == (96, 96, 96)
    w = _widgets.SegmentWidget(viewer)
    w.set_model(str(tiny_3d_model))  # a real 3D model file passes the widget's checks ...
    from _helpers import quaternion_net_3d  # this file also runs as a script: imported here

    net = quaternion_net_3d()
    loaded = []
    # ... and the worker runs the fast fixed-weight network in its place (see quaternion_net_3d).
    monkeypatch.setattr(interactive, "load_network", lambda model, device="cpu": loaded.append(model) or net)
    w.tile_spin.setValue(48)
    stages = []
    worker = w.run()
    worker.yielded.connect(lambda p: stages.append(p.stage))
    qtbot.waitUntil(lambda: w.worker is None, timeout=TIMEOUT_MS)
    assert loaded == [str(tiny_3d_model)]
    assert "tile 8/8" in stages, stages
    name = vol.name
    # One opaque RGB layer for the orientation (additive channels mixed with the grey volume below).
    ori = viewer.layers[f"{name} orientation (IPF-Z)"]
    assert ori.rgb and ori.data.shape == (96, 96, 96, 3) and ori.blending == "opaque"
    assert not any("IPF-Z red" in layer.name for layer in viewer.layers)
    edges = viewer.layers[f"{name} grain boundaries"]
    assert edges.blending == "translucent" and edges.data.shape == (96, 96, 96)
    grains = viewer.layers[f"{name} grains"]
    assert grains.data.shape == (96, 96, 96) and grains.data.dtype == np.uint32
    f = grains.features
    assert len(f) == int(grains.data.max()) > 0
    assert {"volume", "esd", "surface_area", "mean_qw", "mean_qz"} <= set(f.columns)
    q = np.stack([f[f"mean_q{c}"] for c in "wxyz"], 1)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-5)
    # Tiling is exact in 3D too: same grains as the network on the whole volume.
    whole = interactive.segment(np.asarray(vol.data), interactive.SegmentSettings(model=str(tiny_3d_model)), net=net)
    np.testing.assert_array_equal(whole.grains, grains.data)
    # Rotations about z keep sample z along crystal [001]: the IPF-Z map is pure red where defined.
    rgb = np.asarray(ori.data)
    assert rgb[..., 1].max() == 0 and rgb[..., 0].min() == 255
    # Units: the volume's pixel size is known, so layers and table headers carry it.
    unit = vol.metadata["unit"]
    assert unit and unit != "px"
    for layer in (ori, edges, grains):
        np.testing.assert_allclose(layer.scale, vol.scale)
        assert len({str(u) for u in layer.units}) == 1 and str(layer.units[0]) != "pixel"
    stats = _widgets.GrainStatsWidget(viewer)
    header = [stats.table.horizontalHeaderItem(j).text() for j in range(stats.table.columnCount())]
    ascii_unit = {"µm": "um", "Å": "A"}.get(unit, unit)
    assert f"volume_{ascii_unit}3" in header and f"esd_{ascii_unit}" in header and "gos_deg" in header
    # A second run (3D view this time) replaces the layers: no duplicates, no second colour key.
    viewer.dims.ndisplay = 3
    names = [layer.name for layer in viewer.layers]
    _run_to_end(qtbot, w)
    assert [layer.name for layer in viewer.layers] == names
    assert viewer.layers[f"{name} orientation (IPF-Z)"] is not ori


# ---------------------------------------------------------------------------------------- reader


@needs_samples
def test_reader_opens_segmentation_output_with_all_layers(tmp_path, make_napari_viewer):
    from micro_sym.inference import segment

    (res,) = segment([SAMPLE_2D], tmp_path, model="default-2d", workers=1)
    assert res.status == "complete", res.error
    out = Path(res.zarr)
    reader = napari_get_reader(str(out))
    assert reader is not None
    layers = reader(str(out))
    by_name = {kw["name"]: (data, kw, kind) for data, kw, kind in layers}
    assert by_name["sample_000 image"][2] == "image"  # found through the run manifest
    data, kw, kind = by_name["sample_000 grains"]
    assert kind == "labels" and data.shape == (512, 512)
    assert len(kw["features"]) == res.n_grains == int(np.asarray(data).max())
    assert {"sample_000 orientation", "sample_000 P(boundary)", "sample_000 grain boundaries",
            "orientation colour key"} <= set(by_name)
    edges = np.asarray(by_name["sample_000 grain boundaries"][0])
    np.testing.assert_array_equal(edges, _core.boundary_mask(np.asarray(data)))  # lazy halo = eager result
    viewer = make_napari_viewer()
    viewer.open(str(out), plugin="micro-sym")
    assert "sample_000 grains" in viewer.layers
    # Plain TIFF: lazy, with the pixel size from its metadata; unknown files are not ours.
    (img, kw, kind), = napari_get_reader(str(SAMPLE_2D))(str(SAMPLE_2D))
    assert kind == "image" and img.shape == (512, 512) and kw["scale"] == pytest.approx((0.05, 0.05))
    assert napari_get_reader(str(tmp_path / "notes.txt")) is None


def test_reader_shows_each_phase_of_a_fused_map_in_its_period(tmp_path):
    """auto on a film of fringes writes fringes-2d's and robust-2d's grains in one map: one orientation
    layer per phase (mod 180° and mod 90°, each blank outside its grains) and a colour key per phase,
    in the reader and in the widget's result alike."""
    import tifffile

    from micro_sym.inference import segment
    from micro_sym.synth.atoms2d import Atoms2DConfig, synth_atoms2d

    cfg = Atoms2DConfig(mode="haadf", size=(256, 256), pixel_size_angstrom=2.04 / 8, haadf={"dose": (50.0, 50.0)},
                        film={"grain_size": 20.4, "vacuum_fraction": 0.1, "amorphous_fraction": 0.1,
                              "fringe_fraction": 0.8})
    tifffile.imwrite(tmp_path / "film.tif", synth_atoms2d(cfg, seed=1).image.astype(np.float32))
    (res,) = segment([tmp_path / "film.tif"], tmp_path / "out", block=128, chunk=128, workers=1)
    assert res.status == "complete", res.error
    layers = {kw["name"]: (data, kw) for data, kw, kind in napari_get_reader(res.zarr)(res.zarr)}
    grains = np.asarray(layers["film grains"][0])
    fringes, square = (layers[f"film orientation ({p})"] for p in ("fringes", "square"))
    assert fringes[1]["contrast_limits"] == (0.0, 180.0) and square[1]["contrast_limits"] == (0.0, 90.0)
    n = res.n_grains - res.plan["method"]["added_grains"]
    for (data, _), mine in ((fringes, (grains >= 1) & (grains <= n)), (square, grains > n)):
        values = np.asarray(data)
        assert mine.any() and np.isfinite(values[mine]).all() and np.isnan(values[~mine]).all()
    assert {"orientation colour key (fringes)", "orientation colour key (square)"} <= set(layers)
    assert "film orientation" not in layers
    # The widget's own result (in memory, same grains): the same layers.
    from micro_sym.inference.interactive import AUTO, SegmentSettings
    from micro_sym.inference.interactive import segment as interactive_segment

    r = interactive_segment(tifffile.imread(tmp_path / "film.tif"), SegmentSettings(model=AUTO, tile=128))
    widget = {kw["name"]: (data, kw) for data, kw, kind in _core.result_layers(r, "film")}
    assert {k for k in layers if "orientation" in k} == {k for k in widget if "orientation" in k}
    for name in ("film orientation (fringes)", "film orientation (square)"):
        assert np.array_equal(np.isnan(np.asarray(widget[name][0])), np.isnan(np.asarray(layers[name][0]))), name


def test_segment_widget_auto_shows_a_fused_map_per_phase(make_napari_viewer, qtbot):
    """The widget's auto on a film of fringes: one orientation layer per phase, and its key says so."""
    from micro_sym.synth.atoms2d import Atoms2DConfig, synth_atoms2d

    cfg = Atoms2DConfig(mode="haadf", size=(256, 256), pixel_size_angstrom=2.04 / 8, haadf={"dose": (50.0, 50.0)},
                        film={"grain_size": 20.4, "vacuum_fraction": 0.1, "amorphous_fraction": 0.1,
                              "fringe_fraction": 0.8})
    viewer = make_napari_viewer()
    viewer.add_image(synth_atoms2d(cfg, seed=1).image.astype(np.float32), name="film")
    w = _widgets.SegmentWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.set_model("auto")
    w.run()
    qtbot.waitUntil(lambda: w.worker is None, timeout=TIMEOUT_MS)
    assert w.last_result is not None and "grains fused" in w.last_result.method, w.status.text()
    assert {"film orientation (fringes)", "film orientation (square)"} <= {layer.name for layer in viewer.layers}
    assert "per phase" in w.key_title.text() and "fringes mod 180°" in w.key_title.text()


def test_segment_widget_splits_grains_holding_two_lattice_orientations(make_napari_viewer, qtbot):
    """With its split box ticked, the widget splits a grain the network joined across an 8° boundary."""
    from micro_sym.synth.lattice2d import render_lattice_2d

    truth = np.ones((256, 256), np.int64)
    truth[:, 128:] = 2
    truth[160:] = 3
    image = render_lattice_2d(truth, {1: 20.0, 2: 28.0, 3: 60.0}, period=8.0, rng=np.random.default_rng(0))
    viewer = make_napari_viewer()
    viewer.add_image((image + np.random.default_rng(1).normal(0, 0.3, truth.shape)).astype(np.float32), name="pair")
    w = _widgets.SegmentWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.set_model("auto")
    w.threshold_spin.setValue(15.0)  # the pair is one grain at this threshold
    for split, n_grains in ((False, 2), (True, 3)):
        w.split_check.setChecked(split)
        _run_to_end(qtbot, w)
        assert w.last_result is not None and w.last_result.n_grains == n_grains, w.status.text()
        grains = next(layer for layer in viewer.layers if layer.name.startswith("pair grains"))
        assert int(np.max(grains.data)) == n_grains
    assert w.last_result.info["split_grains"] == {"grains_split": 1, "grains_added": 1}


def test_reader_ebsd_map(tmp_path):
    from micro_sym.io.ebsd import EBSDMap, write_ctf
    from micro_sym.orientation import euler_bunge_to_quat

    euler = np.zeros((3, 6, 8))
    euler[1, :, 4:] = 45.0  # right half tilted about x: sample z is [011] there, [001] on the left
    q = np.moveaxis(euler_bunge_to_quat(euler[0], euler[1], euler[2]), -1, 0)
    phase = np.ones((6, 8), np.int32)
    m = EBSDMap(q, euler, phase, phase > 0, (0.5, 0.5), "µm", [{"name": "Fe", "symmetry": "cubic", "laue_group": 11}],
                tmp_path / "m.ctf")
    path = write_ctf(tmp_path / "m.ctf", m)
    layers = napari_get_reader(str(path))(str(path))
    rgb = next(d for d, kw, kind in layers if "IPF-Z" in kw["name"])
    assert rgb.shape == (6, 8, 4)
    # Two orientations -> two IPF colours, each constant over its half of the map.
    assert np.allclose(rgb[:, :4], rgb[0, 0]) and np.allclose(rgb[:, 4:], rgb[0, 4])
    np.testing.assert_allclose(rgb[0, 0], (1, 0, 0, 1), atol=1e-3)  # [001] is red in the IPF key
    assert not np.allclose(rgb[0, 0], rgb[0, 4])


def test_3d_orientation_is_one_rgb_layer_and_units_reach_layers_and_headers():
    """Quaternion maps become one uint8 RGB layer (lazy stays lazy); units are napari's and the table's."""
    import dask.array as da

    from micro_sym_napari._reader import _orientation_layers

    q = np.zeros((4, 3, 4, 5), np.float32)
    q[0] = 1.0
    q[:, 0, 0, 0] = np.nan
    (data, kw, kind), = _orientation_layers(q, "cubic", "v orientation", {"scale": (1.0, 1.0, 1.0)})
    assert kind == "image" and kw["rgb"] and kw["blending"] == "opaque" and kw["name"] == "v orientation (IPF-Z)"
    assert data.shape == (3, 4, 5, 3) and data.dtype == np.uint8
    assert tuple(data[1, 1, 1]) == (255, 0, 0) and tuple(data[0, 0, 0]) == (0, 0, 0)  # [001] red; undefined black
    lazy = _orientation_layers(da.from_array(q, chunks=(4, 2, 2, 2)), "cubic", "v", {})[0][0]
    assert isinstance(lazy, da.Array) and np.array_equal(np.asarray(lazy), data)
    assert _core.layer_units("nm", 3) == ("nm",) * 3
    assert _core.layer_units("px", 2) is None and _core.layer_units(None, 2) is None
    assert _core.grain_headers(["grain", "n_points", "volume", "esd", "mean_qw", "gos"], "µm") == \
        ["grain", "n_points", "volume_um3", "esd_um", "mean_qw", "gos_deg"]
    # A table read back from a CSV already carries its units; anything else stays as it is.
    assert _core.grain_headers(["grain", "area_nm2", "ecd_nm"], "nm") == ["grain", "area_nm2", "ecd_nm"]
    assert _core.grain_headers(["a", "b"], "nm") == ["a", "b"]


# ------------------------------------------------------------------------------------ screenshots


def _docs_or_tmp(tmp_path, name):
    if os.environ.get("MICRO_SYM_DOCS_IMAGES") == "1":
        out = ROOT / "docs" / "images" / name
        out.parent.mkdir(parents=True, exist_ok=True)
        return out
    return tmp_path / name


@needs_samples
@pytest.mark.parametrize("dim", [2, 3])
def test_screenshots(tmp_path, dim):
    """Screenshots of the viewer after segmenting the samples (PNG; docs/images with MICRO_SYM_DOCS_IMAGES=1).

    Runs in a subprocess on the X server xvfb-run provides (``QT_QPA_PLATFORM=xcb``): Qt's offscreen
    platform, which the other GUI tests use, draws no OpenGL canvas into window grabs.
    """
    if not os.environ.get("DISPLAY"):
        pytest.skip("needs an X display (run under xvfb-run)")
    model = "default-2d" if dim == 2 else os.environ.get("MICRO_SYM_NAPARI_3D_MODEL", "default-3d")
    path = _docs_or_tmp(tmp_path, f"napari_{dim}d.png")
    env = {**os.environ, "QT_QPA_PLATFORM": "xcb"}
    res = subprocess.run([sys.executable, __file__, str(dim), model, str(path)], env=env,
                         capture_output=True, text=True, timeout=3600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    from PIL import Image

    rgb = np.asarray(Image.open(path).convert("RGB"))
    assert rgb.shape[0] >= 700
    # The canvas was drawn: the orientation map is colourful (thousands of distinct colours), a blank
    # canvas next to Qt widgets has a few hundred at most.
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 3000


def _draw_screenshot(dim: int, model: str, path: str) -> None:
    """Open the sample, segment it with the widget, arrange the window and save a screenshot."""
    from qtpy.QtWidgets import QApplication

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1500, 900)
    viewer.open_sample("micro-sym", "micrograph" if dim == 2 else "volume")
    w = _widgets.SegmentWidget(viewer)
    stats = _widgets.GrainStatsWidget(viewer)
    for widget in (w, stats):
        widget.setMaximumWidth(430)
    viewer.window.add_dock_widget(w, name="Segment grains")
    viewer.window.add_dock_widget(stats, name="Grain statistics", tabify=True)
    w.set_model(model)
    w.tile_spin.setValue(0 if dim == 2 else 48)
    worker = w.run()
    assert worker is not None
    while w.worker is not None:
        QApplication.processEvents()
        time.sleep(0.02)
    assert w.last_result is not None, w.status.text()
    if dim == 3:  # 3D view: the IPF colours on the volume's faces, boundaries where they meet the faces
        stats.parent().raise_() if stats.parent() else None
        viewer.dims.ndisplay = 3
    else:
        w.parent().raise_() if w.parent() else None
    viewer.reset_view()
    camera = _widgets._camera(viewer)
    if dim == 3:  # tilted from the reset (top) view: three faces show, the key stays readable
        camera.angles = tuple(a + d for a, d in zip(camera.angles, (-20.0, 25.0, 0.0)))
    camera.zoom *= 0.9 if dim == 2 else 0.7  # margin for the key's text, which has a fixed screen size
    for _ in range(20):
        QApplication.processEvents()
    viewer.screenshot(path, canvas_only=False, flash=False)
    print(w.status.text())
    viewer.close()


if __name__ == "__main__":  # the screenshot subprocess: DIM MODEL PATH
    _draw_screenshot(int(sys.argv[1]), sys.argv[2], sys.argv[3])


# ------------------------------------------------------------------------------ correct and retrain


def _corrected_crop(size=192):
    """A crop of the 2D sample and its true grains: the 'corrections' a user would paint."""
    import tifffile

    image = tifffile.imread(SAMPLE_2D)[:size, :size]
    grains = tifffile.imread(SAMPLE_2D.parents[1] / "grains" / SAMPLE_2D.name)[:size, :size]
    return image, grains


def test_grain_mean_angles_is_circular_per_grain():
    from micro_sym_napari._retrain import grain_mean_angles

    g = np.array([[1, 1, 2, 2, 0]])
    out = grain_mean_angles(g, np.array([[89.0, 1.0, 30.0, 32.0, 50.0]]), 90.0)
    np.testing.assert_allclose(out, [[0.0, 0.0, 31.0, 31.0, 0.0]], atol=1e-4)


@needs_samples
def test_core_retrain_writes_an_equivariant_model_that_segments(tmp_path):
    from micro_sym.deploy.measure import equivariance_error
    from micro_sym.models import load_model
    from micro_sym.inference.whole_image import segment_image
    from micro_sym_napari import _retrain

    image, grains = _corrected_crop()
    settings = _retrain.RetrainSettings(model="default-2d", out=str(tmp_path / "mine.pt"), epochs=2, steps_per_epoch=2)
    gen = _retrain.iter_retrain(image, grains, settings)
    stages = []
    while True:
        try:
            stages.append(next(gen).stage)
        except StopIteration as stop:
            res = stop.value
            break
    assert [s.split(":")[0] for s in stages[1:]] == ["epoch 1/2", "epoch 2/2"]
    assert res.path == tmp_path / "mine.pt" and len(res.history) == 2 and all(np.isfinite(res.losses))
    model = load_model(res.path)  # weights_only loading, like every model file
    assert model.config == load_model("default-2d").config
    assert equivariance_error(model)["max"] < 1e-4  # still exactly p4m-equivariant: all 8 elements
    assert segment_image(model.export(), image)["grains"].max() >= 2
    with pytest.raises(MicroSymError, match="differ in shape"):
        _retrain.check_retrain(image, grains[:-1], settings)
    with pytest.raises(MicroSymError, match="at least two"):
        _retrain.check_retrain(image, np.ones_like(grains), settings)


@needs_samples
def test_retrain_widget_runs_cancels_and_refuses_bad_input(make_napari_viewer, qtbot, tmp_path, errors):
    from micro_sym_napari._retrain_widget import RetrainWidget

    viewer = make_napari_viewer()
    image, grains = _corrected_crop(160)
    viewer.add_image(image, name="micrograph")
    viewer.add_labels(grains.astype(np.uint32), name="corrected grains",
                      metadata={"micro_sym": {"method": "network robust-2d", "model": "robust-2d"}})
    w = RetrainWidget(viewer)
    assert w.image_combo.currentText() == "micrograph" and w.labels_combo.currentText() == "corrected grains"
    assert w.model_edit.text() == "robust-2d"  # the network that produced the labels
    w.epochs_spin.setValue(2)
    w.steps_spin.setValue(2)
    # Cancel after the first epoch: nothing is written.
    w.out_edit.setText(str(tmp_path / "cancelled.pt"))
    worker = w.run()
    worker.yielded.connect(lambda p: w.cancel_button.click() if p.stage.startswith("epoch 1/") else None)
    qtbot.waitUntil(lambda: w.worker is None, timeout=TIMEOUT_MS)
    assert "cancelled" in w.status.text() and not (tmp_path / "cancelled.pt").exists()
    w.out_edit.setText(str(tmp_path / "mine.pt"))
    _run_to_end(qtbot, w)
    assert (tmp_path / "mine.pt").is_file() and w.status.text().startswith("saved") and "not held out" in w.status.text()
    # Bad input: labels of another shape -> one notification, no worker, no file.
    viewer.add_labels(np.ones((50, 50), np.uint32), name="wrong")
    w.labels_combo.setCurrentText("wrong")
    w.out_edit.setText(str(tmp_path / "never.pt"))
    assert w.run() is None and errors and "differ in shape" in errors[-1]
    assert not (tmp_path / "never.pt").exists()

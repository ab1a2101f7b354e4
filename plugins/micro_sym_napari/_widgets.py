"""The dock widgets "Segment grains" and "Grain statistics" ("Correct and retrain" is in :mod:`._retrain_widget`).

Both are thin Qt shells: they read their controls into a
:class:`~micro_sym.inference.interactive.SegmentSettings`, validate the layer choice
(:mod:`micro_sym_napari._core`), and run :func:`~micro_sym.inference.interactive.iter_segment` in
napari's generator worker, so the event loop keeps
running (the viewer stays responsive), every yielded tile advances the progress bar, and Cancel stops
the worker at the next tile. Layers are added only when a run *returns*: a cancelled or failed run
adds nothing and changes nothing. User mistakes become one-line napari notifications
(``show_error``), never traceback dialogs.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from micro_sym.errors import MicroSymError
from micro_sym.inference import interactive
from micro_sym_napari import _core

log = logging.getLogger(__name__)

MODEL_FILE = "model file…"
CLASSICAL_LABEL = "classical (no training)"
AUTO_LABEL = "auto (per image: filter bank, robust-2d or atoms-2d-hex)"


def _show_error(message: str) -> None:
    from napari.utils.notifications import show_error

    show_error(message)


def _show_info(message: str) -> None:
    from napari.utils.notifications import show_info

    show_info(message)


def _layer_type(layer) -> str:
    """napari layer type name (``"image"``, ``"labels"``, ...) from the layer's public class."""
    return type(layer).__name__.lower()


def _layer_choices(viewer, types=("image", "labels")):
    return [layer for layer in viewer.layers if _layer_type(layer) in types]


class _WorkerControls:
    """Run button, Cancel, progress bar and status line around one napari generator worker.

    Subclasses set ``UNIT`` (what a yield is: the Cancel point), ``NOTHING_DONE`` (what a cancelled
    run leaves) and ``WHAT`` (for failure messages), and own ``worker``, ``run_button``,
    ``cancel_button``, ``progress`` and ``status``.
    """

    UNIT = "step"
    NOTHING_DONE = "nothing was changed"
    WHAT = "run"

    def _build_controls(self, run_text: str, status: str = "") -> None:
        """The run and Cancel buttons (wired to ``run`` and :meth:`cancel`), the progress bar and the status line."""
        self.run_button = QPushButton(run_text)
        self.run_button.clicked.connect(self.run)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.status = QLabel(status)
        self.status.setWordWrap(True)

    def _lay_out(self, form, *widgets) -> None:
        """The widget's layout: ``form``, the run/Cancel row, then ``widgets`` top to bottom."""
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout()
        layout.addLayout(form)
        layout.addLayout(buttons)
        for widget in widgets:
            layout.addWidget(widget)
        layout.addStretch(1)
        self.setLayout(layout)

    def _start(self, job, *args, message: str):
        """Run the generator ``job(*args)`` in napari's worker, wired to the controls; returns the worker."""
        from napari.qt.threading import create_worker

        self.worker = create_worker(job, *args, _start_thread=False,
                                    _connect={"yielded": self._on_progress, "returned": self._on_returned,
                                              "aborted": self._on_aborted, "errored": self._on_errored,
                                              "finished": self._on_finished})
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setRange(0, 0)  # busy until the first count arrives
        self.status.setText(message)
        self.worker.start()
        return self.worker

    def cancel(self):
        if self.worker is not None:
            self.status.setText(f"cancelling after the current {self.UNIT}…")
            self.worker.quit()

    def _on_progress(self, p: interactive.Progress):
        self.progress.setRange(0, max(p.total, 1))
        self.progress.setValue(p.done)
        self.status.setText(p.stage)

    def _on_aborted(self):
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.status.setText(f"cancelled: {self.NOTHING_DONE}")

    def _on_errored(self, err):  # only reached by bugs: the job catches everything it can
        log.error(f"micro_sym {self.WHAT} failed", exc_info=err)
        self.status.setText("failed")
        _show_error(f"{self.WHAT} failed: {type(err).__name__}: {err}")

    def _on_finished(self):
        self.worker = None
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)


# ================================================================================ Segment grains


class SegmentWidget(_WorkerControls, QWidget):
    """Segment the grains of a 2D image or 3D volume layer with a network or the classical method."""

    UNIT, NOTHING_DONE, WHAT = "tile", "no layers were added", "segmentation"

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.worker = None
        self.last_result: interactive.SegmentResult | None = None
        self.last_layers: list = []

        self.image_combo = QComboBox()
        self.image_combo.setToolTip("2D image (y, x) or 3D volume (z, y, x) to segment")
        self.model_combo = QComboBox()
        for name in interactive.available_models():
            self.model_combo.addItem({interactive.CLASSICAL: CLASSICAL_LABEL, interactive.AUTO: AUTO_LABEL}.get(name, name), name)
        self.model_combo.addItem(MODEL_FILE, MODEL_FILE)
        self.model_combo.setToolTip("Bundled network, a model file (.pt trained or pruned with micro_sym, or a "
                                    "deployed .onnx/.ts/.safetensors from 'micro-sym export'), the training-free Gabor filter-bank method (2D only), "
                                    "or auto: per 2D image, the filter bank when the lattice fringe SNR is very low, else robust-2d")
        self.model_path = QLineEdit()
        self.model_path.setPlaceholderText("path to a micro_sym model file (.pt)")
        self.browse = QPushButton("Browse…")
        self.browse.clicked.connect(self._browse_model)
        self.path_widget = _path_row(self.model_path, self.browse)
        self.lattice_combo = QComboBox()
        self.lattice_combo.addItems(["square", "hexagonal", "fringes"])
        self.lattice_combo.setToolTip("Lattice symmetry for the classical method (networks know their own)")
        self.device_combo = QComboBox()
        self.device_combo.setEditable(True)
        self.device_combo.addItems(["cpu", "cuda", "mps"])
        self.tile_spin = QSpinBox()
        self.tile_spin.setRange(0, 16384)
        self.tile_spin.setSingleStep(64)
        self.tile_spin.setSpecialValueText("auto")
        self.tile_spin.setSuffix(" px")
        self.tile_spin.setToolTip("Tile edge (without the model's halo); auto = the streaming engine's choice. "
                                  "Results do not depend on it; smaller tiles use less memory.")
        self.threshold_spin = QDoubleSpinBox()
        self.threshold_spin.setRange(0.1, 60.0)
        self.threshold_spin.setValue(5.0)
        self.threshold_spin.setSuffix(" °")
        self.threshold_spin.setToolTip("Neighbouring pixels misoriented by more than this belong to different grains")
        self.min_size_spin = QSpinBox()
        self.min_size_spin.setRange(0, 10_000_000)
        self.min_size_spin.setSpecialValueText("auto")
        self.min_size_spin.setValue(0)
        self.min_size_spin.setSuffix(" px")
        self.min_size_spin.setToolTip("Smaller grains are merged into their neighbour (a network's grain seeds: dropped); "
                                      "auto = as micro-sym segment: 2 lattice cells where the lattice is measured, "
                                      "at least 32 px")
        self.split_check = QCheckBox("Split grains holding two lattice orientations")
        self.split_check.setToolTip("Micrographs: split each grain whose angles form two groups at least 3° apart "
                                    "where the image's own lattice angles differ by 5° or more (grains joined "
                                    "across a low-angle boundary). Volumes: split grains the measured lattice "
                                    "shows as two, join neighbours measured alike. As micro-sym segment --split-grains")

        self._build_controls("Segment")
        self.save_button = QPushButton("Save results…")
        self.save_button.setToolTip("Write NAME.zarr (boundary, orientation, grains) and NAME_grains.csv, "
                                    "the layout of 'micro-sym segment'; File > Open reads it back")
        self.save_button.setEnabled(False)
        self.save_button.clicked.connect(self._save_dialog)
        self.key_title = QLabel("")
        self.key_label = QLabel()
        self.key_label.setAlignment(Qt.AlignmentFlag.AlignCenter)

        form = QFormLayout()
        form.addRow("Image", self.image_combo)
        form.addRow("Model", self.model_combo)
        form.addRow("", self.path_widget)
        form.addRow("Lattice", self.lattice_combo)
        form.addRow("Device", self.device_combo)
        form.addRow("Tile size", self.tile_spin)
        form.addRow("Misorientation threshold", self.threshold_spin)
        form.addRow("Minimum grain size", self.min_size_spin)
        form.addRow("", self.split_check)
        self._lay_out(form, self.progress, self.save_button, self.status, self.key_title, self.key_label)

        self.model_combo.currentIndexChanged.connect(self._model_changed)
        self._model_changed()
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self.viewer.layers.events.reordered.connect(self._refresh_layers)
        self._refresh_layers()

    # ------------------------------------------------------------------------------ controls

    def _refresh_layers(self, event=None):
        current = self.image_combo.currentText()
        self.image_combo.blockSignals(True)
        self.image_combo.clear()
        names = [layer.name for layer in _layer_choices(self.viewer)]
        self.image_combo.addItems(names)
        if current in names:
            self.image_combo.setCurrentText(current)
        else:  # prefer an image over our own outputs
            images = [layer.name for layer in _layer_choices(self.viewer, ("image",)) if "micro_sym" not in layer.metadata]
            if images:
                self.image_combo.setCurrentText(images[-1])
        self.image_combo.blockSignals(False)

    def _model_changed(self, *args):
        choice = self.model_combo.currentData()
        self.path_widget.setVisible(choice == MODEL_FILE)
        self.lattice_combo.setEnabled(choice == interactive.CLASSICAL)
        self.device_combo.setEnabled(choice != interactive.CLASSICAL)
        self.tile_spin.setEnabled(choice != interactive.CLASSICAL)

    def _browse_model(self):
        path, _ = QFileDialog.getOpenFileName(self, "Choose a micro_sym model file", "", "Model files (*.pt *.pth *.onnx *.ts *.safetensors);;All files (*)")
        if path:
            self.model_path.setText(path)

    def set_model(self, model: str):
        """Choose a bundled name, ``"classical"``, ``"auto"`` or a model file path (scripts and tests)."""
        i = self.model_combo.findData(model)
        if i >= 0:
            self.model_combo.setCurrentIndex(i)
        else:
            self.model_combo.setCurrentIndex(self.model_combo.findData(MODEL_FILE))
            self.model_path.setText(str(model))

    def settings(self) -> interactive.SegmentSettings:
        choice = self.model_combo.currentData()
        model = self.model_path.text().strip() if choice == MODEL_FILE else choice
        return interactive.SegmentSettings(
            model=model, device=self.device_combo.currentText().strip() or "cpu", tile=self.tile_spin.value() or None,
            threshold=float(self.threshold_spin.value()), min_size=self.min_size_spin.value() or None,
            lattice=self.lattice_combo.currentText(), split_grains=self.split_check.isChecked())

    # ---------------------------------------------------------------------------------- run

    def selected_layer(self):
        name = self.image_combo.currentText()
        if not name or name not in self.viewer.layers:
            raise MicroSymError("no image layer chosen; open a micrograph or volume first "
                                "(File > Open Sample > micro_sym has two)")
        return self.viewer.layers[name]

    def run(self):
        """Validate the choices, then start the worker (returns it, or None after a notification)."""
        if self.worker is not None:
            _show_info("a segmentation is already running; wait for it or press Cancel")
            return None
        try:
            layer = self.selected_layer()
            data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
            _core.check_image(data, name=layer.name, layer_type=_layer_type(layer), rgb=bool(getattr(layer, "rgb", False)))
            settings = self.settings()
            interactive.check_settings(settings, data.ndim)
        except MicroSymError as err:
            _show_error(str(err))
            return None
        pixel_size, unit = _physical(layer)
        self._target = {"name": layer.name, "scale": tuple(layer.scale), "translate": tuple(layer.translate)}
        return self._start(_segment_job, data, settings, pixel_size, unit,
                           message=f"segmenting '{layer.name}' with {settings.model}…")

    def _on_returned(self, outcome):
        status, value = outcome
        if status != "ok":
            self.status.setText("failed")
            _show_error(value)
            return
        result: interactive.SegmentResult = value
        t = self._target
        try:
            tuples = _core.result_layers(result, t["name"], scale=t["scale"], translate=t["translate"])
            self.last_layers = _add_layers(self.viewer, tuples)
        except Exception as err:  # never a traceback dialog from a Qt slot
            log.exception("adding micro_sym result layers failed")
            self.status.setText("failed")
            _show_error(f"could not show the result: {type(err).__name__}: {err}")
            return
        self.last_result = result
        self.last_name = t["name"]
        self.save_button.setEnabled(True)
        self.progress.setRange(0, 1)
        self.progress.setValue(1)
        self.status.setText(f"{result.n_grains} grains in {result.seconds:.1f} s ({result.method}, "
                            f"{result.n_tiles} tile{'s' if result.n_tiles != 1 else ''})")
        self._show_key(result)

    def _save_dialog(self):
        folder = QFileDialog.getExistingDirectory(self, "Folder for the segmentation (NAME.zarr + NAME_grains.csv)")
        if folder:
            self.save(folder)

    def save(self, folder, overwrite: bool = False):
        """Write the last result into ``folder``; returns the paths or None after a notification."""
        if self.last_result is None:
            _show_error("nothing to save yet: run 'Segment' first")
            return None
        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.last_name)
        try:
            paths = interactive.save_result(self.last_result, folder, name, overwrite=overwrite)
        except MicroSymError as err:
            _show_error(str(err))
            return None
        _show_info(f"saved {paths[0]} and {paths[1].name}")
        return paths

    def _show_key(self, result):
        from micro_sym.grains.colours import angle_key, ipf_key
        from micro_sym.orientation.symmetry import lattice as find_lattice

        phases = result.info.get("phases") or []
        if result.ndim == 2:
            rgba = angle_key(result.period, 121)
            title = "Orientation colour key: lattice angle θ, counter-clockwise from +x, "
            if len(phases) > 1:  # a fused map: the canvas has a layer and key per phase
                each = ", ".join(f"{p['name']} mod {360 // find_lattice(p['symmetry']).k}°" for p in phases)
                title += f"per phase ({each}; one orientation layer and key each on the canvas); shown: "
                self.key_title.setText(f"{title}mod {result.period:g}°")
            else:
                self.key_title.setText(f"{title}mod {result.period:g}° ({result.symmetry} lattice)")
        else:
            rgba = ipf_key(121)
            self.key_title.setText("Orientation colour key (IPF-Z, cubic): the crystal direction along z; "
                                   "red [001], green [101], blue [111]")
        self.key_title.setWordWrap(True)
        self.key_label.setPixmap(_pixmap(rgba))


def _guarded(gen, what: str, out_of_memory: str):
    """Run a worker generator: yields its Progress; returns ("ok", result) or ("error", message).

    Errors are returned rather than raised so they become one notification, not a traceback dialog.
    """
    try:
        result = yield from gen
    except MicroSymError as err:
        return ("error", str(err))
    except MemoryError:
        return ("error", f"out of memory; {out_of_memory}")
    except Exception as err:  # a bug or an unexpected library failure: keep the traceback in the log
        log.exception(f"micro_sym {what} failed")
        return ("error", f"{what} failed: {type(err).__name__}: {err}")
    return ("ok", result)


def _segment_job(data, settings, pixel_size, unit):
    """The Segment worker's generator (see :func:`_guarded`)."""
    gen = interactive.iter_segment(data, settings, pixel_size=pixel_size, unit=unit)
    return (yield from _guarded(gen, "segmentation", "choose a smaller tile size"))


def _path_row(edit, button) -> QWidget:
    """A line edit and its Browse button side by side, as one form row."""
    row = QHBoxLayout()
    row.setContentsMargins(0, 0, 0, 0)
    row.addWidget(edit)
    row.addWidget(button)
    widget = QWidget()
    widget.setLayout(row)
    return widget


def _physical(layer):
    """Pixel size and unit for the statistics: from the reader's metadata, else the layer's scale and units."""
    meta = layer.metadata or {}
    ps = meta.get("pixel_size")
    unit = meta.get("unit")
    if ps is None and not np.allclose(layer.scale, 1.0):
        ps = tuple(float(s) for s in layer.scale)
        if unit is None:  # an image added with napari's own ``units``
            from micro_sym.io.images import short_unit

            names = {str(u) for u in (getattr(layer, "units", None) or ())}
            if len(names) == 1 and names != {"pixel"}:
                unit = short_unit(names.pop())
    if ps is None:
        unit = None
    return (tuple(float(s) for s in ps) if ps is not None else None), unit


def _add_layers(viewer, tuples) -> list:
    """Add result layers; a previous run's layers of the same names are replaced (re-running with a
    new threshold should not pile up copies)."""
    from napari.layers import Layer

    new = [Layer.create(data, kwargs, layer_type) for data, kwargs, layer_type in tuples]
    for layer in new:
        old = viewer.layers[layer.name] if layer.name in viewer.layers else None
        if old is not None and ("micro_sym" in old.metadata or old.name.startswith("orientation colour key")):
            viewer.layers.remove(old)
    for layer in new:
        viewer.add_layer(layer)
    # napari numbers axes -3, -2, -1 by default; name them as docs/design.md §1 does.
    dims = viewer.dims
    if dims.ndim in (2, 3) and all(label.lstrip("-").isdigit() for label in dims.axis_labels):
        dims.axis_labels = tuple("zyx"[-dims.ndim:])
    # Leave the orientation map selected: its controls (colormap, contrast = period) are the ones to see.
    ori = next((layer for layer in new if "orientation" in layer.name or "IPF" in layer.name), None)
    if ori is not None:
        viewer.layers.selection.active = ori
    return new


def _camera(viewer):
    """napari 0.9 moved the camera to ``viewer.scene.camera``; older versions have ``viewer.camera``."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera


def _pixmap(rgba: np.ndarray) -> QPixmap:
    arr = np.ascontiguousarray((np.clip(rgba, 0, 1) * 255).astype(np.uint8))
    h, w = arr.shape[:2]
    img = QImage(arr.data, w, h, 4 * w, QImage.Format.Format_RGBA8888)
    return QPixmap.fromImage(img.copy())


# ============================================================================== Grain statistics


class _NumberItem(QTableWidgetItem):
    """Table cell showing a rounded number but sorting by its full value."""

    def __init__(self, value):
        self.value = float(value) if value is not None and value == value else math.inf
        text = "" if math.isinf(self.value) else (f"{int(value)}" if float(value).is_integer() else f"{value:.4g}")
        super().__init__(text)
        self.setFlags(self.flags() & ~Qt.ItemFlag.ItemIsEditable)

    def __lt__(self, other):
        if isinstance(other, _NumberItem):
            return self.value < other.value
        return super().__lt__(other)


class GrainStatsWidget(QWidget):
    """Per-grain table (sortable; clicking a row selects and centres the grain), size histogram, CSV export."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.layer_combo = QComboBox()
        self.layer_combo.setToolTip("A grains Labels layer made by 'Segment grains' or read from a segmentation")
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.table = QTableWidget()
        self.table.setSortingEnabled(True)
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QTableWidget.SelectionMode.SingleSelection)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.itemSelectionChanged.connect(self._row_selected)
        self.export_button = QPushButton("Export CSV…")
        self.export_button.clicked.connect(self._export_dialog)
        self.figure_canvas = None
        layout = QVBoxLayout()
        form = QFormLayout()
        form.addRow("Grains layer", self.layer_combo)
        layout.addLayout(form)
        layout.addWidget(self.summary)
        layout.addWidget(self.table, 3)
        try:
            from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
            from matplotlib.figure import Figure

            self.figure = Figure(figsize=(4, 2.2), tight_layout=True)
            self.figure_canvas = FigureCanvasQTAgg(self.figure)
            self.figure_canvas.setMinimumHeight(170)
            layout.addWidget(self.figure_canvas, 2)
        except ImportError:  # the table and export still work without matplotlib
            self.figure = None
        layout.addWidget(self.export_button)
        self.setLayout(layout)
        self.layer_combo.currentIndexChanged.connect(self._layer_changed)
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self._refresh_layers()

    # --------------------------------------------------------------------------------- layers

    def _grain_layers(self):
        return [layer for layer in _layer_choices(self.viewer, ("labels",))
                if layer.features is not None and "grain" in layer.features.columns]

    def _refresh_layers(self, event=None):
        current = self.layer_combo.currentText()
        names = [layer.name for layer in self._grain_layers()]
        self.layer_combo.blockSignals(True)
        self.layer_combo.clear()
        self.layer_combo.addItems(names)
        inserted = getattr(event, "value", None)
        if inserted is not None and getattr(inserted, "name", None) in names:
            self.layer_combo.setCurrentText(inserted.name)  # follow the newest segmentation
        elif current in names:
            self.layer_combo.setCurrentText(current)
        self.layer_combo.blockSignals(False)
        if self.layer_combo.currentText() != current or not names:
            self._layer_changed()

    @property
    def layer(self):
        name = self.layer_combo.currentText()
        return self.viewer.layers[name] if name and name in self.viewer.layers else None

    def _columns(self, df):
        return [c for c in df.columns if c != "index"]

    def _layer_changed(self, *args):
        layer = self.layer
        if getattr(self, "_watched", None) is not None:
            try:
                self._watched.events.selected_label.disconnect(self._label_picked)
            except (TypeError, RuntimeError, ValueError):
                pass
        self._watched = layer
        if layer is not None:  # picking a grain in the canvas highlights its row
            layer.events.selected_label.connect(self._label_picked)
        self.table.setSortingEnabled(False)
        self.table.clear()
        if layer is None:
            self.table.setRowCount(0)
            self.table.setColumnCount(0)
            self.summary.setText("No grains layer yet: run 'Segment grains' or open a segmentation (.zarr).")
            self._plot(None)
            return
        df = layer.features
        cols = self._columns(df)
        self.table.setColumnCount(len(cols))
        self.table.setRowCount(len(df))
        unit = (layer.metadata.get("micro_sym") or {}).get("unit", "px")
        self.table.setHorizontalHeaderLabels(_core.grain_headers(cols, unit))
        values = {c: df[c].to_numpy() for c in cols}
        for r in range(len(df)):
            for j, c in enumerate(cols):
                self.table.setItem(r, j, _NumberItem(values[c][r]))
        self.table.setSortingEnabled(True)
        size_col = self._size_column(df)
        mean = float(np.nanmean(df[size_col])) if size_col and len(df) else float("nan")
        self.summary.setText(f"{len(df)} grains; mean {size_col or 'size'} {mean:.3g} {unit}. "
                             f"Click a row to select the grain; click a header to sort.")
        self._plot(df, size_col, unit)

    @staticmethod
    def _size_column(df):
        for c in ("ecd", "esd"):
            matches = [col for col in df.columns if col == c or col.startswith(c + "_")]
            if matches:
                return matches[0]
        return None

    def _plot(self, df, size_col=None, unit="px"):
        if self.figure is None:
            return
        self.figure.clear()
        ax = self.figure.add_subplot(111)
        if df is not None and size_col and len(df):
            v = df[size_col].to_numpy(float)
            v = v[np.isfinite(v)]
            ax.hist(v, bins=max(5, min(40, int(np.sqrt(len(v))) + 1)), color="#4477aa", edgecolor="white")
            what = "equivalent circle diameter" if size_col.startswith("ecd") else "equivalent sphere diameter"
            ax.set_xlabel(f"{what} ({unit})", fontsize=8)
            ax.set_ylabel("grains", fontsize=8)
            ax.set_title(f"Grain size distribution (n = {len(v)})", fontsize=9)
            ax.tick_params(labelsize=7)
        else:
            ax.set_axis_off()
        self.figure_canvas.draw_idle()

    # ------------------------------------------------------------------------------ selection

    def select_grain(self, grain: int):
        """Select ``grain`` in the Labels layer, show it alone and centre the camera on it."""
        layer = self.layer
        if layer is None:
            return
        layer.visible = True
        layer.selected_label = int(grain)
        layer.show_selected_label = True
        df = layer.features
        row = df.index[df["grain"].to_numpy() == grain]
        if len(row) == 0:
            return
        rec = df.loc[row[0]]
        axes = "zyx"[-layer.ndim:]
        cols = [next((c for c in df.columns if c == f"centroid_{a}" or c.startswith(f"centroid_{a}_")), None) for a in axes]
        if any(c is None for c in cols):
            return
        world = np.asarray(layer.translate) + np.array([float(rec[c]) for c in cols])
        if layer.ndim == 3 and self.viewer.dims.ndisplay == 2:
            self.viewer.dims.set_point(0, world[0])
        _camera(self.viewer).center = tuple(world[-self.viewer.dims.ndisplay:])

    def _label_picked(self, event=None):
        layer = self.layer
        if layer is None or getattr(self, "_selecting", False):
            return
        header = [self.table.horizontalHeaderItem(j).text() for j in range(self.table.columnCount())]
        if "grain" not in header:
            return
        col = header.index("grain")
        for r in range(self.table.rowCount()):
            item = self.table.item(r, col)
            if item is not None and int(item.value) == int(layer.selected_label):
                self._selecting = True
                try:
                    self.table.selectRow(r)
                    self.table.scrollToItem(item)
                finally:
                    self._selecting = False
                return

    def select_row(self, row: int):
        self.table.selectRow(row)

    def _row_selected(self):
        if getattr(self, "_selecting", False):
            return
        rows = {i.row() for i in self.table.selectedIndexes()}
        if not rows:
            return
        header = [self.table.horizontalHeaderItem(j).text() for j in range(self.table.columnCount())]
        if "grain" not in header:
            return
        item = self.table.item(rows.pop(), header.index("grain"))
        if item is not None:
            self.select_grain(int(item.value))

    # --------------------------------------------------------------------------------- export

    def _export_dialog(self):
        layer = self.layer
        if layer is None:
            _show_error("no grains layer to export; run 'Segment grains' first")
            return
        path, _ = QFileDialog.getSaveFileName(self, "Export grain statistics", f"{layer.name.replace(' ', '_')}.csv",
                                              "CSV files (*.csv)")
        if path:
            self.export_csv(path)

    def export_csv(self, path) -> Path | None:
        """Write the table with :func:`micro_sym.grains.write_grain_csv` (units in the headers)."""
        from micro_sym.grains import write_grain_csv

        layer = self.layer
        if layer is None:
            _show_error("no grains layer to export; run 'Segment grains' first")
            return None
        df = layer.features
        table = {c: df[c].to_numpy() for c in self._columns(df)}
        unit = (layer.metadata.get("micro_sym") or {}).get("unit", "px")
        try:
            out = write_grain_csv(path, table, unit=unit)
        except OSError as err:
            _show_error(f"{path}: cannot write ({err.strerror or err})")
            return None
        _show_info(f"wrote {len(df)} grains to {out}")
        return Path(out)

"""The "Correct and retrain" dock widget: fine-tune a model on corrected grain labels.

A thin Qt shell around :func:`micro_sym_napari._retrain.iter_retrain`, run in napari's generator
worker like "Segment grains": the viewer stays responsive, each epoch advances the progress bar,
Cancel stops after the current epoch and writes nothing, mistakes become one-line notifications.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QWidget,
)

from micro_sym.errors import MicroSymError
from micro_sym_napari import _retrain, _widgets

def _retrain_job(image, grains, settings):
    """The retrain worker's generator (see :func:`micro_sym_napari._widgets._guarded`)."""
    gen = _retrain.iter_retrain(image, grains, settings)
    return (yield from _widgets._guarded(gen, "retraining", "crop the image to a smaller region"))


class RetrainWidget(_widgets._WorkerControls, QWidget):
    """Fine-tune a 2D model on an image layer and its corrected grains Labels layer."""

    UNIT, NOTHING_DONE, WHAT = "epoch", "no model was written", "retraining"

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.worker = None
        self.last_result = None

        self.image_combo = QComboBox()
        self.image_combo.setToolTip("The micrograph (2D image layer) the labels belong to")
        self.labels_combo = QComboBox()
        self.labels_combo.setToolTip("The grains Labels layer after your corrections (paint every pixel with a grain id; "
                                     "0 is learned as boundary)")
        self.model_edit = QLineEdit("default-2d")
        self.model_edit.setToolTip("Model to start from: a bundled name (default-2d, robust-2d) or a trained 2D .pt file; "
                                   "filled in from the labels layer when it was segmented by a network")
        self.epochs_spin = QSpinBox()
        self.epochs_spin.setRange(1, 1000)
        self.epochs_spin.setValue(5)
        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(1, 100_000)
        self.steps_spin.setValue(20)
        self.steps_spin.setToolTip("Training steps per epoch (one batch of random crops of the image each)")
        self.lr_spin = QDoubleSpinBox()
        self.lr_spin.setDecimals(6)
        self.lr_spin.setRange(1e-6, 1e-1)
        self.lr_spin.setSingleStep(1e-4)
        self.lr_spin.setValue(3e-4)
        self.out_edit = QLineEdit(str(Path.home() / "micro_sym_retrained.pt"))
        self.browse = QPushButton("Browse…")
        self.browse.clicked.connect(self._browse_out)
        out_widget = _widgets._path_row(self.out_edit, self.browse)

        self._build_controls("Fine-tune", "Correct the grains layer with napari's label tools, then fine-tune.")

        form = QFormLayout()
        form.addRow("Image", self.image_combo)
        form.addRow("Corrected grains", self.labels_combo)
        form.addRow("Start from model", self.model_edit)
        form.addRow("Epochs", self.epochs_spin)
        form.addRow("Steps per epoch", self.steps_spin)
        form.addRow("Learning rate", self.lr_spin)
        form.addRow("Save model as", out_widget)
        self._lay_out(form, self.progress, self.status)

        self.labels_combo.currentIndexChanged.connect(self._labels_changed)
        for ev in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            ev.connect(self._refresh_layers)
        self._refresh_layers()

    # ------------------------------------------------------------------------------ controls

    def _refresh_layers(self, event=None):
        for combo, kind in ((self.image_combo, "image"), (self.labels_combo, "labels")):
            current = combo.currentText()
            combo.blockSignals(True)
            combo.clear()
            names = [layer.name for layer in _widgets._layer_choices(self.viewer, (kind,))]
            if kind == "image":  # the raw micrograph, not our own result layers
                names = [n for n in names if "micro_sym" not in self.viewer.layers[n].metadata] or names
            combo.addItems(names)
            if current in names:
                combo.setCurrentText(current)
            combo.blockSignals(False)
        self._labels_changed()

    def _labels_changed(self, *args):
        """Start from the network that produced the labels, when the layer says which."""
        name = self.labels_combo.currentText()
        if not name or name not in self.viewer.layers:
            return
        meta = (self.viewer.layers[name].metadata or {}).get("micro_sym", {})
        # Network results (also auto's network branch) record the model that ran; classical ones do not.
        if str(meta.get("method", "")).startswith(("network", "auto: network")) and meta.get("model"):
            self.model_edit.setText(str(meta["model"]))

    def _browse_out(self):
        path, _ = QFileDialog.getSaveFileName(self, "Save the fine-tuned model", self.out_edit.text(), "Model files (*.pt)")
        if path:
            self.out_edit.setText(path)

    def settings(self) -> _retrain.RetrainSettings:
        return _retrain.RetrainSettings(model=self.model_edit.text().strip(), out=self.out_edit.text().strip(),
                                        epochs=int(self.epochs_spin.value()), steps_per_epoch=int(self.steps_spin.value()),
                                        lr=float(self.lr_spin.value()))

    # ---------------------------------------------------------------------------------- run

    def run(self):
        """Validate the choices, then start the worker (returns it, or None after a notification)."""
        if self.worker is not None:
            _widgets._show_info("fine-tuning is already running; wait for it or press Cancel")
            return None
        try:
            names = {"image": self.image_combo.currentText(), "labels": self.labels_combo.currentText()}
            for kind, name in names.items():
                if not name or name not in self.viewer.layers:
                    raise MicroSymError(f"no {kind} layer chosen; segment an image first, then correct its grains layer")
            image = self.viewer.layers[names["image"]].data
            grains = self.viewer.layers[names["labels"]].data
            if getattr(self.viewer.layers[names["image"]], "multiscale", False):
                image = image[0]
            settings = self.settings()
            _retrain.check_retrain(image, grains, settings)
        except MicroSymError as err:
            _widgets._show_error(str(err))
            return None
        # Copies: the user may keep editing the labels while the worker trains.
        return self._start(_retrain_job, np.array(image), np.array(grains), settings,
                           message=f"fine-tuning {settings.model} on '{names['image']}' with '{names['labels']}'…")

    def _on_returned(self, outcome):
        status, value = outcome
        if status != "ok":
            self.status.setText("failed")
            _widgets._show_error(value)
            return
        self.last_result = value
        first, last = value.losses
        self.progress.setRange(0, 1)
        self.progress.setValue(1)
        self.status.setText(f"saved {value.path}: training loss {first:.3f} -> {last:.3f} over {len(value.history)} "
                            f"epochs (scores on the training image, not held out); choose it as a model file in "
                            f"'Segment grains'")
        _widgets._show_info(f"fine-tuned model saved to {value.path}")

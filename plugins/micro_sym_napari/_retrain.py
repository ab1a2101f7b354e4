"""Correct and retrain: fine-tune a 2D model on an image whose grain labels the user has corrected.

The user segments an image, fixes the grains layer with napari's label tools (paint, fill, erase,
merge by filling one grain with another's id) and fine-tunes the model on the result from the
"Correct and retrain" widget. What the training loop gets (``micro_sym.training.train2d``, started from the
model's weights with ``init=``):

- **grains**: the corrected labels; 0 means boundary/unlabeled, as in every labeled dataset, so every
  pixel should carry a grain id (erased areas would be learned as boundary);
- **orientation**: the corrections say nothing about angles, so each corrected grain takes the circular
  mean (mod the lattice period) of the starting model's own predicted angle over its pixels: a merged
  grain gets one angle, a split grain two, and the boundary head learns the corrected partition;
- validation: the same image (there is no other), so the fine-tuning log's scores are training-set
  numbers, reported as such.

No Qt here: :func:`iter_retrain` is a generator that yields :class:`~._core.Progress` once per epoch
(the widget's Cancel point) and returns a :class:`RetrainResult`.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from micro_sym.errors import MicroSymError
from micro_sym.orientation.symmetry import lattice as find_lattice
from micro_sym.inference.interactive import Progress


@dataclass
class RetrainSettings:
    """What the "Correct and retrain" widget asks for.

    Attributes
    ----------
    model : str
        Bundled name or model file (a trained 2D escnn model, not an exported one) to start from.
    out : str
        Path of the fine-tuned model file to write (``.pt``; loads like any model).
    epochs, steps_per_epoch : int
        Fine-tuning length (steps of one batch of random crops of the corrected image).
    lr : float
        Learning rate (low: the model is already trained and one image is little data).
    """

    model: str = "default-2d"
    out: str = ""
    epochs: int = 5
    steps_per_epoch: int = 20
    lr: float = 3e-4


@dataclass
class RetrainResult:
    path: Path
    history: list = field(default_factory=list)

    @property
    def losses(self) -> tuple[float, float]:
        """Training loss of the first and the last epoch."""
        return float(self.history[0]["loss"]), float(self.history[-1]["loss"])


def check_retrain(image, grains, settings: RetrainSettings) -> None:
    """Checks that need no model loading: 2D, matching shapes, real labels, an output path, sane numbers."""
    image, grains = np.asarray(image), np.asarray(grains)
    if image.ndim != 2:
        raise MicroSymError(f"retraining works on 2D micrographs; the image has shape {image.shape}")
    if grains.shape != image.shape:
        raise MicroSymError(f"the grains layer {grains.shape} and the image {image.shape} differ in shape")
    if not np.issubdtype(grains.dtype, np.integer):
        raise MicroSymError("the grains layer must hold integer grain ids (a Labels layer)")
    if len(np.unique(grains[grains > 0])) < 2:
        raise MicroSymError("the grains layer needs at least two labelled grains to learn boundaries from")
    if not str(settings.out).strip():
        raise MicroSymError("no output file chosen for the fine-tuned model")
    if Path(settings.out).suffix != ".pt":
        raise MicroSymError(f"{settings.out}: the fine-tuned model is saved as a .pt model file")
    if settings.epochs < 1 or settings.steps_per_epoch < 1 or not settings.lr > 0:
        raise MicroSymError("epochs, steps per epoch and learning rate must be positive")


def grain_mean_angles(grains: np.ndarray, angle: np.ndarray, period: float) -> np.ndarray:
    """Per-pixel angle map where each grain holds the circular mean (mod ``period``) of ``angle`` over it.

    Pixels of label 0 get 0 (masked out of the orientation loss anyway).

    >>> g = np.array([[1, 1, 2, 2]])
    >>> grain_mean_angles(g, np.array([[89.0, 1.0, 30.0, 32.0]]), 90.0).round(3).tolist()
    [[0.0, 0.0, 31.0, 31.0]]
    """
    ids = grains.ravel().astype(np.int64)
    z = np.exp(2j * np.pi * angle.ravel().astype(np.float64) / period)
    n = int(ids.max()) + 1
    re = np.bincount(ids, weights=z.real, minlength=n)
    im = np.bincount(ids, weights=z.imag, minlength=n)
    mean = np.mod(np.angle(re + 1j * im) * period / (2 * np.pi), period)
    mean[0] = 0.0
    out = mean[ids].reshape(grains.shape).astype(np.float32)
    out[out >= period] = 0.0  # float32 rounding just below the period
    return out


def write_corrected_dataset(root: Path, image, grains, orientation, lattice: str) -> Path:
    """A one-image labeled dataset (``micro_sym.io.datasets`` layout) in ``root``."""
    import json

    import tifffile

    for sub, arr in (("images", np.asarray(image, np.float32)), ("grains", np.asarray(grains, np.uint32)),
                     ("orientation", np.asarray(orientation, np.float32))):
        (root / sub).mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(root / sub / "corrected.tif", arr)
    (root / "dataset.json").write_text(json.dumps({"lattice": lattice, "note": "grain labels corrected in napari; "
                                                   "orientation = per-grain mean of the starting model's angles"}))
    return root


def iter_retrain(image, grains, settings: RetrainSettings):
    """Fine-tune ``settings.model`` on ``image`` with corrected ``grains``; yields Progress per epoch.

    Returns
    -------
    RetrainResult
        Through ``StopIteration.value``: the written model file and the per-epoch training history.
    """
    from micro_sym.inference.whole_image import predict_image
    from micro_sym.models import load_model, resolve_model_path
    from micro_sym.training.config import finetuning_config
    from micro_sym.training.loop import train

    check_retrain(image, grains, settings)
    image = np.asarray(image, np.float32)
    grains = np.asarray(grains)
    total = settings.epochs + 1
    yield Progress(0, total, f"loading {Path(str(settings.model)).name} and predicting angles")
    path = resolve_model_path(settings.model)
    model = load_model(path)
    if getattr(model, "exported", False) or int(getattr(model, "ndim", 2)) != 2 or not hasattr(model, "config"):
        raise MicroSymError(f"{settings.model}: retraining needs a trained 2D model file (.pt), not an exported or 3D one")
    lattice = find_lattice(model.k, ndim=2).name
    angles = predict_image(model.export(), image)["orientation"]
    orientation = grain_mean_angles(grains, angles, 360.0 / model.k)

    cfg = finetuning_config(model)
    cfg.optim.epochs, cfg.optim.lr = int(settings.epochs), float(settings.lr)
    cfg.optim.warmup_steps = min(cfg.optim.warmup_steps, 10)
    cfg.data.steps_per_epoch = int(settings.steps_per_epoch)
    stride = int(model.total_stride)
    crop = min(cfg.data.crop, min(image.shape)) // stride * stride
    if crop < stride:
        raise MicroSymError(f"the image {image.shape} is smaller than the model's stride ({stride} px)")
    cfg.data.crop, cfg.data.val_max_images = crop, 1
    cfg.device = "cpu"

    work = Path(tempfile.mkdtemp(prefix="micro_sym_retrain_"))
    try:
        data = write_corrected_dataset(work / "data", image, grains, orientation, lattice)
        run = work / "run"
        history = []
        for epoch in range(1, settings.epochs + 1):
            # One epoch per call (resuming the run's own checkpoint): the generator yields between epochs.
            train(cfg, data, run, val=data, resume=epoch > 1, init=path if epoch == 1 else None,
                    stop_after_epoch=epoch, log=lambda s: None)
            history = _history(run)
            h = history[-1]
            yield Progress(epoch, total, f"epoch {epoch}/{settings.epochs}: loss {h['loss']:.3f} "
                                         f"(boundary F1 {h['val_boundary_f1']:.3f} on this image)")
        out = Path(settings.out).expanduser()
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run / "model.pt", out)
        return RetrainResult(out, history)
    except OSError as err:
        raise MicroSymError(f"{settings.out}: cannot write the fine-tuned model ({err.strerror or err})") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _history(run: Path) -> list:
    import json

    return [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines() if line.strip()]

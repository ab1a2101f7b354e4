"""Scoring a 2D model on labeled micrographs: segment each whole image, then the metrics of
:mod:`micro_sym.metrics` (what ``micro-sym evaluate`` and training validation report).

>>> from micro_sym.io.datasets import LabeledDataset                        # doctest: +SKIP
>>> report = evaluate_model(load_model("default-2d"), LabeledDataset("my_test/"))   # doctest: +SKIP
>>> report["overall"]["grain_f1"]                                           # doctest: +SKIP
"""

from __future__ import annotations

from micro_sym.inference.whole_image import segment_image
from micro_sym.metrics import aggregate, evaluate_sample


def evaluate_model(model, dataset, *, names=None, threshold: float = 5.0, min_size: int | None = None,
                   boundary_threshold: float = 0.5, device="cpu", progress=None, min_gt_size: int = 0, period=None) -> dict:
    """Run :func:`micro_sym.inference.whole_image.segment_image` on labeled samples and score them.

    Parameters
    ----------
    model : SegModel
        Exported for speed if it is an escnn model (same outputs).
    dataset : LabeledDataset or sequence of Sample
    names : list of str, optional
        Subset of sample names (``LabeledDataset`` only).
    progress : callable, optional
        Called with each sample name after it is scored.
    min_size : int, optional
        Smallest grain seed in pixels; default as :func:`~micro_sym.inference.whole_image.segment_image`
        (2 lattice cells where the lattice is measured, else 32), so that ``period="measure"`` scores
        what ``segment`` gives.
    min_gt_size : int
        See :func:`micro_sym.metrics.grain_f1` (default: every true grain counts).
    period : float or "measure", optional
        As :func:`~micro_sym.inference.whole_image.segment_image`: run the network at its training
        period (default: at the images' own sampling).

    Returns
    -------
    dict
        :func:`micro_sym.metrics.aggregate` report (``overall`` and ``images``).
    """
    run = model if getattr(model, "exported", True) else model.export()
    samples = (dataset[n] for n in names) if names is not None else iter(dataset)
    per_image = {}
    for s in samples:
        pred = segment_image(run, s.image, threshold=threshold, min_size=min_size, boundary_threshold=boundary_threshold,
                             device=device, period=period)
        per_image[s.name] = evaluate_sample(pred, s.grains, s.orientation, run.k, boundary_threshold, min_gt_size)
        if progress:
            progress(s.name)
    return aggregate(per_image)

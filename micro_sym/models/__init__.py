"""Segmentation networks, 2D and 3D: the model contract, a registry, model files.

Every model keeps one contract (:mod:`micro_sym.models.base`: ``ndim``, ``k``, ``halo``,
``total_stride``, ``config``, ``normalization``, ``forward``, ``export()``, exact equivariance on
the grid checked by :func:`~micro_sym.models.base.equivariance_error`). 2D models are
:class:`SegModel` (this module's registry, :mod:`micro_sym.models.unet`); 3D models are the
G-CNNs of :mod:`micro_sym.models.gcnn3d` (``arch: gcnn3d``); :mod:`micro_sym.models.fields`
rebuilds either with fewer fields (pruning).

Functions: ``build_model(config)``, ``save_model(model, path, trained_on=, metrics=)``,
``load_model(name_or_path, device="cpu", export=False)`` (``"default-2d"`` is the bundled model in
``micro_sym/weights/default_2d.pt``), ``list_models()``, ``measure_halo(model)``,
``intensity_range(image)``, ``normalize(x, lo, hi)``.

Architectures (``config["arch"]``)
---------------------------------
``unet_equi``
    escnn U-Net over ``group`` (``D4`` = p4m default, ``D8``, ``D16``, ``C1``, ``C4``, ``C8``, ``C16``) with
    regular fields (``widths`` = fields per level, channels = width × |G|), R2Conv + InnerBatchNorm + ReLU,
    2×2 max pooling, bilinear upsampling and concatenating skips. Exactly equivariant to the 8 elements
    of D4 on the pixel grid (for even sizes divisible by ``total_stride``); D8/D16 only approximately.
``unet_plain``
    Same topology in plain torch (``widths`` = channels), the baseline, trained with rot/flip augmentation.

Model files hold ``{"config", "state_dict", "meta"}`` (``torch.load(path, weights_only=True)``);
``meta`` records ``halo``, ``total_stride``, ``trained_on`` (provenance) and ``metrics``.

>>> model = build_model({"arch": "unet_equi", "group": "D4", "widths": [1, 2]})   # doctest: +SKIP
>>> fast = model.export()                                                          # doctest: +SKIP
"""

from micro_sym.models.base import SegmentationModel, check_model, equivariance_error
from micro_sym.models.normalize import PERCENTILES, intensity_range, normalize
from micro_sym.models.registry import (
    BUNDLED,
    SegModel,
    build_model,
    complete_config,
    list_models,
    load_model,
    measure_halo,
    register_model,
    resolve_model_path,
    save_model,
)

__all__ = [
    "BUNDLED", "PERCENTILES", "SegModel", "SegmentationModel", "build_model", "check_model", "complete_config",
    "equivariance_error", "intensity_range", "list_models", "load_model", "measure_halo", "normalize", "register_model",
    "resolve_model_path", "save_model",
]

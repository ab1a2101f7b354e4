"""2D grain-segmentation networks: a model registry, model files, and the SegModel interface.

Interface (a **contract** for predict, tiled inference, the napari plugin, pruning and export)
------------------------------------------------------------------------------------------
``SegModel`` is a ``torch.nn.Module`` with

- ``ndim`` = 2, ``k`` (4 square / 6 hexagonal lattice), ``config`` (complete model config dict),
- ``total_stride``: input H and W must be multiples of it (``predict_image`` pads, reflect mode),
- ``halo``: receptive-field radius in pixels from a gradient probe, rounded up to ``total_stride``
  (stored in the model file); tiles cut with this overlap and origins on the stride reproduce
  whole-image inference,
- ``forward(x)``: ``(B, 1, H, W)`` float32 normalized by :func:`normalize` with the *whole image's*
  :func:`intensity_range` -> ``(B, 3, H, W)``: channel 0 the boundary logit (invariant field),
  channels 1-2 the orientation field ``(cos kθ, sin kθ)`` (docs/design.md §2; decode with
  ``micro_sym.orientation.decode_angle``; the vector length is a confidence),
- ``export()``: a plain-torch ``SegModel`` (``exported=True``, no escnn at run time) with identical
  outputs; run inference on this one (it is several times faster than the escnn module).

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
    "BUNDLED", "PERCENTILES", "SegModel", "build_model", "complete_config", "intensity_range", "list_models",
    "load_model", "measure_halo", "normalize", "register_model", "resolve_model_path", "save_model",
]

"""The contract every segmentation model keeps, 2D and 3D, and its equivariance check.

A model is a ``torch.nn.Module`` with

- ``ndim`` (2 or 3) and ``k`` (2D: rotational order of the lattice pattern, 4 square / 6 hexagonal;
  3D: 24, the cube's rotations);
- ``total_stride``: input sides must be multiples of it (inference pads, reflect mode);
- ``halo``: receptive-field radius in pixels, measured by a gradient probe and rounded up to
  ``total_stride``, stored in the model file; tiles overlapping by ``halo`` reproduce whole-image
  inference (docs/design.md §5);
- ``config``: the complete model config (a registry name in ``arch`` builds it again);
- ``normalization``: ``"pm1"`` (the whole image's robust range to [-1, 1],
  :mod:`micro_sym.models.normalize`) or ``"unit"`` ([0, 1]);
- ``forward(x)``: ``(B, 1, *spatial)`` -> ``(B, C, *spatial)``: channel 0 the boundary logit (an
  invariant field), then the orientation field: 2D ``(cos kθ, sin kθ)``, 3D the cubic-harmonic
  coefficients (docs/design.md §2);
- ``export()``: the same network in plain torch (no escnn at run time), identical outputs to float
  rounding; a deployed file (:mod:`micro_sym.deploy.export`) returns itself.

Every model is equivariant to the exact symmetries of the pixel grid: the 8 elements of D4 in 2D,
the 24 cube rotations in 3D; :func:`equivariance_error` measures it (tests check every shipped,
pruned and exported model with it).

>>> from micro_sym.models import load_model                          # doctest: +SKIP
>>> equivariance_error(load_model("default-2d", export=True))["max"] < 1e-5   # doctest: +SKIP
True
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch

from micro_sym.errors import MicroSymError

#: The 8 elements of D4 as (quarter turns, mirror after the turn).
D4_ELEMENTS = [(r, m) for m in (False, True) for r in range(4)]
#: What inference needs of a model (:func:`check_model`).
REQUIRED = ("ndim", "halo", "total_stride")


@runtime_checkable
class SegmentationModel(Protocol):
    """The attributes and methods of the contract above (for type hints and ``isinstance``)."""

    ndim: int
    k: int
    halo: int
    total_stride: int
    config: dict

    def forward(self, x: torch.Tensor) -> torch.Tensor: ...

    def export(self) -> torch.nn.Module: ...


def check_model(model, name: str = "") -> None:
    """Raise a one-line :class:`MicroSymError` when ``model`` lacks what inference needs."""
    for attr in REQUIRED:
        if not hasattr(model, attr):
            raise MicroSymError(f"model {name or type(model).__name__}: lacks the '{attr}' attribute of the model contract")
    if int(model.ndim) == 2 and not hasattr(model, "k"):
        raise MicroSymError(f"model {name or type(model).__name__}: a 2D model needs 'k' (the lattice's rotational order)")


def transform_output_2d(y: torch.Tensor, r: int, mirror: bool, k: int) -> torch.Tensor:
    """Expected output transform for input ``mirror(rot90(x, r))``: maps move with the image and
    ``(cos kθ, sin kθ)`` turns by ``k·90°·r`` (θ → θ + 90° r), then a mirror (θ → 180° − θ) negates
    ``sin`` for even k (the frequency-k O(2) irrep, docs/design.md §2)."""
    out = torch.rot90(y, r, dims=(-2, -1))
    if mirror:
        out = torch.flip(out, dims=(-1,))
    out = out.clone()
    phi = np.deg2rad(k * 90.0 * r)
    c, s = out[:, 1].clone(), out[:, 2].clone()
    out[:, 1] = float(np.cos(phi)) * c - float(np.sin(phi)) * s
    out[:, 2] = float(np.sin(phi)) * c + float(np.cos(phi)) * s
    if mirror:
        out[:, 2] = -out[:, 2] if k % 2 == 0 else out[:, 2]
    return out


def equivariance_error(model, size: int | None = None, *, seed: int = 0, x: torch.Tensor | None = None) -> dict:
    """Equivariance error over the exact grid symmetries: 8 p4m (D4) elements in 2D, 24 cube rotations in 3D.

    The error of element g is ``max |f(g·x) − g·f(x)| / max |f(x)|`` on a smooth random input.

    Parameters
    ----------
    model : SegModel-like (any form: escnn, exported, deployed file)
    size : int, optional
        Input side (default ``max(64, 2 * total_stride)`` in 2D, ``2 * total_stride`` ≥ 8 in 3D).
    x : tensor, optional
        Use this input instead of a random one.

    Returns
    -------
    dict
        ``max`` over elements and ``per_element`` (list of ``{"element", "error"}``).
    """
    with torch.no_grad():
        model.eval()
    ndim = int(getattr(model, "ndim", 2))
    s = int(model.total_stride)
    if x is None:
        side = size or (max(64, 2 * s) if ndim == 2 else max(8, 2 * s))
        side = -(-side // s) * s
        g = torch.Generator().manual_seed(seed)
        x = torch.randn((1, 1) + (side,) * ndim, generator=g)
        # Smooth a little: white noise is dominated by pixel-scale content the grid maps exactly
        # anyway; smooth inputs exercise larger receptive fields as real images do.
        pool = torch.nn.functional.avg_pool2d if ndim == 2 else torch.nn.functional.avg_pool3d
        x = pool(x, 3, 1, 1) * 3.0
    with torch.inference_mode():
        return _equivariance(model, x, ndim)


def _equivariance(model, x, ndim):
    y = model(x)
    scale = max(float(y.abs().max()), 1e-12)
    per = []
    if ndim == 2:
        k = int(model.k)
        for r, m in D4_ELEMENTS:
            xt = torch.rot90(x, r, dims=(-2, -1))
            xt = torch.flip(xt, dims=(-1,)) if m else xt
            err = float((model(xt) - transform_output_2d(y, r, m, k)).abs().max()) / scale
            per.append({"element": f"rot{90 * r}{'+mirror' if m else ''}", "error": err})
    else:
        from micro_sym.models.gcnn3d import cube_grid_rotations, rotate_output, rotate_volume

        degrees = tuple(getattr(model, "degrees", (4,)))
        for gi, rot in enumerate(cube_grid_rotations()):
            err = float((model(rotate_volume(x, rot)) - rotate_output(y, gi, degrees)).abs().max()) / scale
            per.append({"element": f"rot{gi}", "error": err})
    return {"max": max(p["error"] for p in per), "per_element": per}

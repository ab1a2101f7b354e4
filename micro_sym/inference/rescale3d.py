"""Run a 3D network at its training lattice period on volumes of any voxel size (docs/design.md §6.2).

Atomic electron tomography reconstructs at 0.3-1 Å per voxel, so lattice periods range over ~3-15
voxels, while a 3D network saw one period in training (default-3d: 6 voxels). As for 2D
(:mod:`micro_sym.inference.rescale`; both use :class:`~.resampling.RescaledNetwork`), every tile is resampled by ``scale = f_image / f_model`` (first lattice rings) onto a global
grid defined per axis, the network runs there, and its outputs are resampled back onto the tile's
own voxels.

The outputs are the boundary logit and the cubic-harmonic coefficients of the orientation field
(docs/design.md §2). An isotropic change of sampling moves the field without rotating it, so every
channel resamples on its own, like 2D's ``cos kθ, sin kθ``. The same grid on every axis of a cubic
volume (an even number of samples, padding split equally) maps onto itself under the 24 cube
rotations, so the wrapped network stays exactly equivariant; with :attr:`RescaledNetwork.halo`,
tiles equal the whole volume to float rounding (tests/inference/test_rescale3d.py).
"""

from __future__ import annotations

from micro_sym.inference.resampling import RescaledNetwork, resampling_scale

__all__ = ["model_period_3d", "rescale_for_input_3d"]


def model_period_3d(net) -> float | None:
    """Spacing (voxels) of the first lattice ring of a 3D network's training volumes, or None.

    The model file's ``lattice_period_px`` (default-3d: 6 voxels, the period of the simple-cubic
    volumes of ``micro_sym/configs/train_3d_synth.yaml``, whose first ring ({100}) is at ``1/a``); a
    network without it is unknown and runs unresampled.
    """
    return getattr(net, "lattice_period", None)


def rescale_for_input_3d(net, volume, *, period: float | None = None, measured: dict | None = None,
                         previous: dict | None = None, workers: int = 1):
    """``(network, record)`` for one volume (an array or a lazy one: at most 8 tiles are read):
    ``net`` wrapped in a :class:`RescaledNetwork` when the volume's first lattice ring differs from
    the model's by more than 5 %, and the record of what was measured (or given), for the manifest.

    ``period`` (``--period``) is the volume's first-ring spacing in voxels (the lattice constant of a
    simple-cubic lattice, ``a/√3`` for fcc, ``a/√2`` for bcc); without it the ring is measured
    (:func:`micro_sym.classical.measure_lattice_3d`) unless already ``measured``. A resumed run
    (``previous`` = its manifest) reuses its recorded scale. A network without a known training
    period (:func:`model_period_3d`) runs as it is (record None).
    """
    model_period = model_period_3d(net)
    if net.ndim != 3 or not model_period:
        return net, None
    old = ((previous or {}).get("method") or {}).get("scale")
    if old:
        record = dict(old)
    elif period is not None:
        record = {"source": "given", "lattice": str(net.symmetry), "period_px": float(period),
                  "model_period_px": float(model_period), "scale": float(model_period) / float(period)}
    else:
        # "lattice": the network's (cubic), which the CLI prints; the first ring is matched whatever
        # the cubic family (sc, fcc, bcc), so it is not measured.
        measured = {"lattice": str(net.symmetry), **(measured or _measure(volume, workers))}
        if not measured.get("found"):
            record = {"source": "unmeasured", **measured, "model_period_px": float(model_period)}
        else:  # s = f_image / f_model moves the volume's first ring onto the model's
            record = {"source": "measured", **measured, "model_period_px": float(model_period),
                      "scale": float(measured["ring_frequency"]) * float(model_period)}
    scale = resampling_scale(record)
    if scale is None:
        return net, record
    return RescaledNetwork(net, scale, volume.shape), record


def _measure(volume, workers: int) -> dict:
    """The volume's first lattice ring (``found`` False, with a ``reason``, where it has none)."""
    import dask

    from micro_sym.classical import measure_lattice_3d

    with dask.config.set(scheduler="threads"):  # the input's store need not be serializable
        return measure_lattice_3d(volume, workers=max(1, int(workers)))

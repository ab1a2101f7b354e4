"""Run a 2D network at its training lattice period on images of any period (docs/design.md §6).

A network learned its lattice at one scale: the bundled 2D models saw columns 8 px apart and fail at
4 or 23 px. :class:`RescaledNetwork` wraps a :class:`~.network.Network` so that every tile is
resampled by ``scale = model period / image period`` before the network and its outputs are resampled
back onto the tile's own pixels, so the maps, grains and statistics stay on the input grid.

The resampled image is defined globally, per axis: an image of ``n`` pixels becomes ``m ≈
n·scale`` samples (the nearest even number), sample ``u`` lying at input coordinate ``(u + 0.5)·n/m − 0.5`` (pixel
areas map onto pixel areas, so both image ends map symmetrically and a square image keeps its D4
symmetry exactly). Each tile computes exactly the samples of that global image it holds, on the
whole image's stride grid, with the same reflect padding at image edges, and resamples with a local
kernel (Keys cubic, widened by the sampling step when down-sampling, which makes it an
anti-aliasing filter). With the halo of :attr:`RescaledNetwork.halo`, tiles therefore reproduce
whole-image inference to float rounding, as the plain network does.
"""

from __future__ import annotations

from micro_sym.inference.resampling import TOLERANCE, RescaledNetwork, keys_cubic, resample_weights, resampling_scale
from micro_sym.errors import MicroSymError

__all__ = ["RescaledNetwork", "TOLERANCE", "adapt_to_image", "check_measured_lattice", "keys_cubic", "resample_weights",
           "rescale_for_input"]


def adapt_to_image(net, image, *, period: float | None = None, measured: dict | None = None,
                   previous: dict | None = None, workers: int = 1, lattice_mask: bool = True):
    """``(network, scale, ring)``: ``net`` made ready for one image, as every path runs it.

    A 2D :class:`~.network.Network` runs at its training lattice period (:func:`rescale_for_input`;
    ``scale`` is its record); with ``lattice_mask`` the network, or the classical method, leaves
    pixels without a lattice out of every grain (:class:`~.lattice_mask.LatticeMasked` at the
    first-ring frequency ``ring``, None where unknown). A 3D network runs at its training period too
    (:mod:`.rescale3d`); volumes get no lattice mask.
    """
    from micro_sym.inference.lattice_mask import LatticeMasked, lattice_ring
    from micro_sym.inference.network import Network

    if len(image.shape) == 3 and isinstance(net, Network):
        net, scale = rescale_for_input(net, image, period=period, measured=measured, previous=previous,
                                       workers=workers)
        return net, scale, None
    if len(image.shape) != 2:
        return net, None, None
    base, scale = net, None
    if isinstance(net, Network):
        net, scale = rescale_for_input(net, image, period=period, measured=measured, previous=previous,
                                       workers=workers)
    ring = lattice_ring(base, scale) if lattice_mask else None
    return (LatticeMasked(net, ring) if ring else net), scale, ring


def check_measured_lattice(net, scale: dict | None, lattice: str | None = None, models: dict | None = None) -> None:
    """Refuse a 2D network on an image whose measured lattice is a family it does not map.

    A square network's angles on a hexagonal lattice (or the reverse) mean nothing, and nothing in
    the maps would show it. ``scale`` is :func:`rescale_for_input`'s record; only a measured square or
    hexagonal family counts (fringes carry none). ``lattice``: the user's ``--lattice``, which runs the
    network anyway. ``models``: lattice family -> a bundled model that maps it, named in the message.

    Raises
    ------
    MicroSymError
        One line naming the measured family and what maps it.
    """
    if lattice is not None or not scale or scale.get("source") != "measured" or getattr(net, "ndim", 2) != 2:
        return
    family = scale.get("lattice")
    if family in ("square", "hexagonal") and family != net.symmetry:
        other = (models or {}).get(family)
        raise MicroSymError(f"the image's lattice measures {family}, which model '{net.name}' does not map "
                            f"({net.symmetry} only): use --method auto{f' or --model {other}' if other else ''}, "
                            f"or --lattice {net.symmetry} to run it anyway")


def rescale_for_input(net, image, *, period: float | None = None, measured: dict | None = None,
                      previous: dict | None = None, workers: int = 1):
    """``(network, record)`` for one 2D image (an array, or a lazy one: at most 16 tiles are read):
    ``net`` wrapped in a :class:`RescaledNetwork` when the image's lattice period differs from the
    model's, and the record of what was measured (or given).

    ``period`` (``--period``) is the image's lattice constant in px, in the model's lattice convention;
    without it the period comes from the power spectrum (:func:`micro_sym.classical.measure_lattice`,
    at most 16 tiles read), unless already ``measured`` (:meth:`LatticeMeasurement.as_dict`, e.g. by
    ``--method auto``). A resumed run (``previous`` = its manifest) reuses its recorded scale.
    Networks without a known training period (files older than ``lattice_period_px``) run as they
    are (record None). 3D networks and volumes: :func:`.rescale3d.rescale_for_input_3d`.
    """
    if net.ndim == 3:
        from micro_sym.inference.rescale3d import rescale_for_input_3d

        return rescale_for_input_3d(net, image, period=period, measured=measured, previous=previous, workers=workers)
    if net.ndim != 2 or not getattr(net, "lattice_period", None):
        return net, None
    old = ((previous or {}).get("method") or {}).get("scale")
    if old:
        record = dict(old)
    elif period is not None:
        record = {"source": "given", "period_px": float(period), "model_period_px": net.lattice_period,
                  "scale": float(net.lattice_period) / float(period)}
    else:
        record = _scale_record(net, measured or _measure(image, workers))
    scale = resampling_scale(record)
    if scale is None:
        return net, record
    return RescaledNetwork(net, scale, image.shape), record


def _measure(image, workers: int) -> dict:
    """The image's lattice from its power spectrum (``{"reason": ...}`` where it has none)."""
    import dask

    from micro_sym.classical import measure_lattice
    from micro_sym.errors import MicroSymError

    try:
        with dask.config.set(scheduler="threads"):  # the input's store need not be serializable
            return measure_lattice(image, workers=max(1, int(workers))).as_dict()
    except MicroSymError as err:
        return {"reason": str(err).removeprefix("image: ")}


def _scale_record(net, measured: dict) -> dict:
    """Where the image's first lattice ring lies against the model's: resampling by their ratio moves
    the image's ring onto the model's.
    Without a measurable lattice the network runs at the image's own sampling."""
    from micro_sym.classical import ring_frequency

    if not measured.get("ring_frequency"):
        return {"source": "unmeasured", **measured, "model_period_px": net.lattice_period}
    model_ring = ring_frequency(net.lattice_period, net.symmetry)
    return {"source": "measured", **measured, "model_period_px": net.lattice_period,
            "scale": measured["ring_frequency"] / model_ring}

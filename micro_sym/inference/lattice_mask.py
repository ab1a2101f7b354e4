"""Grains only where the image shows its lattice (docs/design.md §6.3).

:class:`LatticeMasked` wraps a network (plain or resampled) or the classical method: next to its
outputs every tile gets the local ring contrast (:func:`micro_sym.classical.crystallinity.ring_contrast`),
and wherever it is below :data:`~micro_sym.classical.crystallinity.CRYSTALLINE_CONTRAST` the decoded
boundary map is 1. Every grain rule leaves boundary pixels unassigned (grain 0), so vacuum, amorphous
film and crystals off their zone axis get no grain, and the written boundary map reads "not inside a
grain": a grain boundary, or no lattice.
"""

from __future__ import annotations

import math

import numpy as np

from micro_sym.classical.crystallinity import CRYSTALLINE_CONTRAST, ring_contrast, ring_contrast_halo


class LatticeMasked:
    """``net`` whose boundary map is 1 where the local ring contrast at ``ring_frequency`` (cycles/px)
    is below ``threshold``; everything else is delegated to ``net``."""

    def __init__(self, net, ring_frequency: float, threshold: float = CRYSTALLINE_CONTRAST):
        self.net = net
        self.ring_frequency = float(ring_frequency)
        self.threshold = float(threshold)
        stride = max(1, int(net.total_stride))
        self.halo = int(math.ceil(max(net.halo, ring_contrast_halo(self.ring_frequency)) / stride) * stride)
        self.out_channels = (net.out_channels or 3) + 1

    def __getattr__(self, name):  # ndim, k, symmetry, total_stride, normalize, grain_rule, ...
        if name == "net":
            raise AttributeError(name)
        return getattr(self.net, name)

    def forward_tiles(self, blocks, xs, device: str = "cpu") -> np.ndarray:
        """The wrapped outputs of tiles ``xs`` with the ring contrast as one more channel."""
        inner = getattr(self.net, "forward_tiles", None)
        y = inner(blocks, xs, device) if inner else self.net.forward(xs, device)
        contrast = np.stack([ring_contrast(x, self.ring_frequency, workers=1) for x in xs])[:, None]
        return np.concatenate([y, contrast.astype(y.dtype)], axis=1)

    def decode(self, y: np.ndarray) -> dict:
        maps = self.net.decode(y[:-1])
        maps["boundary"] = self._mask(maps["boundary"], y[-1])
        return maps

    def boundary_of(self, y: np.ndarray) -> np.ndarray:
        return self._mask(self.net.boundary_of(y[:-1]), y[-1])

    def _mask(self, boundary, contrast) -> np.ndarray:
        return np.where(contrast >= self.threshold, boundary, np.float32(1.0)).astype(np.float32, copy=False)


def lattice_ring(net, scale: dict | None) -> float | None:
    """The first-ring frequency (cycles/px) of an input's lattice, as a run knows it: the classical
    method's period, or what a network's input measured (or was given, ``--period``); None if unknown."""
    from micro_sym.classical import ring_frequency
    from micro_sym.inference.classical import ClassicalMethod

    if isinstance(net, ClassicalMethod):
        return ring_frequency(net.period, net.lattice) if net.period else None
    if not scale:
        return None
    if scale.get("ring_frequency"):
        return float(scale["ring_frequency"])
    if scale.get("period_px"):
        return ring_frequency(scale["period_px"], net.symmetry)
    return None


def grain_lattice(net, scale: dict | None) -> dict | None:
    """How each grain's lattice angle is measured for one input (:mod:`micro_sym.classical.grain_lattice`):
    ``{"ring_frequency", "lattice", "k"}``, or None where the lattice ring is unknown.

    The lattice family is the one measured on the image (square or hexagonal; the classical method's
    own), else the network's; an image measured as one set of fringes keeps the network's family, so
    that its grains showing a 2D lattice still read at its order.
    """
    from micro_sym.classical.grain_lattice import lattice_order
    from micro_sym.inference.classical import ClassicalMethod

    ring = lattice_ring(net, scale)
    if ring is None:
        return None
    family = net.lattice if isinstance(net, ClassicalMethod) else (scale or {}).get("lattice")
    if family not in ("square", "hexagonal"):
        family = "hexagonal" if net.symmetry == "hexagonal" else "square"
    return {"ring_frequency": float(ring), "lattice": family, "k": lattice_order(family)}

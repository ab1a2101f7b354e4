"""Grains only where the image shows its lattice (docs/design.md §6.3).

:class:`LatticeMasked` wraps a network (plain or resampled) or the classical method: next to its
outputs every tile gets the local ring contrast inside crystals
(:func:`micro_sym.classical.crystallinity.crystalline_contrast`), and wherever it is below
:data:`~micro_sym.classical.crystallinity.CRYSTALLINE_CONTRAST` the decoded boundary map is 1. Every
grain rule leaves boundary pixels unassigned (grain 0), so vacuum, amorphous film and crystals off
their zone axis get no grain, and the written boundary map reads "not inside a grain": a grain
boundary, or no lattice.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from micro_sym.classical.crystallinity import CRYSTALLINE_CONTRAST, crystalline_contrast, crystalline_halo
from micro_sym.orientation.symmetry import SQUARE
from micro_sym.orientation.symmetry import lattice as find_lattice


class LatticeMasked:
    """``net`` whose boundary map is 1 where the local ring contrast at ``ring_frequency`` (cycles/px)
    is below ``threshold``; everything else is delegated to ``net``.

    ``margin``: how far beyond a block's core the engine reads its outputs (the seeded rule's
    :func:`~micro_sym.grains.rules.seed_margin`). Given it, each tile's network runs only on the part of
    the tile it needs for exact outputs there (``net.halo`` + ``margin`` around the core): the ring
    contrast's halo is usually the wider one, and the network is the expensive part. Outside that part
    the network's outputs are zero; None runs the network on the whole tile.
    """

    def __init__(self, net, ring_frequency: float, threshold: float = CRYSTALLINE_CONTRAST, margin: int | None = None):
        self.net = net
        self.ring_frequency = float(ring_frequency)
        self.threshold = float(threshold)
        self.margin = None if margin is None else int(margin)
        stride = max(1, int(net.total_stride))
        self.halo = int(math.ceil(max(net.halo, crystalline_halo(self.ring_frequency)) / stride) * stride)
        self.out_channels = (net.out_channels or 3) + 1

    def __getattr__(self, name):  # ndim, k, symmetry, total_stride, normalize, grain_rule, ...
        if name == "net":
            raise AttributeError(name)
        return getattr(self.net, name)

    def forward_tiles(self, blocks, xs, device: str = "cpu") -> np.ndarray:
        """The wrapped outputs of tiles ``xs`` with the ring contrast as one more channel."""
        contrast = [crystalline_contrast(x, self.ring_frequency, workers=1, context=self._context(b, x))
                    for b, x in zip(blocks, xs)]
        # Each output is written once into the result (stacking and concatenating tile-sized arrays
        # copied them three times).
        if self.margin is None:
            y = self._network(blocks, xs, device)
            out = np.empty((y.shape[0], y.shape[1] + 1, *y.shape[2:]), y.dtype)
            out[:, :-1] = y
        else:
            out = None
            for i, (b, x) in enumerate(zip(blocks, xs)):
                y, part = self._network_on_part(b, x, device)
                if out is None:  # outside each part the network's outputs are 0
                    out = np.zeros((len(xs), y.shape[0] + 1, *x.shape), y.dtype)
                out[(i, slice(0, -1), *part)] = y
        for i, c in enumerate(contrast):
            out[i, -1] = c
        return out

    def _context(self, block, x) -> list | None:
        """How far the tile ``x`` reaches beyond the part of it the engine reads (the core grown by
        ``margin``), per axis and side; None where that part is not known."""
        if self.margin is None:
            return None
        return [(c.start - self.margin, n - c.stop - self.margin) for c, n in zip(block.crop, x.shape)]

    def _network(self, blocks, xs, device) -> np.ndarray:
        inner = getattr(self.net, "forward_tiles", None)
        return inner(blocks, xs, device) if inner else self.net.forward(xs, device)

    def _network_on_part(self, block, x, device) -> tuple:
        """The network's outputs on one tile, computed on the tile cut to ``net.halo + margin`` around
        the core (in whole strides, so the part keeps the tile's stride grid): ``(outputs, part)``,
        ``part`` the slices of the tile they cover."""
        stride = max(1, int(self.net.total_stride))
        keep = int(math.ceil((self.net.halo + self.margin) / stride) * stride)
        cut = []
        for c, n in zip(block.crop, x.shape):
            before = (max(c.start - keep, 0) // stride) * stride
            after = (max(n - c.stop - keep, 0) // stride) * stride
            cut.append((before, after))
        part = tuple(slice(b, n - a) for (b, a), n in zip(cut, x.shape))
        if not any(b or a for b, a in cut):
            return self._network([block], x[None], device)[0], part
        # The inner network sees the part as its tile: the same image region (the resampling wrapper
        # places it by ``tile``), cut where no padding lies (padding sits at the tile ends only).
        shifted = dataclasses.replace(
            block, tile=tuple(slice(t.start + b - p0, t.stop - a + p1) for t, (b, a), (p0, p1) in zip(block.tile, cut, block.pad)),
            crop=tuple(slice(c.start - b, c.stop - b) for c, (b, _) in zip(block.crop, cut)),
            pad=tuple((0 if b else p0, 0 if a else p1) for (b, a), (p0, p1) in zip(cut, block.pad)))
        return self._network([shifted], x[part][None], device)[0], part

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
    that its grains showing a 2D lattice still read at its order (the fringes network's: k = 2).
    """
    from micro_sym.classical.grain_lattice import lattice_order
    from micro_sym.inference.classical import ClassicalMethod

    ring = lattice_ring(net, scale)
    if ring is None:
        return None
    family = net.lattice if isinstance(net, ClassicalMethod) else (scale or {}).get("lattice")
    if family not in ("square", "hexagonal"):  # fringes carry no family: the network's own
        family = find_lattice(net.symmetry, ndim=2, default=SQUARE).name
    return {"ring_frequency": float(ring), "lattice": family, "k": lattice_order(family)}


def measure_grains(image, grains, setting: dict) -> dict:
    """:func:`~micro_sym.classical.grain_lattice.grain_sums` of every grain of a whole label map."""
    from micro_sym.classical.grain_lattice import ring_sums

    return ring_sums(image, grains, ring_frequency=setting["ring_frequency"], k=setting["k"])


def weak_lattice_lut(sums: dict, n_grains: int) -> np.ndarray | None:
    """Grain ids ``0..n_grains`` -> the ids left once the grains that show no lattice at their ring
    (:func:`~micro_sym.classical.grain_lattice.lattice_shown`, grains too small to measure included)
    are left out: those get 0, the others stay consecutive in their order. None when every grain shows it."""
    from micro_sym.classical.grain_lattice import lattice_shown

    keep = np.zeros(n_grains + 1, bool)
    keep[np.asarray(sums["ids"], np.int64)[lattice_shown(sums)]] = True
    keep[0] = False
    if keep[1:].all():
        return None
    lut = np.zeros(n_grains + 1, np.uint32)
    lut[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.uint32)
    return lut


def drop_weak_lattice(image, grains, setting: dict) -> np.ndarray:
    """A network's grains of a whole image without those that show no lattice (:func:`weak_lattice_lut`),
    renumbered as the block engine renumbers them for any tiling."""
    grains = np.asarray(grains)
    lut = weak_lattice_lut(measure_grains(image, grains, setting), int(grains.max(initial=0)))
    return grains if lut is None else lut[grains]


def renumbered_sums(sums: dict, lut: np.ndarray) -> dict:
    """``sums`` of the grains ``lut`` keeps, under their new ids."""
    new = lut[np.asarray(sums["ids"], np.int64)]
    kept = new > 0
    return {"ids": new[kept].astype(np.int64)} | {key: np.asarray(sums[key])[kept] for key in ("ck", "c2", "c0")}


def renumbered_table(table: dict, lut: np.ndarray) -> dict:
    """The rows of a grain table (column ``grain``) whose grains ``lut`` keeps, under their new ids."""
    new = lut[np.asarray(table["grain"], np.int64)]
    kept = new > 0
    return {name: (new[kept].astype(np.asarray(values).dtype) if name == "grain" else np.asarray(values)[kept])
            for name, values in table.items()}

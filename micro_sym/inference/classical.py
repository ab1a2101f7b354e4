"""The classical Gabor filter bank (:mod:`micro_sym.classical`) as the block engine runs it.

:class:`ClassicalMethod` has the interface the engine uses of a :class:`~.network.Network`
(``ndim``, ``halo``, ``total_stride``, ``normalize``/``forward``/``decode``, ``symmetry``, ``name`` and
``sha256`` for the run manifest), so ``micro-sym segment --method classical`` is block-wise, resumable
and writes the same outputs as a network run (``boundary``, ``orientation``, ``grains``,
``NAME_grains.csv``). What differs:

- **Lattice and period, once per input.** Before planning, :meth:`ClassicalMethod.for_input` fixes
  the lattice family and period for the whole input: the ``--lattice`` and ``--period`` given, else
  measured from the whole image (:func:`micro_sym.classical.measure_lattice`, or
  :func:`~micro_sym.classical.estimate_period` when only the family is given; read lazily: at most 16
  Welch tiles of 512², however large the input). Fringes (one set of planes) have no family and are
  mapped as square. Both are stored in the run manifest (``method.lattice``, ``method.period``) and a
  resumed run reuses them instead of measuring again. Halo and stride follow from them.
- **Tiles.** With a fixed period the filter bank's output at a pixel depends only on the input within
  :func:`~micro_sym.classical.classical_halo` px, computed on a grid decimated by
  :func:`~micro_sym.classical.classical_stride` px anchored at the array origin. It handles any tile
  size itself, so tiles are planned unpadded with origins and halo on that grid
  (:func:`~.blocks.plan_blocks` with ``pad=False``), and the centre crops equal whole-image
  ``classical_orientation_map(image, period=P, close=False)``.
- **No boundary closing.** Inside blocks the maps come from
  :func:`~micro_sym.classical.classical_orientation_map` with ``close=False``: the watershed gap
  closing of :func:`~micro_sym.classical.close_boundaries` (applied by ``micro-sym classical``) is a
  whole-image step, not tile-local. Boundaries are the orientation-jump score alone, so low-angle
  boundaries can leak more than with ``micro-sym classical``.
- **Grain rule.** The plain pair rule at the grain threshold (no region merging), as
  :func:`~micro_sym.classical.classical_segment`.
- **Intensities** are used raw (the filter bank is invariant to affine intensity changes); non-finite
  pixels take the middle of the image's robust intensity range.

>>> from micro_sym.inference import segment                                   # doctest: +SKIP
>>> segment(["big.tif"], "out/", method="classical", lattice="hexagonal")     # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import pickle
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

import numpy as np

from micro_sym.classical import (
    DEFAULT_SIGMA,
    DEFAULT_SMOOTH,
    classical_halo,
    classical_orientation_map,
    classical_stride,
    estimate_period,
)
from micro_sym.errors import MicroSymError
from micro_sym.orientation.symmetry import lattice as find_lattice


def _source_hash() -> str:
    """Hash of the filter bank's code: a changed algorithm must not resume an old run."""
    import micro_sym.classical as mod

    return hashlib.sha256(Path(mod.__file__).read_bytes()).hexdigest()


@dataclass(frozen=True)
class ClassicalMethod:
    """Training-free orientation mapping with the block engine's network interface.

    Parameters
    ----------
    lattice : {"square", "hexagonal"} or None
        Projected lattice symmetry: angles mod 90° or mod 60°. ``None``: measured once per input by
        :meth:`for_input`.
    period : float, optional
        Lattice constant in px. ``None``: estimated once per input by :meth:`for_input`.
    sigma, smooth : float
        Filter window and energy smoothing in lattice periods (:func:`~micro_sym.classical.classical_orientation_map`).
    threshold : float
        Grain misorientation threshold (deg); the boundary score is 0.5 there. Set by :meth:`for_input`
        from the run's ``threshold``.
    period_source, lattice_source : str
        ``"given"`` or ``"estimated"`` / ``"measured"`` (recorded in the manifest).
    workers : int
        FFT threads per block task.

    Examples
    --------
    >>> m = ClassicalMethod("square", period=8.0)
    >>> m.ndim, m.halo, m.total_stride, m.name
    (2, 99, 3, 'classical-square')
    """

    lattice: str = "square"
    period: float | None = None
    sigma: float = DEFAULT_SIGMA
    smooth: float = DEFAULT_SMOOTH
    threshold: float = 5.0
    period_source: str = "given"
    workers: int = 1
    lattice_source: str = "given"

    ndim: ClassVar[int] = 2
    #: Tiles are not padded to the stride (see :func:`~.blocks.plan_blocks`, ``pad=False``).
    pad_to_stride: ClassVar[bool] = False
    #: For :func:`~.blocks.estimate_memory`: about 72 bytes per tile pixel (float64 spectrum, float32
    #: maps and energies), as a conv net of this width would need.
    width: ClassVar[int] = 8
    out_channels: ClassVar[int] = 2
    module: ClassVar[object] = None

    def __post_init__(self):
        if self.lattice is not None:
            find_lattice(self.lattice, ndim=2, where="--lattice")
        if self.period is not None and self.lattice is not None:
            p = self.period
            if not (isinstance(p, (int, float, np.floating, np.integer)) and np.isfinite(p) and p > 0):
                raise MicroSymError(f"--period {p}: expected a positive number of pixels")
            object.__setattr__(self, "period", float(p))
            classical_stride(self.period, lattice=self.lattice, sigma=self.sigma)  # too fine, < 2 px: one-line error

    # ---------------------------------------------------------------- what the engine reads
    @property
    def k(self) -> int:
        return find_lattice(self.lattice).k

    @property
    def symmetry(self) -> str:
        return self.lattice

    @property
    def name(self) -> str:
        return f"classical-{self.lattice}"

    def _fixed_period(self) -> float:
        if self.period is None:
            raise MicroSymError("classical method: the period is not fixed yet (call for_input first)")
        return self.period

    @property
    def halo(self) -> int:
        """:func:`~micro_sym.classical.classical_halo`, a multiple of :attr:`total_stride`."""
        return classical_halo(self._fixed_period(), lattice=self.lattice, sigma=self.sigma, smooth=self.smooth)

    @property
    def total_stride(self) -> int:
        """The filter bank's decimation step: tile origins must lie on multiples of it."""
        return classical_stride(self._fixed_period(), lattice=self.lattice, sigma=self.sigma)

    @property
    def sha256(self) -> str:
        """Stable identity for the run manifest: every setting that changes the output, and the code."""
        settings = {"method": "classical", "lattice": self.lattice, "period": self.period, "sigma": self.sigma,
                    "smooth": self.smooth, "threshold": float(self.threshold), "close": False}
        h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
        h.update(_source_hash().encode())
        return h.hexdigest()

    def method_info(self) -> dict:
        """What the manifest and the output's attributes record (the period is reused on resume)."""
        return {"name": "classical", "lattice": self.lattice, "lattice_source": self.lattice_source,
                "period": self.period, "period_source": self.period_source, "sigma": self.sigma,
                "smooth": self.smooth, "close_boundaries": False}

    def grain_rule(self, threshold: float, ndim: int = 2) -> dict:
        """The plain pair rule at the grain threshold, as :func:`~micro_sym.classical.classical_segment`."""
        from micro_sym.grains.rules import pair_rule

        return pair_rule(threshold)

    # ---------------------------------------------------------------- per input
    def for_input(self, img, *, threshold: float = 5.0, previous: dict | None = None, workers: int = 1):
        """This method with the lattice and period fixed for one opened input (``micro_sym.io.Image``).

        Order: the ``lattice`` and ``period`` given; else those a previous, interrupted run of this
        input measured (``previous`` = its manifest), so a resume reuses them; else measured from
        the whole image, reading at most 16 tiles.

        Raises
        ------
        MicroSymError
            The input is not 2D, too small, or shows no lattice.
        """
        shape = tuple(img.data.shape)
        if img.ndim != 2:
            kind = {3: "a 3D volume"}.get(img.ndim, f"{img.ndim}D")
            raise MicroSymError(f"{img.path}: the classical method needs a 2D image, but the input is {kind} of shape {shape}")
        if min(shape) < 16:
            raise MicroSymError(f"{img.path}: too small for the classical method ({shape[0]} x {shape[1]}); "
                                f"need at least 16 x 16 pixels")
        lattice, lattice_source = self.lattice, self.lattice_source
        period, source = self.period, self.period_source
        old = (previous or {}).get("method") or {}
        resumable = old.get("name") == "classical" and (lattice is None or old.get("lattice") == lattice)
        if lattice is None and resumable and old.get("lattice_source") == "measured":
            lattice, lattice_source = old["lattice"], "measured"
        if period is None and resumable and old.get("period_source") == "estimated" and old.get("period") is not None:
            period, source = float(old["period"]), "estimated"
        if lattice is None:
            lattice, measured_period = self._measure(img, workers)
            lattice_source = "measured"
            if period is None:
                period, source = measured_period, "estimated"
        elif period is None:
            period, source = self._estimate(img, lattice, workers), "estimated"
        try:
            net = replace(self, lattice=lattice, lattice_source=lattice_source, period=float(period), period_source=source,
                          threshold=float(threshold), workers=max(1, int(workers)))
        except MicroSymError as err:
            raise MicroSymError(f"{img.path}: {err}") from None
        return net

    def _measure(self, img, workers: int) -> tuple[str, float]:
        """The input's lattice family (fringes: square) and lattice constant in that family's convention."""
        from micro_sym.classical import lattice_constant, measure_lattice

        m = self._read(img, lambda: measure_lattice(img.data, workers=max(1, int(workers))))
        return m.family(), lattice_constant(m.ring_frequency, m.family())

    def _estimate(self, img, lattice: str, workers: int) -> float:
        return self._read(img, lambda: estimate_period(img.data, lattice, workers=max(1, int(workers))))

    @staticmethod
    def _read(img, measure):
        """``measure()`` on a lazily read input, its errors as one line naming the input."""
        import dask

        try:
            # Local threads even under a distributed Client: the input's store need not be serializable.
            with dask.config.set(scheduler="threads"):
                return measure()
        except MicroSymError as err:
            raise MicroSymError(f"{img.path}: {err}") from None
        except Exception as err:  # a damaged chunk among the sampled tiles: name it
            from micro_sym.io.images import locate_bad_chunk

            whole = tuple(slice(0, n) for n in img.data.shape)
            raise MicroSymError(f"{img.path}: {locate_bad_chunk(img, whole, err)}") from None

    # ---------------------------------------------------------------- per tile
    def normalize(self, x: np.ndarray, lo: float, hi: float) -> np.ndarray:
        """Raw intensities as float32; non-finite pixels -> the middle of the image's ``[lo, hi]``."""
        x = np.asarray(x, np.float32)
        finite = np.isfinite(x)
        return x if finite.all() else np.where(finite, x, np.float32(0.5 * (float(lo) + float(hi))))

    def forward(self, x: np.ndarray, device: str = "cpu") -> np.ndarray:
        """Tiles ``(B, H, W)`` -> ``(B, 2, H, W)``: boundary score and orientation (degrees).

        ``classical_orientation_map(close=False)`` per tile. A featureless (constant) tile has no
        lattice: orientation 0 and no boundary, as the map gives where the energy vanishes.
        ``device`` is ignored (CPU FFTs).
        """
        x = np.asarray(x, np.float32)
        out = np.zeros((len(x), 2) + x.shape[1:], np.float32)
        for i, tile in enumerate(x):
            lo, hi = float(tile.min()), float(tile.max())
            if hi - lo <= 1e-6 * max(abs(lo), abs(hi), 1e-30):
                continue
            maps = classical_orientation_map(tile, lattice=self.lattice, period=self._fixed_period(), sigma=self.sigma,
                                             smooth=self.smooth, threshold=self.threshold, close=False,
                                             workers=self.workers)
            out[i, 0], out[i, 1] = maps["boundary"], maps["orientation"]
        return out

    def decode(self, y: np.ndarray) -> dict:
        """``(2, *spatial)`` from :meth:`forward` -> ``boundary`` and ``orientation`` float32 maps."""
        return {"boundary": np.ascontiguousarray(y[0], np.float32), "orientation": np.ascontiguousarray(y[1], np.float32)}

    def to_bytes(self) -> bytes:
        """Pickle (a few hundred bytes: settings only), for process and Dask workers."""
        return pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)

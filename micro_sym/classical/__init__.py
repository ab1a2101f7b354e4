"""The classical (training-free) method: lattice period from the power spectrum and a Gabor filter bank.

:mod:`micro_sym.classical.filter_bank` holds the method; this package exposes its public functions.
The block engine's adapter (tiles, halo, manifest) is :mod:`micro_sym.inference.classical`.

>>> from micro_sym.classical import classical_segment        # doctest: +SKIP
>>> out = classical_segment(image, lattice="square")          # doctest: +SKIP
>>> out["grains"].max(), out["period"]                        # doctest: +SKIP
"""

from micro_sym.classical.filter_bank import (
    DEFAULT_MIN_SIZE,
    DEFAULT_SIGMA,
    DEFAULT_SMOOTH,
    boundary_score,
    classical_halo,
    classical_orientation_map,
    classical_segment,
    classical_stride,
    close_boundaries,
    estimate_period,
    fringe_snr,
    lattice_constant,
    radial_power_spectrum,
    ring_frequency,
)
from micro_sym.classical.lattice_measure import LatticeMeasurement, measure_lattice
from micro_sym.classical.lattice_measure3d import measure_lattice_3d

__all__ = ["DEFAULT_MIN_SIZE", "DEFAULT_SIGMA", "DEFAULT_SMOOTH", "LatticeMeasurement", "boundary_score",
           "classical_halo", "classical_orientation_map", "classical_segment", "classical_stride", "close_boundaries",
           "estimate_period", "fringe_snr", "lattice_constant", "measure_lattice", "measure_lattice_3d",
           "radial_power_spectrum", "ring_frequency"]

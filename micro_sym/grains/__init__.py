"""Grains from orientation maps: reconstruction, statistics and plots (DESIGN.md §3).

>>> from micro_sym.grains import reconstruct_grains, grain_table, map_summary   # doctest: +SKIP
"""

from micro_sym.grains.reconstruct import (  # noqa: F401
    face_equivalences,
    filter_small_grains,
    neighbour_offsets,
    orientation_kind,
    pair_connected,
    reconstruct_grains,
    resolve_equivalences,
)

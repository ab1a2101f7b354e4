"""Grains from orientation maps: reconstruction, block-wise labelling (:mod:`.blockwise`), statistics and plots
(docs/design.md §3).

>>> from micro_sym.grains import reconstruct_grains, grain_table, map_summary   # doctest: +SKIP
"""

from micro_sym.grains.boundaries import find_boundaries  # noqa: F401
from micro_sym.grains.reconstruct import (  # noqa: F401
    face_equivalences,
    filter_small_grains,
    neighbour_offsets,
    orientation_kind,
    pair_connected,
    reconstruct_grains,
    resolve_equivalences,
    unique_label_pairs,
)
from micro_sym.grains.stats import (  # noqa: F401
    boundary_misorientations,
    grain_table,
    kam_map,
    map_summary,
    sigma3_deviation,
    write_grain_csv,
    write_summary_json,
)

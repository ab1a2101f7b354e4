"""napari plugin for micro_sym: grain segmentation and orientation maps of lattice micrographs and volumes.

Contributions are declared in ``napari.yaml`` (npe2). Nothing heavy is imported here: the reader,
sample data and widgets live in their own modules, and torch/escnn load only when a model runs.
"""

__all__: list[str] = []

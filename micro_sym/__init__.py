"""micro_sym: symmetry-aware grain and crystal-orientation analysis of micrographs and volumes.

Heavy dependencies (torch, escnn, napari) are imported inside the functions that need them,
so ``import micro_sym`` and the CLI's ``--help`` stay fast.
"""

__version__ = "0.1.0"

from micro_sym.errors import MicroSymError  # noqa: E402

__all__ = ["MicroSymError", "__version__"]

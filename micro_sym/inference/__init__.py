"""Streaming, resumable inference over large 2D images and 3D volumes (docs/design.md §5).

Public API
----------
``segment(inputs, out_dir, model=..., scheduler=...)``
    Many inputs -> ``OUT/NAME.zarr`` (boundary, orientation, grains) + ``OUT/NAME_grains.csv``.
``segment_input(path, out_dir, net, runner, ...)``
    One input with an explicit network and runner.
``plan_blocks(shape, block, halo=, stride=, chunk=)``
    Chunk-aligned blocks with stride-aligned halos.
``as_network(model)``, ``load_network(name_or_path)``, ``predict_array(net, image)``
    The network as the engine runs it, and the whole-image reference.
``predict_image(model, image)``, ``segment_image(model, image)``
    Maps (and grains) of a whole 2D image in memory.
``ClassicalMethod(lattice=, period=)`` / ``segment(..., method="classical")``
    The training-free filter bank through the same engine (2D; period estimated once per input).
``make_runner("threads" | "processes" | "local-cluster" | "tcp://HOST:PORT")``
    Where block tasks run.
``label_block``, ``merge_blocks``
    Global grain labels from per-block labels.
"""

from micro_sym.inference.blocks import Block, BlockPlan, estimate_memory, plan_blocks
from micro_sym.inference.classical import ClassicalMethod
from micro_sym.inference.engine import InputResult, expand_inputs, segment, segment_input
from micro_sym.grains.blockwise import label_block, merge_blocks
from micro_sym.inference.network import Network, as_network, load_network
from micro_sym.inference.scheduler import make_runner
from micro_sym.inference.tiles import iter_tiles, predict_array
from micro_sym.inference.whole_image import predict_image, segment_image

__all__ = [
    "Block", "BlockPlan", "ClassicalMethod", "InputResult", "Network", "as_network", "estimate_memory", "expand_inputs",
    "label_block", "load_network", "make_runner", "merge_blocks", "plan_blocks", "iter_tiles", "predict_array", "predict_image",
    "segment", "segment_image", "segment_input",
]

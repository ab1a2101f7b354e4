"""Fixtures shared by the test modules, which mirror the packages (tests/io, tests/grains, ...).

The folder itself goes on ``sys.path`` so that every module can import the small helper modules
here (``_helpers``, ``_lattice``, ``_shared``, ``_portability``) whatever sub-folder it is in.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
# Exported model copies (micro_sym.deploy.cache) go to a folder of this test session, not the user's
# cache; subprocesses (CLI tests) inherit it.
os.environ["MICRO_SYM_CACHE_DIR"] = tempfile.mkdtemp(prefix="micro_sym_cache_")
atexit.register(shutil.rmtree, os.environ["MICRO_SYM_CACHE_DIR"], ignore_errors=True)
# Each pytest-xdist worker (and the subprocesses its tests start) keeps numba's compiled kernels in a
# folder of its own, kept between runs: two processes compiling the same kernels into one cache can
# leave an index that names the other's machine code, and every later load of it crashes.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["NUMBA_CACHE_DIR"] = str(Path(tempfile.gettempdir()) / f"micro_sym_numba_{os.getuid()}"
                                        / os.environ["PYTEST_XDIST_WORKER"])
    if "numba" in sys.modules:  # imported by a pytest plugin before this file: read the setting again
        from numba.core import config as _numba_config

        _numba_config.reload_config()

from _helpers import smooth_image  # noqa: E402


def untrained_segmenter():
    """An untrained plain U-Net (seed 0) whose boundary bias leaves ~75% of a smooth image as grain
    interior and the rest boundary, so grains are separated by boundary pixels."""
    import torch
    from torch import nn

    from micro_sym.inference.whole_image import raw_outputs
    from micro_sym.models import build_model

    torch.manual_seed(0)
    m = build_model({"arch": "unet_plain", "widths": [4, 8]}).eval()
    head = [mod for mod in m.core.modules() if isinstance(mod, nn.Conv2d) and mod.out_channels == 3][-1]
    logits = raw_outputs(m, smooth_image((96, 96), seed=9))[0]
    with torch.no_grad():
        head.bias[0] -= float(np.quantile(logits, 0.75))
    return m


@pytest.fixture(scope="session")
def segmenter2d():
    """:func:`untrained_segmenter`, built once per session."""
    return untrained_segmenter()


@pytest.fixture(scope="session")
def segmenter2d_file(tmp_path_factory, segmenter2d):
    """:func:`untrained_segmenter` saved as a model file."""
    from micro_sym.models import save_model

    return save_model(segmenter2d, tmp_path_factory.mktemp("m") / "m2d.pt", trained_on={"test": True})


@pytest.fixture(scope="module")
def lattice_dataset(tmp_path_factory):
    """A factory of small labeled lattice datasets: ``lattice_dataset(n)``."""
    from _lattice import write_dataset

    def make(n: int, size: int = 64, period: float = 6.0):
        return write_dataset(tmp_path_factory.mktemp("lattice") / "data", n=n, size=size, period=period)

    return make

"""Every bundled model, in every form it runs in, keeps the one model contract (micro_sym.models.base)
and is exactly equivariant on every element of the grid's symmetry group."""

from __future__ import annotations

import warnings

import pytest
import torch

from micro_sym.errors import MicroSymError
from micro_sym.models import SegmentationModel, check_model, equivariance_error, load_model

warnings.filterwarnings("ignore", message=".*py3nj.*")
TOL = 1e-4  # float32 rounding of trained weights; a broken symmetry is of order 1


@pytest.mark.parametrize("name,export", [("default-2d", False), ("default-2d", True), ("default-2d-fast", False),
                                         ("default-2d-fast", True), ("robust-2d", False), ("robust-2d", True),
                                         ("atoms-2d", False), ("atoms-2d", True), ("atoms-2d-hex", False),
                                         ("atoms-2d-hex", True), ("fringes-2d", False), ("fringes-2d", True),
                                         ("default-3d", False),
                                         ("atoms-3d", False)])
def test_bundled_models_keep_the_contract_and_are_exactly_equivariant(name, export):
    model = load_model(name, export=export)
    assert isinstance(model, SegmentationModel)
    check_model(model, name)
    eq = equivariance_error(model, size=64 if model.ndim == 2 else None)
    assert len(eq["per_element"]) == (8 if model.ndim == 2 else 24)
    assert eq["max"] < TOL, eq


def test_check_model_names_what_is_missing():
    with pytest.raises(MicroSymError, match="ndim"):
        check_model(torch.nn.Conv2d(1, 3, 3), "conv")

"""The shared real data (a DefDAP EBSD map, experimental micrographs), found next to the repository.

A checkout keeps it at ``../shared/data`` (relative to the repository root). Tests that need it are
skipped when it is absent, except on CI (``CI=true``), where its absence is a failure: a skipped
test there would hide a broken reader."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def shared_path(*parts: str) -> Path:
    """``SHARED_DATA / parts``; skip (or, with ``CI=true``, fail) the calling test when it is missing."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        message = f"shared test data missing: {path}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path

"""Shared check: a bundled model reproduces the reference outputs recorded where it was made."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def assert_reproduces_reference(name: str, reference: str) -> dict:
    """``bench/provenance/check_model_portability.py``'s comparison for bundled ``name`` against ``tests/data/reference``."""
    sys.path.insert(0, str(ROOT / "bench" / "provenance"))
    try:
        import check_model_portability as portability
    finally:
        sys.path.remove(str(ROOT / "bench" / "provenance"))
    ref = json.loads((ROOT / "tests" / "data" / reference).read_text())
    assert portability.compare(portability.summary(name, ref.get("input")), ref) == []
    shifted = dict(ref, raw=[v + 0.01 for v in ref["raw"]])
    assert portability.compare(ref, shifted)  # and a real difference is reported
    assert portability.compare(ref, dict(ref, grains_sha256="other"))  # other grains, same count
    return ref

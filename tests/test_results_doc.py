"""Every figure docs/results.md quotes from a results file is in that file.

A table row that names a file under ``bench/results/`` (the last cell; ``same`` for the row above's
file; or the section's ``file ...`` line for tables without a file column) has each decimal number of its value cell checked against the numbers
in that JSON file: the quoted figure must be one of them rounded to the quoted digits, directly or in
a unit the docs use (percent of a fraction, MB/GB of bytes, ms of seconds, MP/s or M voxels/s of
per-second counts). Numbers in the rows' names (sizes, seeds, settings) are not checked.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "results.md"
RESULTS = ROOT / "bench" / "results"
#: How a quoted figure may relate to a stored value (value × scale, rounded).
SCALES = (1.0, 100.0, 1e-6, 2.0**-20, 1e-9, 2.0**-30, 1e3, 1e-3)
NUMBER = re.compile(r"(?<![\w.])-?\d+\.\d+(?:e-?\d+)?")


def _leaves(node):
    if isinstance(node, dict):
        for v in node.values():
            yield from _leaves(v)
    elif isinstance(node, list):
        for v in node:
            yield from _leaves(v)
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        yield float(node)


def _matches(quoted: str, values) -> bool:
    x = float(quoted)
    mantissa = quoted.split("e")[0]
    digits = len(mantissa.split(".")[1]) if "." in mantissa else 0
    if "e" in quoted:  # scientific: compare to the quoted significant digits
        return any(v and abs(v * s - x) <= 0.5 * 10 ** (int(quoted.split("e")[1]) - digits) for v in values for s in SCALES)
    return any(round(v * s, digits) == round(x, digits) or round(abs(v) * s, digits) == round(x, digits)
               for v in values for s in SCALES)


def rows_with_files():
    """(line number, value cell, results file) for every checkable table row."""
    out, section_file, previous = [], None, []
    for n, line in enumerate(DOC.read_text().splitlines(), 1):
        if line.startswith("#"):
            section_file = None
        found = re.search(r"file `([\w.]+\.json)`", line)
        if found and not line.startswith("|"):
            section_file = found.group(1)
        if not line.startswith("|") or set(line) <= set("|-: "):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        files = re.findall(r"`([\w.]+\.json)`", cells[-1]) if len(cells) >= 4 else []
        if len(cells) >= 4 and cells[-1] == "same":  # the row above's file
            files = previous
        previous = files
        if len(cells) >= 4 and files:
            out.append((n, cells[1], files))
        elif len(cells) == 2 and section_file:
            out.append((n, cells[1], [section_file]))
    return out


def test_the_doc_names_results_files_that_exist():
    rows = rows_with_files()
    assert len(rows) >= 30
    for n, _, files in rows:
        for f in files:
            assert (RESULTS / f).is_file(), f"docs/results.md:{n}: {f} is not in bench/results/"


@pytest.mark.parametrize("n,value,files", rows_with_files(), ids=lambda v: str(v) if isinstance(v, int) else None)
def test_each_quoted_figure_is_in_its_results_file(n, value, files):
    values = [v for f in files for v in _leaves(json.loads((RESULTS / f).read_text()))]
    missing = [q for q in NUMBER.findall(value.replace("−", "-")) if not _matches(q, values)]
    assert not missing, f"docs/results.md:{n}: {missing} not in {', '.join(files)}"


def test_readme_quotes_only_figures_of_the_results_doc():
    """The README's results table repeats figures of docs/results.md (which the tests above tie to
    files), rounded or not."""
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## Results"):]
    table = table[: table.index("\n\n", table.index("|"))]
    quoted = [q for line in table.splitlines()[2:] for q in NUMBER.findall(line.split("|")[3])]
    assert len(quoted) >= 6
    doc_values = [float(q) for q in NUMBER.findall(DOC.read_text())]
    missing = [q for q in quoted if not _matches(q, doc_values)]
    assert not missing, f"README results figures not in docs/results.md: {missing}"


def test_every_readme_figure_is_in_the_results_doc():
    """Figures quoted anywhere in the README (bundled-model notes, examples) also come from docs/results.md;
    the only other decimals are a Python version and an example pixel size."""
    not_figures = {"3.11", "0.05"}
    doc_values = [float(q) for q in NUMBER.findall(DOC.read_text())]
    quoted = [q for q in NUMBER.findall((ROOT / "README.md").read_text()) if q not in not_figures]
    missing = [q for q in quoted if not _matches(q, doc_values)]
    assert not missing, f"README figures not in docs/results.md: {missing}"

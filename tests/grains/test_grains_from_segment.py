"""``micro-sym grains`` on a ``micro-sym segment`` output applies the rule the segment run recorded, says
when options change it, and the grain-map title counts the grains of the whole map."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from micro_sym.cli import main as cli_main
from micro_sym.cli.grains import segment_rule
from micro_sym.grains import plots
from micro_sym.grains.rules import network_rule, pair_rule
from micro_sym.io.images import output_array

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "sample_data" / "micrographs" / "images" / "sample_000.tif"


def run(args):
    """The console entry point in-process (typer exits with SystemExit on success)."""
    try:
        return cli_main(args)
    except SystemExit as exc:
        return exc.code or 0


@pytest.fixture(scope="module")
def segmented(tmp_path_factory):
    """A 256 x 256 crop of the sample micrograph, segmented by the default (auto) method."""
    tifffile = pytest.importorskip("tifffile")
    if not SAMPLE.exists():
        pytest.skip("sample data not present")
    tmp = tmp_path_factory.mktemp("seg")
    tifffile.imwrite(tmp / "crop.tif", tifffile.imread(SAMPLE)[:256, :256])
    assert run(["segment", str(tmp / "crop.tif"), "--out", str(tmp / "seg")]) == 0
    zarr_path = tmp / "seg" / "crop.zarr"
    import zarr

    record = dict(zarr.open_group(str(zarr_path), mode="r").attrs)["micro_sym"]
    return zarr_path, record


def test_grains_matches_segment(segmented, tmp_path, capsys):
    zarr_path, record = segmented
    capsys.readouterr()
    assert run(["grains", str(zarr_path), "--out", str(tmp_path / "g")]) == 0
    err = capsys.readouterr().err
    assert "differs from the segment run" not in err
    doc = json.loads((tmp_path / "g" / "crop_summary.json").read_text())
    assert doc["n_grains"] == record["n_grains"] > 0
    # Whole map and blocks agree here (one block): the very same labels.
    seg = np.asarray(output_array(zarr_path, "grains")[...])
    mine = np.asarray(output_array(tmp_path / "g" / "crop.zarr", "grains")[...])
    np.testing.assert_array_equal(seg, mine)


def test_changed_threshold_prints_one_line_note(segmented, tmp_path, capsys):
    zarr_path, record = segmented
    capsys.readouterr()
    assert run(["grains", str(zarr_path), "--out", str(tmp_path / "g"), "--threshold", "10"]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if "differs from the segment run" in line]
    assert len(notes) == 1
    assert "--threshold 10" in notes[0] and f"segment found {record['n_grains']} grains" in notes[0]


def test_segment_rule_choices():
    seeded = {"grain_rule": network_rule(5.0, 2), "threshold": 5.0, "min_size": 32, "boundary_threshold": 0.5,
              "n_grains": 7}
    none = dict.fromkeys(("threshold", "min_size", "small", "connectivity", "boundary_threshold"))
    rule, note = segment_rule(seeded, none, has_boundary=True)
    assert note is None and rule["grain_rule"] == network_rule(5.0, 2) and rule["min_size"] == 32
    rule, note = segment_rule(seeded, {**none, "threshold": 8.0}, has_boundary=True)
    assert rule["grain_rule"]["pair_threshold"] == rule["grain_rule"]["merge_threshold"] == 8.0
    assert "--threshold 8" in note
    rule, note = segment_rule(seeded, {**none, "connectivity": 8}, has_boundary=True)
    assert rule["grain_rule"] is None and rule["min_size"] == 32 and "plain pair rule" in note
    assert "--connectivity 8" in note
    classical = {**seeded, "grain_rule": pair_rule(5.0)}
    rule, note = segment_rule(classical, {**none, "min_size": 32}, has_boundary=True)
    assert note is None and rule["grain_rule"] == pair_rule(5.0)
    assert segment_rule(None, none, has_boundary=True) == (None, None)


def test_grain_map_title_counts_grains(tmp_path, monkeypatch):
    titles = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: titles.append(fig.axes[0].get_title()))
    lab = np.zeros((20, 20), np.uint32)
    lab[:10] = 40  # a high id on few grains: the title counts grains, not the highest id
    lab[10:] = 4000
    plots.plot_grain_map(tmp_path / "a.png", lab)
    plots.plot_grain_map(tmp_path / "b.png", lab, n_total=4021, slice_index=12)
    assert titles == ["2 grains", "slice z=12: 2 grains shown of 4021"]

"""What ``micro-sym prune`` says: a fine-tune after pruning starts (it does not resume), the widths and
parameter counts are those of the pruned model, counted as training counts them, and a pruned model
that finds no grains gets a warning."""

from __future__ import annotations

import json
import re
import warnings

import torch

from micro_sym.deploy.measure import count_parameters
from micro_sym.models import build_model, load_model, save_model

warnings.filterwarnings("ignore", message=".*py3nj.*")


def _cli(argv):
    from micro_sym.cli import main

    try:
        return main(argv)
    except SystemExit as e:  # typer exits explicitly on success
        return e.code or 0


def test_prune_finetune_messages(lattice_dataset, tmp_path, capsys):
    data = lattice_dataset(2)
    torch.manual_seed(0)
    model = build_model({"arch": "unet_equi", "group": "D4", "widths": [1, 2, 2], "dec_convs": 1})
    src = save_model(model, tmp_path / "tiny.pt", trained_on={"test": True})
    out = tmp_path / "pruned.pt"
    capsys.readouterr()
    rc = _cli(["prune", str(src), "--ratio", "0.5", "--out", str(out), "--finetune", str(data), "--val", str(data),
               "--epochs", "1", "--steps-per-epoch", "1", "--crop", "32", "--batch-size", "2",
               "--calibrate-batches", "1", "--data", str(data), "--max-images", "1", "--latency-size", "32"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    rep = json.loads((tmp_path / "pruned.report.json").read_text())
    fields = rep["pruning"]["fields_after"]
    assert "resumed from" not in cap.out and "starting from the weights" in cap.out
    assert f"layer_fields={fields}" in cap.out and f"fields per layer after pruning: {fields}" in cap.out
    # The training log and the report count the pruned model's parameters one way.
    trained = [int(n) for n in re.findall(r"params=(\d+)", cap.out)]
    pruned = load_model(out)
    assert trained == [rep["after"]["parameters"]] == [count_parameters(pruned)]
    assert rep["after"]["parameters_deployed"] == count_parameters(pruned, deployed=True) > rep["after"]["parameters"]
    assert "escnn" in rep["after"]["parameters_counted"]
    # An untrained tiny model finds no grain: one warning line on stderr.
    assert rep["after"]["accuracy"]["grain_f1"] < 0.05
    assert len([line for line in cap.err.splitlines() if line.startswith("warning: the pruned model")]) == 1


def test_failed_grain_f1_warning(capsys):
    from micro_sym.cli.prune import _warn_if_failed

    _warn_if_failed(None, 0.0)  # no report data: the fine-tuning validation score decides
    _warn_if_failed(0.6, 0.0)  # the report's own data take precedence
    _warn_if_failed(None, None)
    err = capsys.readouterr().err.splitlines()
    assert err == [line for line in err if "fine-tuning validation set" in line] and len(err) == 1

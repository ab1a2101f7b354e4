"""Training loop: loss decreases, resume continues exactly, malformed data and configs are clear errors."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest
import torch

from micro_sym.errors import MicroSymError
from micro_sym.training.config import load_train_config
from micro_sym.training.loop import train
from micro_sym.training.train2d import _transform_angle, random_batch

warnings.filterwarnings("ignore", message=".*py3nj.*")

TINY = {
    "model": {"arch": "unet_equi", "group": "D4", "widths": [1, 2]},
    "data": {"crop": 32, "batch_size": 4, "steps_per_epoch": 6, "val_fraction": 0.25, "val_max_images": 1},
    "optim": {"epochs": 3, "warmup_steps": 2, "lr": 0.01},
    "eval": {"min_size": 4},
    "threads": 2,
}


def _cfg(**over):
    cfg = json.loads(json.dumps(TINY))
    for key, value in over.items():
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return load_train_config(None, **cfg)


@pytest.fixture(scope="module")
def dataset(lattice_dataset):
    return lattice_dataset(4)


@pytest.fixture(scope="module")
def straight_run(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "straight"
    train(_cfg(), dataset, out, log=lambda s: None)
    return out


def _history(out):
    return [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]


def test_loss_decreases_and_files_written(straight_run):
    hist = _history(straight_run)
    assert [h["epoch"] for h in hist] == [1, 2, 3]
    assert hist[-1]["loss"] < hist[0]["loss"]
    for name in ("last.pt", "best.pt", "model.pt", "config.json"):
        assert (straight_run / name).is_file()
    from micro_sym.models import load_model

    model = load_model(straight_run / "model.pt")
    assert model.meta["trained_on"]["train_images"] and "val" in model.meta["metrics"]



def test_init_starts_from_given_weights(dataset, straight_run, tmp_path):
    """--init: a one-epoch run at learning rate ~0 starting from a model file keeps that model's weights."""
    from micro_sym.models import load_model

    out = tmp_path / "init"
    train(_cfg(**{"optim.epochs": 1, "optim.lr": 1e-12, "optim.weight_decay": 0.0}), dataset, out,
          log=lambda s: None, init=straight_run / "model.pt")
    # Parameters only: batch-norm running statistics move during the epoch.
    src = dict(load_model(straight_run / "model.pt").named_parameters())
    got = dict(load_model(out / "model.pt").named_parameters())
    assert src and src.keys() == got.keys()
    for key in src:
        assert torch.allclose(src[key], got[key], atol=1e-6), key


def test_init_with_other_architecture_is_a_clear_error(dataset, straight_run, tmp_path):
    with pytest.raises(MicroSymError, match="differs from the configured one in widths"):
        train(_cfg(**{"model.widths": [1, 3]}), dataset, tmp_path / "bad", log=lambda s: None, init=straight_run / "model.pt")

def _hexagonal_dataset(root, n=3):
    from micro_sym.synth import Synth2DConfig, synth_2d
    from micro_sym.synth.dataset import write_sample

    cfg = Synth2DConfig.model_validate({"size": (64, 64), "lattice": "hexagonal", "period": 6.0,
                                        "microstructure": {"grain_size": 24.0}})
    for i in range(n):
        write_sample(root, f"h{i}", synth_2d(cfg, seed=i), cfg.pixel_size, cfg.unit)
    (root / "dataset.json").write_text(json.dumps({"lattice": "hexagonal", "pixel_size": [0.05, 0.05], "unit": "nm"}))
    return root


def test_init_from_another_lattice_keeps_the_body_and_starts_a_new_head(straight_run, tmp_path):
    """--init of a k = 6 model from a k = 4 one: every weight but the orientation head's is copied."""
    from micro_sym.models import load_model
    from micro_sym.synth.dataset import FOLDERS

    data = tmp_path / "hex"
    for folder in FOLDERS:
        (data / folder).mkdir(parents=True)
    _hexagonal_dataset(data)
    said = []
    out = tmp_path / "init_hex"
    train(_cfg(**{"model.lattice": "hexagonal", "optim.epochs": 1, "optim.lr": 1e-12, "optim.weight_decay": 0.0}),
          data, out, log=said.append, init=straight_run / "model.pt")
    assert any("new orientation head for k = 6" in line for line in said)
    src = load_model(straight_run / "model.pt")
    got = load_model(out / "model.pt")
    assert (src.k, got.k) == (4, 6)
    src_params, got_params = dict(src.named_parameters()), dict(got.named_parameters())
    body = [key for key in src_params if not key.startswith("core.head.")]
    assert body and set(body) <= set(got_params)
    for key in body:
        assert torch.allclose(src_params[key], got_params[key], atol=1e-6), key
    head = [key for key in got_params if key.startswith("core.head.")]
    assert head and not all(src_params[key].shape == got_params[key].shape and torch.allclose(src_params[key], got_params[key])
                            for key in head)


def test_distillation_loss_is_stationary_at_the_teacher():
    """Soft-target BCE + vector MSE: zero gradient where the student equals the teacher, not elsewhere."""
    from micro_sym.training.train2d import distillation_loss

    teacher = torch.randn(2, 3, 8, 8)
    student = teacher.clone().requires_grad_(True)
    distillation_loss(student, teacher).backward()
    assert student.grad.abs().max() < 1e-6
    other = (teacher + 0.3 * torch.randn_like(teacher)).requires_grad_(True)
    distillation_loss(other, teacher).backward()
    assert other.grad.abs().max() > 1e-4


def test_distill_from_a_teacher(dataset, straight_run, tmp_path):
    """loss.distill > 0 matches a teacher model (and is logged); without a teacher it is a clear error."""
    out = tmp_path / "kd"
    cfg = _cfg(**{"optim.epochs": 1, "loss.distill": 1.0})
    train(cfg, dataset, out, log=lambda s: None, init=straight_run / "model.pt", teacher=straight_run / "model.pt")
    (h,) = _history(out)
    assert h["distill"] > 0 and np.isfinite(h["loss"])
    with pytest.raises(MicroSymError, match="needs a teacher"):
        train(cfg, dataset, tmp_path / "no_teacher", log=lambda s: None)


def test_resume_continues_where_it_stopped(dataset, straight_run, tmp_path):
    out = tmp_path / "resumed"
    train(_cfg(), dataset, out, log=lambda s: None, stop_after_epoch=2)
    assert [h["epoch"] for h in _history(out)] == [1, 2] and not (out / "model.pt").exists()
    lines = []
    train(_cfg(), dataset, out, resume=True, log=lines.append)
    assert any("resumed" in s and "epoch 2" in s for s in lines)
    assert [h["epoch"] for h in _history(out)] == [1, 2, 3]
    # Same data order, RNG and optimizer state: the resumed run ends with the uninterrupted run's weights.
    a = torch.load(straight_run / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(out / "model.pt", weights_only=True)["state_dict"]
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5), key
    assert _history(out)[-1]["loss"] == pytest.approx(_history(straight_run)[-1]["loss"], rel=1e-4)


def test_resume_refuses_other_config(dataset, straight_run, tmp_path):
    shutil.copytree(straight_run, tmp_path / "run")
    with pytest.raises(MicroSymError, match="different config"):
        train(_cfg(**{"optim.lr": 0.5}), dataset, tmp_path / "run", resume=True, log=lambda s: None)
    with pytest.raises(MicroSymError, match="no checkpoint"):
        train(_cfg(), dataset, tmp_path / "empty", resume=True, log=lambda s: None)


def test_malformed_datasets(dataset, tmp_path):
    bad = tmp_path / "no_grains"
    shutil.copytree(dataset, bad)
    shutil.rmtree(bad / "grains")
    with pytest.raises(MicroSymError, match="grains"):
        train(_cfg(), bad, tmp_path / "r1", log=lambda s: None)
    no_ori = tmp_path / "no_ori"
    shutil.copytree(dataset, no_ori)
    shutil.rmtree(no_ori / "orientation")
    with pytest.raises(MicroSymError, match="orientation"):
        train(_cfg(), no_ori, tmp_path / "r2", log=lambda s: None)
    hexa = tmp_path / "hex"
    shutil.copytree(dataset, hexa)
    (hexa / "dataset.json").write_text(json.dumps({"lattice": "hexagonal"}))
    with pytest.raises(MicroSymError, match="k=6"):
        train(_cfg(), hexa, tmp_path / "r3", log=lambda s: None)
    with pytest.raises(MicroSymError, match="crop"):
        train(_cfg(**{"data.crop": 96}), dataset, tmp_path / "r4", log=lambda s: None)


def _main(argv):
    from micro_sym.cli import main

    try:
        return main(argv)
    except SystemExit as err:  # typer's standalone mode exits on success
        return err.code


def test_cli_errors_exit_2(dataset, tmp_path, capsys):
    main = _main

    cfg = tmp_path / "c.yaml"
    cfg.write_text("optim:\n  epochs: 1\n  lr_typo: 3\n")
    assert main(["train", str(cfg), "--data", str(dataset), "--out", str(tmp_path / "o")]) == 2
    assert "lr_typo" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "missing.yaml"), "--data", str(dataset), "--out", str(tmp_path / "o")]) == 2
    assert main(["evaluate", "--model", str(tmp_path / "nope.pt"), str(dataset)]) == 2


def test_evaluate_cli_json(dataset, straight_run, tmp_path):
    main = _main

    out = tmp_path / "eval.json"
    assert main(["evaluate", "--model", str(straight_run / "model.pt"), str(dataset), "--json", str(out), "--min-size", "4"]) == 0
    report = json.loads(out.read_text())
    assert set(report["images"]) == {f"s{i:02d}" for i in range(4)}
    # The CLI reports what the library computes for the same model and data.
    from micro_sym.inference.evaluate import evaluate_model
    from micro_sym.io.datasets import LabeledDataset
    from micro_sym.models import load_model

    ref = evaluate_model(load_model(straight_run / "model.pt"), LabeledDataset(dataset), min_size=4)["overall"]
    for key in ("boundary_f1", "grain_f1", "orientation_median_deg"):
        assert report["overall"][key] == pytest.approx(ref[key], abs=1e-9), key
    # --period runs the network at its training period (the dataset's 6-px lattice resampled to the
    # model's), as segment does; the library with the same period gives the same scores.
    assert main(["evaluate", "--model", str(straight_run / "model.pt"), str(dataset), "--json", str(out), "--min-size", "4",
                 "--period", "6"]) == 0
    scaled = json.loads(out.read_text())
    ref = evaluate_model(load_model(straight_run / "model.pt"), LabeledDataset(dataset), min_size=4, period=6.0)["overall"]
    assert scaled["period"] == 6.0 and scaled["overall"]["boundary_f1"] == pytest.approx(ref["boundary_f1"], abs=1e-9)
    assert main(["evaluate", "--model", str(straight_run / "model.pt"), str(dataset), "--period", "often"]) == 2
    # Without --min-size the smallest seed is segment's own: 2 cells of the measured lattice (72 px at 6 px).
    assert main(["evaluate", "--model", str(straight_run / "model.pt"), str(dataset), "--json", str(out), "--period", "6"]) == 0
    default = json.loads(out.read_text())["overall"]
    cells = evaluate_model(load_model(straight_run / "model.pt"), LabeledDataset(dataset), min_size=72, period=6.0)["overall"]
    for key in ("boundary_f1", "grain_f1", "n_grains_pred"):
        assert default[key] == pytest.approx(cells[key], abs=1e-9), key


def test_rot_flip_augmentation_transforms_orientation_target():
    """A direction at angle θ (x right, y up) drawn into an image lands at θ+90° after np.rot90 and at
    180°-θ after np.fliplr: the rule used to transform orientation targets of augmented crops."""
    theta = 30.0
    img = np.zeros((41, 41))
    c = 20
    t = np.deg2rad(theta)
    img[c - int(round(10 * np.sin(t))), c + int(round(10 * np.cos(t)))] = 1  # row index grows downwards

    def angle(a):
        r, col = np.argwhere(a)[0]
        return np.rad2deg(np.arctan2(c - r, col - c)) % 360

    for rot in range(4):
        for mirror in (False, True):
            moved = np.fliplr(np.rot90(img, rot)) if mirror else np.rot90(img, rot)
            assert angle(moved) == pytest.approx(_transform_angle(angle(img), rot, mirror) % 360, abs=1e-6)


def test_random_batch_shapes_and_mask(dataset):
    from micro_sym.training.train2d import load_training_data

    data = load_training_data(dataset, 4)
    cfg = _cfg(**{"aug.rot_flip": True})
    x, b, v, m, w = random_batch(data, cfg, 32, 4, True, np.random.default_rng(0))
    assert x.shape == (4, 1, 32, 32) and v.shape == (4, 2, 32, 32) and w.shape == b.shape
    assert torch.all(w == 1.0)  # default: no extra weight on low-angle interfaces
    assert set(np.unique(b.numpy())) <= {0.0, 1.0} and (m * b).sum() == 0  # no orientation loss on boundaries
    assert torch.allclose((v**2).sum(1)[m[:, 0] > 0], torch.tensor(1.0), atol=1e-5)


def test_low_angle_interfaces_get_the_boundary_weight():
    from micro_sym.training.train2d import interface_misorientation

    # Three vertical grains: 10° | 18° (8° apart: low-angle) | 60° (42° from 18°: high-angle).
    grains = np.repeat(np.array([[1] * 4 + [2] * 4 + [3] * 4]), 6, axis=0)
    angle = np.where(grains == 1, 10.0, np.where(grains == 2, 18.0, 60.0)).astype(np.float32)
    m = interface_misorientation(grains, angle, 4)
    assert np.allclose(m[:, 3:5], 8.0) and np.allclose(m[:, 7:9], 42.0)
    assert np.isinf(m[:, [0, 1, 2, 5, 6, 9, 10, 11]]).all()
    # square lattice: 85° and 5° are 10° apart
    m2 = interface_misorientation(np.array([[1, 2]]), np.array([[85.0, 5.0]], np.float32), 4)
    assert np.allclose(m2, 10.0)


def test_boundary_weight_scales_only_the_weighted_pixels_bce():
    from micro_sym.training.config import LossCfg
    from micro_sym.training.train2d import segmentation_loss

    out = torch.zeros(1, 3, 4, 4)
    boundary = torch.zeros(1, 1, 4, 4)
    boundary[..., 1, :] = 1.0
    vec, mask = torch.zeros(1, 2, 4, 4), torch.zeros(1, 1, 4, 4)
    cfg = LossCfg(pos_weight=1.0, dice=0.0, orientation=0.0)
    weight = torch.ones(1, 1, 4, 4)
    weight[..., 1, :2] = 4.0  # two of the 16 pixels
    plain, _ = segmentation_loss(out, boundary, vec, mask, cfg)
    weighted, _ = segmentation_loss(out, boundary, vec, mask, cfg, weight=weight)
    # every pixel's BCE is log 2 at logit 0: the mean goes from 16/16 to (14 + 2*4)/16 of it
    assert float(plain) == pytest.approx(np.log(2))
    assert float(weighted) == pytest.approx(np.log(2) * 22 / 16)


def test_several_datasets_train_together(dataset, lattice_dataset, tmp_path, capsys):
    other = shutil.copytree(lattice_dataset(2), tmp_path / "other")
    out = tmp_path / "two"
    train(_cfg(**{"optim.epochs": 1}), [dataset, other], out, val=other, log=lambda s: None)
    names = torch.load(out / "model.pt", weights_only=True)["meta"]["trained_on"]["train_images"]
    assert len(names) == 6 and len(set(names)) == 6  # 4 + 2 images, names kept apart by their dataset
    assert sum(n.startswith("other/") for n in names) == 2
    with pytest.raises(MicroSymError, match="--val"):
        train(_cfg(), [dataset, other], tmp_path / "noval", log=lambda s: None)
    assert _main(["train", str(tmp_path / "nothing.yaml"), "--data", str(dataset), "--data", str(other),
                  "--out", str(tmp_path / "o")]) == 2
    assert "--val" in capsys.readouterr().err

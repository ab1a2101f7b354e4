"""Deployment: field-wise pruning keeps exact equivariance and the surviving computation; exported files
(plain torch, safetensors, TorchScript, ONNX) match the model and run without escnn."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from micro_sym.deploy.export import export_model, load_deployed
from micro_sym.deploy.measure import count_macs
from micro_sym.models.base import equivariance_error
from micro_sym.deploy.prune import channel_prune_plain, field_importance, prune_model, select_fields
from micro_sym.errors import MicroSymError
from micro_sym.models import build_model, load_model, save_model
from micro_sym.models.fields import layer_fields, prunable_layers
from micro_sym.training.finetune import finetune_model

warnings.filterwarnings("ignore", message=".*py3nj.*")
TOL = 1e-5
ROOT = Path(__file__).resolve().parents[2]
#: Prefix of the subprocess scripts that must run without escnn: any import of it fails.
BLOCK_ESCNN = textwrap.dedent("""
    import sys, importlib.abc
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "escnn" or name.startswith("escnn."):
                raise ImportError("escnn is blocked in this test")
            return None
    sys.meta_path.insert(0, Block())
""")


def _randomize_bn(model, seed=0):
    """Non-trivial batch-norm statistics and affine parameters (fresh ones are identities)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
                mod.running_mean.copy_(torch.randn(mod.running_mean.shape, generator=g) * 0.1)
                mod.running_var.copy_(torch.rand(mod.running_var.shape, generator=g) + 0.5)
                mod.weight.data.copy_(torch.rand(mod.weight.shape, generator=g) + 0.5)
                mod.bias.data.copy_(torch.randn(mod.bias.shape, generator=g) * 0.1)
        model.train()
        model.eval()
    return model


_CACHE = {}


def tiny2d(widths=(2, 4, 4), dec_convs=1):
    key = (tuple(widths), dec_convs)
    if key not in _CACHE:  # escnn bases are expensive: build once per session
        torch.manual_seed(0)
        m = build_model({"arch": "unet_equi", "group": "D4", "widths": list(widths), "dec_convs": dec_convs})
        _CACHE[key] = _randomize_bn(m)
    return _CACHE[key]


@pytest.fixture(scope="module")
def pruned2d():
    pruned, info = prune_model(tiny2d(), 0.5)
    return pruned, info


def _x(h=32, w=48, seed=1):
    return torch.randn(1, 1, h, w, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- pruning


def test_pruned_keeps_whole_fields_and_is_smaller(pruned2d):
    pruned, info = pruned2d
    assert info["group_order"] == 8
    assert sum(info["fields_after"]) < sum(info["fields_before"])
    assert abs(info["removed_fraction"] - 0.5) < 0.1
    assert info["fields_after"][0] == info["fields_before"][0]  # the stem (input layer) is protected
    assert pruned.config["layer_fields"] == info["fields_after"] == layer_fields(pruned)
    core = pruned.export().core
    convs = [m for blocks in (core.enc, core.decs) for b in blocks for m in b if isinstance(m, torch.nn.Conv2d)]
    for conv in convs:  # every hidden width is a whole number of regular fields
        assert conv.out_channels % 8 == 0 and conv.in_channels % 8 in (0, 1)
    assert core.head.out_channels == 3 and core.head.in_channels % 8 == 0  # the head is protected
    assert count_macs(pruned)["macs"] < count_macs(tiny2d())["macs"]


@pytest.mark.parametrize("exported", [False, True])
def test_pruned_2d_equivariant_all_8_p4m_elements(pruned2d, exported):
    pruned, _ = pruned2d
    net = pruned.export() if exported else pruned
    eq = equivariance_error(net, x=_x(32, 32).repeat(1, 1, 1, 1))
    assert len(eq["per_element"]) == 8
    assert eq["max"] < TOL, eq


def test_equivariance_check_can_fail():
    # Generic per-channel L1 pruning splits the single 8-channel field of level 0 in half.
    m = tiny2d(widths=(1, 2, 2))
    contrast = channel_prune_plain(m.export(), 0.5)
    assert equivariance_error(contrast, x=_x(32, 32))["max"] > 1e-3
    assert equivariance_error(m.export(), x=_x(32, 32))["max"] < TOL


def test_pruned_escnn_and_export_identical(pruned2d):
    pruned, _ = pruned2d
    x = _x()
    with torch.no_grad():
        a, b = pruned(x), pruned.export()(x)
    assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()


def test_ratio_zero_reproduces_the_model_exactly():
    m = tiny2d()
    same, info = prune_model(m, 0.0)
    assert info["fields_after"] == info["fields_before"]
    with torch.no_grad():
        assert torch.allclose(same(_x()), m(_x()), atol=1e-6)


def test_removing_dead_fields_keeps_outputs_through_skips():
    """Fields whose batch norm outputs 0 after ReLU (gamma = 0, beta < 0) carry nothing: removing them
    must leave the outputs unchanged, which checks the weight copy through skips and concatenations."""
    torch.manual_seed(3)
    m = _randomize_bn(build_model({"arch": "unet_equi", "group": "D4", "widths": [2, 4, 4], "dec_convs": 1}), seed=3)
    layers, _ = prunable_layers(m)
    dead = {1: [1], 3: [0, 2], 5: [3], 6: [1]}  # enc level-0 skip, enc level-1 skip, bottleneck, a decoder
    with torch.no_grad():
        for li, fields in dead.items():
            bn = getattr(layers[li].bn, "batch_norm_[8]")
            bn.weight[fields] = 0.0
            bn.bias[fields] = -1.0
        m.train()
        m.eval()
    n_prunable = sum(layer_fields(m)[1:])
    ratio = sum(len(f) for f in dead.values()) / n_prunable
    keeps = select_fields(field_importance(m, "bn"), ratio, "global")
    for li, fields in dead.items():
        assert not set(fields) & set(keeps[li])
    pruned, info = prune_model(m, ratio, criterion="bn", scope="global")
    assert sum(info["fields_before"]) - sum(info["fields_after"]) == sum(len(f) for f in dead.values())
    with torch.no_grad():
        assert torch.allclose(pruned(_x()), m(_x()), atol=1e-5)


def test_layer_scope_iterative_and_errors():
    m = tiny2d()
    pruned, info = prune_model(m, 0.5, scope="layer", criterion="bn", steps=2)
    before, after = info["fields_before"], info["fields_after"]
    assert after[0] == before[0]
    assert all(1 <= a <= b for a, b in zip(after, before)) and sum(after) < sum(before)
    single, info1 = prune_model(m, 0.5, scope="layer")  # one round: each layer loses round(ratio * n)
    assert info1["fields_after"][1:] == [max(1, b - int(np.floor(0.5 * b + 0.5))) for b in before[1:]]
    assert equivariance_error(pruned, x=_x(32, 32))["max"] < TOL
    with pytest.raises(MicroSymError):
        prune_model(m, 1.0)
    with pytest.raises(MicroSymError):
        prune_model(m, 0.5, criterion="taylor")
    with pytest.raises(MicroSymError):
        prune_model(m.export(), 0.5)
    with pytest.raises(MicroSymError):
        prune_model(build_model({"arch": "unet_plain", "widths": [4, 8]}), 0.5)


def test_pruned_model_saves_loads_weights_only_and_segments(pruned2d, tmp_path):
    from micro_sym.inference.whole_image import segment_image

    pruned, info = pruned2d
    path = save_model(pruned, tmp_path / "pruned.pt", trained_on={"test": True}, extra={"pruning": info})
    blob = torch.load(path, weights_only=True)
    assert blob["config"]["layer_fields"] == info["fields_after"]
    loaded = load_model(path)
    with torch.no_grad():
        assert torch.allclose(loaded(_x()), pruned(_x()), atol=1e-6)
    image = np.random.default_rng(0).normal(size=(40, 56)).astype(np.float32)
    # The untrained net's boundary probabilities lie in 0.59-0.70: a threshold of 0.7 leaves grains.
    kw = dict(min_size=4, boundary_threshold=0.7)
    out = segment_image(load_model(path, export=True), image, **kw)
    ref = segment_image(pruned.export(), image, **kw)
    assert out["orientation"].dtype == np.float32 and ref["grains"].max() >= 2
    np.testing.assert_allclose(out["boundary"], ref["boundary"], atol=1e-5)
    np.testing.assert_array_equal(out["grains"], ref["grains"])


# --------------------------------------------------------------------------- 3D


@pytest.fixture(scope="module")
def octa():
    from micro_sym.models.gcnn3d import build_model3d

    torch.manual_seed(0)
    m = build_model3d({"variant": "octa", "width": 48, "levels": 2}, measure_halo=False)
    m.train()
    with torch.no_grad():
        for s in range(2):
            m(torch.randn(1, 1, 8, 8, 8, generator=torch.Generator().manual_seed(s)))
        m.eval()
    return m


def test_pruned_octa_3d_equivariant_24_rotations_and_roundtrip(octa, tmp_path):
    pruned, info = prune_model(octa, 0.5, scope="layer")
    assert info["group_order"] == 24 and sum(info["fields_after"]) < sum(info["fields_before"])
    for net in (pruned, pruned.export()):
        eq = equivariance_error(net, size=8)
        assert len(eq["per_element"]) == 24 and eq["max"] < 1e-4, eq["max"]
    x = torch.randn(1, 1, 8, 8, 8)
    path = save_model(pruned, tmp_path / "p3.pt", trained_on={})
    loaded = load_model(path)
    onnx_path = export_model(pruned, tmp_path / "p3.onnx")
    with torch.no_grad():
        ref = pruned(x)
        assert torch.allclose(loaded(x), ref, atol=1e-5)
        assert torch.allclose(load_deployed(onnx_path)(x), ref, atol=1e-4)


# --------------------------------------------------------------------------- export


@pytest.fixture(scope="module")
def exported_files(pruned2d, tmp_path_factory):
    pruned, _ = pruned2d
    d = tmp_path_factory.mktemp("exported")
    return {fmt: export_model(pruned, d / f"m{suf}") for fmt, suf in
            (("torch", ".pt"), ("safetensors", ".safetensors"), ("torchscript", ".ts"), ("onnx", ".onnx"))}


@pytest.mark.parametrize("fmt", ["torch", "safetensors", "torchscript", "onnx"])
def test_exported_files_match_torch_and_carry_metadata(pruned2d, exported_files, fmt):
    pruned, _ = pruned2d
    d = load_deployed(exported_files[fmt])
    assert (d.ndim, d.k, d.halo, d.total_stride) == (2, 4, pruned.halo, pruned.total_stride)
    assert d.meta["config"]["layer_fields"] == pruned.config["layer_fields"]
    x = _x(48, 80, seed=5)  # not the tracing size: dynamic H/W
    with torch.no_grad():
        ref = pruned.export()(x)
        got = d(x)
    assert got.shape == ref.shape
    assert (got - ref).abs().max().item() < 1e-4
    assert equivariance_error(d, x=_x(32, 32))["max"] < TOL
    if fmt == "torch":
        blob = torch.load(exported_files[fmt], weights_only=True)
        assert blob["meta"]["halo"] == pruned.halo
    # load_model dispatches deployed files; the engine can ship them to workers (pickle)
    via = load_model(exported_files[fmt])
    assert via.exported and via.fmt == fmt
    clone = pickle.loads(pickle.dumps(via))
    with torch.no_grad():
        assert (clone(x) - ref).abs().max().item() < 1e-4


def test_onnx_metadata_props(exported_files, pruned2d):
    import onnx

    proto = onnx.load(str(exported_files["onnx"]))
    meta = json.loads({p.key: p.value for p in proto.metadata_props}["micro_sym"])
    assert meta["halo"] == pruned2d[0].halo and meta["ndim"] == 2
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims[2:]] == ["y", "x"]


def test_exported_files_run_without_escnn(pruned2d, exported_files, tmp_path):
    from micro_sym.inference.whole_image import segment_image

    pruned, _ = pruned2d
    x = _x(48, 64, seed=7)
    with torch.no_grad():
        ref = pruned.export()(x).numpy()
    np.save(tmp_path / "x.npy", x.numpy())
    np.save(tmp_path / "ref.npy", ref)
    image = np.random.default_rng(0).normal(size=(40, 40)).astype(np.float32)
    np.save(tmp_path / "image.npy", image)
    grains = segment_image(pruned.export(), image, min_size=4, boundary_threshold=0.7)["grains"]
    assert grains.max() >= 2
    np.save(tmp_path / "grains.npy", grains)
    script = BLOCK_ESCNN + textwrap.dedent(f"""
        import numpy as np, torch
        from micro_sym.deploy.export import load_deployed
        from micro_sym.inference.whole_image import segment_image
        x = torch.from_numpy(np.load({str(tmp_path / 'x.npy')!r}))
        ref = np.load({str(tmp_path / 'ref.npy')!r})
        for p in {[str(p) for p in exported_files.values()]!r}:
            m = load_deployed(p)
            with torch.no_grad():
                err = float(np.abs(m(x).numpy() - ref).max())
            assert err < 1e-4, (p, err)
            out = segment_image(m, np.load({str(tmp_path / 'image.npy')!r}), min_size=4, boundary_threshold=0.7)
            assert np.array_equal(out["grains"], np.load({str(tmp_path / 'grains.npy')!r})), p
        try:
            import escnn
        except ImportError:
            pass
        else:
            raise SystemExit("escnn was importable")
        assert not any(k.startswith("escnn") for k in sys.modules)
        print("OK")
    """)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0 and "OK" in res.stdout, res.stderr[-2000:]


def test_bundled_3d_model_segments_without_escnn(tmp_path):
    """The bundled default-3d (an exported file) predicts, decodes its cubic-harmonic field and finds
    grains with escnn blocked, giving the same quaternions as here."""
    import tifffile

    from micro_sym.inference import load_network, predict_array

    vol = tifffile.imread(ROOT / "sample_data" / "volume" / "images" / "sample_000.tif")[:24, :24, :24]
    np.save(tmp_path / "vol.npy", vol)
    maps = predict_array(load_network("default-3d"), vol)
    np.save(tmp_path / "q.npy", maps["orientation"])
    from micro_sym.grains.rules import grains_by_rule, network_rule

    np.save(tmp_path / "g.npy", grains_by_rule(maps["orientation"], maps["boundary"], network_rule(5.0, 3), symmetry="cubic"))
    script = BLOCK_ESCNN + textwrap.dedent(f"""
        import numpy as np
        from micro_sym.grains.rules import grains_by_rule, network_rule
        from micro_sym.inference import load_network, predict_array
        out = predict_array(load_network("default-3d"), np.load({str(tmp_path / 'vol.npy')!r}))
        from micro_sym.orientation import misorientation_cubic
        q = np.load({str(tmp_path / 'q.npy')!r})
        err = misorientation_cubic(np.moveaxis(out["orientation"], 0, -1), np.moveaxis(q, 0, -1))
        assert np.mean(err < 0.1) > 0.995, np.mean(err < 0.1)  # float32 quaternions; near-ties may flip
        grains = grains_by_rule(out["orientation"], out["boundary"], network_rule(5.0, 3), symmetry="cubic")
        ref = np.load({str(tmp_path / 'g.npy')!r})
        assert ref.max() >= 1 and (ref == 0).any() and np.mean(grains == ref) > 0.99, np.mean(grains == ref)
        assert not any(k.startswith("escnn") for k in sys.modules)
        print("OK")
    """)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0 and "OK" in res.stdout, res.stderr[-2000:]


def test_export_errors(tmp_path, pruned2d):
    with pytest.raises(MicroSymError):
        export_model(pruned2d[0], tmp_path / "m.xyz")
    (tmp_path / "bad.onnx").write_bytes(b"not onnx")
    with pytest.raises(MicroSymError):
        load_deployed(tmp_path / "bad.onnx")
    with pytest.raises(MicroSymError):
        load_deployed(tmp_path / "missing.ts")


# --------------------------------------------------------------------------- fine-tuning and CLI


@pytest.fixture(scope="module")
def dataset(lattice_dataset):
    return lattice_dataset(3)


def _cli(argv):
    from micro_sym.cli import main

    try:
        return main(argv)
    except SystemExit as e:  # typer exits explicitly on success
        return e.code or 0


def test_cli_prune_finetune_and_export(dataset, tmp_path):
    main = _cli

    torch.manual_seed(0)
    src = save_model(tiny2d(widths=(1, 2, 2)), tmp_path / "tiny.pt", trained_on={"test": True})
    out = tmp_path / "pruned.pt"
    rc = main(["prune", str(src), "--ratio", "0.5", "--out", str(out), "--finetune", str(dataset), "--val", str(dataset),
               "--epochs", "1", "--steps-per-epoch", "2", "--distill", "0.5", "--crop", "32", "--batch-size", "2", "--calibrate-batches", "2", "--data", str(dataset), "--max-images", "1", "--latency-size", "32"])
    assert rc == 0 and out.is_file()
    rep = json.loads((tmp_path / "pruned.report.json").read_text())
    assert rep["after"]["parameters"] < rep["before"]["parameters"]
    assert rep["after"]["equivariance_error"]["max"] < TOL and "grain_f1" in rep["after"]["accuracy"]
    assert rep["finetune"]["epochs"] == 1 and rep["finetune"]["distill"] == 0.5
    onnx_out = tmp_path / "pruned.onnx"
    rc = main(["export", str(out), "--format", "onnx", "--out", str(onnx_out), "--latency-size", "32"])
    assert rc == 0 and onnx_out.is_file()
    rep = json.loads((tmp_path / "pruned.onnx.report.json").read_text())
    assert rep["metadata"]["halo"] == load_model(out).halo and rep["after"]["equivariance_error"]["max"] < TOL
    assert main(["prune", str(src), "--ratio", "1.5", "--out", str(tmp_path / "x.pt")]) == 2
    assert main(["prune", str(src), "--ratio", "0.5", "--distill", "1", "--out", str(tmp_path / "x.pt")]) == 2  # no --finetune


def test_finetune_changes_weights_keeps_structure(dataset):
    pruned, _ = prune_model(tiny2d(widths=(1, 2, 2)), 0.5)
    tuned = finetune_model(pruned, dataset, val=dataset, epochs=1, steps_per_epoch=2, crop=32, batch_size=2, log=lambda s: None,
                           train_config={"eval": {"min_size": 4}})
    assert tuned.config["layer_fields"] == pruned.config["layer_fields"]
    with torch.no_grad():
        assert not torch.allclose(tuned(_x()), pruned(_x()))
    assert equivariance_error(tuned, x=_x(32, 32))["max"] < TOL

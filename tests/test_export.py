"""export: ONNX files that onnxruntime runs like PyTorch (every seed architecture), safetensors with the spec, cards."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import os

import numpy as np
import pytest
import torch
from conftest import IDX_NAMES, idx_bytes, synthetic_digits
from rich.console import Console

from convstudy.cli import main
from convstudy.data import REGISTRY
from convstudy.executors import RunOptions, run_study
from convstudy.deploy.export import TOLERANCE, check_onnx, load_exported, onnx_bytes
from convstudy.deploy.predict import load_trained
from convstudy.model import build_model
from convstudy.spec import LAYERS, ModelSpec, build_study, seed_study
from convstudy.spec.layers import ACTIVATIONS
from convstudy.store import StudyStore, load_tensors

SEED_MODELS = seed_study().models


def needs_onnx():
    pytest.importorskip("onnx", reason="onnx not installed: pip install 'convstudy[onnx]'")
    return pytest.importorskip("onnxruntime", reason="onnxruntime not installed: pip install 'convstudy[onnx]'")


@pytest.mark.parametrize("spec", SEED_MODELS, ids=[m.name for m in SEED_MODELS])
def test_onnx_parity_for_every_seed_architecture(spec):
    ort = needs_onnx()
    torch.manual_seed(0)
    module = build_model(spec, (28, 28, 1)).eval()
    data = onnx_bytes(module, (28, 28, 1))
    x = torch.rand(256, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    parity = check_onnx(data, module, x, "random inputs")
    assert parity.passed, parity.sentence()
    assert parity.max_abs_diff < TOLERANCE and parity.argmax_same == 256
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.shape[0] == "batch" and inp.shape[1:] == [1, 28, 28]  # dynamic batch dimension
    out = session.run(None, {inp.name: x[:3].numpy()})[0]
    assert out.shape == (3, 10) and np.allclose(out.sum(1), 1.0, atol=1e-5)


# One small model per layer kind of the registry, with the variants each kind has (pool modes, activations,
# 'same' padding with odd and even kernels and strides); a new kind fails the coverage test until it has one.
KIND_MODELS = {
    "conv": [["conv(4,3)", "conv(4,3,same)", "conv(4,2,same)", "conv(4,4,same,stride=3,activation=tanh)",
              "conv(4,3,same,stride=2)", "flatten", "dense(10)"]],
    "pool": [["conv(4,3)", "pool(2)", "pool(3,2,mode=avg)", "flatten", "dense(10)"],
             ["conv(4,3)", "pool(3,mode=avg)", "pool(2,1)", "flatten", "dense(10)"]],
    "dropout": [["conv(4,3)", "dropout(0.3)", "flatten", "dropout(0.5)", "dense(10)"]],
    "flatten": [["flatten", "dense(10)"]],
    "dense": [["flatten", "dense(16,tanh)", "dense(12,linear)", "dense(10)"]],
    "bn": [["conv(4,3)", "bn", "pool(2)", "bn(momentum=0.9,epsilon=0.01)", "flatten", "dense(8)", "bn", "dense(10)"]],
    "activation": [[f"conv(4,3,activation={fn})", fn, "flatten", f"dense(16,{fn})", "dense(10)"] for fn in ACTIVATIONS],
    "dwconv": [["conv(4,3)", "dwconv(3,multiplier=2)", "dwconv(3,same,stride=2)", "flatten", "dense(10)"]],
    "sepconv": [["conv(4,3)", "sepconv(6,3,same)", "sepconv(8,5,same,stride=3)", "flatten", "dense(10)"]],
    "gap": [["conv(4,3)", "gap", "dense(10)"]],
    "gmp": [["conv(4,3)", "gmp", "dense(10)"]],
    "ln": [["conv(4,3)", "ln", "flatten", "dense(10)"]],
    "gn": [["conv(8,3)", "gn(2)", "flatten", "dense(10)"]],
    "se": [["conv(8,3)", "se", "flatten", "dense(10)"]],
    "residual": [["conv(8,3,same)", "residual([conv(8,3,same),bn,conv(8,3,same,activation=linear)])",
                  "residual([conv(16,3,same,stride=2)],projection_bn=true)", "gap", "dense(10)"]],
}
KIND_CASES = [pytest.param(layers, id=f"{kind}-{i}") for kind, models in KIND_MODELS.items()
              for i, layers in enumerate(models)]
# Strided 'same' convs: (layers, (H, W, C)) over odd and even kernels, strides and input sizes, the first being
# issue 25's model, where the exported graph computed 2x2 where PyTorch computed 3x3.
SAME_CASES = [
    (["conv(3,7,same,stride=3)", "pool(2)", "bn", "conv(5,3,same,stride=2)", "flatten", "dense(10)"], (28, 28, 1)),
    *[([f"conv(4,{k},same,stride={s})", "flatten", "dense(10)"], shape) for k, s, shape in [
        (1, 2, (28, 28, 1)), (2, 2, (27, 27, 1)), (3, 3, (13, 13, 1)), (4, 3, (28, 28, 1)), (5, 2, (17, 32, 3)),
        (5, 4, (31, 31, 1)), (6, 4, (32, 32, 3)), (7, 3, (28, 28, 1)), (7, 2, (5, 5, 1)), (2, 5, (29, 30, 1))]],
]


def assert_onnx_parity(layers: list, shape: tuple[int, int, int]) -> None:
    """Export a fresh model (BatchNorm statistics made non-trivial) and compare onnxruntime with PyTorch."""
    needs_onnx()
    torch.manual_seed(0)
    module = build_model(ModelSpec(name="m", layers=layers), shape).eval()
    for bn in module.modules():
        if isinstance(bn, torch.nn.modules.batchnorm._BatchNorm):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    h, w, c = shape
    x = torch.rand(64, c, h, w, generator=torch.Generator().manual_seed(1))
    parity = check_onnx(onnx_bytes(module, shape), module, x, "random inputs")
    assert parity.passed, parity.sentence()


def test_every_registered_layer_kind_has_a_parity_model():
    assert set(KIND_MODELS) == set(LAYERS)


@pytest.mark.parametrize("layers", KIND_CASES)
def test_onnx_parity_for_every_layer_kind(layers):
    assert_onnx_parity(layers, (28, 28, 1))


@pytest.mark.parametrize("layers, shape", SAME_CASES, ids=[f"{l[0]}-{'x'.join(map(str, s))}" for l, s in SAME_CASES])
def test_onnx_parity_for_strided_same_convs(layers, shape):
    assert_onnx_parity(layers, shape)


# ---------------------------------------------------------------- the command on a trained study

@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """A small learnable MNIST stand-in (300 train / 200 test) and its digests."""
    data_dir = tmp_path_factory.mktemp("export-data") / "mnist"
    data_dir.mkdir()
    (x_train, y_train), (x_test, y_test) = synthetic_digits(300, seed=3), synthetic_digits(200, seed=4)
    payloads = {"train_images": idx_bytes(x_train), "train_labels": idx_bytes(y_train),
                "test_images": idx_bytes(x_test), "test_labels": idx_bytes(y_test)}
    for key, data in payloads.items():
        (data_dir / IDX_NAMES[key]).write_bytes(gzip.compress(data, mtime=0))
    return data_dir, {k: hashlib.sha256(v).hexdigest() for k, v in payloads.items()}


@pytest.fixture
def accept_tiny(tiny_data, monkeypatch):
    data_dir, digests = tiny_data
    monkeypatch.setitem(REGISTRY, "mnist", dataclasses.replace(REGISTRY["mnist"], sha256=digests, mirrors=()))
    return data_dir


@pytest.fixture(scope="module")
def trained_study(tiny_data, tmp_path_factory):
    """Model "small" (with BatchNorm) trained 1 epoch over seeds 0 and 1, so the card has a CI."""
    data_dir, digests = tiny_data
    out = tmp_path_factory.mktemp("export-study") / "out"
    study = build_study({
        "name": "exp", "dataset": "mnist", "seeds": 2,
        "train": {"epochs": 1, "batch_size": 32, "optimizer": "adam", "validation": "holdout"},
        "models": [{"name": "small", "layers": ["conv(6,3)", "pool(2)", "bn", "flatten", "dense(16)", "dense(10)"]}],
    })
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(REGISTRY, "mnist", dataclasses.replace(REGISTRY["mnist"], sha256=digests, mirrors=()))
        store, finished = run_study(study, RunOptions(out=out, data_dir=str(data_dir), device="cpu", quiet=True),
                                    Console(file=io.StringIO()))
    assert finished
    store.close()
    return out


def test_export_onnx_checks_itself_on_test_images_and_writes_a_card(trained_study, accept_tiny, tmp_path, capsys):
    ort = needs_onnx()
    target = tmp_path / "small.onnx"
    assert main(["export", str(trained_study), "--model", "small", "--seed", "1", "--format", "onnx",
                 "-o", str(target)]) == 0
    out = capsys.readouterr().out
    assert "parity check passed" in out and "200 test images" in out  # the tiny test set has 200
    store = StudyStore.open_existing(trained_study)
    trained = load_trained(store, "small", 1)
    store.close()
    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    x = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    theirs = session.run(None, {"images": x.numpy()})[0]
    ours = torch.softmax(trained.module(x), 1).detach().numpy()
    assert np.abs(theirs - ours).max() < TOLERANCE
    card = (tmp_path / "small.onnx.md").read_text()
    for heading in ("## Architecture", "## Data", "## Accuracy", "## Training", "## Provenance", "## Export check"):
        assert heading in card
    assert "over 2 seeds" in card and "95% CI [" in card and "parity check passed" in card
    assert "| 3 | `bn` |" in card and "Optimizer adam" in card
    assert "- convstudy: " in card and "- torch: " in card and "seed 1" in card


def test_export_falls_back_to_random_inputs_and_says_so(trained_study, tmp_path, capsys):
    needs_onnx()
    target = tmp_path / "m.onnx"
    empty = tmp_path / "nodata"
    empty.mkdir()
    assert main(["export", str(trained_study), "--model", "small", "--format", "onnx", "-o", str(target),
                 "--data-dir", str(empty)]) == 0
    out = capsys.readouterr().out
    assert "parity check passed" in out and "256 random inputs (test set not loadable" in out
    assert target.is_file() and (tmp_path / "m.onnx.md").is_file()


def test_export_safetensors_carries_the_spec(trained_study, tmp_path, capsys):
    target = tmp_path / "small.safetensors"
    assert main(["export", str(trained_study), "--model", "small", "--format", "safetensors", "-o", str(target)]) == 0
    tensors, meta = load_tensors(target)
    assert json.loads(meta["spec"])["layers"] == ["conv(6,3)", "pool", "bn", "flatten", "dense(16)", "dense(10)"]
    assert meta["seed"] == "0" and json.loads(meta["input_shape"]) == [28, 28, 1]
    module, _ = load_exported(target)
    store = StudyStore.open_existing(trained_study)
    trained = load_trained(store, "small", 0)
    store.close()
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(module(x), trained.module(x))
    assert "## Accuracy" in (tmp_path / "small.safetensors.md").read_text()
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # not the temp file's private 0600


@pytest.mark.parametrize("argv, words", [
    (["--model", "nope", "--format", "safetensors"], ['no model "nope"']),
    (["--model", "small", "--seed", "7", "--format", "safetensors"], ["seed 7"]),
    (["--model", "small", "--format", "zip"], ["--format", "zip"]),
])
def test_export_user_mistakes_are_one_line(trained_study, tmp_path, capsys, argv, words):
    assert main(["export", str(trained_study), *argv, "-o", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and all(w in err[0] for w in words)
    assert not (tmp_path / "x").exists()


def test_export_of_a_non_study_is_one_line(tmp_path, capsys):
    assert main(["export", str(tmp_path), "--model", "a", "--format", "onnx", "-o", str(tmp_path / "a.onnx")]) == 2
    assert "not a study directory" in capsys.readouterr().err

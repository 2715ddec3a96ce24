"""import-keras: hand-written Keras 2 / Keras 3 JSON files become the same study models as the notebook's."""

from __future__ import annotations

import copy
import json
import tomllib
from pathlib import Path

import pytest
from conftest import write_image_folder

from convstudy.cli import main
from convstudy.data import get_info
from convstudy.keras import import_keras, study_toml
from convstudy.model import summarize_model
from convstudy.spec import build_study, load_study_file, seed_study
from convstudy.store import StudyStore

DATA = Path(__file__).parent / "data"
K31_FILES = ["keras_k3-1_keras2.json", "keras_k3-1_keras3.json"]


def load(name: str) -> dict:
    return json.loads((DATA / name).read_text())


def layer_entries(doc: dict) -> list[dict]:
    return doc["config"]["layers"]


@pytest.mark.parametrize("file", K31_FILES)
def test_k3_1_imports_with_the_notebook_layers_and_keras_param_count(file):
    study = import_keras(DATA / file, name="k3-1")
    model = study.models[0]
    assert model.layers == seed_study().model("k3-1").layers
    summary = summarize_model(model, (28, 28, 1))
    assert summary.total_params == 1_199_882
    assert summary.trainable_params == 1_199_882


def test_keras3_compiled_optimizer_is_carried_over():
    assert import_keras(DATA / "keras_k3-1_keras3.json").train.optimizer.name == "adadelta"
    assert import_keras(DATA / "keras_k3-1_keras2.json").train.optimizer.name == "adam"  # no compile config


def test_tf_keras_input_layer_batchnorm_and_softmax_activation_fold_into_the_seed_model():
    study = import_keras(DATA / "keras_k5-4_tfkeras2.json")
    model = study.models[0]
    assert model.name == "k5-4"  # a user-given Keras model name is kept; "sequential_1" is not
    assert model.layers == seed_study().model("k5-4").layers
    summary = summarize_model(model, (28, 28, 1))
    assert (summary.total_params, summary.trainable_params) == (106_954, 106_762)


@pytest.mark.parametrize("file", [*K31_FILES, "keras_k5-4_tfkeras2.json"])
def test_written_toml_reads_back_as_the_same_study(file):
    study = import_keras(DATA / file)
    assert build_study(tomllib.loads(study_toml(study)), source="x") == study


def test_cli_writes_a_study_that_trains(tmp_path, tiny_mnist, capsys):
    out_toml = tmp_path / "imported.toml"
    assert main(["import-keras", str(DATA / "keras_k3-1_keras2.json"), "--name", "k3-1", "-o", str(out_toml)]) == 0
    assert "1,199,882 params" in capsys.readouterr().err
    study = load_study_file(out_toml)
    assert [m.name for m in study.models] == ["k3-1"]
    out = tmp_path / "run"
    code = main(["run", str(out_toml), "--epochs", "1", "--train-limit", "200", "--data-dir", str(tiny_mnist.dir),
                 "--out", str(out), "--quiet", "--device", "cpu"])
    assert code == 0
    store = StudyStore.open_existing(out)
    (trial,) = store.db.trials()
    assert trial.state == "complete" and trial.test_accuracy is not None
    assert store.weights_path("k3-1", 0).is_file()
    store.close()
    # A second import to the same path is refused rather than overwriting the study.
    assert main(["import-keras", str(DATA / "keras_k3-1_keras2.json"), "-o", str(out_toml)]) == 2


def test_cli_prints_toml_to_stdout(capsys):
    assert main(["import-keras", str(DATA / "keras_k3-1_keras3.json"), "--name", "mine"]) == 0
    text = capsys.readouterr().out
    assert tomllib.loads(text)["models"][0]["name"] == "mine"


def _set(index: int, **changes):
    def mutate(doc: dict) -> None:
        layer_entries(doc)[index]["config"].update(changes)
    return mutate


def _replace(index: int, entry: dict):
    def mutate(doc: dict) -> None:
        layer_entries(doc)[index] = entry
    return mutate


def _top(**changes):
    def mutate(doc: dict) -> None:
        doc.update(changes)
    return mutate


# (mutation of keras_k3-1_keras2.json, words the one error line must contain)
BAD = {
    "dilation": (_set(1, dilation_rate=[2, 2]), ["conv2d_2", "dilation_rate"]),
    "regulariser": (_set(5, kernel_regularizer={"class_name": "L1L2", "config": {"l1": 0.0, "l2": 0.01}}),
                    ["dense_1", "kernel_regularizer"]),
    "custom layer": (_replace(3, {"class_name": "MyAttention", "config": {"name": "my_attention", "heads": 4}}),
                     ["my_attention", "MyAttention", "not supported"]),
    "non-square kernel": (_set(0, kernel_size=[3, 5]), ["conv2d_1", "kernel_size"]),
    "no bias": (_set(5, use_bias=False), ["dense_1", "use_bias"]),
    "initialiser": (_set(0, kernel_initializer={"class_name": "HeNormal", "config": {"seed": None}}),
                    ["conv2d_1", "kernel_initializer"]),
    "activation": (_set(5, activation="exponential"), ["dense_1", "activation"]),
    "unknown option": (_set(5, lora_rank=4), ["dense_1", "lora_rank"]),
    "frozen": (_set(0, trainable=False), ["conv2d_1", "trainable"]),
    "pool padding": (_set(2, padding="same"), ["max_pooling2d_1", "padding"]),
    "input shape": (_set(0, batch_input_shape=[None, 32, 32, 3]), ["conv2d_1", "32x32x3", "28x28x1"]),
    "classes": (_set(7, units=5), ["dense(5)", "dense(10)"]),
    "classifier activation": (_set(7, activation="sigmoid"), ["dense_2", "sigmoid"]),
    "subclassed": (_top(class_name="MyModel"), ["Sequential", "MyModel"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_unsupported_options_are_one_line_naming_layer_and_option(case, tmp_path, capsys):
    mutate, words = BAD[case]
    doc = copy.deepcopy(load("keras_k3-1_keras2.json"))
    mutate(doc)
    path = tmp_path / "model.json"
    path.write_text(json.dumps(doc))
    assert main(["import-keras", str(path)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("convstudy: error: model.json")
    assert captured.out == ""
    for word in words:
        assert word in lines[0]


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", ""])
def test_broken_json_is_one_line(content, tmp_path, capsys):
    path = tmp_path / "broken.json"
    path.write_text(content)
    assert main(["import-keras", str(path)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_keras3_input_layer_shape_is_checked(tmp_path, capsys):
    doc = load("keras_k3-1_keras3.json")
    layer_entries(doc)[0]["config"]["batch_shape"] = [None, 28, 28, 3]
    path = tmp_path / "m.json"
    path.write_text(json.dumps(doc))
    assert main(["import-keras", str(path)]) == 2
    err = capsys.readouterr().err
    assert "input_layer" in err and "28x28x3" in err


def _deep(n: int) -> str:
    return "[" * n + "]" * n


def _opt(class_name, **config):
    def mutate(doc: dict) -> None:
        doc["compile_config"] = {"optimizer": {"class_name": class_name, "config": config}}
    return mutate




# Issue 14 item 7: hostile model JSON files (text, words the one error line must contain).
HOSTILE_TEXT = {
    "deep arrays": ('{"class_name": "Sequential", "config": {"layers": ' + _deep(5000) + "}}", ["nested"]),
    "deep objects": ('{"class_name": "Sequential", "config": ' + '{"a": ' * 5000 + "1" + "}" * 5001, ["nested"]),
    "deep below recursion limit": ('{"class_name": "Sequential", "config": {"layers": ' + _deep(100) + "}}",
                                   ["nested"]),
    "huge int": ('{"class_name": "Sequential", "config": {"layers": [{"class_name": "Dense", "config": {"units": '
                 + "9" * 5000 + "}}]}}", ["digits"]),
    "NaN": ('{"class_name": "Sequential", "config": {"layers": [{"class_name": "Dropout", "config": {"rate": NaN}}]}}',
            ["NaN"]),
    "duplicate key": ('{"class_name": "Sequential", "class_name": "Functional", "config": {}}', ["duplicate"]),
}
# (mutation of keras_k3-1_keras2.json, words the one error line must contain)
HOSTILE = {
    "long int": (_set(5, units=10**30), ["integer"]),
    "class_name list": (_replace(3, {"class_name": ["Dropout"], "config": {"rate": 0.25}}), ["layer 4"]),
    "config list": (_replace(3, {"class_name": "Dropout", "config": [0.25]}), ["layer 4"]),
    "initializer list": (_set(0, kernel_initializer=["GlorotUniform"]), ["kernel_initializer"]),
    "initializer config list": (_set(0, kernel_initializer={"class_name": "GlorotUniform", "config": [1]}),
                                ["kernel_initializer"]),
    "optimizer list": (_top(compile_config={"optimizer": ["SGD"]}), ["optimizer"]),
    "optimizer config list": (_top(compile_config={"optimizer": {"class_name": "SGD", "config": [0.9]}}),
                              ["optimizer"]),
    "compile_config list": (_top(compile_config=[1]), ["compile_config"]),
    "kernel_size bools": (_set(0, kernel_size=[True, True]), ["conv2d_1", "kernel_size"]),
    "strides bools": (_set(0, strides=[True, True]), ["conv2d_1", "strides"]),
    "pool_size bool": (_set(2, pool_size=True), ["max_pooling2d_1", "pool_size"]),
    "filters bool": (_set(0, filters=True), ["conv2d_1", "filters"]),
    "units bool": (_set(5, units=True), ["dense_1", "units"]),
    "rate bool": (_set(3, rate=False), ["dropout_1", "rate"]),
    "use_bias 1": (_set(5, use_bias=1), ["dense_1", "use_bias"]),
    "sgd momentum -5": (_opt("SGD", learning_rate=0.01, momentum=-5), ["momentum", "[0, 1)"]),
    "sgd momentum 1": (_opt("SGD", learning_rate=0.01, momentum=1.0), ["momentum", "[0, 1)"]),
    "adam lr 0": (_opt("Adam", learning_rate=0), ["lr"]),
    "adam beta bool": (_opt("Adam", beta_1=True), ["beta_1"]),
    "lr schedule": (_opt("SGD", learning_rate={"class_name": "ExponentialDecay", "config": {}}), ["learning_rate"]),
}


def _import_one_line(path, capsys) -> str:
    assert main(["import-keras", str(path)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err[-600:]
    assert captured.out == "" and len(lines[0]) < 400
    return lines[0]


@pytest.mark.parametrize("case", sorted(HOSTILE_TEXT))
def test_hostile_json_text_is_one_line(case, tmp_path, capsys):
    text, words = HOSTILE_TEXT[case]
    path = tmp_path / "model.json"
    path.write_text(text)
    line = _import_one_line(path, capsys)
    assert line.startswith("convstudy: error: model.json")
    for word in words:
        assert word in line, line


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_json_values_are_one_line(case, tmp_path, capsys):
    mutate, words = HOSTILE[case]
    doc = copy.deepcopy(load("keras_k3-1_keras2.json"))
    mutate(doc)
    path = tmp_path / "model.json"
    path.write_text(json.dumps(doc))
    line = _import_one_line(path, capsys)
    assert line.startswith("convstudy: error: model.json")
    for word in words:
        assert word in line, line


def test_a_fifo_is_refused_fast(tmp_path, capsys):
    import os

    fifo = tmp_path / "model.json"
    os.mkfifo(fifo)
    assert "not a regular file" in _import_one_line(fifo, capsys)


def test_names_that_are_not_strings_do_not_crash(tmp_path, capsys):
    doc = copy.deepcopy(load("keras_k3-1_keras2.json"))
    doc["config"]["name"] = ["k3-1"]
    doc["keras_version"] = {"x": 1}
    layer_entries(doc)[0]["config"]["name"] = {"a": 1}
    path = tmp_path / "m.json"
    path.write_text(json.dumps(doc))
    assert main(["import-keras", str(path)]) == 0
    assert tomllib.loads(capsys.readouterr().out)["models"][0]["name"] == "m"


def test_valid_sgd_momentum_is_carried_over(tmp_path):
    doc = copy.deepcopy(load("keras_k3-1_keras2.json"))
    _opt("SGD", learning_rate=0.05, momentum=0.9)(doc)
    path = tmp_path / "m.json"
    path.write_text(json.dumps(doc))
    assert import_keras(path).train.optimizer.resolved() == {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.0}


def test_three_channel_keras_input_imports_onto_a_three_channel_source(tmp_path, capsys):
    """k3-1 on (32, 32, 3) inputs with 3 classes: refused for MNIST's shape, imported onto an RGB folder."""
    doc = json.loads(json.dumps(load("keras_k3-1_keras3.json")).replace("[null, 28, 28, 1]", "[null, 32, 32, 3]"))
    for entry in layer_entries(doc):
        if entry["class_name"] == "Dense" and entry["config"]["units"] == 10:
            entry["config"]["units"] = 3
    path = tmp_path / "rgb.json"
    path.write_text(json.dumps(doc))
    assert main(["import-keras", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "input shape 32x32x3 is not the dataset's 28x28x1" in err[0] and "--dataset" in err[0]
    write_image_folder(tmp_path / "imgs", per_class=2)
    out_toml = tmp_path / "rgb.toml"
    assert main(["import-keras", str(path), "--dataset", f"folder:{tmp_path / 'imgs'},channels=3",
                 "-o", str(out_toml)]) == 0
    assert "1,625,539 params" in capsys.readouterr().err
    study = load_study_file(out_toml)
    assert get_info(study.dataset).input_shape == (32, 32, 3)
    assert get_info(study.dataset).class_names == ("cat", "dog", "frog")
    summary = summarize_model(study.models[0], (32, 32, 3))
    assert [r.output_shape for r in summary.rows[:3]] == ["30x30x32", "28x28x64", "14x14x64"]
    # Keras's count for these layers on 3 input channels: 896 + 18,496 + 1,605,760 + 387.
    assert summary.total_params == 3 * 3 * 3 * 32 + 32 + 3 * 3 * 32 * 64 + 64 + 14 * 14 * 64 * 128 + 128 + 128 * 3 + 3
    assert main(["models", str(out_toml)]) == 0
    assert "(None, 30, 30, 32)" in capsys.readouterr().out


def test_a_name_kept_for_sampled_models_is_refused(tmp_path, capsys):
    """trial-NNNN names a search's sampled model; an imported model so named would stand in for one."""
    path = tmp_path / "trial-0007.json"
    path.write_text((DATA / K31_FILES[0]).read_text())
    for argv, where in (([str(DATA / K31_FILES[0]), "--name", "trial-0003"], "--name 'trial-0003'"),
                        ([str(path)], path.name)):
        assert main(["import-keras", *argv]) == 2
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"convstudy: error: {where}: model name") and \
            "kept for a search's sampled models" in lines[0], captured.err

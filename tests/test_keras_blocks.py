"""import-keras of real functional models (tf_keras 2.21 and Keras 3 `to_json`, tests/data/keras/) with residual
Adds and the modern layer kinds: Keras's own parameter counts, and one line for what convstudy cannot say."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from convstudy.cli import main
from convstudy.keras import import_keras
from conftest import count_params
from convstudy.model import build_model, summarize_model
from convstudy.spec import Residual

KERAS = Path(__file__).parent / "data" / "keras"
MODELS = json.loads((KERAS / "models.json").read_text())


@pytest.mark.parametrize("name", sorted(MODELS))
def test_real_keras_functional_models_import_with_keras_counts(name):
    model = import_keras(KERAS / name).models[0]
    summary = summarize_model(model, (28, 28, 1))
    want = (MODELS[name]["total"], MODELS[name]["trainable"])
    assert (summary.total_params, summary.trainable_params) == want
    assert count_params(build_model(model, (28, 28, 1))) == want
    assert any(isinstance(layer, Residual) for layer in model.layers)


def test_both_keras_versions_give_the_same_model():
    for stem in {n.rsplit("_", 1)[0] for n in MODELS}:
        two = [import_keras(KERAS / f"{stem}_{tag}.json").models[0].layers for tag in ("tfkeras2", "keras3")]
        assert two[0] == two[1], stem


def test_cli_import_of_a_functional_resnet(tmp_path, capsys):
    out = tmp_path / "study.toml"
    assert main(["import-keras", str(KERAS / "resnet_mini_keras3.json"), "-o", str(out)]) == 0
    assert "residual(" in out.read_text() and "19,882 params" in capsys.readouterr().err


def _doc(name: str) -> dict:
    return json.loads((KERAS / name).read_text())


def _layer(doc: dict, cls: str) -> dict:
    return next(e for e in doc["config"]["layers"] if e["class_name"] == cls)


def _rewire_add_to_three(doc):
    add = _layer(doc, "Add")
    add["inbound_nodes"][0]["args"][0].append(copy.deepcopy(add["inbound_nodes"][0]["args"][0][0]))


@pytest.mark.parametrize("name, edit, words", [
    ("mobile_mini_keras3.json", lambda d: _layer(d, "Add").update(class_name="Multiply"),
     '"add_5" (Multiply): a layer with 2 inputs is not supported'),
    ("mobile_mini_keras3.json", lambda d: _layer(d, "SeparableConv2D")["config"].update(dilation_rate=[2, 2]),
     "(SeparableConv2D): dilation_rate [2,2] is not supported"),
    ("mobile_mini_tfkeras2.json", lambda d: _layer(d, "DepthwiseConv2D")["config"].update(activation="hard_sigmoid"),
     "Keras 2's hard_sigmoid is 0.2x + 0.5"),
    ("grouped_ln_keras3.json", lambda d: _layer(d, "LayerNormalization")["config"].update(rms_scaling=True),
     "rms_scaling true is not supported"),
    ("grouped_ln_keras3.json", lambda d: _layer(d, "GlobalMaxPooling2D")["config"].update(keepdims=True),
     "keepdims true is not supported"),
    ("resnet_mini_tfkeras2.json", lambda d: next(e for e in d["config"]["layers"] if e["class_name"] == "Conv2D"
     and e["config"]["kernel_size"] == [1, 1])["config"].update(kernel_size=[3, 3], padding="same"),
     "a residual shortcut must be the identity"),
    ("resnet_mini_keras3.json", _rewire_add_to_three, "do not meet in one Add"),
])
def test_unsupported_keras_is_one_line_naming_the_layer(name, edit, words, tmp_path, capsys):
    doc = _doc(name)
    edit(doc)
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    assert main(["import-keras", str(path), "-o", str(tmp_path / "s.toml")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err and name in err, err

"""`--dataset` moves a study onto other data: the override applies before the file is validated, and each
model's classifier follows the new data's class count (issue 25); everything else stays as written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from convstudy.cli import main
from convstudy.spec import Dense, seed_study, with_overrides


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVSTUDY_CACHE_DIR", str(tmp_path / "decoded"))


def npz_source(tmp_path: Path, side: int = 12, classes: tuple[str, ...] = ("a", "b", "c")) -> str:
    """`--dataset` for a small NPZ of side x side grey images in len(classes) classes, as JSON."""
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (60, side, side), dtype=np.uint8)
    y = np.arange(60) % len(classes)
    path = tmp_path / f"d{len(classes)}.npz"
    np.savez(path, x_train=x[:45], y_train=y[:45], x_test=x[45:], y_test=y[45:])
    return json.dumps({"kind": "npz", "path": str(path), "classes": list(classes)})


def test_run_retargets_a_10_class_study_file_to_3_class_data(tiny_study_file, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", str(tiny_study_file(epochs=1, seeds=1)), "--dataset", npz_source(tmp_path),
                 "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["report", str(out), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["best_model"]["class_names"] == ["a", "b", "c"]
    assert [m["layers"] for m in doc["study"]["spec"]["models"]] == [  # the stored study is what trained
        ["conv(4,3)", "pool", "flatten", "dropout(0.25)", "dense(3)"],
        ["conv(6,5)", "pool", "flatten", "dense(16)", "dropout(0.5)", "dense(3)"]]
    assert all(m["states"] == {"complete": 1} for m in doc["models"])


def test_a_file_whose_own_dataset_is_absent_runs_on_the_override(tmp_path, capsys):
    study = tmp_path / "s.toml"
    study.write_text(f"""\
name = "elsewhere"
dataset = {{kind = "folder", path = "{tmp_path / 'not-here'}"}}

[[models]]
name = "m"
layers = ["conv(4,3)", "flatten", {{type = "dense", units = 7, activation = "softmax"}}]

[[spaces]]
name = "g"
factors = {{width = [8, 16]}}
layers = ["conv({{width}},3)", "flatten", "dense(10)"]
""")
    assert main(["models", str(study), "--dataset", npz_source(tmp_path, classes=("x", "y")), "--format",
                 "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    models = doc["models"]
    assert doc["input_shape"] == [12, 12, 1] and doc["dataset"].startswith("npz:")
    assert [m["name"] for m in models] == ["m", "g-width_8", "g-width_16"]
    assert [m["layers"][-1]["layer"] for m in models] == ["dense(2,softmax)", "dense(2)", "dense(2)"]


def test_every_seed_model_keeps_its_layers_but_the_classifier(tmp_path):
    seed = seed_study()
    moved = with_overrides(seed, dataset=npz_source(tmp_path, side=28, classes=("p", "q", "r", "s")))
    for before, after in zip(seed.models, moved.models):
        assert after.layers[:-1] == before.layers[:-1]
        assert after.layers[-1] == Dense(units=4, activation=before.layers[-1].activation)


def test_a_classifier_convstudy_cannot_resize_is_one_line_naming_it(tmp_path, capsys):
    study = tmp_path / "s.toml"
    study.write_text("""\
name = "t"
[[spaces]]
name = "g"
factors = {classes = [10]}
layers = ["conv(4,3)", "flatten", "dense({classes})"]
""")
    assert main(["models", str(study), "--dataset", npz_source(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "s.toml with --dataset" in err[0] and 'space "g"' in err[0]
    assert "must be dense(3)" in err[0]


def test_a_model_that_does_not_fit_the_new_data_is_one_line(tiny_study_file, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", str(tiny_study_file()), "--dataset", npz_source(tmp_path, side=4), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'tiny.toml with --dataset: model "small-b", layer 1 conv(6,5)' in err[0]
    assert not out.exists()

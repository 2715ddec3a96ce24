"""Spec stage: layer syntax, round trips, the seed study, and one-line errors for every mistake."""

from __future__ import annotations

import os
import textwrap

import pytest

from convstudy.cli import main
from convstudy.errors import UserError
from convstudy.spec import (
    LAYERS, BUILTIN, Conv, Dense, LayerError, Study, build_study, load_study_file, parse_layer, seed_study,
)

LAYER_EXAMPLES = {
    "conv": ["conv(32,3)", "conv(64,5,same)", "conv(16,3,stride=2)", "conv(8,3,same,stride=2,activation=tanh)"],
    "pool": ["pool(2)", "pool(3,2)", "pool(2,mode=avg)"],
    "dropout": ["dropout(0.25)", "dropout(0.0)"],
    "flatten": ["flatten"],
    "dense": ["dense(128)", "dense(10,softmax)", "dense(32,activation=tanh)"],
    "bn": ["bn", "bn(momentum=0.9)"],
    "activation": ["relu", "tanh", "activation(gelu)", "silu", "activation(mish)"],
    "dwconv": ["dwconv(3)", "dwconv(3,same,stride=2,multiplier=2,activation=linear)"],
    "sepconv": ["sepconv(32,3)", "sepconv(16,3,same,stride=2,use_bias=false)"],
    "gap": ["gap"],
    "gmp": ["gmp"],
    "ln": ["ln", "ln(epsilon=1e-05)"],
    "gn": ["gn", "gn(8)"],
    "se": ["se", "se(0.5,silu)"],
    "residual": ["residual([conv(16,3,same),bn])", "residual([conv(8,3,same),residual([conv(8,3,same)])],skip=false)"],
}


def test_every_registered_layer_has_examples():
    assert set(LAYER_EXAMPLES) == set(LAYERS)


@pytest.mark.parametrize("text", [t for ts in LAYER_EXAMPLES.values() for t in ts])
def test_layer_round_trips_through_string_and_table(text):
    layer = parse_layer(text)
    assert parse_layer(layer.to_string()) == layer
    assert parse_layer(layer.to_dict()) == layer


def test_compact_and_table_forms_agree():
    assert parse_layer("conv(64,5,same)") == parse_layer({"type": "conv", "filters": 64, "kernel": 5, "padding": "same"})
    assert parse_layer("Conv2D(64, 5)") == Conv(filters=64, kernel=5)
    assert parse_layer("dense(10)").activation == "relu"


@pytest.mark.parametrize("text, reason", [
    ("conv(32)", "kernel: missing"),
    ("conv(-1,3)", "filters"),
    ("dropout(1.5)", "rate"),
    ("dropout(0.5,0.2)", "too many arguments"),
    ("dense(10,wat=1)", "unknown argument"),
    ("warp(3)", 'unknown layer "warp"'),
    ("conv(32,3", "cannot parse"),
    ("conv(32,3,)", "empty argument"),
])
def test_bad_layers_raise_layer_error(text, reason):
    with pytest.raises(LayerError, match=None) as exc:
        parse_layer(text)
    assert reason in str(exc.value)


def test_shape_inference_names_model_layer_and_shapes():
    with pytest.raises(UserError) as exc:
        build_study({"name": "s", "models": [{"name": "big", "layers": [
            "conv(32,3)", "pool(2)", "conv(64,3)", "pool(2)", "pool(2)", "conv(32,7)", "flatten", "dense(10)"]}]},
            source="study.toml")
    assert str(exc.value) == ('study.toml: model "big", layer 6 conv(32,7): input 2x2x64 is smaller than the '
                              '7x7 kernel')


def test_same_padding_and_stride_shapes():
    study = build_study({"name": "s", "models": [{"name": "m", "layers": [
        "conv(8,3,same,stride=2)", "conv(8,5,same)", "pool(2)", "flatten", "dense(10)"]}]})
    assert study.models[0].shapes((28, 28, 1)) == [(14, 14, 8), (14, 14, 8), (7, 7, 8), (392,), (10,)]


def test_study_round_trip_file_objects_dict(tmp_path):
    path = tmp_path / "study.toml"
    path.write_text(textwrap.dedent("""
        name = "rt"
        description = "round trip"
        dataset = "fashion-mnist"
        seeds = [3, 5]
        [train]
        epochs = 3
        batch_size = 64
        optimizer = {name = "adam", lr = 0.002}
        validation = "holdout"
        [[models]]
        name = "a"
        layers = ["conv(16,3,same)", {type = "pool", size = 2}, "bn", "dropout(0.1)", "flatten", "dense(10)"]
        train = {optimizer = "adadelta", epochs = 2}
        [[models]]
        name = "b"
        layers = ["conv(8,5)", "tanh", "flatten", "dense(32)", "dense(10)"]
    """))
    study = load_study_file(path)
    assert study.seeds == (3, 5) and study.dataset == "fashion-mnist"
    assert study.models[0].settings(study.train).optimizer.name == "adadelta"
    assert study.models[0].settings(study.train).epochs == 2
    assert study.models[1].settings(study.train).optimizer.resolved()["lr"] == 0.002
    again = build_study(study.to_dict())
    assert again == study and again.fingerprint() == study.fingerprint()
    yaml_path = tmp_path / "study.yaml"
    import yaml

    yaml_path.write_text(yaml.safe_dump(study.to_dict()))
    assert load_study_file(yaml_path) == study


def test_python_api_builds_the_same_objects():
    from convstudy.spec import ModelSpec

    model = ModelSpec(name="m", layers=["conv(32,3)", "flatten", Dense(units=10)])
    study = Study(name="api", models=[model])
    assert build_study(study.to_dict()) == study


def test_seed_study_is_the_notebook():
    study = seed_study()
    assert [m.name for m in study.models] == [f"k{k}-{i}" for k in (3, 5, 7) for i in (1, 2, 3, 4)]
    assert study.train.epochs == 12 and study.train.batch_size == 128 and study.train.validation == "test"
    optimizers = {m.name: m.settings(study.train).optimizer for m in study.models}
    assert optimizers["k3-1"].name == "adadelta" and optimizers["k3-1"].resolved()["lr"] == 1.0
    assert {o.name for n, o in optimizers.items() if n != "k3-1"} == {"adam"}
    assert "seed" in BUILTIN


def _write(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else textwrap.dedent(content).encode())
    return path


GOOD = """
name = "s"
[[models]]
name = "m"
layers = ["conv(8,3)", "flatten", "dense(10)"]
"""
ERROR_CASES = {
    "toml_syntax": ("s.toml", 'name = "s\n[[models]]', "s.toml: TOML syntax error"),
    "yaml_syntax": ("s.yaml", "name: s\nmodels: [\n  - {name: m", "s.yaml: YAML syntax error"),
    "unknown_key": ("s.toml", 'colour = "red"\n' + GOOD, 's.toml: unknown key "colour"'),
    "unknown_model_key": ("s.toml", GOOD + 'colour = "red"\n', 's.toml: model "m": colour: unknown argument'),
    "unknown_layer": ("s.toml", GOOD.replace('"flatten"', '"flaten"'), 's.toml: model "m", layer 2 flaten: unknown layer'),
    "bad_argument": ("s.toml", GOOD.replace("conv(8,3)", "conv(8,x)"), 's.toml: model "m", layer 1 conv(8,x): kernel'),
    "out_of_range": ("s.toml", GOOD.replace("conv(8,3)", "conv(0,3)"), 's.toml: model "m", layer 1 conv(0,3): filters'),
    "impossible_shape": ("s.toml", GOOD.replace("conv(8,3)", "conv(8,29)"),
                         's.toml: model "m", layer 1 conv(8,29): input 28x28x1 is smaller than the 29x29 kernel'),
    "unknown_dataset": ("s.toml", 'dataset = "mnsit"\n' + GOOD, 's.toml: unknown dataset "mnsit"'),
    "unknown_optimizer": ("s.toml", 'name = "s"\n[train]\noptimizer = "adamm"\n' + GOOD.replace('name = "s"', ""),
                          "unknown optimizer"),
    "duplicate_models": ("s.toml", GOOD + GOOD.replace('name = "s"', ""), 'duplicate model name "m"'),
    "no_models": ("s.toml", 'name = "s"\n', "s.toml: a study needs at least one model"),
    "binary_garbage": ("s.toml", bytes(range(256)) * 4, "s.toml: not a text file"),
    "wrong_classifier": ("s.toml", GOOD.replace("dense(10)", "dense(7)"), "the last layer must be dense(10)"),
    "flat_into_conv": ("s.toml", GOOD.replace('"flatten", ', '"flatten", "conv(4,3)", '), "needs an HxWxC feature map"),
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_malformed_study_exits_2_with_one_line(case, tmp_path, capsys):
    name, content, expected = ERROR_CASES[case]
    path = _write(tmp_path, name, content)
    code = main(["models", str(path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert expected in err, err


def test_missing_file_exits_2(tmp_path, capsys):
    assert main(["models", str(tmp_path / "nope.toml")]) == 2
    err = capsys.readouterr().err
    assert "nope.toml: no such study file" in err and err.count("\n") == 1


def test_unknown_builtin_name_exits_2(capsys):
    assert main(["models", "seeed"]) == 2
    assert 'unknown study "seeed"' in capsys.readouterr().err


def test_bad_flag_is_one_line(capsys):
    assert main(["run", "seed", "--epochs", "zero"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--epochs" in err


# Issue 14 item 6: a layer string either means one thing or is refused; nothing is overwritten silently.
@pytest.mark.parametrize("text, reason", [
    ("conv(filters=16,kernel=5,8)", "positional argument 8 after keyword arguments"),
    ("conv(8,kernel=5,same)", "positional argument same after keyword arguments"),
    ("dropout(rate=0.5,0.2)", "positional argument 0.2 after keyword arguments"),
    ("conv(8,3,same,valid)", 'padding given twice ("same", then "valid")'),
    ("conv(8,3,same,same)", "padding given twice"),
    ("dense(10,relu,tanh)", 'activation given twice ("relu", then "tanh")'),
    ("conv(8,3,relu,activation=tanh)", 'argument "activation" given twice'),
    ("conv(8,3,filters=4)", 'argument "filters" given twice'),
    ("conv(8,3,kernel=3)", 'argument "kernel" given twice'),
    ("conv(8,3,stride=1,stride=2)", 'argument "stride" given twice'),
    ("conv(type=dense,units=10)", '"type" is not an argument'),
    ("conv(8,=3)", "argument name missing"),
    ("conv(" + "9" * 5000 + ",3)", "too many digits"),
    ("conv(true,3)", "filters: Input should be a valid integer"),
    ("conv(8,3,stride=true)", "stride: Input should be a valid integer"),
    ("dropout(true)", "rate: Input should be a valid number"),
    ("conv(8.0,3)", "filters: Input should be a valid integer"),
])
def test_ambiguous_or_repeated_layer_arguments_are_refused(text, reason):
    with pytest.raises(LayerError) as exc:
        parse_layer(text)
    assert reason in str(exc.value), str(exc.value)
    assert "\n" not in str(exc.value) and len(str(exc.value)) < 300


@pytest.mark.parametrize("text", ["conv(8,same,3)", "conv(8,3,same,stride=2)", "dense(10,activation=tanh)",
                                  "pool(size=3,stride=2)", "conv(filters=8,kernel=3)"])
def test_unambiguous_layer_arguments_still_parse(text):
    parse_layer(text)


def test_strict_layer_error_names_file_model_and_layer(tmp_path, capsys):
    path = _write(tmp_path, "s.toml", GOOD.replace("conv(8,3)", "conv(filters=16,kernel=5,8)"))
    assert main(["models", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert 's.toml: model "m", layer 1 conv(filters=16,kernel=5,8): positional argument 8 after keyword' in err


# Issue 14 item 7: hostile study files are one line and exit 2, never a traceback or a hang.
def _with(line: str, table: str = "") -> str:
    return f'name = "s"\n{line}\n{table}' + GOOD.replace('name = "s"\n', "")


HOSTILE_STUDIES = {
    "deep_arrays": ("s.toml", "x = " + "[" * 5000 + "]" * 5000 + "\n" + GOOD, "s.toml: nested"),
    "deep_inline_tables": ("s.toml", "x = " + "{a = " * 3000 + "1" + "}" * 3000 + "\n" + GOOD, "s.toml: nested"),
    "deep_arrays_below_recursion_limit": ("s.toml", "x = " + "[" * 200 + "]" * 200 + "\n" + GOOD, "s.toml: nested"),
    "huge_int": ("s.toml", _with("seeds = " + "9" * 5000), "s.toml: "),
    "long_int": ("s.toml", _with("seeds = " + "9" * 4000), "s.toml: seeds: integer"),
    "yaml_deep": ("s.yaml", "x: " + "[" * 5000 + "]" * 5000, "s.yaml: nested"),
    "yaml_huge_int": ("s.yaml", "name: s\nseeds: " + "9" * 5000, "s.yaml: "),
    "yaml_binary": ("s.yaml", "name: !!binary aGVsbG8=\nmodels: [{name: m, layers: [flatten, dense(10)]}]",
                    "s.yaml: name: binary"),
    "yaml_set": ("s.yaml", "name: s\nseeds: !!set {1, 2}\nmodels: [{name: m, layers: [flatten, dense(10)]}]",
                 "s.yaml: seeds: set"),
    "yaml_timestamp": ("s.yaml", "name: 2001-12-14\nmodels: [{name: m, layers: [flatten, dense(10)]}]",
                       "s.yaml: name: date"),
    "yaml_python_tag": ("s.yaml", "name: !!python/object/apply:os.system [echo hi]", "s.yaml: YAML error"),
    "yaml_duplicate_key": ("s.yaml", "name: a\nname: b\nmodels: [{name: m, layers: [flatten, dense(10)]}]",
                           'duplicate key "name"'),
    "yaml_laughs": ("s.yaml", "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "\n".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 10) + "]" for i in range(8)),
        "s.yaml: more than"),
    "bool_filters": ("s.toml", GOOD.replace('"conv(8,3)"', '{type = "conv", filters = true, kernel = 3}'),
                     "filters: Input should be a valid integer"),
    "bool_epochs": ("s.toml", _with("", "[train]\nepochs = true\n"), "train.epochs: Input should be a valid integer"),
    "bool_seeds": ("s.toml", _with("seeds = [true]"), "seeds.0: Input should be a valid integer"),
    "bool_lr": ("s.toml", _with("", '[train]\noptimizer = {name = "sgd", lr = true}\n'), "Input should be a valid number"),
    "float_batch": ("s.toml", _with("", "[train]\nbatch_size = 32.0\n"), "train.batch_size: Input should be a valid integer"),
    "string_epochs": ("s.toml", _with("", '[train]\nepochs = "3"\n'), "train.epochs: Input should be a valid integer"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_STUDIES))
def test_hostile_study_files_exit_2_with_one_line(case, tmp_path, capsys):
    name, content, expected = HOSTILE_STUDIES[case]
    path = _write(tmp_path, name, content)
    code = main(["models", str(path)])
    err = capsys.readouterr().err
    assert code == 2, err[-500:]
    assert err.count("\n") == 1 and "Traceback" not in err and len(err) < 400, err[-500:]
    assert expected in err, err


# Issue 25 item 11: a validator's own "(got ...)" is not repeated by the line that reports it.
@pytest.mark.parametrize("line", ["seeds = 0", "seeds = 1001", "seeds = -3"])
def test_a_bad_seed_count_says_what_it_got_once(line, tmp_path, capsys):
    path = _write(tmp_path, "s.toml", _with(line))
    assert main(["models", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.count("(got ") == 1, err
    assert "s.toml: seeds: a count of seeds must be between 1 and 1000 (got" in err


def test_fifo_study_file_is_refused_fast(tmp_path):
    import subprocess
    import sys

    fifo = tmp_path / "study.toml"
    os.mkfifo(fifo)
    try:
        done = subprocess.run([sys.executable, "-m", "convstudy", "models", str(fifo)], capture_output=True,
                              text=True, timeout=60)
    except subprocess.TimeoutExpired:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("convstudy models blocked on a FIFO")
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "not a regular file" in done.stderr


# Issue 14 item 8: what training would refuse (or die of) is refused when the file is read. The bounds here;
# a negative value for every argument of every optimiser is tests/test_registries.py's.
@pytest.mark.parametrize("optimizer, reason", [
    ('{name = "sgd", momentum = 999999}', "sgd momentum must be in [0, 1)"),
    ('{name = "sgd", momentum = 1.0}', "sgd momentum must be in [0, 1)"),
    ('{name = "sgd", lr = 0}', "sgd lr must be"),
    ('{name = "sgd", lr = nan}', "sgd lr must be"),
    ('{name = "sgd", lr = inf}', "sgd lr must be"),
    ('{name = "adam", beta1 = 1.0}', "adam beta1 must be in [0, 1)"),
    ('{name = "adam", beta2 = 1.5}', "adam beta2 must be in [0, 1)"),
    ('{name = "adam", eps = 0}', "adam eps must be"),
    ('{name = "adamw", weight_decay = inf}', "adamw weight_decay must be"),
    ('{name = "adadelta", rho = 1}', "adadelta rho must be in [0, 1)"),
    ('{name = "rmsprop", momentum = 2}', "rmsprop momentum must be in [0, 1)"),
])
def test_optimizer_settings_out_of_range_exit_2(optimizer, reason, tmp_path, capsys):
    path = _write(tmp_path, "s.toml", _with("", f"[train]\noptimizer = {optimizer}\n"))
    assert main(["models", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and reason in err, err


def test_optimizer_settings_in_range_are_accepted():
    for args in ({"momentum": 0.0, "weight_decay": 0.0}, {"momentum": 0.99, "weight_decay": 5e-4, "lr": 0.5}):
        build_study({"name": "s", "train": {"optimizer": {"name": "sgd", **args}},
                     "models": [{"name": "m", "layers": ["flatten", "dense(10)"]}]})
    build_study({"name": "s", "train": {"optimizer": {"name": "adam", "beta1": 0.0, "beta2": 0.0, "eps": 1e-12}},
                 "models": [{"name": "m", "layers": ["flatten", "dense(10)"]}]})


BIG = GOOD.replace('"conv(8,3)", "flatten"', '"conv(65536,1,same)", "flatten", "dense(1048576)"')


def test_a_model_beyond_the_machines_memory_is_refused_when_read(tmp_path, capsys):
    path = _write(tmp_path, "big.toml", BIG)
    assert main(["models", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert 'big.toml: model "m" needs about 784 TiB to train (parameters, gradients, optimiser state' in err, err
    assert "this machine has" in err


def test_memory_estimate_counts_parameters_gradients_state_and_activations():
    from convstudy.spec import check_memory, training_bytes

    study = build_study({"name": "s", "train": {"batch_size": 10, "optimizer": "sgd"},
                         "models": [{"name": "m", "layers": ["flatten", "dense(10)"]},
                                    {"name": "a", "layers": ["flatten", "dense(10)"], "train": {"optimizer": "adam"}}]})
    sgd, adam = study.models
    params, acts = 784 * 10 + 10, 10 * (784 + 10)
    assert training_bytes(sgd, sgd.settings(study.train), (28, 28, 1)) == 4 * (2 * params + acts)
    assert training_bytes(adam, adam.settings(study.train), (28, 28, 1)) == 4 * (4 * params + acts)
    check_memory(study, "s", available=4 * (4 * params + acts))
    with pytest.raises(UserError, match=r'^s: model "a" needs about 154 KiB to train .*; this machine has 154 KiB$'):
        check_memory(study, "s", available=4 * (4 * params + acts) - 1)

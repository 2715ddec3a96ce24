"""Spaces: templates with factors expand into models (grid, seeded sample, names), the same in TOML, YAML
and Python; `--where` selects by factor level; every mistake is one line and exit 2."""

from __future__ import annotations

import json
import logging
import re
import textwrap
from pathlib import Path

import pytest
import yaml

from convstudy.cli import main
from convstudy.errors import UserError
from convstudy.spec import (
    FloatRange, IntRange, Levels, Space, Study, build_study, load_study_file, select_models, space_model,
)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "space.toml"
LAYERS = ["conv({filters},{kernel})", "pool(2)", {"if": "bn", "layer": "bn"}, "flatten", "dense(10)"]
SPACE = {"name": "g", "factors": {"kernel": [3, 5, 7], "filters": [4, 8], "bn": [True, False]}, "layers": LAYERS}
TOML = """\
name = "s"
[train]
epochs = 1
[[models]]
name = "hand"
layers = ["flatten", "dense(10)"]
[[spaces]]
name = "g"
factors = {kernel = [3, 5, 7], filters = [4, 8], bn = [true, false]}
layers = ["conv({filters},{kernel})", "pool(2)", {if = "bn", layer = "bn"}, "flatten", "dense(10)"]
"""


def study(**space) -> Study:
    return build_study({"name": "s", "spaces": [{**SPACE, **space}]}, source="s.toml")


def test_grid_expands_in_order_with_factors_layers_and_names():
    s = study()
    assert len(s.models) == 12
    first, second, last = s.models[0], s.models[1], s.models[-1]
    assert first.name == "g-kernel_3-filters_4-bn_on" and second.name == "g-kernel_3-filters_4-bn_off"
    assert first.factors == {"kernel": 3, "filters": 4, "bn": True} and list(last.factors) == ["kernel", "filters", "bn"]
    assert [layer.to_string() for layer in first.layers] == ["conv(4,3)", "pool", "bn", "flatten", "dense(10)"]
    assert [layer.to_string() for layer in last.layers] == ["conv(8,7)", "pool", "flatten", "dense(10)"]
    assert {tuple(m.factors.values()) for m in s.models} == {(k, f, b) for k in (3, 5, 7) for f in (4, 8)
                                                               for b in (True, False)}


def test_factors_fill_train_settings_and_table_layer_arguments_typed():
    s = study(factors={"opt": ["adam", "sgd"], "lr": [0.1, 0.01], "rate": [0.0, 0.5]},
              layers=["conv(4,3)", {"type": "dropout", "rate": "{rate}"}, "flatten", "dense(10)"],
              train={"optimizer": {"name": "{opt}", "lr": "{lr}"}, "epochs": 1}, names="m-{opt}-{lr}-{rate}")
    m = s.model("m-sgd-0.01-0.5")
    assert m.train.optimizer.name == "sgd" and m.train.optimizer.args == {"lr": 0.01} and m.train.epochs == 1
    assert m.layers[1].rate == 0.5 and m.factors == {"opt": "sgd", "lr": 0.01, "rate": 0.5}


def test_toml_yaml_and_python_give_the_same_study_and_it_round_trips(tmp_path):
    toml = tmp_path / "s.toml"
    toml.write_text(TOML)
    from_toml = load_study_file(toml)
    data = {"name": "s", "train": {"epochs": 1}, "models": [{"name": "hand", "layers": ["flatten", "dense(10)"]}],
            "spaces": [SPACE]}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    from_yaml = load_study_file(tmp_path / "s.yaml")
    from_python = Study(name="s", train={"epochs": 1}, models=[{"name": "hand", "layers": ["flatten", "dense(10)"]}],
                        spaces=[Space(**SPACE)])
    assert from_toml == from_yaml == from_python
    assert [m.name for m in from_toml.models][:2] == ["hand", "g-kernel_3-filters_4-bn_on"]
    again = build_study(from_toml.to_dict())
    assert again == from_toml and again.fingerprint() == from_toml.fingerprint()
    assert Space(**SPACE).to_dict()["factors"] == SPACE["factors"]


def test_sample_is_seeded_deterministic_and_a_subset_of_the_grid():
    grid = {m.name for m in study().models}
    a, b = study(sample=5), study(sample=5)
    assert a == b and len(a.models) == 5 and {m.name for m in a.models} <= grid
    others = {tuple(m.name for m in study(sample=5, sample_seed=seed).models) for seed in range(1, 6)}
    assert len(others | {tuple(m.name for m in a.models)}) > 1  # the seed decides which five
    order = [m.name for m in study().models]
    assert [m.name for m in a.models] == sorted((m.name for m in a.models), key=order.index)  # grid order kept
    # Pinned: the same file samples the same models on every machine and Python version.
    assert [m.name for m in study(sample=3, sample_seed=7).models] == PINNED_SAMPLE


PINNED_SAMPLE = ["g-kernel_3-filters_8-bn_off", "g-kernel_5-filters_8-bn_off", "g-kernel_7-filters_8-bn_off"]


def test_naming_pattern_and_sanitised_default_names():
    s = study(names="k{kernel}f{filters}{bn}")
    assert s.models[0].name == "k3f4on" and s.models[-1].name == "k7f8off"
    pools = build_study({"name": "s", "spaces": [{"name": "p", "factors": {"pool": ["pool(2)", "pool(2,mode=avg)"]},
                                                  "layers": ["conv(4,3)", "{pool}", "flatten", "dense(10)"]}]})
    assert [m.name for m in pools.models] == ["p-pool_pool2", "p-pool_pool2modeavg"]
    assert pools.models[1].layers[1].mode == "avg"


SMALL = 'layers = ["conv(4,{kernel})", "pool(2)", "conv(4,{kernel})", "pool(2)", "conv(4,{kernel})", "flatten", "dense(10)"]'


def test_invalid_expansion_names_template_levels_and_layer(tmp_path, capsys):
    path = tmp_path / "s.toml"
    path.write_text(f'name = "s"\n[[spaces]]\nname = "deep"\nfactors = {{kernel = [3, 5, 7]}}\n{SMALL}\n')
    assert main(["models", str(path)]) == 2
    err = capsys.readouterr().err
    assert err == ('convstudy: error: s.toml: space "deep" (kernel=5), layer 5 conv(4,5): input 4x4x4 is smaller '
                   "than the 5x5 kernel\n")


def test_skip_invalid_drops_and_lists_them_in_one_warning(tmp_path, caplog):
    path = tmp_path / "s.toml"
    path.write_text(f'name = "s"\n[[spaces]]\nname = "deep"\nskip_invalid = true\nfactors = {{kernel = [3, 5, 7]}}\n'
                    f"{SMALL}\n")
    with caplog.at_level(logging.WARNING):
        s = load_study_file(path)
    assert [m.name for m in s.models] == ["deep-kernel_3"]
    [record] = caplog.records
    assert record.getMessage() == (
        'convstudy: warning: s.toml: space "deep": skipped 2 invalid combinations (skip_invalid): kernel=5 (layer 5 '
        "conv(4,5): input 4x4x4 is smaller than the 5x5 kernel); kernel=7 (layer 5 conv(4,7): input 2x2x4 is smaller "
        "than the 7x7 kernel)")


def test_skip_invalid_sample_draws_valid_models_and_all_invalid_is_an_error():
    wide = {"kernel": [3, 5, 7, 9, 11], "filters": [4, 8]}
    layers = ["conv({filters},{kernel})", "pool(2)", "conv(4,{kernel})", "flatten", "dense(10)"]  # 11: too big
    s = study(factors=wide, layers=layers, sample=7, skip_invalid=True)  # 8 of the 10 are valid
    assert len(s.models) == 7 and all(m.factors["kernel"] != 11 for m in s.models)
    assert len(study(factors=wide, layers=layers, sample=10, skip_invalid=True).models) == 8
    with pytest.raises(UserError, match=r'space "g": every combination is invalid \(skip_invalid\); the first: '
                                        r"kernel=29 \(layer 1 conv\(4,29\)"):
        study(factors={"kernel": [29, 30]}, layers=["conv(4,{kernel})", "flatten", "dense(10)"], skip_invalid=True)


BAD = {
    "empty_levels": ({"factors": {"kernel": [], "filters": [4], "bn": [True]}}, 'factor "kernel" has no levels'),
    "duplicate_level": ({"factors": {"kernel": [3, 3], "filters": [4], "bn": [True]}},
                        'factor "kernel": levels: each level once'),
    "unknown_factor_in_layer": ({"layers": ["conv({filter},{kernel})", *LAYERS[1:]]},
                                'unknown factor "filter" in layer 1 "conv({filter},{kernel})"; factors: kernel, '
                                "filters, bn"),
    "unknown_factor_in_names": ({"names": "k{kernel}-{size}"}, 'unknown factor "size" in names'),
    "unpaired_brace": ({"names": "k{kernel"}, 'names "k{kernel": a brace without its pair'),
    "names_leave_a_factor_out": ({"names": "k{kernel}-f{filters}"}, 'leaves out factor "bn", so models would share'),
    "unused_factor": ({"factors": {**SPACE["factors"], "depth": [1, 2]}},
                      'factor "depth" changes no layer or train setting'),
    "if_on_a_number": ({"layers": [*LAYERS[:2], {"if": "kernel", "layer": "bn"}, *LAYERS[3:]]},
                       'layer 3: if = "kernel" needs a factor whose levels are true/false'),
    "if_unknown_factor": ({"layers": [*LAYERS[:2], {"if": "bnn", "layer": "bn"}, *LAYERS[3:]]},
                          'unknown factor "bnn" in layer 3 if'),
    "range_in_grid": ({"factors": {**SPACE["factors"], "lr": {"low": 1e-4, "high": 0.1, "log": True}},
                       "train": {"optimizer": {"name": "adam", "lr": "{lr}"}}},
                      'factor "lr" is a range; a grid or sample needs a list of levels'),
    "log_bound_not_positive": ({"factors": {**SPACE["factors"], "lr": {"low": 0.0, "high": 0.1, "log": True}}},
                               'factor "lr": a log range needs bounds above 0'),
    "empty_range": ({"factors": {**SPACE["factors"], "depth": {"low": 4, "high": 2}}},
                    'factor "depth": empty range: low (4) must be below high (2)'),
    "bad_factor_value": ({"factors": {**SPACE["factors"], "depth": "3"}},
                         'factor "depth" is a list of levels or a range {low, high}'),
    "bad_factor_name": ({"factors": {"2x": [1], **SPACE["factors"]}}, "factor name '2x' must be an identifier"),
    "nested_level": ({"factors": {**SPACE["factors"], "kernel": [[3]]}},
                     'factor "kernel": a level is a number, a string or true/false, not list'),
    "sample_too_big": ({"sample": 13}, "sample = 13 but the grid has only 12 combinations"),
    "sample_zero": ({"sample": 0}, "sample: Input should be greater than or equal to 1"),
    "unknown_key": ({"colour": "red"}, 'space "g": colour: unknown argument'),
    "no_layers": ({"layers": []}, "layers"),
    "bad_level_for_layer": ({"factors": {**SPACE["factors"], "kernel": [3, 0]}},
                            'space "g" (kernel=0, filters=4, bn=on), layer 1 conv(4,0): kernel'),
    "bad_level_for_train": ({"factors": {**SPACE["factors"], "opt": ["adam", "adamm"]}, "train": {"optimizer": "{opt}"}},
                            'space "g" (kernel=3, filters=4, bn=on, opt=adamm), train.optimizer'),
    "name_too_long": ({"names": "x" * 60 + "{kernel}{filters}{bn}"}, "is not a valid name"),
    "colliding_names": ({"factors": {"pool": ["pool(2)", "pool(2 )"]}, "layers": ["conv(4,3)", "{pool}", "flatten",
                                                                              "dense(10)"]},
                        'two models are named "g-pool_pool2"'),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_space_syntax_is_one_line_exit_2(case, tmp_path, capsys):
    update, expected = BAD[case]
    data = {"name": "s", "spaces": [{**SPACE, **update}]}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    assert main(["models", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith('convstudy: error: s.yaml: space "g"') and err.count("\n") == 1, err
    assert expected in err, err


@pytest.mark.parametrize("toml, expected", [
    (TOML + TOML[TOML.index("[[spaces]]"):], 'space "g": duplicate space name "g"'),
    (TOML.replace('name = "hand"', 'name = "g-kernel_3-filters_4-bn_on"'),
     'model name "g-kernel_3-filters_4-bn_on" is taken'),
    ('name = "s"\nspaces = 3\n', "spaces is a list of tables"),
    ('name = "s"\n', "a study needs at least one model under [[models]] or [[spaces]]"),
])
def test_study_level_space_mistakes_are_one_line(toml, expected, tmp_path, capsys):
    path = tmp_path / "s.toml"
    path.write_text(toml)
    assert main(["models", str(path)]) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1, err


def test_a_factor_declared_twice_is_refused_in_every_spelling(tmp_path, capsys):
    (tmp_path / "s.yaml").write_text("name: s\nspaces:\n- name: g\n  factors: {kernel: [3], kernel: [5]}\n"
                                     "  layers: ['conv(4,{kernel})', flatten, 'dense(10)']\n")
    (tmp_path / "s.toml").write_text('name = "s"\n[[spaces]]\nname = "g"\nfactors = {kernel = [3], kernel = [5]}\n'
                                     'layers = ["conv(4,{kernel})", "flatten", "dense(10)"]\n')
    for name, reason in [("s.yaml", 'duplicate key "kernel"'), ("s.toml", "TOML syntax error")]:
        assert main(["models", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert reason in err and err.count("\n") == 1, err
    twice = [Levels(name="kernel", levels=(3,)), Levels(name="kernel", levels=(5,))]
    with pytest.raises(UserError, match='s.py: space "g": factor "kernel" is declared twice'):
        Study.model_validate({"name": "s", "spaces": [{**SPACE, "factors": twice}]}, context={"source": "s.py"})


def test_models_command_shows_factor_columns_and_selects_with_where(tmp_path, capsys):
    path = tmp_path / "s.toml"
    path.write_text(TOML)
    assert main(["models", str(path), "--where", "kernel=5", "--where", "bn=off", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [m["name"] for m in data["models"]] == ["g-kernel_5-filters_4-bn_off", "g-kernel_5-filters_8-bn_off"]
    assert data["models"][0]["factors"] == {"kernel": 5, "filters": 4, "bn": False}
    assert main(["models", str(path), "--where", "filters=8.0", "--models", "g-kernel_7-filters_8-bn_on,hand"]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if "Model" in line and "kernel" in line)
    assert [c.strip() for c in header.strip("┃ ").split("┃")] == ["Model", "kernel", "filters", "bn", "Param #", "MFLOPs"]
    row = next(line for line in out.splitlines() if line.startswith("│ g-kernel_7"))
    assert [c.strip() for c in row.strip("│ ").split("│")][:4] == ["g-kernel_7-filters_8-bn_on", "7", "8", "on"]
    assert 'Model: "hand"' not in out  # --models and --where both hold


@pytest.mark.parametrize("argv, expected", [
    (["--where", "kernl=5"], 'unknown factor "kernl"; factors: kernel, filters, bn'),
    (["--where", "kernel=9"], "--where kernel=9: no model has that level; kernel levels: 3, 5, 7"),
    (["--where", "bn=maybe"], "bn levels: on, off"),
    (["--where", "kernel"], "expected FACTOR=LEVEL"),
    (["--models", "hand", "--where", "kernel=3"], "unknown factor \"kernel\"; these models have no factors"),
    (["--models", "nope"], '--models: no model "nope"'),
])
def test_where_mistakes_are_one_line_exit_2(argv, expected, tmp_path, capsys):
    path = tmp_path / "s.toml"
    path.write_text(TOML)
    assert main(["models", str(path), *argv]) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1, err


def test_select_models_is_an_and_of_levels():
    s = study()
    names = [m.name for m in select_models(s.models, where=[("kernel", "3"), ("bn", "true")])]
    assert names == ["g-kernel_3-filters_4-bn_on", "g-kernel_3-filters_8-bn_on"]
    with pytest.raises(UserError, match="no model matches kernel=3 and filters=8"):
        select_models(s.models, names=["g-kernel_3-filters_4-bn_on", "g-kernel_5-filters_8-bn_off"],
                      where=[("kernel", "3"), ("filters", "8")])


def test_run_passes_the_where_selection_to_the_executor(tmp_path, monkeypatch, capsys):
    import convstudy.executors

    seen = []

    def fake_run_study(study, opts, console=None):  # the executor's --models path has its own tests
        seen.append(opts.models)
        raise UserError("stopped before training")

    monkeypatch.setattr(convstudy.executors, "run_study", fake_run_study)
    path = tmp_path / "s.toml"
    path.write_text(TOML)
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--where", "kernel=3", "--where", "filters=4"]) == 2
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--models", "hand"]) == 2
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--where", "kernel=4"]) == 2
    assert seen == [("g-kernel_3-filters_4-bn_on", "g-kernel_3-filters_4-bn_off"), ("hand",)]
    assert "--where kernel=4: no model has that level" in capsys.readouterr().err


def test_space_model_builds_one_assignment_for_a_search():
    space = Space(name="s", factors={"lr": {"low": 1e-4, "high": 0.1, "log": True}, "width": {"low": 4, "high": 32,
                                                                                             "step": 4},
                                     "kernel": [3, 5]},
                  layers=["conv({width},{kernel})", "flatten", "dense(10)"], train={"optimizer": {"name": "adam",
                                                                                                   "lr": "{lr}"}})
    assert isinstance(space.factors[0], FloatRange) and isinstance(space.factors[1], IntRange)
    m = space_model(space, {"lr": 0.0123, "width": 8, "kernel": 5}, (28, 28, 1), 10)
    assert m.name == "s-lr_0.0123-width_8-kernel_5" and m.factors == {"lr": 0.0123, "width": 8, "kernel": 5}
    assert m.train.optimizer.args == {"lr": 0.0123} and m.layers[0].filters == 8
    assert space_model(space, {"kernel": 3, "width": 4, "lr": 0.001}, (28, 28, 1), 10, name="trial-7").name == "trial-7"
    for assignment, reason in [
        ({"lr": 0.5, "width": 8, "kernel": 5}, 'not a value of factor "lr" (reals in [0.0001, 0.1] log)'),
        ({"lr": 0.01, "width": 6, "kernel": 5}, 'not a value of factor "width" (integers in [4, 32] step 4)'),
        ({"lr": 0.01, "width": 8, "kernel": 4}, 'not a value of factor "kernel" (levels 3, 5)'),
        ({"lr": 0.01, "width": 8}, 'no value for factor "kernel"'),
        ({"lr": 0.01, "width": 8, "kernel": 5, "x": 1}, "unknown factor 'x'"),
        ({"lr": 0.01, "width": 8, "kernel": 5}, r'space "s" \(lr=0.01, width=8, kernel=5\), layer 1 conv\(8,5\): '
                                                 "input 4x4x1 is smaller"),
    ]:
        shape = (4, 4, 1) if "smaller" in reason else (28, 28, 1)
        with pytest.raises(UserError, match=reason if "smaller" in reason else re.escape(reason)):
            space_model(space, assignment, shape, 10)


def test_python_studies_refuse_names_kept_for_sampled_models():
    """Study(...) in Python and a space given as a record refuse trial-NNNN like a study file does."""
    from pydantic import ValidationError

    from convstudy.spec import ModelSpec

    with pytest.raises(ValidationError, match="kept for a search's sampled models"):
        Study(name="s", models=[ModelSpec(name="trial-0001", layers=["flatten", "dense(10)"])])
    space = Space.model_validate({"name": "g", "names": "trial-{w}", "factors": {"w": [1000, 2000]},
                                  "layers": ["conv({w},3)", "flatten", "dense(10)"]})
    with pytest.raises(UserError, match=r's.py: space "g" \(w=1000\): model name "trial-1000" is kept'):
        Study.model_validate({"name": "s", "spaces": [space]}, context={"source": "s.py"})

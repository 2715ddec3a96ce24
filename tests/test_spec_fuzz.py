"""Hypothesis feeds random and mutated studies to the spec parser: a Study or one UserError line, nothing else."""

from __future__ import annotations

import copy
import json

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convstudy.errors import UserError
from convstudy.spec import Study, build_study, load_study_file

VALID = {
    "name": "fuzz",
    "description": "d",
    "dataset": "mnist",
    "seeds": 2,
    "train": {"epochs": 2, "batch_size": 32, "optimizer": {"name": "adam", "lr": 0.001}, "validation": "holdout"},
    "models": [
        {"name": "a", "layers": ["conv(4,3)", "pool(2)", "flatten", "dense(10)"]},
        {"name": "b", "layers": [{"type": "conv", "filters": 8, "kernel": 5, "padding": "same"}, "bn", "relu",
                                 "pool(2)", "dropout(0.25)", "flatten", "dense(16)", "dense(10)"],
         "train": {"optimizer": "sgd", "epochs": 1}},
    ],
}
LEAF_STRINGS = st.sampled_from(["conv(32,3)", "conv(0,3)", "conv(3,99)", "pool(2)", "pool(50)", "dense(10)",
                                "dense(-1)", "dropout(1.5)", "flatten", "bn", "relu", "conv(", "((", "", "mnist",
                                "adam", "sgd", "holdout", "test", "nope", "💥", "\x00", "conv(1e999,3)"])
LEAVES = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
                   st.floats(allow_nan=True, allow_infinity=True), LEAF_STRINGS, st.text(max_size=12))
VALUES = st.recursive(LEAVES, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                        st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=12)


def check(build) -> None:
    try:
        result = build()
    except UserError as exc:
        message = str(exc)
        assert message and "\n" not in message and "\r" not in message
        return
    assert isinstance(result, Study)


def paths(obj, prefix=()):
    """Every (path) into nested dicts/lists, for choosing where to mutate."""
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from paths(v, prefix + (i,))


@st.composite
def mutated(draw):
    data = copy.deepcopy(VALID)
    for _ in range(draw(st.integers(1, 3))):
        all_paths = list(paths(data))
        where = draw(st.sampled_from(all_paths))
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if not where:
            continue
        parent = data
        for key in where[:-1]:
            parent = parent[key]
        last = where[-1]
        if action == "replace":
            parent[last] = draw(VALUES)
        elif action == "delete":
            del parent[last]
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=6))] = draw(VALUES)
        else:
            parent.insert(last, draw(VALUES))
    return data


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_studies(data):
    check(lambda: build_study(data, source="fuzz.toml"))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(VALUES, st.dictionaries(st.sampled_from(sorted(VALID) + ["extra"]), VALUES, max_size=6)))
def test_random_values(data):
    check(lambda: build_study(data, source="fuzz.toml"))


def _toml_value(v) -> str:
    """A small TOML writer (inline tables and arrays); None has no TOML form and becomes an empty string."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(repr(v), repr(v))
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(str(k))} = {_toml_value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps("" if v is None else v)


def _as_text(data, fmt: str) -> str:
    if fmt == "yaml":
        return yaml.safe_dump(data, allow_unicode=True)
    return "\n".join(f"{json.dumps(str(k))} = {_toml_value(v)}" for k, v in data.items()) + "\n"


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(data=mutated(), fmt=st.sampled_from(["toml", "yaml", "yml"]), noise=st.binary(max_size=24),
       at=st.floats(0, 1), mode=st.sampled_from(["text", "spliced", "bytes"]))
def test_study_files(tmp_path, data, fmt, noise, at, mode):
    text = _as_text(data, "yaml" if fmt != "toml" else "toml").encode("utf-8", "surrogatepass")
    if mode == "spliced":
        i = int(at * len(text))
        text = text[:i] + noise + text[i:]
    elif mode == "bytes":
        text = noise
    path = tmp_path / f"study.{fmt}"
    path.write_bytes(text)
    check(lambda: load_study_file(path))


def test_the_toml_writer_round_trips_the_valid_study(tmp_path):
    path = tmp_path / "valid.toml"
    path.write_text(_as_text(VALID, "toml"))
    assert isinstance(load_study_file(path), Study)

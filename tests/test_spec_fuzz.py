"""Hypothesis feeds random, mutated and hostile inputs to the spec parser and import-keras.

Every input gives a Study (or a layer record) or one UserError line, nothing else: no traceback, no hang.
About 2,000 examples in all, in well under 30 s.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convstudy.errors import UserError
from convstudy.keras import import_keras
from convstudy.spec import LayerError, Study, build_study, load_study_file, parse_layer
from convstudy.spec.layers import _Layer
from convstudy.untrusted import parse_untrusted

FAST = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
KERAS2 = json.loads((Path(__file__).parent / "data" / "keras_k3-1_keras2.json").read_text())

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
HUGE_INTS = st.integers(1, 4000).map(lambda n: int("9" * n))  # json and yaml cannot write 4,300+ digits
API_INTS = st.sampled_from([10**5000, -(10**4301), 2**53 + 1])  # Python callers can pass what no file holds
LEAVES = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70), HUGE_INTS,
                   st.floats(allow_nan=True, allow_infinity=True), LEAF_STRINGS, st.text(max_size=12))
VALUES = st.recursive(LEAVES, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                        st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=12)


def check(build, ok=Study, errors=UserError) -> None:
    try:
        result = build()
    except errors as exc:
        message = str(exc)
        assert message and "\n" not in message and "\r" not in message
        assert len(message) < 1000  # a hostile value is quoted clipped, not whole
        return
    assert isinstance(result, ok)


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


def mutate(draw, data):
    """Up to three random replace/delete/add edits of a nested document, in place."""
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(list(paths(data))))
        if not where:
            continue
        parent = data
        for key in where[:-1]:
            parent = parent[key]
        last = where[-1]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            parent[last] = draw(VALUES)
        elif action == "delete":
            del parent[last]
        elif isinstance(parent, dict):
            parent[draw(st.sampled_from(["name", "config", "class_name", "units", "x"]))] = draw(VALUES)
        else:
            parent.insert(last, draw(VALUES))
    return data


@settings(max_examples=300, **FAST)
@given(mutated())
def test_mutated_studies(data):
    check(lambda: build_study(data, source="fuzz.toml"))


@settings(max_examples=200, **FAST)
@given(st.one_of(VALUES, API_INTS, st.dictionaries(API_INTS, VALUES, max_size=2),
                 st.dictionaries(st.sampled_from(sorted(VALID) + ["extra"]), st.one_of(VALUES, API_INTS), max_size=6)))
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


@settings(max_examples=300, **FAST)
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


# Layer strings: positional and keyword arguments in any order, repeated, with hostile literals.
ARG_VALUES = st.one_of(st.sampled_from(["8", "3", "0", "-1", "same", "valid", "relu", "tanh", "softmax", "avg",
                                        "max", "true", "false", "none", "0.25", "1e999", "nan", "", "'same'",
                                        "9" * 30, "9" * 5000, "(", "=", "💥"]),
                       st.integers(-5, 70).map(str))
ARG_NAMES = st.sampled_from(["filters", "kernel", "padding", "stride", "activation", "size", "mode", "rate",
                             "units", "fn", "momentum", "epsilon", "type", "", "x"])
ARGS = st.lists(st.one_of(ARG_VALUES, st.tuples(ARG_NAMES, ARG_VALUES).map("=".join)), max_size=6)
KINDS = st.sampled_from(["conv", "pool", "dense", "dropout", "bn", "flatten", "activation", "relu", "Conv2D",
                         "maxpool", "warp", ""])


@settings(max_examples=400, **FAST)
@given(kind=KINDS, args=ARGS, parens=st.booleans())
def test_layer_strings(kind, args, parens):
    text = f"{kind}({','.join(args)})" if parens or args else kind
    check(lambda: parse_layer(text), ok=_Layer, errors=LayerError)
    try:
        layer = parse_layer(text)
    except LayerError:
        return
    # What parses means one thing: its canonical form parses back to the same record.
    assert parse_layer(layer.to_string()) == layer and parse_layer(layer.to_dict()) == layer


# Documents in each format: nesting of random depth, long integers, YAML tags and anchors.
YAML_TAGS = ["!!binary aGVsbG8=", "!!timestamp 2001-12-14", "2001-12-14", "!!set {a, b}", "!!omap [a: 1]",
             "!!pairs [a: 1]", "!!python/tuple [1]", "!!python/object/apply:os.system [echo]", "!!float 1e999",
             "!!int 0x10", "!!str 3", "!!null ''", "!!bool yes", "!!timestamp 2001-13-45", "!<tag:x> 1", "&a 1",
             "*a", "&b [*b]", "yes", "on", "~", ".inf", ".nan", "0o17", "1_000", "!!merge <<"]


@st.composite
def documents(draw):
    fmt = draw(st.sampled_from(["toml", "yaml", "json"]))
    depth = draw(st.one_of(st.integers(0, 40), st.integers(900, 1100), st.integers(3000, 6000)))
    digits = draw(st.one_of(st.integers(1, 25), st.integers(4290, 4310), st.integers(4000, 6000)))
    number = draw(st.sampled_from(["", "-"])) + "9" * digits
    leaf = draw(st.sampled_from([number, '"conv(8,3)"', "1.5", "true", "[]", "{}"]))
    if fmt == "yaml" and draw(st.booleans()):
        leaf = draw(st.sampled_from(YAML_TAGS))
    if fmt == "toml" and leaf == "{}":
        leaf = "{ }"
    opener, closer = draw(st.sampled_from([("[", "]"), ("{}", "}")]))
    if opener == "{}":
        opener = {"toml": "{ a = ", "yaml": "{a: ", "json": '{"a": '}[fmt]
    body = opener * depth + leaf + closer * depth
    key = draw(st.sampled_from(["seeds", "name", "x", "models", "train"]))
    rest = draw(st.booleans())
    if fmt == "toml":
        text = f"{key} = {body}\n" + ('name = "s"\n[[models]]\nname = "m"\nlayers = ["flatten", "dense(10)"]\n'
                                     if rest and key not in ("name", "models") else "")
    elif fmt == "yaml":
        text = f"{key}: {body}\n" + ("name: s\nmodels: [{name: m, layers: [flatten, dense(10)]}]\n"
                                    if rest and key not in ("name", "models") else "")
    else:
        text = "{" + json.dumps(key) + ": " + body + "}"
    return fmt, text


@settings(max_examples=300, **FAST)
@given(doc=documents())
def test_hostile_documents(doc):
    fmt, text = doc
    check(lambda: parse_untrusted(text, fmt, f"fuzz.{fmt}"), ok=object)


@settings(max_examples=150, **FAST)
@given(doc=documents().filter(lambda d: d[0] != "json"))
def test_hostile_study_files(tmp_path, doc):
    fmt, text = doc
    path = tmp_path / f"study.{fmt}"
    path.write_text(text)
    check(lambda: load_study_file(path))


# import-keras: mutated model JSON (wrong types where names, configs and numbers belong) and random documents.
@settings(max_examples=300, **FAST)
@given(st.data())
def test_mutated_keras_json(tmp_path, data):
    doc = mutate(data.draw, copy.deepcopy(KERAS2))
    path = tmp_path / "model.json"
    try:
        path.write_text(json.dumps(doc, allow_nan=True))
    except ValueError:  # an integer json cannot write (more than 4300 digits): the hostile-text test has those
        return
    check(lambda: import_keras(path))


@settings(max_examples=100, **FAST)
@given(doc=documents().filter(lambda d: d[0] == "json"))
def test_hostile_keras_json_text(tmp_path, doc):
    path = tmp_path / "model.json"
    path.write_text(doc[1])
    check(lambda: import_keras(path))

"""Spaces (`[[spaces]]`, docs/spaces.md): a model template with named factors, expanded into the study's models (a
full grid or a seeded sample), or one model per assignment for a search (`space_model`). Each model records its
levels in `ModelSpec.factors`, so the study, its store and its reports need nothing from here.
"""

from __future__ import annotations

import itertools
import logging
import math
import random
import re
from typing import Any, Iterable, Mapping, Union

from pydantic import Field, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationError
from pydantic import model_validator

from convstudy.errors import UserError
from convstudy.spec.layers import Float, Frozen, Int, LayerError, Shape, _clip, parse_layer, pydantic_reason, show_value
from convstudy.spec.models import ModelSpec, reserved

log = logging.getLogger(__name__)
Scalar = Union[StrictBool, StrictInt, StrictFloat, StrictStr]
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")  # ModelSpec's name rule
FACTOR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,31}$")
PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
MAX_COMBINATIONS = 100_000  # a grid beyond this is no study to train; it is a search's space


class Levels(Frozen):
    """A factor with listed levels (JSON scalars): what a grid or a sample expands."""

    name: str
    levels: tuple[Scalar, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _distinct(self) -> "Levels":
        keys = [(type(v) is bool, v) for v in self.levels]  # True == 1 in Python, not here
        if len(set(keys)) != len(keys):
            raise ValueError("levels: each level once")
        return self

    def contains(self, value: Any) -> bool:
        return (type(value) is bool, value) in {(type(v) is bool, v) for v in self.levels}


class IntRange(Frozen):
    """Integers from `low` to `high` (both included) on a `step` grid, or log-uniform: for a search only."""

    name: str
    low: Int
    high: Int
    step: Int = Field(default=1, ge=1)
    log: bool = False

    @model_validator(mode="after")
    def _bounds(self) -> "IntRange":
        _check_range(self.low, self.high, self.log, self.step if self.step != 1 else None)
        return self

    def contains(self, value: Any) -> bool:
        return type(value) is int and self.low <= value <= self.high and (value - self.low) % self.step == 0


class FloatRange(Frozen):
    """Reals from `low` to `high`, uniform (optionally on a `step` grid) or log-uniform: for a search only."""

    name: str
    low: Float
    high: Float
    step: Float | None = Field(default=None, gt=0)
    log: bool = False

    @model_validator(mode="after")
    def _bounds(self) -> "FloatRange":
        _check_range(self.low, self.high, self.log, self.step)
        return self

    def contains(self, value: Any) -> bool:
        if type(value) not in (int, float) or not math.isfinite(value) or not self.low <= value <= self.high:
            return False
        return self.step is None or math.isclose(round((value - self.low) / self.step) * self.step, value - self.low,
                                                 rel_tol=1e-9, abs_tol=1e-12)


Factor = Union[Levels, IntRange, FloatRange]


def _check_range(low: float, high: float, log_: bool, step: float | None) -> None:
    if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
        raise ValueError(f"empty range: low ({low:g}) must be below high ({high:g})")
    if log_ and low <= 0:
        raise ValueError(f"a log range needs bounds above 0 (low is {low:g})")
    if log_ and step is not None:
        raise ValueError("a log range has no step")


def parse_factor(name: Any, value: Any) -> Factor:
    """`[3, 5, 7]` -> Levels; `{low, high[, step][, log]}` -> IntRange (integer bounds) or FloatRange; ValueError."""
    if not isinstance(name, str) or not FACTOR_RE.match(name):
        raise ValueError(f"factor name {show_value(name)} must be an identifier (letters, digits, _; at most 32)")
    if isinstance(value, (Levels, IntRange, FloatRange)):
        return value
    try:
        if isinstance(value, (list, tuple)):
            if not value:
                raise ValueError(f'factor "{name}" has no levels')
            odd = [v for v in value if not isinstance(v, (str, int, float))]
            if odd:
                raise ValueError(f'factor "{name}": a level is a number, a string or true/false, not {show_value(odd[0])}')
            return Levels(name=name, levels=tuple(value))
        if isinstance(value, dict):
            kind = IntRange if all(type(value.get(k, 1)) is int for k in ("low", "high", "step")) else FloatRange
            return kind(name=name, **value)
    except ValidationError as exc:
        raise ValueError(f'factor "{name}": {pydantic_reason(exc)}') from None
    raise ValueError(f'factor "{name}" is a list of levels or a range {{low, high}}, not {show_value(value)}')


class Space(Frozen):
    """A model template and its factors. `names` is the naming pattern; `sample` draws N combinations (seeded)."""

    name: str = Field(pattern=NAME_RE.pattern)
    description: str = ""
    factors: tuple[Factor, ...] = Field(min_length=1)
    layers: tuple[Union[str, dict[str, Any]], ...] = Field(min_length=1)
    train: dict[str, Any] = {}
    names: str | None = None
    sample: Int | None = Field(default=None, ge=1)
    sample_seed: Int = Field(default=0, ge=0, le=2**63 - 1)
    skip_invalid: bool = False

    @model_validator(mode="before")
    @classmethod
    def _factors(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "factors" not in data:
            return data
        factors = data["factors"]
        if isinstance(factors, dict):
            factors = tuple(parse_factor(k, v) for k, v in factors.items())
        if not isinstance(factors, (list, tuple)) or not factors or \
                not all(isinstance(f, (Levels, IntRange, FloatRange)) for f in factors):
            raise ValueError("factors is a table of at least one factor: name = [levels] or name = {low, high}")
        return {**data, "factors": factors}

    @model_validator(mode="after")
    def _template(self) -> "Space":
        names = [f.name for f in self.factors]
        if len(set(names)) != len(names):
            raise ValueError(f'factor "{next(n for n in names if names.count(n) > 1)}" is declared twice')
        used: set[str] = set()
        for i, item in enumerate(self.layers, 1):
            used |= self._layer_factors(item, f"layer {i}")
        used |= self._placeholders(self.train, "train")
        self._placeholders(self.description, "description")
        idle = [n for n in names if n not in used]
        if idle:  # its models would differ in name only: the same training, repeated
            raise ValueError(f'factor "{idle[0]}" changes no layer or train setting')
        if self.names is not None:
            named = self._placeholders(self.names, "names")
            left = [f.name for f in self.factors if f.name not in named
                    and not (isinstance(f, Levels) and len(f.levels) == 1)]  # a single level needs no name part
            if left:
                raise ValueError(f'names "{_clip(self.names)}" leaves out factor "{left[0]}", so models would share '
                                 "a name")
        return self

    def _layer_factors(self, item: Any, where: str) -> set[str]:
        """The factors a template layer uses; a residual's `layers` may hold conditional layers too."""
        used: set[str] = set()
        if isinstance(item, dict) and "if" in item:
            if set(item) != {"if", "layer"}:
                raise ValueError(f"{where}: a conditional layer is {{if = FACTOR, layer = ...}}")
            cond = self.factor(item["if"], f"{where} if")
            if not (isinstance(cond, Levels) and all(type(v) is bool for v in cond.levels)):
                raise ValueError(f'{where}: if = "{cond.name}" needs a factor whose levels are true/false')
            used.add(cond.name)
            item = item["layer"]
        if isinstance(item, dict) and isinstance(item.get("layers"), list):
            for j, inner in enumerate(item["layers"], 1):
                used |= self._layer_factors(inner, f"{where}, branch layer {j}")
            item = {k: v for k, v in item.items() if k != "layers"}
        return used | self._placeholders(item, where)

    def factor(self, name: Any, where: str) -> Factor:
        """The factor called `name`; ValueError naming `where` and the valid names otherwise."""
        for f in self.factors:
            if f.name == name:
                return f
        valid = ", ".join(f.name for f in self.factors)
        shown = f'"{_clip(name)}"' if isinstance(name, str) else show_value(name)
        raise ValueError(f"unknown factor {shown} in {where}; factors: {valid}")

    def _placeholders(self, value: Any, where: str) -> set[str]:
        if isinstance(value, dict):
            return set().union(*(self._placeholders(v, where) for v in value.values()))
        if isinstance(value, (list, tuple)):
            return set().union(*(self._placeholders(v, where) for v in value))
        if not isinstance(value, str):
            return set()
        found = {self.factor(m, f'{where} "{_clip(value)}"').name for m in PLACEHOLDER.findall(value)}
        if "{" in PLACEHOLDER.sub("", value) or "}" in PLACEHOLDER.sub("", value):
            raise ValueError(f'{where} "{_clip(value)}": a brace without its pair; write {{factor}}')
        return found

    def to_dict(self) -> dict[str, Any]:
        """The file spelling: factors as a table of level lists or range tables, defaults left out."""
        out = self.model_dump(exclude_defaults=True, exclude={"factors"})
        out["factors"] = {f.name: list(f.levels) if isinstance(f, Levels) else f.model_dump(exclude_defaults=True,
                                                                                           exclude={"name"})
                          for f in self.factors}
        return out


def level_text(value: Any) -> str:
    """A level as text in names, layer strings and messages: true/false as on/off, floats as repr."""
    return ("on" if value else "off") if type(value) is bool else repr(value) if isinstance(value, float) else str(value)


def matches(level: Any, text: str) -> bool:
    """Whether `--where NAME=text` means this level: numbers by value, booleans as true/false/on/off."""
    if type(level) is bool:
        return text.lower() in (("true", "on") if level else ("false", "off"))
    if isinstance(level, (int, float)):
        try:
            return float(text) == level
        except ValueError:
            return False
    return text == level


def _fill(value: Any, levels: Mapping[str, Any]) -> Any:
    if isinstance(value, dict):
        return {k: _fill(v, levels) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_fill(v, levels) for v in value]
    if not isinstance(value, str):
        return value
    whole = PLACEHOLDER.fullmatch(value)
    if whole:
        return levels[whole.group(1)]
    return PLACEHOLDER.sub(lambda m: level_text(levels[m.group(1)]), value)


def _combo_text(levels: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={_clip(level_text(v), 24)}" for k, v in levels.items())


class _Invalid(Exception):
    """One combination that gives no valid model; its message names the layer or field."""


def _select(item: Any, levels: Mapping[str, Any]) -> Any:
    """The template layer with its conditionals (a residual's included) decided; None where it is left out."""
    if isinstance(item, dict) and "if" in item:
        if not levels[item["if"]]:
            return None
        item = item["layer"]
    if isinstance(item, dict) and isinstance(item.get("layers"), list):
        kept = (_select(inner, levels) for inner in item["layers"])
        item = {**item, "layers": [inner for inner in kept if inner is not None]}
    return item


def _build(space: Space, levels: dict[str, Any], input_shape: Shape, num_classes: int, name: str | None) -> ModelSpec:
    layers = []
    for item in space.layers:
        item = _select(item, levels)
        if item is None:
            continue
        filled = _fill(item, levels)
        try:
            layers.append(parse_layer(filled))
        except LayerError as exc:
            shown = filled if isinstance(filled, str) else str(filled.get("type", "?")) if isinstance(filled, dict) else "?"
            raise _Invalid(f"layer {len(layers) + 1} {_clip(shown)}: {exc}") from None
    if name is None:
        pattern = space.names or "-".join([space.name, *(f"{f.name}_{{{f.name}}}" for f in space.factors)])
        name = PLACEHOLDER.sub(lambda m: re.sub(r"[^A-Za-z0-9_.+-]", "", level_text(levels[m.group(1)])), pattern)
    if not NAME_RE.match(name):
        raise _Invalid(f'model name "{_clip(name)}" is not a valid name (letters, digits, _ . + -, at most 64; set '
                       "names = PATTERN)")
    raw = {"name": name, "description": _fill(space.description, levels), "layers": layers,
           "train": _fill(space.train, levels), "factors": levels, "space": space.name}
    try:
        model = ModelSpec.model_validate(raw)
    except ValidationError as exc:
        raise _Invalid(pydantic_reason(exc)) from None
    try:
        model.check(input_shape, num_classes)
    except LayerError as exc:
        raise _Invalid(str(exc)) from None
    return model


def space_model(space: Space, assignment: Mapping[str, Any], input_shape: Shape, num_classes: int,
                name: str | None = None, source: str = "<space>") -> ModelSpec:
    """The model of one assignment (a level, or a value in a range, per factor), with `factors` set; UserError."""
    where = f'{source}: space "{space.name}"'
    missing = [f.name for f in space.factors if f.name not in assignment]
    if missing or len(assignment) != len(space.factors):
        extra = [k for k in assignment if k not in {f.name for f in space.factors}]
        raise UserError(f"{where}: " + (f'no value for factor "{missing[0]}"' if missing else
                                        f"unknown factor {show_value(extra[0])}; factors: "
                                        f"{', '.join(f.name for f in space.factors)}"))
    levels = {f.name: assignment[f.name] for f in space.factors}
    for f in space.factors:
        if not f.contains(levels[f.name]):
            raise UserError(f'{where}: {show_value(levels[f.name])} is not a value of factor "{f.name}" '
                            f"({_describe(f)})")
    try:
        return _build(space, levels, input_shape, num_classes, name)
    except _Invalid as exc:
        raise UserError(f"{where} ({_combo_text(levels)}), {exc}") from None


def _describe(f: Factor) -> str:
    if isinstance(f, Levels):
        return "levels " + ", ".join(_clip(level_text(v), 24) for v in f.levels)
    step = f" step {f.step:g}" if f.step not in (None, 1) else ""
    return f"{'integers' if isinstance(f, IntRange) else 'reals'} in [{f.low:g}, {f.high:g}]{step}" + " log" * f.log


def expand(space: Space, input_shape: Shape, num_classes: int, source: str = "<space>") -> tuple[list[ModelSpec], list[str]]:
    """The grid's models (or `sample` of them, seeded), in grid order, and the skipped combinations (skip_invalid)."""
    where = f'{source}: space "{space.name}"'
    for f in space.factors:
        if not isinstance(f, Levels):
            raise UserError(f'{where}: factor "{f.name}" is a range; a grid or sample needs a list of levels (ranges '
                            "are for a search)")
    total = math.prod(len(f.levels) for f in space.factors)  # type: ignore[union-attr]
    if total > MAX_COMBINATIONS:
        raise UserError(f"{where}: {total:,} combinations, more than {MAX_COMBINATIONS:,}; sample from a smaller grid "
                        "or search it")
    want = total if space.sample is None else space.sample
    if want > total:
        raise UserError(f"{where}: sample = {want} but the grid has only {total} combinations")
    combos = list(itertools.product(*(f.levels for f in space.factors)))  # type: ignore[union-attr]  # last fastest
    order = list(range(total))
    if space.sample is not None:
        random.Random(space.sample_seed).shuffle(order)
    built: dict[int, ModelSpec] = {}
    skipped: list[tuple[int, str]] = []
    for index in order:
        if len(built) == want:
            break
        levels = {f.name: level for f, level in zip(space.factors, combos[index])}
        try:
            built[index] = _build(space, levels, input_shape, num_classes, None)
        except _Invalid as exc:
            if not space.skip_invalid:
                raise UserError(f"{where} ({_combo_text(levels)}), {exc}") from None
            skipped.append((index, f"{_combo_text(levels)} ({exc})"))
    if not built:
        raise UserError(f"{where}: every combination is invalid (skip_invalid); the first: {min(skipped)[1]}")
    models = [built[i] for i in sorted(built)]
    seen: dict[str, ModelSpec] = {}
    for m in models:
        if m.name in seen:
            raise UserError(f'{where}: two models are named "{m.name}" ({_combo_text(seen[m.name].factors)} and '
                            f"{_combo_text(m.factors)}); set names = PATTERN with levels that differ")
        seen[m.name] = m
    return models, [text for _, text in sorted(skipped)]


def expand_spaces(raw: Any, dataset: Any, taken: Iterable[str], source: str = "<study>") -> list[ModelSpec]:
    """A study's `spaces` (tables or Space records) as models, after the `taken` names; skips in one warning line."""
    from convstudy.data import canonical_dataset, get_info

    if not isinstance(raw, (list, tuple)):
        raise UserError(f"{source}: spaces is a list of tables ([[spaces]]), not {show_value(raw)}")
    try:
        info = get_info(canonical_dataset(dataset))
    except UserError as exc:
        raise UserError(f"{source}: {exc}") from None
    names, spaces, models = set(taken), set(), []
    for i, item in enumerate(raw, 1):
        label = f'space "{_clip(item["name"])}"' if isinstance(item, dict) and isinstance(item.get("name"), str) else \
            f'space "{item.name}"' if isinstance(item, Space) else f"space {i}"
        try:
            space = item if isinstance(item, Space) else Space.model_validate(item)
        except ValidationError as exc:
            raise UserError(f"{source}: {label}: {pydantic_reason(exc)}") from None
        if space.name in spaces:
            raise UserError(f'{source}: {label}: duplicate space name "{space.name}"')
        spaces.add(space.name)
        expanded, skipped = expand(space, info.input_shape, info.num_classes, source)
        for m in expanded:
            if why := reserved(m.name):
                raise UserError(f"{source}: {label} ({_combo_text(m.factors)}): {why}; set names = PATTERN")
            if m.name in names:
                raise UserError(f'{source}: {label} ({_combo_text(m.factors)}): model name "{m.name}" is taken; set '
                                "names = PATTERN")
            names.add(m.name)
        if skipped:
            shown = "; ".join(skipped[:10]) + (f"; and {len(skipped) - 10} more" if len(skipped) > 10 else "")
            short = f" (only {len(expanded)} of sample = {space.sample})" if space.sample and len(expanded) < space.sample else ""
            log.warning("convstudy: warning: %s: %s: skipped %d invalid combination%s (skip_invalid)%s: %s", source,
                        label, len(skipped), "s" * (len(skipped) > 1), short, shown)
        models += expanded
    return models


def select_models(models: Iterable[ModelSpec], names: Iterable[str] | None = None,
                  where: Iterable[tuple[str, str]] = ()) -> list[ModelSpec]:
    """The models named in `names` (all if None) whose factors match every `(factor, level)` of `where`; UserError."""
    models = list(models)
    if names is not None:
        known = {m.name for m in models}
        for n in names:
            if n not in known:
                raise UserError(f'--models: no model "{_clip(n)}"; models: {_clip(", ".join(m.name for m in models), 200)}')
        models = [m for m in models if m.name in set(names)]
    factors: dict[str, list[Any]] = {}
    for m in models:
        for k, v in m.factors.items():
            if not any(type(v) is type(w) and v == w for w in factors.setdefault(k, [])):
                factors[k].append(v)
    for key, text in where:
        if key not in factors:
            valid = f"factors: {', '.join(factors)}" if factors else "these models have no factors"
            raise UserError(f'--where {_clip(key)}={_clip(text)}: unknown factor "{_clip(key)}"; {valid}')
        if not any(matches(v, text) for v in factors[key]):
            raise UserError(f'--where {key}={_clip(text)}: no model has that level; {key} levels: '
                            f"{', '.join(level_text(v) for v in factors[key])}")
        models = [m for m in models if key in m.factors and matches(m.factors[key], text)]
    if not models:
        raise UserError("--where: no model matches " + " and ".join(f"{k}={v}" for k, v in where))
    return models

"""A study's `[fair]` section: compare scientific levels, each with its nuisance hyperparameters tuned (issue 29;
roles as in Google's Deep Learning Tuning Playbook, docs/fair-comparisons.md). Each combination of scientific levels
becomes one `[search]` (`level_search`) that convstudy.search.fair runs in its own directory.
"""

from __future__ import annotations

import itertools
import json
import re
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator

from convstudy.errors import UserError
from convstudy.spec.layers import Frozen, Int, _clip, pydantic_reason
from convstudy.spec.search import PRUNERS, Budget, SearchSpec, check_some_model_valid, choice, grid_values
from convstudy.spec.space import Levels, Space, level_text, parse_factor

FAIR_SAMPLERS = ("qmc", "tpe", "random")  # quasi-random first: the playbook's choice while exploring


class FairSpec(Frozen):
    """The `[fair]` section: a template whose factors are scientific, the nuisance ranges, and the per-level budget."""

    space: dict[str, Any]
    nuisance: dict[str, Any]
    trials: Budget  # per combination of scientific levels
    sampler: Literal["qmc", "tpe", "random"] = "qmc"
    pruner: Literal["none", "median", "successive-halving", "hyperband"] = "none"
    reduction_factor: Int | None = Field(default=None, ge=2, le=100)
    seed: Int = Field(default=0, ge=0, le=2**32 - 1)
    # Settings of one combination of levels only, merged into the template: SGD's momentum, which Adam does not
    # take. Keyed by the combination's label, e.g. "optimizer=sgd"; fixed, like the template.
    per_level: dict[str, dict[str, Any]] = {}

    @field_validator("sampler", "pruner", mode="before")
    @classmethod
    def _choice(cls, v: Any, info) -> Any:
        return choice(v, info.field_name, FAIR_SAMPLERS if info.field_name == "sampler" else PRUNERS)

    @field_validator("nuisance")
    @classmethod
    def _some(cls, v: dict[str, Any]) -> dict[str, Any]:
        if not v:
            raise ValueError("nuisance needs at least one hyperparameter to tune, e.g. lr = {low = 1e-4, high = 1e-1, "
                             "log = true}")
        return v

    def to_dict(self) -> dict[str, Any]:
        out = self.model_dump(exclude_defaults=True, exclude={"trials"})
        out["trials"] = self.trials.model_dump(exclude_none=True)
        return out

    def level_search(self, levels: dict[str, Any]) -> SearchSpec:
        """The `[search]` of one combination of scientific levels: the template with those levels as one-level
        factors (so every sampled model carries them in its factors) and the nuisance as the ranges to sample."""
        factors = {**{k: [v] for k, v in levels.items()}, **self.nuisance}
        space = _merged(self.space, self.per_level.get(level_label(levels), {}))
        return SearchSpec(space={**space, "factors": factors}, sampler=self.sampler, trials=self.trials,
                          pruner=self.pruner, reduction_factor=self.reduction_factor, seed=self.seed)


def level_label(levels: dict[str, Any]) -> str:
    """A combination of scientific levels as one name, `optimizer=adam, kernel=3` (true/false as in JSON)."""
    return ", ".join(f"{k}={json.dumps(v) if isinstance(v, bool) else v}" for k, v in levels.items())


def _merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`base` with `extra` merged in, tables key by key (a list or a value replaces)."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def scientific_levels(spec: FairSpec) -> list[dict[str, Any]]:
    """Every combination of the scientific factors' levels, in grid order (the last factor varies fastest);
    ValueError for a factor that is not a list of levels."""
    raw = spec.space.get("factors")
    if not isinstance(raw, dict) or not raw:
        raise ValueError('space.factors lists the scientific factors and their levels, e.g. optimizer = ["sgd", '
                         '"adam"]')
    factors = [parse_factor(k, v) for k, v in raw.items()]
    ranged = [f.name for f in factors if not isinstance(f, Levels)]
    if ranged:
        raise ValueError(f'scientific factor "{ranged[0]}" is a range; list its levels (ranges are for nuisance)')
    return [dict(zip([f.name for f in factors], combo)) for combo in itertools.product(*(f.levels for f in factors))]


def check_fair(study: Any, info: Any, source: str) -> None:
    """What the section needs beyond its fields: roles that do not overlap, a nuisance that changes something and
    has room to move, holdout validation, and a valid model for every level; each mistake one UserError line."""
    spec, where = study.fair, f"{source}: fair"
    if study.search is not None:
        raise UserError(f"{where}: a study has [search] or [fair], not both")
    if study.race is not None:
        raise UserError(f"{where}: every level's winner trains on every seed; give seeds a count, not {{min, max}}")
    if study.train.validation != "holdout":
        raise UserError(f'{where}: tunes on validation data; set [train] validation = "holdout" (with "test" the test '
                        "set would pick the winners)")
    try:
        combos = scientific_levels(spec)
    except ValueError as exc:
        raise UserError(f"{where}: {exc}") from None
    for name, value in spec.nuisance.items():
        if name in combos[0]:
            raise UserError(f'{where}: nuisance "{_clip(str(name))}" is also a scientific factor; a hyperparameter is '
                            "one or the other")
        try:
            factor = parse_factor(name, value)
        except ValueError as exc:
            raise UserError(f"{where}: nuisance: {exc}") from None
        values = grid_values(factor)
        if values is not None and len(values) < 2:
            raise UserError(f'{where}: nuisance "{name}" has no room: one value ({values[0]}); give it a range, or '
                            "write the value into the template (fixed)")
    labels = [level_label(c) for c in combos]
    if odd := [k for k in spec.per_level if k not in labels]:
        raise UserError(f'{where}: per_level "{_clip(odd[0])}" names no combination of levels; they are: '
                        f"{_clip(', '.join(labels), 200)}")
    for levels in combos:
        try:  # an idle nuisance: 'factor "x" changes no layer or train setting'
            space = Space.model_validate(spec.level_search(levels).space)
        except ValidationError as exc:
            raise UserError(f"{where}.space: {pydantic_reason(exc)}") from None
        check_some_model_valid(space, info, source)


def level_dirname(index: int, levels: dict[str, Any]) -> str:
    """The directory, under OUT/fair/, of the `index`-th combination of scientific levels (its search study):
    numbered so two levels that differ only in characters a file name drops stay apart."""
    text = "-".join(f"{k}_{re.sub(r'[^A-Za-z0-9_.+]', '', level_text(v))}" for k, v in levels.items())
    return f"{index + 1:02d}-{text}"[:80]

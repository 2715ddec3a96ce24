"""A study's `[search]` section: which space to search, with which Optuna sampler and pruner, for how long;
the search itself (convstudy.search) reads nothing else from the study file."""

from __future__ import annotations

import math
import random
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from convstudy.errors import UserError
from convstudy.spec.layers import Frozen, Int, _clip, pydantic_reason
from convstudy.spec.space import FloatRange, IntRange, Levels, Space, space_model

SAMPLERS = ("tpe", "random", "grid", "cmaes", "nsga2", "qmc")
PRUNERS = ("none", "median", "successive-halving", "hyperband")
# What a search can optimise, read off each finished trial, with its natural direction. Test accuracy is
# not among them: the search selects on validation, like the best group (issue 17).
OBJECTIVES = {"val_accuracy": "maximize", "val_loss": "minimize", "params": "minimize", "mflops": "minimize"}


def choice(value: Any, field: str, valid: tuple[str, ...]) -> str:
    """`value` lower-cased if it names one of `valid` (a sampler or pruner), else a ValueError listing them."""
    if isinstance(value, str) and value.lower() in valid:
        return value.lower()
    raise ValueError(f'unknown {field} "{_clip(str(value))}"; valid: {", ".join(valid)}')


class Objective(Frozen):
    """One objective: a metric of OBJECTIVES and its direction (default: the metric's natural one)."""

    metric: str
    direction: Literal["maximize", "minimize"] | None = None

    @model_validator(mode="before")
    @classmethod
    def _coerce(cls, v: Any) -> Any:
        return {"metric": v} if isinstance(v, str) else v

    @field_validator("metric")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in OBJECTIVES:
            raise ValueError(f'unknown objective "{_clip(v)}"; valid: {", ".join(OBJECTIVES)}')
        return v

    @property
    def goal(self) -> str:
        return self.direction or OBJECTIVES[self.metric]


class Budget(Frozen):
    """How long a search samples: `count` trials and/or `epochs` trained in all, whichever ends first."""

    count: Int | None = Field(default=None, ge=1, le=100_000)
    epochs: Int | None = Field(default=None, ge=1, le=10_000_000)

    @model_validator(mode="before")
    @classmethod
    def _coerce(cls, v: Any) -> Any:
        return {"count": v} if isinstance(v, int) and not isinstance(v, bool) else v

    @model_validator(mode="after")
    def _some(self) -> "Budget":
        if self.count is None and self.epochs is None:
            raise ValueError("trials needs a count, epochs or both, e.g. trials = 30 or {count = 30, epochs = 100}")
        return self


class SearchSpec(Frozen):
    """The `[search]` section; `space` is a model template in the spaces syntax (spec.space)."""

    space: dict[str, Any]
    sampler: Literal["tpe", "random", "grid", "cmaes", "nsga2", "qmc"] = "tpe"
    trials: Budget
    objective: tuple[Objective, ...] = (Objective(metric="val_accuracy"),)
    pruner: Literal["none", "median", "successive-halving", "hyperband"] = "none"
    # Successive halving and Hyperband keep 1/reduction_factor of the trials at each rung; None: Optuna's
    # own default (4 for successive halving, 3 for Hyperband).
    reduction_factor: Int | None = Field(default=None, ge=2, le=100)
    seed: Int = Field(default=0, ge=0, le=2**32 - 1)

    @field_validator("sampler", "pruner", mode="before")
    @classmethod
    def _choice(cls, v: Any, info) -> Any:
        return choice(v, info.field_name, SAMPLERS if info.field_name == "sampler" else PRUNERS)

    @field_validator("objective", mode="before")
    @classmethod
    def _objectives(cls, v: Any) -> Any:
        v = [v] if isinstance(v, (str, dict)) else v
        if not v:
            raise ValueError(f"objective needs at least one of {', '.join(OBJECTIVES)}")
        return v

    @model_validator(mode="after")
    def _fits(self) -> "SearchSpec":
        metrics = [o.metric for o in self.objective]
        if len(set(metrics)) != len(metrics):
            raise ValueError("objective: a metric is listed twice")
        several = len(self.objective) > 1
        if several and self.pruner != "none":
            raise ValueError(f"pruner {self.pruner}: Optuna prunes single-objective searches only; "
                             "use pruner = \"none\" with several objectives")
        if self.pruner != "none" and metrics[0] not in ("val_accuracy", "val_loss"):
            raise ValueError(f"pruner {self.pruner}: prunes on a per-epoch metric; objective {metrics[0]} does not "
                             "change by epoch (use val_accuracy or val_loss, or pruner = \"none\")")
        if self.reduction_factor is not None and self.pruner not in ("successive-halving", "hyperband"):
            raise ValueError(f"reduction_factor: applies to pruner successive-halving or hyperband, not {self.pruner}")
        if several and self.sampler == "cmaes":
            raise ValueError("sampler cmaes: optimises one objective; use nsga2 or tpe for several")
        if self.sampler == "nsga2" and not several:
            raise ValueError("sampler nsga2: is for several objectives; use tpe for one")
        return self

    def to_dict(self) -> dict[str, Any]:
        out = self.model_dump(exclude_defaults=True, exclude={"objective", "trials"})
        out["trials"] = self.trials.model_dump(exclude_none=True)
        out["objective"] = [o.model_dump(exclude_none=True) for o in self.objective]
        return out


def search_space(spec: SearchSpec, source: str = "<study>") -> Space:
    """The section's `space` as a spec.space.Space (validated); every mistake is one UserError line."""
    try:
        return Space.model_validate(spec.space)
    except ValidationError as exc:
        raise UserError(f"{source}: search.space: {pydantic_reason(exc)}") from None


def grid_values(factor) -> list[Any] | None:
    """Every value of a factor, for the grid sampler; None for a continuous range."""
    if isinstance(factor, IntRange):
        return list(range(factor.low, factor.high + 1, factor.step)) if not factor.log else None
    if isinstance(factor, FloatRange):
        if factor.step is None:
            return None
        n = int(round((factor.high - factor.low) / factor.step))
        return [round(factor.low + i * factor.step, 12) for i in range(n + 1)]
    return list(factor.levels)


PROBES = 100  # configurations drawn to find one valid model before a search starts (the search's own MAX_INVALID)


def check_some_model_valid(space: Any, info: Any, source: str) -> None:
    """Refuse a space none of whose configurations is a model (a range wholly outside what a setting takes, such
    as lr above its bound) before anything is written: the all-low and all-high corners, then seeded draws."""
    rng = random.Random(0)

    def draw(f: Any, pick: str) -> Any:
        if isinstance(f, Levels):
            return f.levels[0] if pick == "low" else f.levels[-1] if pick == "high" else rng.choice(f.levels)
        step = f.step if isinstance(f, IntRange) or f.step else None  # an IntRange always has one (default 1)
        top = f.low + math.floor((f.high - f.low) / step + 1e-9) * step if step else f.high  # the grid's last value
        if pick != "draw":
            return f.low if pick == "low" else top
        u = rng.random()
        v = math.exp(math.log(f.low) + u * math.log(top / f.low)) if f.log else f.low + u * (top - f.low)
        v = min(top, max(f.low, f.low + round((v - f.low) / step) * step if step else v))
        return int(v) if isinstance(f, IntRange) else v

    first = None
    for i in range(PROBES):
        pick = "low" if i == 0 else "high" if i == 1 else "draw"
        try:
            space_model(space, {f.name: draw(f, pick) for f in space.factors}, info.input_shape, info.num_classes,
                        source=source)
            return
        except UserError as exc:
            first = first or str(exc)
    raise UserError(f"{source}: search: none of {PROBES} configurations drawn from the space is a valid model; "
                    f"the first: {first.removeprefix(source + ': ')}")


def check_search(study: Any, info: Any, source: str) -> None:
    """What the section needs of its space: the sampler fits the factors (Study keeps trial-NNNN names free)."""
    spec = study.search
    space = search_space(spec, source)
    check_some_model_valid(space, info, source)
    where = f"{source}: search"
    if spec.sampler == "grid":
        values = {f.name: grid_values(f) for f in space.factors}
        if continuous := [n for n, v in values.items() if v is None]:
            raise UserError(f'{where}: sampler grid needs discrete levels; factor "{continuous[0]}" is a continuous '
                            "range (give it a step, or list its levels)")
        size = math.prod(len(v) for v in values.values())
        if spec.trials.count is not None and spec.trials.count > size:
            raise UserError(f"{where}: trials = {spec.trials.count} but the grid has only {size} configurations")
    if spec.sampler == "cmaes":
        if levels := [f.name for f in space.factors if isinstance(f, Levels)]:
            raise UserError(f'{where}: sampler cmaes samples numeric ranges only; factor "{levels[0]}" is a list of '
                            "levels (use tpe, or make it a range)")

"""Studies: a dataset, training settings, seeds and named models, validated before any tensor exists; every user
mistake is one UserError line (`<file>: model "<name>", layer <i> <layer>: <reason>`)."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from convstudy.errors import UserError
from convstudy.spec.layers import Frozen, Int, LayerError, _clip, parse_layers, pydantic_reason, show_value
from convstudy.spec.models import ModelSpec, TrainSettings, _opt_dict, check_recipe, is_sampled, reserved
from convstudy.spec.fair import FairSpec, check_fair
from convstudy.spec.search import SearchSpec, check_search
from convstudy.spec.space import expand_spaces


class ReportSettings(Frozen):
    """`[report]`: how reports compare; it changes no trained number, so the fingerprint leaves it out."""

    # Complexity normalisation of the design-space error EDFs (docs/design-spaces.md): weights that make
    # the distribution of parameters (or FLOPs) uniform over bins, so a space is not better for being bigger.
    normalize: Literal["params", "flops", "none"] = "params"


class Study(Frozen):
    """A study: dataset, training settings, seeds and named models, built in Python or loaded from a file;
    `spaces` on input are expanded into `models` after the ones written out."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")
    description: str = ""
    dataset: str = "mnist"  # a registered name, or a described source in its canonical compact spelling
    seeds: tuple[Int, ...] = (0,)
    # Racing (`seeds = {min = 2, max = 10}`): every model trains its first `race` seeds, then only models
    # whose place in or out of the best group is undecided get more, up to all of `seeds`. None: all seeds.
    race: Int | None = None
    # Racing's margin in pp (`seeds = {min = 2, max = 10, margin = 1.5}`): a model shown within it of the best
    # stops. None: derived from the seed noise of the first round (executors.racing.default_margin).
    race_margin: float | None = Field(default=None, gt=0, le=100)
    train: TrainSettings = TrainSettings()
    models: tuple[ModelSpec, ...]
    # A search (convstudy.search) adds the models it samples to `models` as it goes; see fingerprint.
    search: SearchSpec | None = None
    report: ReportSettings = ReportSettings()
    # Scientific levels compared with their nuisance hyperparameters tuned per level (convstudy.search.fair);
    # `models` then holds the fixed recipe, if the study runs one.
    fair: FairSpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _spaces(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict) or "spaces" not in data:
            return data
        models = list(data.get("models") or ())
        taken = [m.name if isinstance(m, ModelSpec) else m.get("name") if isinstance(m, dict) else None for m in models]
        source = (info.context or {}).get("source", "<study>")
        expanded = expand_spaces(data["spaces"], data.get("dataset", "mnist"), taken, source)
        return {**{k: v for k, v in data.items() if k != "spaces"}, "models": [*models, *expanded]}

    @model_validator(mode="before")
    @classmethod
    def _racing(cls, data: Any) -> Any:
        seeds = data.get("seeds") if isinstance(data, dict) else None
        if not isinstance(seeds, dict):
            return data
        if not {"min", "max"} <= set(seeds) <= {"min", "max", "margin"}:
            raise ValueError("racing seeds are {min = N, max = M} and an optional margin = PP, "
                             "e.g. seeds = {min = 2, max = 10, margin = 1.5}")
        lo, hi = seeds["min"], seeds["max"]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (lo, hi)) or not 1 <= lo <= hi <= 1000:
            raise ValueError(f"racing seeds need integers 1 <= min <= max <= 1000 (got min {lo!r}, max {hi!r})")
        margin = seeds.get("margin")
        if margin is not None and (isinstance(margin, bool) or not isinstance(margin, (int, float))):
            raise ValueError(f"racing margin is in percentage points, a number > 0 (got {margin!r})")
        return {**data, "seeds": hi, "race": lo if lo < hi else None, "race_margin": margin if lo < hi else None}

    @model_validator(mode="after")
    def _names_and_race(self) -> "Study":
        # A search's sampled models join a study only through its store (model_copy, never validated here).
        if taken := [why for m in self.models if (why := reserved(m.name))]:
            raise ValueError(f"{taken[0]}; rename it")
        if self.race is not None and not (1 <= self.race < len(self.seeds) and self.seeds == tuple(range(len(self.seeds)))):
            raise ValueError("race needs seeds 0..max-1 and 1 <= race < max; spell it seeds = {min = N, max = M}")
        return self

    @field_validator("dataset", mode="before")
    @classmethod
    def _dataset(cls, v: Any) -> Any:
        from convstudy.data import canonical_dataset  # a table, JSON or compact string: one canonical string

        return canonical_dataset(v)

    @field_validator("seeds", mode="before")
    @classmethod
    def _seeds(cls, v: Any) -> Any:
        if isinstance(v, bool):
            raise ValueError("seeds is a count or a list of integers")
        if isinstance(v, int):
            if not 1 <= v <= 1000:
                raise ValueError(f"a count of seeds must be between 1 and 1000 (got {v})")
            return tuple(range(v))
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds_ok(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or len(set(v)) != len(v) or any(s < 0 or s >= 2**31 for s in v):
            raise ValueError("seeds must be distinct integers in [0, 2^31), at least one")
        return v

    def model(self, name: str) -> ModelSpec:
        for m in self.models:
            if m.name == name:
                return m
        raise UserError(f'study "{self.name}" has no model "{name}"; models: {", ".join(m.name for m in self.models)}')

    def to_dict(self) -> dict[str, Any]:
        """The canonical, JSON-able form: `Study.from_dict(s.to_dict()) == s`."""
        train = self.train.model_dump(exclude_defaults=True)
        if "optimizer" in train:
            train["optimizer"] = _opt_dict(self.train.optimizer)
        return {
            "name": self.name,
            "description": self.description,
            "dataset": self.dataset,
            "seeds": ({"min": self.race, "max": len(self.seeds),
                       **({"margin": self.race_margin} if self.race_margin is not None else {})}
                      if self.race else list(self.seeds)),
            "train": train,
            "models": [m.to_dict() for m in self.models],
            **({"search": self.search.to_dict()} if self.search else {}),
            **({"report": self.report.model_dump()} if self.report != ReportSettings() else {}),
            **({"fair": self.fair.to_dict()} if self.fair else {}),
        }

    def fingerprint(self) -> str:
        """Identity of what the study trains; seeds are left out so a later run may add seeds, and a
        search's sampled models and budget so it stays itself while a search adds models or goes on longer."""
        body = self.to_dict()
        body.pop("seeds")  # and racing, which only decides how many seeds run
        body.pop("description")
        body.pop("report", None)  # how reports compare, not what trains
        for m in body["models"]:
            m.pop("space", None)
        if self.search:
            body["models"] = [m for m in body["models"] if not is_sampled(m)]
            body["search"].pop("trials")
        if self.fair:  # a larger budget per level goes on with the same study
            body["fair"].pop("trials")
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def build_study(data: Any, source: str = "<study>") -> Study:
    """Validate a plain dict (from TOML, YAML or code) into a Study; every mistake is one UserError line."""
    from convstudy.data import get_info  # data registry knows each dataset's input shape

    if not isinstance(data, dict):
        raise UserError(f"{source}: a study is a table of keys (name, dataset, train, models), not {type(data).__name__}")
    known = {*Study.model_fields, "spaces"}
    for key in data:
        if key not in known:
            shown = f'"{_clip(key)}"' if isinstance(key, str) else show_value(key)
            raise UserError(f'{source}: unknown key {shown}; valid: {", ".join(sorted(known))}')
    grows = "search" in data or "fair" in data
    raw_models = data.get("models", [] if data.get("spaces") or grows else None)
    if not isinstance(raw_models, list) or not (raw_models or data.get("spaces") or grows):
        raise UserError(f"{source}: a study needs at least one model under [[models]] or [[spaces]], a [search] or "
                        "a [fair]")
    models, seen = [], set()
    for i, raw in enumerate(raw_models, 1):
        label = f'model "{_clip(raw["name"])}"' if isinstance(raw, dict) and isinstance(raw.get("name"), str) else f"model {i}"
        if not isinstance(raw, dict):
            raise UserError(f"{source}: {label}: a model is a table with name and layers")
        models.append(_build_model(raw, source, label))
        if models[-1].name in seen:
            raise UserError(f'{source}: {label}: duplicate model name "{models[-1].name}"')
        seen.add(models[-1].name)
    if "dataset" in data:
        from convstudy.data import canonical_dataset

        try:
            data = {**data, "dataset": canonical_dataset(data["dataset"])}
        except UserError as exc:
            raise UserError(f"{source}: {exc}") from None
    try:
        study = Study.model_validate({**data, "models": models}, context={"source": source})
    except ValidationError as exc:
        raise UserError(f"{source}: {pydantic_reason(exc)}") from None
    try:
        info = get_info(study.dataset)
    except UserError as exc:
        raise UserError(f"{source}: {exc}") from None
    if study.search is not None:
        check_search(study, info, source)
    if study.fair is not None:
        check_fair(study, info, source)
    for model in study.models:
        try:
            model.check(info.input_shape, info.num_classes)
        except LayerError as exc:
            raise UserError(f'{source}: model "{model.name}", {exc}') from None
        try:  # its train = {...} merged with [train]: settings() applies overrides without validating them
            check_recipe(model.settings(study.train))
        except ValueError as exc:
            raise UserError(f'{source}: model "{model.name}", train with [train]: {exc}') from None
    return study


def _build_model(raw: dict[str, Any], source: str, label: str) -> ModelSpec:
    layers = raw.get("layers")
    if isinstance(layers, list):
        try:
            raw = {**raw, "layers": parse_layers(layers)}
        except LayerError as exc:
            raise UserError(f"{source}: {label}, {exc}") from None
    try:
        return ModelSpec.model_validate(raw)
    except ValidationError as exc:
        raise UserError(f"{source}: {label}: {pydantic_reason(exc)}") from None



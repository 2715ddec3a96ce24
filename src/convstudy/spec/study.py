"""Studies: training settings, named models of layers, and their validation before any tensor exists.

Every user mistake surfaces as `UserError("<file>: model "<name>", layer <i> <layer>: <reason>")`,
one line, so the CLI can print it and exit 2.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from convstudy.errors import UserError
from convstudy.spec.fair import FairSpec
from convstudy.spec.search import SearchSpec, is_sampled, reserved
from convstudy.spec.layers import (
    Activation, Dense, Dropout, Float, Int, LayerError, Shape, _clip, _Layer, parse_layer, pydantic_reason, show_value,
)

# Keras 2's defaults, which the seed notebook ran with (tf.keras later changed Adadelta's lr to 0.001,
# which would silently ruin the Adadelta model). Keys are the argument names a study file may set.
OPTIMIZERS: dict[str, dict[str, float]] = {
    "adadelta": {"lr": 1.0, "rho": 0.95, "eps": 1e-7, "weight_decay": 0.0},
    "adam": {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-7, "weight_decay": 0.0},
    "adamw": {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-7, "weight_decay": 0.01},
    "sgd": {"lr": 0.01, "momentum": 0.0, "weight_decay": 0.0},
    "rmsprop": {"lr": 1e-3, "rho": 0.9, "eps": 1e-7, "momentum": 0.0, "weight_decay": 0.0},
}
# Where each optimiser argument makes sense (low, high, low included, high included); PyTorch would accept
# some values outside (a negative weight decay, momentum 5) and train a diverging or meaningless model.
ARG_RANGES: dict[str, tuple[float, float, bool, bool]] = {
    "lr": (0.0, 1e6, False, False),
    "rho": (0.0, 1.0, True, False),
    "beta1": (0.0, 1.0, True, False),
    "beta2": (0.0, 1.0, True, False),
    "momentum": (0.0, 1.0, True, False),
    "eps": (0.0, 1.0, False, False),
    "weight_decay": (0.0, 1e6, True, False),
}
BOOL_ARGS = {"nesterov"}  # optimiser arguments that are true/false, not numbers
# Arguments beyond Keras 2's that an optimiser also takes (absent unless given): name -> {argument: default}.
EXTRA_ARGS: dict[str, dict[str, bool]] = {"sgd": {"nesterov": False}}
OPTIMIZER_NAMES = {"adadelta": "Adadelta", "adam": "Adam", "adamw": "AdamW", "sgd": "SGD", "rmsprop": "RMSprop"}


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class OptimizerSpec(_Frozen):
    """An optimiser by registry name with its arguments; missing arguments take Keras 2's defaults."""

    name: str
    args: dict[str, Float | bool] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        v = v.lower()
        if v not in OPTIMIZERS:
            raise ValueError(f'unknown optimizer "{_clip(v)}"; valid: {", ".join(sorted(OPTIMIZERS))}')
        return v

    def resolved(self) -> dict[str, float]:
        """Defaults overlaid with the given arguments; unknown argument names are an error."""
        defaults = OPTIMIZERS[self.name]
        valid = [*defaults, *EXTRA_ARGS.get(self.name, {})]
        unknown = sorted(set(self.args) - set(valid))
        if unknown:
            raise ValueError(f'{self.name} has no argument "{_clip(unknown[0])}"; valid: {", ".join(valid)}')
        for key, val in self.args.items():
            if (key in BOOL_ARGS) != isinstance(val, bool):
                kind = "a valid boolean, true or false" if key in BOOL_ARGS else "a valid number"
                raise ValueError(f"{self.name} {key}: Input should be {kind} (got {show_value(val)})")
            if key in BOOL_ARGS:
                continue
            low, high, low_in, high_in = ARG_RANGES[key]
            above = low <= val if low_in else low < val
            below = val <= high if high_in else val < high
            if not (math.isfinite(val) and above and below):
                interval = f"{'[' if low_in else '('}{low:g}, {high:g}{']' if high_in else ')'}"
                raise ValueError(f"{self.name} {key} must be in {interval} (got {val})")
        out = {**defaults, **self.args}
        if out.get("nesterov") and out["momentum"] <= 0:
            raise ValueError(f"{self.name} nesterov needs a momentum above 0 (got momentum {out['momentum']:g})")
        return out

    @classmethod
    def coerce(cls, value: Any) -> Any:
        """Accept `"adam"` or `{name = "adam", lr = 0.01}` as well as `{name, args}`."""
        if isinstance(value, str):
            return {"name": value}
        if isinstance(value, dict) and "args" not in value:
            rest = {k: v for k, v in value.items() if k != "name"}
            return {"name": value.get("name"), "args": rest}
        return value


# Training-batch augmentations (train.augment): name -> (argument's meaning, lowest, highest); None: no argument.
AUGMENTS: dict[str, tuple[str, int, int] | None] = {
    "flip": None,                       # mirror left-right, each image with probability 1/2
    "crop": ("padding", 1, 32),         # zero-pad by p, crop back to the size at a random place
    "translate": ("pixels", 1, 32),     # shift by up to p pixels each way, edges reflected
    "cutout": ("square size", 1, 256),  # zero one random s x s square (clipped to the image)
}
SCHEDULES = ("constant", "step", "cosine", "one-cycle")
_AUGMENT_RE = re.compile(r"^([a-z_-]+)\s*(?:\(\s*([0-9]{1,9})\s*\))?$")


def parse_augment(value: Any) -> tuple[str, ...]:
    """`["flip", "crop(4)"]` validated into canonical spellings; any mistake is one ValueError line."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise ValueError('augment is a list such as ["flip", "crop(4)", "translate(2)", "cutout(8)"]')
    out, seen = [], set()
    for item in value:
        if not isinstance(item, str):
            raise ValueError(f"augment items are strings such as \"crop(4)\", not {show_value(item)}")
        m = _AUGMENT_RE.match(item.strip().lower())
        if not m or m.group(1) not in AUGMENTS:
            raise ValueError(f'unknown augmentation "{_clip(item)}"; valid: flip, crop(padding), translate(pixels), '
                             "cutout(size)")
        name, arg = m.group(1), m.group(2)
        rule = AUGMENTS[name]
        if rule is None and arg is not None:
            raise ValueError(f'augmentation "{_clip(item)}": {name} takes no argument')
        if rule is not None:
            what, low, high = rule
            if arg is None or not low <= int(arg) <= high:
                raise ValueError(f'augmentation "{_clip(item)}": {name} needs its {what}, an integer in '
                                 f"[{low}, {high}]")
        if name in seen:
            raise ValueError(f'augmentation "{_clip(item)}": {name} is listed twice')
        seen.add(name)
        out.append(name if arg is None else f"{name}({int(arg)})")
    return tuple(out)


class TrainSettings(_Frozen):
    """How a model is trained; Keras fit() semantics (see docs/semantics.md).

    The recipe fields default to Keras 2's fit(): no augmentation, `/255`, a constant learning rate,
    no label smoothing. `warmup` below 1 is a fraction of all batches, from 1 on a number of epochs;
    `step` multiplies the learning rate by `step_gamma` every `step_every` epochs (default: a third of them).
    """

    epochs: Int = Field(default=12, ge=1, le=100_000)
    batch_size: Int = Field(default=128, ge=1, le=1 << 20)
    optimizer: OptimizerSpec = OptimizerSpec(name="adam")
    loss: Literal["categorical_crossentropy"] = "categorical_crossentropy"
    validation: Literal["holdout", "test"] = "holdout"
    holdout_fraction: Float = Field(default=0.1, gt=0.0, lt=1.0)
    split_seed: Int = Field(default=0, ge=0, le=2**63 - 1)  # torch.Generator.manual_seed's range
    train_limit: Int | None = Field(default=None, ge=10)
    augment: tuple[str, ...] = ()
    normalize: Literal["/255", "channel"] = "/255"
    schedule: Literal["constant", "step", "cosine", "one-cycle"] = "constant"
    warmup: Float = Field(default=0.0, ge=0.0, le=100_000)
    step_every: Int | None = Field(default=None, ge=1, le=100_000)
    step_gamma: Float = Field(default=0.1, gt=0.0, lt=1.0)
    label_smoothing: Float = Field(default=0.0, ge=0.0, lt=1.0)

    @field_validator("augment", mode="before")
    @classmethod
    def _augment(cls, v: Any) -> Any:
        return parse_augment(v)

    @model_validator(mode="after")
    def _recipe(self) -> "TrainSettings":
        check_recipe(self)
        return self

    @field_validator("optimizer", mode="before")
    @classmethod
    def _opt(cls, v: Any) -> Any:
        return OptimizerSpec.coerce(v)

    @field_validator("optimizer")
    @classmethod
    def _opt_args(cls, v: OptimizerSpec) -> OptimizerSpec:
        v.resolved()
        return v


class TrainOverrides(_Frozen):
    """Per-model overrides of the study's training settings; unset fields inherit."""

    epochs: Int | None = Field(default=None, ge=1, le=100_000)
    batch_size: Int | None = Field(default=None, ge=1, le=1 << 20)
    optimizer: OptimizerSpec | None = None
    augment: tuple[str, ...] | None = None
    normalize: Literal["/255", "channel"] | None = None
    schedule: Literal["constant", "step", "cosine", "one-cycle"] | None = None
    warmup: Float | None = Field(default=None, ge=0.0, le=100_000)
    step_every: Int | None = Field(default=None, ge=1, le=100_000)
    step_gamma: Float | None = Field(default=None, gt=0.0, lt=1.0)
    label_smoothing: Float | None = Field(default=None, ge=0.0, lt=1.0)

    @field_validator("augment", mode="before")
    @classmethod
    def _augment(cls, v: Any) -> Any:
        return parse_augment(v) if v is not None else v

    @field_validator("optimizer", mode="before")
    @classmethod
    def _opt(cls, v: Any) -> Any:
        return OptimizerSpec.coerce(v) if v is not None else v

    @field_validator("optimizer")
    @classmethod
    def _opt_args(cls, v: OptimizerSpec | None) -> OptimizerSpec | None:
        if v is not None:
            v.resolved()
        return v


def check_recipe(settings: TrainSettings) -> None:
    """Cross-field rules of the recipe (also for a model's settings with its overrides applied)."""
    if settings.warmup >= 1 and settings.warmup > settings.epochs:
        raise ValueError(f"warmup of {settings.warmup:g} epochs is longer than the {settings.epochs} epochs")
    if settings.schedule == "one-cycle" and settings.warmup >= 1 and settings.warmup >= settings.epochs:
        raise ValueError("one-cycle needs a warmup shorter than the training (a fraction below 1, or fewer epochs)")


class ModelSpec(_Frozen):
    """A named model: a list of layers (Keras Sequential order) and optional training overrides."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")
    description: str = ""
    layers: tuple[_Layer, ...]
    train: TrainOverrides = TrainOverrides()
    # The factor levels this model was expanded or sampled with (name -> a JSON scalar), in factor order;
    # empty for a model written out by hand. Reports, `--where` and the factor effects read them.
    factors: dict[str, str | int | float | bool] = {}

    @field_validator("layers", mode="before")
    @classmethod
    def _parse(cls, v: Any) -> Any:
        if isinstance(v, (str, bytes)) or not hasattr(v, "__iter__"):
            raise ValueError("layers must be a list")
        return tuple(parse_layer(item) for item in v)

    def settings(self, base: TrainSettings) -> TrainSettings:
        """The study's settings with this model's overrides applied."""
        update = {k: getattr(self.train, k) for k in TrainOverrides.model_fields if getattr(self.train, k) is not None}
        return base.model_copy(update=update)

    def shapes(self, input_shape: Shape) -> list[Shape]:
        """Output shape of every layer; raises LayerError naming the 1-based index of the bad layer."""
        shapes, shape = [], tuple(input_shape)
        for i, layer in enumerate(self.layers, 1):
            try:
                shape = layer.output_shape(shape)
            except LayerError as exc:
                raise LayerError(f"layer {i} {layer.to_string()}: {exc}") from None
            shapes.append(shape)
        return shapes

    def check(self, input_shape: Shape, num_classes: int) -> None:
        """Shape inference over the whole model plus the classifier rule (last layer: dense(num_classes))."""
        if not self.layers:
            raise LayerError("has no layers")
        self.shapes(input_shape)
        last = self.layers[-1]
        if not isinstance(last, Dense) or last.units != num_classes:
            raise LayerError(
                f"layer {len(self.layers)} {last.to_string()}: the last layer must be dense({num_classes}), "
                f"the softmax classifier for {num_classes} classes"
            )
        if last.activation not in ("relu", "softmax"):  # relu is the unset default: the classifier is softmax
            raise LayerError(f"layer {len(self.layers)} {last.to_string()}: the classifier's activation is softmax")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.description:
            out["description"] = self.description
        out["layers"] = [layer.to_string() for layer in self.layers]
        if self.factors:
            out["factors"] = dict(self.factors)
        overrides = {k: getattr(self.train, k) for k in TrainOverrides.model_fields if getattr(self.train, k) is not None}
        if overrides:
            out["train"] = {k: (_opt_dict(v) if k == "optimizer" else v) for k, v in overrides.items()}
        return out


class Study(_Frozen):
    """A study: dataset, training settings, seeds and named models. Build in Python or load from a file.

    `spaces` (templates with factors, see spec.space) is accepted on input and expanded into `models`,
    after the models written out; the study keeps only the models.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")
    description: str = ""
    dataset: str = "mnist"  # a registered name, or a described source in its canonical compact spelling
    seeds: tuple[Int, ...] = (0,)
    # Racing (`seeds = {min = 2, max = 10}`): every model trains its first `race` seeds, then only models
    # whose place in or out of the best group is undecided get more, up to all of `seeds`. None: all seeds.
    race: Int | None = None
    train: TrainSettings = TrainSettings()
    models: tuple[ModelSpec, ...]
    # A search (convstudy.search) adds the models it samples to `models` as it goes; see fingerprint.
    search: SearchSpec | None = None
    # Scientific levels compared with their nuisance hyperparameters tuned per level (convstudy.search.fair);
    # `models` then holds the fixed recipe, if the study runs one.
    fair: FairSpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _spaces(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict) or "spaces" not in data:
            return data
        from convstudy.spec.space import expand_spaces  # spaces build on ModelSpec

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
        if set(seeds) != {"min", "max"}:
            raise ValueError("racing seeds are {min = N, max = M}, e.g. seeds = {min = 2, max = 10}")
        lo, hi = seeds["min"], seeds["max"]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (lo, hi)) or not 1 <= lo <= hi <= 1000:
            raise ValueError(f"racing seeds need integers 1 <= min <= max <= 1000 (got min {lo!r}, max {hi!r})")
        return {**data, "seeds": hi, "race": lo if lo < hi else None}

    @model_validator(mode="after")
    def _names_free(self) -> "Study":
        # A search's sampled models join a study only through its store (model_copy, never validated here).
        if taken := [why for m in self.models if (why := reserved(m.name))]:
            raise ValueError(f"{taken[0]}; rename it")
        return self

    @model_validator(mode="after")
    def _racing_ok(self) -> "Study":
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
            "seeds": ({"min": self.race, "max": len(self.seeds)} if self.race else list(self.seeds)),
            "train": train,
            "models": [m.to_dict() for m in self.models],
            **({"search": self.search.to_dict()} if self.search else {}),
            **({"fair": self.fair.to_dict()} if self.fair else {}),
        }

    def fingerprint(self) -> str:
        """Identity of what the study trains; seeds are left out so a later run may add seeds, and a
        search's sampled models and budget so it stays itself while a search adds models or goes on longer."""
        body = self.to_dict()
        body.pop("seeds")  # and racing, which only decides how many seeds run
        body.pop("description")
        if self.search:
            body["models"] = [m for m in body["models"] if not is_sampled(m)]
            body["search"].pop("trials")
        if self.fair:  # a larger budget per level goes on with the same study
            body["fair"].pop("trials")
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def _opt_dict(opt: Any) -> Any:
    opt = opt if isinstance(opt, OptimizerSpec) else OptimizerSpec(**opt)
    return opt.name if not opt.args else {"name": opt.name, **opt.args}


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
        from convstudy.spec.search import check_search

        check_search(study, info, source)
    if study.fair is not None:
        from convstudy.spec.fair import check_fair

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
        parsed = []
        for j, item in enumerate(layers, 1):
            try:
                parsed.append(parse_layer(item))
            except LayerError as exc:
                text = item if isinstance(item, str) else item.get("type", "?") if isinstance(item, dict) else "?"
                raise UserError(f"{source}: {label}, layer {j} {_clip(str(text).strip())}: {exc}") from None
        raw = {**raw, "layers": parsed}
    try:
        return ModelSpec.model_validate(raw)
    except ValidationError as exc:
        raise UserError(f"{source}: {label}: {pydantic_reason(exc)}") from None


def summarize(model: ModelSpec, settings: TrainSettings) -> str:
    """The notebook's one-line description, generated: `ConvNet(32-64) | 2 Dropouts | 1 MaxPool | Dense(128-10) | Adadelta`."""
    convs = [layer for layer in model.layers if layer.type == "conv"]
    pools = [layer for layer in model.layers if layer.type == "pool"]
    dense = [layer for layer in model.layers if isinstance(layer, Dense)]
    drops = sum(isinstance(layer, Dropout) for layer in model.layers)
    bns = sum(layer.type == "bn" for layer in model.layers)
    parts = []
    if convs:
        parts.append(f"ConvNet({'-'.join(str(c.filters) for c in convs)})")
    if drops:
        parts.append(f"{drops} Dropout{'s' * (drops != 1)}")
    if pools:
        parts.append(f"{len(pools)} {'Avg' if all(p.mode == 'avg' for p in pools) else 'Max'}Pool{'s' * (len(pools) != 1)}")
    if dense:
        parts.append(f"Dense({'-'.join(str(d.units) for d in dense)})")
    if any(c.padding == "same" for c in convs):
        parts.append("Padding: same")
    if bns:
        parts.append(f"{bns} BatchNorm" if bns > 1 else "BatchNorm")
    extra = {layer.fn for layer in model.layers if isinstance(layer, Activation)}
    if extra:
        parts.append(", ".join(sorted(extra)))
    parts.append(OPTIMIZER_NAMES[settings.optimizer.name])
    return " | ".join(parts)


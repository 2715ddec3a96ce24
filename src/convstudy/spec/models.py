"""A model's spec and its training settings: optimiser, recipe (augment, schedule, ...), per-model overrides."""

from __future__ import annotations

import math
import re
from typing import Any, Literal, Optional

from pydantic import Field, create_model, field_validator, model_validator
from pydantic.fields import FieldInfo

from convstudy.spec.layers import (
    Activation, Dense, Dropout, Float, Frozen, Int, LayerError, Shape, _clip, _Layer, layer_shapes, parse_layer,
    show_value,
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


class OptimizerSpec(Frozen):
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


class _Checked(Frozen):
    """The field checks of TrainSettings, shared by TrainOverrides (where None means: inherited)."""

    @field_validator("augment", mode="before", check_fields=False)
    @classmethod
    def _augment(cls, v: Any) -> Any:
        return v if v is None else parse_augment(v)

    @field_validator("optimizer", mode="before", check_fields=False)
    @classmethod
    def _opt(cls, v: Any) -> Any:
        return OptimizerSpec.coerce(v)

    @field_validator("optimizer", check_fields=False)
    @classmethod
    def _opt_args(cls, v: OptimizerSpec | None) -> OptimizerSpec | None:
        if v is not None:
            v.resolved()
        return v


class TrainSettings(_Checked):
    """How a model is trained; Keras 2 fit() semantics and defaults (docs/semantics.md). `warmup` below 1 is a
    fraction of all batches, from 1 on a number of epochs."""

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

    @model_validator(mode="after")
    def _recipe(self) -> "TrainSettings":
        check_recipe(self)
        return self


# What a model may set for itself; the rest (validation, splits, ...) is the study's.
OVERRIDABLE = ("epochs", "batch_size", "optimizer", "augment", "normalize", "schedule", "warmup", "step_every",
               "step_gamma", "label_smoothing")
TrainOverrides = create_model(
    "TrainOverrides", __base__=_Checked, __module__=__name__,
    __doc__="Per-model overrides of the study's training settings: TrainSettings' fields and checks; unset inherit.",
    **{k: (Optional[TrainSettings.model_fields[k].annotation],
           FieldInfo.merge_field_infos(TrainSettings.model_fields[k], default=None)) for k in OVERRIDABLE})


def check_recipe(settings: TrainSettings) -> None:
    """Cross-field rules of the recipe (also for a model's settings with its overrides applied)."""
    if settings.warmup >= 1 and settings.warmup > settings.epochs:
        raise ValueError(f"warmup of {settings.warmup:g} epochs is longer than the {settings.epochs} epochs")
    if settings.schedule == "one-cycle" and settings.warmup >= 1 and settings.warmup >= settings.epochs:
        raise ValueError("one-cycle needs a warmup shorter than the training (a fraction below 1, or fewer epochs)")


class ModelSpec(Frozen):
    """A named model: a list of layers (Keras Sequential order) and optional training overrides."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")
    description: str = ""
    layers: tuple[_Layer, ...]
    train: TrainOverrides = TrainOverrides()
    # The factor levels this model was expanded or sampled with (name -> a JSON scalar), in factor order;
    # empty for a model written out by hand. Reports, `--where` and the factor effects read them.
    factors: dict[str, str | int | float | bool] = {}
    # The [[spaces]] template it came from ("" for a model written out): the design-space comparisons group
    # by it. Left out of the fingerprint, so a study stored before it was recorded stays the same study.
    space: str = ""

    @field_validator("layers", mode="before")
    @classmethod
    def _parse(cls, v: Any) -> Any:
        if isinstance(v, (str, bytes)) or not hasattr(v, "__iter__"):
            raise ValueError("layers must be a list")
        return tuple(parse_layer(item) for item in v)

    def settings(self, base: TrainSettings) -> TrainSettings:
        """The study's settings with this model's overrides applied."""
        update = {k: getattr(self.train, k) for k in OVERRIDABLE if getattr(self.train, k) is not None}
        return base.model_copy(update=update)

    def shapes(self, input_shape: Shape) -> list[Shape]:
        """Output shape of every layer; raises LayerError naming the 1-based index of the bad layer."""
        return layer_shapes(self.layers, tuple(input_shape))

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
        if self.space:
            out["space"] = self.space
        overrides = {k: getattr(self.train, k) for k in OVERRIDABLE if getattr(self.train, k) is not None}
        if overrides:
            out["train"] = {k: (_opt_dict(v) if k == "optimizer" else v) for k, v in overrides.items()}
        return out


def _opt_dict(opt: Any) -> Any:
    opt = opt if isinstance(opt, OptimizerSpec) else OptimizerSpec(**opt)
    return opt.name if not opt.args else {"name": opt.name, **opt.args}


def summarize(model: ModelSpec, settings: TrainSettings) -> str:
    """The notebook's one-line description, generated: `ConvNet(32-64) | 2 Dropouts | 1 MaxPool | Dense(128-10) | Adadelta`."""
    layers = _flat(model.layers)  # a residual block's layers count as the model's
    convs = [layer for layer in layers if layer.type in ("conv", "sepconv")]
    pools = [layer for layer in layers if layer.type == "pool"]
    dense = [layer for layer in layers if isinstance(layer, Dense)]
    drops = sum(isinstance(layer, Dropout) for layer in layers)
    bns = sum(layer.type == "bn" for layer in layers)
    blocks = sum(layer.type == "residual" and layer.skip for layer in layers)
    parts = []
    if convs:
        parts.append(f"ConvNet({'-'.join(str(c.filters) for c in convs)})")
    if blocks:
        parts.append(f"{blocks} Residual{'s' * (blocks != 1)}")
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
    extra = {layer.fn for layer in layers if isinstance(layer, Activation)}
    if extra:
        parts.append(", ".join(sorted(extra)))
    parts.append(OPTIMIZER_NAMES[settings.optimizer.name])
    return " | ".join(parts)


def _flat(layers: tuple[_Layer, ...]) -> list[_Layer]:
    return [inner for layer in layers for inner in (layer, *_flat(getattr(layer, "layers", ())))]


# A sampled model is named after its Optuna trial number; the study's fingerprint leaves such models out.
SAMPLED_NAME = re.compile(r"^trial-\d{4,}$")


def sampled_name(number: int) -> str:
    """The convstudy model name of Optuna trial `number` (one name per trial, stable across reruns)."""
    return f"trial-{number:04d}"


def is_sampled(model: dict[str, Any]) -> bool:
    """Whether a model (in its dict form) was sampled by a search: named trial-NNNN, with factor levels."""
    return bool(SAMPLED_NAME.match(str(model.get("name", ""))) and model.get("factors"))


def reserved(name: str) -> str | None:
    """Why no model may be given `name` (None: it may): a search finds its sampled models by their trial-NNNN
    names, so another model so named would stand in for an Optuna trial it never was."""
    if SAMPLED_NAME.match(name):
        return f'model name "{name}" is kept for a search\'s sampled models (trial-NNNN)'
    return None

"""Layer specs: frozen pydantic records, a compact string syntax, and shape inference without tensors.

A layer is written either as a compact string (`conv(64,5,same)`, `dropout(0.25)`, `bn`) or as a table
(`{type = "conv", filters = 64, kernel = 5, padding = "same"}`); both parse to the same frozen record,
and `to_string()` / `to_dict()` give them back. Shapes use Keras's (H, W, C) order, as users read them.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, Strict, TypeAdapter, ValidationError

ACTIVATIONS = ("relu", "tanh", "sigmoid", "elu", "selu", "gelu", "softplus", "softmax", "linear")
Act = Literal["relu", "tanh", "sigmoid", "elu", "selu", "gelu", "softplus", "softmax", "linear"]
Shape = tuple[int, ...]  # (H, W, C) for feature maps, (units,) once flat
# Strict: `true` is not the integer 1 nor "8" the integer 8; a float field takes ints but not bools or strings.
Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]
_MAX_DIGITS = 18  # longer integer literals are out of every field's range; int() of 4,300+ digits raises


class LayerError(ValueError):
    """A layer that cannot be parsed or does not fit its input; the spec loader adds file/model/index."""


class Frozen(BaseModel):
    """Every spec record: immutable once built, and an unknown key is an error, never ignored."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class _Layer(Frozen):
    positional: ClassVar[tuple[str, ...]] = ()

    def to_dict(self) -> dict[str, Any]:
        """Table form with defaults left out, so files stay short and round trips stay exact."""
        return {"type": self.type, **self.model_dump(exclude_defaults=True, exclude={"type"})}

    def to_string(self) -> str:
        """Compact form, e.g. `conv(64,5,same)`; keyword arguments only where positions would be ambiguous."""
        values = self.model_dump(exclude_defaults=True, exclude={"type"})
        args: list[str] = []
        for name in self.positional:
            if name not in values:
                break
            args.append(_fmt(values.pop(name)))
        args += [f"{k}={_fmt(v)}" for k, v in values.items()]
        return f"{self.type}({','.join(args)})" if args else self.type

    # Each subclass answers these two from its input shape alone; they drive validation and summaries.
    def output_shape(self, shape: Shape) -> Shape:
        return shape

    def params(self, shape: Shape) -> tuple[int, int]:
        """(total, trainable) parameter counts as Keras reports them."""
        return (0, 0)

    def flops(self, shape: Shape) -> int:
        """Forward FLOPs per sample (2 per multiply-add); elementwise ops are not counted."""
        return 0


class Conv(_Layer):
    """Keras Conv2D: square kernel, 'valid' or 'same' padding, ReLU unless told otherwise."""

    type: Literal["conv"] = "conv"
    filters: Int = Field(ge=1, le=65536)
    kernel: Int = Field(ge=1, le=1024)
    padding: Literal["valid", "same"] = "valid"
    stride: Int = Field(default=1, ge=1, le=1024)
    activation: Act = "relu"
    positional: ClassVar[tuple[str, ...]] = ("filters", "kernel", "padding")

    def output_shape(self, shape: Shape) -> Shape:
        h, w, _ = _need_map(shape, self)
        if self.padding == "same":
            return (-(-h // self.stride), -(-w // self.stride), self.filters)
        if h < self.kernel or w < self.kernel:
            raise LayerError(f"input {_fmt_shape(shape)} is smaller than the {self.kernel}x{self.kernel} kernel")
        return ((h - self.kernel) // self.stride + 1, (w - self.kernel) // self.stride + 1, self.filters)

    def params(self, shape: Shape) -> tuple[int, int]:
        n = self.kernel * self.kernel * shape[-1] * self.filters + self.filters
        return (n, n)

    def flops(self, shape: Shape) -> int:
        h, w, _ = self.output_shape(shape)
        return 2 * self.kernel * self.kernel * shape[-1] * self.filters * h * w


class Pool(_Layer):
    """Keras MaxPooling2D (or average pooling with mode=avg), 'valid' padding, stride defaults to size."""

    type: Literal["pool"] = "pool"
    size: Int = Field(default=2, ge=1, le=1024)
    stride: Int | None = Field(default=None, ge=1, le=1024)
    mode: Literal["max", "avg"] = "max"
    positional: ClassVar[tuple[str, ...]] = ("size", "stride")

    def output_shape(self, shape: Shape) -> Shape:
        h, w, c = _need_map(shape, self)
        if h < self.size or w < self.size:
            raise LayerError(f"input {_fmt_shape(shape)} is smaller than the {self.size}x{self.size} pool window")
        s = self.stride or self.size
        return ((h - self.size) // s + 1, (w - self.size) // s + 1, c)


class Dropout(_Layer):
    type: Literal["dropout"] = "dropout"
    rate: Float = Field(ge=0.0, lt=1.0)
    positional: ClassVar[tuple[str, ...]] = ("rate",)


class Flatten(_Layer):
    type: Literal["flatten"] = "flatten"

    def output_shape(self, shape: Shape) -> Shape:
        n = 1
        for d in shape:
            n *= d
        return (n,)


class Dense(_Layer):
    """Keras Dense on a flat input; the model's last dense layer is the softmax classifier."""

    type: Literal["dense"] = "dense"
    units: Int = Field(ge=1, le=1 << 20)
    activation: Act = "relu"
    positional: ClassVar[tuple[str, ...]] = ("units", "activation")

    def output_shape(self, shape: Shape) -> Shape:
        if len(shape) != 1:
            raise LayerError(f"needs a flat input but gets {_fmt_shape(shape)}; add flatten before it")
        return (self.units,)

    def params(self, shape: Shape) -> tuple[int, int]:
        n = shape[0] * self.units + self.units
        return (n, n)

    def flops(self, shape: Shape) -> int:
        return 2 * shape[0] * self.units


class BatchNorm(_Layer):
    """Keras BatchNormalization: momentum 0.99 and epsilon 1e-3 (PyTorch's own defaults differ)."""

    type: Literal["bn"] = "bn"
    momentum: Float = Field(default=0.99, gt=0.0, lt=1.0)
    epsilon: Float = Field(default=1e-3, gt=0.0, lt=1.0)

    def params(self, shape: Shape) -> tuple[int, int]:
        # Keras counts moving mean/variance in Total but not in Trainable.
        return (4 * shape[-1], 2 * shape[-1])


class Activation(_Layer):
    type: Literal["activation"] = "activation"
    fn: Act
    positional: ClassVar[tuple[str, ...]] = ("fn",)


Layer = Annotated[Union[Conv, Pool, Dropout, Flatten, Dense, BatchNorm, Activation], Field(discriminator="type")]
LAYERS: dict[str, type[_Layer]] = {
    cls.model_fields["type"].default: cls for cls in (Conv, Pool, Dropout, Flatten, Dense, BatchNorm, Activation)
}
ALIASES = {
    "conv2d": "conv", "maxpool": "pool", "max_pool": "pool", "maxpooling2d": "pool",
    "batchnorm": "bn", "batch_norm": "bn", "batchnormalization": "bn", "linear_layer": "dense",
}
_LAYER_ADAPTER: TypeAdapter = TypeAdapter(Layer)
_CALL = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\((.*)\))?\s*$", re.S)


def parse_layer(value: Any) -> _Layer:
    """A layer from its compact string or its table form; raises LayerError with a one-line reason."""
    if isinstance(value, _Layer):
        return value
    if isinstance(value, str):
        kind, fields = _parse_call(value)
    elif isinstance(value, dict):
        fields = dict(value)
        kind = fields.pop("type", None)
        if not isinstance(kind, str):
            raise LayerError('a layer table needs a "type" key naming the layer kind')
    else:
        raise LayerError(f"a layer is a string like conv(32,3) or a table, not {type(value).__name__}")
    kind = ALIASES.get(kind.lower(), kind.lower())
    if kind in ACTIVATIONS and not fields:
        kind, fields = "activation", {"fn": kind}
    if kind not in LAYERS:
        raise LayerError(f'unknown layer "{_clip(kind)}"; valid: {", ".join(sorted(LAYERS))} or an activation')
    try:
        return _LAYER_ADAPTER.validate_python({"type": kind, **fields})
    except ValidationError as exc:
        raise LayerError(pydantic_reason(exc)) from None


def _parse_call(text: str) -> tuple[str, dict[str, Any]]:
    match = _CALL.match(text)
    if not match:
        raise LayerError(f"cannot parse layer {_clip(text)!r}; write it like conv(32,3) or dropout(0.25)")
    kind, argtext = match.group(1).lower(), match.group(2)
    kind = ALIASES.get(kind, kind)
    if kind in ACTIVATIONS and not argtext:
        return kind, {}
    cls = LAYERS.get(kind)
    if cls is None:
        raise LayerError(f'unknown layer "{_clip(kind)}"; valid: {", ".join(sorted(LAYERS))} or an activation')
    fields: dict[str, Any] = {}
    if argtext is None or not argtext.strip():
        return kind, fields
    shown = _clip(text.strip())
    positional = list(cls.positional)
    keywords = False
    for raw in argtext.split(","):
        raw = raw.strip()
        if not raw:
            raise LayerError(f"empty argument in {shown!r}")
        if "=" in raw:
            key, _, val = raw.partition("=")
            key = key.strip()
            if not key:
                raise LayerError(f"argument name missing before '=' in {shown!r}")
            if key == "type":
                raise LayerError('"type" is not an argument; the layer kind is the name before the parentheses')
            if key in fields:
                raise LayerError(f'argument "{key}" given twice in {shown!r}')
            fields[key] = _literal(val.strip())
            keywords = True
            continue
        # As in Python: once a keyword is given, a positional value could only be guessed at.
        if keywords:
            raise LayerError(f"positional argument {_clip(raw, 20)} after keyword arguments in {shown!r}")
        val = _literal(raw)
        option = ("padding" if cls is Conv and val in ("same", "valid")
                  else "activation" if cls in (Conv, Dense) and val in ACTIVATIONS else None)
        if option is not None:
            if option in fields:
                raise LayerError(f'{option} given twice ("{fields[option]}", then "{val}") in {shown!r}')
            fields[option] = val
        elif not positional:
            raise LayerError(f"too many arguments in {shown!r}")
        else:
            fields[positional.pop(0)] = val
        positional = [p for p in positional if p not in fields]
    return kind, fields


def _literal(text: str) -> Any:
    if re.fullmatch(r"[+-]?\d+", text):
        if len(text.lstrip("+-")) > _MAX_DIGITS:
            raise LayerError(f"integer {_clip(text, 20)} has too many digits")
        return int(text)
    try:
        return float(text)
    except ValueError:
        pass
    if text.lower() in ("none", "null"):
        return None
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text.strip("'\"")


def _clip(text: str, limit: int = 60) -> str:
    """A user's text shortened for an error message, so a hostile megabyte stays one short line."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _fmt(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def _fmt_shape(shape: Shape) -> str:
    return "x".join(str(d) for d in shape)


def _need_map(shape: Shape, layer: _Layer) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise LayerError(f"needs an HxWxC feature map but gets a flat {_fmt_shape(shape)} input")
    return shape  # type: ignore[return-value]


def pydantic_reason(exc: ValidationError) -> str:
    """The first pydantic error as `field: reason (got value)`, one line."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"] if not (isinstance(p, str) and p in LAYERS))
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown argument"
    elif err["type"] == "missing":
        msg = "missing"
    # A validator's own message may already say what it got (seeds = 0); say it once.
    shown = err["type"] == "missing" or isinstance(err["input"], dict) or "(got " in msg
    got = "" if shown else f" (got {show_value(err['input'])})"
    return f"{loc}: {msg}{got}" if loc else f"{msg}{got}"


def show_value(value: Any) -> str:
    """A user's value for an error message: short repr of a scalar, else its type's name."""
    if isinstance(value, int) and value.bit_length() > 200:  # repr() of 4,300+ digits raises
        return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
    if isinstance(value, (str, int, float, bool, type(None))):
        return _clip(repr(value))
    return type(value).__name__


def fmt_shape(shape: Shape) -> str:
    """`28x28x1` for a feature map, `128` for a flat vector, as in Keras summaries."""
    return _fmt_shape(shape)

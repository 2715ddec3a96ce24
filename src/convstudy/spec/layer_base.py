"""What every layer record shares: the base class, field types, activations and message helpers."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Strict, ValidationError

ACTIVATIONS = ("relu", "tanh", "sigmoid", "elu", "selu", "gelu", "softplus", "softmax", "linear",
               "silu", "hardswish", "mish", "relu6", "leaky_relu", "softsign", "hard_sigmoid")
# Keras's other spellings of the same functions; a record always holds the name on the left of ACTIVATIONS.
ACT_ALIASES = {"swish": "silu", "hard_silu": "hardswish", "hard_swish": "hardswish"}


def canonical_act(value: Any) -> Any:
    """`Swish` -> `silu`: activation names are case-free and Keras's aliases are accepted."""
    if isinstance(value, str):
        value = value.lower()
        return ACT_ALIASES.get(value, value)
    return value


Act = Annotated[Literal[ACTIVATIONS], BeforeValidator(canonical_act)]  # Literal[("a", "b")] is Literal["a", "b"]
Shape = tuple[int, ...]  # (H, W, C) for feature maps, (units,) once flat
# Strict: `true` is not the integer 1 nor "8" the integer 8; a float field takes ints but not bools or strings.
Int = Annotated[int, Strict()]
Float = Annotated[float, Strict()]
Bool = Annotated[bool, Strict()]
KINDS: set[str] = set()  # every registered layer kind; filled by spec.layers, read by pydantic_reason


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
        values = self.to_dict()
        values.pop("type")
        args: list[str] = []
        for name in self.positional:
            if name not in values:
                break
            args.append(_fmt(values.pop(name)))
        args += [f"{k}={_fmt(v)}" for k, v in values.items()]
        return f"{self.type}({','.join(args)})" if args else self.type

    # Each subclass answers these from its input shape alone; they drive validation and summaries.
    def output_shape(self, shape: Shape) -> Shape:
        return shape

    def params(self, shape: Shape) -> tuple[int, int]:
        """(total, trainable) parameter counts as Keras reports them."""
        return (0, 0)

    def flops(self, shape: Shape) -> int:
        """Forward FLOPs per sample (2 per multiply-add); elementwise ops are not counted."""
        return 0


def _clip(text: str, limit: int = 60) -> str:
    """A user's text shortened for an error message, so a hostile megabyte stays one short line."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _fmt(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_fmt(v) for v in value) + "]"
    return repr(value) if isinstance(value, float) else str(value).lower() if isinstance(value, bool) else str(value)


def fmt_shape(shape: Shape) -> str:
    """`28x28x1` for a feature map, `128` for a flat vector, as in Keras summaries."""
    return "x".join(str(d) for d in shape)


def _need_map(shape: Shape, layer: _Layer) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise LayerError(f"needs an HxWxC feature map but gets a flat {fmt_shape(shape)} input")
    return shape  # type: ignore[return-value]


def pydantic_reason(exc: ValidationError) -> str:
    """The first pydantic error as `field: reason (got value)`, one line."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"] if not (isinstance(p, str) and p in KINDS))
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown argument"
    elif err["type"] == "missing":
        msg = "missing"
    # A validator's own message may already say what it got (seeds = 0); say it once.
    shown = err["type"] == "missing" or isinstance(err["input"], (dict, list, tuple)) or "(got " in msg
    got = "" if shown else f" (got {show_value(err['input'])})"
    return f"{loc}: {msg}{got}" if loc else f"{msg}{got}"


def show_value(value: Any) -> str:
    """A user's value for an error message: short repr of a scalar, else its type's name."""
    if isinstance(value, int) and value.bit_length() > 200:  # repr() of 4,300+ digits raises
        return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
    if isinstance(value, (str, int, float, bool, type(None))):
        return _clip(repr(value))
    return type(value).__name__

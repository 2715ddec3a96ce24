"""Layer specs: frozen pydantic records, a compact string syntax (`conv(64,5,same)`) or a table for each, and
shape inference without tensors. The records live in layer_base, conv_layers and basic_layers (the residual block
here, beside the parser it uses); `LAYERS` registers them.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import Field, TypeAdapter, ValidationError, field_validator

from convstudy.spec.basic_layers import (
    Activation, BatchNorm, Dense, Dropout, Flatten, GroupNorm, LayerNorm, SqueezeExcite,
)
from convstudy.spec.conv_layers import Conv, DepthwiseConv, GlobalAvgPool, GlobalMaxPool, Pool, SeparableConv
from convstudy.spec.layer_base import (  # noqa: F401  (the public names of spec.layers)
    ACT_ALIASES, ACTIVATIONS, KINDS, Act, Bool, Float, Frozen, Int, LayerError, Shape, _clip, _fmt,
    _Layer, _need_map, canonical_act, fmt_shape, pydantic_reason, show_value,
)


# The residual block lives beside the parser: its branch is parsed by parse_layer, which knows every kind.
# The residual block: a branch of layers whose output is added to its input, then an activation.
# 
# Where the branch changes the channels or the map size, the input reaches the sum through a 1x1 conv (with
# bias, Keras's Conv2D defaults) of the stride that gives the branch's size, optionally followed by a
# BatchNormalization: ResNet's projection shortcut. `skip = false` keeps the branch and the activation but
# drops the addition, so a space can switch the skip connection with one factor.
class Residual(_Layer):
    """`{type = "residual", layers = ["conv(16,3,same)", "bn"], activation = "relu"}`: act(branch(x) + x)."""

    type: Literal["residual"] = "residual"
    layers: tuple[_Layer, ...] = Field(min_length=1)
    activation: Act = "relu"
    skip: Bool = True
    projection_bn: Bool = False
    positional: ClassVar[tuple[str, ...]] = ("layers",)

    @field_validator("layers", mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        if isinstance(value, (str, bytes, dict)) or not isinstance(value, (list, tuple)):
            raise ValueError('a residual\'s layers is a list, e.g. ["conv(16,3,same)", "bn"]')
        out = parse_layers(value)
        if not out:
            raise ValueError("a residual block needs at least one layer")
        return tuple(out)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "layers": [layer.to_string() for layer in self.layers],
                **self.model_dump(exclude_defaults=True, exclude={"type", "layers"})}

    def branch_shapes(self, shape: Shape) -> list[Shape]:
        """Every branch layer's output shape; LayerError names the branch layer."""
        return layer_shapes(self.layers, shape, "branch layer")

    def projection(self, shape: Shape) -> int | None:
        """The stride of the 1x1 projection shortcut, or None where the input is added as it is."""
        out = self.branch_shapes(shape)[-1]
        if not self.skip or out == shape:
            return None
        if len(out) != 3 or len(shape) != 3:
            raise LayerError(f"its branch turns {fmt_shape(shape)} into {fmt_shape(out)}; only feature maps "
                             "get a projection shortcut")
        h, w, _ = shape
        for stride in range(1, max(h, w) + 1):
            if (-(-h // stride), -(-w // stride)) == out[:2]:
                return stride
        raise LayerError(f"its branch turns {fmt_shape(shape)} into {fmt_shape(out)}, which no 1x1 strided "
                         "projection of the input matches (it gives ceil(H/s) x ceil(W/s)); use 'same' padding")

    def output_shape(self, shape: Shape) -> Shape:
        self.projection(shape)
        return self.branch_shapes(shape)[-1]

    def params(self, shape: Shape) -> tuple[int, int]:
        total = trainable = 0
        for layer, out in zip(self.layers, [shape, *self.branch_shapes(shape)]):
            n, t = layer.params(out)
            total, trainable = total + n, trainable + t
        if self.projection(shape) is not None:
            c_in, c_out = shape[-1], self.output_shape(shape)[-1]
            conv = c_in * c_out + c_out
            bn = c_out * self.projection_bn
            total, trainable = total + conv + 4 * bn, trainable + conv + 2 * bn
        return (total, trainable)

    def flops(self, shape: Shape) -> int:
        shapes = [shape, *self.branch_shapes(shape)]
        n = sum(layer.flops(s) for layer, s in zip(self.layers, shapes))
        if self.projection(shape) is not None:
            h, w, c = shapes[-1]
            n += 2 * shape[-1] * c * h * w
        return n


_MAX_DIGITS = 18  # longer integer literals are out of every field's range; int() of 4,300+ digits raises
_KINDS = (Conv, DepthwiseConv, SeparableConv, Pool, GlobalAvgPool, GlobalMaxPool, Dropout, Flatten, Dense, BatchNorm,
          LayerNorm, GroupNorm, Activation, SqueezeExcite, Residual)
Layer = Annotated[Union[_KINDS], Field(discriminator="type")]  # type: ignore[valid-type]
LAYERS: dict[str, type[_Layer]] = {cls.model_fields["type"].default: cls for cls in _KINDS}
KINDS.update(LAYERS)
ALIASES = {
    "conv2d": "conv", "maxpool": "pool", "max_pool": "pool", "maxpooling2d": "pool",
    "batchnorm": "bn", "batch_norm": "bn", "batchnormalization": "bn", "linear_layer": "dense",
    "depthwiseconv2d": "dwconv", "depthwise": "dwconv", "separableconv2d": "sepconv", "separable": "sepconv",
    "globalaveragepooling2d": "gap", "globalmaxpooling2d": "gmp", "layernorm": "ln", "layernormalization": "ln",
    "groupnorm": "gn", "groupnormalization": "gn", "squeeze_excite": "se", "resblock": "residual",
}
_ACT_NAMES = (*ACTIVATIONS, *ACT_ALIASES)


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
    if kind in _ACT_NAMES and not fields:
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
    if kind in _ACT_NAMES and not argtext:
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
    for raw in _split(argtext):
        raw = raw.strip()
        if not raw:
            raise LayerError(f"empty argument in {shown!r}")
        if "=" in re.split(r"[\[(]", raw, maxsplit=1)[0]:  # a keyword; an "=" inside a nested layer is not
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
        option = ("padding" if "padding" in cls.model_fields and val in ("same", "valid")
                  else "activation" if "activation" in cls.model_fields and isinstance(val, str)
                  and val.lower() in _ACT_NAMES else None)
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


def _split(text: str) -> list[str]:
    """`text` cut at the commas outside brackets and parentheses, so a residual's layer list stays one argument."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += (ch in "([") - (ch in ")]")
        if depth < 0:
            raise LayerError(f"unbalanced brackets in {_clip(text)!r}")
        if ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth:
        raise LayerError(f"unbalanced brackets in {_clip(text)!r}")
    return [*parts, text[start:]]


def _literal(text: str) -> Any:
    if text.startswith("[") and text.endswith("]"):
        inner = text[1:-1].strip()
        return [item.strip() for item in _split(inner)] if inner else []
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


def parse_layers(items: Any) -> tuple[_Layer, ...]:
    """Every item parsed by parse_layer; a LayerError names the 1-based index and the item as written."""
    out = []
    for j, item in enumerate(items, 1):
        try:
            out.append(parse_layer(item))
        except LayerError as exc:
            shown = item if isinstance(item, str) else item.get("type", "?") if isinstance(item, dict) else "?"
            raise LayerError(f"layer {j} {_clip(str(shown).strip())}: {exc}") from None
    return tuple(out)


def layer_shapes(layers: tuple[_Layer, ...], shape: Shape, label: str = "layer") -> list[Shape]:
    """Each layer's output shape in turn from `shape`; a LayerError names the layer as `label N layer`."""
    shapes = []
    for j, layer in enumerate(layers, 1):
        try:
            shape = layer.output_shape(shape)
        except LayerError as exc:
            raise LayerError(f"{label} {j} {layer.to_string()}: {exc}") from None
        shapes.append(shape)
    return shapes

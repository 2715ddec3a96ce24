"""Layer specs: frozen pydantic records, a compact string syntax, and shape inference without tensors.

A layer is written either as a compact string (`conv(64,5,same)`, `dropout(0.25)`, `bn`) or as a table
(`{type = "conv", filters = 64, kernel = 5, padding = "same"}`); both parse to the same frozen record,
and `to_string()` / `to_dict()` give them back. A residual block nests a list of layers:
`residual([conv(16,3,same),bn],activation=linear)` or its table. Shapes use Keras's (H, W, C) order.
The records live by kind in layer_base, conv_layers, basic_layers and residual; `LAYERS` registers them.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Union

from pydantic import Field, TypeAdapter, ValidationError

from convstudy.spec.basic_layers import (
    Activation, BatchNorm, Dense, Dropout, Flatten, GroupNorm, LayerNorm, SqueezeExcite,
)
from convstudy.spec.conv_layers import Conv, DepthwiseConv, GlobalAvgPool, GlobalMaxPool, Pool, SeparableConv
from convstudy.spec.layer_base import (  # noqa: F401  (the public names of spec.layers)
    ACT_ALIASES, ACTIVATIONS, KINDS, Act, Float, Frozen, Int, LayerError, Shape, _clip, _fmt, _fmt_shape, _Layer,
    _need_map,
    canonical_act, fmt_shape, pydantic_reason, show_value,
)
from convstudy.spec.residual import Residual

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

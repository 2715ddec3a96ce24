"""The residual block: a branch of layers whose output is added to its input, then an activation.

Where the branch changes the channels or the map size, the input reaches the sum through a 1x1 conv (with
bias, Keras's Conv2D defaults) of the stride that gives the branch's size, optionally followed by a
BatchNormalization: ResNet's projection shortcut. `skip = false` keeps the branch and the activation but
drops the addition, so a space can switch the skip connection with one factor.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from convstudy.spec.layer_base import Act, Bool, LayerError, Shape, _clip, _fmt_shape, _Layer


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
        from convstudy.spec.layers import parse_layer  # the parser knows every kind, this one included

        if isinstance(value, (str, bytes, dict)) or not isinstance(value, (list, tuple)):
            raise ValueError('a residual\'s layers is a list, e.g. ["conv(16,3,same)", "bn"]')
        out = []
        for j, item in enumerate(value, 1):
            try:
                out.append(parse_layer(item))
            except LayerError as exc:
                shown = item if isinstance(item, str) else item.get("type", "?") if isinstance(item, dict) else "?"
                raise ValueError(f"layer {j} {_clip(str(shown).strip())}: {exc}") from None
        if not out:
            raise ValueError("a residual block needs at least one layer")
        return tuple(out)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "layers": [layer.to_string() for layer in self.layers],
                **self.model_dump(exclude_defaults=True, exclude={"type", "layers"})}

    def branch_shapes(self, shape: Shape) -> list[Shape]:
        """Every branch layer's output shape; LayerError names the branch layer."""
        shapes = []
        for j, layer in enumerate(self.layers, 1):
            try:
                shape = layer.output_shape(shape)
            except LayerError as exc:
                raise LayerError(f"branch layer {j} {layer.to_string()}: {exc}") from None
            shapes.append(shape)
        return shapes

    def projection(self, shape: Shape) -> int | None:
        """The stride of the 1x1 projection shortcut, or None where the input is added as it is."""
        out = self.branch_shapes(shape)[-1]
        if not self.skip or out == shape:
            return None
        if len(out) != 3 or len(shape) != 3:
            raise LayerError(f"its branch turns {_fmt_shape(shape)} into {_fmt_shape(out)}; only feature maps "
                             "get a projection shortcut")
        h, w, _ = shape
        for stride in range(1, max(h, w) + 1):
            if (-(-h // stride), -(-w // stride)) == out[:2]:
                return stride
        raise LayerError(f"its branch turns {_fmt_shape(shape)} into {_fmt_shape(out)}, which no 1x1 strided "
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
            total, trainable = total + conv + 4 * c_out * self.projection_bn, trainable + conv + 2 * c_out * self.projection_bn
        return (total, trainable)

    def flops(self, shape: Shape) -> int:
        shapes = [shape, *self.branch_shapes(shape)]
        n = sum(layer.flops(s) for layer, s in zip(self.layers, shapes))
        if self.projection(shape) is not None:
            h, w, c = shapes[-1]
            n += 2 * shape[-1] * c * h * w
        return n

"""Layers that keep or flatten the shape: dropout, flatten, dense, the normalisations, activations, squeeze-excitation."""

from __future__ import annotations

import math
from typing import ClassVar, Literal

from pydantic import Field

from convstudy.spec.layer_base import Act, Float, Int, LayerError, Shape, _Layer, _need_map, fmt_shape


class Dropout(_Layer):
    type: Literal["dropout"] = "dropout"
    rate: Float = Field(ge=0.0, lt=1.0)
    positional: ClassVar[tuple[str, ...]] = ("rate",)


class Flatten(_Layer):
    type: Literal["flatten"] = "flatten"

    def output_shape(self, shape: Shape) -> Shape:
        return (math.prod(shape),)


class Dense(_Layer):
    """Keras Dense on a flat input; the model's last dense layer is the softmax classifier."""

    type: Literal["dense"] = "dense"
    units: Int = Field(ge=1, le=1 << 20)
    activation: Act = "relu"
    positional: ClassVar[tuple[str, ...]] = ("units", "activation")

    def output_shape(self, shape: Shape) -> Shape:
        if len(shape) != 1:
            raise LayerError(f"needs a flat input but gets {fmt_shape(shape)}; add flatten or gap before it")
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


class LayerNorm(_Layer):
    """Keras LayerNormalization (axis -1): each pixel's channels normalised, epsilon 1e-3 (PyTorch: 1e-5)."""

    type: Literal["ln"] = "ln"
    epsilon: Float = Field(default=1e-3, gt=0.0, lt=1.0)

    def params(self, shape: Shape) -> tuple[int, int]:
        return (2 * shape[-1], 2 * shape[-1])


class GroupNorm(_Layer):
    """Keras GroupNormalization: channels in `groups` groups, each normalised over its channels and the map."""

    type: Literal["gn"] = "gn"
    groups: Int = Field(default=32, ge=1, le=65536)
    epsilon: Float = Field(default=1e-3, gt=0.0, lt=1.0)
    positional: ClassVar[tuple[str, ...]] = ("groups",)

    def output_shape(self, shape: Shape) -> Shape:
        c = _need_map(shape, self)[2]
        if c % self.groups:
            raise LayerError(f"groups {self.groups} does not divide the {c} channels of {fmt_shape(shape)}")
        return shape

    def params(self, shape: Shape) -> tuple[int, int]:
        return (2 * shape[-1], 2 * shape[-1])


class Activation(_Layer):
    type: Literal["activation"] = "activation"
    fn: Act
    positional: ClassVar[tuple[str, ...]] = ("fn",)


class SqueezeExcite(_Layer):
    """Squeeze-and-excitation (EfficientNet's block): channel weights from the pooled map through a
    max(1, int(C * ratio))-unit bottleneck (1x1 convs, `activation` then sigmoid), multiplied in."""

    type: Literal["se"] = "se"
    ratio: Float = Field(default=0.25, gt=0.0, le=1.0)
    activation: Act = "relu"
    positional: ClassVar[tuple[str, ...]] = ("ratio", "activation")

    def squeeze(self, channels: int) -> int:
        return max(1, int(channels * self.ratio))

    def output_shape(self, shape: Shape) -> Shape:
        return _need_map(shape, self)

    def params(self, shape: Shape) -> tuple[int, int]:
        c, r = shape[-1], self.squeeze(shape[-1])
        n = c * r + r + r * c + c
        return (n, n)

    def flops(self, shape: Shape) -> int:
        c, r = shape[-1], self.squeeze(shape[-1])
        return 2 * 2 * c * r

"""Layers over feature maps: convolutions (full, grouped, depthwise, separable) and pooling (windowed, global)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from convstudy.spec.layer_base import Act, Bool, Int, LayerError, Shape, _Layer, _need_map, fmt_shape

_Padding = Literal["valid", "same"]


def window_shape(layer: _Layer, shape: Shape, kernel: int, stride: int, padding: str, channels: int) -> Shape:
    """Output of a square window sliding with `stride`: Keras's 'same' is ceil(H / stride) whatever the kernel."""
    h, w, _ = _need_map(shape, layer)
    if padding == "same":
        return (-(-h // stride), -(-w // stride), channels)
    if h < kernel or w < kernel:
        raise LayerError(f"input {fmt_shape(shape)} is smaller than the {kernel}x{kernel} kernel")
    return ((h - kernel) // stride + 1, (w - kernel) // stride + 1, channels)


class Conv(_Layer):
    """Keras Conv2D: square kernel, 'valid' or 'same' padding, ReLU unless told otherwise; `groups` splits the
    channels into groups that do not mix (ResNeXt), which must divide both the input channels and `filters`."""

    type: Literal["conv"] = "conv"
    filters: Int = Field(ge=1, le=65536)
    kernel: Int = Field(ge=1, le=1024)
    padding: _Padding = "valid"
    stride: Int = Field(default=1, ge=1, le=1024)
    activation: Act = "relu"
    groups: Int = Field(default=1, ge=1, le=65536)
    use_bias: Bool = True
    positional: ClassVar[tuple[str, ...]] = ("filters", "kernel", "padding")

    @model_validator(mode="after")
    def _groups(self) -> "Conv":
        if self.filters % self.groups:
            raise ValueError(f"groups {self.groups} does not divide filters {self.filters}")
        return self

    def output_shape(self, shape: Shape) -> Shape:
        out = window_shape(self, shape, self.kernel, self.stride, self.padding, self.filters)
        if shape[-1] % self.groups:
            raise LayerError(f"groups {self.groups} does not divide the {shape[-1]} input channels")
        return out

    def params(self, shape: Shape) -> tuple[int, int]:
        n = self.kernel * self.kernel * (shape[-1] // self.groups) * self.filters + self.filters * self.use_bias
        return (n, n)

    def flops(self, shape: Shape) -> int:
        h, w, _ = self.output_shape(shape)
        return 2 * self.kernel * self.kernel * (shape[-1] // self.groups) * self.filters * h * w


class DepthwiseConv(_Layer):
    """Keras DepthwiseConv2D: each input channel convolved on its own into `multiplier` output channels."""

    type: Literal["dwconv"] = "dwconv"
    kernel: Int = Field(ge=1, le=1024)
    padding: _Padding = "valid"
    stride: Int = Field(default=1, ge=1, le=1024)
    multiplier: Int = Field(default=1, ge=1, le=1024)
    activation: Act = "relu"
    use_bias: Bool = True
    positional: ClassVar[tuple[str, ...]] = ("kernel", "padding")

    def output_shape(self, shape: Shape) -> Shape:
        return window_shape(self, shape, self.kernel, self.stride, self.padding, shape[-1] * self.multiplier)

    def params(self, shape: Shape) -> tuple[int, int]:
        c = shape[-1] * self.multiplier
        n = self.kernel * self.kernel * c + c * self.use_bias
        return (n, n)

    def flops(self, shape: Shape) -> int:
        h, w, c = self.output_shape(shape)
        return 2 * self.kernel * self.kernel * c * h * w


class SeparableConv(_Layer):
    """Keras SeparableConv2D (MobileNet): a depthwise conv without bias, then a 1x1 conv to `filters`."""

    type: Literal["sepconv"] = "sepconv"
    filters: Int = Field(ge=1, le=65536)
    kernel: Int = Field(ge=1, le=1024)
    padding: _Padding = "valid"
    stride: Int = Field(default=1, ge=1, le=1024)
    multiplier: Int = Field(default=1, ge=1, le=1024)
    activation: Act = "relu"
    use_bias: Bool = True
    positional: ClassVar[tuple[str, ...]] = ("filters", "kernel", "padding")

    def output_shape(self, shape: Shape) -> Shape:
        return window_shape(self, shape, self.kernel, self.stride, self.padding, self.filters)

    def params(self, shape: Shape) -> tuple[int, int]:
        mid = shape[-1] * self.multiplier
        n = self.kernel * self.kernel * mid + mid * self.filters + self.filters * self.use_bias
        return (n, n)

    def flops(self, shape: Shape) -> int:
        h, w, _ = self.output_shape(shape)
        mid = shape[-1] * self.multiplier
        return 2 * (self.kernel * self.kernel * mid + mid * self.filters) * h * w


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
            raise LayerError(f"input {fmt_shape(shape)} is smaller than the {self.size}x{self.size} pool window")
        s = self.stride or self.size
        return ((h - self.size) // s + 1, (w - self.size) // s + 1, c)


class GlobalAvgPool(_Layer):
    """Keras GlobalAveragePooling2D: each channel's mean over the map, a flat (C,) vector."""

    type: Literal["gap"] = "gap"

    def output_shape(self, shape: Shape) -> Shape:
        return (_need_map(shape, self)[2],)


class GlobalMaxPool(_Layer):
    """Keras GlobalMaxPooling2D: each channel's maximum over the map, a flat (C,) vector."""

    type: Literal["gmp"] = "gmp"

    def output_shape(self, shape: Shape) -> Shape:
        return (_need_map(shape, self)[2],)

"""One torch builder per layer kind (`MODULES`), with the modules Keras has and PyTorch spells differently.

A builder takes the layer record, its input shape (H, W, C) and whether it is the model's classifier, and
returns the modules in order; `build_model` chains them. Keras's initialisers are applied afterwards by
`keras_init`, which reads the fans Keras would use (a depthwise kernel's differ from PyTorch's).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from convstudy.model.conv import Conv2d
from convstudy.spec.layers import (
    BatchNorm, Conv, Dense, DepthwiseConv, Pool, Residual, SeparableConv, Shape,
)

ACT: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "elu": nn.ELU, "selu": nn.SELU, "gelu": nn.GELU,
    "softplus": nn.Softplus, "softmax": lambda: nn.Softmax(dim=1), "linear": nn.Identity, "silu": nn.SiLU,
    "hardswish": nn.Hardswish, "mish": nn.Mish, "relu6": nn.ReLU6,
    "leaky_relu": lambda: nn.LeakyReLU(0.2),  # Keras's activation default; PyTorch's is 0.01
    "softsign": nn.Softsign,
    "hard_sigmoid": nn.Hardsigmoid,  # Keras 3's relu6(x + 3) / 6; Keras 2's was 0.2x + 0.5
}


def same_pads(shape: Shape, kernel: int, stride: int) -> tuple[int, int, int, int]:
    """TensorFlow's 'same' padding of an (H, W, C) input as (left, right, top, bottom): the odd pixel goes
    bottom/right. Fixed at build time: traced from the tensor's shape, the ceil division became ONNX's
    truncating Div and the exported graph padded too little."""
    h, w = shape[0], shape[1]
    ph = max((-(-h // stride) - 1) * stride + kernel - h, 0)
    pw = max((-(-w // stride) - 1) * stride + kernel - w, 0)
    return pw // 2, pw - pw // 2, ph // 2, ph - ph // 2


class ChannelsLastFlatten(nn.Flatten):
    """nn.Flatten whose gradient goes back in its input's channels_last layout (same values).

    Flattening an NHWC-stored tensor in NCHW order copies it, and the copy's gradient comes back NCHW;
    on the CPU, max pooling's backward then converted layouts twice at full size (k3-1: ~10% of a
    fp32 step, docs/benchmarks.md). Converting the small flattened gradient once instead is cheaper.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.requires_grad and x.dim() == 4 and x.device.type == "cpu" and not x.is_contiguous()
                and x.is_contiguous(memory_format=torch.channels_last)):
            x.register_hook(lambda g: g.contiguous(memory_format=torch.channels_last))
        return super().forward(x)


class Dropout(nn.Dropout):
    """nn.Dropout that can draw its mask as Keras does: keep where a uniform draw is >= the rate.

    With `uniform` (the train stage's choice, on CPUs where it measured faster) the mask comes from
    `torch.rand_like` instead of `bernoulli_`: the same distribution and scaling, other draws. On the
    AMD EPYC, MKL's Bernoulli sampler took 2x-3x as long as a uniform draw (docs/benchmarks.md).
    """

    uniform: bool = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.uniform and self.training and 0.0 < self.p < 1.0):
            return super().forward(x)
        # Drawn in float32 whatever x is, so a bf16 activation keeps a float32 draw's keep probability.
        noise = torch.rand_like(x, dtype=torch.float32).ge_(self.p).mul_(1.0 / (1.0 - self.p))
        return x * noise.to(x.dtype)


class DepthwiseConv2d(Conv2d):
    """A depthwise Conv2d: Keras's kernel is (k, k, C, multiplier), so its glorot fans are k*k*C and k*k*multiplier."""

    def keras_fans(self) -> tuple[int, int]:
        rf = self.kernel_size[0] * self.kernel_size[1]
        return rf * self.in_channels, rf * (self.out_channels // self.in_channels)


class ChannelLayerNorm(nn.LayerNorm):
    """Keras LayerNormalization(axis=-1) on NCHW maps: each pixel's C channels normalised."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return super().forward(x)


class SqueezeExcitation(nn.Module):
    """x * sigmoid(conv1x1(act(conv1x1(mean over the map)))), EfficientNet's block."""

    def __init__(self, channels: int, squeeze: int, activation: str) -> None:
        super().__init__()
        self.reduce, self.act = nn.Conv2d(channels, squeeze, 1), ACT[activation]()
        self.expand = nn.Conv2d(squeeze, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.expand(self.act(self.reduce(s))))


class ResidualBlock(nn.Module):
    """act(branch(x) + shortcut(x)); `shortcut` is None for the identity, and `skip` False drops the sum."""

    def __init__(self, branch: nn.Sequential, shortcut: nn.Module | None, act: nn.Module, skip: bool) -> None:
        super().__init__()
        self.branch, self.shortcut, self.act, self.skip = branch, shortcut, act, skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.branch(x)
        if self.skip:
            y = y + (x if self.shortcut is None else self.shortcut(x))
        return self.act(y)


def _window(shape: Shape, kernel: int, stride: int, padding: str) -> tuple[list[nn.Module], str | int]:
    """Keras's 'same' with a stride pads bottom/right first, which PyTorch's symmetric padding cannot say (and
    torch's padding="same" refuses strides), so the pad is its own module: one ONNX Pad node."""
    if padding == "same" and stride > 1:
        return [nn.ZeroPad2d(same_pads(shape, kernel, stride))], 0
    return [], padding


def _conv(layer: Conv, shape: Shape, last: bool) -> list[nn.Module]:
    pad, padding = _window(shape, layer.kernel, layer.stride, layer.padding)
    return [*pad, Conv2d(shape[-1], layer.filters, layer.kernel, stride=layer.stride, padding=padding,
                         groups=layer.groups, bias=layer.use_bias), ACT[layer.activation]()]


def _dwconv(layer: DepthwiseConv, shape: Shape, last: bool) -> list[nn.Module]:
    pad, padding = _window(shape, layer.kernel, layer.stride, layer.padding)
    c = shape[-1]
    return [*pad, DepthwiseConv2d(c, c * layer.multiplier, layer.kernel, stride=layer.stride, padding=padding,
                                  groups=c, bias=layer.use_bias), ACT[layer.activation]()]


def _sepconv(layer: SeparableConv, shape: Shape, last: bool) -> list[nn.Module]:
    pad, padding = _window(shape, layer.kernel, layer.stride, layer.padding)
    c, mid = shape[-1], shape[-1] * layer.multiplier
    return [*pad, DepthwiseConv2d(c, mid, layer.kernel, stride=layer.stride, padding=padding, groups=c, bias=False),
            Conv2d(mid, layer.filters, 1, bias=layer.use_bias), ACT[layer.activation]()]


def _pool(layer: Pool, shape: Shape, last: bool) -> list[nn.Module]:
    cls = nn.MaxPool2d if layer.mode == "max" else nn.AvgPool2d
    return [cls(layer.size, stride=layer.stride or layer.size)]


def _dense(layer: Dense, shape: Shape, last: bool) -> list[nn.Module]:
    # The classifier's softmax is fused into the loss; `predict_proba` applies it.
    return [nn.Linear(shape[0], layer.units), *([] if last else [ACT[layer.activation]()])]


def _bn(layer: BatchNorm, shape: Shape, last: bool) -> list[nn.Module]:
    cls = nn.BatchNorm2d if len(shape) == 3 else nn.BatchNorm1d
    # Keras momentum m keeps m of the old running value; PyTorch's momentum is the new value's share.
    return [cls(shape[-1], eps=layer.epsilon, momentum=1.0 - layer.momentum)]


def _residual(layer: Residual, shape: Shape, last: bool) -> list[nn.Module]:
    branch = chain(layer.layers, shape)
    stride = layer.projection(shape)
    shortcut = None
    if stride is not None:
        c_out = layer.output_shape(shape)[-1]
        proj: list[nn.Module] = [Conv2d(shape[-1], c_out, 1, stride=stride)]
        if layer.projection_bn:
            proj.append(nn.BatchNorm2d(c_out, eps=1e-3, momentum=0.01))
        shortcut = nn.Sequential(*proj)
    return [ResidualBlock(branch, shortcut, ACT[layer.activation](), layer.skip)]


MODULES: dict[str, Callable[..., list[nn.Module]]] = {
    "conv": _conv, "dwconv": _dwconv, "sepconv": _sepconv, "pool": _pool,
    "gap": lambda layer, shape, last: [nn.AdaptiveAvgPool2d(1), nn.Flatten()],
    "gmp": lambda layer, shape, last: [nn.AdaptiveMaxPool2d(1), nn.Flatten()],
    "dropout": lambda layer, shape, last: [Dropout(layer.rate)],
    "flatten": lambda layer, shape, last: [ChannelsLastFlatten()],
    "dense": _dense, "bn": _bn,
    "ln": lambda layer, shape, last: [ChannelLayerNorm(shape[-1], eps=layer.epsilon)],
    "gn": lambda layer, shape, last: [nn.GroupNorm(layer.groups, shape[-1], eps=layer.epsilon)],
    "activation": lambda layer, shape, last: [ACT[layer.fn]()],
    "se": lambda layer, shape, last: [SqueezeExcitation(shape[-1], layer.squeeze(shape[-1]), layer.activation)],
    "residual": _residual,
}


def chain(layers, input_shape: Shape, classifier: bool = False) -> nn.Sequential:
    """The modules of `layers` on `input_shape`, in order; with `classifier`, the last one is the logits layer."""
    mods: list[nn.Module] = []
    shape = tuple(input_shape)
    for i, layer in enumerate(layers):
        mods += MODULES[layer.type](layer, shape, classifier and i == len(layers) - 1)
        shape = layer.output_shape(shape)
    return nn.Sequential(*mods)


def _glorot(weight: torch.Tensor, fan_in: int, fan_out: int) -> None:
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    nn.init.uniform_(weight, -bound, bound)


def keras_init(model: nn.Module) -> None:
    """glorot_uniform kernels and zero biases, as Keras does (PyTorch's default is kaiming_uniform)."""
    for mod in model.modules():
        if isinstance(mod, DepthwiseConv2d):
            _glorot(mod.weight, *mod.keras_fans())
        elif isinstance(mod, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(mod.weight)
        if isinstance(mod, (nn.Conv2d, nn.Linear)) and mod.bias is not None:
            nn.init.zeros_(mod.bias)

"""Model stage: a ModelSpec becomes a torch module with Keras 2's initialisation and layer semantics.

The network returns logits; the final softmax of the spec is fused into the loss (cross-entropy on
logits equals Keras's categorical cross-entropy on softmax outputs) and applied by `predict_proba`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from convstudy.model.conv import Conv2d
from convstudy.model.stack import member_tensors, stack_modules, stack_tensors  # noqa: F401  (public)
from convstudy.spec import ModelSpec, fmt_shape
from convstudy.spec.layers import Activation, BatchNorm, Conv, Dense, Dropout, Flatten, Pool, Shape

_ACT = {
    "relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "elu": nn.ELU, "selu": nn.SELU, "gelu": nn.GELU,
    "softplus": nn.Softplus, "softmax": lambda: nn.Softmax(dim=1), "linear": nn.Identity,
}


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


class SamePad(nn.Module):
    """TensorFlow's 'same' padding for strided convs: the odd pixel goes bottom/right."""

    def __init__(self, kernel: int, stride: int) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph = max((-(-h // self.stride) - 1) * self.stride + self.kernel - h, 0)
        pw = max((-(-w // self.stride) - 1) * self.stride + self.kernel - w, 0)
        return nn.functional.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))


def build_model(spec: ModelSpec, input_shape: Shape, dft: tuple[str, ...] = ()) -> nn.Sequential:
    """The torch module for `spec` on (H, W, C) inputs; the classifier's softmax is left to the loss.

    `dft` names the convolution modules (their index in the Sequential) that compute as DFT matrix
    products (model.conv); the train stage chooses them, everything else reads a plain convolution.
    """
    shapes = spec.shapes(input_shape)
    mods: list[nn.Module] = []
    shape = tuple(input_shape)
    last = len(spec.layers) - 1
    for i, (layer, out) in enumerate(zip(spec.layers, shapes)):
        if isinstance(layer, Conv):
            if layer.padding == "same" and layer.stride > 1:
                mods.append(SamePad(layer.kernel, layer.stride))
                pad: str | int = 0
            else:
                pad = layer.padding
            mods.append(Conv2d(shape[-1], layer.filters, layer.kernel, stride=layer.stride, padding=pad,
                               algorithm="dft" if str(len(mods)) in dft else "direct"))
            mods.append(_ACT[layer.activation]())
        elif isinstance(layer, Pool):
            cls = nn.MaxPool2d if layer.mode == "max" else nn.AvgPool2d
            mods.append(cls(layer.size, stride=layer.stride or layer.size))
        elif isinstance(layer, Dropout):
            mods.append(nn.Dropout(layer.rate))
        elif isinstance(layer, Flatten):
            mods.append(ChannelsLastFlatten())
        elif isinstance(layer, Dense):
            mods.append(nn.Linear(shape[0], layer.units))
            if i != last:
                mods.append(_ACT[layer.activation]())
        elif isinstance(layer, BatchNorm):
            cls = nn.BatchNorm2d if len(shape) == 3 else nn.BatchNorm1d
            # Keras momentum m keeps m of the old running value; PyTorch's momentum is the new value's share.
            mods.append(cls(shape[-1], eps=layer.epsilon, momentum=1.0 - layer.momentum))
        elif isinstance(layer, Activation):
            mods.append(_ACT[layer.fn]())
        else:  # pragma: no cover - the spec registry and this function grow together
            raise TypeError(f"no module for layer type {layer.type}")
        shape = out
    model = nn.Sequential(*mods)
    keras_init(model)
    return model


def keras_init(model: nn.Module) -> None:
    """glorot_uniform kernels and zero biases, as Keras does (PyTorch's default is kaiming_uniform)."""
    for mod in model.modules():
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(mod.weight)
            nn.init.zeros_(mod.bias)


def predict_proba(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Class probabilities for float inputs in [0, 1], NCHW."""
    return torch.softmax(model(x).float(), dim=1)


@dataclass(frozen=True)
class SummaryRow:
    index: int
    layer: str
    output_shape: str
    params: int


@dataclass(frozen=True)
class Summary:
    """What Keras's `model.summary()` shows, computed from the spec alone."""

    rows: tuple[SummaryRow, ...]
    total_params: int
    trainable_params: int
    flops: int  # forward FLOPs per sample

    @property
    def mflops(self) -> float:
        return self.flops / 1e6


def summarize_model(spec: ModelSpec, input_shape: Shape) -> Summary:
    """Per-layer output shapes and parameter counts (Keras's), plus forward FLOPs per sample."""
    rows, total, trainable, flops = [], 0, 0, 0
    shape = tuple(input_shape)
    for i, (layer, out) in enumerate(zip(spec.layers, spec.shapes(input_shape)), 1):
        p_total, p_train = layer.params(shape)
        flops += layer.flops(shape)
        rows.append(SummaryRow(i, layer.to_string(), fmt_shape(out), p_total))
        total, trainable, shape = total + p_total, trainable + p_train, out
    return Summary(tuple(rows), total, trainable, flops)


def count_params(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) counted the Keras way: BatchNorm running stats count in total only."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    buffers = sum(b.numel() for name, b in model.named_buffers() if not name.endswith("num_batches_tracked"))
    return trainable + buffers, trainable

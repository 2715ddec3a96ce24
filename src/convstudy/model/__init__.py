"""Model stage: a ModelSpec becomes a torch module with Keras 2's initialisation and layer semantics.

The network returns logits; the final softmax of the spec is fused into the loss (cross-entropy on
logits equals Keras's categorical cross-entropy on softmax outputs) and applied by `predict_proba`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from convstudy.model.blocks import ACT, MODULES, Dropout, chain, keras_init  # noqa: F401  (public)
from convstudy.model.conv import Conv2d
from convstudy.spec import ModelSpec, fmt_shape
from convstudy.spec.layers import Shape


def build_model(spec: ModelSpec, input_shape: Shape, dft: tuple[str, ...] = (),
                pool_first: bool = False, uniform_dropout: bool = False) -> nn.Sequential:
    """The torch module for `spec` on (H, W, C) inputs; the classifier's softmax is left to the loss.

    `dft` names the convolution modules (their `named_modules` names) that compute as DFT matrix
    products (model.conv); the train stage chooses them, everything else reads a plain convolution. `pool_first` max-pools before a ReLU that the spec puts in front of the
    pool: ReLU is monotone, so values and gradients are bitwise the same, on a quarter of the pixels.
    `uniform_dropout` draws dropout masks as Keras does (model.blocks.Dropout): same distribution, other draws.
    """
    spec.shapes(input_shape)  # a LayerError naming the layer before any module is made
    model = chain(spec.layers, input_shape, classifier=True)
    keras_init(model)
    for name, mod in model.named_modules():
        if name in dft and isinstance(mod, Conv2d):
            mod.algorithm = "dft"
        if isinstance(mod, Dropout):
            mod.uniform = uniform_dropout
    if pool_first:  # parameter-free modules trade places, so the state_dict's keys stay the same
        for i in range(len(model) - 1):
            if type(model[i]) is nn.ReLU and isinstance(model[i + 1], nn.MaxPool2d):
                model[i], model[i + 1] = model[i + 1], model[i]
    return model


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

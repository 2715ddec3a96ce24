"""The training loop, with Keras 2 fit() semantics and a data path that stays on the device.

Semantics (see docs/semantics.md): reshuffle every epoch, keep the last partial batch, report the
epoch's training loss/accuracy as the per-sample mean over its batches in training mode, validate
after each epoch in inference mode. Speed: the dataset sits on the device as uint8; shuffling is one
permutation per epoch, batches are slices, and metrics stay tensors until the epoch ends.
"""

from __future__ import annotations

import math
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from convstudy.model import build_model
from convstudy.spec import ModelSpec, OptimizerSpec, TrainSettings
from convstudy.spec.layers import Shape

EVAL_BATCH = 2048


@dataclass(frozen=True)
class Split:
    """Images as uint8 NCHW and int64 labels, both already on the training device."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass(frozen=True)
class TrialData:
    train: Split
    val: Split
    test: Split


@dataclass(frozen=True)
class EpochResult:
    epoch: int
    loss: float
    accuracy: float
    val_loss: float
    val_accuracy: float
    seconds: float


class Diverged(Exception):
    """Training produced a NaN or infinite loss at `epoch`."""

    def __init__(self, epoch: int) -> None:
        super().__init__(f"non-finite loss in epoch {epoch}")
        self.epoch = epoch


@dataclass
class TrainState:
    """Everything a trial needs to continue bit-identically: module, optimiser, RNGs, epochs done."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    shuffle: torch.Generator
    epoch: int = 0
    history: list[EpochResult] = field(default_factory=list)


def make_optimizer(spec: OptimizerSpec, params) -> torch.optim.Optimizer:
    """The torch optimiser for a spec; arguments use Keras 2's names and defaults."""
    a = spec.resolved()
    name = spec.name
    if name == "adadelta":
        return torch.optim.Adadelta(params, lr=a["lr"], rho=a["rho"], eps=a["eps"], weight_decay=a["weight_decay"])
    if name in ("adam", "adamw"):
        cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
        return cls(params, lr=a["lr"], betas=(a["beta1"], a["beta2"]), eps=a["eps"], weight_decay=a["weight_decay"])
    if name == "sgd":
        return torch.optim.SGD(params, lr=a["lr"], momentum=a["momentum"], weight_decay=a["weight_decay"])
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=a["lr"], alpha=a["rho"], eps=a["eps"], momentum=a["momentum"],
                                   weight_decay=a["weight_decay"])
    raise ValueError(f"no optimizer {name}")  # pragma: no cover - spec validation rejects unknown names


def seed_everything(seed: int) -> None:
    """Fix Python, NumPy and torch RNGs (all devices) for one trial."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def init_state(spec: ModelSpec, settings: TrainSettings, input_shape: Shape, seed: int,
               device: torch.device, channels_last: bool = False) -> TrainState:
    """A fresh trial: seeded weights on `device`, its optimiser, and its own shuffling generator."""
    seed_everything(seed)
    model = build_model(spec, input_shape).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(settings.optimizer, model.parameters())
    shuffle = torch.Generator().manual_seed(seed)
    return TrainState(model, optimizer, shuffle)


def autocast(device: torch.device, precision: str):
    """bf16 autocast for `precision == "bf16"`, nothing otherwise."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


def _to_input(xb: torch.Tensor, channels_last: bool) -> torch.Tensor:
    x = xb.to(torch.float32).mul_(1.0 / 255.0)  # the notebook's preprocessing: /255, no mean/std
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def train_one_epoch(state: TrainState, split: Split, batch_size: int, precision: str = "fp32",
                    channels_last: bool = False, on_batch: Callable[[int], None] | None = None) -> tuple[float, float]:
    """One pass in training mode; returns (mean loss, accuracy) over the epoch's samples."""
    model, opt = state.model, state.optimizer
    device = split.x.device
    model.train()
    perm = torch.randperm(len(split), generator=state.shuffle).to(device)
    xs, ys = split.x.index_select(0, perm), split.y.index_select(0, perm)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    for start in range(0, len(split), batch_size):
        xb = _to_input(xs[start:start + batch_size], channels_last)
        yb = ys[start:start + batch_size]
        with autocast(device, precision):
            logits = model(xb)
        loss = F.cross_entropy(logits.float(), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_sum += loss.detach() * yb.shape[0]
        correct += (logits.detach().argmax(1) == yb).sum()
        if on_batch is not None:
            on_batch(start + yb.shape[0])
    n = len(split)
    return loss_sum.item() / n, correct.item() / n


@torch.inference_mode()
def evaluate(model: nn.Module, split: Split, precision: str = "fp32", channels_last: bool = False,
             with_probs: bool = False) -> tuple[float, float, torch.Tensor | None]:
    """(mean loss, accuracy, probabilities or None) in inference mode, in large batches."""
    model.eval()
    device = split.x.device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    probs = []
    for start in range(0, len(split), EVAL_BATCH):
        xb = _to_input(split.x[start:start + EVAL_BATCH], channels_last)
        yb = split.y[start:start + EVAL_BATCH]
        with autocast(device, precision):
            logits = model(xb).float()
        loss_sum += F.cross_entropy(logits, yb, reduction="sum")
        correct += (logits.argmax(1) == yb).sum()
        if with_probs:
            probs.append(torch.softmax(logits, dim=1).cpu())
    n = len(split)
    return loss_sum.item() / n, correct.item() / n, (torch.cat(probs) if with_probs else None)


def fit(state: TrainState, settings: TrainSettings, data: TrialData, *, precision: str = "fp32",
        channels_last: bool = False, on_epoch: Callable[[EpochResult, TrainState], None] | None = None,
        should_stop: Callable[[], bool] = lambda: False, on_batch: Callable[[int], None] | None = None) -> TrainState:
    """Train from `state.epoch` to `settings.epochs`; `on_epoch` runs after each (checkpoint, log).

    Raises Diverged on a non-finite loss; returns early (state intact) when `should_stop()` says so.
    """
    for epoch in range(state.epoch + 1, settings.epochs + 1):
        t0 = time.perf_counter()
        loss, acc = train_one_epoch(state, data.train, settings.batch_size, precision, channels_last, on_batch)
        if not math.isfinite(loss):
            raise Diverged(epoch)
        val_loss, val_acc, _ = evaluate(state.model, data.val, precision, channels_last)
        if not math.isfinite(val_loss):
            raise Diverged(epoch)
        result = EpochResult(epoch, loss, acc, val_loss, val_acc, time.perf_counter() - t0)
        state.epoch = epoch
        state.history.append(result)
        if on_epoch is not None:
            on_epoch(result, state)
        if should_stop():
            break
    return state

"""The training loop, with Keras 2 fit() semantics and a data path that stays on the device.

Semantics (see docs/semantics.md): reshuffle every epoch, keep the last partial batch, report the
epoch's training loss/accuracy as the per-sample mean over its batches in training mode, validate
after each epoch in inference mode. Speed: the dataset sits on the device as uint8; shuffling is one
permutation per epoch, batches are slices, and metrics stay tensors until the epoch ends. On CUDA the
full-batch step (forward, backward, optimiser, metric sums) is one captured CUDA graph, because these
small models are bound by kernel-launch overhead, not arithmetic (docs/benchmarks.md).
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
from convstudy.train.device import choose_conv_algorithms, configure_backends

EVAL_BATCH = 2048
CUDA_GRAPHS = True  # module switch so a benchmark can time the eager CUDA path too
FOREACH: bool | None = None  # None: torch's default per device (multi-tensor on CUDA)
GRAPH_WARMUP = 3  # eager steps on a side stream before capture, as torch.cuda.graph requires


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
    # A cache, not state: rebuilt on demand, so checkpoints need not (and do not) hold it.
    graph: "GraphedStep | None" = field(default=None, repr=False, compare=False)


def make_optimizer(spec: OptimizerSpec, params, *, capturable: bool = False,
                   foreach: bool | None = None) -> torch.optim.Optimizer:
    """The torch optimiser for a spec; arguments use Keras 2's names and defaults.

    `capturable` keeps the step counters on the device so the step can live in a CUDA graph;
    `foreach` batches the per-parameter updates into a few multi-tensor kernels (same arithmetic).
    """
    a = spec.resolved()
    name = spec.name
    kw: dict = {"foreach": foreach}
    if capturable and name != "sgd":  # SGD keeps no step counter, so it needs no capturable mode
        kw["capturable"] = True
    if name == "adadelta":
        return torch.optim.Adadelta(params, lr=a["lr"], rho=a["rho"], eps=a["eps"], weight_decay=a["weight_decay"], **kw)
    if name in ("adam", "adamw"):
        cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
        return cls(params, lr=a["lr"], betas=(a["beta1"], a["beta2"]), eps=a["eps"], weight_decay=a["weight_decay"],
                   **kw)
    if name == "sgd":
        return torch.optim.SGD(params, lr=a["lr"], momentum=a["momentum"], weight_decay=a["weight_decay"], **kw)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=a["lr"], alpha=a["rho"], eps=a["eps"], momentum=a["momentum"],
                                   weight_decay=a["weight_decay"], **kw)
    raise ValueError(f"no optimizer {name}")  # pragma: no cover - spec validation rejects unknown names


def seed_everything(seed: int) -> None:
    """Fix Python, NumPy and torch RNGs (all devices) for one trial."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def init_state(spec: ModelSpec, settings: TrainSettings, input_shape: Shape, seed: int,
               device: torch.device, channels_last: bool = False, precision: str = "fp32") -> TrainState:
    """A fresh trial: seeded weights on `device`, its optimiser, and its own shuffling generator.

    `precision` only picks the convolution algorithms (choose_conv_algorithms); weights stay fp32.
    """
    seed_everything(seed)
    model = build_model(spec, input_shape).to(device)
    choose_conv_algorithms(model, device, precision)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(settings.optimizer, model.parameters(), capturable=device.type == "cuda",
                               foreach=FOREACH)
    shuffle = torch.Generator().manual_seed(seed)
    return TrainState(model, optimizer, shuffle)


def autocast(device: torch.device, precision: str):
    """bf16 autocast for `precision == "bf16"`, nothing otherwise."""
    if precision == "bf16":
        # No weight-cast cache: each weight is cast once per forward anyway, and CUDA graph capture forbids it.
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16, cache_enabled=False)
    return nullcontext()


def _to_input(xb: torch.Tensor, channels_last: bool) -> torch.Tensor:
    x = xb.to(torch.float32).mul_(1.0 / 255.0)  # the notebook's preprocessing: /255, no mean/std
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _step(model: nn.Module, opt: torch.optim.Optimizer, xb: torch.Tensor, yb: torch.Tensor, precision: str,
          channels_last: bool, loss_sum: torch.Tensor, correct: torch.Tensor) -> None:
    """One optimiser step on a batch whose gradients were already cleared; adds its metrics in place."""
    with autocast(xb.device, precision):
        logits = model(_to_input(xb, channels_last))
    loss = F.cross_entropy(logits.float(), yb)
    loss.backward()
    opt.step()
    loss_sum += loss.detach() * yb.shape[0]
    correct += (logits.detach().argmax(1) == yb).sum()


class GraphedStep:
    """A full-batch training step captured once as a CUDA graph and replayed on copied-in batches.

    `step(xb, yb, loss_sum, correct)` runs one optimiser step of `opt` (gradients already cleared) and
    adds its metrics in place; the graph replays it on this object's own batch and metric tensors.
    """

    def __init__(self, model: nn.Module, opt: torch.optim.Optimizer, xs: torch.Tensor, ys: torch.Tensor,
                 batch_size: int, step: Callable[..., None], loss_sum: torch.Tensor, correct: torch.Tensor) -> None:
        """Runs the first GRAPH_WARMUP batches of `xs`/`ys` as real (eager) steps, then captures."""
        self.x = torch.empty_like(xs[:batch_size])
        self.y = torch.empty_like(ys[:batch_size])
        self.loss_sum = torch.zeros_like(loss_sum)
        self.correct = torch.zeros_like(correct)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for i in range(GRAPH_WARMUP):
                sl = slice(i * batch_size, (i + 1) * batch_size)
                opt.zero_grad(set_to_none=True)
                step(xs[sl], ys[sl], loss_sum, correct)
        torch.cuda.current_stream().wait_stream(side)
        opt.zero_grad(set_to_none=True)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            step(self.x, self.y, self.loss_sum, self.correct)

    def __call__(self, xb: torch.Tensor, yb: torch.Tensor) -> None:
        self.x.copy_(xb)
        self.y.copy_(yb)
        self.graph.replay()


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

    def step(xb: torch.Tensor, yb: torch.Tensor, ls: torch.Tensor, cor: torch.Tensor) -> None:
        _step(model, opt, xb, yb, precision, channels_last, ls, cor)

    run_batches(state, xs, ys, batch_size, step, loss_sum, correct, on_batch)
    n = len(split)
    return loss_sum.item() / n, correct.item() / n


def run_batches(state, xs: torch.Tensor, ys: torch.Tensor, batch_size: int, step: Callable[..., None],
                loss_sum: torch.Tensor, correct: torch.Tensor, on_batch: Callable[[int], None] | None = None) -> None:
    """One epoch's optimiser steps over the shuffled `xs`/`ys`, adding the metrics into `loss_sum`/`correct`.

    `state` has `.model`, `.optimizer` and `.graph` (a TrainState or a cohort). On CUDA the full-batch
    step is captured once as `state.graph` and replayed; the last partial batch runs eagerly.
    """
    model, opt = state.model, state.optimizer
    n = ys.shape[0]
    first = 0
    if xs.device.type == "cuda" and CUDA_GRAPHS and state.graph is None and n // batch_size > GRAPH_WARMUP:
        state.graph = GraphedStep(model, opt, xs, ys, batch_size, step, loss_sum, correct)
        first = GRAPH_WARMUP * batch_size
        if on_batch is not None:
            on_batch(first)
    if state.graph is not None:
        state.graph.loss_sum.zero_()
        state.graph.correct.zero_()
    for start in range(first, n, batch_size):
        xb, yb = xs[start:start + batch_size], ys[start:start + batch_size]
        if state.graph is not None and yb.shape[0] == batch_size:
            state.graph(xb, yb)
        else:
            opt.zero_grad(set_to_none=True)
            step(xb, yb, loss_sum, correct)
        if on_batch is not None:
            on_batch(start + yb.shape[0])
    if state.graph is not None:
        loss_sum += state.graph.loss_sum
        correct += state.graph.correct


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
    configure_backends(data.train.x.device)
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

"""The pieces of a trial's loop (`executors.trial.run_trial`): the optimiser, the seeded start, the step
(`train_step`, wrapped in `CudaGraph` on CUDA), evaluation.

Semantics (docs/semantics.md): Keras 2 fit(): reshuffle every epoch, keep the last partial batch, report
the epoch's training loss/accuracy as the per-sample mean over its batches in training mode, validate
after each epoch in inference mode. Speed: the dataset sits on the device as uint8; shuffling is one
permutation per epoch, batches are slices, and metrics stay tensors until the epoch ends.
"""

from __future__ import annotations

import json
import random
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from convstudy.model import build_model
from convstudy.spec import ModelSpec, OptimizerSpec, Shape, TrainSettings
from convstudy.train.augment import seeded_generator
from convstudy.train.device import Plan
from convstudy.train.state import TrainState

Step = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], None]

EVAL_BATCH = 2048
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
        return torch.optim.SGD(params, lr=a["lr"], momentum=a["momentum"], weight_decay=a["weight_decay"],
                               nesterov=bool(a.get("nesterov", False)), **kw)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=a["lr"], alpha=a["rho"], eps=a["eps"], momentum=a["momentum"],
                                   weight_decay=a["weight_decay"], **kw)
    raise ValueError(f"no optimizer {name}")  # pragma: no cover - spec validation rejects unknown names


def seed_everything(seed: int) -> None:
    """Fix Python, NumPy and torch RNGs (all devices) for one trial."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def init_state(spec: ModelSpec, settings: TrainSettings, input_shape: Shape, seed: int, plan: Plan) -> TrainState:
    """A fresh trial: seeded weights on the plan's device, its optimiser, its own shuffling generator and,
    with augmentation, its own augmentation generator on the device."""
    seed_everything(seed)
    device = torch.device(plan.device)
    model = build_model(spec, input_shape, dft=plan.dft, pool_first=plan.pool_first,
                        uniform_dropout=plan.uniform_dropout).to(device)
    if plan.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(settings.optimizer, model.parameters(), capturable=device.type == "cuda",
                               foreach=plan.foreach)
    shuffle = torch.Generator().manual_seed(seed)
    augment = seeded_generator(seed, device) if settings.augment else None
    return TrainState(model, optimizer, shuffle, augment=augment)


def channel_stats(x: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std (population) of uint8 images (N, C, H, W) scaled to [0, 1], shaped (1, C, 1, 1),
    float32 on the images' device; summed in float64, in chunks, so large splits need little memory."""
    c = x.shape[1]
    s1 = torch.zeros(c, dtype=torch.float64, device=x.device)
    s2 = torch.zeros(c, dtype=torch.float64, device=x.device)
    for start in range(0, x.shape[0], chunk):
        part = x[start:start + chunk].to(torch.float64).div_(255.0)
        s1 += part.sum((0, 2, 3))
        s2 += part.square().sum((0, 2, 3))
    count = x.shape[0] * x.shape[2] * x.shape[3]
    mean = s1 / count
    std = (s2 / count - mean.square()).clamp_min(0).sqrt().clamp_min(1e-6)
    return mean.float().view(1, c, 1, 1), std.float().view(1, c, 1, 1)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, plan: Plan,
               norm: tuple[torch.Tensor, torch.Tensor] | None, label_smoothing: float) -> Step:
    """`step(xb, yb, loss_sum, correct)`: forward, backward and `optimizer.step()` on one uint8 batch; adds the
    batch's summed loss and its correct count to the epoch's sums in place (tensors: no host sync)."""

    def step(xb: torch.Tensor, yb: torch.Tensor, loss_sum: torch.Tensor, correct: torch.Tensor) -> None:
        with autocast(xb.device, plan.precision):
            logits = model(to_input(xb, plan.channels_last, norm))
        loss = F.cross_entropy(logits.float(), yb, label_smoothing=label_smoothing)
        loss.backward()
        optimizer.step()
        loss_sum += loss.detach() * yb.shape[0]
        correct += (logits.detach().argmax(1) == yb).sum()

    return step


class CudaGraph:
    """A step replayed as one captured CUDA graph for every full batch; the last, partial one runs eagerly.

    These small models are bound by kernel-launch overhead (docs/benchmarks.md). The first GRAPH_WARMUP full
    batches run eagerly on a side stream, as torch.cuda.graph requires; the next is captured and every later
    full batch replays it. The caller clears the gradients after every step (set to None), so the captured
    backward writes them afresh.
    """

    def __init__(self, step: Step, batch_size: int) -> None:
        self.step, self.batch_size, self.warm = step, batch_size, 0
        self.side: torch.cuda.Stream | None = None
        self.graph: torch.cuda.CUDAGraph | None = None

    def __call__(self, xb: torch.Tensor, yb: torch.Tensor, loss_sum: torch.Tensor, correct: torch.Tensor) -> None:
        if yb.shape[0] != self.batch_size:
            self.step(xb, yb, loss_sum, correct)
        elif self.warm < GRAPH_WARMUP:
            self.side = self.side or torch.cuda.Stream()
            self.side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self.side):
                self.step(xb, yb, loss_sum, correct)
            torch.cuda.current_stream().wait_stream(self.side)
            self.warm += 1
        else:
            if self.graph is None:
                self.io = (torch.empty_like(xb), torch.empty_like(yb), torch.zeros_like(loss_sum),
                           torch.zeros_like(correct))
                self.graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(self.graph):
                    self.step(*self.io)
            x, y, batch_loss, batch_correct = self.io
            x.copy_(xb)
            y.copy_(yb)
            batch_loss.zero_()
            batch_correct.zero_()
            self.graph.replay()
            loss_sum += batch_loss
            correct += batch_correct


def cpu_weights(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A finished model's weights and buffers as contiguous CPU tensors, ready for safetensors."""
    return {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}


def autocast(device: torch.device, precision: str):
    """bf16 autocast for `precision == "bf16"`, nothing otherwise."""
    if precision == "bf16":
        # No weight-cast cache: each weight is cast once per forward anyway, and CUDA graph capture forbids it.
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16, cache_enabled=False)
    return nullcontext()


def norm_meta(norm: tuple[torch.Tensor, torch.Tensor] | None) -> dict[str, str]:
    """Checkpoint metadata recording per-channel normalisation (nothing for /255)."""
    if norm is None:
        return {}
    return {"normalize": json.dumps({"mean": norm[0].reshape(-1).tolist(), "std": norm[1].reshape(-1).tolist()})}


def norm_from_meta(meta: dict[str, str]) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The per-channel (mean, std), shaped (1, C, 1, 1) on the CPU, that `norm_meta` recorded; None for /255.
    float32 -> JSON -> float32 round-trips exactly, so the numbers are the training run's own."""
    if "normalize" not in meta:
        return None
    stats = json.loads(meta["normalize"])
    return tuple(torch.tensor(stats[k], dtype=torch.float32).view(1, -1, 1, 1) for k in ("mean", "std"))


def to_input(xb: torch.Tensor, channels_last: bool,
             norm: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """uint8 images to the network's float input: the notebook's preprocessing, /255 and no mean/std;
    with `norm` (per-channel mean, std of the training split, on [0, 1]) also standardised."""
    x = xb.to(torch.float32).mul_(1.0 / 255.0)
    if norm is not None:
        x = x.sub_(norm[0]).div_(norm[1])
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@torch.inference_mode()
def evaluate(model: nn.Module, split: Split, precision: str = "fp32", channels_last: bool = False,
             with_probs: bool = False, norm: tuple[torch.Tensor, torch.Tensor] | None = None,
             ) -> tuple[float, float, torch.Tensor | None]:
    """(mean loss, accuracy, probabilities or None) in inference mode, in large batches; never augmented,
    and the loss is plain cross-entropy (no label smoothing), comparable across recipes."""
    model.eval()
    device = split.x.device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    probs = []
    for start in range(0, len(split), EVAL_BATCH):
        xb = to_input(split.x[start:start + EVAL_BATCH], channels_last, norm)
        yb = split.y[start:start + EVAL_BATCH]
        with autocast(device, precision):
            logits = model(xb).float()
        loss_sum += F.cross_entropy(logits, yb, reduction="sum")
        correct += (logits.argmax(1) == yb).sum()
        if with_probs:
            probs.append(torch.softmax(logits, dim=1).cpu())
    n = len(split)
    return loss_sum.item() / n, correct.item() / n, (torch.cat(probs) if with_probs else None)

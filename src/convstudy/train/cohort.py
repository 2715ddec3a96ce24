"""Training the seeds of one model together: S copies stacked into one wider network.

Small CNNs leave a GPU (and, less so, a CPU) idle between kernel launches. Stacking S seeds makes
every layer one S-times-wider layer whose members never mix: convolutions become grouped (group s is
seed s's channels), dense layers batched matmuls, batch norms per-member channels. Each member sees
its own shuffling and its own batches, starts from its own seeded weights, and its loss is a separate
term, so its gradients and its (element-wise) optimiser updates are those of a lone trial. What is
shared: dropout masks come from one RNG stream and the arithmetic of grouped ops rounds differently,
so a member's numbers match a lone trial's statistically, not bit for bit (docs/semantics.md).

Every parameter, buffer and optimiser slot of the stack is the members' tensors concatenated along
dim 0, so a member's checkpoint is a slice and loads into a lone trial's model unchanged.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from convstudy.model.conv import Conv2d
from convstudy.spec import ModelSpec, TrainSettings
from convstudy.spec.layers import Shape
from convstudy.train.loop import (
    EpochResult, GraphedStep, Split, TrainState, TrialData, _to_input, autocast, init_state, make_optimizer,
    run_batches,
)
from convstudy.train.device import configure_backends
from convstudy.train import loop as _loop
from convstudy.train.state import pack_state

SHARED = "num_batches_tracked"  # a buffer every member has the same value of


class StackedFlatten(nn.Module):
    """(N, S*C, H, W) -> (N, S, C*H*W): each member's features flattened in its own (C, H, W) order."""

    def __init__(self, members: int) -> None:
        super().__init__()
        self.members = members

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], self.members, -1)


class StackedLinear(nn.Linear):
    """S independent Linear layers on (N, S, in); weight is (S*out, in), the members' weights stacked."""

    def __init__(self, members: int, in_features: int, out_features: int) -> None:
        super().__init__(in_features, members * out_features)
        self.members = members

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.members
        w = self.weight.view(s, -1, self.in_features)
        y = torch.bmm(x.transpose(0, 1), w.transpose(1, 2))  # (S, N, out)
        return y.transpose(0, 1) + self.bias.view(s, -1)


class StackedBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d over (N, S, F) as S*F channels, so each member keeps its own statistics."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.reshape(x.shape[0], -1)).view_as(x)


def stack_modules(members: list[nn.Sequential]) -> nn.Sequential:
    """One Sequential computing all `members` side by side; module names match a member's."""
    with torch.random.fork_rng(devices=[]):  # new modules draw init weights we overwrite: keep dropout's RNG
        return _stack_modules(members)


def _stack_modules(members: list[nn.Sequential]) -> nn.Sequential:
    s = len(members)
    mods: list[nn.Module] = []
    for layers in zip(*members):
        first = layers[0]
        if isinstance(first, nn.Conv2d):
            if first.groups != 1:
                raise ValueError("stacking grouped convolutions is not supported")
            mod: nn.Module = Conv2d(s * first.in_channels, s * first.out_channels, first.kernel_size,
                                    stride=first.stride, padding=first.padding, dilation=first.dilation,
                                    groups=s, bias=first.bias is not None)
        elif isinstance(first, nn.Linear):
            mod = StackedLinear(s, first.in_features, first.out_features)
        elif isinstance(first, nn.BatchNorm2d):
            mod = nn.BatchNorm2d(s * first.num_features, eps=first.eps, momentum=first.momentum)
        elif isinstance(first, nn.BatchNorm1d):
            mod = StackedBatchNorm1d(s * first.num_features, eps=first.eps, momentum=first.momentum)
        elif isinstance(first, nn.Flatten):
            mod = StackedFlatten(s)
        elif next(first.parameters(), None) is None and next(first.buffers(), None) is None:
            mod = copy.deepcopy(first)  # element-wise or per-channel: pooling, activations, dropout, padding
        else:
            raise ValueError(f"cannot stack a {type(first).__name__}")
        mods.append(mod)
    like = next(members[0].parameters())
    stacked = nn.Sequential(*mods).to(like.device, like.dtype)
    stacked.load_state_dict(stack_tensors([m.state_dict() for m in members]))
    return stacked


def _shared(key: str, t: torch.Tensor) -> bool:
    """A value every member has alike (a batch-norm counter, an optimiser step count): kept once."""
    return key.endswith(SHARED) or t.dim() == 0


def stack_tensors(members: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Members' same-keyed tensors concatenated along dim 0 (shared values kept once)."""
    return {key: first.clone() if _shared(key, first) else torch.cat([m[key] for m in members])
            for key, first in members[0].items()}


def member_tensors(stacked: dict, index: int, members: int) -> dict:
    """Member `index`'s slice of `stack_tensors` output (non-tensor values pass through)."""
    return {key: t if not torch.is_tensor(t) or _shared(key, t) else t.chunk(members)[index]
            for key, t in stacked.items()}


@dataclass
class Cohort:
    """S trials of one model trained as one stacked network, each with its own shuffling and history."""

    model: nn.Sequential
    optimizer: torch.optim.Optimizer
    shuffles: list[torch.Generator]
    seeds: list[int]
    epoch: int = 0
    histories: list[list[EpochResult]] = field(default_factory=list)
    diverged: set[int] = field(default_factory=set)  # members whose loss went non-finite; no longer reported
    graph: GraphedStep | None = field(default=None, repr=False, compare=False)

    @property
    def size(self) -> int:
        return len(self.seeds)


def init_cohort(spec: ModelSpec, settings: TrainSettings, input_shape: Shape, seeds: list[int],
                device: torch.device, channels_last: bool = False, states: list[TrainState] | None = None) -> Cohort:
    """A cohort whose members start exactly as lone trials of `seeds` would (or from `states`).

    The global RNG afterwards is the last member's, so a cohort of one draws dropout like a lone trial.
    """
    if states is None:
        states = [init_state(spec, settings, input_shape, seed, device) for seed in seeds]
    model = stack_modules([st.model for st in states])
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(settings.optimizer, model.parameters(), capturable=device.type == "cuda",
                               foreach=_loop.FOREACH)
    if any(st.optimizer.state for st in states):
        optimizer.load_state_dict(stack_optimizer_states([st.optimizer.state_dict() for st in states]))
    return Cohort(model, optimizer, [st.shuffle for st in states], list(seeds), states[0].epoch,
                  [list(st.history) for st in states])


def stack_optimizer_states(members: list[dict]) -> dict:
    """Members' optimiser state_dicts (same spec, same parameter order) as the stack's."""
    state = {idx: stack_tensors([m["state"][idx] for m in members]) for idx in members[0]["state"]}
    return {"state": state, "param_groups": members[0]["param_groups"]}


def member_optimizer_state(cohort: Cohort, index: int) -> dict:
    """Member `index`'s optimiser state_dict, shaped as a lone trial's."""
    sd = cohort.optimizer.state_dict()
    state = {idx: member_tensors(slots, index, cohort.size) for idx, slots in sd["state"].items()}
    return {"state": state, "param_groups": sd["param_groups"]}


def member_model_state(cohort: Cohort, index: int) -> dict[str, torch.Tensor]:
    """Member `index`'s weights and buffers under a lone model's state_dict keys."""
    return member_tensors(cohort.model.state_dict(), index, cohort.size)


def _stacked_input(xb: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """(N, S, C, H, W) uint8 -> (N, S*C, H, W) float, each member's images in its own channel group."""
    n, s, c, h, w = xb.shape
    return _to_input(xb.reshape(n, s * c, h, w), channels_last)


def _cohort_step(cohort: Cohort, xb: torch.Tensor, yb: torch.Tensor, precision: str, channels_last: bool,
                 loss_sum: torch.Tensor, correct: torch.Tensor) -> None:
    """One optimiser step for every member; each member's loss is its own batch mean."""
    with autocast(xb.device, precision):
        logits = cohort.model(_stacked_input(xb, channels_last))  # (N, S, K)
    losses = F.cross_entropy(logits.float().transpose(1, 2), yb, reduction="none").mean(0)  # (S,)
    losses.sum().backward()
    cohort.optimizer.step()
    loss_sum += losses.detach() * yb.shape[0]
    correct += (logits.detach().argmax(2) == yb).sum(0)


def train_cohort_epoch(cohort: Cohort, split: Split, batch_size: int, precision: str = "fp32",
                       channels_last: bool = False, on_batch: Callable[[int], None] | None = None
                       ) -> tuple[list[float], list[float]]:
    """One pass in training mode for every member; returns per-member (mean losses, accuracies)."""
    device = split.x.device
    cohort.model.train()
    perms = torch.stack([torch.randperm(len(split), generator=g) for g in cohort.shuffles], 1).to(device)
    xs, ys = split.x[perms], split.y[perms]  # (n, S, C, H, W), (n, S)
    loss_sum = torch.zeros(cohort.size, device=device)
    correct = torch.zeros(cohort.size, device=device, dtype=torch.int64)

    def step(xb: torch.Tensor, yb: torch.Tensor, ls: torch.Tensor, cor: torch.Tensor) -> None:
        _cohort_step(cohort, xb, yb, precision, channels_last, ls, cor)

    run_batches(cohort, xs, ys, batch_size, step, loss_sum, correct, on_batch)
    n = len(split)
    return (loss_sum / n).tolist(), (correct.double() / n).tolist()


@torch.inference_mode()
def evaluate_cohort(cohort: Cohort, split: Split, precision: str = "fp32", channels_last: bool = False,
                    with_probs: bool = False) -> tuple[list[float], list[float], torch.Tensor | None]:
    """Per-member (mean losses, accuracies, probabilities (S, N, K) or None) on one shared split."""
    cohort.model.eval()
    device, s = split.x.device, cohort.size
    loss_sum = torch.zeros(s, device=device)
    correct = torch.zeros(s, device=device, dtype=torch.int64)
    probs = []
    for start in range(0, len(split), _loop.EVAL_BATCH):
        xb = split.x[start:start + _loop.EVAL_BATCH]
        yb = split.y[start:start + _loop.EVAL_BATCH]
        with autocast(device, precision):
            logits = cohort.model(_stacked_input(xb.unsqueeze(1).expand(-1, s, -1, -1, -1), channels_last)).float()
        yy = yb.unsqueeze(1).expand(-1, s)
        loss_sum += F.cross_entropy(logits.transpose(1, 2), yy, reduction="none").sum(0)
        correct += (logits.argmax(2) == yy).sum(0)
        if with_probs:
            probs.append(torch.softmax(logits, dim=2).transpose(0, 1).cpu())
    n = len(split)
    return ((loss_sum / n).tolist(), (correct.double() / n).tolist(),
            torch.cat(probs, 1) if with_probs else None)


def fit_cohort(cohort: Cohort, settings: TrainSettings, data: TrialData, *, precision: str = "fp32",
               channels_last: bool = False, on_epoch: Callable[[int, EpochResult], None] = lambda i, r: None,
               on_diverged: Callable[[int, int], None] = lambda i, epoch: None,
               should_stop: Callable[[], bool] = lambda: False,
               on_batch: Callable[[int], None] | None = None) -> Cohort:
    """Train every member from `cohort.epoch` to `settings.epochs`; callbacks get the member's index.

    A member whose loss goes non-finite is reported once through `on_diverged` and dropped from the
    reports; its parameters are disjoint from the others', so the rest train on unaffected. Every
    member's EpochResult carries the cohort epoch's wall time.
    """
    configure_backends(data.train.x.device)
    for epoch in range(cohort.epoch + 1, settings.epochs + 1):
        t0 = time.perf_counter()
        losses, accs = train_cohort_epoch(cohort, data.train, settings.batch_size, precision, channels_last,
                                          on_batch)
        val_losses, val_accs, _ = evaluate_cohort(cohort, data.val, precision, channels_last)
        seconds = time.perf_counter() - t0
        cohort.epoch = epoch
        for i in range(cohort.size):
            if i in cohort.diverged:
                continue
            if not (math.isfinite(losses[i]) and math.isfinite(val_losses[i])):
                cohort.diverged.add(i)
                on_diverged(i, epoch)
                continue
            result = EpochResult(epoch, losses[i], accs[i], val_losses[i], val_accs[i], seconds)
            cohort.histories[i].append(result)
            on_epoch(i, result)
        if should_stop() or len(cohort.diverged) == cohort.size:
            break
    return cohort


def member_checkpoint(cohort: Cohort, index: int) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Member `index`'s checkpoint in a lone trial's format (state.state_to_tensors), so either can resume it."""
    return pack_state(member_model_state(cohort, index), member_optimizer_state(cohort, index),
                      cohort.shuffles[index], cohort.epoch, cohort.histories[index])

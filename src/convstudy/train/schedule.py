"""Learning-rate schedules, stepped after every batch: `[train] schedule` and `warmup`.

- `constant` (Keras 2's fit(), the default): no scheduler at all, so not one op changes; with a
  `warmup` it becomes a linear warm-up to the optimiser's lr, then constant;
- `step`: the lr times `step_gamma` every `step_every` epochs (default: a third of the epochs);
- `cosine`: after the warm-up, half a cosine from the lr down to 0 at the last batch;
- `one-cycle`: torch's OneCycleLR with max_lr = the optimiser's lr; its rising phase is the warm-up
  (default 30% of the batches); momentum is not cycled (Adadelta and the others have none).

`warmup` below 1 is a fraction of all batches, from 1 on a number of epochs. Warm-up, step and
cosine are one LambdaLR (closed-form in the batch count); its state, and OneCycleLR's, is JSON in the
checkpoint (`schedule` metadata), so a resumed trial continues at the very same lr.
"""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR

from convstudy.spec import TrainSettings


def warmup_steps(settings: TrainSettings, steps_per_epoch: int) -> int:
    """The warm-up's length in batches (0: none), at most the whole training."""
    total = settings.epochs * steps_per_epoch
    w = settings.warmup
    if w <= 0:
        return 0
    steps = w * total if w < 1 else w * steps_per_epoch
    return min(total, max(1, round(steps)))


def lr_factor(settings: TrainSettings, steps_per_epoch: int):
    """k (batches done) -> the factor on the lr of batch k + 1, for constant/step/cosine with warm-up."""
    total = settings.epochs * steps_per_epoch
    warm = warmup_steps(settings, steps_per_epoch)
    every = settings.step_every or max(1, settings.epochs // 3)
    kind, gamma = settings.schedule, settings.step_gamma

    def factor(k: int) -> float:
        if k < warm:
            return (k + 1) / warm
        if kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(k - warm, total - warm) / max(1, total - warm)))
        if kind == "step":
            return gamma ** (k // steps_per_epoch // every)
        return 1.0

    return factor


def make_scheduler(settings: TrainSettings, optimizer: torch.optim.Optimizer, steps_per_epoch: int,
                   saved: dict | None = None) -> LRScheduler | None:
    """The trial's scheduler on `optimizer` (None for a constant lr without warm-up), at `saved`'s step."""
    if settings.schedule == "constant" and settings.warmup <= 0:
        return None
    if settings.schedule == "one-cycle":
        total = settings.epochs * steps_per_epoch
        warm = warmup_steps(settings, steps_per_epoch)
        lr = settings.optimizer.resolved()["lr"]
        sched: LRScheduler = OneCycleLR(optimizer, max_lr=lr, total_steps=total,
                                        pct_start=min(0.99, warm / total) if warm else 0.3, cycle_momentum=False)
    else:
        sched = LambdaLR(optimizer, lr_factor(settings, steps_per_epoch))
    if saved:
        sched.load_state_dict(saved)
        # A new scheduler has set its first lr; the checkpoint's step is where the trial goes on.
        for group, lr in zip(optimizer.param_groups, sched.get_last_lr()):
            group["lr"] = lr
    return sched

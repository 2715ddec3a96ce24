"""A trial as one loop, run by every executor: `run_trial` yields what happens, the executor records it.

Read `run_trial` top to bottom: shuffle, slice, augment, forward/backward/`optimizer.step()` (`train_step`;
replayed as a CUDA graph on CUDA), `zero_grad`, `scheduler.step()`, evaluate, checkpoint, yield.

The local executor runs it in a `for` loop in its own process; a Ray worker runs the same loop and
forwards the events to the driver. Either way the events reach the study directory through
`executors.record.Recorder`. Stopping a trial after any epoch is closing the iterator: every
finished epoch is checkpointed, and the next `run_trial` of that trial continues from there.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Iterator, Union

import torch

from convstudy.spec import ModelSpec, TrainSettings
from convstudy.store import DIGEST_KEY, CheckpointStorage, DamagedFile
from convstudy.train import (
    Augment, CudaGraph, EpochResult, Plan, TrialData, channel_stats, configure_backends, cpu_weights, describe,
    evaluate, init_state, load_state_tensors, make_scheduler, norm_meta, state_to_tensors, train_step,
)


@dataclass(frozen=True)
class TrialJob:
    """Everything needed to (re)start a trial, independent of where it runs."""

    trial_id: int
    model: ModelSpec
    settings: TrainSettings
    seed: int
    input_shape: tuple[int, int, int]
    plan: Plan  # device, precision, memory format, conv algorithms, threads: decided once, in run_study
    owner: str = ""  # the identity its files carry (store.identity): study fingerprint, model, seed
    digests: tuple[tuple[int, str], ...] = ()  # (epoch, checkpoint digest) as study.db recorded them

    @property
    def key(self) -> str:
        return CheckpointStorage.key(self.model.name, self.seed)

    def tag(self) -> str:
        return f"{self.model.name} seed {self.seed}"


@dataclass(frozen=True)
class Started:
    """The trial goes on after `epoch` (0: from scratch) with these epoch rows; `note` says why a
    checkpoint was not used."""

    job: TrialJob
    epoch: int
    history: list[dict]
    note: str | None = None


@dataclass(frozen=True)
class Progress:
    """`done` training images of the running epoch have been stepped on."""

    done: int


@dataclass(frozen=True)
class EpochDone:
    """An epoch finished and its checkpoint (`digest`) is written."""

    job: TrialJob
    result: EpochResult
    digest: str


@dataclass(frozen=True)
class Diverged:
    """The trial's loss went non-finite in `epoch`: a result, not a failure."""

    job: TrialJob
    epoch: int


@dataclass(frozen=True)
class Finished:
    """The trial trained every epoch; its test results, final weights and test predictions."""

    job: TrialJob
    test_loss: float
    test_accuracy: float
    device: str  # the device's name (train.describe), e.g. the GPU model
    weights: dict[str, torch.Tensor]
    probs: torch.Tensor
    labels: torch.Tensor
    # What feeding the weights needs besides /255: the training split's per-channel mean/std (train.norm_meta).
    weights_meta: dict[str, str]


Event = Union[Started, Progress, EpochDone, Diverged, Finished]


def run_trial(job: TrialJob, data: TrialData, storage: CheckpointStorage,
              saved: tuple[tuple[dict, dict] | None, str | None] | None = None) -> Iterator[Event]:
    """Train `job` from its checkpoint (`saved`: one already loaded, with its note) to its last epoch."""
    ckpt, note = saved or trusted_checkpoint(job, storage)
    settings, plan, device = job.settings, job.plan, torch.device(job.plan.device)
    state = init_state(job.model, settings, job.input_shape, job.seed, plan)
    state = load_state_tensors(state, *ckpt) if ckpt else state
    yield Started(job, state.epoch, [asdict(h) for h in state.history], note)
    model, optimizer = state.model, state.optimizer
    n, batch = len(data.train), settings.batch_size
    norm = channel_stats(data.train.x) if settings.normalize == "channel" else None  # the training split's
    augment = Augment(settings.augment)
    scheduler = make_scheduler(settings, optimizer, -(-n // batch), state.schedule)  # stepped after every batch
    step = train_step(model, optimizer, plan, norm, settings.label_smoothing)
    if plan.cuda_graphs and device.type == "cuda" and scheduler is None:  # a graph would freeze its lr
        step = CudaGraph(step, batch)
    configure_backends(device)
    for epoch in range(state.epoch + 1, settings.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        perm = torch.randperm(n, generator=state.shuffle).to(device)
        xs, ys = data.train.x.index_select(0, perm), data.train.y.index_select(0, perm)
        loss_sum, correct = torch.zeros((), device=device), torch.zeros((), device=device, dtype=torch.int64)
        for start in range(0, n, batch):  # the last, partial batch is kept
            xb, yb = xs[start:start + batch], ys[start:start + batch]
            if augment:  # training batches only, with the trial's own generator
                xb = augment(xb, state.augment)
            step(xb, yb, loss_sum, correct)  # forward, backward, optimizer.step(); adds the batch's loss and hits
            optimizer.zero_grad(set_to_none=True)
            if scheduler is not None:
                scheduler.step()
            yield Progress(min(start + batch, n))
        loss, acc = loss_sum.item() / n, correct.item() / n
        val_loss, val_acc, _ = evaluate(model, data.val, plan.precision, plan.channels_last, norm=norm)
        seconds = time.perf_counter() - t0
        if not (math.isfinite(loss) and math.isfinite(val_loss)):
            yield Diverged(job, epoch)
            return
        result = EpochResult(epoch, loss, acc, val_loss, val_acc, seconds)
        state.epoch = epoch
        state.history.append(result)
        if scheduler is not None:
            state.schedule = scheduler.state_dict()
        tensors, meta = state_to_tensors(state)
        digest = storage.save(job.key, tensors, {**meta, **norm_meta(norm)}, job.owner)
        yield EpochDone(job, result, digest)
    loss, acc, probs = evaluate(model, data.test, plan.precision, plan.channels_last, True, norm)
    yield Finished(job, loss, acc, describe(device), cpu_weights(model.state_dict()), probs, data.test.y.cpu(),
                   norm_meta(norm))


def trusted_checkpoint(job: TrialJob, storage: CheckpointStorage) -> tuple[tuple[dict, dict] | None, str | None]:
    """The trial's checkpoint if it can be trusted, else None and a one-line note of why.

    Damaged, another trial's, or not the file study.db recorded for its epoch: it is moved aside,
    never used, and the trial restarts from scratch.
    """
    try:
        saved = storage.load(job.key, job.owner)
        if saved is not None:
            epoch = int(saved[1].get("epoch", 0))
            recorded = dict(job.digests).get(epoch)
            if recorded is not None and saved[1].get(DIGEST_KEY) != recorded:
                raise DamagedFile(f"{storage.root}/{job.key}: checkpoint of epoch {epoch} is not the one "
                                  "study.db recorded")
    except DamagedFile as exc:
        where = storage.quarantine(job.key)
        return None, f"{job.tag()}: {exc}; moved to {where}, training it again from scratch"
    return saved, None

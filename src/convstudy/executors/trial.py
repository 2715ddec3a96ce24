"""Running one trial from a job description, wherever it runs; persistence goes through a sink.

The local executor's sink writes study.db and checkpoints directly; a Ray worker's sink writes
checkpoints to shared storage and streams metrics back to the driver, the only writer of study.db.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol

import torch

from convstudy.spec import ModelSpec, TrainSettings
from convstudy.store import DamagedFile
from convstudy.store.files import DIGEST_KEY
from convstudy.train import (
    Diverged, EpochResult, TrialData, evaluate, fit, init_state, load_state_tensors, state_to_tensors,
)
from convstudy.train.cohort import (
    evaluate_cohort, fit_cohort, init_cohort, member_checkpoint, member_model_state,
)
from convstudy.train.loop import TrainState


@dataclass(frozen=True)
class TrialJob:
    """Everything needed to (re)start a trial, independent of where it runs."""

    trial_id: int
    model: ModelSpec
    settings: TrainSettings
    seed: int
    input_shape: tuple[int, int, int]
    precision: str = "fp32"
    channels_last: bool = False
    owner: str = ""  # the identity its files carry (store.identity): study fingerprint, model, seed
    digests: tuple[tuple[int, str], ...] = ()  # (epoch, checkpoint digest) as study.db recorded them


def trusted_checkpoint(job: TrialJob, load: Callable[[], tuple[dict, dict] | None],
                       move_aside: Callable[[], str]) -> tuple[tuple[dict, dict] | None, str | None]:
    """The trial's checkpoint if it can be trusted, else None and a one-line note of why.

    Damaged, another trial's, or not the file study.db recorded for its epoch: it is moved aside,
    never used, and the trial restarts from scratch.
    """
    try:
        saved = load()
        if saved is not None:
            epoch = int(saved[1].get("epoch", 0))
            recorded = dict(job.digests).get(epoch)
            if recorded is not None and saved[1].get(DIGEST_KEY) != recorded:
                raise DamagedFile(f"checkpoint of epoch {epoch} is not the one study.db recorded")
    except DamagedFile as exc:
        where = move_aside()
        return None, f"{job.model.name} seed {job.seed}: {exc}; moved to {where}, training it again from scratch"
    return saved, None


class TrialSink(Protocol):
    def load_checkpoint(self, job: TrialJob) -> tuple[dict[str, torch.Tensor], dict[str, str]] | None: ...
    def epoch_done(self, job: TrialJob, result: EpochResult, tensors: dict[str, torch.Tensor],
                   meta: dict[str, str]) -> None: ...
    def finished(self, job: TrialJob, weights: dict[str, torch.Tensor], probs: torch.Tensor, labels: torch.Tensor,
                 test_loss: float, test_accuracy: float) -> None: ...
    def diverged(self, job: TrialJob, epoch: int) -> None: ...


def run_trial(job: TrialJob, data: TrialData, sink: TrialSink, should_stop: Callable[[], bool] = lambda: False,
              on_start: Callable[[TrainState], Any] | None = None,
              on_batch: Callable[[int], None] | None = None) -> str:
    """Train `job` to completion or interruption; returns "complete", "diverged" or "interrupted"."""
    device = data.train.x.device
    state = init_state(job.model, job.settings, job.input_shape, job.seed, device, job.channels_last, job.precision)
    saved = sink.load_checkpoint(job)
    if saved is not None:
        load_state_tensors(state, *saved)
    if on_start is not None:
        on_start(state)

    def on_epoch(result: EpochResult, st: TrainState) -> None:
        tensors, meta = state_to_tensors(st)
        sink.epoch_done(job, result, tensors, meta)

    try:
        fit(state, job.settings, data, precision=job.precision, channels_last=job.channels_last,
            on_epoch=on_epoch, should_stop=should_stop, on_batch=on_batch)
    except Diverged as exc:
        sink.diverged(job, exc.epoch)
        return "diverged"
    if state.epoch < job.settings.epochs:
        return "interrupted"
    test_loss, test_acc, probs = evaluate(state.model, data.test, job.precision, job.channels_last, with_probs=True)
    sink.finished(job, cpu_weights(state.model.state_dict()), probs, data.test.y.cpu(), test_loss, test_acc)
    return "complete"


def cpu_weights(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A finished model's weights and buffers as contiguous CPU tensors, ready for safetensors."""
    return {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}


def run_cohort(jobs: list[TrialJob], data: TrialData, sink: TrialSink,
               should_stop: Callable[[], bool] = lambda: False,
               on_batch: Callable[[int], None] | None = None) -> dict[int, str]:
    """Train the seeds of one model together (train.cohort); returns each trial id's end state.

    Every member reports and checkpoints exactly as a lone trial does, so a study can mix both and
    resume either way. Members checkpointed at different epochs cannot share steps: they train alone.
    """
    first = jobs[0]
    alike = len(jobs) > 1 and all((j.model, j.settings, j.precision, j.channels_last) ==
                                  (first.model, first.settings, first.precision, first.channels_last) for j in jobs)
    saved = [sink.load_checkpoint(j) for j in jobs] if alike else []
    if not alike or len({int(s[1]["epoch"]) if s else 0 for s in saved}) > 1:
        return {j.trial_id: run_trial(j, data, sink, should_stop, on_batch=on_batch) for j in jobs}
    device = data.train.x.device
    states = []
    for job, ckpt in zip(jobs, saved):
        state = init_state(job.model, job.settings, job.input_shape, job.seed, device)
        states.append(load_state_tensors(state, *ckpt) if ckpt is not None else state)
    cohort = init_cohort(first.model, first.settings, first.input_shape, [j.seed for j in jobs], device,
                         first.channels_last, states=states)
    fit_cohort(cohort, first.settings, data, precision=first.precision, channels_last=first.channels_last,
               on_epoch=lambda i, r: sink.epoch_done(jobs[i], r, *member_checkpoint(cohort, i)),
               on_diverged=lambda i, epoch: sink.diverged(jobs[i], epoch), should_stop=should_stop,
               on_batch=on_batch)
    ends = {j.trial_id: "diverged" for i, j in enumerate(jobs) if i in cohort.diverged}
    if cohort.epoch < first.settings.epochs:
        return {j.trial_id: ends.get(j.trial_id, "interrupted") for j in jobs}
    losses, accs, probs = evaluate_cohort(cohort, data.test, first.precision, first.channels_last, with_probs=True)
    for i, job in enumerate(jobs):
        if job.trial_id in ends:
            continue
        sink.finished(job, cpu_weights(member_model_state(cohort, i)), probs[i], data.test.y.cpu(), losses[i], accs[i])
        ends[job.trial_id] = "complete"
    return ends

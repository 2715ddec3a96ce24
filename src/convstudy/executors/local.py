"""The local executor: trials in this process, claimed from study.db, one after another or in lanes."""

from __future__ import annotations

import json
import signal
import threading
from dataclasses import dataclass
from typing import Callable

import torch

from convstudy.executors.progress import ProgressView
from convstudy.executors.trial import TrialJob, run_cohort
from convstudy.errors import StoreError
from convstudy.store import StudyStore, load_tensors, save_tensors, this_owner
from convstudy.train import EpochResult, TrialData


class LocalSink:
    """Persists a trial straight into the study directory: checkpoint first, then its epoch row."""

    def __init__(self, store: StudyStore, view: ProgressView, device: str) -> None:
        self.store, self.view, self.device = store, view, device

    def load_checkpoint(self, job: TrialJob):
        path = self.store.checkpoint_path(job.model.name, job.seed)
        if not path.exists():
            return None
        tensors, meta = load_tensors(path)
        # The checkpoint is written before its epoch row: a crash between the two leaves rows to replay.
        for h in meta_history(meta):
            self.store.db.record_epoch(job.trial_id, h["epoch"], h)
        return tensors, meta

    def epoch_done(self, job: TrialJob, result: EpochResult, tensors, meta) -> None:
        save_tensors(self.store.checkpoint_path(job.model.name, job.seed), tensors, meta)
        self.store.db.record_epoch(job.trial_id, result.epoch, vars(result))
        self.view.epoch(job, result)

    def finished(self, job: TrialJob, weights, probs, labels, test_loss: float, test_accuracy: float) -> None:
        save_tensors(self.store.weights_path(job.model.name, job.seed), weights)
        save_tensors(self.store.predictions_path(job.model.name, job.seed),
                     {"probs": probs.to(torch.float16), "labels": labels.to(torch.uint8)})
        self.store.db.finish(job.trial_id, test_loss, test_accuracy, self.device)
        self.store.checkpoint_path(job.model.name, job.seed).unlink(missing_ok=True)
        self.view.finished(job, test_loss, test_accuracy)

    def diverged(self, job: TrialJob, epoch: int) -> None:
        self.store.db.mark(job.trial_id, "diverged", error=f"non-finite loss in epoch {epoch}", diverged_epoch=epoch)
        self.view.diverged(job, epoch)


def meta_history(meta: dict[str, str]) -> list[dict]:
    """The epoch results a checkpoint carries in its metadata."""
    return json.loads(meta.get("history", "[]"))


class Interrupt:
    """First Ctrl-C: finish the running epoch, checkpoint, stop. Second: stop now (last checkpoint holds)."""

    def __init__(self) -> None:
        self.requested = False
        self._old = None

    def __enter__(self) -> "Interrupt":
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def run_local(store: StudyStore, jobs: dict[tuple[str, int], Callable[[int], TrialJob]], data: TrialData,
              run_id: int, device: str, view: ProgressView, after_trial: Callable[[], None], stack: int = 1,
              streams: int = 1) -> bool:
    """Claim and train wanted trials until none is left; returns False when interrupted.

    With `stack` > 1, up to that many pending seeds of one model are claimed together and trained as
    one stacked network (train.cohort). With `streams` > 1, that many lanes train side by side in
    this process, each on its own CUDA stream (executors.lanes), with the same numbers as one lane.
    """
    owner = this_owner()
    current: set[int] = set()
    stop_beat = threading.Event()

    def beat() -> None:  # keeps our claims fresh for other processes during long epochs
        from convstudy.store import StudyDB

        db = StudyDB(store.db.path)
        while not stop_beat.wait(15.0):
            if current:
                db.heartbeat(list(current), owner)
        db.close()

    beater = threading.Thread(target=beat, daemon=True)
    beater.start()
    try:
        with Interrupt() as interrupt:
            trainer = _Trainer(store, owner, jobs, data, run_id, stack, LocalSink(store, view, device), view,
                               after_trial, interrupt, current)
            if streams <= 1:
                return trainer.serve()
            from convstudy.executors.lanes import run_lanes

            view.live = False  # epoch lines only: one bar cannot follow several trials
            return run_lanes(streams, lambda lane: trainer.serve(lane.turn), data.train.x.device)
    finally:
        stop_beat.set()


@dataclass
class _Trainer:
    """What every lane of run_local shares: where trials come from, where results go, when to stop."""

    store: StudyStore
    owner: str
    jobs: dict[tuple[str, int], Callable[[int], TrialJob]]
    data: TrialData
    run_id: int
    stack: int
    sink: LocalSink
    view: ProgressView
    after_trial: Callable[[], None]
    interrupt: Interrupt
    current: set[int]  # trial ids being trained, for the heartbeat

    def serve(self, turn: Callable[[], None] | None = None) -> bool:
        """Claim a trial (or seeds to stack), train it, repeat; False when interrupted. `turn` runs after each batch."""
        store, interrupt, view = self.store, self.interrupt, self.view

        def on_batch(done: int) -> None:
            view.batch(done)
            if turn is not None:
                turn()

        while not interrupt.requested:
            rec = store.db.claim(self.owner, set(self.jobs), self.run_id)
            if rec is None:
                return True
            group = [rec]
            same_model = {key for key in self.jobs if key[0] == rec.model}
            while len(group) < self.stack and (more := store.db.claim(self.owner, same_model, self.run_id)) is not None:
                group.append(more)
            members = [self.jobs[(r.model, r.seed)](r.id) for r in group]
            self.current.update(r.id for r in group)
            for job, r in zip(members, group):
                view.start(job, r)
            try:
                ends = run_cohort(members, self.data, self.sink, should_stop=lambda: interrupt.requested,
                                  on_batch=on_batch)
            except KeyboardInterrupt:
                ends = {r.id: "interrupted" for r in group}
                interrupt.requested = True
            except StoreError:  # a damaged study file is the user's to fix, not a failed trial
                for r in group:
                    store.db.mark(r.id, "pending", error="damaged checkpoint")
                raise
            except Exception as exc:  # a bug or resource failure in one trial must not sink the study
                for job in members:
                    store.db.mark(job.trial_id, "failed", error=f"{type(exc).__name__}: {exc}"[:500])
                    view.failed(job, exc)
                ends = {r.id: "failed" for r in group}
            self.current.difference_update(r.id for r in group)
            interrupted = [tid for tid, end in ends.items() if end == "interrupted"]
            for tid in interrupted:
                store.db.mark(tid, "pending", error="interrupted")
            if interrupted:
                return False
            self.after_trial()
        return False

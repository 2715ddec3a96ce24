"""The local executor: trials in this process, claimed from study.db, one after another or in lanes."""

from __future__ import annotations

import dataclasses
import errno
import json
import signal
import sqlite3
import threading
from dataclasses import dataclass
from typing import Callable

import torch

from convstudy.executors.progress import ProgressView, warn
from convstudy.executors.trial import TrialJob, run_cohort, trusted_checkpoint
from convstudy.errors import DiskFull, StoreError
from convstudy.store import StudyDB, StudyStore, load_tensors, quarantine, save_tensors, this_owner
from convstudy.train import EpochResult, TrialData


class LocalSink:
    """Persists a trial straight into the study directory: checkpoint first, then its epoch row."""

    def __init__(self, store: StudyStore, view: ProgressView, device: str) -> None:
        self.store, self.view, self.device = store, view, device

    def load_checkpoint(self, job: TrialJob):
        path = self.store.checkpoint_path(job.model.name, job.seed)
        saved, note = trusted_checkpoint(
            job, lambda: load_tensors(path, job.owner) if path.exists() else None,
            lambda: str(quarantine(path)))
        # The checkpoint is written before its epoch row: a crash between the two leaves rows to replay.
        history = meta_history(saved[1]) if saved else []
        resume_from(self.store.db, job.trial_id, history, note)
        if note:
            warn(note)
        return saved

    def epoch_done(self, job: TrialJob, result: EpochResult, tensors, meta) -> None:
        digest = save_tensors(self.store.checkpoint_path(job.model.name, job.seed), tensors, meta, job.owner)
        self.store.db.record_epoch(job.trial_id, result.epoch, vars(result), digest)
        self.view.epoch(job, result)

    def finished(self, job: TrialJob, weights, probs, labels, test_loss: float, test_accuracy: float) -> None:
        digests = self.store.save_results(job.trial_id, job.model.name, job.seed, weights, probs, labels)
        self.store.db.finish(job.trial_id, test_loss, test_accuracy, self.device, *digests)
        self.store.checkpoint_path(job.model.name, job.seed).unlink(missing_ok=True)
        self.view.finished(job, test_loss, test_accuracy)

    def diverged(self, job: TrialJob, epoch: int) -> None:
        self.store.db.mark(job.trial_id, "diverged", error=f"non-finite loss in epoch {epoch}", diverged_epoch=epoch)
        self.view.diverged(job, epoch)


def resume_from(db: StudyDB, trial_id: int, history: list[dict], note: str | None) -> None:
    """Make a trial's epoch rows those of the checkpoint it resumes from (none: from scratch)."""
    for h in history:
        db.record_epoch(trial_id, h["epoch"], h)
    db.rewind(trial_id, history[-1]["epoch"] if history else 0, note or "")


def meta_history(meta: dict[str, str]) -> list[dict]:
    """The epoch results a checkpoint carries in its metadata."""
    return json.loads(meta.get("history", "[]"))


class Interrupt:
    """First Ctrl-C or SIGTERM: finish the running epoch, checkpoint, stop. Second: stop now (last checkpoint holds).

    SIGTERM is what cluster schedulers and `kill` send before they kill, so it is handled the same way.
    A SIGTERM handler installed before (run_with_workers forwards it to its worker processes) still runs.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, object] = {}

    def __enter__(self) -> "Interrupt":
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def _handle(self, signum, frame) -> None:
        old = self._old.get(signum)
        if signum == signal.SIGTERM and callable(old) and old is not signal.default_int_handler:
            old(signum, frame)
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)


def disk_full(exc: BaseException) -> bool:
    """Whether `exc` means the study's disk (or quota) is full: no trial can succeed until space is freed."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return isinstance(exc, sqlite3.OperationalError) and "full" in str(exc)


def run_local(store: StudyStore, jobs: dict[tuple[str, int], Callable[[int], TrialJob]], data: TrialData,
              run_id: int, device: str, view: ProgressView, after_trial: Callable[[], None],
              numerics: dict[str, dict] | None = None, stack: int = 1, streams: int = 1) -> bool:
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
                               after_trial, interrupt, current, numerics)
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
    numerics: dict[str, dict] | None = None  # model -> settings that change its numbers, recorded per trial

    def serve(self, turn: Callable[[], None] | None = None) -> bool:
        """Claim a trial (or seeds to stack), train it, repeat; False when interrupted. `turn` runs after each batch."""
        store, interrupt, view = self.store, self.interrupt, self.view

        def on_batch(done: int) -> None:
            view.batch(done)
            if turn is not None:
                turn()

        while not interrupt.requested:
            rec = store.db.claim(self.owner, set(self.jobs), self.run_id, self.numerics)
            if rec is None:
                return True
            group = [rec]
            same_model = {key for key in self.jobs if key[0] == rec.model}
            while len(group) < self.stack and (more := store.db.claim(self.owner, same_model, self.run_id,
                                                                      self.numerics)) is not None:
                group.append(more)
            members = [dataclasses.replace(self.jobs[(r.model, r.seed)](r.id),
                                           digests=tuple(store.db.checkpoint_digests(r.id).items())) for r in group]
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
                reason = f"{type(exc).__name__}: {exc}"[:500]
                try:
                    for job in members:
                        store.db.mark(job.trial_id, "failed", error=reason)
                        view.failed(job, exc)
                except Exception:  # a full disk can refuse the database write too; the claim then goes stale
                    if not disk_full(exc):
                        raise
                if disk_full(exc):  # every other trial would fail the same way: stop, say how to go on
                    names = ", ".join(f"{j.model.name} seed {j.seed}" for j in members)
                    raise DiskFull(f"{store.out}: no space left on the device ({' '.join(str(exc).split())[:200]}); "
                                   f"{names} stopped, its last checkpoint kept. Free space and rerun the same "
                                   "command to retry it") from None
                ends = {r.id: "failed" for r in group}
            self.current.difference_update(r.id for r in group)
            interrupted = [tid for tid, end in ends.items() if end == "interrupted"]
            for tid in interrupted:
                store.db.mark(tid, "pending", error="interrupted")
            if interrupted:
                return False
            self.after_trial()
        return False

"""The one way a trial's events reach the study directory, whichever executor ran the trial."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Callable, Iterator

from convstudy.executors.progress import ProgressView, warn
from convstudy.store import CheckpointStorage
from convstudy.executors.trial import Diverged, EpochDone, Event, Finished, Progress, Started
from convstudy.store import State, StudyDB, StudyStore


class Recorder:
    """Writes events into study.db (and a finished trial's files) and shows them.

    A trial's epoch row is written after its checkpoint (the event says it is written), so a crash
    between the two leaves rows that the next Started replays from the checkpoint. Every Started of
    a claim after its first is a retry (a lost Ray worker, say): counted as an attempt and recorded.
    """

    def __init__(self, store: StudyStore, storage: CheckpointStorage, view: ProgressView, owner: str) -> None:
        self.store, self.storage, self.view, self.owner = store, storage, view, owner
        self.started: set[int] = set()

    def __call__(self, event: Event, where: str = "") -> None:
        db = self.store.db
        if isinstance(event, Progress):
            self.view.batch(event.done)
            return
        tid = event.job.trial_id
        if isinstance(event, Started):
            if tid in self.started:
                db.retry(tid, self.owner, f"attempt restarted{' on ' + where if where else ''}")
            self.started.add(tid)
            resume_from(db, tid, event.history, event.note)
            if where:
                db.add_event(tid, "worker", f"{where}, " + (f"resuming after epoch {event.epoch}" if event.epoch
                                                            else "from scratch"))
            if event.note:
                warn(event.note)
            self.view.started(event.job, event.epoch, where)
        elif isinstance(event, EpochDone):
            db.record_epoch(tid, event.result.epoch, vars(event.result), event.digest)
            self.view.epoch(event.job, event.result)
        elif isinstance(event, Diverged):
            db.mark(tid, State.DIVERGED, error=f"non-finite loss in epoch {event.epoch}", diverged_epoch=event.epoch)
            self.view.diverged(event.job, event.epoch)
        elif isinstance(event, Finished):
            job = event.job
            digests = self.store.save_results(tid, job.model.name, job.seed, event.weights, event.probs, event.labels,
                                               event.weights_meta)
            db.finish(tid, event.test_loss, event.test_accuracy, event.device, *digests)
            self.storage.delete(job.key)
            self.view.finished(job, event.test_loss, event.test_accuracy)

    def pruned(self, event: EpochDone) -> None:
        """A search's pruner stopped the trial after this (recorded, checkpointed) epoch."""
        self.store.db.mark(event.job.trial_id, State.PRUNED)
        self.view.pruned(event.job, event.result.epoch)


def resume_from(db: StudyDB, trial_id: int, history: list[dict], note: str | None) -> None:
    """Make a trial's epoch rows those of the checkpoint it resumes from (none: from scratch)."""
    for h in history:
        db.record_epoch(trial_id, h["epoch"], h)
    db.rewind(trial_id, history[-1]["epoch"] if history else 0, note or "")


@contextmanager
def heartbeat(db_path, owner: str, held: Callable[[], list[int]]) -> Iterator[None]:
    """Keep our claims fresh for other processes while tasks run long epochs."""
    stop = threading.Event()

    def beat() -> None:
        db = StudyDB(db_path)
        try:
            while not stop.wait(15.0):
                if ids := held():
                    db.heartbeat(ids, owner)
        finally:
            db.close()

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()

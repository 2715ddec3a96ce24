"""The local executor: trials in this process, claimed from study.db, one after another."""

from __future__ import annotations

import errno
import signal
import sqlite3
import threading
from typing import TYPE_CHECKING, Callable

from convstudy.errors import DiskFull, StoreError
from convstudy.executors.progress import ProgressView
from convstudy.executors.record import Recorder, heartbeat
from convstudy.store import CheckpointStorage
from convstudy.executors.trial import Diverged, EpochDone, Finished, TrialJob, run_trial
from convstudy.store import State, StudyStore, this_owner
from convstudy.train import TrialData

if TYPE_CHECKING:
    from convstudy.executors import Growth


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
              run_id: int, view: ProgressView, after_trial: Callable[[], None],
              numerics: dict[str, dict] | None = None, grow: "Growth | None" = None) -> bool:
    """Claim and train wanted trials until none is left; returns False when interrupted.

    With `grow` (a search), a free slot asks it for another trial (`grow.more()`) and every epoch
    whether to stop the trial there (`grow.prune`).
    """
    owner = this_owner()
    current: set[int] = set()  # trial ids being trained, for the heartbeat
    storage = CheckpointStorage(str(store.out.resolve()))
    record = Recorder(store, storage, view, owner)
    with heartbeat(store.db.path, owner, lambda: list(current)), Interrupt() as interrupt:
        while not interrupt.requested:
            rec = store.db.claim(owner, set(jobs), run_id, numerics)
            if rec is None:
                if grow is not None and grow.more():
                    continue
                return True
            job = jobs[(rec.model, rec.seed)](rec.id)
            unfinished = {job.trial_id}
            current.update(unfinished)
            events = run_trial(job, data, storage)
            try:
                for event in events:
                    record(event)
                    if isinstance(event, (Finished, Diverged)):
                        unfinished.discard(event.job.trial_id)
                    if isinstance(event, EpochDone) and grow is not None and grow.prune(event):
                        record.pruned(event)
                        unfinished.discard(event.job.trial_id)
                        break
                    if isinstance(event, EpochDone) and interrupt.requested:
                        break  # the epoch is checkpointed: stop here
            except KeyboardInterrupt:  # a second Ctrl-C: stop now, the last checkpoints hold
                interrupt.requested = True
            except StoreError:  # a damaged study directory is the user's to fix, not a failed trial
                release(store, unfinished, State.PENDING, "damaged study file")
                raise
            except Exception as exc:  # a bug or resource failure in one trial must not sink the study
                fail(store, view, [job] if unfinished else [], exc)
                unfinished = set()
            finally:
                events.close()
                current.clear()
            release(store, unfinished, State.PENDING, "interrupted")
            if interrupt.requested:
                return False
            after_trial()
        return False


def release(store: StudyStore, trial_ids: set[int], state: State, why: str) -> None:
    """Give trials up (pending again: a later run continues them from their checkpoints)."""
    for tid in trial_ids:
        store.db.mark(tid, state, error=why)


def fail(store: StudyStore, view: ProgressView, jobs: list[TrialJob], exc: Exception) -> None:
    """Mark `jobs` failed with the error; a full disk stops the whole run in one line instead."""
    try:
        for job in jobs:
            store.db.mark(job.trial_id, State.FAILED, error=f"{type(exc).__name__}: {exc}"[:500])
            view.failed(job, f"{type(exc).__name__}: {exc}")
    except Exception:  # a full disk can refuse the database write too; the claim then goes stale
        if not disk_full(exc):
            raise
    if disk_full(exc):  # every other trial would fail the same way: stop, say how to go on
        names = ", ".join(job.tag() for job in jobs)
        raise DiskFull(f"{store.out}: no space left on the device ({' '.join(str(exc).split())[:200]}); "
                       f"{names} stopped, its last checkpoint kept. Free space and rerun the same "
                       "command to retry it") from None

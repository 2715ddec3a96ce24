"""The executor loop, written once: claim trials, start them, record their events, prune, stop on Ctrl-C
or SIGTERM, release what did not end and fail what broke.

Executors differ only in their `Launcher`: how a trial is started and how its events come back.
`InProcess` (here) runs the trial's loop in this process; `pool.Processes` in worker processes and
`ray_executor.RayTasks` as Ray tasks, both through `run_remote`, which sends the events back. The
driver is the only writer of study.db, through the one `Recorder`.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import sqlite3
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Iterable, Iterator, Protocol

import numpy as np
import torch

from convstudy.data import Dataset
from convstudy.errors import DiskFull, StoreError
from convstudy.executors.record import Recorder, heartbeat
from convstudy.executors.trial import Diverged, EpochDone, Event, Finished, Progress, TrialJob, run_trial
from convstudy.spec import TrainSettings
from convstudy.store import CheckpointStorage, State, StudyStore
from convstudy.train import TrialData, describe, make_trial_data, resolve_device

if TYPE_CHECKING:
    from convstudy.executors.options import Growth, RunOptions


@dataclass(frozen=True)
class Done:
    """A started trial's run ended: `error` None (it returned), what it raised, or why its worker was lost."""

    job: TrialJob
    error: BaseException | str | None = None


class Launcher(Protocol):
    """How trials are started and how their events come back; `run_trials` does everything else. Trials train
    on `device` with `threads` threads (`threads_flag` changes them), `slots` at once; `host` is the run's
    device as recorded, `data_device` where this process keeps the data."""

    device: torch.device
    data_device: torch.device
    threads: int
    threads_flag: str
    host: str
    slots: int

    def session(self, ds: Dataset, data: TrialData, settings: TrainSettings,
                storage: CheckpointStorage) -> ContextManager[None]: ...

    def start(self, job: TrialJob) -> None: ...

    def poll(self) -> Iterable[tuple[str, Event | Done]]: ...

    def stop(self, job: TrialJob) -> None: ...


class Interrupt:
    """First Ctrl-C or SIGTERM (what cluster schedulers and `kill` send before they kill): finish the running
    epochs, checkpoint, stop. Second: stop now (the last checkpoints hold)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, object] = {}

    def __enter__(self) -> "Interrupt":
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)


def run_trials(launcher: Launcher, record: Recorder, claim: Callable[[], TrialJob | None],
               grow: "Growth | None" = None, after_trial: Callable[[], None] | None = None) -> bool:
    """Claim (`claim`) and run trials through `launcher` until none is left; returns False when interrupted.

    With `grow` (a search), a free slot asks it for another trial (`grow.more()`) and every epoch whether to
    stop the trial there (`grow.prune`). `after_trial` runs after every trial that ended.
    """
    store, view = record.store, record.view
    running: dict[int, TrialJob] = {}
    ended: set[int] = set()  # trials whose Finished or Diverged event was recorded, or that were pruned

    def drop(job: TrialJob, why: str | None = None) -> None:
        """Stop a running trial; with `why`, pending again (a later run continues it from its checkpoint)."""
        launcher.stop(job)
        running.pop(job.trial_id, None)
        view.dropped(job)
        if why is not None:
            store.db.mark(job.trial_id, State.PENDING, error=why)

    def on_event(where: str, event: Event | Done) -> bool:
        """Record one event of a running trial; True when the trial's run ended with it."""
        job = event.job
        if not isinstance(event, Done):
            try:
                record(event, where)
            except Exception as exc:  # e.g. a full disk while saving its results: its run ends here
                launcher.stop(job)
                event = Done(job, exc)
        if isinstance(event, Done):
            running.pop(job.trial_id)
            if isinstance(event.error, StoreError):  # a damaged study directory is the user's to fix
                drop(job, "damaged study file")
                raise event.error
            if event.error is not None or job.trial_id not in ended:
                fail(store, view, None if job.trial_id in ended else job,
                     event.error or "the worker returned before the trial ended")
            return True
        if isinstance(event, (Finished, Diverged)):
            ended.add(job.trial_id)
        elif isinstance(event, EpochDone) and grow is not None and grow.prune(event):
            record.pruned(event)  # its epoch is checkpointed and recorded: stop it there
            ended.add(job.trial_id)
            drop(job)
            return True
        elif isinstance(event, EpochDone) and interrupt.requested:  # the epoch is checkpointed: stop here
            drop(job, "interrupted")
        return False

    with heartbeat(store.db.path, record.owner, lambda: list(running)), Interrupt() as interrupt:
        try:
            while True:
                while not interrupt.requested and len(running) < launcher.slots:
                    if (job := claim()) is None:
                        if grow is not None and grow.more():
                            continue
                        break
                    running[job.trial_id] = job
                    view.submitted(job)
                    launcher.start(job)
                if not running:
                    return not interrupt.requested
                for where, event in launcher.poll():
                    if isinstance(event, Progress):
                        record(event)
                    # (what a stopped trial did before it was stopped is not its record any more)
                    elif event.job.trial_id in running and on_event(where, event) and after_trial is not None:
                        after_trial()
        except KeyboardInterrupt:  # a second Ctrl-C: stop now, the last checkpoints hold
            return False
        finally:
            for job in list(running.values()):
                drop(job, None if job.trial_id in ended else "interrupted")


def fail(store: StudyStore, view, job: TrialJob | None, error: BaseException | str) -> None:
    """Mark `job` failed with the error; a full disk stops the whole run in one line instead."""
    reason = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    full = not isinstance(error, str) and disk_full(error)
    try:
        if job is not None:
            store.db.mark(job.trial_id, State.FAILED, error=reason[:500])
            view.failed(job, reason)
    except Exception:  # a full disk can refuse the database write too; the claim then goes stale
        if not full:
            raise
    if full:  # every other trial would fail the same way: stop, say how to go on
        names = job.tag() if job is not None else "the trial"
        raise DiskFull(f"{store.out}: no space left on the device ({' '.join(str(error).split())[:200]}); "
                       f"{names} stopped, its last checkpoint kept. Free space and rerun the same "
                       "command to retry it") from None


def disk_full(exc: BaseException) -> bool:
    """Whether `exc` means the study's disk (or quota) is full: no trial can succeed until space is freed."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return isinstance(exc, sqlite3.OperationalError) and "full" in str(exc)


class InProcess:
    """The local executor: one trial at a time, its loop run right here (per-batch progress included)."""

    slots = 1
    threads_flag = "--workers (or OMP_NUM_THREADS)"

    def __init__(self, opts: "RunOptions") -> None:
        self.device = self.data_device = resolve_device(opts.device)
        self.threads = torch.get_num_threads()
        self.host = describe(self.device)
        self.trial: tuple[TrialJob, Iterator[Event]] | None = None

    @contextmanager
    def session(self, ds: Dataset, data: TrialData, settings: TrainSettings,
                storage: CheckpointStorage) -> Iterator[None]:
        self.data, self.storage = data, storage
        yield

    def start(self, job: TrialJob) -> None:
        self.trial = job, run_trial(job, self.data, self.storage)

    def poll(self) -> Iterator[tuple[str, Event | Done]]:
        job, events = self.trial
        try:
            for event in events:
                yield "", event
                if self.trial is None:  # stopped after this event
                    return
        except Exception as exc:  # a bug or resource failure in one trial must not sink the study
            self.trial = None
            yield "", Done(job, exc)
            return
        self.trial = None
        yield "", Done(job)

    def stop(self, job: TrialJob) -> None:
        if self.trial is not None:
            self.trial[1].close()
            self.trial = None


# ---- the trial's side of a worker (a worker process or a Ray task) --------------------------------------

def run_remote(job: TrialJob, arrays: dict[str, Any], settings: TrainSettings, storage: CheckpointStorage,
               send: Callable[[tuple[str, Event]], None]) -> None:
    """Run the trial's loop on a worker (resuming from its checkpoint) and `send` its events with where it ran."""
    torch.set_num_threads(job.plan.threads)
    data = make_trial_data(dataset_from_arrays(arrays), settings, torch.device(job.plan.device))
    where = f"{socket.gethostname()}:{os.getpid()}"
    for event in run_trial(job, data, storage):
        if not isinstance(event, Progress):  # the driver's table shows epochs, not batches
            send((where, event))


def dataset_arrays(ds: Dataset) -> dict[str, Any]:
    """The dataset as numpy arrays, which Ray's object store shares with workers without copying."""
    return {"info": ds.info, "source_dir": ds.source_dir, "x_train": ds.x_train.numpy(),
            "y_train": ds.y_train.numpy(), "x_test": ds.x_test.numpy(), "y_test": ds.y_test.numpy()}


def dataset_from_arrays(arrays: dict[str, Any]) -> Dataset:
    """A Dataset over the object store's read-only arrays (training only ever reads them)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        tensors = {k: torch.from_numpy(v) for k, v in arrays.items() if isinstance(v, np.ndarray)}
    return Dataset(info=arrays["info"], source_dir=arrays["source_dir"], **tensors)

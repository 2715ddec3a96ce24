"""The Ray executor's driver: trials as Ray tasks, the driver the only writer of study.db.

The dataset goes into Ray's object store once; each trial is one task (`train_on_worker`) that runs
the trial's loop, checkpoints to shared storage and streams its events back through a Ray queue, where
the local executor's Recorder writes them; workers never touch study.db. A task whose worker process or node dies is retried by Ray
(`max_retries`), resuming from its last checkpoint; each retry's start is counted as an attempt and
recorded as a `restart` event. Past MAX_RETRIES the trial is `failed` with the reason.
Ray is imported only here, inside functions, so convstudy works without it.
"""

from __future__ import annotations

import logging
import os
import socket
import warnings
from typing import Any, Callable

import numpy as np
import torch

from convstudy.data import Dataset
from convstudy.errors import StoreError, UserError
from convstudy.executors.local import Interrupt, release
from convstudy.executors.progress import ProgressView
from convstudy.executors.record import Recorder, heartbeat
from convstudy.executors.trial import Diverged, EpochDone, Finished, Progress, TrialJob, run_trial
from convstudy.spec import Study, TrainSettings
from convstudy.store import CheckpointStorage, State, StudyStore, storage_for, this_owner
from convstudy.train import make_trial_data

MAX_RETRIES = 3
POLL_S = 0.1


def require_ray():
    """The `ray` module, or a one-line UserError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray needs Ray: pip install 'convstudy[ray]'") from None
    return ray


def connect(ray, address: str | None) -> bool:
    """Join the cluster at `address`, or start a local Ray instance; True when we started or joined it."""
    if ray.is_initialized():  # a caller (a notebook, a test) already chose the cluster
        return False
    try:
        if address:
            ray.init(address=address, logging_level=logging.WARNING)
        else:
            ray.init(include_dashboard=False, logging_level=logging.WARNING)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        where = f"--address {address}" if address else "a local Ray instance"
        raise UserError(f"{where}: Ray could not start or connect ({' '.join(str(exc).split())[:200]})") from None
    return True


def trial_slots(ray, cpus: float, gpus: float) -> int:
    """How many trials the cluster runs at once with these per-trial resources."""
    res = ray.cluster_resources()
    slots = res.get("CPU", 0.0) / cpus
    if gpus > 0:
        slots = min(slots, res.get("GPU", 0.0) / gpus)
    if slots < 1:
        raise UserError(f"--cpus-per-trial {cpus:g} --gpus-per-trial {gpus:g}: the Ray cluster has only "
                        f"{res.get('CPU', 0):g} CPUs and {res.get('GPU', 0):g} GPUs")
    return int(slots + 1e-9)


def lost_reason(exc: BaseException) -> str:
    """The first line of Ray's (long) error, naming what died."""
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"[:300]


def run_ray(store: StudyStore, jobs: dict[tuple[str, int], Callable[[int], TrialJob]], ds: Dataset, study: Study,
            run_id: int, opts, view: ProgressView, after_trial: Callable[[], None],
            numerics: dict[str, dict] | None = None, grow=None) -> bool:
    """Train the wanted trials as Ray tasks until none is left; returns False when interrupted.

    With `grow` (a search, executors.Growth), a free slot asks it for another trial, and the driver
    asks it after every epoch whether to stop that trial: its task is cancelled, it is recorded as pruned.
    """
    ray = require_ray()
    if opts.device == "cuda" and opts.gpus_per_trial <= 0:
        raise UserError("--device cuda with --executor ray needs --gpus-per-trial > 0 (e.g. 0.25 to share a GPU)")
    storage = storage_for(store.out, study.name, study.fingerprint(), opts.storage)
    storage.check()
    started = connect(ray, opts.address)
    try:
        return _drive(ray, store, jobs, ds, study, run_id, opts, storage, view, after_trial, numerics, grow)
    finally:
        if started:
            ray.shutdown()


def _drive(ray, store: StudyStore, jobs, ds: Dataset, study: Study, run_id: int, opts,
           storage: CheckpointStorage, view: ProgressView, after_trial: Callable[[], None],
           numerics: dict[str, dict] | None, grow=None) -> bool:
    from ray.exceptions import (LocalRayletDiedError, NodeDiedError, ObjectLostError, OutOfMemoryError,
                                RayTaskError, WorkerCrashedError)
    from ray.util.queue import Queue
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    lost = (WorkerCrashedError, NodeDiedError, LocalRayletDiedError, ObjectLostError, OutOfMemoryError)
    owner = this_owner()
    slots = trial_slots(ray, opts.cpus_per_trial, opts.gpus_per_trial)
    # The event queue lives on the driver's node: left to Ray, a 0-CPU actor may land on a worker node, and
    # losing that node would take every running trial's events and the driver with it.
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    queue = Queue(actor_options={"num_cpus": 0, "scheduling_strategy": here})
    data_ref = ray.put(dataset_arrays(ds))
    task = ray.remote(train_on_worker)
    record = Recorder(store, storage, view, owner)
    inflight: dict[Any, TrialJob] = {}
    ended: set[int] = set()  # trials whose Finished or Diverged event arrived, or that were pruned
    pruned: set[int] = set()

    def drain() -> None:
        # Workers put synchronously, so once a task is done all its events are already queued.
        while n := queue.qsize():
            for where, event in queue.get_nowait_batch(n):
                if event.job.trial_id in ended:  # what a pruned trial's task did before it was cancelled
                    continue
                record(event, where)
                if isinstance(event, (Finished, Diverged)):
                    ended.add(event.job.trial_id)
                elif isinstance(event, EpochDone) and grow is not None and grow.prune(event):
                    record.pruned(event)  # its epoch is checkpointed and recorded: stop its task there
                    ended.add(event.job.trial_id)
                    pruned.add(event.job.trial_id)
                    ray.cancel(next(r for r, j in inflight.items() if j.trial_id == event.job.trial_id), force=True)

    def settle(ref) -> None:
        job = inflight.pop(ref)
        if job.trial_id in pruned:  # cancelled by us; nothing to get
            after_trial()
            return
        try:
            ray.get(ref)
        except RayTaskError as exc:
            cause = exc.cause if isinstance(getattr(exc, "cause", None), BaseException) else exc
            if isinstance(cause, StoreError):  # a damaged study file is the user's to fix, not a failed trial
                release(store, {job.trial_id}, State.PENDING, "damaged study file")
                view.dropped(job)
                raise cause from None
            fail(job, f"{type(cause).__name__}: {cause}"[:500])
        except lost as exc:  # Ray retried the task MAX_RETRIES times already
            fail(job, f"worker lost {MAX_RETRIES + 1} times; last: {lost_reason(exc)}")
        else:
            if job.trial_id not in ended:
                fail(job, "the worker returned before the trial ended")
        after_trial()

    def fail(job: TrialJob, reason: str) -> None:
        store.db.mark(job.trial_id, State.FAILED, error=reason)
        view.failed(job, reason)

    try:
        with heartbeat(store.db.path, owner, lambda: [j.trial_id for j in list(inflight.values())]), \
                Interrupt() as interrupt:
            while not interrupt.requested:
                while len(inflight) < slots:
                    rec = store.db.claim(owner, set(jobs), run_id, numerics)
                    if rec is None:
                        if grow is not None and grow.more():
                            continue
                        break
                    job = jobs[(rec.model, rec.seed)](rec.id)
                    # Ray retries a task whose worker died (not one that raised): a lost worker's trial
                    # resumes from its checkpoint, and its next start counts as an attempt.
                    ref = task.options(num_cpus=opts.cpus_per_trial, num_gpus=opts.gpus_per_trial,
                                       max_retries=MAX_RETRIES, retry_exceptions=False).remote(
                        job, data_ref, study.train, storage, queue)
                    inflight[ref] = job
                    view.submitted(job, 1)
                if not inflight:
                    return True
                ready, _ = ray.wait(list(inflight), num_returns=1, timeout=POLL_S)
                drain()
                for ref in ready:
                    settle(ref)
            return False
    finally:
        # Interrupted or failing: stop our tasks (their finished epochs are checkpointed) and release them.
        for ref in inflight:
            ray.cancel(ref, force=True)
        try:
            drain()
        except Exception:  # the queue actor may already be gone; the checkpoints still hold the epochs
            pass
        for job in inflight.values():
            if job.trial_id not in ended:
                release(store, {job.trial_id}, State.PENDING, "interrupted")
            view.dropped(job)


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


def train_on_worker(job: TrialJob, arrays: dict[str, Any], settings: TrainSettings, storage: CheckpointStorage,
                    queue) -> None:
    """Run the trial's loop in a Ray worker (resuming from its checkpoint) and forward its events."""
    torch.set_num_threads(job.plan.threads)
    data = make_trial_data(dataset_from_arrays(arrays), settings, torch.device(job.plan.device))
    where = f"{socket.gethostname()}:{os.getpid()}"
    for event in run_trial(job, data, storage):
        if not isinstance(event, Progress):  # the driver's table shows epochs, not batches
            queue.put((where, event))

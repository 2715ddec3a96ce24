"""The Ray executor's launcher: trials as Ray tasks, for the one executor loop (the driver the only writer of study.db).

The dataset goes into Ray's object store once; each trial is one task (`train_on_worker`) that runs
the trial's loop, checkpoints to shared storage and streams its events back through a Ray queue; workers
never touch study.db. A task whose worker process or node dies is retried by Ray (`max_retries`), resuming
from its last checkpoint; each retry's start is counted as an attempt and recorded as a `restart` event.
Past MAX_RETRIES the trial is `failed` with the reason. Ray is imported only here, inside functions, so
convstudy works without it.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator

import torch

from convstudy.data import Dataset
from convstudy.errors import UserError
from convstudy.executors.loop import Done, dataset_arrays, run_remote
from convstudy.executors.trial import Event, TrialJob
from convstudy.spec import TrainSettings
from convstudy.store import CheckpointStorage
from convstudy.train import TrialData

if TYPE_CHECKING:
    from convstudy.executors.options import RunOptions

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


class RayTasks:
    """`--executor ray`: one Ray task a trial, as many at once as the cluster has slots for."""

    threads_flag = "--cpus-per-trial"
    data_device = torch.device("cpu")  # the driver trains nothing

    def __init__(self, opts: "RunOptions") -> None:
        self.ray = require_ray()  # before anything is created or loaded
        if opts.device == "cuda" and opts.gpus_per_trial <= 0:
            raise UserError("--device cuda with --executor ray needs --gpus-per-trial > 0 (e.g. 0.25 to share a GPU)")
        self.opts = opts
        self.device = torch.device("cuda" if opts.gpus_per_trial > 0 and opts.device != "cpu" else "cpu")
        self.threads = max(1, int(opts.cpus_per_trial))
        self.host = f"ray: {self.device.type}"
        self.inflight: dict[Any, TrialJob] = {}

    @contextmanager
    def session(self, ds: Dataset, data: TrialData, settings: TrainSettings,
                storage: CheckpointStorage) -> Iterator[None]:
        from ray.util.queue import Queue
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        ray, opts = self.ray, self.opts
        started = connect(ray, opts.address)
        try:
            self.slots = trial_slots(ray, opts.cpus_per_trial, opts.gpus_per_trial)
            # The event queue lives on the driver's node: left to Ray, a 0-CPU actor may land on a worker node,
            # and losing that node would take every running trial's events and the driver with it.
            here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
            self.queue = Queue(actor_options={"num_cpus": 0, "scheduling_strategy": here})
            self.args = (ray.put(dataset_arrays(ds)), settings, storage, self.queue)
            self.task = ray.remote(train_on_worker)
            yield
        finally:
            for job in list(self.inflight.values()):  # their finished epochs are checkpointed
                self.stop(job)
            if started:
                ray.shutdown()

    def start(self, job: TrialJob) -> None:
        # Ray retries a task whose worker died (not one that raised): a lost worker's trial resumes from its
        # checkpoint, and its next start counts as an attempt.
        ref = self.task.options(num_cpus=self.opts.cpus_per_trial, num_gpus=self.opts.gpus_per_trial,
                                max_retries=MAX_RETRIES, retry_exceptions=False).remote(job, *self.args)
        self.inflight[ref] = job

    def poll(self) -> Iterator[tuple[str, Event | Done]]:
        from ray.exceptions import (LocalRayletDiedError, NodeDiedError, ObjectLostError, OutOfMemoryError,
                                    RayTaskError, WorkerCrashedError)

        ready, _ = self.ray.wait(list(self.inflight), num_returns=1, timeout=POLL_S)
        # Workers put synchronously, so once a task is done all its events are already queued.
        while n := self.queue.qsize():
            yield from self.queue.get_nowait_batch(n)
        for ref in ready:
            if (job := self.inflight.pop(ref, None)) is None:  # stopped meanwhile
                continue
            try:
                self.ray.get(ref)
            except RayTaskError as exc:
                yield "", Done(job, exc.cause if isinstance(getattr(exc, "cause", None), BaseException) else exc)
            except (WorkerCrashedError, NodeDiedError, LocalRayletDiedError, ObjectLostError,
                    OutOfMemoryError) as exc:  # Ray retried the task MAX_RETRIES times already
                first = (str(exc).strip().splitlines() or [""])[0]  # Ray's errors are long: the line naming what died
                yield "", Done(job, f"worker lost {MAX_RETRIES + 1} times; last: {type(exc).__name__}: {first}"[:300])
            else:
                yield "", Done(job)

    def stop(self, job: TrialJob) -> None:
        """Cancel the trial's task where it is (its last checkpoint holds)."""
        for ref in [r for r, j in self.inflight.items() if j.trial_id == job.trial_id]:
            self.ray.cancel(ref, force=True)
            del self.inflight[ref]


def train_on_worker(job: TrialJob, arrays: dict[str, Any], settings: TrainSettings, storage: CheckpointStorage,
                    queue) -> None:
    """A Ray task: run the trial's loop (resuming from its checkpoint) and forward its events to the driver."""
    run_remote(job, arrays, settings, storage, queue.put)

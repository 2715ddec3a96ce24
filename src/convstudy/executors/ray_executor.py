"""The Ray executor's driver: trials as Ray tasks, the driver the only writer of study.db.

The dataset goes into Ray's object store once; each trial is one task (see ray_worker.py) that
checkpoints to shared storage and streams epoch metrics back through a Ray queue. A task whose
worker process or node dies is submitted again and resumes from its last checkpoint, up to
MAX_RETRIES times, each retry recorded as a `restart` event; then the trial is `failed` with the reason.
Ray is imported only here, inside functions, so convstudy works without it.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from convstudy.data import Dataset
from convstudy.errors import StoreError, UserError
from convstudy.executors.local import Interrupt, resume_from
from convstudy.executors.progress import ProgressView, warn
from convstudy.executors.ray_progress import RayView
from convstudy.executors.ray_storage import CheckpointStorage, storage_for
from convstudy.executors.ray_worker import dataset_arrays, train_on_worker
from convstudy.executors.trial import TrialJob
from convstudy.spec import Study
from convstudy.store import StudyDB, StudyStore, this_owner
from convstudy.train import EpochResult

MAX_RETRIES = 3
POLL_S = 0.1


def require_ray():
    """The `ray` module, or a one-line UserError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray needs Ray: pip install 'convstudy[ray]'") from None
    return ray


@dataclass
class Attempt:
    job: TrialJob
    number: int  # 1 for the first submission of this run, +1 per lost worker


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


def lost_reason(exc: BaseException) -> str:
    """The first line of Ray's (long) error, naming what died."""
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"[:300]


def run_ray(store: StudyStore, jobs: dict[tuple[str, int], Callable[[int], TrialJob]], ds: Dataset, study: Study,
            run_id: int, opts, view: ProgressView, after_trial: Callable[[], None],
            numerics: dict[str, dict] | None = None) -> bool:
    """Train the wanted trials as Ray tasks until none is left; returns False when interrupted."""
    ray = require_ray()
    if opts.device == "cuda" and opts.gpus_per_trial <= 0:
        raise UserError("--device cuda with --executor ray needs --gpus-per-trial > 0 (e.g. 0.25 to share a GPU)")
    device = "cuda" if opts.gpus_per_trial > 0 and opts.device != "cpu" else "cpu"
    storage = storage_for(store.out, study.name, study.fingerprint(), opts.storage)
    storage.check()
    started = connect(ray, opts.address)
    rview = RayView(view.console, view.quiet)
    try:
        return _drive(ray, store, jobs, ds, study, run_id, opts, device, storage, rview, after_trial, numerics)
    finally:
        rview.close()
        if started:
            ray.shutdown()


def _drive(ray, store: StudyStore, jobs, ds: Dataset, study: Study, run_id: int, opts, device: str,
           storage: CheckpointStorage, view: RayView, after_trial: Callable[[], None],
           numerics: dict[str, dict] | None) -> bool:
    from ray.exceptions import (LocalRayletDiedError, NodeDiedError, ObjectLostError, OutOfMemoryError,
                                RayTaskError, WorkerCrashedError)
    from ray.util.queue import Queue

    lost = (WorkerCrashedError, NodeDiedError, LocalRayletDiedError, ObjectLostError, OutOfMemoryError)
    owner = this_owner()
    slots = trial_slots(ray, opts.cpus_per_trial, opts.gpus_per_trial)
    queue = Queue(actor_options={"num_cpus": 0})
    data_ref = ray.put(dataset_arrays(ds))
    task = ray.remote(train_on_worker)
    threads = max(1, int(opts.cpus_per_trial))
    inflight: dict[Any, Attempt] = {}
    by_id: dict[int, TrialJob] = {}

    def submit(job: TrialJob, number: int) -> None:
        job = dataclasses.replace(job, digests=tuple(store.db.checkpoint_digests(job.trial_id).items()))
        # max_retries=0: a lost worker comes back to us, so every retry is counted and recorded.
        ref = task.options(num_cpus=opts.cpus_per_trial, num_gpus=opts.gpus_per_trial, max_retries=0).remote(
            job, data_ref, study.train, storage, queue, threads, device, opts.precision)
        inflight[ref] = Attempt(job, number)
        by_id[job.trial_id] = job
        view.submitted(job, number)

    def on_message(msg: dict[str, Any]) -> None:
        job = by_id.get(msg["trial"])
        if job is None:
            return
        if msg["kind"] == "start":
            resume_from(store.db, job.trial_id, msg["history"], msg.get("note"))
            if msg.get("note"):
                warn(msg["note"])
            resumed = f"resuming after epoch {msg['epoch']}" if msg["epoch"] else "from scratch"
            store.db.add_event(job.trial_id, "worker", f"{msg['where']}, {resumed}")
            view.started(job, msg["where"], msg["epoch"])
        elif msg["kind"] == "epoch":
            result = EpochResult(**msg["result"])
            store.db.record_epoch(job.trial_id, result.epoch, msg["result"], msg["digest"])
            view.epoch(job, result)

    def drain() -> None:
        # Workers put synchronously, so once a task is done all its messages are already queued.
        while n := queue.qsize():
            for msg in queue.get_nowait_batch(n):
                on_message(msg)

    def settle(ref) -> None:
        attempt = inflight.pop(ref)
        job, tid = attempt.job, attempt.job.trial_id
        try:
            out = ray.get(ref)
        except RayTaskError as exc:
            cause = exc.cause if isinstance(getattr(exc, "cause", None), BaseException) else exc
            if isinstance(cause, StoreError):  # a damaged checkpoint is the user's to fix, not a failed trial
                store.db.mark(tid, "pending", error="damaged checkpoint")
                view.dropped(job)
                raise cause from None
            reason = f"{type(cause).__name__}: {cause}"[:500]
            store.db.mark(tid, "failed", error=reason)
            view.failed(job, reason)
        except lost as exc:
            reason = lost_reason(exc)
            if attempt.number <= MAX_RETRIES:
                store.db.retry(tid, owner, reason)
                view.restarted(job, reason, attempt.number + 1)
                submit(job, attempt.number + 1)
                return
            reason = f"worker lost {attempt.number} times; last: {reason}"
            store.db.mark(tid, "failed", error=reason)
            view.failed(job, reason)
        else:
            if out["state"] == "complete":
                digests = store.save_results(tid, job.model.name, job.seed, out["weights"], out["probs"],
                                             out["labels"])
                store.db.finish(tid, out["test_loss"], out["test_accuracy"], out["device"], *digests)
                storage.delete(storage.key(job.model.name, job.seed))
                view.finished(job, out["test_loss"], out["test_accuracy"])
            elif out["state"] == "diverged":
                store.db.mark(tid, "diverged", error=f"non-finite loss in epoch {out['epoch']}",
                              diverged_epoch=out["epoch"])
                view.diverged(job, out["epoch"])
        after_trial()

    try:
        with heartbeat(store.db.path, owner, lambda: [a.job.trial_id for a in list(inflight.values())]), \
                Interrupt() as interrupt:
            while not interrupt.requested:
                while len(inflight) < slots:
                    rec = store.db.claim(owner, set(jobs), run_id, numerics)
                    if rec is None:
                        break
                    submit(jobs[(rec.model, rec.seed)](rec.id), 1)
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
        for attempt in inflight.values():
            store.db.mark(attempt.job.trial_id, "pending", error="interrupted")
            view.dropped(attempt.job)

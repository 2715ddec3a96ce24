"""`--workers N`: N local worker processes train trials at once, one trial each, for the one executor loop.

Small models leave a GPU (or a many-core CPU) mostly idle, so training a few trials at once fills it.
Each worker runs the trial's loop (`loop.run_remote`) and sends its events back through its own pipe;
this process claims, records and stops trials as it does for the other executors.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing as mp
import os
import pickle
import signal
import sys
from contextlib import contextmanager
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING, Any, Iterator

import torch

from convstudy.data import Dataset
from convstudy.executors.loop import Done, dataset_arrays, run_remote
from convstudy.executors.trial import Event, TrialJob
from convstudy.spec import TrainSettings
from convstudy.store import CheckpointStorage
from convstudy.store.db import pid_alive
from convstudy.train import TrialData, describe, resolve_device

if TYPE_CHECKING:
    from convstudy.executors.options import RunOptions

POLL_S = 0.1
_PR_SET_PDEATHSIG = 1


def share_cpu_threads(workers: int) -> int:
    """Give each of `workers` processes an equal share of the cores unless the user set OMP_NUM_THREADS.

    Several processes each running torch's default (all cores) oversubscribe the CPU, and OpenMP's
    spinning barriers then collapse (docs/benchmarks.md: 2 threads each on 2 shared cores ran k3-2
    5x slower than 1). Returns the thread count each process now uses.
    """
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    return torch.get_num_threads()


# Workers are forked from multiprocessing's fork server, which imports these once per driver process: a spawned
# worker imported torch, torch._dynamo (its optimisers' first step does) and convstudy on its own, 5-6 s of CPU
# per worker on the 2-core EPYC, paid again by every run of a search, racing round or fair level. The server
# only imports (no tensor work, no threads), so a fork of it is as clean as a spawn; CUDA stays uninitialised.
PRELOAD = ["torch", "torch._dynamo", "convstudy.executors.pool"]


def die_with_parent(driver: int) -> None:
    """Ask the kernel to send this process SIGTERM when its parent (the fork server, which exits when the
    driver does) dies (Linux), so a worker whose driver was killed with -9 stops (its last checkpoint holds)
    instead of training on as an orphan."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() == 1 or not pid_alive(driver):  # it died before the request was in place
        os.kill(os.getpid(), signal.SIGTERM)


def _work(conn: Connection, arrays: dict[str, Any], settings: TrainSettings, storage: CheckpointStorage,
          driver: int) -> None:
    """A worker process: train the trials the driver sends, one at a time, until the driver ends it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the driver decides
    die_with_parent(driver)

    def send(item: tuple[str, Event | Done]) -> None:  # pickled by value, not through shared-memory handles
        conn.send_bytes(pickle.dumps(item))

    while True:
        job = conn.recv()
        try:
            run_remote(job, arrays, settings, storage, send)
        except Exception as exc:  # one that does not pickle ends the worker: the driver sees it died
            send(("", Done(job, exc)))
        else:
            send(("", Done(job)))


class Processes:
    """`--workers N`: trials in N worker processes (forked from the fork server), each with 1/N of the CPU cores."""

    threads_flag = "--workers (or OMP_NUM_THREADS)"
    data_device = torch.device("cpu")  # the driver trains nothing

    def __init__(self, opts: "RunOptions") -> None:
        self.slots = opts.workers
        self.device = resolve_device(opts.device)
        self.threads = share_cpu_threads(opts.workers)
        self.host = describe(self.device)
        self.idle: list[tuple[mp.Process, Connection]] = []
        self.busy: dict[int, tuple[mp.Process, Connection, TrialJob]] = {}  # trial id -> its worker

    @contextmanager
    def session(self, ds: Dataset, data: TrialData, settings: TrainSettings,
                storage: CheckpointStorage) -> Iterator[None]:
        self.args = (dataset_arrays(ds), settings, storage, os.getpid())
        try:
            yield
        finally:
            for proc, conn, *_ in [*self.idle, *self.busy.values()]:
                proc.terminate()
                proc.join()
                conn.close()

    def start(self, job: TrialJob) -> None:
        proc, conn = self.idle.pop() if self.idle else self._start_worker()
        conn.send(job)
        self.busy[job.trial_id] = proc, conn, job

    def _start_worker(self) -> tuple[mp.Process, Connection]:
        ctx = mp.get_context("forkserver")  # not fork: CUDA cannot be used in children forked from this process
        ctx.set_forkserver_preload(PRELOAD)  # read when the server starts, at this process's first worker
        mine, theirs = ctx.Pipe()
        proc = ctx.Process(target=_work, args=(theirs, *self.args), daemon=True)
        proc.start()
        theirs.close()
        return proc, mine

    def poll(self) -> Iterator[tuple[str, Event | Done]]:
        workers = {conn: (proc, job) for proc, conn, job in self.busy.values()}
        for conn in wait(list(workers), timeout=POLL_S):
            proc, job = workers[conn]
            if job.trial_id not in self.busy:  # stopped meanwhile
                continue
            try:
                where, event = pickle.loads(conn.recv_bytes())
            except (EOFError, OSError):
                proc.join(5)
                del self.busy[job.trial_id]
                yield "", Done(job, f"worker process {proc.pid} died (exit code {proc.exitcode})")
                continue
            if isinstance(event, Done):
                self.idle.append(self.busy.pop(job.trial_id)[:2])
            yield where, event

    def stop(self, job: TrialJob) -> None:
        """Stop the trial where it is (its last checkpoint holds): its worker process ends."""
        if (worker := self.busy.pop(job.trial_id, None)) is not None:
            proc, conn, _ = worker
            proc.terminate()
            proc.join()
            conn.close()

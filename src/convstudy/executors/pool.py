"""Several local worker processes on one study: each claims trials from the same study.db.

Small models leave a GPU (or a many-core CPU) mostly idle, so training a few trials at once fills
it; claims are transactional (`StudyDB.claim`), so no trial is trained twice.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import io
import multiprocessing as mp
import os
import signal
import sys
from dataclasses import replace

from rich.console import Console

from convstudy.spec import Study
from convstudy.store import StudyStore


def share_cpu_threads(workers: int) -> int:
    """Give each of `workers` processes an equal share of the cores unless the user set OMP_NUM_THREADS.

    Several processes each running torch's default (all cores) oversubscribe the CPU, and OpenMP's
    spinning barriers then collapse (docs/benchmarks.md: 2 threads each on 2 shared cores ran k3-2
    5x slower than 1). Returns the thread count this process now uses.
    """
    import torch

    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    return torch.get_num_threads()


def die_with_parent(parent: int) -> None:
    """Ask the kernel to send this process SIGTERM when its parent dies (Linux), so a worker whose
    parent was killed with -9 stops after its epoch (checkpointed, trial released) instead of training
    on as an orphan."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # it died before the request was in place
        os.kill(os.getpid(), signal.SIGTERM)


_PR_SET_PDEATHSIG = 1


def _worker(study: Study, opts, workers: int, parent: int) -> None:
    from convstudy.executors import run_study

    die_with_parent(parent)
    share_cpu_threads(workers)
    run_study(study, opts, Console(file=io.StringIO()))


def run_with_workers(study: Study, opts, workers: int, console: Console | None = None) -> tuple[StudyStore, bool]:
    """`run_study` in this process plus `workers - 1` spawned ones; returns once all of them stopped."""
    from convstudy.executors import run_study
    from convstudy.report import write_reports

    StudyStore.create_or_open(opts.out, study)  # created once here, so the workers only ever open it
    ctx = mp.get_context("spawn")  # CUDA cannot be used in forked children
    procs = [ctx.Process(target=_worker, args=(study, replace(opts, quiet=True), workers, os.getpid()))
             for _ in range(workers - 1)]
    for p in procs:
        p.start()

    def forward(signum, frame) -> None:  # SIGTERM reaches this process only; Ctrl-C reaches the whole group
        for p in procs:
            if p.is_alive():
                os.kill(p.pid, signum)

    old = signal.signal(signal.SIGTERM, forward)
    share_cpu_threads(workers)
    try:
        store, finished = run_study(study, opts, console)
    finally:
        for p in procs:
            p.join()
        signal.signal(signal.SIGTERM, old)
    write_reports(store)  # the workers may have finished trials after this process's last report
    return store, finished and all(p.exitcode == 0 for p in procs)

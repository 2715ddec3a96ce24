"""Several local worker processes on one study: each claims trials from the same study.db.

Small models leave a GPU (or a many-core CPU) mostly idle, so training a few trials at once fills
it; claims are transactional (`StudyDB.claim`), so no trial is trained twice.
"""

from __future__ import annotations

import io
import multiprocessing as mp
import os
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


def _worker(study: Study, opts, workers: int) -> None:
    from convstudy.executors import run_study

    share_cpu_threads(workers)
    run_study(study, opts, Console(file=io.StringIO()))


def run_with_workers(study: Study, opts, workers: int, console: Console | None = None) -> tuple[StudyStore, bool]:
    """`run_study` in this process plus `workers - 1` spawned ones; returns once all of them stopped."""
    from convstudy.executors import run_study
    from convstudy.report import write_reports

    StudyStore.create_or_open(opts.out, study)  # created once here, so the workers only ever open it
    ctx = mp.get_context("spawn")  # CUDA cannot be used in forked children
    procs = [ctx.Process(target=_worker, args=(study, replace(opts, quiet=True), workers)) for _ in range(workers - 1)]
    for p in procs:
        p.start()
    share_cpu_threads(workers)
    try:
        store, finished = run_study(study, opts, console)
    finally:
        for p in procs:
            p.join()
    write_reports(store)  # the workers may have finished trials after this process's last report
    return store, finished and all(p.exitcode == 0 for p in procs)

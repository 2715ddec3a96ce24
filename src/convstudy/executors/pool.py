"""Several local worker processes on one study: each claims trials from the same study.db.

Small models leave a GPU (or a many-core CPU) mostly idle, so training a few trials at once fills
it; claims are transactional (`StudyDB.claim`), so no trial is trained twice.
"""

from __future__ import annotations

import io
import multiprocessing as mp
from dataclasses import replace

from rich.console import Console

from convstudy.spec import Study
from convstudy.store import StudyStore


def _worker(study: Study, opts) -> None:
    from convstudy.executors import run_study

    run_study(study, opts, Console(file=io.StringIO()))


def run_with_workers(study: Study, opts, workers: int, console: Console | None = None) -> tuple[StudyStore, bool]:
    """`run_study` in this process plus `workers - 1` spawned ones; returns once all of them stopped."""
    from convstudy.executors import run_study
    from convstudy.report import write_reports

    StudyStore.create_or_open(opts.out, study)  # created once here, so the workers only ever open it
    ctx = mp.get_context("spawn")  # CUDA cannot be used in forked children
    procs = [ctx.Process(target=_worker, args=(study, replace(opts, quiet=True))) for _ in range(workers - 1)]
    for p in procs:
        p.start()
    try:
        store, finished = run_study(study, opts, console)
    finally:
        for p in procs:
            p.join()
    write_reports(store)  # the workers may have finished trials after this process's last report
    return store, finished and all(p.exitcode == 0 for p in procs)

"""Executors decide where trials run; `run_study` is the one entry point for every executor.

It opens (or resumes) the study directory, creates the wanted trials, loads the data once, hands
trials to the chosen executor, and refreshes the reports after every finished trial.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from rich.console import Console

from convstudy.data import load_dataset
from convstudy.errors import UserError
from convstudy.executors.progress import ProgressView
from convstudy.executors.trial import TrialJob, run_trial
from convstudy.spec import Study
from convstudy.store import StudyStore
from convstudy.store.provenance import provenance
from convstudy.train.data import make_trial_data
from convstudy.train.device import default_channels_last, describe, resolve_device, resolve_precision

EXECUTORS = ("local", "ray")

__all__ = ["EXECUTORS", "RunOptions", "TrialJob", "run_study", "run_trial"]


@dataclass(frozen=True)
class RunOptions:
    out: Path
    models: tuple[str, ...] | None = None
    device: str = "auto"
    precision: str = "auto"
    data_dir: str | None = None
    executor: str = "local"
    address: str | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    storage: str | None = None
    quiet: bool = False
    stack_seeds: int | None = None  # None: auto (resolve_auto)
    streams: int | None = None  # None: auto (resolve_auto)


# What `auto` means for --stack-seeds and --streams: on CUDA, up to 8 seeds of a model stacked into one
# network and 4 lanes of trials side by side, because small models leave a GPU idle between kernel
# launches (neither is timed on a GPU yet). On the CPU both stay 1: stacking measured no faster on this
# project's 2-core machine (3 seeds, one epoch: k3-2 16.7 s stacked vs 17.1 s alone, k3-4 22.9 vs 19.5),
# and lanes only take turns there (each op already uses every core), so lone trials keep their
# bit-exact numbers.
STACK_AUTO_CUDA = 8
STREAMS_AUTO_CUDA = 4


def resolve_auto(value: int | None, device: torch.device, on_cuda: int) -> int:
    """`value`, or for auto (None) `on_cuda` on a CUDA device and 1 elsewhere."""
    if value is not None:
        return value
    return on_cuda if device.type == "cuda" else 1


def run_study(study: Study, opts: RunOptions, console: Console | None = None) -> tuple[StudyStore, bool]:
    """Run (or resume) `study` into `opts.out`; returns the store and whether every wanted trial ended."""
    from convstudy.report import write_reports

    console = console or Console(highlight=False)
    if opts.executor not in EXECUTORS:
        raise UserError(f"--executor {opts.executor}: unknown executor; valid: {', '.join(EXECUTORS)}")
    if opts.executor == "ray":
        from convstudy.executors.ray_executor import require_ray

        require_ray()  # before anything is created or loaded
    names = [m.name for m in study.models]
    wanted_models = list(opts.models or names)
    for name in wanted_models:
        if name not in names:
            raise UserError(f'--models: study "{study.name}" has no model "{name}"; models: {", ".join(names)}')
    device = resolve_device(opts.device)
    precision = resolve_precision(opts.precision, device)
    local = opts.executor == "local"  # Ray: one trial a task
    stack = resolve_auto(opts.stack_seeds, device, STACK_AUTO_CUDA) if local else 1
    streams = resolve_auto(opts.streams, device, STREAMS_AUTO_CUDA) if local else 1
    store = StudyStore.create_or_open(opts.out, study)
    position = {n: i for i, n in enumerate(names)}
    store.db.ensure_trials([(m, s, position[m]) for m in wanted_models for s in study.seeds])
    wanted = {(m, s) for m in wanted_models for s in study.seeds}
    todo = [r for r in store.db.trials() if (r.model, r.seed) in wanted and r.state not in ("complete", "diverged")]
    done = len(wanted) - len(todo)
    if not todo:
        console.print(f"all {len(wanted)} trials of {study.name} are finished in {store.out}; nothing to run")
        write_reports(store)
        return store, True
    if done:
        console.print(f"resuming {study.name} in {store.out}: {done} of {len(wanted)} trials already finished")
    ds = load_dataset(study.dataset, opts.data_dir)
    data = make_trial_data(ds, study.train, device)
    run_id = store.db.add_run(provenance(describe(device), {
        "executor": opts.executor, "precision": precision, "stack_seeds": stack, "streams": streams,
        "n_train": len(data.train), "n_val": len(data.val),
        "n_test": len(data.test), "data_dir": str(ds.source_dir)}))
    # (model, seed) -> a TrialJob factory taking the trial id the executor claims.
    jobs = {
        (m.name, s): partial(TrialJob, model=m, settings=m.settings(study.train), seed=s,
                             input_shape=ds.info.input_shape, precision=precision,
                             channels_last=default_channels_last(device))
        for m in study.models for s in study.seeds if (m.name, s) in wanted
    }
    view = ProgressView(console, n_train=len(data.train), quiet=opts.quiet)
    try:
        if opts.executor == "ray":
            from convstudy.executors.ray_executor import run_ray

            finished = run_ray(store, jobs, ds, study, run_id, opts, view, lambda: write_reports(store))
        else:
            from convstudy.executors.local import run_local

            finished = run_local(store, jobs, data, run_id, describe(device), view, lambda: write_reports(store),
                                 stack=stack, streams=streams)
    finally:
        view.close()
    write_reports(store)
    if not finished:
        console.print(f"stopped; every finished epoch is checkpointed. Resume with the same command "
                      f"(output directory {store.out}).")
    return store, finished

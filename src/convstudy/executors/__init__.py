"""Executors decide where trials run; `run_study` is the one entry point for every executor.

It opens (or resumes) the study directory, creates the wanted trials, loads the data once, hands
trials to the chosen executor, and refreshes the reports after every finished trial.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Protocol

import torch
from rich.console import Console

from convstudy.data import load_dataset
from convstudy.errors import DiskFull, UserError
from convstudy.executors.local import disk_full
from convstudy.executors.progress import ProgressView
from convstudy.executors.trial import EpochDone, Event, TrialJob, run_trial
from convstudy.spec import ModelSpec, Study
from convstudy.store import FINISHED, State, StudyStore, check_numerics, provenance
from convstudy.train import describe, make_trial_data, plan, resolve_device, resolve_precision

EXECUTORS = ("local", "ray")

__all__ = ["EXECUTORS", "Event", "Growth", "RunOptions", "TrialJob", "run_study", "run_trial"]


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
    seeds_of: dict[str, tuple[int, ...]] | None = None  # racing: the seeds each model has earned so far


class Growth(Protocol):
    """Models that join a study while it runs: convstudy.search samples them (issue 18).

    `start(store, add)` is called once the study directory is open, with `add(model)`, which makes a
    model one of the study's (plan, trials of every seed, a job); then an executor with a free slot and
    nothing left to claim calls `more()` (True: it added a trial), and after every epoch `prune(event)`
    (True: stop the trial there, recorded as pruned).
    """

    def start(self, store: StudyStore, add: Callable[[ModelSpec], None]) -> None: ...

    def more(self) -> bool: ...

    def prune(self, event: EpochDone) -> bool: ...


# The flag a user changes to change each recorded setting, for the message that refuses a mixed resume.
_FLAGS = {"device": "--device", "precision": "--precision", "channels_last": "--device",
          "conv_dft": "--precision", "threads": "--workers (or OMP_NUM_THREADS; --cpus-per-trial with Ray)"}


def run_study(study: Study, opts: RunOptions, console: Console | None = None,
              grow: Growth | None = None) -> tuple[StudyStore, bool]:
    """Run (or resume) `study` into `opts.out`; returns the store and whether every wanted trial ended.

    With `grow` (a search), the study's models are those `grow` adds as it runs, every seed of each.
    """
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
    local = opts.executor == "local"  # Ray: one trial a task
    device = resolve_device(opts.device) if local else torch.device("cpu")  # the Ray driver trains nothing
    # Where trials train, and with how many threads: here, or on Ray's workers. Decided once, here.
    trial_device = device if local else torch.device("cuda" if opts.gpus_per_trial > 0 and opts.device != "cpu"
                                                     else "cpu")
    precision = resolve_precision(opts.precision, trial_device)
    threads = torch.get_num_threads() if local else max(1, int(opts.cpus_per_trial))
    ds = load_dataset(study.dataset, opts.data_dir)  # before the store: a data error leaves it untouched
    plans = {m.name: plan(m, ds.info.input_shape, trial_device, precision, threads) for m in study.models
             if m.name in wanted_models}
    numerics = {name: p.numerics() for name, p in plans.items()}
    store = StudyStore.create_or_open(opts.out, study)
    if grow is not None:  # the models it added before are the study's (the store keeps them)
        study = store.study
        wanted_models = names = [m.name for m in study.models]
        plans.update({m.name: plan(m, ds.info.input_shape, trial_device, precision, threads) for m in study.models
                      if m.name not in plans})
        numerics.update({name: p.numerics() for name, p in plans.items()})
    position = {n: i for i, n in enumerate(names)}
    seeds_of = opts.seeds_of or {}
    pairs = [(m, s) for m in wanted_models for s in seeds_of.get(m, study.seeds)]
    store.db.ensure_trials([(m, s, position[m]) for m, s in pairs])
    wanted = set(pairs)
    todo = [r for r in store.db.trials()
            if (r.model, r.seed) in wanted and r.state not in FINISHED]
    check_numerics(todo, numerics, {**_FLAGS, "threads": _FLAGS["threads"] if local else "--cpus-per-trial"})
    done = len(wanted) - len(todo)
    if not todo and grow is None:
        console.print(f"all {len(wanted)} trials of {study.name} are finished in {store.out}; nothing to run")
        write_reports(store)
        return store, True
    if done:
        console.print(f"resuming {study.name} in {store.out}: {done} of {len(wanted)} trials already finished")
    for r in todo:
        if r.state == State.FAILED:
            console.print(f"retrying {r.model} seed {r.seed} from its last checkpoint; it failed with: {r.error}",
                          soft_wrap=True, markup=False)
    data = make_trial_data(ds, study.train, device)
    run_id = store.db.add_run(provenance(describe(trial_device) if local else f"ray: {trial_device.type}", {
        "executor": opts.executor, "precision": precision,
        "n_train": len(data.train), "n_val": len(data.val),
        "n_test": len(data.test), "data_dir": str(ds.source_dir), "dataset": ds.provenance}))

    def job(model: ModelSpec, seed: int, trial_id: int) -> TrialJob:  # with study.db's record of its checkpoints
        return TrialJob(trial_id, model, model.settings(study.train), seed, ds.info.input_shape, plans[model.name],
                        store.owner(model.name, seed), tuple(store.db.checkpoint_digests(trial_id).items()))

    # (model, seed) -> a TrialJob factory taking the trial id the executor claims.
    jobs = {(m.name, s): partial(job, m, s) for m in study.models for s in study.seeds if (m.name, s) in wanted}

    def add(model: ModelSpec) -> None:  # a model joins the running study (a search sampled it)
        store.add_model(model)
        plans[model.name] = plan(model, ds.info.input_shape, trial_device, precision, threads)
        numerics[model.name] = plans[model.name].numerics()
        store.db.ensure_trials([(model.name, s, len(store.study.models) - 1) for s in study.seeds])
        jobs.update({(model.name, s): partial(job, model, s) for s in study.seeds})

    if grow is not None:
        grow.start(store, add)
    view = ProgressView(console, n_train=len(data.train), quiet=opts.quiet)
    try:
        if opts.executor == "ray":
            from convstudy.executors.ray_executor import run_ray

            finished = run_ray(store, jobs, ds, study, run_id, opts, view, lambda: write_reports(store), numerics,
                               grow)
        else:
            from convstudy.executors.local import run_local

            finished = run_local(store, jobs, data, run_id, view, lambda: write_reports(store), numerics, grow)
        write_reports(store)
    except Exception as exc:
        if disk_full(exc) and not isinstance(exc, UserError):  # e.g. while refreshing the reports
            raise DiskFull(f"{store.out}: no space left on the device ({' '.join(str(exc).split())[:200]}); "
                           "free space and rerun the same command") from None
        raise
    finally:
        view.close()
    if not finished:
        console.print(f"stopped; every finished epoch is checkpointed. Resume with the same command "
                      f"(output directory {store.out}).")
    return store, finished

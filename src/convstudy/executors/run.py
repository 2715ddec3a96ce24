"""`run_study`: open (or resume) a study directory, create the wanted trials, load the data once and run
them with the one executor loop (`loop.run_trials`) through the launcher `launcher_for` picks."""

from __future__ import annotations

import time
from functools import partial
from typing import Callable

from rich.console import Console

from convstudy.data import load_dataset
from convstudy.errors import DiskFull, UserError
from convstudy.executors.loop import InProcess, Launcher, disk_full, run_trials
from convstudy.executors.options import EXECUTORS, Growth, RunOptions
from convstudy.executors.progress import ProgressView
from convstudy.executors.record import Recorder
from convstudy.executors.trial import TrialJob
from convstudy.spec import ModelSpec, Study
from convstudy.store import FINISHED, State, StudyStore, check_numerics, provenance, storage_for, this_owner
from convstudy.train import make_trial_data, plan, resolve_precision


# A refresh after a trial waits until REFRESH_PACE times the last refresh's own time has passed since it
# ended, so the reports cost at most a fifth of the time: when trials end seconds apart (small models,
# searches, the levels of a fair study, each a run of its own) redrawing every figure after each one took
# longer than the training (a tiny fair study: 80 of 93 s). Trials of minutes still refresh after every one;
# the end of a run always refreshes. A process's first refresh is paced as if one of FIRST_REFRESH_S had just
# ended: the report's imports and first drawings take about that (5 s of CPU on the 2-core EPYC), so a run of
# a few seconds draws its reports once, at its end, not also after its first trial.
REFRESH_PACE = 4.0
FIRST_REFRESH_S = 5.0


class Pacer:
    """Calls a refresh unless the last one, here or in an earlier run of this process, ended too recently."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, first: float = FIRST_REFRESH_S) -> None:
        self.clock, self.last_end, self.cost = clock, clock(), first

    def __call__(self, refresh: Callable[[], object], force: bool = False) -> None:
        start = self.clock()
        if not force and start - self.last_end < REFRESH_PACE * self.cost:
            return
        refresh()
        self.last_end = self.clock()
        self.cost = self.last_end - start


_PACER = Pacer()  # one per process: the runs of a search or fair study pace their refreshes together


def launcher_for(opts: RunOptions) -> Launcher:
    """The one place an executor is chosen: this process, `--workers` processes or Ray tasks."""
    if opts.executor not in EXECUTORS:
        raise UserError(f"--executor {opts.executor}: unknown executor; valid: {', '.join(EXECUTORS)}")
    if opts.executor == "ray":
        from convstudy.executors.ray_executor import RayTasks

        return RayTasks(opts)
    if opts.workers > 1:
        from convstudy.executors.pool import Processes

        return Processes(opts)
    return InProcess(opts)


# The flag a user changes to change each recorded setting, for the message that refuses a mixed resume.
_FLAGS = {"device": "--device", "precision": "--precision", "channels_last": "--device", "conv_dft": "--precision"}


def run_study(study: Study, opts: RunOptions, console: Console | None = None,
              grow: Growth | None = None) -> tuple[StudyStore, bool]:
    """Run (or resume) `study` into `opts.out`; returns the store and whether every wanted trial ended.

    With `grow` (a search), the study's models are those `grow` adds as it runs, every seed of each.
    """
    console = console or Console(highlight=False)
    launcher = launcher_for(opts)  # before anything is created or loaded
    names = [m.name for m in study.models]
    wanted_models = list(opts.models or names)
    for name in wanted_models:
        if name not in names:
            raise UserError(f'--models: study "{study.name}" has no model "{name}"; models: {", ".join(names)}')
    precision = resolve_precision(opts.precision, launcher.device)
    ds = load_dataset(study.dataset, opts.data_dir)  # before the store: a data error leaves it untouched
    plan_of = partial(plan, input_shape=ds.info.input_shape, device=launcher.device, precision=precision,
                      threads=launcher.threads)
    plans = {m.name: plan_of(m) for m in study.models if m.name in wanted_models}
    store = StudyStore.create_or_open(opts.out, study)
    if grow is not None:  # the models it added before are the study's (the store keeps them)
        study = store.study
        wanted_models = names = [m.name for m in study.models]
        plans.update({m.name: plan_of(m) for m in study.models if m.name not in plans})
    numerics = {name: p.numerics() for name, p in plans.items()}
    position = {n: i for i, n in enumerate(names)}
    seeds_of = opts.seeds_of or {}
    pairs = [(m, s) for m in wanted_models for s in seeds_of.get(m, study.seeds)]
    store.db.ensure_trials([(m, s, position[m]) for m, s in pairs])
    wanted = set(pairs)
    todo = [r for r in store.db.trials() if (r.model, r.seed) in wanted and r.state not in FINISHED]
    check_numerics(todo, numerics, {**_FLAGS, "threads": launcher.threads_flag})
    done = len(wanted) - len(todo)
    if not todo and grow is None:
        console.print(f"all {len(wanted)} trials of {study.name} are finished in {store.out}; nothing to run")
        _PACER(lambda: opts.refreshed(store), force=opts.final_refresh)
        return store, True
    if done:
        console.print(f"resuming {study.name} in {store.out}: {done} of {len(wanted)} trials already finished")
    for r in todo:
        if r.state == State.FAILED:
            console.print(f"retrying {r.model} seed {r.seed} from its last checkpoint; it failed with: {r.error}",
                          soft_wrap=True, markup=False)
    data = make_trial_data(ds, study.train, launcher.data_device)
    run_id = store.db.add_run(provenance(launcher.host, {
        "executor": opts.executor, "precision": precision,
        "n_train": len(data.train), "n_val": len(data.val),
        "n_test": len(data.test), "data_dir": str(ds.source_dir), "dataset": ds.provenance}))

    def job(model: ModelSpec, seed: int, trial_id: int) -> TrialJob:  # with study.db's record of its checkpoints
        return TrialJob(trial_id, model, model.settings(study.train), seed, ds.info.input_shape, plans[model.name],
                        store.owner(model.name, seed), tuple(store.db.checkpoint_digests(trial_id).items()))

    # (model, seed) -> a TrialJob factory taking the trial id the executor claims.
    jobs = {(m.name, s): partial(job, m, s) for m in study.models for s in study.seeds if (m.name, s) in wanted}
    owner = this_owner()

    def claim() -> TrialJob | None:
        rec = store.db.claim(owner, set(jobs), run_id, numerics, opts.first)
        return None if rec is None else jobs[(rec.model, rec.seed)](rec.id)

    def add(model: ModelSpec) -> None:  # a model joins the running study (a search sampled it)
        store.add_model(model)
        plans[model.name] = plan_of(model)
        numerics[model.name] = plans[model.name].numerics()
        store.db.ensure_trials([(model.name, s, len(store.study.models) - 1) for s in study.seeds])
        jobs.update({(model.name, s): partial(job, model, s) for s in study.seeds})

    if grow is not None:
        grow.start(store, add)
    storage = storage_for(store.out, study.name, study.fingerprint(), opts.storage)
    storage.check()
    view = ProgressView(console, n_train=len(data.train), quiet=opts.quiet)
    try:
        with launcher.session(ds, data, study.train, storage):
            finished = run_trials(launcher, Recorder(store, storage, view, owner), claim, grow,
                                  lambda: _PACER(lambda: opts.refreshed(store)))
        _PACER(lambda: opts.refreshed(store), force=opts.final_refresh or not finished)
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

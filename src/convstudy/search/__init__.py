"""Search stage: a study's `[search]` samples its space with Optuna, and every sample is a normal convstudy model.

`run_search(study, opts)` runs the one run path (`executors.run_study`) with a `Search` as its
`Growth`: when an executor has a free slot and nothing to claim, the search tells Optuna what
finished and asks it for the next configuration, which becomes model `trial-NNNN` (NNNN: Optuna's
trial number, with the levels in `ModelSpec.factors`), one of the study's models (study.db keeps it
in the study's spec; the fingerprint leaves sampled models out) with one trial on the study's first
seed. After every epoch the executor asks `prune`: the search reports the validation metric to
Optuna's pruner and, if it says so, the trial stops there and is recorded as `pruned`.

State lives in the study directory: Optuna's study in OUT/search.db (its SQLite RDB storage), the
trials in study.db. Whatever a crash interrupts, a rerun of the same command continues: every
Optuna trial still RUNNING is re-attached to its model (suggesting again returns its stored values)
and its convstudy trial resumes from its checkpoint (claim takes over a dead owner's trial); a trial
that ended in study.db but was not yet told to Optuna is told from study.db. Nothing is asked twice.
One process searches a directory at a time (OUT/search.lock); it runs several trials at once with `--workers N`
or Ray, asking Optuna for the next as a slot frees up.

`--confirm K` then trains the top K configurations on every seed of the study by the normal run path.
"""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterator

import optuna
from filelock import FileLock, Timeout
from optuna.trial import TrialState
from rich.console import Console

from convstudy.data import get_info
from convstudy.errors import UserError
from convstudy.executors import EpochDone, RunOptions, run_study
from convstudy.model import summarize_model
from convstudy.search.optuna_study import open_study, storage_url, suggest
from convstudy.spec import ModelSpec, Study
from convstudy.spec.models import SAMPLED_NAME, sampled_name
from convstudy.spec.search import check_search, search_space
from convstudy.spec.space import space_model
from convstudy.store import FINISHED, State, StudyStore, study_dir

MAX_INVALID = 100  # sampled configurations in a row that give no valid model: the space is the problem
EXPLORE_AFTER = 10  # repeats in a row after which one configuration is drawn by Optuna's RandomSampler
LOCK = "search.lock"  # beside search.db, held by the one process that searches the directory


class Search:
    """The executors' `Growth` for one search: asks and tells Optuna, decides pruning at epoch ends."""

    def __init__(self, study: Study) -> None:
        self.study, self.spec = study, study.search
        self.space = search_space(self.spec, study.name)
        self.info = get_info(study.dataset)
        self.seed = study.seeds[0]
        self.trials: dict[str, optuna.Trial] = {}  # model name -> its live Optuna trial, for those attached here
        self.store: StudyStore | None = None
        self.add: Callable[[ModelSpec], None] | None = None

    def start(self, store: StudyStore, add: Callable[[ModelSpec], None]) -> None:
        """Open the Optuna study; re-attach every trial a crash left RUNNING (nothing new is asked)."""
        self.store, self.add = store, add
        storage = optuna.storages.RDBStorage(storage_url(store.out))
        self.optuna = open_study(storage, self.study.name, self.spec, self.space, self.study.train.epochs)
        study_id = storage.get_study_id_from_name(self.study.name)
        for t in self.optuna.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            trial = optuna.trial.Trial(self.optuna, storage.get_trial_id_from_study_id_trial_number(study_id, t.number))
            self._attach(trial)
            rec = store.db.find(sampled_name(t.number), self.seed)
            # Killed between reporting an epoch and acting on the pruner's answer: act on it now.
            if (rec is not None and rec.state not in FINISHED and rec.epochs_done in t.intermediate_values
                    and self.spec.pruner != "none" and rec.epochs_done < self.study.train.epochs
                    and trial.should_prune()):
                store.db.mark(rec.id, State.PRUNED)
        self._tell()

    def more(self) -> bool:
        """Tell Optuna what finished; if the budget allows, ask for one more configuration and add it."""
        self._tell()
        duplicates = 0
        for _ in range(MAX_INVALID):
            if not self._budget_left():
                return False
            explore = duplicates >= EXPLORE_AFTER
            with self._sampler(explore):
                trial = self.optuna.ask()
                if explore:
                    trial.set_user_attr("sampled_by", "random")
                outcome = self._attach(trial)
            if outcome == "new":
                return True
            duplicates += outcome == "duplicate"
        if duplicates == MAX_INVALID:  # not even random draws find an untried configuration: the space is spent
            return False
        raise UserError(f"{self.study.name}: search: {MAX_INVALID} sampled configurations in a row are invalid "
                        "models or repeats; narrow the space (the errors are in search.db)")

    def prune(self, event: EpochDone) -> bool:
        """Report the epoch's validation metric to Optuna's pruner; True: stop the trial after this epoch."""
        trial = self.trials.get(event.job.model.name)
        if self.spec.pruner == "none" or trial is None:
            return False
        metric = self.spec.objective[0].metric  # val_accuracy or val_loss (SearchSpec checks)
        trial.report(getattr(event.result, metric), event.result.epoch)
        return event.result.epoch < event.job.settings.epochs and trial.should_prune()

    @contextmanager
    def _sampler(self, explore: bool) -> Iterator[None]:
        """Ask with the study's sampler, or, once it has repeated itself EXPLORE_AFTER times in a row, with
        Optuna's RandomSampler (seeded by the trials so far): TPE in a discrete space keeps proposing its
        best configuration, and a repeat trains nothing, so the budget would never be spent."""
        if not explore:
            yield
            return
        own, asked = self.optuna.sampler, len(self.optuna.get_trials(deepcopy=False))
        self.optuna.sampler = optuna.samplers.RandomSampler(seed=self.spec.seed + asked)
        try:
            yield
        finally:
            self.optuna.sampler = own

    def _attach(self, trial: optuna.Trial) -> str:
        """Make the trial's configuration a model of the study ("new"); a configuration that is no valid
        model ("invalid") or one a trained trial already has ("duplicate": TPE proposes those in a discrete
        space, and one seed of it would train to the same numbers) is told FAIL and trains nothing."""
        name = sampled_name(trial.number)
        params = suggest(trial, self.space)
        if "model" not in trial.user_attrs:  # a fresh ask, not a re-attached trial
            same = [t for t in self.optuna.get_trials(deepcopy=False) if t.params == params and t.number != trial.number
                    and "model" in t.user_attrs]
            if same:
                trial.set_user_attr("duplicate_of", same[0].user_attrs["model"])
                self.optuna.tell(trial, state=TrialState.FAIL)
                return "duplicate"
        try:
            model = space_model(self.space, params, self.info.input_shape, self.info.num_classes, name=name,
                                source=self.study.name)
        except UserError as exc:
            trial.set_user_attr("invalid", str(exc))
            self.optuna.tell(trial, state=TrialState.FAIL)
            return "invalid"
        trial.set_user_attr("model", name)
        self.add(model)
        self.trials[name] = trial
        return "new"

    def _tell(self) -> None:
        """Tell Optuna the result of every RUNNING trial whose convstudy trial has ended (from study.db)."""
        for t in self.optuna.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            rec = self.store.db.find(sampled_name(t.number), self.seed)
            if rec is None or rec.state not in FINISHED:
                continue
            if rec.state == State.COMPLETE:
                self.optuna.tell(t.number, self._values(rec))
            else:  # a diverged trial has no result to learn from
                self.optuna.tell(t.number, state=TrialState.PRUNED if rec.state == State.PRUNED else TrialState.FAIL)

    def _values(self, rec) -> list[float]:
        last = self.store.db.epochs(rec.id)[-1]
        summary = summarize_model(self.store.study.model(rec.model), self.info.input_shape)
        values = {"val_accuracy": last.val_accuracy, "val_loss": last.val_loss, "params": summary.total_params,
                  "mflops": summary.mflops}
        return [float(values[o.metric]) for o in self.spec.objective]

    def _budget_left(self) -> bool:
        sampled = {t.user_attrs["model"] for t in self.optuna.get_trials(deepcopy=False) if "model" in t.user_attrs}
        trials = [r for r in self.store.db.trials() if r.seed == self.seed and r.model in sampled]
        ended = sum(r.state in FINISHED for r in trials)
        running = len(self.optuna.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
        epochs = sum(r.epochs_done for r in trials)
        budget = self.spec.trials
        return ((budget.count is None or ended + running < budget.count)
                and (budget.epochs is None or epochs < budget.epochs))


def run_search(study: Study, opts: RunOptions, console: Console | None = None, budget: int | None = None,
               confirm: int = 0) -> tuple[StudyStore, bool]:
    """Search `study`'s space into `opts.out` (resuming), then retrain the best `confirm` on every seed."""
    if study.search is None:
        raise UserError(f"{study.name}: has no [search] section")
    if budget is not None:  # --trials N; the fingerprint leaves the budget out
        trials = study.search.trials.model_copy(update={"count": budget})
        study = study.model_copy(update={"search": study.search.model_copy(update={"trials": trials})})
    check_search(study, get_info(study.dataset), "--trials" if budget is not None else study.name)
    with _alone(Path(opts.out)):
        return _search_and_confirm(study, opts, console, confirm)


@contextmanager
def _alone(out: Path) -> Iterator[None]:
    """Hold OUT/search.lock while this process searches. A second search beside it would ask Optuna for
    configurations without seeing the models the first sampled (and write the study's spec over the first's):
    it is refused in one line. The OS releases the lock when the holder ends, a kill -9 included."""
    lock = FileLock(study_dir(out) / LOCK, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise UserError(f"{out}: another convstudy run is searching this study directory; rerun when it has ended "
                        "(several trials at once: --workers N)") from None
    try:
        yield
    finally:
        lock.release()


def _search_and_confirm(study: Study, opts: RunOptions, console: Console | None,
                        confirm: int) -> tuple[StudyStore, bool]:
    one_seed = study.model_copy(update={"seeds": study.seeds[:1]})  # search: one seed per configuration
    store, finished = run_study(one_seed, replace(opts, models=None, final_refresh=opts.final_refresh and not confirm),
                                console, grow=Search(one_seed))
    if not finished or not confirm:
        return store, finished
    top = best_configurations(store, study, confirm)
    say = (console or Console(highlight=False)).print
    if not top:  # like Optuna's best_trials, nothing complete is no best; an empty --models would mean all models
        ended = Counter(r.state.value for r in store.db.trials()
                        if r.seed == study.seeds[0] and SAMPLED_NAME.match(r.model))
        say(f"--confirm {confirm}: no search trial completed ({', '.join(f'{n} {s}' for s, n in ended.items())}), "
            "so there is nothing to confirm")
        if opts.final_refresh:
            opts.refreshed(store)
        return store, finished
    full = study.model_copy(update={"models": store.study.models})
    store.close()
    say(f"confirming the best {len(top)} configurations on seeds {', '.join(map(str, study.seeds))}: {', '.join(top)}")
    return run_study(full, replace(opts, models=tuple(top)), console)


def best_configurations(store: StudyStore, study: Study, k: int) -> list[str]:
    """The `k` complete search trials best on the first objective (validation, never test)."""
    first = study.search.objective[0]
    done = [r for r in store.db.trials() if r.state == State.COMPLETE and r.seed == study.seeds[0]
            and SAMPLED_NAME.match(r.model)]
    score = {r.model: getattr(store.db.epochs(r.id)[-1], first.metric) if first.metric.startswith("val_") else None
             for r in done}
    if first.metric in ("params", "mflops"):
        info = get_info(study.dataset)
        score = {m: getattr(summarize_model(store.study.model(m), info.input_shape),
                            "total_params" if first.metric == "params" else "mflops") for m in score}
    return sorted(score, key=lambda m: score[m], reverse=first.goal == "maximize")[:k]

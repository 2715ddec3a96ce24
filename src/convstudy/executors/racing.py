"""Racing seeds (`seeds = {min = 2, max = 10}`): seeds go only where a model's place is undecided.

Every model first trains the study's first `race` seeds. Then, round by round, each model whose
place (in or out of the best group) the best-group procedure has not decided gets its next seed,
until every place is decided or all seeds ran. The rounds are a pure function of the finished
trials in study.db (`race`), so a run killed at any moment and rerun replays the same rounds,
trains the same trials and ends with the same report; `bench/racing.py` replays a fixed-seed study.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Mapping, Sequence

from rich.console import Console

Decide = Callable[[Mapping[str, Sequence[float]]], Mapping[str, bool]]


@dataclass(frozen=True)
class Race:
    """Where racing stands: the seeds each model has earned, and, once done, why each one stopped."""

    seeds: dict[str, tuple[int, ...]]
    done: bool
    why: dict[str, str]


def race(models: Sequence[str], seeds: Sequence[int], first: int,
         finished: Mapping[tuple[str, int], float | None], decide: Decide) -> Race:
    """Replay racing over `finished` ((model, seed) -> selection metric; None: finished without one).

    Returns the trials the current round still needs (`done` False), or the final allocation.
    """
    n = {m: min(first, len(seeds)) for m in models}
    while True:
        wanted = {m: tuple(seeds[:n[m]]) for m in models}
        if any((m, s) not in finished for m in models for s in wanted[m]):
            return Race(wanted, False, {})
        values = {m: [v for s in wanted[m] if (v := finished[(m, s)]) is not None] for m in models}
        decided = decide(values)
        grow = [m for m in models if not decided.get(m, False) and n[m] < len(seeds)]
        if not grow:
            why = {m: ("place decided" if decided.get(m, False) else f"all {len(seeds)} seeds ran, undecided")
                   for m in models}
            return Race(wanted, True, why)
        for m in grow:
            n[m] += 1


# In the best group is decided when the simultaneous 95% upper bound of (best - model) is below this:
# the model cannot be more than 0.2 pp of accuracy behind the best (out of it: adjusted p < 0.05).
RACE_MARGIN = 0.002


def decide(values: Mapping[str, Sequence[float]]) -> dict[str, bool]:
    """Whether each model's place is decided, by the report's best-group procedure (report.stats.places)."""
    from convstudy.report.stats import places

    return {name: place.decided for name, place in places(values, margin=RACE_MARGIN).items()}


def finished_values(store, validation: str) -> dict[tuple[str, int], float | None]:
    """(model, seed) -> the selection metric of every trial that ended (None for a diverged one)."""
    from convstudy.report.collect import selection_metric
    from convstudy.store import State

    on_test = selection_metric(validation) == "test_accuracy"
    out: dict[tuple[str, int], float | None] = {}
    for r in store.db.trials():
        if r.state == State.COMPLETE:
            rows = [] if on_test else store.db.epochs(r.id)
            out[(r.model, r.seed)] = r.test_accuracy if on_test else rows[-1].val_accuracy if rows else None
        elif r.state == State.DIVERGED:
            out[(r.model, r.seed)] = None
    return out


def run_racing(study, opts, console: Console, run: Callable) -> tuple[object, bool]:
    """Run `study` round by round with `run` (run_study or the worker pool) until racing is done."""
    import json

    from convstudy.store import StudyStore

    models = list(opts.models or [m.name for m in study.models])
    finished: dict = {}
    if (opts.out / "study.db").is_file():
        existing = StudyStore.open_existing(opts.out)
        try:
            finished = finished_values(existing, study.train.validation)
        finally:
            existing.close()
    store = None
    while not (state := race(models, study.seeds, study.race, finished, decide)).done:
        store, ok = run(study, replace(opts, seeds_of=state.seeds), console=console)
        if not ok:
            return store, False
        finished = finished_values(store, study.train.validation)
    store = store or StudyStore.create_or_open(opts.out, study)
    store.db.set_meta("racing", json.dumps({m: {"seeds": len(state.seeds[m]), "stopped": state.why[m]}
                                            for m in models}))
    from convstudy.report import write_reports

    write_reports(store)
    return store, True

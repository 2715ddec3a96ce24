"""Racing seeds (`seeds = {min = 2, max = 10}`): seeds go only where a model's place is undecided.

Every model first trains the study's first `race` seeds. Then, round by round, each model whose
place is undecided (not yet called worse, nor shown within the race margin: `decider`) gets its next seed,
until every place is decided or all seeds ran. The rounds are a pure function of the finished
trials in study.db (`race`), so a run killed at any moment and rerun replays the same rounds,
trains the same trials and ends with the same report; `bench/racing.py` replays a fixed-seed study.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable, Mapping, Sequence

from rich.console import Console

from convstudy.report.stats import ALPHA, look_alpha, race_decisions, seed_noise, tukey_critical

# model -> metric per seed  ->  model -> why its place is decided ("" or False: undecided)
Decide = Callable[[Mapping[str, Sequence[float]]], Mapping[str, "str | bool"]]


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
            why = {m: (d if isinstance(d := decided.get(m, False), str) and d else "place decided" if d
                       else f"all {len(seeds)} seeds ran, undecided") for m in models}
            return Race(wanted, True, why)
        for m in grow:
            n[m] += 1


POWER_Z = 2.326  # the default margin is the gap that all the seeds call worse 99% of the time


def default_margin(first: Mapping[str, Sequence[float]], max_seeds: int, alpha: float) -> float:
    """The default race margin (accuracy units) from the seed noise of the first round: the smallest gap to the
    best that `max_seeds` seeds per model call worse at level `alpha` with 99% power, (q + z sqrt 2) sigma / sqrt(max)."""
    sigma = seed_noise(first)
    if not sigma:
        return 0.0  # no noise measured (or one seed each): only exact decisions
    q = tukey_critical(len(first), len(first) * (max_seeds - 1), alpha)
    return (q + POWER_Z * math.sqrt(2)) * sigma / math.sqrt(max_seeds)


def decider(first: int, max_seeds: int, margin: float | None = None, alpha: float = ALPHA) -> Decide:
    """Racing's rule: a model stops once called worse than the best (Tukey-Kramer) or shown within `margin` of
    it (simultaneous upper bound; None: `default_margin` from every model's first seeds), each round at
    `look_alpha`, so the whole race keeps family-wise `alpha` for its worse calls."""
    alpha = look_alpha(first, max_seeds, alpha)

    def decide(values: Mapping[str, Sequence[float]]) -> dict[str, str]:
        delta = margin if margin is not None else default_margin({m: v[:first] for m, v in values.items()},
                                                                   max_seeds, alpha)
        reasons = {"worse": "called worse than the best", "best": "the best; every other place decided",
                   "within": f"within {100 * delta:.2f} pp of the best (race margin)"}
        return {m: reasons.get(d, "") for m, d in race_decisions(values, delta, alpha).items()}

    return decide


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
    decide = decider(study.race, len(study.seeds), None if study.race_margin is None else study.race_margin / 100)
    while not (state := race(models, study.seeds, study.race, finished, decide)).done:
        store, ok = run(study, replace(opts, seeds_of=state.seeds, final_refresh=False), console=console)
        if not ok:
            return store, False
        finished = finished_values(store, study.train.validation)
    store = store or StudyStore.create_or_open(opts.out, study)
    store.db.set_meta("racing", json.dumps({m: {"seeds": len(state.seeds[m]), "stopped": state.why[m]}
                                            for m in models}))
    if opts.final_refresh:
        opts.refreshed(store)
    return store, True

"""How many trials train at once on the CPU, and with how many threads each, decided by measurement
(`convstudy run` without `--workers` or OMP_NUM_THREADS).

Threads change a trial's floating-point sums, so the threads per trial are fixed per study and machine (the
cached calibration, or what its trials recorded), never by what else runs; only the workers follow the pending
trials. Within 5% of the fastest the fewest threads win: on a busy machine an OpenMP team waits at every barrier
for a descheduled thread (docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections import Counter
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Callable, Iterator

import torch

from convstudy.measure.calibrate import load_cache, machine_key, measure_rates, model_key, save_cache
from convstudy.data import load_dataset
from convstudy.spec import Study
from convstudy.store import FINISHED, StudyDB
from convstudy.train import resolve_device, resolve_precision

if TYPE_CHECKING:
    from rich.console import Console

TIE = 0.05  # thread counts within 5% of the fastest estimate count as equally fast


@dataclass(frozen=True)
class Parallelism:
    workers: int
    threads: int
    why: str  # one line: what it was decided from
    # With several workers, the models by measured trial time at `threads`, longest first: started first, the
    # long trials do not end alone while the other cores idle (longest-processing-time-first scheduling).
    first: tuple[str, ...] = ()


def best_threads(rates: dict[str, dict[int, float]], trials: dict[str, int], cpus: int) -> int:
    """The threads per trial that finish `trials` (model -> count) soonest with every core busy:
    cores // t trials at once, each at its measured rate (model -> {threads: samples/s}) at t threads."""
    counts = sorted(t for t in set.intersection(*map(set, rates.values())) if t <= cpus) if rates else []
    if not counts:
        return 1
    time_at = {t: sum(n / rates[m][t] for m, n in trials.items()) / (cpus // t) for t in counts}
    fastest = min(time_at.values())
    return min(t for t in counts if time_at[t] <= fastest * (1 + TIE))


def choose(rates: dict[str, dict[int, float]], trials: dict[str, float], pending: int, cpus: int,
           recorded: int | None = None) -> Parallelism:
    """Threads per trial (the study's recorded ones, else `best_threads`) and as many workers as fit the cores
    at that many threads each, but no more than the pending trials; `trials`: model -> trials to train."""
    threads = recorded or best_threads(rates, trials, cpus)
    workers = max(1, min(pending, cpus // threads))
    why = ("the threads the study's trials recorded" if recorded else
           f"measured samples/s by threads: {json.dumps(rates, sort_keys=True)}")
    first = ()
    if workers > 1 and all(threads in rates.get(m, {}) for m in trials):
        first = tuple(sorted(trials, key=lambda m: -trials[m] / rates[m][threads]))
    return Parallelism(workers, threads, why, first)


def study_rates(study: Study, shape: tuple[int, ...], precision: str, counts: list[int],
                console: "Console | None" = None,
                measure: Callable | None = measure_rates) -> dict[str, dict[int, float]]:
    """Each model's samples/s by threads: from the cache, else measured now (a few steps each) and cached;
    with `measure=None`, the cached models only."""
    cache = load_cache()
    mine = cache.setdefault(machine_key(), {})
    rates: dict[str, dict[int, float]] = {}
    for m in study.models:
        settings = m.settings(study.train)
        key = model_key(m, settings, shape, precision)
        have = {int(t): r for t, r in mine.get(key, {}).items()}
        if not set(counts) <= set(have):
            if measure is None:
                continue
            if console is not None:
                console.print(f"calibrating {m.name}: a few training steps at {', '.join(map(str, counts))} threads")
            have.update(measure(m, settings, shape, precision, counts))
            mine[key] = {str(t): r for t, r in sorted(have.items())}
            save_cache(cache)
        rates[m.name] = {t: have[t] for t in counts}
    return rates


def _trials_state(study: Study, opts) -> tuple[int, dict[str, float], int | None]:
    """Pending wanted trials; per model, the training they have left in whole trials (an interrupted trial
    counts the epochs it has left); and the threads most of the study's trials recorded (None: none yet)."""
    wanted = {(m, s) for m in (opts.models or [m.name for m in study.models]) for s in study.seeds}
    path = opts.out / "study.db"
    records = []
    if path.exists():
        with contextlib.closing(StudyDB(path, readonly=True)) as db:
            records = db.trials()
    done = {(r.model, r.seed) for r in records if r.state in FINISHED}
    epochs_done = {(r.model, r.seed): r.epochs_done for r in records}
    left: dict[str, float] = {}
    for m, s in wanted - done:
        total = study.model(m).settings(study.train).epochs
        left[m] = left.get(m, 0.0) + max(0, total - epochs_done.get((m, s), 0)) / total
    threads = Counter(r.settings["threads"] for r in records if r.settings and "threads" in r.settings)
    return len(wanted - done), left, (threads.most_common(1)[0][0] if threads else None)


def for_new_trials(study: Study, shape: tuple[int, ...], precision: str, pending: int,
                   console: "Console | None" = None) -> Parallelism:
    """The parallelism for `pending` trials of a study none of whose trials ran yet (also `convstudy bench`'s)."""
    from convstudy.measure.throughput import thread_counts

    cpus = os.cpu_count() or 1
    rates = study_rates(study, shape, precision, thread_counts(torch.get_num_threads(), cpus), console)
    return choose(rates, {m.name: len(study.seeds) for m in study.models}, pending, cpus)


def decide(study: Study, opts, console: "Console | None" = None) -> Parallelism | None:
    """The measured parallelism for a local CPU run; None where it does not apply (GPU, Ray)."""
    if opts.executor != "local" or resolve_device(opts.device).type != "cpu":
        return None
    pending, left, recorded = _trials_state(study, opts)
    precision = resolve_precision(opts.precision, torch.device("cpu"))
    # The data first: a wrong --data-dir or a bad source is refused before any measuring.
    shape = load_dataset(study.dataset, opts.data_dir).info.input_shape
    if recorded:  # a resumed study: its threads as recorded, the longest training left first where it is cached
        return choose(study_rates(study, shape, precision, [recorded], measure=None), left, pending,
                      os.cpu_count() or 1, recorded)
    return for_new_trials(study, shape, precision, pending, console)


def threads_given() -> bool:
    """Whether the user fixed the threads (OMP_NUM_THREADS): then nothing is measured and they are used as given."""
    return "OMP_NUM_THREADS" in os.environ


@contextlib.contextmanager
def measured(study: Study, opts, workers: int, console: "Console") -> Iterator[tuple[int, tuple[str, ...]]]:
    """The workers to run with and the models to start first: `workers` as given (0: not given; nothing
    first), else measured (`decide`), with each trial's threads pinned for this process and the workers it
    spawns, and recorded in study.db's events."""
    choice = decide(study, opts, console) if not workers and not threads_given() else None
    if choice is None:
        yield workers or 1, ()
        return
    console.print(f"{choice.workers} trial{'s' * (choice.workers > 1)} at once, {choice.threads} thread"
                  f"{'s' * (choice.threads > 1)} each (measured on this machine; --workers or OMP_NUM_THREADS "
                  "to choose)")
    before = torch.get_num_threads()
    # The workers' fork server, started at the first worker, inherits it (each trial also sets its threads).
    os.environ["OMP_NUM_THREADS"] = str(choice.threads)
    torch.set_num_threads(choice.threads)
    try:
        yield choice.workers, choice.first
    finally:
        os.environ.pop("OMP_NUM_THREADS", None)
        torch.set_num_threads(before)
    if not (opts.out / "study.db").exists():
        return
    with contextlib.closing(StudyDB(opts.out / "study.db")) as db:
        db.add_event(None, "parallelism", json.dumps(asdict(choice)))

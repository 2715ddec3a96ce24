"""The library's entry points: `run` a study, `load` a study directory. `convstudy run` is a thin layer on top.

`run`'s keyword options are `convstudy run`'s flags (`train_limit=200` is `--train-limit 200`); either
becomes one `RunRequest`, converted by the same functions (the flags' argparse types), so a bad option
raises the UserError whose message the command prints.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from convstudy.errors import UserError
from convstudy.executors.options import EXECUTORS, RunOptions, RunSettings

if TYPE_CHECKING:
    from rich.console import Console

    from convstudy.measure.latency import LatencyOptions
    from convstudy.results import Results
    from convstudy.spec import Study
    from convstudy.store import StudyStore

DEFAULT_BUDGET_S, DEFAULT_REPEATS = 600, 50  # `latency` and `run --latency`


# ---- option values from text: the CLI's argument types, and `run`'s keywords -------------------------

def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def name_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected comma-separated names, e.g. k3-1,k3-2")
    return names


def where_clause(text: str) -> tuple[str, str]:
    """`--where kernel=5`: a (factor, level) pair."""
    name, sep, level = text.partition("=")
    if not sep or not name.strip() or not level.strip():
        raise argparse.ArgumentTypeError(f"expected FACTOR=LEVEL, e.g. kernel=5, got {text!r}")
    return name.strip(), level.strip()


def seeds_arg(value: str) -> int | dict[str, int | float]:
    """`--seeds`: a count N, or MIN..MAX for racing, MIN..MAX@PP with a race margin in pp."""
    lo, sep, hi = value.partition("..")
    if not sep:
        return positive_int(value)
    hi, at, margin = hi.partition("@")
    try:
        out: dict[str, int | float] = {"min": positive_int(lo), "max": positive_int(hi)}
        if at:
            out["margin"] = float(margin)
            if not 0 < out["margin"] <= 100:
                raise ValueError
        return out
    except (argparse.ArgumentTypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected N or MIN..MAX (e.g. 2..10), or MIN..MAX@PP with a "
                                         f"race margin in pp (2..10@1.5), got {value!r}") from None


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected seconds >= 0 (0: no limit), got {text}")
    return value


def choice(*names: str) -> Callable[[str], str]:
    """One of `names`, refused with argparse's own words (the CLI shows them as its `{a,b}` metavar)."""
    def convert(text: str) -> str:
        if text not in names:
            raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from {', '.join(map(repr, names))})")
        return text
    return convert


DEVICES, PRECISIONS = ("auto", "cpu", "cuda"), ("auto", "fp32", "bf16")


@dataclass(frozen=True, kw_only=True)
class RunRequest(RunSettings):
    """`convstudy run`'s options, typed: the CLI builds it from its flags, `run()` from its keywords. Where
    and how trials run (`RunSettings`) goes to the executors as it is; the rest shapes the study and the run."""

    models: list[str] | None = None
    where: list[tuple[str, str]] | None = None
    epochs: int | None = None
    seeds: int | dict[str, int] | None = None
    dataset: str | None = None
    out: Path | None = None
    train_limit: int | None = None
    latency: bool = False
    latency_budget: float = DEFAULT_BUDGET_S
    latency_repeats: int = DEFAULT_REPEATS
    trials: int | None = None
    confirm: int | None = None

    @classmethod
    def from_keywords(cls, options: dict[str, Any]) -> "RunRequest":
        """The request `run`'s keywords spell, each converted as its flag's text would be."""
        valid = [f.name for f in fields(cls)]
        unknown = [k for k in options if k not in valid]
        if unknown:
            raise UserError(f"convstudy.run: unknown option{'s' * (len(unknown) > 1)} {', '.join(unknown)}; "
                            f"valid: {', '.join(sorted(valid))}")
        values: dict[str, Any] = {}
        for key, value in options.items():
            if value is None:
                continue
            if key in SWITCHES:
                values[key] = bool(value)
            elif key == "where":
                values[key] = [_convert(key, v if isinstance(v, str) else "=".join(map(str, v)))
                               for v in ([value] if isinstance(value, str) else value)]
            else:
                values[key] = _convert(key, _flag_text(value))
        return cls(**values)


SWITCHES = ("quiet", "latency")
# Each option's flag type: what argparse applies to the flag's text, and `from_keywords` to a keyword's.
TYPES: dict[str, Callable[[str], Any]] = {
    "models": name_list, "where": where_clause, "epochs": positive_int, "seeds": seeds_arg, "dataset": str,
    "data_dir": str, "out": Path, "train_limit": positive_int, "device": choice(*DEVICES),
    "precision": choice(*PRECISIONS), "executor": choice(*EXECUTORS), "address": str, "cpus_per_trial": float,
    "gpus_per_trial": float, "storage": str, "workers": positive_int, "latency_budget": seconds,
    "latency_repeats": positive_int, "trials": positive_int, "confirm": positive_int,
}


def _convert(key: str, value: Any) -> Any:
    """`value` through its flag's type, failing with argparse's message for that flag."""
    convert = TYPES[key]
    try:
        return convert(value)
    except argparse.ArgumentTypeError as exc:
        message = str(exc)
    except (TypeError, ValueError):
        message = f"invalid {convert.__name__} value: {str(value)!r}"
    raise UserError(f"convstudy run: argument --{key.replace('_', '-')}: {message} (see --help)")


def _flag_text(value: Any) -> str:
    """A keyword's value as its flag spells it: lists comma-separated, a dataset table as JSON."""
    if isinstance(value, dict):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


# ---- running ------------------------------------------------------------------------------------------

def run(study: "Study | str | Path", **options: Any) -> "Results":
    """Run (or resume) `study` (a `Study`, a .toml/.yaml path or a built-in name such as "seed") with
    `convstudy run`'s options as keywords (out, models, epochs, seeds, data_dir, train_limit, device,
    precision, workers, quiet, ...); returns the study directory's Results."""
    from rich.console import Console

    from convstudy.results import Results
    from convstudy.spec import Study

    if not isinstance(study, (Study, str, os.PathLike)):
        raise UserError(f"convstudy.run: study is a Study, a study file's path or a built-in name, not "
                        f"{type(study).__name__}")
    store, _, note = execute(study, RunRequest.from_keywords(options), Console(highlight=False))
    store.close()  # Results reads through read-only connections of its own
    if note:
        print(note, file=sys.stderr)
    return Results(store.out)


def load(out: str | Path) -> "Results":
    """A finished or running study directory, read-only, as `convstudy report` opens it."""
    from convstudy.results import Results

    return Results(out, check=True)


def execute(study: "Study | str | Path", request: RunRequest,
            console: "Console") -> tuple["StudyStore", bool, str | None]:
    """Run (or resume) the study as `request` says: its search or fair comparison, racing or `run_study`, then
    the latency if the run ended; the reports are refreshed as trials end (paced) and at the end. Returns the store,
    whether every wanted trial ended, and the line naming the wanted trials that failed (None if none did)."""
    from convstudy.report import write_reports

    spec, opts = prepare(study, request, refresh=write_reports)
    latency = latency_options(request)
    opts = replace(opts, final_refresh=not latency)  # with latency, its measurement refreshes the reports at the end
    if spec.search is not None:
        from convstudy.search import run_search

        store, finished = run_search(spec, opts, console, request.trials, request.confirm or 0)
    elif spec.fair is not None:
        from convstudy.search.fair import run_fair

        store, finished = run_fair(spec, opts, console, request.trials)
    else:
        from convstudy.executors import run_study
        from convstudy.executors.racing import run_racing
        from convstudy.measure.parallel import measured

        with measured(spec, opts, request.workers, console) as (workers, first):  # without --workers, OMP_NUM_THREADS
            opts = replace(opts, workers=workers, first=first)
            store, finished = (run_racing(spec, opts, console, run_study) if spec.race
                               else run_study(spec, opts, console=console))
    if latency and finished:
        from convstudy.measure.latency import measure_and_show

        measure_and_show(store, opts.models, latency, console)
        write_reports(store)
    return store, finished, failed_note(store, spec, opts)


def prepare(study: "Study | str | Path", request: RunRequest,
            refresh: "Callable[[StudyStore], object] | None" = None) -> tuple["Study", RunOptions]:
    """The study (a name, a path or a `Study`) with the request applied, and the executors' RunOptions (the
    request's RunSettings, its output and models, and `refresh`); every bad option is a UserError here,
    before anything is created."""
    from convstudy.spec import Study, check_memory, check_schedule_keys, resolve_study, select_models, with_overrides

    r = request
    if isinstance(study, Study):
        if r.dataset is None:
            check_memory(study, study.name)
        else:
            study = with_overrides(study, dataset=r.dataset, source=f"{study.name} with --dataset")
    else:  # --dataset applies before the file is validated: its models need not fit the file's own dataset
        study = resolve_study(str(study), r.dataset)
    if any(v is not None for v in (r.epochs, r.seeds, r.train_limit)):
        study = with_overrides(study, epochs=r.epochs, seeds=r.seeds, train_limit=r.train_limit)
    check_schedule_keys(study, "flags" if r.epochs is not None else study.name)
    if r.cpus_per_trial <= 0 or r.gpus_per_trial < 0:
        raise UserError("--cpus-per-trial must be > 0 and --gpus-per-trial >= 0")
    names = ([m.name for m in select_models(study.models, r.models, r.where or [])]
             if r.models is not None or r.where else None)
    opts = RunOptions(**{f.name: getattr(r, f.name) for f in fields(RunSettings)}, refresh=refresh,
                      out=r.out or Path("runs") / study.name, models=tuple(names) if names else None)
    if study.search is not None and names:
        raise UserError("--models/--where: a search trains the configurations it samples")
    if study.fair is not None and (names or r.confirm):
        raise UserError(f"{'--models/--where' if names else '--confirm'}: a [fair] study tunes and retrains every "
                        "level itself")
    if study.search is None and study.fair is None and (r.trials or r.confirm):
        raise UserError(f"{'--trials' if r.trials else '--confirm'}: {study.name} has no [search] section")
    return study, opts


def latency_options(request: RunRequest) -> "LatencyOptions | None":
    """`--latency`'s options, checked before anything trains; None without --latency."""
    if not request.latency:
        return None
    from convstudy.measure.latency import LatencyOptions

    latency = LatencyOptions(repeats=request.latency_repeats, budget_s=request.latency_budget,
                             precision=request.precision)
    latency.check()
    return latency


def failed_note(store: "StudyStore", study: "Study", opts: "RunOptions") -> str | None:
    """The line naming the wanted trials that failed, or None."""
    wanted = set(opts.models or [m.name for m in store.study.models])  # a search's models joined as it ran
    failed = [r for r in store.db.trials() if r.state == "failed" and r.model in wanted and r.seed in study.seeds]
    if not failed:
        return None
    names = ", ".join(f"{r.model} seed {r.seed}" for r in failed)
    return (f"convstudy: {len(failed)} trial{'s' * (len(failed) > 1)} failed: {names} (errors in the report); "
            "fix the cause and rerun the same command to retry them from their last checkpoint")

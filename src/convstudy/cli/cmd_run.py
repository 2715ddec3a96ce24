"""`convstudy run STUDY`: train every model of a study (resuming what a previous run left)."""

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from convstudy.cli.cmd_latency import add_latency_options
from convstudy.cli.options import add_data_dir, add_selection, positive_int, selected

if TYPE_CHECKING:
    from convstudy.executors import RunOptions
    from convstudy.interop.latency import LatencyOptions
    from convstudy.spec import Study
    from convstudy.store import StudyStore


def register(sub) -> None:
    p = sub.add_parser("run", help="train a study's models (resumes an existing output directory)",
                       description="Train every model of STUDY (a built-in name such as 'seed', or a .toml/.yaml file).")
    p.add_argument("study", metavar="STUDY")
    add_selection(p)
    p.add_argument("--epochs", type=positive_int, help="override the number of epochs")
    p.add_argument("--seeds", type=seeds_arg, metavar="N|MIN..MAX",
                   help="train every model with seeds 0..N-1; MIN..MAX races: every model trains MIN seeds, then "
                        "only models whose place in or out of the best group is undecided get more, up to MAX")
    p.add_argument("--dataset", metavar="NAME|SOURCE",
                   help="train on another dataset: a registered name (mnist, fashion-mnist, kmnist, cifar10, cifar100) "
                        "or a source, compact (folder:PATH,size=32x32,channels=3,classes=cat|dog) or as JSON "
                        "('{\"kind\": \"npz\", \"path\": \"x.npz\"}'); each model's classifier (its last dense "
                        "layer) takes the data's class count")
    add_data_dir(p)
    p.add_argument("--out", type=Path, help="output directory (default: runs/<study>)")
    p.add_argument("--train-limit", type=positive_int, metavar="N",
                   help="train on a stratified subset of N training images, for quick looks")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                   help="auto: bf16 where the GPU or CPU runs it natively, else fp32")
    p.add_argument("--executor", default="local", choices=("local", "ray"))
    p.add_argument("--address", help="Ray cluster address to join (default: start a local Ray instance)")
    p.add_argument("--cpus-per-trial", type=float, default=1.0)
    p.add_argument("--gpus-per-trial", type=float, default=0.0, help="fractional GPUs let small trials share one")
    p.add_argument("--storage", help="checkpoint storage every Ray worker can reach (path or pyarrow URI)")
    p.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    p.add_argument("--workers", type=positive_int, default=1,
                   help="local executor: N processes training trials at once, each with 1/N of the CPU cores "
                        "(on a GPU they time-slice it)")
    p.add_argument("--stack-seeds", type=count_or_auto, default=None, metavar="N|auto",
                   help="local executor: train up to N seeds of a model together as one stacked network "
                        "(auto: 1, each alone, until a benchmark shows stacking faster on a device)")
    p.add_argument("--streams", type=count_or_auto, default=None, metavar="1|auto",
                   help="kept for old command lines: trials side by side in one process were removed "
                        "(never measured faster); only 1 or auto is accepted")
    p.add_argument("--latency", action="store_true",
                   help="after the run, measure each model's inference latency on this CPU (as `convstudy latency`)")
    add_latency_options(p, "latency-")
    p.add_argument("--trials", type=positive_int, metavar="N",
                   help="a study with a [search]: sample N configurations in all (overrides its trials count); "
                        "with a [fair]: N per level")
    p.add_argument("--confirm", type=positive_int, metavar="K",
                   help="a study with a [search]: after it, train its best K configurations on every seed")
    p.set_defaults(func=run)


def count_or_auto(value: str) -> int | None:
    """`--stack-seeds`: a positive count or `auto` (None)."""
    if value == "auto":
        return None
    try:
        return positive_int(value)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or auto, got {value!r}") from None


def seeds_arg(value: str) -> int | dict[str, int]:
    """`--seeds`: a count N, or MIN..MAX for racing."""
    lo, sep, hi = value.partition("..")
    if not sep:
        return positive_int(value)
    try:
        return {"min": positive_int(lo), "max": positive_int(hi)}
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected N or MIN..MAX (e.g. 2..10), got {value!r}") from None


def run(args: argparse.Namespace) -> int:
    from convstudy.report import collect, render

    study, opts, workers = prepare(args)
    console = Console(highlight=False)
    store, finished = execute(study, opts, workers, console, latency_options(args), args.trials, args.confirm or 0)
    render(collect(store), "table", console)
    console.print(f"results: {store.out} (report.html, report.json, report.md, plots/)")
    if note := failed_note(store, study, opts):
        print(note, file=sys.stderr)
        return 1
    return 0 if finished else 130


def prepare(args: argparse.Namespace) -> tuple["Study", "RunOptions", int]:
    """The study (`args.study`: a name, a path or a `Study`) with the flags applied, its RunOptions and the
    worker count; every bad flag is a UserError here, before anything is created."""
    from convstudy.errors import UserError
    from convstudy.executors import RunOptions
    from convstudy.spec import Study, check_memory, check_schedule_keys, resolve_study, with_overrides

    if isinstance(args.study, Study):
        study = args.study
        if args.dataset is None:
            check_memory(study, study.name)
        else:
            study = with_overrides(study, dataset=args.dataset, source=f"{study.name} with --dataset")
    else:  # --dataset applies before the file is validated: its models need not fit the file's own dataset
        study = resolve_study(str(args.study), args.dataset)
    if any(v is not None for v in (args.epochs, args.seeds, args.train_limit)):
        study = with_overrides(study, epochs=args.epochs, seeds=args.seeds, train_limit=args.train_limit)
    check_schedule_keys(study, "flags" if args.epochs is not None else study.name)
    if args.cpus_per_trial <= 0 or args.gpus_per_trial < 0:
        raise UserError("--cpus-per-trial must be > 0 and --gpus-per-trial >= 0")
    if args.stack_seeds is not None and args.stack_seeds > 1 and args.executor != "local":
        raise UserError("--stack-seeds: only the local executor trains seeds together; leave it out with --executor ray")
    if args.streams is not None and args.streams > 1:
        raise UserError(f"--streams {args.streams}: trials side by side in one process were removed; use "
                        "--workers N for several trial processes, or --executor ray with --gpus-per-trial")
    names = selected(study, args)
    opts = RunOptions(out=args.out or Path("runs") / study.name, models=tuple(names) if names else None,
                      device=args.device, precision=args.precision, data_dir=args.data_dir, executor=args.executor,
                      address=args.address, cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
                      storage=args.storage, quiet=args.quiet, stack_seeds=args.stack_seeds)
    if study.search is not None and (names or args.workers > 1):
        raise UserError(f"{'--models/--where' if names else '--workers'}: a search trains the configurations it "
                        "samples, one at a time (several at once: --executor ray)")
    if study.fair is not None and (names or args.workers > 1 or args.confirm):
        flag = "--models/--where" if names else "--workers" if args.workers > 1 else "--confirm"
        raise UserError(f"{flag}: a [fair] study tunes and retrains every level itself (several trials at once: "
                        "--executor ray)")
    if study.search is None and study.fair is None and (args.trials or args.confirm):
        raise UserError(f"{'--trials' if args.trials else '--confirm'}: {study.name} has no [search] section")
    return study, opts, args.workers


def latency_options(args: argparse.Namespace) -> "LatencyOptions | None":
    """`--latency`'s options, checked before anything trains; None without --latency."""
    if not args.latency:
        return None
    from convstudy.interop.latency import LatencyOptions

    latency = LatencyOptions(repeats=args.latency_repeats, budget_s=args.latency_budget, precision=args.precision)
    latency.check()
    return latency


def execute(study: "Study", opts: "RunOptions", workers: int, console: Console,
            latency: "LatencyOptions | None" = None, trials: int | None = None,
            confirm: int = 0) -> tuple["StudyStore", bool]:
    """Run (or resume) the study: its search (`trials`, `confirm`), `workers` local processes, or `run_study`,
    then measure `latency` if the run ended; returns the store and whether every wanted trial ended."""
    if study.search is not None:
        from convstudy.search import run_search

        store, finished = run_search(study, opts, console, trials, confirm)
    elif study.fair is not None:
        from convstudy.search.fair import run_fair

        store, finished = run_fair(study, opts, console, trials)
    else:
        store, finished = _train(study, opts, workers, console)
    if latency and finished:
        from convstudy.cli.cmd_latency import measure_and_show
        from convstudy.report import write_reports

        measure_and_show(store, opts.models, latency, console)
        write_reports(store)
    return store, finished


def _train(study: "Study", opts: "RunOptions", workers: int, console: Console) -> tuple["StudyStore", bool]:
    from convstudy.executors import run_study

    runner = run_study
    if workers > 1 and opts.executor == "local":
        from convstudy.executors.pool import run_with_workers

        runner = partial(run_with_workers, workers=workers)
    if study.race:
        from convstudy.executors.racing import run_racing

        return run_racing(study, opts, console, runner)
    return runner(study, opts, console=console)


def failed_note(store: "StudyStore", study: "Study", opts: "RunOptions") -> str | None:
    """The line naming the wanted trials that failed, or None."""
    wanted = set(opts.models or [m.name for m in store.study.models])  # a search's models joined as it ran
    failed = [r for r in store.db.trials() if r.state == "failed" and r.model in wanted and r.seed in study.seeds]
    if not failed:
        return None
    names = ", ".join(f"{r.model} seed {r.seed}" for r in failed)
    return (f"convstudy: {len(failed)} trial{'s' * (len(failed) > 1)} failed: {names} (errors in the report); "
            "fix the cause and rerun the same command to retry them from their last checkpoint")

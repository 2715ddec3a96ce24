"""`convstudy run STUDY`: train every model of a study (resuming what a previous run left)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from convstudy.cli.options import add_data_dir, add_selection, positive_int, selected


def register(sub) -> None:
    p = sub.add_parser("run", help="train a study's models (resumes an existing output directory)",
                       description="Train every model of STUDY (a built-in name such as 'seed', or a .toml/.yaml file).")
    p.add_argument("study", metavar="STUDY")
    add_selection(p)
    p.add_argument("--epochs", type=positive_int, help="override the number of epochs")
    p.add_argument("--seeds", type=positive_int, help="train every model with seeds 0..N-1")
    p.add_argument("--dataset", metavar="NAME|SOURCE",
                   help="train on another dataset: a registered name (mnist, fashion-mnist, kmnist, cifar10, cifar100) "
                        "or a source, compact (folder:PATH,size=32x32,channels=3) or as JSON "
                        "('{\"kind\": \"npz\", \"path\": \"x.npz\"}')")
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
    p.add_argument("--trials", type=positive_int, metavar="N",
                   help="a study with a [search]: sample N configurations in all (overrides its trials count)")
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


def run(args: argparse.Namespace) -> int:
    from convstudy.errors import UserError
    from convstudy.executors import RunOptions, run_study
    from convstudy.report import collect, render
    from convstudy.spec import resolve_study, with_overrides

    study = resolve_study(args.study)
    if any(v is not None for v in (args.epochs, args.seeds, args.dataset, args.train_limit)):
        study = with_overrides(study, epochs=args.epochs, seeds=args.seeds, dataset=args.dataset,
                               train_limit=args.train_limit)
    if args.cpus_per_trial <= 0 or args.gpus_per_trial < 0:
        raise UserError("--cpus-per-trial must be > 0 and --gpus-per-trial >= 0")
    if args.stack_seeds is not None and args.stack_seeds > 1 and args.executor != "local":
        raise UserError("--stack-seeds: only the local executor trains seeds together; leave it out with --executor ray")
    if args.streams is not None and args.streams > 1:
        raise UserError(f"--streams {args.streams}: trials side by side in one process were removed; use "
                        "--workers N for several trial processes, or --executor ray with --gpus-per-trial")
    console = Console(highlight=False)
    names = selected(study, args)
    opts = RunOptions(out=args.out or Path("runs") / study.name, models=tuple(names) if names else None,
                      device=args.device, precision=args.precision, data_dir=args.data_dir, executor=args.executor,
                      address=args.address, cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
                      storage=args.storage, quiet=args.quiet, stack_seeds=args.stack_seeds)
    if study.search is not None:
        from convstudy.search import run_search

        if names or args.workers > 1:
            raise UserError(f"{'--models/--where' if names else '--workers'}: a search trains the configurations it "
                            "samples, one at a time (several at once: --executor ray)")
        store, finished = run_search(study, opts, console, args.trials, args.confirm or 0)
    elif args.trials or args.confirm:
        raise UserError(f"{'--trials' if args.trials else '--confirm'}: {study.name} has no [search] section")
    elif args.workers > 1 and args.executor == "local":
        from convstudy.executors.pool import run_with_workers

        store, finished = run_with_workers(study, opts, args.workers, console)
    else:
        store, finished = run_study(study, opts, console)
    render(collect(store), "table", console)
    console.print(f"results: {store.out} (report.html, report.json, report.md, plots/)")
    wanted = set(opts.models or [m.name for m in store.study.models])
    failed = [r for r in store.db.trials() if r.state == "failed" and r.model in wanted and r.seed in study.seeds]
    if failed:
        names = ", ".join(f"{r.model} seed {r.seed}" for r in failed)
        print(f"convstudy: {len(failed)} trial{'s' * (len(failed) > 1)} failed: {names} (errors in the report); "
              "fix the cause and rerun the same command to retry them from their last checkpoint", file=sys.stderr)
        return 1
    return 0 if finished else 130

"""`convstudy run STUDY`: train every model of a study (resuming what a previous run left)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

from rich.console import Console

from convstudy.api import DEVICES, EXECUTORS, PRECISIONS, TYPES, RunRequest, execute, positive_int, seeds_arg
from convstudy.cli.cmd_latency import add_latency_options
from convstudy.cli.options import add_data_dir, add_selection


def register(sub) -> None:
    p = sub.add_parser("run", help="train a study's models (resumes an existing output directory)",
                       description="Train every model of STUDY (a built-in name such as 'seed', or a .toml/.yaml file).")
    p.add_argument("study", metavar="STUDY")
    add_selection(p)
    p.add_argument("--epochs", type=positive_int, help="override the number of epochs")
    p.add_argument("--seeds", type=seeds_arg, metavar="N|MIN..MAX",
                   help="train every model with seeds 0..N-1; MIN..MAX races: every model trains MIN seeds, then "
                        "only models whose place in or out of the best group is undecided get more, up to MAX; "
                        "MIN..MAX@PP sets the race margin in pp (default: from the seed noise)")
    p.add_argument("--dataset", metavar="NAME|SOURCE",
                   help="train on another dataset: a registered name (mnist, fashion-mnist, kmnist, cifar10, cifar100) "
                        "or a source, compact (folder:PATH,size=32x32,channels=3,classes=cat|dog) or as JSON "
                        "('{\"kind\": \"npz\", \"path\": \"x.npz\"}'); each model's classifier (its last dense "
                        "layer) takes the data's class count")
    add_data_dir(p)
    p.add_argument("--out", type=Path, help="output directory (default: runs/<study>)")
    p.add_argument("--train-limit", type=positive_int, metavar="N",
                   help="train on a stratified subset of N training images, for quick looks")
    p.add_argument("--device", default="auto", type=TYPES["device"], metavar=_braces(DEVICES))
    p.add_argument("--precision", default="auto", type=TYPES["precision"], metavar=_braces(PRECISIONS),
                   help="auto: bf16 where the GPU or CPU runs it natively, else fp32")
    p.add_argument("--executor", default="local", type=TYPES["executor"], metavar=_braces(EXECUTORS))
    p.add_argument("--address", help="Ray cluster address to join (default: start a local Ray instance)")
    p.add_argument("--cpus-per-trial", type=float, default=1.0)
    p.add_argument("--gpus-per-trial", type=float, default=0.0, help="fractional GPUs let small trials share one")
    p.add_argument("--storage", help="checkpoint storage, a path or pyarrow URI (default: the output directory); "
                                     "with Ray, one every worker can reach")
    p.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    p.add_argument("--workers", type=positive_int, default=0,
                   help="local executor: N processes training trials at once, each with 1/N of the CPU cores "
                        "(on a GPU they time-slice it); default on the CPU, unless OMP_NUM_THREADS is set: "
                        "measured on this machine (a short calibration, cached), else 1")
    p.add_argument("--latency", action="store_true",
                   help="after the run, measure each model's inference latency on this CPU (as `convstudy latency`)")
    add_latency_options(p, "latency-")
    p.add_argument("--trials", type=positive_int, metavar="N",
                   help="a study with a [search]: sample N configurations in all (overrides its trials count); "
                        "with a [fair]: N per level")
    p.add_argument("--confirm", type=positive_int, metavar="K",
                   help="a study with a [search]: after it, train its best K configurations on every seed")
    p.set_defaults(func=run)


def _braces(names: tuple[str, ...]) -> str:
    return "{" + ",".join(names) + "}"


def run(args: argparse.Namespace) -> int:
    from convstudy.report import collect, render

    console = Console(highlight=False)
    request = RunRequest(**{f.name: getattr(args, f.name) for f in fields(RunRequest)})
    store, finished, note = execute(args.study, request, console)
    render(collect(store), "table", console)
    console.print(f"results: {store.out} (report.html, report.json, report.md, plots/)")
    if note:
        print(note, file=sys.stderr)
        return 1
    return 0 if finished else 130

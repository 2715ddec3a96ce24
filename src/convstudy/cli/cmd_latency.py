"""`convstudy latency OUT`: each trained model's inference latency on this CPU, into OUT/latency.json."""

from __future__ import annotations

import argparse
from contextlib import closing

from rich.console import Console

from convstudy.api import DEFAULT_BUDGET_S, DEFAULT_REPEATS, name_list, positive_int, seconds
from convstudy.cli.options import add_command


def register(sub) -> None:
    p = add_command(sub, "latency", "measure each trained model's inference latency on this CPU",
                    "Measure the inference latency of each model's final weights (its lowest complete seed) on this "
                    "machine's CPU, per image at batch 1 and at batch 256: PyTorch as the trainer runs it (precision, "
                    "channels_last, convolution algorithms) and onnxruntime when installed. Median and 95% CI over "
                    "timed repeats, with the hardware, go to OUT/latency.json (nothing else in OUT is written); "
                    "reports show them.", run, study_dir=True)
    p.add_argument("--models", type=name_list, help="only these models, comma-separated (default: every model)")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                   help="PyTorch's precision; auto: the trainer's choice for this CPU (bf16 where it runs natively)")
    p.add_argument("--threads", type=positive_int, metavar="N",
                   help="intra-op threads of PyTorch and onnxruntime (default: PyTorch's, as the trainer runs)")
    add_latency_options(p)


def add_latency_options(p: argparse.ArgumentParser, prefix: str = "") -> None:
    """--budget and --repeats (with `prefix`, e.g. `latency-` for `run`)."""
    p.add_argument(f"--{prefix}budget", type=seconds, default=DEFAULT_BUDGET_S, metavar="SECONDS",
                   help=f"time budget (default {DEFAULT_BUDGET_S} s; 0: none): no model starts after SECONDS, so a "
                        "300-model study stays practical; the models left are listed as not measured")
    p.add_argument(f"--{prefix}repeats", type=positive_int, default=DEFAULT_REPEATS, metavar="N",
                   help=f"timed repeats per model, runtime and batch after warm-up (default {DEFAULT_REPEATS}, at "
                        "least 6); more, up to 4x, while the median's 95%% CI is wider than 10%% of it")


def run(args: argparse.Namespace) -> int:
    from convstudy.measure.latency import LatencyOptions, measure_and_show
    from convstudy.store import StudyStore

    opts = LatencyOptions(repeats=args.repeats, budget_s=args.budget, precision=args.precision, threads=args.threads)
    opts.check()  # before any work
    with closing(StudyStore.open_existing(args.out)) as store:
        measure_and_show(store, args.models, opts, Console(highlight=False))
    print(f"latency: {store.latency_path}; `convstudy report {store.out} --format html` shows it on the Pareto front")
    return 0

"""`convstudy latency OUT`: each trained model's inference latency on this CPU, into OUT/latency.json."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

from convstudy.cli.options import name_list, positive_int

DEFAULT_BUDGET_S, DEFAULT_REPEATS = 600, 50


def register(sub) -> None:
    p = sub.add_parser("latency", help="measure each trained model's inference latency on this CPU",
                       description="Measure the inference latency of each model's final weights (its lowest complete "
                                   "seed) on this machine's CPU, per image at batch 1 and at batch 256: PyTorch as the "
                                   "trainer runs it (precision, channels_last, convolution algorithms) and onnxruntime "
                                   "when installed. Median and 95% CI over timed repeats, with the hardware, go to "
                                   "OUT/latency.json (nothing else in OUT is written); reports show them.")
    p.add_argument("out", metavar="OUT", type=Path, help="study directory")
    p.add_argument("--models", type=name_list, help="only these models, comma-separated (default: every model)")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                   help="PyTorch's precision; auto: the trainer's choice for this CPU (bf16 where it runs natively)")
    p.add_argument("--threads", type=positive_int, metavar="N",
                   help="intra-op threads of PyTorch and onnxruntime (default: PyTorch's, as the trainer runs)")
    add_latency_options(p)
    p.set_defaults(func=run)


def add_latency_options(p: argparse.ArgumentParser, prefix: str = "") -> None:
    """--budget and --repeats (with `prefix`, e.g. `latency-` for `run`)."""
    p.add_argument(f"--{prefix}budget", type=seconds, default=DEFAULT_BUDGET_S, metavar="SECONDS",
                   help=f"time budget (default {DEFAULT_BUDGET_S} s; 0: none): no model starts after SECONDS, so a "
                        "300-model study stays practical; the models left are listed as not measured")
    p.add_argument(f"--{prefix}repeats", type=positive_int, default=DEFAULT_REPEATS, metavar="N",
                   help=f"timed repeats per model, runtime and batch after warm-up (default {DEFAULT_REPEATS}, at "
                        "least 6); more, up to 4x, while the median's 95%% CI is wider than 10%% of it")


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected seconds >= 0 (0: no limit), got {text}")
    return value


def run(args: argparse.Namespace) -> int:
    from convstudy.interop.latency import LatencyOptions
    from convstudy.store import StudyStore

    opts = LatencyOptions(repeats=args.repeats, budget_s=args.budget, precision=args.precision, threads=args.threads)
    opts.check()  # before any work
    store = StudyStore.open_existing(args.out)
    try:
        measure_and_show(store, args.models, opts, Console(highlight=False))
    finally:
        store.close()
    print(f"latency: {store.latency_path}; `convstudy report {store.out} --format html` shows it on the Pareto front")
    return 0


def measure_and_show(store, models: list[str] | None, opts, console: Console) -> None:
    """Measure `models` (default: all) of the study in `store`, record each in OUT/latency.json as soon as it is
    measured (an interrupted run keeps what it measured), and print the table."""
    from convstudy.interop.latency import METHOD, measure_study

    names = [store.study.model(n).name for n in models] if models else [m.name for m in store.study.models]
    store.read_latency()  # a damaged latency.json stops here, before the work, and is left as it is
    budget = f"{opts.budget_s:g} s" if opts.budget_s else "none"
    console.print(f"measuring the latency of {len(names)} model{'s' * (len(names) != 1)} on this CPU "
                  f"({opts.repeats} repeats per batch and runtime; budget {budget})", soft_wrap=True)
    table = Table("model", "seed", "runtime", "precision", "batch 1: ms (95% CI)", "batch 256: ms/image (95% CI)",
                  title="Inference latency per image: median of the repeats")
    devices, missing = set(), {}
    with console.status(f"measuring {names[0] if names else ''}") as status:
        for i, (name, entry) in enumerate(measure_study(store, names, opts), 1):
            store.record_latency(name, entry, METHOD)
            if i < len(names):
                status.update(f"measured {i}/{len(names)}; measuring {names[i]}")
            if "not_measured" in entry:
                missing.setdefault(entry["not_measured"], []).append(name)
                continue
            devices.add(entry["device"])
            for j, r in enumerate([entry, *entry["other_runtimes"]]):
                table.add_row(name if j == 0 else "", str(entry["seed"]) if j == 0 else "", r["runtime"],
                              r["precision"], _ms(r["batch1_ms"]), _ms(r["batch256_ms_per_image"]))
    if table.rows:
        console.print(table)
    for device in sorted(devices):
        console.print(f"device: {device}", soft_wrap=True)
    for why, which in missing.items():
        console.print(f"not measured: {', '.join(which)}: {why}", soft_wrap=True, markup=False)


def _ms(t: dict) -> str:
    lo, hi = t["ci95"]
    return f"{t['median']:.4g} ({lo:.4g}–{hi:.4g})"

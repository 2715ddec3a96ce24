"""`convstudy bench`: training samples/s of convstudy's trainer against a plain PyTorch loop."""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.table import Table

from convstudy.api import name_list
from convstudy.cli.options import add_command


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text}")
    return value


def register(sub) -> None:
    p = add_command(sub, "bench", "measure training samples/s against a plain PyTorch loop",
                    "Train each model of STUDY (default: seed) on synthetic images with convstudy's trainer "
                    "(PyTorch's default threads, as `convstudy run` trains a lone trial) and with a plain eager "
                    "PyTorch loop (fp32, DataLoader, batch 128) at that default and at 1, 2, 4 ... threads up to the "
                    "CPU count (CPU only), alternating in one process, and report samples/s, the ratio against the "
                    "plain loop at the default threads and against its best thread count (the one that counts), and "
                    "achieved GFLOP/s as a share of a measured matrix-product peak. On the CPU the trainer is also "
                    "timed as `convstudy run` trains a study by default: W trials at once at the measured threads "
                    "each, samples/s summed, against one best plain loop.", run)
    p.add_argument("--study", default="seed", help="built-in study name or study file (default: seed)")
    p.add_argument("--models", type=name_list, help="only these models, comma-separated")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                   help="the trainer's precision (the baseline is always fp32); auto: the trainer's default")
    p.add_argument("--seconds", type=positive_float, default=10.0, help="timed seconds per model (default: 10)")
    p.add_argument("--format", default="table", choices=("table", "json"))


def run(args: argparse.Namespace) -> int:
    import os

    import torch

    from convstudy.measure.parallel import for_new_trials, threads_given
    from convstudy.measure.throughput import bench_models
    from convstudy.data import get_info
    from convstudy.spec import resolve_study, select_models
    from convstudy.train import default_channels_last, resolve_device, resolve_precision

    study = resolve_study(args.study)
    wanted = select_models(study.models, args.models)  # an unknown name is a UserError listing the models
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    console = Console(highlight=False, stderr=args.format == "json")
    console.print(f"benchmarking {len(wanted)} models on {device.type} ({precision}), "
                  f"about {args.seconds:.0f} s of timing each (on the CPU half as long again for the study), "
                  "plus warm-up")
    shape = get_info(study.dataset).input_shape
    together = None  # (threads, workers) as `convstudy run` trains a study of these models with the cores filled
    if device.type == "cpu" and threads_given():
        together = (torch.get_num_threads(), 1)
    elif device.type == "cpu":
        choice = for_new_trials(study.model_copy(update={"models": wanted}), shape, precision, os.cpu_count() or 1,
                                console)
        together = (choice.threads, choice.workers)
    doc = bench_models([(m, m.settings(study.train)) for m in wanted], shape, device, args.seconds, precision,
                       default_channels_last(device), study=together,
                       on_model=lambda r: console.print(
                           f"  {r.name}: {r.samples_per_s:.0f} samples/s, {r.best_ratio:.2f}x the best plain loop "
                           f"(at {r.best_baseline_threads} thr), {r.ratio:.2f}x the plain loop at the default; "
                           f"{r.study_workers} at once x {r.study_threads} thr: {r.study_samples_per_s:.0f} samples/s, "
                           f"{r.study_best_ratio:.2f}x the best plain loop"))
    if args.format == "json":
        print(json.dumps(doc, indent=2))
        return 0
    t, tried = doc["threads"], ", ".join(map(str, doc["baseline"]["threads_tried"]))
    w, st = doc["study"]["workers"], doc["study"]["threads"]
    table = Table(title=f"training throughput on {device.type}, {precision}; trainer {t} threads, 1 process; plain "
                        f"loop at {t} (PyTorch's default) and at {tried} threads; study: {w} trials at once x {st} "
                        f"threads (as `convstudy run`), samples/s summed; matmul peak {doc['peak_gflops']:.0f} GFLOP/s",
                  title_justify="left")
    for col in ("model", "samples/s", f"plain loop, {t} thr", "ratio", "best plain loop", "ratio to best",
                f"study, {w}x{st} thr", "study to best", "GFLOP/s", "peak share"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for m in doc["models"]:
        table.add_row(m["name"], f"{m['samples_per_s']:,.0f}", f"{m['baseline_samples_per_s']:,.0f}",
                      f"{m['ratio']:.2f}x",
                      f"{m['best_baseline_samples_per_s']:,.0f} ({m['best_baseline_threads']} thr)",
                      f"{m['best_ratio']:.2f}x", f"{m['study_samples_per_s']:,.0f}", f"{m['study_best_ratio']:.2f}x",
                      f"{m['gflops']:.1f}", f"{100 * m['peak_share']:.1f}%")
    console.print(table)
    if doc["load"]:
        console.print(f"load average (1 min) at start and end: {', '.join(map(str, doc['load']))}; the ratio to the "
                      "best plain loop is the one that counts; the study's is what `convstudy run` gets by default")
    return 0

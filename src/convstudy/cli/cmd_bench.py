"""`convstudy bench`: training samples/s of convstudy's trainer against a plain PyTorch loop."""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.table import Table

from convstudy.api import name_list


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text}")
    return value


def register(sub) -> None:
    p = sub.add_parser("bench", help="measure training samples/s against a plain PyTorch loop",
                       description="Train each model of STUDY (default: seed) on synthetic images with convstudy's "
                                   "trainer and with a plain eager PyTorch loop (fp32, DataLoader, batch 128), "
                                   "alternating in one process, and report samples/s, their ratio, and achieved "
                                   "GFLOP/s as a share of a measured matrix-product peak.")
    p.add_argument("--study", default="seed", help="built-in study name or study file (default: seed)")
    p.add_argument("--models", type=name_list, help="only these models, comma-separated")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                   help="the trainer's precision (the baseline is always fp32); auto: the trainer's default")
    p.add_argument("--seconds", type=positive_float, default=10.0, help="timed seconds per model (default: 10)")
    p.add_argument("--format", default="table", choices=("table", "json"))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from convstudy.bench import bench_models
    from convstudy.data import get_info
    from convstudy.errors import UserError
    from convstudy.spec import resolve_study
    from convstudy.train import default_channels_last, resolve_device, resolve_precision

    study = resolve_study(args.study)
    names = [m.name for m in study.models]
    for name in args.models or []:
        if name not in names:
            raise UserError(f'--models: study "{study.name}" has no model "{name}"; models: {", ".join(names)}')
    wanted = [m for m in study.models if not args.models or m.name in args.models]
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    console = Console(highlight=False, stderr=args.format == "json")
    console.print(f"benchmarking {len(wanted)} models on {device.type} ({precision}), "
                  f"about {2 * args.seconds:.0f} s each")
    doc = bench_models([(m, m.settings(study.train)) for m in wanted], get_info(study.dataset).input_shape, device,
                       args.seconds, precision, default_channels_last(device),
                       on_model=lambda r: console.print(f"  {r.name}: {r.samples_per_s:.0f} samples/s, "
                                                        f"{r.ratio:.2f}x the plain loop"))
    if args.format == "json":
        print(json.dumps(doc, indent=2))
        return 0
    table = Table(title=f"training throughput on {device.type}, {precision}; matmul peak "
                        f"{doc['peak_gflops']:.0f} GFLOP/s", title_justify="left")
    for col in ("model", "samples/s", "plain loop", "ratio", "GFLOP/s", "peak share"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for m in doc["models"]:
        table.add_row(m["name"], f"{m['samples_per_s']:,.0f}", f"{m['baseline_samples_per_s']:,.0f}",
                      f"{m['ratio']:.2f}x", f"{m['gflops']:.1f}", f"{100 * m['peak_share']:.1f}%")
    console.print(table)
    return 0

"""`convstudy audit CHEAP_OUT --epochs 12 --full`: retrain a cheap study's top, middle and bottom models at the full
budget and say whether the cheap ranking was right (convstudy.search.audit does the work)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from convstudy.api import DEVICES, PRECISIONS, TYPES, positive_int
from convstudy.cli.options import add_data_dir


def register(sub) -> None:
    p = sub.add_parser("audit", help="check a cheap study's ranking against a few of its models at the full budget",
                       description="Fidelity audit: take the finished cheap study in CHEAP_OUT (fewer epochs and/or a "
                                   "train limit), retrain the top, middle and bottom of its ranking at the full budget "
                                   "on several seeds (a normal, resumable study in OUT), and report Kendall's tau and "
                                   "Spearman's rho between the two rankings, the top-k overlap and the regret of "
                                   "choosing at the cheap budget, with bootstrap CIs.")
    p.add_argument("cheap", metavar="CHEAP_OUT", type=Path, help="the finished cheap study's directory")
    p.add_argument("--epochs", type=positive_int, metavar="N", help="the full budget's epochs (default: the cheap study's)")
    limit = p.add_mutually_exclusive_group()
    limit.add_argument("--train-limit", type=positive_int, metavar="N",
                       help="the full budget's training images (default: the cheap study's limit)")
    limit.add_argument("--full", action="store_true", help="train on the whole training set (no train limit)")
    p.add_argument("--models-per-stratum", type=positive_int, default=2, metavar="K",
                   help="models from each of the top, middle and bottom of the cheap ranking (default 2: 6 models)")
    p.add_argument("--seeds", type=positive_int, default=3, metavar="N", help="seeds 0..N-1 per model (default 3)")
    p.add_argument("--out", type=Path, help="the audit's study directory (default: CHEAP_OUT/audit)")
    add_data_dir(p)
    p.add_argument("--device", default="auto", type=TYPES["device"], metavar="{" + ",".join(DEVICES) + "}")
    p.add_argument("--precision", default="auto", type=TYPES["precision"], metavar="{" + ",".join(PRECISIONS) + "}")
    p.add_argument("--workers", type=positive_int, default=1,
                   help="N processes training trials at once, each with 1/N of the CPU cores (on a GPU they time-slice it)")
    p.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from convstudy.executors import RunOptions
    from convstudy.report import write_reports
    from convstudy.search.audit import plan_audit, run_audit, show_audit

    console = Console(highlight=False)
    plan = plan_audit(args.cheap, args.epochs, args.train_limit, args.full, args.models_per_stratum, args.seeds)
    out = args.out or args.cheap / "audit"
    opts = RunOptions(out=out, device=args.device, precision=args.precision, data_dir=args.data_dir, quiet=args.quiet,
                      refresh=write_reports)
    store, result = run_audit(plan, opts, console, args.workers)
    failed = sum(t.state == "failed" for t in store.db.trials())
    store.close()
    if result is None:
        console.print(f"audit not finished ({failed} trials failed, errors in {out}/report.md)" if failed else
                      "audit not finished", "; rerun the same command to resume it", sep="")
        return 1 if failed else 130
    show_audit(result, console)
    console.print(f"results: {out}/audit.json and {out}/report.md")
    return 0

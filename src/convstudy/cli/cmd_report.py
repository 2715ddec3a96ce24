"""`convstudy report OUT`: the comparison of a study directory as a table, Markdown, CSV, JSON or HTML, or its
trials as TensorBoard event files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console


def register(sub) -> None:
    p = sub.add_parser("report", help="report a study directory (table, markdown, csv, json, html, tensorboard)")
    p.add_argument("out", metavar="OUT", type=Path)
    p.add_argument("--format", default="table", choices=("table", "markdown", "csv", "json", "html", "tensorboard"))
    p.add_argument("-o", "--output", type=Path, metavar="FILE",
                   help="write to FILE instead of stdout (html: default OUT/report.html); tensorboard: a new or empty "
                        "DIR (required) that gets one run per trial, DIR/<model>/seed-<s>, with per-epoch scalars, "
                        "test metrics and the model's settings and factors as hparams (needs "
                        "pip install 'convstudy[tracking]')")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from convstudy.cli.outputs import check_output, write_output
    from convstudy.report import collect, render
    from convstudy.store import StudyStore

    if args.format == "tensorboard":
        return _tensorboard(args)
    if args.output is not None:
        check_output(args.output)  # before the work, so a typo in -o costs nothing
    store = StudyStore.open_existing(args.out)
    report = collect(store)  # reads only: the run wrote the plots, and the directory may be read-only
    if args.format == "table" and args.output is None:
        render(report, "table", Console(highlight=False))
        return 0
    text = render(report, args.format)
    if args.format == "html" and args.output is None:
        args.output = store.out / "report.html"
    if args.output:
        write_output(args.output, text)
        if args.format == "html":
            print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _tensorboard(args: argparse.Namespace) -> int:
    from convstudy.errors import UserError
    from convstudy.report.tracking import write_tensorboard
    from convstudy.store import StudyStore

    if args.output is None:
        raise UserError("--format tensorboard: give the directory to write with -o DIR")
    store = StudyStore.open_existing(args.out)
    try:
        n = write_tensorboard(store, args.output)
    finally:
        store.close()
    print(f"wrote {n} trials to {args.output} (tensorboard --logdir {args.output})", file=sys.stderr)
    return 0

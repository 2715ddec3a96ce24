"""`convstudy compare OUT_A OUT_B`: the same models in two studies side by side, with significance."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console

FORMATS = ("table", "markdown", "json", "html")


def register(sub) -> None:
    p = sub.add_parser("compare", help="compare the shared models of two study directories",
                       description="Compare two study directories (e.g. a CPU and a GPU run, two versions, two "
                                   "datasets): each side's test accuracy, the difference and whether it is significant.")
    p.add_argument("a", metavar="OUT_A", type=Path)
    p.add_argument("b", metavar="OUT_B", type=Path)
    p.add_argument("--format", default="table", choices=FORMATS)
    p.add_argument("-o", "--output", type=Path, metavar="FILE", help="write to FILE instead of stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from convstudy.cli.outputs import check_output, write_output
    from convstudy.report.compare import (compare_studies, render_compare_html, render_compare_markdown,
                                          render_compare_terminal)
    from convstudy.store import StudyStore

    if args.output is not None:
        check_output(args.output)  # before the work, so a typo in -o costs nothing
    cmp = compare_studies(StudyStore.open_existing(args.a), StudyStore.open_existing(args.b))
    if args.format == "table" and args.output is None:
        render_compare_terminal(cmp, Console(highlight=False, width=max(Console().width, 160)))
        return 0
    if args.format == "table":
        import io

        buf = io.StringIO()
        render_compare_terminal(cmp, Console(file=buf, width=200, highlight=False))
        text = buf.getvalue()
    elif args.format == "json":
        text = json.dumps(cmp, indent=2, allow_nan=False) + "\n"
    elif args.format == "markdown":
        text = render_compare_markdown(cmp)
    else:
        text = render_compare_html(cmp)
    if args.output:
        write_output(args.output, text)
    else:
        sys.stdout.write(text)
    return 0

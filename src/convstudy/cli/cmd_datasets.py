"""`convstudy datasets`: the dataset registry and what is on disk."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from convstudy.cli.options import add_data_dir


def register(sub) -> None:
    p = sub.add_parser("datasets", help="list registered datasets and which files are cached")
    add_data_dir(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from convstudy.data import dataset_status

    table = Table(title="datasets")
    for col in ("name", "input", "classes", "directory", "files"):
        table.add_column(col)
    for d in dataset_status(args.data_dir):
        have = len(d["present"])
        total = have + len(d["missing"])
        table.add_row(d["name"], "x".join(map(str, d["input_shape"])), str(d["num_classes"]), str(d["dir"]),
                      f"{have}/{total} present" + ("" if have == total else " (downloaded on first use)"))
    Console(highlight=False).print(table)
    return 0

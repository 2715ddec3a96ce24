"""Arguments shared by several commands; their value types are the library's (convstudy.api)."""

from __future__ import annotations

import argparse

from convstudy.api import name_list, where_clause


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", metavar="DIR",
                        help="where the dataset's IDX files are (default: $CONVSTUDY_DATA_DIR, else ~/.cache/convstudy/NAME)")


def add_selection(parser: argparse.ArgumentParser) -> None:
    """`--models a,b` and `--where FACTOR=LEVEL` (repeatable, all must hold)."""
    parser.add_argument("--models", type=name_list, help="only these models, comma-separated")
    parser.add_argument("--where", type=where_clause, action="append", default=[], metavar="FACTOR=LEVEL",
                        help="only models with this factor level, e.g. kernel=5 (repeatable: all must hold)")


def selected(study, args: argparse.Namespace) -> list[str] | None:
    """The names `--models` and `--where` select (None: no selection, every model)."""
    from convstudy.spec import select_models

    if args.models is None and not args.where:
        return None
    return [m.name for m in select_models(study.models, args.models, args.where)]

"""Argument types shared by several commands, each failing with a one-line message."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def name_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected comma-separated names, e.g. k3-1,k3-2")
    return names


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", metavar="DIR",
                        help="where the dataset's IDX files are (default: $CONVSTUDY_DATA_DIR, else ~/.cache/convstudy/NAME)")


def where_clause(text: str) -> tuple[str, str]:
    """`--where kernel=5`: a (factor, level) pair."""
    name, sep, level = text.partition("=")
    if not sep or not name.strip() or not level.strip():
        raise argparse.ArgumentTypeError(f"expected FACTOR=LEVEL, e.g. kernel=5, got {text!r}")
    return name.strip(), level.strip()


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

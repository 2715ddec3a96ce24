"""Arguments shared by several commands; their value types are the library's (convstudy.api)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

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


def add_command(sub, name: str, help: str, description: str, run: Callable[[argparse.Namespace], int], *,
                study_dir: bool = False, weights: bool = False) -> argparse.ArgumentParser:
    """A subcommand's parser that runs `run`: with `study_dir` its OUT argument, with `weights` also the
    `--model`/`--seed` that pick one trained trial (the study directory's commands share their wording)."""
    p = sub.add_parser(name, help=help, description=description)
    if study_dir or weights:
        p.add_argument("out", metavar="OUT", type=Path, help="study directory")
    if weights:
        p.add_argument("--model", required=True, help="model name in the study")
        p.add_argument("--seed", type=int, help="which seed's weights (default: the lowest complete seed)")
    p.set_defaults(func=run)
    return p

"""The Python API for notebooks: `run` a study the way `convstudy run` does, `load` a study directory.

`run`'s keyword options are `convstudy run`'s flags (`train_limit=200` is `--train-limit 200`), parsed
by the same parser and run by the same code (cli/cmd_run.py), so a bad option raises the UserError
whose message the command prints.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from convstudy.errors import UserError

if TYPE_CHECKING:
    from convstudy.results import Results
    from convstudy.spec import Study

_NOT_OPTIONS = ("command", "study", "func")


def run(study: "Study | str | Path", **options: Any) -> "Results":
    """Run (or resume) `study` (a `Study`, a .toml/.yaml path or a built-in name such as "seed") with
    `convstudy run`'s options as keywords (out, models, epochs, seeds, data_dir, train_limit, device,
    precision, workers, quiet, ...); returns the study directory's Results."""
    from rich.console import Console

    from convstudy.cli.cmd_run import execute, failed_note, latency_options, prepare
    from convstudy.results import Results

    args = _run_args(study, options)
    spec, opts, workers = prepare(args)
    store, _ = execute(spec, opts, workers, Console(highlight=False), latency_options(args), args.trials,
                       args.confirm or 0)
    try:
        note = failed_note(store, spec, opts)
    finally:
        store.close()  # Results reads through read-only connections of its own
    if note:
        print(note, file=sys.stderr)
    return Results(store.out)


def load(out: str | Path) -> "Results":
    """A finished or running study directory, read-only, as `convstudy report` opens it."""
    from convstudy.results import Results

    return Results(out, check=True)


def _run_args(study: "Study | str | Path", options: dict[str, Any]) -> argparse.Namespace:
    """`convstudy run`'s parsed arguments for `study` and the keyword `options`: the command line they spell,
    parsed by the CLI's parser."""
    from convstudy.cli import build_parser
    from convstudy.spec import Study

    parser = build_parser()
    defaults = vars(parser.parse_args(["run", "-"]))
    valid = [k for k in defaults if k not in _NOT_OPTIONS]
    unknown = [k for k in options if k not in valid]
    if unknown:
        raise UserError(f"convstudy.run: unknown option{'s' * (len(unknown) > 1)} {', '.join(unknown)}; "
                        f"valid: {', '.join(sorted(valid))}")
    argv = ["run", "-" if isinstance(study, Study) else str(study)]
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if defaults[key] is False:  # a switch (quiet)
            argv += [flag] if value else []
        elif value is not None:
            argv.append(f"{flag}={_flag_text(value)}")
    args = parser.parse_args(argv)
    if isinstance(study, Study):
        args.study = study
    return args


def _flag_text(value: Any) -> str:
    """A keyword's value as its flag spells it: lists comma-separated, a dataset table as JSON."""
    if isinstance(value, dict):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)

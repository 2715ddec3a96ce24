"""The `convstudy` command: subcommands register themselves from one module each.

Exit codes: 0 success, 2 a user mistake (one line on stderr, never a traceback), 1 an internal error,
130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
import traceback

from convstudy import __version__
from convstudy.errors import UserError

# Order of `convstudy --help`; any other cli/cmd_*.py module registers after these.
COMMANDS = ("run", "models", "report", "datasets")


class _Parser(argparse.ArgumentParser):
    """argparse that raises UserError (one line) instead of printing usage and exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{self.prog}: {message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="convstudy", description="CNN architecture studies you can trust.")
    parser.add_argument("--version", action="version", version=f"convstudy {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    import importlib
    import pkgutil

    found = sorted(m.name[len("cmd_"):] for m in pkgutil.iter_modules(__path__) if m.name.startswith("cmd_"))
    for name in [n for n in COMMANDS if n in found] + [n for n in found if n not in COMMANDS]:
        importlib.import_module(f"convstudy.cli.cmd_{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"convstudy: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("convstudy: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception:  # an internal error: show it, it is ours to fix
        traceback.print_exc()
        print("convstudy: internal error (the traceback above is a bug; please report it)", file=sys.stderr)
        return 1

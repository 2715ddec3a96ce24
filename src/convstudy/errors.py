"""The one exception type for user mistakes: the CLI prints its message as one line and exits 2."""

from __future__ import annotations


class UserError(Exception):
    """An input mistake (bad file, bad flag, missing data). Its message is one line, shown as is."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class StoreError(UserError):
    """A study directory that cannot be used (corrupt db, different spec): also the user's to fix."""


class DiskFull(UserError):
    """The study's disk or quota is full: one line, exit 1 (not the user's input, but theirs to free)."""

    exit_code = 1

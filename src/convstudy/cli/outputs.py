"""Files named on the command line (`-o FILE`): checked before any work is done, then written atomically."""

from __future__ import annotations

import os
from pathlib import Path

from convstudy.errors import UserError
from convstudy.store import atomic_write, umask_mode


def check_output(path: Path, label: str = "-o") -> Path:
    """`path` if a file can be written there; otherwise a one-line UserError naming it."""
    target = Path(os.path.realpath(path))  # a symlink is written through, so the check is on what it points to
    parent = target.parent
    if target.is_dir():
        raise UserError(f"{label} {path}: is a directory; give a file name")
    if not parent.exists():
        raise UserError(f"{label} {path}: directory {parent} does not exist")
    if not parent.is_dir():
        raise UserError(f"{label} {path}: {parent} is not a directory")
    if target.exists():
        if not os.access(target, os.W_OK):
            raise UserError(f"{label} {path}: file is not writable")
    elif not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{label} {path}: directory {parent} is not writable")
    return path


def write_output(path: Path, data: str | bytes, label: str = "-o") -> None:
    """Write `data` (text as UTF-8) to `path`: a temp file in the same directory renamed over it.

    Readers never see half a file and a failed write leaves the old one. A device or FIFO that already
    exists there (`-o /dev/stdout`) is written in place, since renaming over it would replace the node.
    """
    raw = data.encode() if isinstance(data, str) else data
    target = Path(os.path.realpath(path))
    try:
        if target.exists() and not target.is_file():
            with open(target, "wb") as fh:
                fh.write(raw)
            return
        # Keep the old file's mode, or the umask's: mkstemp's 0600 would make a report others cannot read.
        atomic_write(target, raw, target.stat().st_mode & 0o7777 if target.exists() else umask_mode())
    except OSError as exc:
        raise UserError(f"{label} {path}: cannot write ({exc.strerror or exc})") from None

"""What made a number: versions, code commit, device and host, stored with every run."""

from __future__ import annotations

import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

import convstudy


def git_commit(path: Path | None = None) -> str | None:
    """The commit of the convstudy checkout (with `+dirty` for local changes), or None outside git."""
    where = path or Path(convstudy.__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if out.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def provenance(device: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Versions, commit, device and host for the runs table."""
    return {
        "convstudy": convstudy.__version__,
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": device,
        "threads": torch.get_num_threads(),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "argv": sys.argv,
        **(extra or {}),
    }

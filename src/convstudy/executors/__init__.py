"""Executors decide where trials run: in this process, in `--workers` processes or as Ray tasks, each
through the one executor loop (`loop.run_trials`); `run_study` (`executors.run`) is the one entry point.

The options (`RunOptions`) import nothing heavy; the rest is imported when first used, so the library's
and the CLI's option handling never import torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from convstudy.executors.options import EXECUTORS, Growth, RunOptions, RunSettings

__all__ = ["EXECUTORS", "EpochDone", "Event", "Growth", "RunOptions", "RunSettings", "TrialJob", "launcher_for",
           "run_study", "run_trial"]
_LAZY = {"run_study": "run", "launcher_for": "run", "EpochDone": "trial", "Event": "trial", "TrialJob": "trial",
         "run_trial": "trial"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_LAZY[name]}"), name)

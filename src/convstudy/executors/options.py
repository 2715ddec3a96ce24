"""The executors' options record and their hook for growing studies; light, so the library and the CLI
can build options without importing torch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol

if TYPE_CHECKING:
    from convstudy.executors.trial import EpochDone
    from convstudy.spec import ModelSpec
    from convstudy.store import StudyStore

EXECUTORS = ("local", "ray")


@dataclass(frozen=True, kw_only=True)
class RunSettings:
    """Where and how trials run: the options `convstudy run` (api.RunRequest) hands the executors as they are."""

    data_dir: str | None = None
    device: str = "auto"
    precision: str = "auto"
    executor: str = "local"
    address: str | None = None  # Ray: the cluster to join
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    storage: str | None = None  # where checkpoints go (a path or pyarrow URI); default: the study directory
    quiet: bool = False
    workers: int = 0  # local: trials at once, each in its own process (0: not given; api measures it)


@dataclass(frozen=True, kw_only=True)
class RunOptions(RunSettings):
    """Everything `run_study` needs besides the study: the settings, the output and which trials."""

    out: Path
    models: tuple[str, ...] | None = None
    seeds_of: dict[str, tuple[int, ...]] | None = None  # racing: the seeds each model has earned so far
    first: tuple[str, ...] = ()  # models whose trials are claimed first, in order (measured: the longest first)
    # The caller's report refresh, called with the store after trials that ended (paced: executors.run.Pacer)
    # and when a run ends; the executors write no reports themselves.
    refresh: Callable[[StudyStore], object] | None = None
    # False: the caller refreshes the reports itself once this run returns (a search's confirmation, racing's
    # next round, the levels of a fair study follow in this process), so a run that ended has its last refresh
    # paced like one after a trial; an interrupted run always refreshes.
    final_refresh: bool = True

    def refreshed(self, store: StudyStore) -> None:
        if self.refresh is not None:
            self.refresh(store)


class Growth(Protocol):
    """Models that join a study while it runs: convstudy.search samples them (issue 18).

    `start(store, add)` is called once the study directory is open, with `add(model)`, which makes a
    model one of the study's (plan, trials of every seed, a job); then an executor with a free slot and
    nothing left to claim calls `more()` (True: it added a trial), and after every epoch `prune(event)`
    (True: stop the trial there, recorded as pruned).
    """

    def start(self, store: StudyStore, add: Callable[[ModelSpec], None]) -> None: ...

    def more(self) -> bool: ...

    def prune(self, event: EpochDone) -> bool: ...

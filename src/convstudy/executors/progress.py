"""What a run shows: Keras-like epoch lines, and a rich progress bar for the running epoch on a terminal."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from convstudy.train import EpochResult

if TYPE_CHECKING:
    from convstudy.executors.trial import TrialJob


class ProgressView:
    """Prints one line per epoch; animates the running epoch only when output is a terminal."""

    def __init__(self, console: Console | None = None, n_train: int = 0, quiet: bool = False) -> None:
        self.console = console or Console(highlight=False)
        self.n_train, self.quiet = n_train, quiet
        self.live = self.console.is_terminal and not quiet
        self.progress: Progress | None = None
        self.task = None
        self._tag = ""

    def started(self, job: "TrialJob", epoch: int, where: str = "") -> None:
        """A trial starts after `epoch`; for seeds trained together, once per member (the bar shows the last)."""
        self._tag = _tag(job)
        resumed = f" (resuming after epoch {epoch})" if epoch else ""
        self._print(f"[bold]{self._tag}[/bold]: {job.settings.epochs} epochs, batch {job.settings.batch_size}, "
                    f"{job.settings.optimizer.name}{resumed}")
        self._epochs = job.settings.epochs
        self._new_bar(epoch + 1)

    def _new_bar(self, epoch: int) -> None:
        if not self.live:
            return
        if self.progress is None:
            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeRemainingColumn(), console=self.console, transient=True)
            self.progress.start()
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task(f"{self._tag} epoch {epoch}/{self._epochs}", total=self.n_train)

    def batch(self, done: int) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, completed=done)

    def epoch(self, job: "TrialJob", r: EpochResult) -> None:
        self._print(f"{_tag(job)} · Epoch {r.epoch}/{job.settings.epochs} - {r.seconds:.0f}s - loss: {r.loss:.4f} - "
                    f"acc: {r.accuracy:.4f} - val_loss: {r.val_loss:.4f} - val_acc: {r.val_accuracy:.4f}")
        if r.epoch < job.settings.epochs:
            self._new_bar(r.epoch + 1)

    def finished(self, job: "TrialJob", test_loss: float, test_accuracy: float) -> None:
        self._stop_bar()
        self._print(f"{_tag(job)}: test loss {test_loss:.4f}, test accuracy {test_accuracy:.4f}")

    def diverged(self, job: "TrialJob", epoch: int) -> None:
        self._stop_bar()
        self._print(f"[red]{_tag(job)}: diverged (non-finite loss) in epoch {epoch}[/red]")

    def failed(self, job: "TrialJob", exc: BaseException) -> None:
        self._stop_bar()
        self._print(f"[red]{_tag(job)}: failed: {type(exc).__name__}: {exc}[/red]")

    def close(self) -> None:
        self._stop_bar()

    def _stop_bar(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress, self.task = None, None

    def _print(self, text: str) -> None:
        if not self.quiet:
            (self.progress.console if self.progress else self.console).print(text, soft_wrap=True)


def warn(text: str) -> None:
    """One line on stderr, shown even with --quiet: something the user must know (a damaged file)."""
    print(f"convstudy: warning: {' '.join(text.split())}", file=sys.stderr, flush=True)


def _tag(job: "TrialJob") -> str:
    return f"{job.model.name} seed {job.seed}"

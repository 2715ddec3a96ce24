"""What a run shows, for every executor: Keras-like lines per trial start, epoch and end, and on a
terminal or in Jupyter a live table of the trials in flight (worker, attempt, epoch, progress through it)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rich.console import Console
from rich.live import Live
from rich.table import Table

from convstudy.train import EpochResult

if TYPE_CHECKING:
    from convstudy.executors.trial import TrialJob


@dataclass
class _Row:
    job: "TrialJob"
    attempt: int = 1
    where: str = ""
    done: int = 0  # training images of the running epoch
    last: EpochResult | None = None


class ProgressView:
    """Prints one line per event (unless quiet); animates the trials in flight on a terminal (rich's Live) or
    in a Jupyter output redrawn in place (Live needs ipywidgets there), never in a log file."""

    def __init__(self, console: Console | None = None, n_train: int = 0, quiet: bool = False) -> None:
        self.console = console or Console(highlight=False)
        self.n_train, self.quiet = n_train, quiet
        self.rows: dict[int, _Row] = {}
        self.current: _Row | None = None  # the row per-batch progress belongs to
        self.live: Live | None = None
        self.cell = None  # Jupyter: the IPython display handle the table is redrawn in
        self.drawn = 0.0
        if quiet:
            return
        if self.console.is_terminal:
            self.live = Live(console=self.console, transient=True, refresh_per_second=4, get_renderable=self._table)
            self.live.start()
        elif self.console.is_jupyter:
            from IPython.display import display

            self.cell = display(self._table(), display_id=True)

    def _redraw(self, now: bool = False) -> None:
        """Jupyter: show the table again, at most 4 times a second unless `now` (a trial came or went)."""
        if self.cell is not None and (now or time.monotonic() - self.drawn >= 0.25):
            self.cell.update(self._table())
            self.drawn = time.monotonic()

    def _table(self) -> Table:
        table = Table(title=f"{len(self.rows)} trials running", title_justify="left")
        for col in ("model", "seed", "attempt", "worker", "epoch", "images", "loss", "acc", "val_loss", "val_acc"):
            table.add_column(col, justify="left" if col in ("model", "worker") else "right")
        for row in self.rows.values():
            r, epochs = row.last, row.job.settings.epochs
            metrics = [f"{v:.4f}" for v in (r.loss, r.accuracy, r.val_loss, r.val_accuracy)] if r else [""] * 4
            table.add_row(row.job.model.name, str(row.job.seed), str(row.attempt), row.where or "waiting",
                          f"{r.epoch if r else 0}/{epochs}", f"{row.done}/{self.n_train}", *metrics)
        return table

    def submitted(self, job: "TrialJob", attempt: int = 1) -> None:
        self.rows[job.trial_id] = _Row(job, attempt)
        self._redraw(now=True)

    def started(self, job: "TrialJob", epoch: int, where: str = "") -> None:
        """A trial starts after `epoch`; a second start of one submission is a retry (a lost Ray worker)."""
        row = self.rows.get(job.trial_id)
        if row is None:
            row = self.rows[job.trial_id] = _Row(job)
        elif row.where:
            row.attempt += 1
            self._print(f"[yellow]{_tag(job)}: worker {row.where} lost; attempt {row.attempt} resumes from the "
                        "last checkpoint[/yellow]")
        row.where, self.current = where, row
        resumed = f" (resuming after epoch {epoch})" if epoch else ""
        on = f" on {where}" if where else ""
        self._print(f"[bold]{_tag(job)}[/bold]: {job.settings.epochs} epochs, batch {job.settings.batch_size}, "
                    f"{job.settings.optimizer.name}{on}{resumed}")
        self._redraw(now=True)

    def batch(self, done: int) -> None:
        if self.current is not None:
            self.current.done = done
            self._redraw()

    def epoch(self, job: "TrialJob", r: EpochResult) -> None:
        if (row := self.rows.get(job.trial_id)) is not None:
            row.last, row.done = r, 0
        self._redraw(now=True)
        self._print(f"{_tag(job)} · Epoch {r.epoch}/{job.settings.epochs} - {r.seconds:.0f}s - loss: {r.loss:.4f} - "
                    f"acc: {r.accuracy:.4f} - val_loss: {r.val_loss:.4f} - val_acc: {r.val_accuracy:.4f}")

    def finished(self, job: "TrialJob", test_loss: float, test_accuracy: float) -> None:
        self.dropped(job)
        self._print(f"{_tag(job)}: test loss {test_loss:.4f}, test accuracy {test_accuracy:.4f}")

    def diverged(self, job: "TrialJob", epoch: int) -> None:
        self.dropped(job)
        self._print(f"[red]{_tag(job)}: diverged (non-finite loss) in epoch {epoch}[/red]")

    def pruned(self, job: "TrialJob", epoch: int) -> None:
        self.dropped(job)
        self._print(f"[yellow]{_tag(job)}: pruned after epoch {epoch}[/yellow]")

    def failed(self, job: "TrialJob", reason: str) -> None:
        self.dropped(job)
        self._print(f"[red]{_tag(job)}: failed: {reason}[/red]")

    def dropped(self, job: "TrialJob") -> None:
        row = self.rows.pop(job.trial_id, None)
        if row is self.current:
            self.current = None
        self._redraw(now=True)

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
        if self.cell is not None:  # transient, as on a terminal: the lines printed below it stay
            self.cell.update({"text/plain": ""}, raw=True)
            self.cell = None

    def _print(self, text: str) -> None:
        if not self.quiet:
            self.console.print(text, soft_wrap=True)


def warn(text: str) -> None:
    """One line on stderr, shown even with --quiet: something the user must know (a damaged file)."""
    print(f"convstudy: warning: {' '.join(text.split())}", file=sys.stderr, flush=True)


def _tag(job: "TrialJob") -> str:
    return f"{job.model.name} seed {job.seed}"

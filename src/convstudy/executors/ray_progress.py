"""What a Ray run shows: one live table of every running trial, and a line per epoch and outcome."""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Console
from rich.live import Live
from rich.table import Table

from convstudy.executors.trial import TrialJob
from convstudy.train import EpochResult


@dataclass
class _Row:
    job: TrialJob
    attempt: int
    where: str = "waiting for a worker"
    last: EpochResult | None = None


class RayView:
    """A rich Live table (model, seed, attempt, worker, epoch, latest metrics) on a terminal; lines always."""

    def __init__(self, console: Console, quiet: bool = False) -> None:
        self.console, self.quiet = console, quiet
        self.rows: dict[int, _Row] = {}
        self.live: Live | None = None
        if console.is_terminal and not quiet:
            self.live = Live(console=console, transient=True, refresh_per_second=4, get_renderable=self._table)
            self.live.start()

    def _table(self) -> Table:
        table = Table(title=f"{len(self.rows)} trials running on Ray", title_justify="left")
        for col in ("model", "seed", "attempt", "worker", "epoch", "loss", "acc", "val_loss", "val_acc"):
            table.add_column(col, justify="left" if col in ("model", "worker") else "right")
        for row in list(self.rows.values()):
            r, epochs = row.last, row.job.settings.epochs
            metrics = ([f"{r.loss:.4f}", f"{r.accuracy:.4f}", f"{r.val_loss:.4f}", f"{r.val_accuracy:.4f}"]
                       if r else ["", "", "", ""])
            table.add_row(row.job.model.name, str(row.job.seed), str(row.attempt), row.where,
                          f"{r.epoch if r else 0}/{epochs}", *metrics)
        return table

    @staticmethod
    def _tag(job: TrialJob) -> str:
        return f"{job.model.name} seed {job.seed}"

    def submitted(self, job: TrialJob, attempt: int) -> None:
        self.rows[job.trial_id] = _Row(job, attempt)

    def started(self, job: TrialJob, resumed_epoch: int, where: str = "") -> None:
        row = self.rows.get(job.trial_id)
        if row is not None:
            if row.where != _Row.where:  # a second start of one claim: Ray retried a lost worker's task
                row.attempt += 1
                self.restarted(job, f"worker {row.where} lost", row.attempt)
            row.where = where
        resumed = f" (resuming after epoch {resumed_epoch})" if resumed_epoch else ""
        self._print(f"[bold]{self._tag(job)}[/bold]: {job.settings.epochs} epochs, batch {job.settings.batch_size}, "
                    f"{job.settings.optimizer.name} on {where}{resumed}")

    def batch(self, done: int) -> None:
        """Per-batch progress stays on the workers; the table shows epochs."""

    def epoch(self, job: TrialJob, r: EpochResult) -> None:
        row = self.rows.get(job.trial_id)
        if row is not None and (row.last is None or r.epoch >= row.last.epoch):
            row.last = r
        self._print(f"{self._tag(job)} · Epoch {r.epoch}/{job.settings.epochs} - {r.seconds:.0f}s - loss: {r.loss:.4f}"
                    f" - acc: {r.accuracy:.4f} - val_loss: {r.val_loss:.4f} - val_acc: {r.val_accuracy:.4f}")

    def finished(self, job: TrialJob, test_loss: float, test_accuracy: float) -> None:
        self.rows.pop(job.trial_id, None)
        self._print(f"{self._tag(job)}: test loss {test_loss:.4f}, test accuracy {test_accuracy:.4f}")

    def diverged(self, job: TrialJob, epoch: int) -> None:
        self.rows.pop(job.trial_id, None)
        self._print(f"[red]{self._tag(job)}: diverged (non-finite loss) in epoch {epoch}[/red]")

    def restarted(self, job: TrialJob, reason: str, attempt: int) -> None:
        self._print(f"[yellow]{self._tag(job)}: worker lost ({reason}); attempt {attempt} resumes "
                    f"from the last checkpoint[/yellow]")

    def failed(self, job: TrialJob, reason: str) -> None:
        self.rows.pop(job.trial_id, None)
        self._print(f"[red]{self._tag(job)}: failed: {reason}[/red]")

    def dropped(self, job: TrialJob) -> None:
        self.rows.pop(job.trial_id, None)

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None

    def _print(self, text: str) -> None:
        if not self.quiet:
            self.console.print(text, soft_wrap=True)

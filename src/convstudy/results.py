"""A study directory seen from a notebook: trials as pandas DataFrames, the CLI's summary, the HTML report.

Every call opens the directory read-only (as `convstudy report` does) and reads it afresh, so the same
object follows a study that is still running, and nothing is ever written into it.
"""

from __future__ import annotations

import os
from collections import Counter
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypeVar

if TYPE_CHECKING:
    import pandas as pd

    from convstudy.spec import Study
    from convstudy.store import StudyStore

T = TypeVar("T")

TRIAL_COLUMNS = ("model", "seed", "state", "test_accuracy", "test_loss", "val_accuracy", "val_loss", "epochs_done",
                 "train_seconds", "params", "mflops", "error")
EPOCH_COLUMNS = ("model", "seed", "state", "epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds")


class Results:
    """The results of the study in `out`; `convstudy.run` and `convstudy.load` return one."""

    def __init__(self, out: str | Path, check: bool = False) -> None:
        if not isinstance(out, (str, os.PathLike)):
            from convstudy.errors import UserError

            raise UserError(f"convstudy.load: out is a study directory (a str or Path), not {type(out).__name__}")
        self.out = Path(out)
        if check:
            self._read(lambda store: None)  # a missing or foreign directory fails now, not at first use

    def _read(self, what: "Callable[[StudyStore], T]") -> T:
        """`what(store)` on the directory opened read-only, closed again after."""
        from convstudy.store import StudyStore

        store = StudyStore.open_existing(self.out)
        try:
            return what(store)
        finally:
            store.close()

    def _report(self) -> dict[str, Any]:
        from convstudy.report import collect

        return self._read(collect)

    @property
    def study(self) -> "Study":
        """The study as stored (spec, models with their factors)."""
        return self._read(lambda store: store.study)

    def frame(self, epochs: bool = False) -> "pd.DataFrame":
        """One row per trial (model, seed, the model's factors, state, test and final validation metrics,
        epochs done, train seconds, params, MFLOPs, error), or with `epochs=True` one row per finished epoch."""
        import pandas as pd

        from convstudy.report import collect

        report, study = self._read(lambda store: (collect(store), store.study))
        factors = {m.name: m.factors for m in study.models}
        columns = EPOCH_COLUMNS if epochs else TRIAL_COLUMNS
        names = dict.fromkeys(k for m in report["models"] for k in factors.get(m["name"], {}))
        shown = {k: f"factor_{k}" if k in columns else k for k in names}  # a factor never hides a column
        rows = []
        for m in report["models"]:
            head = {"model": m["name"], **{shown[k]: v for k, v in factors.get(m["name"], {}).items()}}
            for t in m["trials"]:
                trial = {**head, "seed": t["seed"], "state": str(t["state"])}
                if epochs:
                    rows += [{**trial, **e} for e in t["epochs"]]
                    continue
                last = t["epochs"][-1] if t["epochs"] else {}
                rows.append({**trial, "test_accuracy": t["test_accuracy"], "test_loss": t["test_loss"],
                             "val_accuracy": last.get("val_accuracy"), "val_loss": last.get("val_loss"),
                             "epochs_done": len(t["epochs"]), "train_seconds": t["train_seconds"],
                             "params": m["params"], "mflops": m["mflops"], "error": t["error"]})
        table = pd.DataFrame(rows, columns=[*columns[:2], *shown.values(), *columns[2:]])
        metrics = [c for c in columns if c in ("test_accuracy", "test_loss", "val_accuracy", "val_loss")]
        return table.astype(dict.fromkeys(metrics, float))  # unfinished trials: NaN, not None

    def summary(self) -> "pd.DataFrame":
        """The table `convstudy run` prints at its end and `convstudy report` shows, one row per model and
        its cells as printed (accuracy as mean ± std in %, ★ for the best group); its footnotes (what ★
        means, warnings) are in `.attrs["notes"]`. For numbers to compute with, use `frame()`."""
        import pandas as pd

        from convstudy.report.models import footnotes, summary_rows

        report = self._report()
        rows = summary_rows(report)
        table = pd.DataFrame(rows, columns=list(rows[0]) if rows else ["model"]).set_index("model")
        table.attrs["notes"] = footnotes(report)
        return table

    def html(self) -> str:
        """The study's HTML report, as `convstudy report --format html` writes it (one self-contained page)."""
        from convstudy.report import render

        return render(self._report(), "html")

    def _repr_html_(self) -> str:
        """The HTML report inline in Jupyter: the whole page in a sandboxed iframe's `srcdoc`, escaped, so
        neither its styles nor its script (nor any user text) reach the notebook's page."""
        return (f'<iframe srcdoc="{escape(self.html(), quote=True)}" title="convstudy report: {escape(str(self.out))}" '
                'sandbox="allow-scripts" style="width: 100%; height: 640px; border: 1px solid #ccc; '
                'resize: vertical"></iframe>')

    def __repr__(self) -> str:
        states = self._read(lambda store: Counter(str(r.state) for r in store.db.trials()))
        shown = ", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "no trials yet"
        return f"<convstudy Results {str(self.out)!r}: {shown}>"

"""Fidelity audits (issue 30): does a cheap study (fewer epochs, a train limit) rank its models like the full budget?

`plan_audit` reads a finished cheap study, ranks its models by the selection metric (mean over seeds) and picks
a stratified subset: the top, middle and bottom `per_stratum` of that ranking. `run_audit` trains them at the
full budget on `seeds` seeds as a normal study in OUT (default CHEAP/audit) through `run_study`, so a kill -9
anywhere resumes where it stopped, then compares the two rankings (report.fidelity.audit_statistics) and keeps
the result in OUT/audit.json and in OUT's report. Every refusal happens before anything is written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from convstudy.errors import UserError
from convstudy.executors import RunOptions, run_study
from convstudy.executors.racing import finished_values
from convstudy.report import write_reports
from convstudy.report.audit_view import audit_lines
from convstudy.report.fidelity import audit_statistics, budget_label
from convstudy.spec import Study, build_study
from convstudy.spec.models import SAMPLED_NAME
from convstudy.store import FINISHED, StoreError, StudyStore, atomic_write

MIN_MODELS = 4  # fewer than this and no rank correlation means anything


@dataclass(frozen=True)
class AuditPlan:
    """What an audit trains and what it compares with: the audit study and the cheap values of its models."""

    study: Study
    cheap: dict[str, list[float]]  # audit model name -> the cheap study's selection metric per seed
    strata: dict[str, str]  # audit model name -> "top", "middle" or "bottom" of the cheap ranking
    cheap_budget: str
    full_budget: str
    per_stratum: int


def _strata(ranked: list[str], k: int) -> dict[str, str]:
    """The top, middle and bottom `k` of `ranked` (best first); every model when there are no more than 3k."""
    if len(ranked) <= 3 * k:
        third = len(ranked) / 3
        return {m: ("top", "middle", "bottom")[min(2, int(i // third))] for i, m in enumerate(ranked)}
    mid = (len(ranked) - k) // 2
    return {**{m: "top" for m in ranked[:k]}, **{m: "middle" for m in ranked[mid:mid + k]},
            **{m: "bottom" for m in ranked[-k:]}}


def plan_audit(cheap_out: str | Path, epochs: int | None = None, train_limit: int | None = None,
               full_data: bool = False, per_stratum: int = 2, seeds: int = 3) -> AuditPlan:
    """The audit of the finished study in `cheap_out` at `epochs` (default: the cheap study's) on `train_limit`
    images (default: the cheap study's; `full_data`: all of them); UserError for an unfinished study, fewer than
    4 ranked models or a budget that is not larger than the cheap one."""
    if per_stratum < 1 or seeds < 1:
        raise UserError("--models-per-stratum and --seeds must be at least 1")
    store = StudyStore.open_existing(cheap_out)
    try:
        cheap = store.study
        trials = store.db.trials()
        open_ = [t for t in trials if t.state not in FINISHED]
        if open_ or not trials or (cheap.race and store.db.get_meta("racing") is None):
            left = f"{len(open_)} of {len(trials)} trials not finished" if open_ else "racing not done"
            raise UserError(f"{cheap_out}: an unfinished study ({left}); finish it with the same `convstudy run` "
                            "command first")
        values: dict[str, list[float]] = {}
        for (model, _), v in sorted(finished_values(store, cheap.train.validation).items(), key=lambda kv: kv[0][1]):
            if v is not None:
                values.setdefault(model, []).append(v)
    finally:
        store.close()
    if len(values) < MIN_MODELS:
        raise UserError(f"{cheap_out}: {len(values)} model{'s' * (len(values) != 1)} finished with a metric; an audit "
                        f"ranks at least {MIN_MODELS}")
    old_epochs = max(m.settings(cheap.train).epochs for m in cheap.models if m.name in values)
    old_limit = cheap.train.train_limit
    new_epochs = epochs or old_epochs
    new_limit = None if full_data else train_limit or old_limit
    old, new = budget_label(old_epochs, old_limit), budget_label(new_epochs, new_limit)

    def images(limit: int | None) -> float:
        return float("inf") if limit is None else limit

    if new_epochs < old_epochs or images(new_limit) < images(old_limit) or (
            new_epochs == old_epochs and images(new_limit) == images(old_limit)):
        raise UserError(f"the full budget ({new}) is not larger than the cheap study's ({old}); raise --epochs, "
                        "or --train-limit, or use --full")
    ranked = sorted(values, key=lambda m: -sum(values[m]) / len(values[m]))
    strata = _strata(ranked, per_stratum)
    if len(strata) < MIN_MODELS:
        raise UserError(f"--models-per-stratum {per_stratum}: picks {len(strata)} of {cheap_out}'s {len(ranked)} models; "
                        f"an audit ranks at least {MIN_MODELS}")
    # A search's sampled names (trial-NNNN) are kept for its own trials: the audit's copies get a prefix.
    rename = {m: f"audit-{m}" if SAMPLED_NAME.match(m) else m for m in strata}
    data = cheap.to_dict()
    for key in ("search", "fair"):
        data.pop(key, None)
    data["train"] = {**data["train"], "epochs": new_epochs}
    data["train"].pop("train_limit", None)
    if new_limit is not None:
        data["train"]["train_limit"] = new_limit
    specs = {m["name"]: m for m in data["models"]}
    for spec in specs.values():  # the audit's epochs hold for every model
        if "epochs" in spec.get("train", {}):
            spec["train"] = {k: v for k, v in spec["train"].items() if k != "epochs"}
    data["models"] = [{**specs[m], "name": rename[m]} for m in ranked if m in strata]
    data.update(name=f"{cheap.name[:58]}-audit", seeds=seeds,
                description=f"Fidelity audit of {cheap.name}: {len(strata)} of its models at {new} on {seeds} seeds")
    study = build_study(data, source=f"audit of {cheap_out}")
    return AuditPlan(study, {rename[m]: values[m] for m in strata}, {rename[m]: s for m, s in strata.items()},
                     old, new, per_stratum)


def check_out(out: Path, study: Study) -> None:
    """Refuse an OUT that holds another study, before anything is written there."""
    if not (out / "study.db").is_file():
        return
    have = StudyStore.open_existing(out)
    try:
        if have.study.fingerprint() != study.fingerprint():
            raise StoreError(f'--out {out}: holds a different study ("{have.study.name}"); an audit of other models '
                             "or another budget needs its own --out")
    finally:
        have.close()


def run_audit(plan: AuditPlan, opts: RunOptions, console: Console | None = None,
              workers: int = 1) -> tuple[StudyStore, dict | None]:
    """Train (or resume) the audit study into `opts.out` (`workers` local processes), then compare the rankings;
    returns the store and the audit (None while any audit trial has not ended), also in OUT/audit.json and OUT's report."""
    console = console or Console(highlight=False)
    check_out(opts.out, plan.study)
    store, finished = run_study(plan.study, replace(opts, workers=workers), console)
    trials = store.db.trials()
    if not finished or any(t.state not in FINISHED for t in trials):
        return store, None
    full: dict[str, list[float]] = {}
    for (model, _), v in sorted(finished_values(store, plan.study.train.validation).items(), key=lambda kv: kv[0][1]):
        if v is not None:
            full.setdefault(model, []).append(v)
    result = audit_statistics(plan.cheap, full, plan.per_stratum, plan.cheap_budget, plan.full_budget)
    for row in result["models"]:
        row["stratum"] = plan.strata[row["name"]]
    result["metric"] = "val_accuracy" if plan.study.train.validation == "holdout" else "test_accuracy"
    text = json.dumps(result, indent=2, allow_nan=False)
    store.db.set_meta("audit", text)
    atomic_write(store.out / "audit.json", (text + "\n").encode(), mode=0o644)
    write_reports(store)
    return store, result


def show_audit(result: dict[str, Any], console: Console) -> None:
    """The audit on the terminal: both ranks and means per model, the statistics, then the verdict."""
    verdict, line, head, rows = audit_lines(result)
    table = Table(title=f"Fidelity audit: {result['cheap_budget']} against {result['full_budget']}")
    for i, col in enumerate(head):
        table.add_column(col, justify="left" if i < 2 else "right")
    for r in rows:
        table.add_row(*r)
    console.print(table)
    console.print(line)
    console.print(verdict, style="bold")

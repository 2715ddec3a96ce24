"""The search section of a report: objective by trial, the Pareto front, pruned trials, parameter importances,
read from OUT/search.db (read-only) and study.db."""

from __future__ import annotations

import math
import warnings
from typing import Any

from matplotlib.figure import Figure

from convstudy.report.figures import memoized, to_svg
from convstudy.report.markup import el, esc, figure, md_table, md_text, table
from convstudy.store import State, StudyStore


def search_section(store: StudyStore) -> dict[str, Any] | None:
    """The search's trials, best-so-far curve, Pareto front, pruned trials and importances; None without one."""
    spec = store.study.search
    path = store.out / "search.db"
    if spec is None or not path.is_file():
        return None
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(f"sqlite:///file:{path.resolve()}?mode=ro&uri=true",
                                         skip_table_creation=True)
    study = optuna.load_study(study_name=store.study.name, storage=storage)
    seed = store.study.seeds[0]
    recs = {r.model: r for r in store.db.trials() if r.seed == seed}
    objectives = [{"metric": o.metric, "direction": o.goal} for o in spec.objective]
    first = objectives[0]["direction"]
    trials, best = [], None
    for t in study.get_trials(deepcopy=False):
        model = t.user_attrs.get("model")
        rec = recs.get(model)
        values = list(t.values) if t.values and t.state.name == "COMPLETE" else None
        if values is not None:
            v = values[0]
            best = v if best is None or (v > best if first == "maximize" else v < best) else best
        state = rec.state.value if rec else "duplicate" if "duplicate_of" in t.user_attrs else (
            "invalid" if "invalid" in t.user_attrs else t.state.name.lower())
        trials.append({"number": t.number, "model": model, "state": state,
                       "params": t.params, "values": values, "epochs": rec.epochs_done if rec else 0,
                       "best_so_far": best, "invalid": t.user_attrs.get("invalid"),
                       "duplicate_of": t.user_attrs.get("duplicate_of")})
    done = [t for t in trials if t["model"] in recs]
    epochs = store.study.train.epochs
    front = [t.user_attrs.get("model") for t in study.best_trials] if any(t["values"] for t in trials) else []
    return {
        "sampler": spec.sampler, "pruner": spec.pruner, "seed": spec.seed, "objectives": objectives,
        "budget": spec.trials.model_dump(exclude_none=True), "trials": trials,
        "pareto_front": front if len(objectives) > 1 else [],
        "best": front[0] if front and len(objectives) == 1 else None,
        "pruned": [{"model": t["model"], "epoch": t["epochs"]} for t in done if t["state"] == State.PRUNED],
        "epochs_trained": sum(t["epochs"] for t in done),
        "epochs_unpruned": epochs * sum(t["state"] in (State.COMPLETE, State.PRUNED) for t in done),
        "importances": importances(study),
    }


def importances(study) -> dict[str, Any] | None:
    """Optuna's parameter importances of the first objective: fANOVA where scikit-learn is installed, else
    Optuna's default (PED-ANOVA); which one is named. None until two trials are complete."""
    import optuna.importance as oi

    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if len(complete) < 2:
        return None
    try:
        evaluator, name = oi.FanovaImportanceEvaluator(seed=0), "fANOVA (optuna.importance.FanovaImportanceEvaluator)"
    except ImportError:  # fANOVA's random forest is scikit-learn's
        evaluator, name = oi.PedAnovaImportanceEvaluator(), ("PED-ANOVA (Optuna's default evaluator; fANOVA needs "
                                                             "scikit-learn, which is not installed)")
    sign = -1.0 if study.directions[0].name == "MAXIMIZE" else 1.0  # PED-ANOVA explains low target values
    try:
        with warnings.catch_warnings():  # PED-ANOVA warns that a target is given: it is, on purpose
            warnings.simplefilter("ignore")
            values = oi.get_param_importances(study, evaluator=evaluator, target=lambda t: sign * t.values[0])
    except (ValueError, RuntimeError, ZeroDivisionError) as exc:  # e.g. every trial with the same value
        return {"evaluator": name, "values": {}, "note": str(exc)[:200]}
    return {"evaluator": name, "values": {k: float(v) for k, v in values.items() if math.isfinite(v)}, "note": None}


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _rows(s: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    metrics = [o["metric"] for o in s["objectives"]]
    params = sorted({k for t in s["trials"] for k in t["params"]})
    head = ["trial", "model", "state", "epochs", *metrics, "best so far", *params]
    rows = [[str(t["number"]), t["model"] or "-", t["state"], str(t["epochs"]),
             *([_fmt(v) for v in t["values"]] if t["values"] else ["-"] * len(metrics)),
             _fmt(t["best_so_far"]) if t["best_so_far"] is not None else "-",
             *[_fmt(t["params"].get(p, "-")) for p in params]] for t in s["trials"]]
    return head, rows


def _summary(s: dict[str, Any]) -> list[str]:
    goal = ", ".join(f"{o['direction']} {o['metric']}" for o in s["objectives"])
    lines = [f"Optuna sampler {s['sampler']} (seed {s['seed']}), pruner {s['pruner']}, objective: {goal}; "
             f"{len(s['trials'])} trials sampled. Epochs trained: {s['epochs_trained']} of "
             f"{s['epochs_unpruned']} unpruned."]
    if s["best"]:
        lines.append(f"Best configuration: {s['best']} (one seed; --confirm K trains the best K on every seed).")
    if s["pareto_front"]:
        lines.append(f"Pareto front: {', '.join(s['pareto_front'])}.")
    if s["pruned"]:
        lines.append("Pruned: " + ", ".join(f"{p['model']} after epoch {p['epoch']}" for p in s["pruned"]) + ". "
                     + s.get("fidelity_note", ""))
    imp = s["importances"]
    if imp and imp["values"]:
        lines.append("Parameter importances, " + imp["evaluator"] + ": "
                     + ", ".join(f"{k} {v:.2f}" for k, v in imp["values"].items()) + ".")
    return lines


def search_markdown(s: dict[str, Any]) -> str:
    """The search as a Markdown section: a summary and one row per trial."""
    head, rows = _rows(s)
    return "\n".join(["## Search", "", *map(md_text, _summary(s)), "", *md_table(head, rows)]) + "\n"


@memoized
def search_html(s: dict[str, Any]) -> str:
    """The search's HTML: a summary, the objective by trial number (SVG) and the trial table."""
    head, rows = _rows(s)
    fig = Figure(figsize=(6, 3))
    ax = fig.subplots()
    done = [t for t in s["trials"] if t["values"]]
    ax.scatter([t["number"] for t in done], [t["values"][0] for t in done], s=14, label="complete")
    ax.step([t["number"] for t in s["trials"] if t["best_so_far"] is not None],
            [t["best_so_far"] for t in s["trials"] if t["best_so_far"] is not None], where="post", label="best so far")
    ax.set_xlabel("trial number")
    ax.set_ylabel(s["objectives"][0]["metric"])
    ax.legend(fontsize=8)
    fig.tight_layout()
    summary = "".join(el("p", esc(line)) for line in _summary(s))
    metric = esc(s["objectives"][0]["metric"])
    return f"{summary}\n{figure(to_svg(fig), f'{metric} by trial number')}\n{table(head, rows, scroll=False)}"

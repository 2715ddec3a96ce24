"""Two studies side by side: the models they share, each side's accuracy, the difference and its significance
(Welch's t-test over seeds; with a single seed on a side and the same test set, McNemar's exact test)."""

from __future__ import annotations

from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from convstudy.report.collect import collect
from convstudy.report.stats import ALPHA, mcnemar_p, welch_p
from convstudy.report.markup import el, esc, md_table, md_text, section, sortable
from convstudy.report.models import acc_cell
from convstudy.store import State, StudyStore


def compare_studies(a: StudyStore, b: StudyStore) -> dict[str, Any]:
    """The comparison as a JSON-able dict: both studies' facts, then one row per model they share."""
    ra, rb = collect(a), collect(b)
    ma, mb = {m["name"]: m for m in ra["models"]}, {m["name"]: m for m in rb["models"]}
    same_test_set = _same_test_set(a, b, ra, rb)
    rows = [_row(ma[name], mb[name], a, b, same_test_set) for name in ma if name in mb]
    return {
        "a": _side(a, ra),
        "b": _side(b, rb),
        "same_spec": ra["study"]["fingerprint"] == rb["study"]["fingerprint"],
        "same_test_set": same_test_set,
        "alpha": ALPHA,
        "models": rows,
        "only_a": [n for n in ma if n not in mb],
        "only_b": [n for n in mb if n not in ma],
    }


def _side(store: StudyStore, report: dict[str, Any]) -> dict[str, Any]:
    s = report["study"]
    prov = s["provenance"] or {}
    return {"path": str(store.out), "name": s["name"], "description": s["description"], "dataset": s["dataset"],
            "fingerprint": s["fingerprint"], "epochs": s["epochs"], "seeds": s["seeds"], "trials": s["trials"],
            "total_train_seconds": s["total_train_seconds"], "device": prov.get("device"),
            "precision": prov.get("precision"), "git_commit": prov.get("git_commit"),
            "convstudy": prov.get("convstudy"), "torch": prov.get("torch")}


def _row(ma: dict[str, Any], mb: dict[str, Any], a: StudyStore, b: StudyStore, same_test_set: bool) -> dict[str, Any]:
    acc_a, acc_b = ma["test_accuracy"], mb["test_accuracy"]
    p, test, seeds = None, None, None
    if acc_a["n"] > 1 and acc_b["n"] > 1:
        p, test = welch_p(acc_a["values"], acc_b["values"]), "welch"
    elif acc_a["n"] and acc_b["n"] and same_test_set:
        seeds = _paired_seeds(ma, mb)
        pa, pb = a.load_predictions(ma["name"], seeds[0]), b.load_predictions(mb["name"], seeds[1])
        if pa is not None and pb is not None:
            p, test = mcnemar_p(_correct(pa), _correct(pb)), "mcnemar"
    diff = acc_b["mean"] - acc_a["mean"] if acc_a["n"] and acc_b["n"] else None
    spe_a, spe_b = ma["seconds_per_epoch"], mb["seconds_per_epoch"]
    return {"name": ma["name"], "params_a": ma["params"], "params_b": mb["params"],
            "test_accuracy_a": acc_a, "test_accuracy_b": acc_b, "difference": diff,
            "p_value": p, "test": test, "mcnemar_seeds": seeds,
            "significant": None if p is None else p < ALPHA,
            "seconds_per_epoch_a": spe_a, "seconds_per_epoch_b": spe_b,
            "speedup": spe_a / spe_b if spe_a and spe_b else None}


def _complete_seeds(m: dict[str, Any]) -> list[int]:
    return [t["seed"] for t in m["trials"] if t["state"] == State.COMPLETE]


def _paired_seeds(ma: dict[str, Any], mb: dict[str, Any]) -> tuple[int, int]:
    """The same seed on both sides when there is one (same initialisation), else each side's first."""
    sa, sb = _complete_seeds(ma), _complete_seeds(mb)
    common = [s for s in sa if s in sb]
    return (common[0], common[0]) if common else (sa[0], sb[0])


def _correct(preds: tuple[Any, Any]) -> np.ndarray:
    probs, labels = preds
    return (probs.argmax(1) == labels.long()).numpy()


def _same_test_set(a: StudyStore, b: StudyStore, ra: dict[str, Any], rb: dict[str, Any]) -> bool:
    """Same dataset, and the stored test labels of one finished trial per side agree image by image."""
    if ra["study"]["dataset"] != rb["study"]["dataset"]:
        return False
    labels = []
    for store, report in ((a, ra), (b, rb)):
        for m in report["models"]:
            seeds = _complete_seeds(m)
            preds = store.load_predictions(m["name"], seeds[0]) if seeds else None
            if preds is not None:
                labels.append(preds[1])
                break
    return len(labels) == 2 and labels[0].shape == labels[1].shape and bool((labels[0] == labels[1]).all())


# ---------------------------------------------------------------- text renderings

def _columns(cmp: dict[str, Any]) -> list[str]:
    return ["model", f"A: {cmp['a']['name']} acc %", f"B: {cmp['b']['name']} acc %", "B − A (pp)", "p",
            "test", "significant", "s/epoch A", "s/epoch B", "A/B time"]


def _cells(row: dict[str, Any]) -> list[str]:
    p = row["p_value"]
    sig = "–" if row["significant"] is None else ("yes" if row["significant"] else "no")
    return [row["name"], acc_cell(row["test_accuracy_a"]), acc_cell(row["test_accuracy_b"]),
            "–" if row["difference"] is None else f"{100 * row['difference']:+.2f}",
            "–" if p is None else f"{p:.3g}", row["test"] or "too few runs", sig,
            _num(row["seconds_per_epoch_a"], ".2f"), _num(row["seconds_per_epoch_b"], ".2f"),
            _num(row["speedup"], ".2f", "×")]


def _num(value: float | None, fmt: str, suffix: str = "") -> str:
    return "–" if value is None else f"{value:{fmt}}{suffix}"


def notes(cmp: dict[str, Any]) -> list[str]:
    """The sentences under the table: the two sides, what the test is, what could not be compared."""
    out = []
    for key in ("a", "b"):
        s = cmp[key]
        out.append(f"{key.upper()}: {s['path']} — {s['name']} on {s['dataset']}, {s['epochs']} epochs, "
                   f"{len(s['seeds'])} seed(s), {s['trials']} trials, device {s['device'] or '?'}, "
                   f"commit {s['git_commit'] or '?'}")
    out.append(f"significant: p < {cmp['alpha']} (Welch's t-test over seeds; McNemar's exact test on paired test "
               "predictions where a side has one seed and both share the test set).")
    if not cmp["same_spec"]:
        out.append("The two studies' specs differ (models, training settings or dataset).")
    if not cmp["same_test_set"]:
        out.append("The test sets differ (or a side has no predictions): no paired test.")
    if cmp["only_a"] or cmp["only_b"]:
        out.append(f"Not compared: only in A: {', '.join(cmp['only_a']) or '–'}; "
                   f"only in B: {', '.join(cmp['only_b']) or '–'}.")
    return out


def render_compare_terminal(cmp: dict[str, Any], console: Console) -> None:
    """A rich table of the shared models, then the notes."""
    table = Table(title=f"A: {cmp['a']['name']} vs B: {cmp['b']['name']}", title_justify="left")
    for col in _columns(cmp):
        table.add_column(col, overflow="fold", justify="left" if col in ("model", "test") else "right")
    for row in cmp["models"]:
        table.add_row(*_cells(row), style="bold" if row["significant"] else None)
    console.print(table)
    for note in notes(cmp):
        console.print(note, style="dim", markup=False, highlight=False)


def render_compare_markdown(cmp: dict[str, Any]) -> str:
    """A Markdown table (for a README or a pull request) with the notes as a list."""
    cols = _columns(cmp)
    out = [f"# {md_text(cmp['a']['name'])} vs {md_text(cmp['b']['name'])}", "",
           *md_table([md_text(c) for c in cols], map(_cells, cmp["models"]),
                     "".join("l" if c in ("model", "test") else "r" for c in cols))]
    out += [""] + [f"- {md_text(n)}" for n in notes(cmp)]
    return "\n".join(out) + "\n"


def render_compare_html(cmp: dict[str, Any]) -> str:
    """The comparison as one self-contained page, in the study report's style (user text escaped)."""
    from convstudy.report.html import page

    rows = []
    for row in cmp["models"]:
        keys = [row["name"], row["test_accuracy_a"]["mean"], row["test_accuracy_b"]["mean"], row["difference"],
                row["p_value"], row["test"], row["significant"], row["seconds_per_epoch_a"],
                row["seconds_per_epoch_b"], row["speedup"]]
        # data-v sorts a column: numbers numerically, True/False as 1/0
        cells = "".join(el("td", esc(text), data_v=int(key) if isinstance(key, bool) else key)
                        for text, key in zip(_cells(row), keys))
        rows.append(el("tr", cells, class_="best" if row["significant"] else None))
    body = (el("header", el("h1", f"{esc(cmp['a']['name'])} vs {esc(cmp['b']['name'])}"), id="header")
            + section("comparison", "Shared models", sortable(_columns(cmp), rows)
                      + "".join(el("p", esc(n), class_="small") for n in notes(cmp))))
    return page(f"{cmp['a']['name']} vs {cmp['b']['name']} · convstudy compare", body)


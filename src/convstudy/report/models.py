"""The models compared: one row per model with its statistics over seeds, as the terminal, Markdown and CSV show it,
and the page's sortable, filterable table (its rows' `data-i` index the page's JSON data, so no cell is parsed)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from rich.console import Console
from rich.table import Table

from convstudy.report.factors import level_text
from convstudy.report.markup import csv_text, el, esc, md_table, sortable
from convstudy.store import STATES, State

BEST_MARK = "★"
NUMERIC = ("params", "MFLOPs", "n", "s/epoch")  # right-aligned columns


def acc_cell(stat: dict[str, Any]) -> str:
    """`99.31 ± 0.04` (percent) over seeds, `99.31` for one seed, `–` when nothing finished."""
    if not stat["n"]:
        return "–"
    return f"{100 * stat['mean']:.2f}" + (f" ± {100 * stat['std']:.2f}" if stat["n"] > 1 else "")


def summary_rows(report: dict[str, Any]) -> list[dict[str, str]]:
    """The summary table: one row per model, its cells as every format shows them."""
    on_val = report["study"].get("selection_metric") == "val_accuracy"
    rows = []
    for m in report["models"]:
        status = ", ".join(f"{n} {s}" for s, n in sorted(m["states"].items()) if s != State.COMPLETE)
        retried = [f"seed {t['seed']}: {t['attempts']} attempts" for t in m.get("trials", []) if t.get("attempts", 1) > 1]
        status = ", ".join(filter(None, [status, *retried]))
        best = f" {BEST_MARK}" if m["same_as_best"] else ""
        rows.append({
            "kernel": m["kernel"],
            "model": m["name"],
            "architecture": m["description"],
            "params": f"{m['params']:,}",
            "MFLOPs": f"{m['mflops']:.1f}",
            **({"val accuracy %": acc_cell(m["val_accuracy"]) + best} if on_val else {}),
            "test accuracy %": acc_cell(m["test_accuracy"]) + ("" if on_val else best),
            "n": str(m["test_accuracy"]["n"]),
            "test loss": f"{m['test_loss']['mean']:.4f}" if m["test_loss"]["n"] else "–",
            "s/epoch": f"{m['seconds_per_epoch']:.1f}" if m["seconds_per_epoch"] else "–",
            "notes": status,
        })
    return rows


def best_note(report: dict[str, Any]) -> str:
    """What the best mark means, and which metric selected the best."""
    on_val = report["study"].get("selection_metric") == "val_accuracy"
    metric = "final validation accuracy (test accuracy is shown, never selects)" if on_val else "test accuracy"
    single = ("with one seed per model only the best is marked" if on_val else
              "or with one seed per model McNemar's test on paired test predictions, Holm-corrected")
    return (f"{BEST_MARK} = best group: not called worse than the best model on {metric}; Tukey-Kramer HSD over "
            f"seeds (family-wise α = 0.05), {single}.")


def footnotes(report: dict[str, Any]) -> list[str]:
    """The lines under the summary table: what the best mark means, the validation note, warnings."""
    notes = [best_note(report)]
    if report["study"]["validation_note"]:
        notes.append(report["study"]["validation_note"])
    notes += [mixed_note(report["study"], key) for key in report["study"].get("mixed", [])]
    notes += [f"Warning: {w}" for w in report["study"].get("warnings", [])]
    return notes


def mixed_note(study: dict[str, Any], key: str) -> str:
    """One line saying that trials trained with different `key` (precision, say), and which did."""
    uses = study["numerics"][key]
    parts = "; ".join(f"{value} ({len(who)}: {', '.join(who[:4])}{', …' if len(who) > 4 else ''})"
                      for value, who in sorted(uses.items()))
    return f"Mixed {key.replace('_', ' ')}: {parts}. Trials that differ in it are not strictly comparable."


def render_terminal(report: dict[str, Any], console: Console) -> None:
    """A rich table on the terminal (wide enough not to fold the architecture when piped)."""
    if not console.is_terminal and console.width < 200:
        console = Console(file=console.file, width=200, highlight=False, record=console.record)
    s = report["study"]
    table = Table(title=f"{s['name']} · {s['dataset']} · {s['trials']} trials", title_justify="left")
    rows = summary_rows(report)
    for col in (rows[0] if rows else {"model": ""}):
        table.add_column(col, overflow="fold", justify="right" if col in NUMERIC else "left")
    for r in rows:
        table.add_row(*r.values(), style="bold" if BEST_MARK in r["test accuracy %"] else None)
    console.print(table)
    for note in footnotes(report):
        console.print(note, style="dim")
    if report.get("fair"):  # the table holds the fixed recipe only: the tuned verdict in lines
        from convstudy.report.fair_view import verdict_lines

        for line in verdict_lines(report["fair"]):
            console.print(line, markup=False)


def models_markdown(report: dict[str, Any]) -> list[str]:
    """The summary table in Markdown and the lines under it."""
    rows = summary_rows(report)
    out = md_table(list(rows[0]), (r.values() for r in rows), "".join("r" if c in NUMERIC else "l" for c in rows[0])
                   ) if rows else []
    return out + [""] + [f"_{n}_" for n in footnotes(report)]


def render_csv(report: dict[str, Any]) -> str:
    """One row per trial (model, seed) with raw numbers, for spreadsheets."""
    rows = [["model", "kernel", "description", "params", "trainable_params", "mflops", "seed", "state",
             "val_accuracy", "test_accuracy", "test_loss", "train_seconds", "same_as_best"]]
    for m in report["models"]:
        for t in m["trials"]:
            rows.append([m["name"], m["kernel"], m["description"], m["params"], m["trainable_params"],
                         m["mflops"], t["seed"], t["state"], t["epochs"][-1]["val_accuracy"] if t["epochs"] else None,
                         t["test_accuracy"], t["test_loss"], round(t["train_seconds"], 3), m["same_as_best"]])
    return csv_text(rows)


COLUMNS = ("params", "MFLOPs", "test acc % (mean ± std)", "95% CI", "best", "n", "test loss", "s/epoch",
           "samples/s", "diverged", "failed", "retries")


def factor_names(models: list[dict[str, Any]]) -> list[str]:
    """Every factor any model has, in the order they first appear (hand-written models have none)."""
    return list(dict.fromkeys(name for m in models for name in m.get("factors") or {}))


def model_states(model: dict[str, Any]) -> Counter:
    """How many of the model's trials are in each state."""
    return Counter(t["state"] for t in model.get("trials", []))


def render_table(models: list[dict[str, Any]], on_val: bool = False) -> str:
    """The sortable comparison table: one row per model, a column per factor, the best group marked."""
    if not models:
        return "<p>No trial has started yet.</p>"
    factors = factor_names(models)
    notebook = any(m.get("notebook_accuracy") is not None for m in models)
    cols = ("model", "description", *factors, "state", *COLUMNS[:2], *(("val acc % (mean ± std)",) if on_val else ()),
            *COLUMNS[2:], *(("notebook acc %",) if notebook else ()))
    return sortable(cols, (_row(i, m, factors, notebook, on_val) for i, m in enumerate(models)))


def render_filters(models: list[dict[str, Any]]) -> str:
    """The filter form (text, state, one select per factor); hidden until the script makes it work."""
    if not models:
        return ""
    states = sorted({s for m in models for s in model_states(m)}, key=STATES.index)
    controls = [_control("f-text", "text", '<input type="search" id="f-text" placeholder="name, description, level">'),
                _control("f-state", "state", _select("f-state", states))]
    for j, name in enumerate(factor_names(models)):
        levels = dict.fromkeys(level_text(m["factors"][name]) for m in models if name in (m.get("factors") or {}))
        controls.append(_control(f"f-factor-{j}", name, _select(f"f-factor-{j}", list(levels), factor=j)))
    return (f'<form id="filters" class="filters" hidden role="search" aria-label="filter the models">'
            f"{''.join(controls)}<button type=\"reset\" id=\"f-reset\">show all</button>"
            f'<output id="f-count" aria-live="polite"></output></form>')


def _control(ident: str, label: str, field: str) -> str:
    return el("label", esc(label), for_=ident) + field


def _select(ident: str, options: list[str], factor: int | None = None) -> str:
    opts = "".join(el("option", esc(o), value=o) for o in options)
    return el("select", '<option value="">any</option>' + opts, id=ident, data_factor=factor)


def _row(i: int, m: dict[str, Any], factors: list[str], notebook: bool, on_val: bool) -> str:
    acc, loss = m["test_accuracy"], m["test_loss"]
    ci = acc["ci95"]
    trials = m.get("trials", [])
    retries = sum(max(0, t.get("attempts", 1) - 1) for t in trials)  # attempts past the first, e.g. a lost worker
    states = model_states(m)
    levels = m.get("factors") or {}
    cells = [
        _td(m["name"], m["name"], cls="name"),
        _td(m["description"], m["description"], cls="text"),
        *(_td(level_text(levels[f]), levels[f]) if f in levels else _td("–", None) for f in factors),
        _td(", ".join(f"{n} {s}" for s, n in sorted(states.items(), key=lambda kv: STATES.index(kv[0]))),
            states.get(State.COMPLETE, 0)),
        _td(f"{m['params']:,}", m["params"]),
        _td(f"{m['mflops']:.2f}", m["mflops"]),
        *([_td(acc_cell(m["val_accuracy"]), m["val_accuracy"]["mean"])] if on_val else []),
        _td(acc_cell(acc), acc["mean"]),
        _td(f"{max(0.0, 100 * ci[0]):.2f} – {min(100.0, 100 * ci[1]):.2f}" if ci else "–", ci[0] if ci else None),
        _td(BEST_MARK if m["same_as_best"] else "", int(m["same_as_best"]),
            title=f"p = {m['p_value']:.3g} ({m['test']})" if m.get("p_value") is not None else None),
        _td(str(acc["n"]), acc["n"]),
        _td(f"{loss['mean']:.4f}" if loss["n"] else "–", loss["mean"]),
        _td(f"{m['seconds_per_epoch']:.2f}" if m["seconds_per_epoch"] else "–", m["seconds_per_epoch"]),
        _td(f"{m['samples_per_s']:,.0f}" if m["samples_per_s"] else "–", m["samples_per_s"]),
        _td(str(m["diverged"]), m["diverged"], cls="bad" if m["diverged"] else None),
        _td(str(m["failed"]), m["failed"], cls="bad" if m["failed"] else None),
        _td(str(retries), retries, title=", ".join(f"seed {t['seed']}: {t['attempts']} attempts" for t in trials
                                                  if t["attempts"] > 1) or None),
    ]
    if notebook:
        nb = m.get("notebook_accuracy")
        cells.append(_td(f"{100 * nb:.2f}" if nb is not None else "–", nb))
    return el("tr", "".join(cells), data_i=i, class_="best" if m["same_as_best"] else None)


def _td(text: str, key: Any, cls: str | None = None, title: str | None = None) -> str:
    """A cell whose `data-v` sorts it (numbers numerically)."""
    return el("td", esc(text), data_v=key, class_=cls, title=title)


def footnote(report: dict[str, Any]) -> str:
    """What the best mark and the CI mean, and how to use the table."""
    return (f'<p class="small">{esc(best_note(report))} Hover the mark for the adjusted p. 95% CI: Student t '
            "over seeds (test accuracy). Click a column heading to sort; tick a model's box to draw its curves "
            "below.</p>")

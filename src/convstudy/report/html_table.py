"""The report's model table (plain HTML, readable without JavaScript) and the filter form the script enables.

Every row carries `data-i`, its model's index in the page's JSON data, so the script filters, sorts and
selects rows without parsing cells. Every piece of user text goes through `html.escape`.
"""

from __future__ import annotations

from collections import Counter
from html import escape
from typing import Any

from convstudy.report.factors import level_text
from convstudy.report.tables import BEST_MARK, best_note
from convstudy.store import STATES

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
    head = "".join(f'<th scope="col" tabindex="0">{escape(c)}</th>' for c in cols)
    rows = [_row(i, m, factors, notebook, on_val) for i, m in enumerate(models)]
    return (f'<div class="scroll"><table class="sortable" id="comparison-table"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>")


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
    return f'<label for="{ident}">{escape(label)}</label>{field}'


def _select(ident: str, options: list[str], factor: int | None = None) -> str:
    data = "" if factor is None else f' data-factor="{factor}"'
    opts = "".join(f'<option value="{escape(o)}">{escape(o)}</option>' for o in options)
    return f'<select id="{ident}"{data}><option value="">any</option>{opts}</select>'


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
            states.get("complete", 0)),
        _td(f"{m['params']:,}", m["params"]),
        _td(f"{m['mflops']:.2f}", m["mflops"]),
        *([_td(_pct(m["val_accuracy"]), m["val_accuracy"]["mean"])] if on_val else []),
        _td(_pct(acc), acc["mean"]),
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
    best = ' class="best"' if m["same_as_best"] else ""
    return f'<tr data-i="{i}"{best}>{"".join(cells)}</tr>'


def _td(text: str, key: Any, cls: str | None = None, title: str | None = None) -> str:
    attrs = "" if key is None else f' data-v="{escape(str(key))}"'
    attrs += f' class="{cls}"' if cls else ""
    attrs += f' title="{escape(title)}"' if title else ""
    return f"<td{attrs}>{escape(text)}</td>"


def _pct(stat: dict[str, Any]) -> str:
    if not stat["n"]:
        return "–"
    return f"{100 * stat['mean']:.2f}" + (f" ± {100 * stat['std']:.2f}" if stat["n"] > 1 else "")


def footnote(report: dict[str, Any]) -> str:
    """What the best mark and the CI mean, and how to use the table."""
    return (f'<p class="small">{escape(best_note(report))} Hover the mark for the adjusted p. 95% CI: Student t '
            "over seeds (test accuracy). Click a column heading to sort; tick a model's box to draw its curves "
            "below.</p>")

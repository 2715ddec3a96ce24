"""The comparison table in the notebook's columns (kernel, architecture, test accuracy) plus cost columns."""

from __future__ import annotations

import csv
import io
import re
from typing import Any
from urllib.parse import quote

from rich.console import Console
from rich.table import Table

BEST_MARK = "★"


def acc_cell(stat: dict[str, Any]) -> str:
    """`99.31 ± 0.04` (percent) over seeds, `99.31` for one seed, `–` when nothing finished."""
    if not stat["n"]:
        return "–"
    if stat["n"] == 1:
        return f"{100 * stat['mean']:.2f}"
    return f"{100 * stat['mean']:.2f} ± {100 * stat['std']:.2f}"


def _rows(report: dict[str, Any]) -> list[dict[str, str]]:
    rows = []
    for m in report["models"]:
        status = ", ".join(f"{n} {s}" for s, n in sorted(m["states"].items()) if s != "complete")
        retried = [f"seed {t['seed']}: {t['attempts']} attempts" for t in m.get("trials", []) if t.get("attempts", 1) > 1]
        status = ", ".join(filter(None, [status, *retried]))
        rows.append({
            "kernel": m["kernel"],
            "model": m["name"],
            "architecture": m["description"],
            "params": f"{m['params']:,}",
            "MFLOPs": f"{m['mflops']:.1f}",
            "test accuracy %": acc_cell(m["test_accuracy"]) + (f" {BEST_MARK}" if m["same_as_best"] else ""),
            "n": str(m["test_accuracy"]["n"]),
            "test loss": f"{m['test_loss']['mean']:.4f}" if m["test_loss"]["n"] else "–",
            "s/epoch": f"{m['seconds_per_epoch']:.1f}" if m["seconds_per_epoch"] else "–",
            "notes": status,
        })
    return rows


def _footnotes(report: dict[str, Any]) -> list[str]:
    notes = [f"{BEST_MARK} = statistically indistinguishable from the best model (Welch's t-test over seeds, or "
             "McNemar's test on paired test predictions with one seed; α = 0.05)."]
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
    rows = _rows(report)
    for col in (rows[0] if rows else {"model": ""}):
        table.add_column(col, overflow="fold", justify="right" if col in ("params", "MFLOPs", "n", "s/epoch") else "left")
    for r in rows:
        table.add_row(*r.values(), style="bold" if BEST_MARK in r["test accuracy %"] else None)
    console.print(table)
    for note in _footnotes(report):
        console.print(note, style="dim")


def render_markdown(report: dict[str, Any], plots_dir: str | None = "plots") -> str:
    """A Markdown table (pasteable into a README or a pull request) with the loss plots below it."""
    s = report["study"]
    rows = _rows(report)
    out = [f"# {md_text(s['name'])}", "", md_text(s["description"] or ""), "",
           f"Dataset **{md_text(s['dataset'])}**, {s['epochs']} epochs, batch {s['batch_size']}, validation: "
           f"{s['validation']}, {s['trials']} trials.", ""]
    if rows:
        cols = list(rows[0])
        out.append("| " + " | ".join(cols) + " |")
        out.append("|" + "|".join("---:" if c in ("params", "MFLOPs", "n", "s/epoch") else "---" for c in cols) + "|")
        for r in rows:
            out.append("| " + " | ".join(md_text(v) for v in r.values()) + " |")
    out += [""] + [f"_{n}_" for n in _footnotes(report)]
    if report.get("search"):
        from convstudy.report.search import search_markdown

        out += ["", search_markdown(report["search"])]
    if plots_dir:
        out += [""] + [f"![{md_text(m['name'])} loss]({plots_dir}/{quote(m['name'], safe='')}.png)"
                       for m in report["models"]]
    return "\n".join(out) + "\n"


def render_csv(report: dict[str, Any]) -> str:
    """One row per trial (model, seed) with raw numbers, for spreadsheets."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["model", "kernel", "description", "params", "trainable_params", "mflops", "seed", "state",
                     "test_accuracy", "test_loss", "train_seconds", "same_as_best"])
    for m in report["models"]:
        for t in m["trials"]:
            writer.writerow([m["name"], m["kernel"], m["description"], m["params"], m["trainable_params"],
                             m["mflops"], t["seed"], t["state"], t["test_accuracy"], t["test_loss"],
                             round(t["train_seconds"], 3), m["same_as_best"]])
    return buf.getvalue()


# Backslash-escaped wherever they appear: each can open inline markup (emphasis, code, links, strikethrough,
# GitHub math), end a table cell (|) or close a heading (#); ( ) and ! mean nothing once [ ] are escaped.
_MD_INLINE = re.compile(r"([\\`*_\[\]#|~$])")
# At the start of a line they would open a list, a setext underline or a thematic break.
_MD_LINE_START = re.compile(r"^([-+=])|^(\d{1,9})([.)])(?=\s|$)")


def md_text(text: Any) -> str:
    """User text as literal Markdown on one line: metacharacters backslash-escaped, & < > as entities.

    Whitespace runs (newlines included) become one space, so the text can neither start a block (heading,
    list, quote, fence) nor leave a table row. Bare URLs stay text that GitHub-like renderers may still
    autolink, but they show their real target: no link text or image can be made from user text.
    """
    one_line = " ".join(str(text).split())
    escaped = one_line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    escaped = _MD_INLINE.sub(r"\\\1", escaped)
    return _MD_LINE_START.sub(lambda m: f"\\{m[1]}" if m[1] else f"{m[2]}\\{m[3]}", escaped)

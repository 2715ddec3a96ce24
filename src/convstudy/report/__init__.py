"""Report stage: a study directory's report as JSON, a terminal table, Markdown, CSV or one HTML page, and plots.
`collect` gathers the numbers once; each section module draws itself through markup.py; markdown.py and html.py
put the sections in order."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from rich.console import Console

from convstudy.errors import UserError
from convstudy.report.collect import VALIDATION_NOTE, collect
from convstudy.report.curves import loss_figure
from convstudy.report.design_view import design_figures, design_part
from convstudy.report.factors import factor_figures, factor_part
from convstudy.report.figures import memoized, to_png
from convstudy.report.markdown import render_markdown
from convstudy.report.markup import csv_text, md_text
from convstudy.report.models import footnotes, mixed_note, render_csv, render_terminal, summary_rows
from convstudy.store import StudyStore, atomic_write

FORMATS = ("table", "markdown", "csv", "json", "html")

__all__ = ["FORMATS", "VALIDATION_NOTE", "collect", "csv_text", "footnotes", "md_text", "mixed_note", "render",
           "summary_rows", "write_plots", "write_reports"]


def render(report: dict[str, Any], fmt: str, console: Console | None = None) -> str:
    """The report as text in `fmt`; `table` renders through rich (to `console` or a string)."""
    if fmt == "json":
        return json.dumps(report, indent=2, allow_nan=False) + "\n"
    if fmt == "markdown":
        return render_markdown(report)
    if fmt == "csv":
        return render_csv(report)
    if fmt == "html":
        from convstudy.report.html import render_html

        return render_html(report)
    if fmt == "table":
        out = console or Console(file=io.StringIO(), width=200, highlight=False)
        render_terminal(report, out)
        return "" if console else out.file.getvalue()
    raise UserError(f"--format {fmt}: unknown format; valid: {', '.join(FORMATS)}")


def write_plots(report: dict[str, Any], out: Path) -> list[Path]:
    """One loss PNG per model in OUT/plots/, _factors.png / _interactions.png for a study with factors, and
    _design_edf.png / _design_enough.png where design spaces are compared."""
    label = "test (= validation)" if report["study"]["validation"] == "test" else "validation"
    paths = [loss_figure(m, out / "plots" / f"{m['name']}.png", label) for m in report["models"]]
    for name, png in section_pngs(report).items():
        # A model's name cannot start with "_", so these never overwrite a model's plot.
        path = out / "plots" / f"_{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png)
        paths.append(path)
    return [p for p in paths if p is not None]


@memoized(key=lambda report: [factor_part(report), design_part(report)])
def section_pngs(report: dict[str, Any]) -> dict[str, bytes]:
    """The factor and design-space figures as PNG bytes, by name."""
    return {name: to_png(fig) for name, fig in {**factor_figures(report), **design_figures(report)}.items()}


def write_reports(store: StudyStore) -> dict[str, Any]:
    """Refresh what a study directory shows: report.json, report.md, report.html and the plots."""
    report = collect(store)
    write_plots(report, store.out)
    # Atomic, so a reader (or a browser reloading during a run) never sees half a file.
    for name, text in (("report.json", render(report, "json")), ("report.md", render_markdown(report)),
                       ("report.html", render(report, "html"))):
        atomic_write(store.out / name, text.encode(), 0o644)
    return report

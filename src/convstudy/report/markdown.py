"""The study's report in Markdown (report.md): the header, then each section that has data, then the loss plots."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from convstudy.report.audit_view import audit_markdown
from convstudy.report.best import best_markdown
from convstudy.report.design_view import design_markdown
from convstudy.report.factors import factors_markdown
from convstudy.report.fair_view import fair_markdown
from convstudy.report.fidelity_view import fidelity_markdown
from convstudy.report.markup import md_text
from convstudy.report.models import models_markdown
from convstudy.report.racing import racing_markdown
from convstudy.report.search import search_markdown


def render_markdown(report: dict[str, Any], plots_dir: str | None = "plots") -> str:
    """A Markdown table (pasteable into a README or a pull request), the sections, and the loss plots below."""
    s = report["study"]
    out = [f"# {md_text(s['name'])}", "", md_text(s["description"] or ""), "",
           f"Dataset **{md_text(s['dataset'])}**, {s['epochs']} epochs, batch {s['batch_size']}, validation: "
           f"{s['validation']}, {s['trials']} trials.", ""]
    out += models_markdown(report)
    out += best_markdown(report.get("best_model"))
    out += factors_markdown(report, plots_dir)
    out += design_markdown(report, plots_dir)
    out += racing_markdown(report)
    out += fidelity_markdown(report)
    out += audit_markdown(report)
    out += ["", search_markdown(report["search"])] if report.get("search") else []
    out += ["", fair_markdown(report["fair"])] if report.get("fair") else []
    if plots_dir:
        out += [""] + [f"![{md_text(m['name'])} loss]({plots_dir}/{quote(m['name'], safe='')}.png)"
                       for m in report["models"]]
    return "\n".join(out) + "\n"

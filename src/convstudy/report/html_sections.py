"""Report sections that show only when their data is in the report: the factor effects, racing and rank stability.

Each is `f(report) -> HTML or None`; `render_html` adds the sections whose function returns HTML, in
`OPTIONAL_SECTIONS` order. The statistics come from elsewhere (collect); these only draw them, escaped.
"""

from __future__ import annotations

from html import escape
from typing import Any, Callable

from convstudy.report.fidelity import audit_html, racing_evidence


def factor_effects(report: dict[str, Any]) -> str | None:
    """The Factors section: main-effect and interaction tables (pp, 95% CI, p) and their figures; None without factors."""
    if not report.get("factors"):
        return None
    from convstudy.report.figures import factor_figures, to_svg
    from convstudy.report.tables import factor_rows

    mains, pairs = factor_rows(report)
    fit = report["factor_fit"]
    parts = [f"<p>Effect of each level against its factor's reference, in percentage points of the selection "
             f"metric: one linear model (OLS, treatment coding) over {fit['n']} finished seeds.</p>"]
    if fit["note"]:
        parts.append(f'<p class="note warn">{escape(fit["note"])}</p>')
    for head, rows in (("factor", mains), ("interaction", pairs)):
        if rows:
            cells = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>" for r in rows)
            parts.append(f'<div class="scroll"><table><thead><tr><th>{head}</th><th>level</th><th>effect (pp)</th>'
                         f"<th>95% CI</th><th>p</th></tr></thead><tbody>{cells}</tbody></table></div>")
    for name, fig in factor_figures(report).items():
        caption = ("Main effects with 95% CIs (reference level at 0)." if name == "factors" else
                   "Cell means of each fitted two-way interaction.")
        parts.append(f"<figure>{to_svg(fig)}<figcaption>{caption}</figcaption></figure>")
    return "\n".join(parts)


def design_spaces(report: dict[str, Any]) -> str | None:
    """The Design spaces section: populations, comparisons, good ranges and their figures; None without one."""
    if not report.get("design_spaces"):
        return None
    from convstudy.report.design_figures import design_figures
    from convstudy.report.figures import to_svg
    from convstudy.report.tables import DESIGN_HEADS, design_intro, design_rows

    parts = [f"<p>{escape(design_intro(report))}</p>"]
    for head, rows in zip(DESIGN_HEADS, design_rows(report)):
        if rows:
            cells = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>" for r in rows)
            parts.append('<div class="scroll"><table><thead><tr>' + "".join(f"<th>{escape(h)}</th>" for h in head)
                         + f"</tr></thead><tbody>{cells}</tbody></table></div>")
    captions = {"design_edf": "Error EDFs of each comparison: solid with its 95% DKW band, dashed normalised for "
                              "complexity.",
                "design_enough": "How many models are enough: the expected best error of m models drawn from "
                                 "each space (95% bootstrap band), and the KS test's power by models per space."}
    for name, fig in design_figures(report).items():
        parts.append(f"<figure>{to_svg(fig)}<figcaption>{captions[name]}</figcaption></figure>")
    return "\n".join(parts)


def racing(report: dict[str, Any]) -> str | None:
    """How many seeds each raced model got and why it stopped; None for a study that did not race."""
    from convstudy.report.tables import RACING_NOTE, racing_rows

    rows = racing_rows(report)
    if not rows:
        return None
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    note = RACING_NOTE.format(alpha=report["study"].get("best_group_alpha", 0.05)) + " " + racing_evidence(report)
    return (f"<p>{escape(note)}</p>"
            '<div class="scroll"><table><thead><tr><th>model</th><th>seeds</th><th>stopped</th></tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def rank_stability(report: dict[str, Any]) -> str | None:
    """Each epoch's ranking against the final one (tau, CI) and the warnings; None without a multi-epoch ranking."""
    from convstudy.report.tables import fidelity_rows

    lead, rows = fidelity_rows(report)
    if not rows:
        return None
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    warn = "".join(f'<p class="note warn">{escape(w)}</p>' for w in report["fidelity"]["warnings"])
    return (f"<p>{escape(lead)}</p>{warn}"
            '<div class="scroll"><table><thead><tr><th>check</th><th>epoch</th><th>tau</th><th>95% CI</th>'
            f"<th>models</th><th>seeds</th></tr></thead><tbody>{body}</tbody></table></div>")


def fair(report: dict[str, Any]) -> str | None:
    """The fair comparison (report.fair_view); None for a study without a [fair] section."""
    from convstudy.report.fair_view import fair_html

    return fair_html(report)


OPTIONAL_SECTIONS: list[tuple[str, str, Callable[[dict[str, Any]], str | None]]] = [
    ("factors", "Factors", factor_effects),
    ("design-spaces", "Design spaces", design_spaces),
    ("racing", "Racing", racing),
    ("rank-stability", "Rank stability", rank_stability),
    ("fair", "Fair comparison", fair),
    ("audit", "Fidelity audit", audit_html),
]

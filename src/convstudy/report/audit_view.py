"""The Fidelity audit section of an audit study (`convstudy audit`), drawn from report.fidelity.audit_statistics's
numbers kept in study.db: the verdict, tau and rho with their CIs, the top-k overlap, the regret, both ranks per model."""

from __future__ import annotations

from typing import Any, Mapping

from convstudy.report.markup import el, esc, md_table, md_text, table


def audit_lines(audit: Mapping[str, Any]) -> tuple[str, str, list[str], list[list[str]]]:
    """The verdict, the statistics line, the table's head and its rows: for Markdown, HTML and the terminal."""
    def est(e: Mapping[str, Any], scale: float = 1, unit: str = "") -> str:
        if e["estimate"] is None:
            return "undefined (a ranking ties every model)"
        ci = f" [{scale * e['ci95'][0]:.2f}, {scale * e['ci95'][1]:.2f}]" if e["ci95"] else ""
        return f"{scale * e['estimate']:.2f}{unit}{ci}"

    top = audit["top_k"]
    line = (f"Kendall's tau {est(audit['kendall_tau'])}, Spearman's rho {est(audit['spearman_rho'])} (95% bootstrap "
            f"CIs over models and seeds, {audit['bootstrap']} resamples); top {top['k']}: {top['overlap']} in common "
            f"({', '.join(top['cheap'])} cheap; {', '.join(top['full'])} full); regret of choosing cheaply "
            f"{est(audit['regret'], 100, ' pp')} (CI over seeds). The cheap ranking is the cheap study's mean "
            f"{audit.get('metric', 'val_accuracy')} over its seeds.")
    head = ["model", "stratum", "cheap rank", "cheap %", "full rank", "full %", "seeds (cheap/full)"]
    rows = [[r["name"], r.get("stratum", ""), str(r["cheap_rank"]), f"{100 * r['cheap']:.2f}", str(r["full_rank"]),
             f"{100 * r['full']:.2f}", f"{r['cheap_seeds']}/{r['full_seeds']}"] for r in audit["models"]]
    return audit["verdict"], line, head, rows


def audit_markdown(report: Mapping[str, Any]) -> list[str]:
    """The Fidelity audit section in Markdown; nothing for a study that is not an audit."""
    if not report.get("audit"):
        return []
    verdict, line, head, rows = audit_lines(report["audit"])
    return ["", "## Fidelity audit", "", f"**{md_text(verdict)}**", "", md_text(line), "",
            *md_table(head, rows, "llrrrrr")]


def audit_html(report: Mapping[str, Any]) -> str | None:
    """The Fidelity audit section in HTML; None for a study that is not an audit."""
    if not report.get("audit"):
        return None
    verdict, line, head, rows = audit_lines(report["audit"])
    return el("p", el("strong", esc(verdict))) + el("p", esc(line)) + table(head, rows)

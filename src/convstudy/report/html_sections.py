"""Report sections that show only when their data is in the report: the factor effects and the search history.

Each is `f(report) -> HTML or None`; `render_html` adds the sections whose function returns HTML, in
`OPTIONAL_SECTIONS` order. The statistics come from elsewhere (collect); these only draw them, escaped.
"""

from __future__ import annotations

from html import escape
from typing import Any, Callable


def factor_effects(report: dict[str, Any]) -> str | None:
    """`report["factors"]` ([{name, levels, effects: [{level, estimate, ci95, p_value}]}]) as one table per factor."""
    factors = report.get("factors")
    if not factors:
        return None
    out = []
    for f in factors:
        rows = "".join(
            f"<tr><td class=\"name\">{escape(str(e['level']))}</td><td>{_num(e.get('estimate'))}</td>"
            f"<td>{_ci(e.get('ci95'))}</td><td>{_num(e.get('p_value'), '.3g')}</td></tr>"
            for e in f.get("effects", []))
        out.append(f'<div class="scroll"><table class="sortable"><caption>{escape(str(f["name"]))}</caption>'
                   '<thead><tr><th scope="col" tabindex="0">level</th><th scope="col" tabindex="0">estimate</th>'
                   '<th scope="col" tabindex="0">95% CI</th><th scope="col" tabindex="0">p</th></tr></thead>'
                   f"<tbody>{rows}</tbody></table></div>")
    return "".join(out)


def search_history(report: dict[str, Any]) -> str | None:
    """`report["search"]`, once the search issue writes it: until then there is nothing to show."""
    search = report.get("search")
    if not search:
        return None
    trials = search.get("trials", []) if isinstance(search, dict) else search
    cols = list(dict.fromkeys(k for t in trials for k in t))
    head = "".join(f'<th scope="col" tabindex="0">{escape(str(c))}</th>' for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(t.get(c, '–')))}</td>" for c in cols) + "</tr>" for t in trials)
    return f'<div class="scroll"><table class="sortable"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _num(x: Any, spec: str = ".4g") -> str:
    return "–" if x is None else escape(format(x, spec))


def _ci(ci: Any) -> str:
    return "–" if not ci else f"{_num(ci[0])} – {_num(ci[1])}"


OPTIONAL_SECTIONS: list[tuple[str, str, Callable[[dict[str, Any]], str | None]]] = [
    ("factor-effects", "Factor effects", factor_effects),
    ("search", "Search history", search_history),
]

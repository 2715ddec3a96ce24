"""User text made literal in every format: Markdown (`md_text`, `md_table`), HTML (`esc`, `el`, `table`, `section`,
`figure`) and CSV (`csv_text`). Every section writes through these, so escaping lives in this one module."""

from __future__ import annotations

import csv
import io
import re
from html import escape
from typing import Any, Iterable, Sequence

# Backslash-escaped wherever they appear: each can open inline markup (emphasis, code, links, strikethrough,
# GitHub math), end a table cell (|) or close a heading (#); ( ) and ! mean nothing once [ ] are escaped.
_MD_INLINE = re.compile(r"([\\`*_\[\]#|~$])")
# At the start of a line they would open a list, a setext underline or a thematic break.
_MD_LINE_START = re.compile(r"^([-+=])|^(\d{1,9})([.)])(?=\s|$)")


def md_text(text: Any) -> str:
    """User text as literal Markdown on one line (so it can neither start a block nor leave a table row):
    metacharacters backslash-escaped, & < > as entities; no link text or image can be made from it."""
    one_line = " ".join(str(text).split())
    escaped = one_line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    escaped = _MD_INLINE.sub(r"\\\1", escaped)
    return _MD_LINE_START.sub(lambda m: f"\\{m[1]}" if m[1] else f"{m[2]}\\{m[3]}", escaped)


def md_table(head: Sequence[str], rows: Iterable[Sequence[Any]], align: str = "") -> list[str]:
    """A Markdown table's lines: `head` is Markdown already, every cell goes through md_text; `align` has one
    letter per column, r for right (numbers), anything else (or nothing) left."""
    sep = "|".join("---:" if a == "r" else "---" for a in align.ljust(len(head), "l"))
    return ["| " + " | ".join(head) + " |", f"|{sep}|", *("| " + " | ".join(md_text(c) for c in r) + " |" for r in rows)]


def esc(text: Any) -> str:
    """Text as HTML: & < > " ' as entities."""
    return escape(str(text))


def el(tag: str, inner: str = "", **attrs: Any) -> str:
    """`<tag attrs>inner</tag>`: `inner` is HTML already (made with esc and el); attribute values are escaped, None
    leaves one out, and a name is spelled with - for _ and without a trailing _ (class_, data_v)."""
    spelled = "".join(f' {k.rstrip("_").replace("_", "-")}="{esc(v)}"' for k, v in attrs.items() if v is not None)
    return f"<{tag}{spelled}>{inner}</{tag}>"


def table(head: Sequence[str], rows: Iterable[Sequence[Any]], scroll: bool = True) -> str:
    """A table of text: every heading and cell escaped; in a box that scrolls sideways unless `scroll` is False."""
    body = "".join(el("tr", "".join(el("td", esc(c)) for c in r)) for r in rows)
    out = el("table", el("thead", el("tr", "".join(el("th", esc(h)) for h in head))) + el("tbody", body))
    return el("div", out, class_="scroll") if scroll else out


def sortable(head: Sequence[str], rows: Iterable[str]) -> str:
    """The page's sortable table (its script sorts by each cell's `data-v`): headings escaped, `rows` HTML already."""
    head_row = el("tr", "".join(el("th", esc(c), scope="col", tabindex="0") for c in head))
    return el("div", el("table", el("thead", head_row) + el("tbody", "".join(rows)), class_="sortable",
                        id="comparison-table"), class_="scroll")


def section(ident: str, title: str, inner: str) -> str:
    """One `<section>` of the page, its title escaped, `inner` HTML already."""
    return f'<section id="{esc(ident)}"><h2>{esc(title)}</h2>\n{inner}\n</section>'


def figure(svg: str | None, caption: str, missing: str = "No finished epoch yet.") -> str:
    """An inline SVG with its caption (HTML already), or the `missing` note where there is no figure."""
    return el("p", esc(missing)) if svg is None else f"<figure>{svg}<figcaption>{caption}</figcaption></figure>"


# A spreadsheet runs a cell starting with one of these as a formula (CSV injection); OWASP's advice is a
# leading ' so it shows as text. A lone "-" (convstudy's "none", e.g. no conv kernel) is no formula.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_text(rows: list[list[Any]], lineterminator: str = "\r\n") -> str:
    """`rows` as CSV with every text cell a spreadsheet would run as a formula neutralised; numbers stay numbers.
    Every CSV convstudy writes goes through here, since names, descriptions, classes and paths are user text."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator=lineterminator)
    writer.writerows([f"'{c}" if isinstance(c, str) and c.startswith(_FORMULA_START) and c != "-" else c
                      for c in row] for row in rows)
    return buf.getvalue()

"""User text as literal Markdown: the one escaping function every Markdown section uses."""

from __future__ import annotations

import re
from typing import Any

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

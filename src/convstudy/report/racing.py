"""The Racing section: how many seeds each raced model got and why it stopped (from study.db's `racing` meta)."""

from __future__ import annotations

from typing import Any

from convstudy.report.fidelity import racing_evidence
from convstudy.report.markup import el, esc, md_table, table

RACING_NOTE = ("Seeds went only to models whose place was undecided: a model stopped once called worse than the best "
               "(Tukey-Kramer at {alpha:.3g} per round, so 0.05 over the whole race) or shown within the race margin "
               "of it; the best group is drawn at the same level. This rests on the seed noise measured in the "
               "first round and on the final epoch's ranking (see Rank stability for how early epochs agree).")
_HEAD = ["model", "seeds", "stopped"]


def racing_rows(report: dict[str, Any]) -> list[list[str]]:
    """Per raced model: its name, the seeds it got and why it stopped (none for a study that did not race)."""
    return [[m["name"], str(m["racing"]["seeds"]), m["racing"]["stopped"]] for m in report["models"] if m.get("racing")]


def _note(report: dict[str, Any]) -> str:
    return RACING_NOTE.format(alpha=report["study"].get("best_group_alpha", 0.05)) + " " + racing_evidence(report)


def racing_markdown(report: dict[str, Any]) -> list[str]:
    """The Racing section in Markdown; nothing for a study that did not race."""
    rows = racing_rows(report)
    return ["", "## Racing", "", _note(report), "", *md_table(_HEAD, rows, "lrl")] if rows else []


def racing_html(report: dict[str, Any]) -> str | None:
    """The Racing section in HTML; None for a study that did not race."""
    rows = racing_rows(report)
    return el("p", esc(_note(report))) + table(_HEAD, rows) if rows else None

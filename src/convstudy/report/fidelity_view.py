"""The Rank stability section, drawn from report.fidelity's numbers: does an early epoch (or a pruning epoch) rank
the models like the last one, with the warnings where it does not."""

from __future__ import annotations

from typing import Any

from convstudy.report.markup import el, esc, md_table, md_text, table

_HEAD = ["check", "epoch", "tau", "95% CI", "models", "seeds"]


def fidelity_rows(report: dict[str, Any]) -> tuple[str, list[list[str]]]:
    """The section's lead sentence and rows (check, epoch, tau, 95% CI, models, seeds); no rows for a study with
    one epoch or fewer than 3 finished models."""
    fid = report.get("fidelity")
    if not fid:
        return "", []
    rows, lead = [], []
    for key, label in (("rank_stability", "epoch"), ("pruning", "pruning epoch")):
        part = fid.get(key)
        if not part:
            continue
        for r in part["rows"]:
            ci = r["ci95"]
            rows.append([label, str(r["epoch"]), "–" if r["tau"] is None else f"{r['tau']:.2f}",
                         f"{ci[0]:.2f} … {ci[1]:.2f}" if ci else "–", str(r["models"]), str(r["seeds"])])
        last = part["epochs"]
    if stab := fid.get("rank_stability"):
        lead.append(f"The ranking reaches tau >= {stab['stable_tau']} against the final one from epoch "
                    f"{stab['stable_from']} on.")
    if fid.get("left_out"):
        lead.append(f"Left out (trained to another last epoch): {', '.join(fid['left_out'])}.")
    return (f"Kendall's tau between each epoch's ranking of the models (mean validation metric over finished "
            f"seeds) and epoch {last}'s, with a 95% bootstrap CI over models and seeds. " + " ".join(lead)), rows


def fidelity_markdown(report: dict[str, Any]) -> list[str]:
    """The Rank stability section in Markdown; nothing without a multi-epoch ranking."""
    lead, rows = fidelity_rows(report)
    if not rows:
        return []
    return ["", "## Rank stability", "", md_text(lead), "", *md_table(_HEAD, rows, "lrrlrr"),
            *(f"\n**Warning:** {md_text(w)}" for w in report["fidelity"]["warnings"])]


def fidelity_html(report: dict[str, Any]) -> str | None:
    """The Rank stability section in HTML; None without a multi-epoch ranking."""
    lead, rows = fidelity_rows(report)
    if not rows:
        return None
    warn = "".join(el("p", esc(w), class_="note warn") for w in report["fidelity"]["warnings"])
    return el("p", esc(lead)) + warn + table(_HEAD, rows)

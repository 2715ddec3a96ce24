"""The comparison table in the notebook's columns (kernel, architecture, test accuracy) plus cost columns."""

from __future__ import annotations

import csv
import io
from typing import Any
from urllib.parse import quote

from rich.console import Console
from rich.table import Table

from convstudy.report.factors import level_text
from convstudy.report.fidelity import audit_markdown, racing_evidence
from convstudy.report.markdown import md_text

BEST_MARK = "★"


def acc_cell(stat: dict[str, Any]) -> str:
    """`99.31 ± 0.04` (percent) over seeds, `99.31` for one seed, `–` when nothing finished."""
    if not stat["n"]:
        return "–"
    if stat["n"] == 1:
        return f"{100 * stat['mean']:.2f}"
    return f"{100 * stat['mean']:.2f} ± {100 * stat['std']:.2f}"


def summary_rows(report: dict[str, Any]) -> list[dict[str, str]]:
    """The summary table: one row per model, its cells as every format shows them."""
    on_val = report["study"].get("selection_metric") == "val_accuracy"
    rows = []
    for m in report["models"]:
        status = ", ".join(f"{n} {s}" for s, n in sorted(m["states"].items()) if s != "complete")
        retried = [f"seed {t['seed']}: {t['attempts']} attempts" for t in m.get("trials", []) if t.get("attempts", 1) > 1]
        status = ", ".join(filter(None, [status, *retried]))
        best = f" {BEST_MARK}" if m["same_as_best"] else ""
        rows.append({
            "kernel": m["kernel"],
            "model": m["name"],
            "architecture": m["description"],
            "params": f"{m['params']:,}",
            "MFLOPs": f"{m['mflops']:.1f}",
            **({"val accuracy %": acc_cell(m["val_accuracy"]) + best} if on_val else {}),
            "test accuracy %": acc_cell(m["test_accuracy"]) + ("" if on_val else best),
            "n": str(m["test_accuracy"]["n"]),
            "test loss": f"{m['test_loss']['mean']:.4f}" if m["test_loss"]["n"] else "–",
            "s/epoch": f"{m['seconds_per_epoch']:.1f}" if m["seconds_per_epoch"] else "–",
            "notes": status,
        })
    return rows


def best_note(report: dict[str, Any]) -> str:
    """What the best mark means, and which metric selected the best."""
    on_val = report["study"].get("selection_metric") == "val_accuracy"
    metric = "final validation accuracy (test accuracy is shown, never selects)" if on_val else "test accuracy"
    single = ("with one seed per model only the best is marked" if on_val else
              "or with one seed per model McNemar's test on paired test predictions, Holm-corrected")
    return (f"{BEST_MARK} = best group: not called worse than the best model on {metric}; Tukey-Kramer HSD over "
            f"seeds (family-wise α = 0.05), {single}.")


def footnotes(report: dict[str, Any]) -> list[str]:
    """The lines under the summary table: what the best mark means, the validation note, warnings."""
    notes = [best_note(report)]
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
    rows = summary_rows(report)
    for col in (rows[0] if rows else {"model": ""}):
        table.add_column(col, overflow="fold", justify="right" if col in ("params", "MFLOPs", "n", "s/epoch") else "left")
    for r in rows:
        table.add_row(*r.values(), style="bold" if BEST_MARK in r["test accuracy %"] else None)
    console.print(table)
    for note in footnotes(report):
        console.print(note, style="dim")
    if report.get("fair"):  # the table holds the fixed recipe only: the tuned verdict in lines
        from convstudy.report.fair_view import verdict_lines

        for line in verdict_lines(report["fair"]):
            console.print(line, markup=False)


def render_markdown(report: dict[str, Any], plots_dir: str | None = "plots") -> str:
    """A Markdown table (pasteable into a README or a pull request) with the loss plots below it."""
    s = report["study"]
    rows = summary_rows(report)
    out = [f"# {md_text(s['name'])}", "", md_text(s["description"] or ""), "",
           f"Dataset **{md_text(s['dataset'])}**, {s['epochs']} epochs, batch {s['batch_size']}, validation: "
           f"{s['validation']}, {s['trials']} trials.", ""]
    if rows:
        cols = list(rows[0])
        out.append("| " + " | ".join(cols) + " |")
        out.append("|" + "|".join("---:" if c in ("params", "MFLOPs", "n", "s/epoch") else "---" for c in cols) + "|")
        for r in rows:
            out.append("| " + " | ".join(md_text(v) for v in r.values()) + " |")
    out += [""] + [f"_{n}_" for n in footnotes(report)]
    out += _confusion_markdown(report.get("best_model"))
    out += factors_markdown(report, plots_dir)
    out += design_markdown(report, plots_dir)
    out += racing_markdown(report)
    out += fidelity_markdown(report)
    out += audit_markdown(report)
    if report.get("search"):
        from convstudy.report.search import search_markdown

        out += ["", search_markdown(report["search"])]
    if report.get("fair"):
        from convstudy.report.fair_view import fair_markdown

        out += ["", fair_markdown(report["fair"])]
    if plots_dir:
        out += [""] + [f"![{md_text(m['name'])} loss]({plots_dir}/{quote(m['name'], safe='')}.png)"
                       for m in report["models"]]
    return "\n".join(out) + "\n"


def _confusion_markdown(best: dict[str, Any] | None) -> list[str]:
    """The best model's pooled confusion matrix under the class names (rows: true class), as in report.html."""
    if not best:
        return []
    names = [md_text(n) for n in best["class_names"]]
    seeds = ", ".join(map(str, best["seeds"]))
    return ["", f"Confusion matrix of **{md_text(best['model'])}** (rows: true class, columns: predicted; "
                f"seeds {seeds}, {best['n_test']:,} test images each):", "",
            "| true \\ predicted | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names),
            *(f"| {name} | " + " | ".join(str(v) for v in row) + " |" for name, row in zip(names, best["confusion"]))]


def factor_rows(report: dict[str, Any]) -> tuple[list[list[str]], list[list[str]]]:
    """The Factors section's rows as text (factor, level, effect pp, 95% CI, p) and (interaction, levels,
    effect, CI, p), shared by Markdown and HTML; user text is not escaped here."""
    def pp(e: dict[str, Any]) -> list[str]:
        lo, hi = e["ci95"]
        return [f"{100 * e['estimate']:+.2f}", f"{100 * lo:+.2f} … {100 * hi:+.2f}", f"{e['p_value']:.2g}"]

    mains = []
    for f in report.get("factors", []):
        test = f" (F test p = {f['p_value']:.2g})" if f["p_value"] is not None else ""
        mains.append([f"{f['name']}{test}", f"{level_text(f['reference'])} (reference)", "0", "–", "–"])
        mains += [[f["name"], level_text(e["level"]), *pp(e)] for e in f["effects"]]
    pairs = []
    for i in report.get("interactions", []):
        name = f"{i['factors'][0]} × {i['factors'][1]} (F test p = {i['p_value']:.2g})"
        pairs += [[name, " × ".join(level_text(v) for v in e["levels"]), *pp(e)] for e in i["effects"]]
    return mains, pairs


RACING_NOTE = ("Seeds went only to models whose place was undecided: a model stopped once called worse than the best "
               "(Tukey-Kramer at {alpha:.3g} per round, so 0.05 over the whole race) or shown within the race margin "
               "of it; the best group is drawn at the same level. This rests on the seed noise measured in the "
               "first round and on the final epoch's ranking (see Rank stability for how early epochs agree).")


def racing_rows(report: dict[str, Any]) -> list[list[str]]:
    """Per raced model: its name, the seeds it got and why it stopped (none for a study that did not race)."""
    return [[m["name"], str(m["racing"]["seeds"]), m["racing"]["stopped"]] for m in report["models"] if m.get("racing")]


def racing_markdown(report: dict[str, Any]) -> list[str]:
    """The Racing section: how many seeds each model got and why it stopped."""
    rows = racing_rows(report)
    if not rows:
        return []
    return ["", "## Racing", "", RACING_NOTE.format(alpha=report["study"].get("best_group_alpha", 0.05)) + " " + md_text(racing_evidence(report)),
            "", "| model | seeds | stopped |", "|---|---:|---|", *(f"| {' | '.join(md_text(c) for c in r)} |" for r in rows)]


def fidelity_rows(report: dict[str, Any]) -> tuple[str, list[list[str]]]:
    """The Rank stability section's lead sentence and rows (check, epoch, tau, 95% CI, models, seeds); no rows
    for a study with one epoch or fewer than 3 finished models."""
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
    """The Rank stability section: does an early epoch rank the models like the last one, and its warnings."""
    lead, rows = fidelity_rows(report)
    if not rows:
        return []
    return ["", "## Rank stability", "", md_text(lead), "", "| check | epoch | tau | 95% CI | models | seeds |",
            "|---|---:|---:|---|---:|---:|", *(f"| {' | '.join(md_text(c) for c in r)} |" for r in rows),
            *(f"\n**Warning:** {md_text(w)}" for w in report["fidelity"]["warnings"])]


def factors_markdown(report: dict[str, Any], plots_dir: str | None = "plots") -> list[str]:
    """The Factors section (main effects, interactions, their plots), or nothing for a study without factors."""
    if not report.get("factors"):
        return []
    mains, pairs = factor_rows(report)
    fit = report["factor_fit"]
    out = ["", "## Factors", "", f"Effect of each level against its factor's reference, in percentage points of "
           f"{_metric(report)}: one linear model (OLS, treatment coding) over {fit['n']} finished seeds."]
    if fit["note"]:
        out += ["", f"_{md_text(fit['note'])}_"]
    for head, rows in (("factor", mains), ("interaction", pairs)):
        if rows:
            out += ["", f"| {head} | level | effect (pp) | 95% CI | p |", "|---|---|---:|---:|---:|"]
            out += ["| " + " | ".join(md_text(c) for c in r) + " |" for r in rows]
    if plots_dir:
        out += [""] + [f"![{name}]({plots_dir}/_{name}.png)" for name in ("factors", "interactions")
                       if report.get(name) and any(x.get("effects") for x in report[name])]
    return out


def _metric(report: dict[str, Any]) -> str:
    on_val = report["study"].get("selection_metric") == "val_accuracy"
    return "final validation accuracy" if on_val else "test accuracy"


def render_csv(report: dict[str, Any]) -> str:
    """One row per trial (model, seed) with raw numbers, for spreadsheets."""
    rows = [["model", "kernel", "description", "params", "trainable_params", "mflops", "seed", "state",
             "val_accuracy", "test_accuracy", "test_loss", "train_seconds", "same_as_best"]]
    for m in report["models"]:
        for t in m["trials"]:
            rows.append([m["name"], m["kernel"], m["description"], m["params"], m["trainable_params"],
                         m["mflops"], t["seed"], t["state"], t["epochs"][-1]["val_accuracy"] if t["epochs"] else None,
                         t["test_accuracy"], t["test_loss"], round(t["train_seconds"], 3), m["same_as_best"]])
    return csv_text(rows)


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


def design_rows(report: dict[str, Any]) -> tuple[list[list[str]], list[list[str]], list[list[str]]]:
    """The design-space section's rows as text, shared by Markdown and HTML: populations (label, n, median
    and min error %, best model), comparisons (A, B, KS D, p Holm, P(A<B) [CI], the same normalised, models
    for 80% power) and good ranges (space, factor, best, best 25%, good range); user text is not escaped here."""
    section = report["design_spaces"]
    groups = section["groups"]
    pops = [[g["label"], str(g["n"]), f"{100 * g['median']:.2f}", f"{100 * g['min']:.2f}", g["best_model"]]
            for g in groups]

    def test(t: dict[str, Any] | None) -> list[str]:
        if not t or t.get("p") is None:
            return ["–", (t or {}).get("note") or "–", "–"]
        lo, hi = t["p_lower_ci"]
        return [f"{t['ks']:.3f}", f"{t['p_holm']:.2g}" + (", different" if t["different"] else ""),
                f"{t['p_lower']:.2f} [{lo:.2f}, {hi:.2f}]"]

    comps = [[groups[c["a"]]["label"], groups[c["b"]]["label"], *test(c["plain"]), *test(c["normalized"]),
              str(c["plain"]["n_needed"] or f"> {c['plain']['power']['n'][-1]}")] for c in section["comparisons"]]
    ranges = [[g["space"], r["factor"], f"{r['best']:g}", "{:g} – {:g}".format(*r["best_quarter"]),
               "{:g} – {:g}".format(*r["good_range"]), "{:g} – {:g}".format(*r["range"])]
              for g in groups for r in g.get("good_ranges", [])]
    return pops, comps, ranges


DESIGN_INTRO = ("Each model counts once, with its error (1 - {metric}, mean over its seeds). Populations: "
                "each space, and each level of a factor within a space. Comparisons: the two-sample KS test "
                "of the error EDFs, and the same normalised by {normalize} (weights uniform over shared "
                "complexity bins; weighted KS, permutation p-value), every p-value Holm-adjusted together; "
                "P(A<B) is the chance that a model of A has lower error than one of B (95% bootstrap CI). "
                "Good range: where the best model of a random quarter of the space lies (RegNet's bootstrap). "
                "Method: docs/design-spaces.md.")
DESIGN_HEADS = (["population", "models", "median error %", "min error %", "best model"],
                ["A", "B", "KS D", "p (Holm)", "P(A<B) [95% CI]", "normalised D", "p (Holm)", "P(A<B) [95% CI]",
                 "models for 80% power"],
                ["space", "factor", "best model's", "best 25%", "good range (95%)", "sampled"])


def design_intro(report: dict[str, Any]) -> str:
    section = report["design_spaces"]
    norm = {"none": "nothing (plain only)", "params": "parameters", "flops": "FLOPs"}[section["normalize"]]
    return DESIGN_INTRO.format(metric=_metric(report), normalize=norm)


def design_markdown(report: dict[str, Any], plots_dir: str | None = "plots") -> list[str]:
    """The Design spaces section, or nothing where no population has enough models."""
    if not report.get("design_spaces"):
        return []
    out = ["", "## Design spaces", "", design_intro(report)]
    for head, rows in zip(DESIGN_HEADS, design_rows(report)):
        if rows:
            out += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            out += ["| " + " | ".join(md_text(c) for c in r) + " |" for r in rows]
    if plots_dir:
        out += [""] + [f"![{name}]({plots_dir}/_{name}.png)" for name in ("design_edf", "design_enough")]
    return out

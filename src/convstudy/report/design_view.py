"""The Design spaces section, drawn from report.design_spaces' numbers: tables of populations, comparisons and good
ranges, and figures of the error EDFs and of how many models are enough."""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from convstudy.report.design_spaces import bin_edges, bin_index, edf, n_bins, weight_table
from convstudy.report.factors import metric_text
from convstudy.report.figures import PALETTE, label, memoized, panel_grid, style, to_svg
from convstudy.report.markup import el, esc, figure, md_table, table

def design_rows(report: dict[str, Any]) -> tuple[list[list[str]], list[list[str]], list[list[str]]]:
    """The section's rows as text (not escaped), shared by Markdown and HTML: populations, comparisons and good
    ranges."""
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
    """The section's lead: what is compared and how."""
    section = report["design_spaces"]
    norm = {"none": "nothing (plain only)", "params": "parameters", "flops": "FLOPs"}[section["normalize"]]
    return DESIGN_INTRO.format(metric=metric_text(report), normalize=norm)


def design_markdown(report: dict[str, Any], plots_dir: str | None = "plots") -> list[str]:
    """The Design spaces section in Markdown, or nothing where no population has enough models."""
    if not report.get("design_spaces"):
        return []
    out = ["", "## Design spaces", "", design_intro(report)]
    for head, rows in zip(DESIGN_HEADS, design_rows(report)):
        if rows:
            out += ["", *md_table(head, rows)]
    if plots_dir:
        out += [""] + [f"![{name}]({plots_dir}/_{name}.png)" for name in ("design_edf", "design_enough")]
    return out


_CAPTIONS = {"design_edf": "Error EDFs of each comparison: solid with its 95% DKW band, dashed normalised for "
                           "complexity.",
             "design_enough": "How many models are enough: the expected best error of m models drawn from each "
                              "space (95% bootstrap band), and the KS test's power by models per space."}


def design_part(report: dict[str, Any]) -> list[Any]:
    """What the Design spaces section and its figures read from a report (the key of their memo)."""
    return [report["study"].get("selection_metric"), report.get("design_spaces")]


@memoized(key=design_part)
def design_html(report: dict[str, Any]) -> str | None:
    """The Design spaces section in HTML (tables and figures); None without one."""
    if not report.get("design_spaces"):
        return None
    parts = [el("p", esc(design_intro(report)))]
    parts += [table(head, rows) for head, rows in zip(DESIGN_HEADS, design_rows(report)) if rows]
    parts += [figure(to_svg(fig), _CAPTIONS[name]) for name, fig in design_figures(report).items()]
    return "\n".join(parts)


MAX_PANELS = 12  # comparisons drawn; the tables list every one


def design_figures(report: dict[str, Any]) -> dict[str, Figure]:
    """`design_edf` and `design_enough`: matplotlib Figures, only those with something to draw."""
    section = report.get("design_spaces")
    if not section:
        return {}
    out: dict[str, Figure] = {}
    comps = section["comparisons"][:MAX_PANELS]
    if comps:
        fig, axes = panel_grid(len(comps), width=3.4, height=3.0, sharey=True)
        for ax, c in zip(axes, comps):
            _edf_panel(ax, section, c)
        axes[0].set_ylabel("share of models with error ≤ x")
        fig.set_layout_engine("constrained")
        out["design_edf"] = fig
    spaces = [g for g in section["groups"] if g.get("best_of_m")]
    powered = [c for c in section["comparisons"] if c["kind"] == "spaces"][:len(PALETTE)]
    if spaces:
        fig = Figure(figsize=(10, 3.6))
        ax_best, ax_power = fig.subplots(1, 2)
        for i, g in enumerate(spaces):
            curve = g["best_of_m"]
            ax_best.plot(curve["m"], 100 * np.array(curve["mean"]), label=label(g["label"]), **style(i))
            ax_best.fill_between(curve["m"], 100 * np.array(curve["ci95"][0]), 100 * np.array(curve["ci95"][1]),
                                 color=style(i)["color"], alpha=0.2, linewidth=0)
        ax_best.set_xscale("log")
        ax_best.set_xlabel("models trained (m)")
        ax_best.set_ylabel("expected best error of m models (%)")
        ax_best.legend(fontsize=7)
        for i, c in enumerate(powered):
            p = c["plain"]["power"]
            ax_power.plot(p["n"], 100 * np.array(p["power"]), marker="o", ms=3, label=_pair(section, c), **style(i))
        ax_power.axhline(80, color="#555555", linewidth=0.8, linestyle="--")
        ax_power.set_xscale("log")
        ax_power.set_ylim(-2, 102)
        ax_power.set_xlabel("models per space")
        ax_power.set_ylabel("power of the KS test (%)")
        if powered:
            ax_power.legend(fontsize=7)
        else:
            ax_power.set_visible(False)
        for ax in (ax_best, ax_power):
            ax.grid(alpha=0.3, which="both")
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 10, 100: not 10^1
            ax.xaxis.set_minor_formatter(NullFormatter())
        fig.set_layout_engine("constrained")
        out["design_enough"] = fig
    return out


def _pair(section: dict[str, Any], c: dict[str, Any]) -> str:
    return f"{label(section['groups'][c['a']]['label'])} vs {label(section['groups'][c['b']]['label'])}"


def _edf_panel(ax: Any, section: dict[str, Any], c: dict[str, Any]) -> None:
    """Two populations' error EDFs: plain steps with their DKW band, normalised dashed."""
    ga, gb = section["groups"][c["a"]], section["groups"][c["b"]]
    errors = [np.array(ga["errors"]), np.array(gb["errors"])]
    weights: list[Any] = [None, None]
    if c["normalized"] and c["normalized"].get("ks") is not None:
        ca, cb = np.array(ga["complexity"]), np.array(gb["complexity"])
        labels = np.repeat([0, 1], [len(ca), len(cb)])
        where = bin_index(np.concatenate([ca, cb]), bin_edges(ca, cb, n_bins(min(len(ca), len(cb)))))
        w = weight_table(labels, where)[labels, where]
        weights = [w[:len(ca)], w[len(ca):]]
    for i, (g, e, w) in enumerate(zip((ga, gb), errors, weights)):
        colour = PALETTE[i]
        xs, f = edf(e)
        ax.step(100 * xs, f, where="post", color=colour, linewidth=1.2, label=label(g["label"]))
        ax.fill_between(100 * xs, np.clip(f - g["dkw"], 0, 1), np.clip(f + g["dkw"], 0, 1), step="post",
                        color=colour, alpha=0.15, linewidth=0)
        if w is not None and w.sum() > 0:
            xw, fw = edf(e[w > 0], w[w > 0])
            ax.step(100 * xw, fw, where="post", color=colour, linewidth=1.2, linestyle="--",
                    label="normalised" if i else None)
    plain, norm = c["plain"], c["normalized"]
    title = f"KS p = {plain['p_holm']:.2g}"
    if norm and norm.get("p_holm") is not None:
        title += f"; normalised p = {norm['p_holm']:.2g}"
    ax.set_title(title + " (Holm)", fontsize=8)
    ax.set_xlabel("error (%)")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")

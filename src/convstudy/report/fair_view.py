"""The fair comparison drawn: Markdown and HTML sections, the isolation plots and the best-of-k curves."""

from __future__ import annotations

from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from convstudy.report.factors import level_text
from convstudy.report.figures import PALETTE, memoized, to_svg
from convstudy.report.markup import el, esc, figure, md_table, md_text, table


def _pct(d: dict[str, Any]) -> str:
    if d.get("mean") is None:
        return "-"
    ci = d.get("ci95")
    return f"{100 * d['mean']:.2f}" + (f" [{100 * ci[0]:.2f}, {100 * ci[1]:.2f}]" if ci else "")


def _summary(f: dict[str, Any]) -> list[str]:
    """The section's sentences: roles, budget, what was retrained and compared, the verdicts and warnings."""
    budget = ", ".join(f"{k} {v}" for k, v in f["budget"].items())
    lines = [f"Scientific: {', '.join(f['scientific'])}. Nuisance, tuned for every level by Optuna's {f['sampler']} "
             f"sampler (seed {f['seed']}, pruner {f['pruner']}, budget per level: {budget}): "
             + "; ".join(f"{k} {v}" for k, v in f["nuisance"].items()) + ".",
             "Fixed (held constant, a caveat on the conclusion): "
             + ", ".join(f"{k} {v}" for k, v in f["fixed"].items() if k != "layers") + "; layers "
             + " ".join(map(str, f["fixed"]["layers"])) + ".",
             "Each level's best setting on validation (first seed) was retrained on every seed; the levels are "
             "compared on test accuracy, which nothing was selected on."]
    return lines + verdict_lines(f)


def verdict_lines(f: dict[str, Any]) -> list[str]:
    """The tuned and fixed-recipe verdicts, whether they differ, and the warnings (also shown on the terminal)."""
    lines, t = [], f["tuned"]
    if t["best"]:
        lines.append(f"Tuned: best {t['best']}; best group: {', '.join(t['best_group'])}.")
    if f["fixed_recipe"] and f["fixed_recipe"]["best"]:
        lines.append(f"Fixed recipe: best {f['fixed_recipe']['best']}; best group: "
                     f"{', '.join(f['fixed_recipe']['best_group'])}.")
    if f["verdict_change"]:
        lines.append(f["verdict_change"])
    elif f["fixed_recipe"] and t["best"] and f["fixed_recipe"]["best"]:
        lines.append("The verdict is the same under the fixed recipe and with tuning.")
    return lines + [f"Warning: {w}" for w in f["warnings"]]


def _rows(f: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    fixed = (f["fixed_recipe"] or {}).get("test_accuracy", {})
    head = ["level", "trials", "best val (%)", "best nuisance", "edge", "seeds", "tuned test (%) [95% CI]",
            "tuned group", "fixed test (%) [95% CI]", "fixed group", "still climbing"]
    rows = []
    for lv in f["levels"]:
        best = lv["best"]
        edge = ", ".join(k for k, flag in lv["boundary"].items() if flag) or "-"
        in_fixed = f["fixed_recipe"] and lv["label"] in f["fixed_recipe"]["best_group"]
        rows.append([lv["label"], str(len(lv["trials"])), f"{100 * best['val_accuracy']:.2f}" if best else "-",
                     ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                               for k, v in best["nuisance"].items()) if best else "-",
                     edge, ",".join(map(str, lv["seeds"])) or "-", _pct(lv["test_accuracy"]),
                     "yes" if lv["label"] in f["tuned"]["best_group"] else "no", _pct(fixed.get(lv["label"], {})),
                     ("yes" if in_fixed else "no") if f["fixed_recipe"] else "-",
                     {True: "yes", False: "no", None: "-"}[lv["best_of_k"]["climbing"]]])
    return head, rows


def fair_markdown(f: dict[str, Any]) -> str:
    """The fair comparison as a Markdown section: roles, verdicts, warnings and one row per level."""
    head, rows = _rows(f)
    return "\n".join(["## Fair comparison", "", *map(md_text, _summary(f)), "", *md_table(head, rows)]) + "\n"


def isolation_figure(f: dict[str, Any], factor: str) -> Figure:
    """Level of `factor` on x; per combination of the other scientific factors, the best validation accuracy over
    the nuisance trials and the retrained winner's test accuracy (mean, 95% CI), beside the fixed recipe's."""
    fig = Figure(figsize=(5.2, 3.4))
    ax = fig.subplots()
    xs = list(dict.fromkeys(level_text(lv["levels"][factor]) for lv in f["levels"]))
    groups: dict[str, list[dict[str, Any]]] = {}
    for lv in f["levels"]:
        rest = ", ".join(f"{k}={level_text(v)}" for k, v in lv["levels"].items() if k != factor)
        groups.setdefault(rest, []).append(lv)
    for i, (rest, lvs) in enumerate(groups.items()):
        colour, tag = PALETTE[i % len(PALETTE)], f" ({rest})" if rest else ""
        done = [lv for lv in lvs if lv["best"]]
        ax.plot([xs.index(level_text(lv["levels"][factor])) - 0.08 for lv in done],
                [100 * lv["best"]["val_accuracy"] for lv in done], "s", mfc="none", color=colour,
                label=f"best validation{tag}")
        tested = [lv for lv in lvs if lv["test_accuracy"]["mean"] is not None]
        _ci_points(ax, [xs.index(level_text(lv["levels"][factor])) + 0.08 for lv in tested],
                   [lv["test_accuracy"] for lv in tested], "o", colour, f"winner's test, 95% CI{tag}")
        if f["fixed_recipe"]:
            fixed = f["fixed_recipe"]["test_accuracy"]
            shown = [lv for lv in lvs if fixed.get(lv["label"], {}).get("mean") is not None]
            _ci_points(ax, [xs.index(level_text(lv["levels"][factor])) + 0.24 for lv in shown],
                       [fixed[lv["label"]] for lv in shown], "^", "#777777", f"fixed recipe's test, 95% CI{tag}")
    ax.set_xticks(range(len(xs)), xs)
    ax.set_xlim(-0.5, len(xs) - 0.5)
    ax.set_xlabel(factor)
    return _finish(fig, ax, "accuracy (%)")


def _ci_points(ax: Any, xs: list[float], stats: list[dict[str, Any]], marker: str, colour: str, name: str) -> None:
    """Means (%) at `xs` with their 95% CIs as error bars (none where one seed gives no CI)."""
    means = [100 * s["mean"] for s in stats]
    cis = [[100 * v for v in s["ci95"]] if s["ci95"] else [m, m] for s, m in zip(stats, means)]
    ax.errorbar(xs, means, yerr=[[m - c[0] for m, c in zip(means, cis)], [c[1] - m for m, c in zip(means, cis)]],
                fmt=marker, capsize=4, color=colour, label=name)


def best_of_k_figure(f: dict[str, Any]) -> Figure:
    """The expected best validation accuracy of k nuisance trials, per level, with its 95% bootstrap band."""
    fig = Figure(figsize=(5.2, 3.4))
    ax = fig.subplots()
    for i, lv in enumerate(f["levels"]):
        c = lv["best_of_k"]
        if not c["k"]:
            continue
        colour = PALETTE[i % len(PALETTE)]
        ax.plot(c["k"], [100 * v for v in c["expected"]], color=colour, label=lv["label"])
        ax.fill_between(c["k"], [100 * v for v in c["low"]], [100 * v for v in c["high"]], color=colour, alpha=0.2)
    ax.set_xlabel("nuisance trials k")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _finish(fig, ax, "expected best validation (%)")


def _finish(fig: Figure, ax: Any, ylabel: str) -> Figure:
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # nothing trained yet: no empty legend (and no matplotlib warning)
        ax.legend(fontsize=7)
    fig.set_layout_engine("constrained")
    return fig


@memoized(key=lambda report: report.get("fair"))
def fair_html(report: dict[str, Any]) -> str | None:
    """The Fair comparison section (OPTIONAL_SECTIONS): summary, isolation plots, best-of-k curves, level table."""
    f = report.get("fair")
    if not f:
        return None
    parts = [el("p", esc(line)) for line in _summary(f)]
    parts += [figure(to_svg(isolation_figure(f, factor)), f"Isolation plot of {esc(factor)}: each level with its own "
                     "best nuisance setting.") for factor in f["scientific"]]
    parts.append(figure(to_svg(best_of_k_figure(f)), "Best of k nuisance trials (expected maximum, 95% bootstrap "
                        "band): a curve still rising at the budget asks for more trials."))
    parts.append(table(*_rows(f)))
    return "\n".join(parts)

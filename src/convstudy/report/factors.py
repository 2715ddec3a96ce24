"""Factor effects: one statsmodels OLS over every finished seed of the models with factor levels (treatment
coding against each factor's first level; fully crossed pairs' interactions by F test: docs/semantics.md,
"Factor effects"), and the Factors section drawn from it."""

from __future__ import annotations

import json
import warnings
from itertools import combinations
from typing import TYPE_CHECKING, Any

import numpy as np

from convstudy.report.figures import PALETTE, label, memoized, panel_grid, style, to_svg
from convstudy.report.markup import el, esc, figure, md_table, md_text, table

if TYPE_CHECKING:
    import pandas as pd

# pandas and statsmodels are imported where a fit happens: every `convstudy run` and `report` imports
# this module, most studies have no factors, and statsmodels alone takes seconds to import.

Level = str | int | float | bool


@memoized
def factor_effects(models: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """The report's `factors`, `interactions` and `factor_fit` from each model's `factors` and per-seed
    `metric` values; {} when no model has factors."""
    rows = [{"value": v, **m["factors"]} for m in models if m.get("factors") for v in m[metric]["values"]]
    names = list(dict.fromkeys(k for m in models for k in m.get("factors") or {}))
    if not names:
        return {}
    import pandas as pd

    return fit_effects(pd.DataFrame(rows, columns=["value", *names], dtype=object), names)


def fit_effects(df: pd.DataFrame, names: list[str]) -> dict[str, Any]:
    """Main effects (and estimable two-way interactions) of the factor columns `names` on `df.value`."""
    df = df.dropna()
    if df.empty:  # e.g. a search's first trials, still running or pruned: nothing to fit yet
        return {}
    import pandas as pd

    levels = {n: _levels(df[n]) for n in names}
    # Columns f0, f1, ... of level indices: any factor name and any JSON scalar level fit a formula.
    data = pd.DataFrame({"value": df["value"].astype(float).to_numpy()})
    for i, n in enumerate(names):
        keys = [_key(v) for v in levels[n]]
        data[f"f{i}"] = pd.Categorical([keys.index(_key(v)) for v in df[n]], categories=range(len(keys)))
    varied = [i for i, n in enumerate(names) if len(levels[n]) > 1]
    factors = [{"name": n, "levels": levels[n], "reference": levels[n][0], "p_value": None, "effects": []}
               for n in names]
    fit_info = {"n": len(data), "df_resid": None, "note": None}
    out = {"factors": factors, "interactions": [], "factor_fit": fit_info}
    if not varied:
        fit_info["note"] = "no factor has two levels among the finished models"
        return out
    main = _fit("value ~ " + " + ".join(f"C(f{i})" for i in varied), data)
    if main is None:
        fit_info["note"] = "the finished models do not separate the factors (too few models or seeds)"
        return out
    fit_info["df_resid"] = int(main.df_resid)
    tests = _anova(main)
    for i in varied:
        factors[i]["p_value"] = tests.get(f"C(f{i})")
        factors[i]["effects"] = [_effect(main, f"C(f{i})[T.{j}]", {"level": levels[names[i]][j]})
                                 for j in range(1, len(levels[names[i]]))]
    for a, b in combinations(varied, 2):
        inter = _interaction(main, data, a, b, levels[names[a]], levels[names[b]])
        if inter is not None:
            out["interactions"].append({"factors": [names[a], names[b]], **inter})
    return out


def _interaction(main: Any, data: pd.DataFrame, a: int, b: int, la: list[Level], lb: list[Level]
                 ) -> dict[str, Any] | None:
    """The a x b interaction added to the main effects, or None where a cell is empty or no df is left."""
    cells = data.groupby([f"f{a}", f"f{b}"], observed=False)["value"].agg(["mean", "count"])
    if (cells["count"] == 0).any():
        return None
    fit = _fit(main.model.formula + f" + C(f{a}):C(f{b})", data)
    if fit is None:
        return None
    from statsmodels.stats.anova import anova_lm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # anova_lm's own chained-assignment FutureWarnings
        p = float(anova_lm(main, fit)["Pr(>F)"].iloc[1])
    effects = [_effect(fit, f"C(f{a})[T.{i}]:C(f{b})[T.{j}]", {"levels": [la[i], lb[j]]})
               for i in range(1, len(la)) for j in range(1, len(lb))]
    means = [{"levels": [la[i], lb[j]], "mean": float(row["mean"]), "n": int(row["count"])}
             for (i, j), row in cells.iterrows()]
    return {"p_value": p, "effects": effects, "means": means}


def _fit(formula: str, data: pd.DataFrame) -> Any | None:
    """OLS of `formula`, or None when its design is rank deficient or leaves no residual df."""
    import statsmodels.formula.api as smf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a rank-deficient design is refused just below, not warned about
        fit = smf.ols(formula, data).fit()
    exog = fit.model.exog
    if fit.df_resid < 1 or np.linalg.matrix_rank(exog) < exog.shape[1]:
        return None
    return fit


def _anova(fit: Any) -> dict[str, float]:
    """Type II F-test p-value per main-effect term."""
    from statsmodels.stats.anova import anova_lm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = anova_lm(fit, typ=2)
    return {term: float(p) for term, p in table["PR(>F)"].items() if term != "Residual"}


def _effect(fit: Any, term: str, what: dict[str, Any]) -> dict[str, Any]:
    lo, hi = fit.conf_int(0.05).loc[term]
    return {**what, "estimate": float(fit.params[term]), "ci95": [float(lo), float(hi)],
            "p_value": float(fit.pvalues[term])}


def _levels(column: pd.Series) -> list[Level]:
    """A factor's levels in order of first appearance (the template's order for a full grid)."""
    seen: dict[str, Level] = {}
    for v in column:
        seen.setdefault(_key(v), v.item() if isinstance(v, np.generic) else v)
    return list(seen.values())


def level_text(value: Level) -> str:
    """A level as tables and plots show it: JSON's spelling for booleans (true), else str."""
    return json.dumps(value) if isinstance(value, bool) else str(value)


def _key(value: Level) -> str:
    """Identity of a level: 1, 1.0, True and "1" stay four levels (JSON spelling, type included)."""
    v = value.item() if isinstance(value, np.generic) else value
    return f"{type(v).__name__}:{json.dumps(v)}"


def metric_text(report: dict[str, Any]) -> str:
    """The selection metric in words, as the sections' sentences name it."""
    on_val = report["study"].get("selection_metric") == "val_accuracy"
    return "final validation accuracy" if on_val else "test accuracy"


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


_LEAD = ("Effect of each level against its factor's reference, in percentage points of {metric}: one linear model "
         "(OLS, treatment coding) over {n} finished seeds.")
_HEAD = ["level", "effect (pp)", "95% CI", "p"]


def factors_markdown(report: dict[str, Any], plots_dir: str | None = "plots") -> list[str]:
    """The Factors section (main effects, interactions, their plots), or nothing for a study without factors."""
    if not report.get("factors"):
        return []
    mains, pairs = factor_rows(report)
    fit = report["factor_fit"]
    out = ["", "## Factors", "", _LEAD.format(metric=metric_text(report), n=fit["n"])]
    if fit["note"]:
        out += ["", f"_{md_text(fit['note'])}_"]
    for head, rows in (("factor", mains), ("interaction", pairs)):
        if rows:
            out += ["", *md_table([head, *_HEAD], rows, "llrrr")]
    if plots_dir:
        out += [""] + [f"![{name}]({plots_dir}/_{name}.png)" for name in ("factors", "interactions")
                       if report.get(name) and any(x.get("effects") for x in report[name])]
    return out


def factor_part(report: dict[str, Any]) -> list[Any]:
    """What the Factors section and its figures read from a report (the key of their memo)."""
    return [report["study"].get("selection_metric"), *(report.get(k) for k in ("factors", "interactions", "factor_fit"))]


@memoized(key=factor_part)
def factors_html(report: dict[str, Any]) -> str | None:
    """The Factors section: main-effect and interaction tables and their figures; None without factors."""
    if not report.get("factors"):
        return None
    mains, pairs = factor_rows(report)
    fit = report["factor_fit"]
    parts = [el("p", _LEAD.format(metric="the selection metric", n=fit["n"]))]  # no user text in it
    if fit["note"]:
        parts.append(el("p", esc(fit["note"]), class_="note warn"))
    parts += [table([head, *_HEAD], rows) for head, rows in (("factor", mains), ("interaction", pairs)) if rows]
    for name, fig in factor_figures(report).items():
        caption = ("Main effects with 95% CIs (reference level at 0)." if name == "factors" else
                   "Cell means of each fitted two-way interaction.")
        parts.append(figure(to_svg(fig), caption))
    return "\n".join(parts)


def factor_figures(report: dict[str, Any]) -> dict[str, Any]:
    """`factors` (each level's main effect with its 95% CI, in pp against the reference) and `interactions`
    (cell means of each fitted pair): matplotlib Figures, only those with something to draw."""
    metric = "validation" if report["study"].get("selection_metric") == "val_accuracy" else "test"
    out: dict[str, Any] = {}
    mains = [f for f in report.get("factors", []) if f["effects"]]
    if mains:
        fig, axes = panel_grid(len(mains), width=2.6, height=3.2, sharey=True)
        for ax, f in zip(axes, mains):
            est = [0.0] + [100 * e["estimate"] for e in f["effects"]]
            lo = [0.0] + [est[i + 1] - 100 * e["ci95"][0] for i, e in enumerate(f["effects"])]
            hi = [0.0] + [100 * e["ci95"][1] - est[i + 1] for i, e in enumerate(f["effects"])]
            ax.errorbar(range(len(est)), est, yerr=[lo, hi], fmt="o", capsize=4, color=PALETTE[0])
            ax.axhline(0, color="#555555", linewidth=0.8, linestyle="--")
            ax.set_xticks(range(len(est)), [label(level_text(v)) for v in f["levels"]])
            ax.set_xlim(-0.5, len(est) - 0.5)
            ax.set_title(label(str(f["name"])), fontsize=9)
            ax.grid(alpha=0.3)
        axes[0].set_ylabel(f"effect on {metric} accuracy (pp)")
        fig.set_layout_engine("constrained")
        out["factors"] = fig
    pairs = report.get("interactions", [])
    if pairs:
        fig, axes = panel_grid(len(pairs), width=3.2, height=3.4)
        for ax, inter in zip(axes, pairs):
            xs = list(dict.fromkeys(json.dumps(c["levels"][0]) for c in inter["means"]))
            lines = list(dict.fromkeys(json.dumps(c["levels"][1]) for c in inter["means"]))
            for i, line in enumerate(lines):
                cells = [c for c in inter["means"] if json.dumps(c["levels"][1]) == line]
                legend = f"{label(str(inter['factors'][1]))} = {label(level_text(json.loads(line)))}"
                ax.plot([xs.index(json.dumps(c["levels"][0])) for c in cells], [100 * c["mean"] for c in cells],
                        marker="o", label=legend, **style(i))
            ax.set_xticks(range(len(xs)), [label(level_text(json.loads(x))) for x in xs])
            ax.set_xlim(-0.5, len(xs) - 0.5)
            ax.set_xlabel(label(str(inter["factors"][0])))
            ax.set_title(f"{label(str(inter['factors'][0]))} × {label(str(inter['factors'][1]))} "
                         f"(p = {inter['p_value']:.2g})",
                         fontsize=9)
            ax.legend(fontsize=7)
            ax.grid(alpha=0.3)
        axes[0].set_ylabel(f"mean {metric} accuracy (%)")
        fig.set_layout_engine("constrained")
        out["interactions"] = fig
    return out

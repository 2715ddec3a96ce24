"""Factor effects: one linear model over every finished seed of the models that carry factor levels.

Main effects come from `metric ~ C(f1) + C(f2) + ...` (statsmodels OLS, treatment coding: each level
against the factor's reference, its first level in study order; numeric levels are categories too).
A two-way interaction is fitted where its factors are fully crossed in the data, by adding it alone to
the main effects, and tested with the F test against them (docs/semantics.md, "Factor effects").
"""

from __future__ import annotations

import json
import warnings
from itertools import combinations
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

# pandas and statsmodels are imported where a fit happens: every `convstudy run` and `report` imports
# this module, most studies have no factors, and statsmodels alone takes seconds to import.

Level = str | int | float | bool


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

"""Statistics over seeds: summaries with Student-t intervals, and which models are tied with the best.

The best group is Tukey-Kramer's HSD, whose family-wise error over every pair stays valid although the best was
picked from the same numbers (docs/semantics.md, "The best group"); with one seed per model, McNemar's exact test
on paired test predictions, Holm-corrected. Ties (zero variance) are decided here, so scipy never warns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import stats

ALPHA = 0.05


def describe(values: Sequence[float]) -> dict[str, Any]:
    """mean, sample std, 95% CI (Student t; None below two values), n, min, max and the raw values; tied values
    give std 0 and the CI [mean, mean] exactly."""
    v = [float(x) for x in values]
    n = len(v)
    if n == 0:
        return {"mean": None, "std": None, "ci95": None, "n": 0, "min": None, "max": None, "values": []}
    mean, var = _mean_var(v)
    std = math.sqrt(var)
    ci = None
    if n > 1:
        half = float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n)
        ci = [mean - half, mean + half]
    return {"mean": mean, "std": std, "ci95": ci, "n": n, "min": min(v), "max": max(v), "values": v}


def welch_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided Welch t-test p-value over seeds (each side at least two values). Zero variance is decided here
    (scipy warns and may give nan): both sides constant gives 1 if equal, else 0; one side constant is Welch's."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError("welch_p needs at least two values per side")
    (ma, va), (mb, vb) = _mean_var(a), _mean_var(b)
    sa, sb = va / len(a), vb / len(b)
    if sa + sb == 0:
        return 1.0 if ma == mb else 0.0
    t = (ma - mb) / math.sqrt(sa + sb)
    df = (sa + sb) ** 2 / (sa ** 2 / (len(a) - 1) + sb ** 2 / (len(b) - 1))
    return float(min(1.0, 2 * stats.t.sf(abs(t), df)))


def _mean_var(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample variance (0 for one value); a constant sample is exactly (value, 0.0)."""
    v = np.asarray(values, dtype=float)
    if v.min() == v.max():  # np.mean of ties can be off by an ulp, which would fake a tiny variance
        return float(v[0]), 0.0
    return float(v.mean()), float(v.var(ddof=1))


def mcnemar_p(correct_a: np.ndarray, correct_b: np.ndarray) -> float:
    """Exact McNemar test on paired per-example correctness (binomial test on the discordant pairs)."""
    b = int(np.sum(correct_a & ~correct_b))
    c = int(np.sum(~correct_a & correct_b))
    if b + c == 0:
        return 1.0
    return float(stats.binomtest(b, b + c, 0.5).pvalue)


@dataclass(frozen=True)
class Place:
    """A model's place against the best: in the best group or not, the adjusted p-value and its test,
    and whether more seeds could still change the place (`decided`, for racing)."""

    same_as_best: bool
    p_value: float | None
    test: str | None
    decided: bool


def tukey_gap(means: np.ndarray, counts: np.ndarray, mse: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """(best mean - each mean, its Tukey-Kramer standard error) over the last axis; their ratio is the
    studentized range statistic. Leading axes are independent studies (the simulation): `mse` has their shape."""
    best = means.argmax(-1)[..., None]
    se = np.sqrt(np.asarray(mse)[..., None] / 2 * (1 / np.take_along_axis(counts, best, -1) + 1 / counts))
    return np.take_along_axis(means, best, -1) - means, se


def places(values: Mapping[str, Sequence[float]], correct: Mapping[str, np.ndarray] | None = None,
           alpha: float = ALPHA, margin: float = 0.0) -> dict[str, Place]:
    """Each model's place against the best mean of `values` (model -> metric per seed; empty: unranked). Out
    of the best group (adjusted p < alpha) is decided; in it only when the simultaneous upper bound of best - model
    is below a positive `margin`; the best once every other is. `correct` (per-example correctness) serves one seed."""
    ranked = {k: np.asarray(v, dtype=float) for k, v in values.items() if len(v)}
    out = {k: Place(False, None, None, False) for k in values if k not in ranked}
    if not ranked:
        return out
    names = list(ranked)
    means = np.array([_mean_var(ranked[k])[0] for k in names])
    counts = np.array([len(ranked[k]) for k in names], dtype=float)
    best = names[int(means.argmax())]
    df = int(counts.sum()) - len(names)
    if df > 0:
        p, upper = _tukey(ranked, means, counts, df, alpha, margin)
        test = "tukey-hsd"
    else:
        p, upper, test = _mcnemar_holm(names, best, correct or {}), None, "mcnemar-holm"
    for i, k in enumerate(names):
        if k == best:
            continue
        if p[i] is None:
            out[k] = Place(False, None, None, False)
        else:
            within = upper is not None and margin > 0 and upper[i] < margin
            out[k] = Place(p[i] >= alpha, p[i], test, p[i] < alpha or within)
    others = [out[k] for k in names if k != best]
    out[best] = Place(True, 1.0, "best", all(o.decided for o in others))
    return {k: out[k] for k in values}


def _tukey(ranked: dict[str, np.ndarray], means: np.ndarray, counts: np.ndarray, df: int, alpha: float,
           margin: float) -> tuple[list[float], np.ndarray | None]:
    """Tukey-Kramer p-values of best - each model and, for a margin, their simultaneous upper bounds."""
    mse = sum(float(((v - v.mean()) ** 2).sum()) for v in ranked.values()) / df
    if all(v.min() == v.max() for v in ranked.values()):  # no seed noise at all: any difference is real
        diff = means.max() - means
        return [1.0 if d == 0 else 0.0 for d in diff], diff
    diff, se = tukey_gap(means, counts, mse)
    p = np.minimum(1.0, stats.studentized_range.sf(diff / se, len(means), df))
    upper = diff + stats.studentized_range.ppf(1 - alpha, len(means), df) * se if margin > 0 else None
    return [float(x) for x in p], upper


def _mcnemar_holm(names: list[str], best: str, correct: Mapping[str, np.ndarray]) -> list[float | None]:
    """Holm-adjusted McNemar p-values of best vs each model with stored predictions (None without)."""
    p: list[float | None] = [None] * len(names)
    tested = [i for i, k in enumerate(names) if k != best and k in correct and best in correct]
    if tested:
        raw = [mcnemar_p(correct[best], correct[names[i]]) for i in tested]
        from statsmodels.stats.multitest import multipletests  # pulls in pandas: only where used

        for i, adj in zip(tested, multipletests(raw, method="holm")[1]):
            p[i] = float(adj)
    return p


def look_alpha(first: int, max_seeds: int, alpha: float = ALPHA) -> float:
    """The level of each racing round's decisions, and of a raced study's best group: alpha over the most
    rounds a race can have (Bonferroni), so calling an equal model worse at any round stays within alpha."""
    return alpha / (max_seeds - first + 1)


@lru_cache(maxsize=4096)
def tukey_critical(k: int, df: int, alpha: float = ALPHA) -> float:
    """The studentized range's 1 - alpha quantile (about 0.4 s to compute, hence cached): a gap over its
    Tukey-Kramer standard error above it is called worse at family-wise alpha."""
    return float(stats.studentized_range.ppf(1 - alpha, k, df))


def seed_noise(values: Mapping[str, Sequence[float]]) -> float | None:
    """The pooled seed standard deviation over models with two or more values (None without any)."""
    groups = [np.asarray(v, dtype=float) for v in values.values() if len(v) > 1]
    df = sum(len(v) - 1 for v in groups)
    return math.sqrt(sum(float(((v - v.mean()) ** 2).sum()) for v in groups) / df) if df else None


def race_decisions(values: Mapping[str, Sequence[float]], margin: float, alpha: float = ALPHA) -> dict[str, str]:
    """Racing's decision per model (model -> metric per seed): "best"; "worse" (Tukey-Kramer HSD at family-wise
    alpha, as in `places`); "within" (the simultaneous upper bound of best - model below `margin`, accuracy
    units); "open" (neither yet, or no seed variance to judge by). The best is "best" once no model is "open"."""
    ranked = {k: np.asarray(v, dtype=float) for k, v in values.items() if len(v)}
    out = {k: "open" for k in values}
    df = sum(len(v) for v in ranked.values()) - len(ranked)
    if len(ranked) < 2 or df <= 0:
        return out
    names = list(ranked)
    means = np.array([_mean_var(ranked[k])[0] for k in names])
    counts = np.array([len(ranked[k]) for k in names], dtype=float)
    mse = sum(float(((v - v.mean()) ** 2).sum()) for v in ranked.values()) / df
    diff, se = tukey_gap(means, counts, mse)
    crit = tukey_critical(len(names), df, alpha)
    best = int(means.argmax())
    for i, k in enumerate(names):
        if i != best:
            out[k] = "worse" if diff[i] > crit * se[i] else "within" if diff[i] + crit * se[i] < margin else "open"
    if all(out[k] != "open" for k in names if k != names[best]) and len(ranked) == len(values):
        out[names[best]] = "best"
    return out


def best_group(models: list[dict[str, Any]], metric: str, correct: dict[str, np.ndarray] | None = None,
               alpha: float = ALPHA) -> None:
    """Mark each model dict (`name`, `metric` from `describe`) with `same_as_best`, `p_value` and `test` against
    the best mean `metric` (`places`); a raced study passes its `look_alpha`, the level its rounds decided at."""
    found = places({m["name"]: m[metric]["values"] for m in models}, correct, alpha)
    for m in models:
        place = found[m["name"]]
        m["same_as_best"], m["p_value"], m["test"] = place.same_as_best, place.p_value, place.test


def called_worse_rates(studies: int, models: int, seeds: int, std: float, worse_by: float = 0.0,
                       alpha: float = ALPHA, seed: int = 0) -> tuple[float, float]:
    """Simulated studies (normal seed noise, model 0 `worse_by` below the others): the share in which any
    model is called worse than the best, and the share in which model 0 is (vectorised `places`)."""
    x = np.random.default_rng(seed).normal(0.0, std, (studies, models, seeds))
    x[:, 0] -= worse_by
    diff, se = tukey_gap(x.mean(-1), np.full((studies, models), float(seeds)), x.var(-1, ddof=1).mean(-1))
    out = diff / se > stats.studentized_range.ppf(1 - alpha, models, models * (seeds - 1))
    return float(out.any(-1).mean()), float(out[:, 0].mean())

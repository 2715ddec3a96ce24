"""Statistics over seeds: summaries with Student-t intervals, and which models are tied with the best.

Welch's t-test compares models over seeds; with one seed per model, McNemar's exact test on the paired
test-set predictions says whether two single runs differ by more than noise. Tied seeds (zero variance)
are handled explicitly, so no scipy warning reaches the terminal.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from scipy import stats

ALPHA = 0.05


def describe(values: Sequence[float]) -> dict[str, Any]:
    """mean, sample std, 95% CI (Student t; None below two values), n, min, max and the raw values.

    Identical values (every seed tied) give std 0 and the CI [mean, mean] exactly, not float residue.
    """
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
    """Two-sided Welch t-test p-value over seeds (each side at least two values).

    Zero variance is decided here, not left to scipy (which warns about precision loss and may give nan):
    both sides constant means no noise at all, so equal constants give 1 and different ones 0; one side
    constant is Welch's test with that side's variance 0 (t on the other side's n - 1 degrees of freedom).
    """
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


def best_group(models: list[dict[str, Any]], correct: dict[str, np.ndarray] | None = None) -> None:
    """Mark each model dict with `same_as_best` and `p_value` against the best mean test accuracy.

    `models` carry `name` and `test_accuracy` (from `describe`); `correct` maps a model name to its
    per-example correctness on the test set (one seed), used when a side has a single seed.
    """
    ranked = [m for m in models if m["test_accuracy"]["n"] > 0]
    for m in models:
        m["same_as_best"], m["p_value"], m["test"] = False, None, None
    if not ranked:
        return
    best = max(ranked, key=lambda m: m["test_accuracy"]["mean"])
    for m in ranked:
        if m is best:
            m["same_as_best"], m["p_value"], m["test"] = True, 1.0, "best"
            continue
        a, b = best["test_accuracy"]["values"], m["test_accuracy"]["values"]
        if len(a) > 1 and len(b) > 1:
            p, test = welch_p(a, b), "welch"
        elif correct and best["name"] in correct and m["name"] in correct:
            p, test = mcnemar_p(correct[best["name"]], correct[m["name"]]), "mcnemar"
        else:
            continue
        m["same_as_best"], m["p_value"], m["test"] = p >= ALPHA, p, test

"""Statistics over seeds: summaries with Student-t intervals, and which models are tied with the best.

Welch's t-test compares models over seeds; with one seed per model, McNemar's exact test on the paired
test-set predictions says whether two single runs differ by more than noise.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from scipy import stats

ALPHA = 0.05


def describe(values: Sequence[float]) -> dict[str, Any]:
    """mean, sample std, 95% CI (Student t; None below two values), n, min, max and the raw values."""
    v = [float(x) for x in values]
    n = len(v)
    if n == 0:
        return {"mean": None, "std": None, "ci95": None, "n": 0, "min": None, "max": None, "values": []}
    mean = float(np.mean(v))
    std = float(np.std(v, ddof=1)) if n > 1 else 0.0
    ci = None
    if n > 1:
        half = float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n)
        ci = [mean - half, mean + half]
    return {"mean": mean, "std": std, "ci95": ci, "n": n, "min": min(v), "max": max(v), "values": v}


def welch_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided Welch t-test p-value; identical constant samples give 1, different constants 0."""
    if np.std(a) == 0 and np.std(b) == 0:
        return 1.0 if np.mean(a) == np.mean(b) else 0.0
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


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

"""Design spaces compared as populations of models (Radosavovic et al., NDS 2019 and RegNet 2020;
docs/design-spaces.md): error EDFs, plain (KS test) and complexity-normalised (weighted KS, permutation p), all
p-values Holm-adjusted together, P(A lower), best-of-m, KS power and good ranges. The randomness is seeded, so a
report is the same each time it is written.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Sequence

import numpy as np
from scipy import stats

ALPHA = 0.05
MIN_MODELS = 5  # per population: an EDF of fewer models says nothing
MAX_LEVELS = 8  # a factor with more levels is compared by its good range, not level by level
N_PERM = 999  # permutations per batch
MAX_PERM = 19_980
SEQ_HITS = 10
N_BOOT = 500
N_POWER = 100
POWER_TARGET = 0.8
KS_C = math.sqrt(-0.5 * math.log(ALPHA / 2))  # the asymptotic two-sample KS critical value at ALPHA: 1.358


def n_bins(n_small: int) -> int:
    """Complexity bins for two populations, the smaller of `n_small` models: about 8 models a bin, 2 to 10."""
    return int(np.clip(n_small // 8, 2, 10))


def bin_edges(ca: np.ndarray, cb: np.ndarray, bins: int) -> np.ndarray:
    """Bin edges in log complexity: `bins` bins of equal counts over the range both populations cover, and
    one bin on each side of it that only one population reaches (so it gets no weight)."""
    la, lb = _log(ca), _log(cb)
    lo, hi = max(la.min(), lb.min()), min(la.max(), lb.max())
    pooled = np.concatenate([la, lb])
    inner = pooled[(pooled >= lo) & (pooled <= hi)]
    if lo > hi or not len(inner):
        return np.array([lo, lo])  # no shared range: every model is in a bin of its own population
    return np.unique(np.concatenate([[lo], np.quantile(inner, np.linspace(0, 1, bins + 1)[1:-1]),
                                     [np.nextafter(hi, np.inf)]]))


def bin_index(complexity: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Each model's bin (0 .. len(edges)) under `bin_edges`."""
    return np.searchsorted(edges, _log(complexity), side="right")


def _log(complexity: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(np.asarray(complexity, dtype=float), 1.0))


def weight_table(labels: np.ndarray, bins: np.ndarray) -> np.ndarray:
    """[label, bin] -> weight: each population (label 0 and 1) gets the same mass in every bin both
    populate, summing to 1 per population; a bin only one population reaches gets 0 (NDS's normalisation)."""
    counts = np.zeros((2, bins.max() + 1))
    np.add.at(counts, (labels, bins), 1)
    shared = (counts > 0).all(axis=0)
    return np.where(shared, 1.0 / np.maximum(counts, 1), 0.0) / max(shared.sum(), 1)


def edf(errors: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The (weighted) EDF as steps: sorted distinct errors and F at each."""
    errors = np.asarray(errors, dtype=float)
    w = np.full(len(errors), 1 / len(errors)) if weights is None else np.asarray(weights, float) / np.sum(weights)
    xs, inverse = np.unique(errors, return_inverse=True)
    return xs, np.cumsum(np.bincount(inverse, w, len(xs)))


def dkw_halfwidth(n_eff: float, alpha: float = ALPHA) -> float:
    """The Dvoretzky-Kiefer-Wolfowitz band: F lies within this of the EDF everywhere, with prob. 1 - alpha."""
    return math.sqrt(math.log(2 / alpha) / (2 * n_eff))


def n_effective(weights: np.ndarray) -> float:
    """Kish's effective sample size of a weighting: n for equal weights, less the more unequal they are."""
    w = np.asarray(weights, dtype=float)
    return float(w.sum() ** 2 / np.sum(w ** 2)) if w.sum() > 0 else 0.0


def _ks_matrix(errors: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """sup |F0 - F1| for each row of `labels` / `weights` (rows: permutations), the errors in fixed order."""
    order = np.argsort(errors, kind="stable")
    x = errors[order]
    last = np.append(x[1:] != x[:-1], True)  # compare F only after every tie at a value
    lab, w = labels[:, order], weights[:, order]
    w0 = np.where(lab == 0, w, 0.0)
    w1 = np.where(lab == 1, w, 0.0)
    diff = np.cumsum(w0, axis=1) / w0.sum(1, keepdims=True) - np.cumsum(w1, axis=1) / w1.sum(1, keepdims=True)
    return np.abs(diff[:, last]).max(axis=1)


def weighted_ks(a: np.ndarray, b: np.ndarray, ca: np.ndarray, cb: np.ndarray, bins: int,
                rng: np.random.Generator, n_perm: int = N_PERM, max_perm: int = MAX_PERM) -> dict[str, Any]:
    """The complexity-normalised comparison: weighted KS statistic and its permutation p-value. Permuting labels
    within each bin keeps the weights, so under "no difference at equal complexity" the p-value is exact."""
    errors = np.concatenate([a, b]).astype(float)
    labels = np.repeat([0, 1], [len(a), len(b)])
    where = bin_index(np.concatenate([ca, cb]), bin_edges(ca, cb, bins))
    table = weight_table(labels, where)
    w = table[labels, where]
    kept = [int((w[labels == g] > 0).sum()) for g in (0, 1)]
    out = {"bins": int(where.max() + 1), "shared_bins": int(len({*where[(labels == 0) & (w > 0)]})),
           "n_weighted": kept, "n_effective": [n_effective(w[labels == g]) for g in (0, 1)]}
    if min(kept) < MIN_MODELS:
        return {**out, "ks": None, "p": None, "note": "too few models of equal complexity in both populations"}
    d = float(_ks_matrix(errors, labels[None], w[None])[0])
    # Besag & Clifford's sequential Monte Carlo p-value: batches of permutations until `SEQ_HITS` reach d
    # (p = hits / permutations) or MAX_PERM is spent (p = (1 + hits) / (1 + permutations)); so a clear
    # difference gets a p-value small enough to survive Holm over many comparisons, at a cost only there.
    hits = total = 0
    while total < max_perm and hits < SEQ_HITS:
        perms = np.tile(labels, (n_perm, 1))
        for b_ in np.unique(where):
            cols = np.flatnonzero(where == b_)
            perms[:, cols] = rng.permuted(perms[:, cols], axis=1)
        # Each bin keeps its counts per label, so the weight table holds and a model's weight follows its label.
        null = _ks_matrix(errors, perms, table[perms, where[None]])
        running = hits + np.cumsum(null >= d - 1e-12)
        if running[-1] >= SEQ_HITS:  # stop at the permutation that gave the last hit needed
            hits, total = SEQ_HITS, total + int(np.argmax(running >= SEQ_HITS)) + 1
        else:
            hits, total = int(running[-1]), total + n_perm
    p = hits / total if hits >= SEQ_HITS else (1 + hits) / (1 + total)
    return {**out, "ks": d, "p": p, "note": None, "weights": [w[labels == 0], w[labels == 1]]}


def p_lower(a: np.ndarray, b: np.ndarray, wa: np.ndarray | None = None, wb: np.ndarray | None = None) -> float:
    """P(a random model of A has lower error than a random model of B), ties counted half (the AUC)."""
    return float(_p_lower_rows(a[None], b[None], None if wa is None else wa[None], None if wb is None else wb[None])[0])


def _p_lower_rows(a: np.ndarray, b: np.ndarray, wa: np.ndarray | None, wb: np.ndarray | None) -> np.ndarray:
    """`p_lower` of each row (a bootstrap resample); weights None means equal weights."""
    wa = np.ones(a.shape) if wa is None else wa
    wb = np.ones(b.shape) if wb is None else wb
    wa, wb = wa / wa.sum(1, keepdims=True), wb / wb.sum(1, keepdims=True)
    pooled = np.concatenate([a, b], axis=1)
    order = np.argsort(pooled, axis=1, kind="stable")
    x = np.take_along_axis(pooled, order, 1)
    zeros = np.zeros(a.shape[:1] + (1,))
    wa_x = np.take_along_axis(np.concatenate([wa, np.zeros(b.shape)], axis=1), order, 1)
    wb_x = np.take_along_axis(np.concatenate([np.zeros(a.shape), wb], axis=1), order, 1)
    cum = np.concatenate([zeros, np.cumsum(wa_x, axis=1)], axis=1)
    # A's weight strictly below each value and at or below it: cum at the first and past the last place
    # of the value's tie group.
    pos = np.arange(x.shape[1])
    new = np.concatenate([np.ones_like(zeros, bool), x[:, 1:] != x[:, :-1]], axis=1)
    first = np.maximum.accumulate(np.where(new, pos, 0), axis=1)
    end = np.concatenate([new[:, 1:], np.ones_like(zeros, bool)], axis=1)
    last = np.minimum.accumulate(np.where(end, pos, x.shape[1])[:, ::-1], axis=1)[:, ::-1] + 1
    mid = (np.take_along_axis(cum, first, 1) + np.take_along_axis(cum, last, 1)) / 2
    return (wb_x * mid).sum(axis=1)


def p_lower_ci(a: np.ndarray, b: np.ndarray, rng: np.random.Generator, ca: np.ndarray | None = None,
               cb: np.ndarray | None = None, bins: int = 0, n_boot: int = N_BOOT) -> list[float]:
    """Percentile bootstrap 95% CI of `p_lower`, resampling each population; with complexities, each
    resample is weighted afresh over the observed bins' edges."""
    ia, ib = rng.integers(0, len(a), (n_boot, len(a))), rng.integers(0, len(b), (n_boot, len(b)))
    wa = wb = None
    if ca is not None:
        edges = bin_edges(ca, cb, bins)
        where = np.concatenate([bin_index(ca, edges)[ia], bin_index(cb, edges)[ib]], axis=1)
        labels = np.repeat([0, 1], [len(a), len(b)])
        counts = np.zeros((n_boot, 2, len(edges) + 1))
        np.add.at(counts, (np.arange(n_boot)[:, None], labels[None], where), 1)
        shared = (counts > 0).all(axis=1, keepdims=True)
        table = np.where(shared, 1 / np.maximum(counts, 1), 0.0)
        w = table[np.arange(n_boot)[:, None], labels[None], where]
        ok = shared.any(axis=(1, 2))  # a resample with no bin in common has no normalised comparison
        wa, wb = w[ok, :len(a)], w[ok, len(a):]
        ia, ib = ia[ok], ib[ok]
    if not len(ia):
        return [math.nan, math.nan]
    vals = _p_lower_rows(a[ia], b[ib], wa, wb)
    return [float(v) for v in np.percentile(vals, [2.5, 97.5])]


def weighted_median(x: np.ndarray, w: np.ndarray) -> float:
    """The smallest x at which the weighted EDF reaches 1/2."""
    xs, f = edf(x, w)
    return float(xs[np.searchsorted(f, 0.5 - 1e-12)])


def ks_test(a: np.ndarray, b: np.ndarray) -> Any:
    """scipy's two-sample KS test; where its exact p-value fails it takes the asymptotic one, silently."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "ks_2samp: Exact calculation unsuccessful", RuntimeWarning)
        return stats.ks_2samp(a, b)


def ks_power(a: np.ndarray, b: np.ndarray, sizes: Sequence[int], rng: np.random.Generator,
             reps: int = N_POWER) -> list[float]:
    """The share of resamples of n models a side whose KS statistic passes the asymptotic critical value at
    ALPHA. Sampling noise adds to the observed D, so B is mixed with A to shrink it by lambda = D_true / D_obs,
    with D_true^2 = D_obs^2 - E[D^2 | no difference] (Kolmogorov: pi^2 / 12n)."""
    d = ks_test(a, b).statistic
    n_eff = len(a) * len(b) / (len(a) + len(b))
    lam = math.sqrt(max(0.0, 1 - math.pi ** 2 / 12 / n_eff / d ** 2)) if d > 0 else 0.0
    out = []
    for n in sizes:
        ia, ib = rng.integers(0, len(a), (reps, n)), rng.integers(0, len(b), (reps, n))
        from_a = rng.random((reps, n)) >= lam
        draws_b = np.where(from_a, a[rng.integers(0, len(a), (reps, n))], b[ib])
        errors = np.concatenate([a[ia], draws_b], axis=1)
        labels = np.tile(np.repeat([0, 1], n), (reps, 1))
        out.append(float(np.mean(_ks_matrix_rows(errors, labels) > KS_C * math.sqrt(2 / n))))
    return out


def _ks_matrix_rows(errors: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Unweighted KS statistic per row, each row with its own errors."""
    order = np.argsort(errors, axis=1, kind="stable")
    x = np.take_along_axis(errors, order, 1)
    lab = np.take_along_axis(labels, order, 1)
    n0, n1 = (lab == 0).sum(1, keepdims=True), (lab == 1).sum(1, keepdims=True)
    diff = np.cumsum(lab == 0, axis=1) / n0 - np.cumsum(lab == 1, axis=1) / n1
    last = np.concatenate([x[:, 1:] != x[:, :-1], np.ones((len(x), 1), bool)], axis=1)
    return np.where(last, np.abs(diff), 0.0).max(axis=1)


def power_sizes(n_max: int) -> list[int]:
    """Models per population at which the power is estimated: 5 up to four times the larger population."""
    grid = [5, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 1500, 2000]
    return [n for n in grid if n <= max(20, 4 * n_max)]


def best_of_m(errors: np.ndarray, ms: Sequence[int]) -> np.ndarray:
    """E[min error of m models drawn at random (with replacement) from the population], for each m."""
    x = np.sort(np.asarray(errors, dtype=float))
    surv = 1 - np.arange(len(x)) / len(x)  # P(a draw is at or above the k-th smallest)
    nxt = np.append(surv[1:], 0.0)
    m = np.asarray(ms, dtype=float)[:, None]
    return ((surv ** m - nxt ** m) * x).sum(axis=1)


def best_of_m_curve(errors: np.ndarray, rng: np.random.Generator, n_boot: int = 200) -> dict[str, Any]:
    """NDS's random-search efficiency: the expected best-of-m error for m = 1 .. n, with a bootstrap band."""
    n = len(errors)
    ms = sorted({int(round(v)) for v in np.geomspace(1, n, min(n, 24))})
    boot = np.array([best_of_m(errors[rng.integers(0, n, n)], ms) for _ in range(n_boot)])
    lo, hi = np.percentile(boot, [2.5, 97.5], axis=0)
    return {"m": ms, "mean": best_of_m(errors, ms).tolist(), "ci95": [lo.tolist(), hi.tolist()]}


def good_range(values: np.ndarray, errors: np.ndarray, rng: np.random.Generator, n_boot: int = N_BOOT
               ) -> dict[str, Any]:
    """RegNet's good range of a numeric factor: draw 25% of the models with replacement, keep the best one's
    value; the 2.5-97.5 percentiles of those values over many draws. Beside it: the best 25%'s own range."""
    n, k = len(errors), max(1, math.ceil(len(errors) / 4))
    order = np.argsort(errors, kind="stable")
    draws = rng.integers(0, n, (n_boot, k))
    best = values[draws[np.arange(n_boot), np.argmin(errors[draws], axis=1)]]
    top = values[order[:k]]
    lo, hi = np.percentile(best, [2.5, 97.5])
    return {"best": float(values[order[0]]), "best_quarter": [float(top.min()), float(top.max())],
            "good_range": [float(lo), float(hi)], "range": [float(values.min()), float(values.max())], "n_best": k}


def compare(a: np.ndarray, b: np.ndarray, ca: np.ndarray, cb: np.ndarray, normalize: str,
            rng: np.random.Generator) -> dict[str, Any]:
    """Both comparisons of populations A and B (errors `a`, `b`; complexities `ca`, `cb`) before Holm."""
    ks = ks_test(a, b)
    sizes = power_sizes(max(len(a), len(b)))
    power = ks_power(a, b, sizes, rng)
    needed = next((n for n, p in zip(sizes, power) if p >= POWER_TARGET), None)
    plain = {"ks": float(ks.statistic), "p": float(ks.pvalue), "p_lower": p_lower(a, b),
             "p_lower_ci": p_lower_ci(a, b, rng), "median": [float(np.median(a)), float(np.median(b))],
             "min": [float(a.min()), float(b.min())], "power": {"n": sizes, "power": power}, "n_needed": needed}
    if normalize == "none":
        return {"plain": plain, "normalized": None}
    bins = n_bins(min(len(a), len(b)))
    norm = weighted_ks(a, b, ca, cb, bins, rng)
    weights = norm.pop("weights", None)
    if weights is not None:
        norm.update(p_lower=p_lower(a, b, *weights), p_lower_ci=p_lower_ci(a, b, rng, ca, cb, bins),
                    median=[weighted_median(a, weights[0]), weighted_median(b, weights[1])])
    return {"plain": plain, "normalized": {"by": normalize, **norm}}


def holm(comparisons: list[dict[str, Any]]) -> None:
    """Holm-adjust every p-value of the report together (plain and normalised), in place, and say which
    comparisons are called different at ALPHA."""
    tests = [c[k] for c in comparisons for k in ("plain", "normalized") if c[k] and c[k].get("p") is not None]
    if not tests:
        return
    from statsmodels.stats.multitest import multipletests

    reject, adjusted, _, _ = multipletests([t["p"] for t in tests], alpha=ALPHA, method="holm")
    for t, r, p in zip(tests, reject, adjusted):
        t.update(p_holm=float(p), different=bool(r))


def design_spaces(models: list[dict[str, Any]], metric: str, normalize: str) -> dict[str, Any] | None:
    """The report's `design_spaces`: populations (spaces, and factor levels within one), their comparisons,
    best-of-m curves and good ranges; None when no population has MIN_MODELS models with a finished seed."""
    from convstudy.report.factors import _key, level_text

    done = [m for m in models if m[metric]["mean"] is not None]
    by_space: dict[str, list[dict[str, Any]]] = {}
    for m in done:
        if m.get("space") or m.get("factors"):
            by_space.setdefault(m.get("space") or "", []).append(m)
    groups: list[dict[str, Any]] = []
    comparisons: list[dict[str, Any]] = []
    cost = "flops" if normalize == "flops" else "params"

    def group(members: list[dict[str, Any]], label: str, **where: Any) -> int:
        errors = np.array([1 - m[metric]["mean"] for m in members])
        best = int(np.argmin(errors))
        groups.append({"label": label, **where, "n": len(members), "models": [m["name"] for m in members],
                       "errors": errors.tolist(), "complexity": [float(m[cost]) for m in members],
                       "median": float(np.median(errors)), "min": float(errors[best]),
                       "best_model": members[best]["name"], "dkw": dkw_halfwidth(len(members))})
        return len(groups) - 1

    spaces = {s: group(ms, f"space {s}", space=s, factor=None, level=None)
              for s, ms in by_space.items() if s and len(ms) >= MIN_MODELS}
    names = list(spaces)
    pairs = [("spaces", spaces[x], spaces[y], None, None) for i, x in enumerate(names) for y in names[i + 1:]]
    for s, ms in by_space.items():
        for f in dict.fromkeys(k for m in ms for k in m["factors"]):
            levels = list({_key(m["factors"][f]): m["factors"][f] for m in ms if f in m["factors"]}.values())
            members = [[m for m in ms if f in m["factors"] and _key(m["factors"][f]) == _key(v)] for v in levels]
            others = [(v, mm) for v, mm in zip(levels[1:], members[1:]) if len(mm) >= MIN_MODELS]
            if not 2 <= len(levels) <= MAX_LEVELS or len(members[0]) < MIN_MODELS or not others:
                continue
            where = f"{s}: " if s and len(spaces) > 1 else ""
            ref = group(members[0], f"{where}{f} = {level_text(levels[0])}", space=s or None, factor=f,
                        level=levels[0])
            pairs += [("levels", group(mm, f"{where}{f} = {level_text(v)}", space=s or None, factor=f, level=v),
                       ref, s or None, f) for v, mm in others]
    for i, (kind, a, b, s, f) in enumerate(pairs):
        ga, gb = groups[a], groups[b]
        result = compare(np.array(ga["errors"]), np.array(gb["errors"]), np.array(ga["complexity"]),
                         np.array(gb["complexity"]), normalize, np.random.default_rng(i))
        comparisons.append({"kind": kind, "a": a, "b": b, "space": s, "factor": f, **result})
    holm(comparisons)
    for s, gi in spaces.items():
        g, ms = groups[gi], by_space[s]
        rng = np.random.default_rng(len(pairs) + gi)
        errors = np.array(g["errors"])
        g["best_of_m"] = best_of_m_curve(errors, rng)
        g["good_ranges"] = []
        for f in dict.fromkeys(k for m in ms for k in m["factors"]):
            vals = [m["factors"].get(f) for m in ms]
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals) and len(set(vals)) > 1:
                g["good_ranges"].append({"factor": f, **good_range(np.array(vals, dtype=float), errors, rng)})
    if not groups:
        return None
    return {"metric": metric, "normalize": normalize, "alpha": ALPHA, "min_models": MIN_MODELS,
            "groups": groups, "comparisons": comparisons}

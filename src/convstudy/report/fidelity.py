"""Rank fidelity: does an early epoch rank the models like the final one? Every shortcut (fewer epochs, pruning)
bets it does; Kendall's tau against the final epoch, with a bootstrap CI over models and their seeds, checks it."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
from scipy import stats

STABLE_TAU = 0.8  # from the first epoch whose tau, and every later epoch's, reaches this: "stable"
LOW_TAU = 0.5  # an epoch (the first, or a pruning epoch) below this is a warning in the report
BOOTSTRAP = 1000
PAIRS_BUDGET = 10_000_000  # resamples x models^2: well under a second for 300 models on 12 epochs
CHUNK_PAIRS = 4_000_000  # resamples x models^2 held in memory at once (a few tens of MB)


def _signs(x: np.ndarray) -> np.ndarray:
    """sign(x_i - x_j) over the last axis as int8: the pair matrix Kendall's tau counts over."""
    a, b = x[..., :, None], x[..., None, :]
    return (a > b).astype(np.int8) - (a < b).astype(np.int8)


def _tau_b(sx: np.ndarray, sy: np.ndarray) -> np.ndarray:
    sum_ = dict(axis=(-1, -2), dtype=np.int64)
    den = np.sqrt(np.abs(sx).sum(**sum_) * np.abs(sy).sum(**sum_).astype(float))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (sx * sy).sum(**sum_) / np.where(den > 0, den, 1), np.nan)


def kendall_tau_b(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of x and y along the last axis, for many samples at once (nan where a side is constant)."""
    return _tau_b(_signs(x), _signs(y))


def _boot_means(curves: Sequence[np.ndarray], n_boot: int, rng: np.random.Generator,
                picks: np.ndarray | None = None) -> np.ndarray:
    """(n_boot, models, epochs) means over seeds, models drawn with replacement (or as `picks`, (n_boot, models),
    says: two sides of one comparison draw the same models) and each one's seeds too."""
    n_seeds = np.array([len(c) for c in curves])
    padded = np.full((len(curves), n_seeds.max(), curves[0].shape[1]), np.nan)
    for i, c in enumerate(curves):
        padded[i, :len(c)] = c
    out = np.empty((n_boot, len(curves), padded.shape[2]))
    for lo in range(0, n_boot, 100):  # chunks bound the memory of the (B, models, seeds, epochs) gather
        b = min(100, n_boot - lo)
        pick = rng.integers(0, len(curves), (b, len(curves))) if picks is None else picks[lo:lo + b]
        s = n_seeds[pick]
        idx = (rng.random((b, len(curves), padded.shape[1])) * s[..., None]).astype(int)
        # A model with s seeds averages the first s of its draws: a resample of s seeds from s.
        keep = np.arange(padded.shape[1]) < s[..., None]
        vals = padded[pick[..., None], idx]
        out[lo:lo + b] = (vals * keep[..., None]).sum(2) / s[..., None]
    return out


def rank_agreement(curves: Mapping[str, np.ndarray], epochs: Sequence[int], n_boot: int = BOOTSTRAP,
                   seed: int = 0) -> list[dict[str, Any]]:
    """Per epoch in `epochs` (1-based): Kendall's tau of the models' mean then against at the last epoch, its 95%
    bootstrap CI, models and seeds; `curves`: model -> (seeds, epochs), every seed to the same last epoch."""
    names = list(curves)
    arr = [np.asarray(curves[k], dtype=float) for k in names]
    means = np.stack([a.mean(0) for a in arr])
    # tau-b costs models^2 per resample: hundreds of models get fewer resamples (at least 100), in chunks.
    n_boot = int(np.clip(PAIRS_BUDGET // len(names) ** 2, min(100, n_boot), n_boot))
    boot = _boot_means(arr, n_boot, np.random.default_rng(seed))
    chunk = max(1, CHUNK_PAIRS // len(names) ** 2)
    taus = np.empty((len(epochs), n_boot))
    for i in range(0, n_boot, chunk):
        final = _signs(boot[i:i + chunk, :, -1])
        for j, e in enumerate(epochs):
            taus[j, i:i + chunk] = _tau_b(_signs(boot[i:i + chunk, :, e - 1]), final)
    out = []
    for j, e in enumerate(epochs):
        tau = stats.kendalltau(means[:, e - 1], means[:, -1]).statistic
        row = taus[j][~np.isnan(taus[j])]
        ci = [float(np.percentile(row, 2.5)), float(np.percentile(row, 97.5))] if len(row) else None
        out.append({"epoch": int(e), "tau": None if np.isnan(tau) else float(tau), "ci95": ci,
                    "models": len(names), "seeds": int(sum(len(a) for a in arr))})
    return out


def _fmt(row: dict[str, Any]) -> str:
    ci = row["ci95"]
    if row["tau"] is None:  # every model tied at that epoch (or at the last): no ranking to compare
        return "tau undefined: the models tie"
    return f"tau {row['tau']:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def rank_stability(curves: Mapping[str, np.ndarray], n_boot: int = BOOTSTRAP, seed: int = 0) -> dict[str, Any] | None:
    """Each earlier epoch's agreement with the final ranking, the epoch it is stable from, and warnings in
    plain words; None for fewer than 3 models or a single epoch, where a ranking says nothing."""
    if len(curves) < 3:
        return None
    last = int(np.asarray(next(iter(curves.values()))).shape[1])
    if last < 2:
        return None
    rows = rank_agreement(curves, list(range(1, last)), n_boot, seed)
    stable = last  # the first epoch from which every epoch's tau reaches STABLE_TAU
    for row in reversed(rows):
        if row["tau"] is None or row["tau"] < STABLE_TAU:
            break
        stable = row["epoch"]
    warnings = []
    first = rows[0]
    if first["tau"] is not None and first["tau"] < LOW_TAU:
        warnings.append(f"Epoch 1 ranks the models unlike epoch {last} ({_fmt(first)}): a shorter run or a pruner "
                        f"stopping at epoch 1 would pick different models here; the ranking settles from epoch {stable}.")
    if stable == last:
        warnings.append(f"The ranking was still changing at the last epoch (epoch {last - 1}: {_fmt(rows[-1])} against "
                        f"epoch {last}): more epochs may well change it again, so treat the final ranking as provisional.")
    return {"metric": "val_accuracy", "epochs": last, "rows": rows, "stable_from": stable,
            "stable_tau": STABLE_TAU, "warnings": warnings}


def pruning_fidelity(curves: Mapping[str, np.ndarray], prune_epochs: Sequence[int], n_boot: int = BOOTSTRAP,
                     seed: int = 0) -> dict[str, Any] | None:
    """How well each epoch a pruner stopped trials at ranks the models that ran to the end like their final
    epoch; None without pruning epochs before the last, or with fewer than 3 finished models."""
    if len(curves) < 3:
        return None
    last = int(np.asarray(next(iter(curves.values()))).shape[1])
    at = sorted({int(e) for e in prune_epochs if 1 <= e < last})
    if not at:
        return None
    rows = rank_agreement(curves, at, n_boot, seed)
    warnings = [f"Pruning stopped trials at epoch {r['epoch']}, where the trials that ran to the end rank unlike "
                f"their epoch {last} ({_fmt(r)}): the pruner may have stopped models that would have done well."
                for r in rows if r["tau"] is not None and r["tau"] < LOW_TAU]
    return {"epochs": last, "rows": rows, "warnings": warnings}


def fidelity_section(models: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The report's `fidelity` entry from its model dicts (their `trials` with per-epoch `epochs`): rank
    stability over the finished seeds trained to the most common last epoch, and the pruning check."""
    finished: dict[str, list[list[float]]] = {}
    prune_epochs = []
    for m in models:
        for t in m["trials"]:
            curve = [e["val_accuracy"] for e in t["epochs"]]
            if t["state"] == "complete" and curve and all(v is not None and np.isfinite(v) for v in curve):
                finished.setdefault(m["name"], []).append(curve)
            elif t["state"] == "pruned" and curve:
                prune_epochs.append(len(curve))
    lengths = [len(c) for cs in finished.values() for c in cs]
    if not lengths:
        return None
    last = max(set(lengths), key=lengths.count)
    curves = {k: np.array([c for c in cs if len(c) == last]) for k, cs in finished.items()}
    curves = {k: v for k, v in curves.items() if len(v)}
    stability = rank_stability(curves)
    pruning = pruning_fidelity(curves, prune_epochs) if prune_epochs else None
    if stability is None and pruning is None:
        return None
    left_out = sorted(set(finished) - set(curves))
    return {"rank_stability": stability, "pruning": pruning, "left_out": left_out,
            "warnings": (stability or {}).get("warnings", []) + (pruning or {}).get("warnings", [])}


def budget_label(epochs: int, train_limit: int | None) -> str:
    """A training budget in words: "2-epoch, 6,000-image" or "12-epoch, full-data"."""
    return f"{epochs}-epoch, " + (f"{train_limit:,}-image" if train_limit else "full-data")


def _estimate(point: float, boot: np.ndarray) -> dict[str, Any]:
    row = boot[~np.isnan(boot)]
    ci = [float(np.percentile(row, 2.5)), float(np.percentile(row, 97.5))] if len(row) else None
    return {"estimate": None if np.isnan(point) else float(point), "ci95": ci}


def _spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho along the last axis (Pearson's r of average ranks; nan where a side is constant)."""
    rx, ry = (stats.rankdata(v, axis=-1) for v in (x, y))
    rx, ry = rx - rx.mean(-1, keepdims=True), ry - ry.mean(-1, keepdims=True)
    den = np.sqrt((rx ** 2).sum(-1) * (ry ** 2).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (rx * ry).sum(-1) / np.where(den > 0, den, 1), np.nan)


def audit_statistics(cheap: Mapping[str, Sequence[float]], full: Mapping[str, Sequence[float]], top_k: int,
                     cheap_budget: str, full_budget: str, n_boot: int = BOOTSTRAP, seed: int = 0) -> dict[str, Any]:
    """Does the cheap budget rank `cheap`'s models like the full one? Kendall's tau and Spearman's rho with bootstrap
    CIs, the top-`top_k` overlap and the regret of picking the cheap winner (docs/semantics.md, fidelity audit)."""
    names = [m for m in cheap if len(cheap[m]) and len(full.get(m, ()))]
    c = [np.asarray(cheap[m], dtype=float)[:, None] for m in names]  # (seeds, 1): one "epoch" per side
    f = [np.asarray(full[m], dtype=float)[:, None] for m in names]
    cm, fm = np.array([v.mean() for v in c]), np.array([v.mean() for v in f])
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(names), (n_boot, len(names)))
    bc, bf = (_boot_means(v, n_boot, rng, picks)[..., 0] for v in (c, f))
    # The regret resamples seeds only: a resample without the cheap winner would answer another question.
    every = np.broadcast_to(np.arange(len(names)), (n_boot, len(names)))
    sc, sf = (_boot_means(v, n_boot, rng, every)[..., 0] for v in (c, f))
    regret = sf.max(1) - sf[np.arange(n_boot), sc.argmax(1)]
    order_c, order_f = list(np.argsort(-cm, kind="stable")), list(np.argsort(-fm, kind="stable"))
    k = min(top_k, len(names))
    top_c, top_f = [names[i] for i in order_c[:k]], [names[i] for i in order_f[:k]]
    models = [{"name": m, "cheap": float(cm[i]), "full": float(fm[i]), "cheap_rank": order_c.index(i) + 1,
               "full_rank": order_f.index(i) + 1, "cheap_seeds": len(c[i]), "full_seeds": len(f[i])}
              for i, m in enumerate(names)]
    out = {"cheap_budget": cheap_budget, "full_budget": full_budget,
           "models": sorted(models, key=lambda r: r["cheap_rank"]),
           "kendall_tau": _estimate(stats.kendalltau(cm, fm).statistic, kendall_tau_b(bc, bf)),
           "spearman_rho": _estimate(stats.spearmanr(cm, fm).statistic, _spearman(bc, bf)),
           "top_k": {"k": k, "overlap": len(set(top_c) & set(top_f)), "cheap": top_c, "full": top_f},
           "regret": {**_estimate(float(fm.max() - fm[order_c[0]]), regret), "cheap_winner": names[order_c[0]],
                      "full_winner": names[order_f[0]]}, "bootstrap": n_boot}
    out["verdict"] = audit_verdict(out)
    return out


def audit_verdict(audit: Mapping[str, Any]) -> str:
    """The audit in one plain sentence: do the rankings agree (tau, CI), and what choosing cheaply cost (pp)."""
    cheap, full = audit["cheap_budget"], audit["full_budget"]
    tau, regret = audit["kendall_tau"], audit["regret"]
    t = tau["estimate"]
    verb = ("cannot be compared with" if t is None else "agree with" if t >= STABLE_TAU
            else "roughly agree with" if t >= LOW_TAU else "do not agree with")
    ci = f" [{tau['ci95'][0]:.2f}, {tau['ci95'][1]:.2f}]" if tau["ci95"] else ""
    lo, hi = regret["ci95"] or (regret["estimate"], regret["estimate"])
    cost = (f"choosing at {cheap} cost {100 * regret['estimate']:.2f} pp [{100 * lo:.2f}, {100 * hi:.2f}] "
            f"({regret['cheap_winner']} instead of {regret['full_winner']})"
            if regret["cheap_winner"] != regret["full_winner"] else
            f"choosing at {cheap} cost nothing here ({regret['cheap_winner']} wins both; 95% CI up to {100 * hi:.2f} pp "
            f"over seed resamples)")
    top = audit["top_k"]
    return (f"{cheap} rankings {verb} {full} rankings: tau {'–' if t is None else f'{t:.2f}'}{ci}; {cost}; "
            f"{top['overlap']} of the top {top['k']} agree.")


def racing_evidence(report: Mapping[str, Any]) -> str:
    """The sentence naming what a raced study's decisions rest on: its budget and how settled its ranking was."""
    s = report["study"]
    head = f"Racing decided on the {budget_label(s['epochs'], s.get('train_limit'))} ranking (each seed's last epoch)"
    stab = (report.get("fidelity") or {}).get("rank_stability")
    if not stab:
        return head + ("; with one epoch or under 3 finished models there is no rank-stability evidence (`convstudy audit` checks it "
                       "against a longer run).")
    rows, last = stab["rows"], stab["epochs"]
    if stab["stable_from"] < last:
        row = next(r for r in rows if r["epoch"] == stab["stable_from"])
        return head + f"; rank stability: from epoch {row['epoch']} on it agrees with epoch {last}'s ({_fmt(row)})."
    return head + (f"; rank stability: the ranking was still changing at the last epoch (epoch {rows[-1]['epoch']} "
                   f"against {last}: {_fmt(rows[-1])}), so more epochs may undo what racing decided.")


def pruning_evidence(fidelity: Mapping[str, Any] | None) -> str:
    """The sentence naming what a search's pruning rests on: how its pruning epochs rank the finished trials."""
    part = (fidelity or {}).get("pruning")
    if not part:
        return "Too few trials ran to the end (3 needed) to check that the pruning epochs rank like the last one."
    n = part["rows"][0]["models"]
    at = "; ".join(f"epoch {r['epoch']}: {_fmt(r)}" for r in part["rows"])
    return (f"Pruning rests on early epochs ranking like the last: over the {n} models that ran to the end, "
            f"against epoch {part['epochs']}, {at}.")

"""The fair comparison of a `[fair]` study (issue 29): per level its nuisance trials, winner and retrained seeds;
the levels compared on the winners, beside the fixed recipe; best-of-k curves and boundary warnings.

The levels are compared on **test** accuracy: validation picked every level's nuisance values, so its numbers are
the maximum of k draws for the winner; the test set is what nothing selected on.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from convstudy.report.factors import fit_effects
from convstudy.report.stats import describe, places
from convstudy.spec import Study
from convstudy.spec.fair import level_dirname, scientific_levels
from convstudy.spec.fair import level_label as label
from convstudy.spec.space import parse_factor
from convstudy.store import State, StoreError, StudyStore

EDGE = 0.1  # the outer share of a range, each side, where a best value asks for a wider range
CLIMB_TOL = 0.001  # expected best rising by more than this (0.1 pp) over the budget's second half: still climbing
BOOTSTRAP = 1000
METRIC = "test_accuracy"


def best_of_k(values: Sequence[float], boot: int = BOOTSTRAP, seed: int = 0, tol: float = CLIMB_TOL
              ) -> dict[str, Any]:
    """Expected best of k trials drawn from `values`, k = 1..n, with a 95% bootstrap band, and whether it is still
    climbing at k = n (it rose by more than `tol` from k = ceil(n/2) to n). Dodge et al. 2019's expected maximum:
    with v sorted, E[max of k] = sum_i v_i ((i/n)^k - ((i-1)/n)^k)."""
    v = np.sort(np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float))
    n = len(v)
    if n == 0:
        return {"k": [], "expected": [], "low": [], "high": [], "climbing": None}
    ks = np.arange(1, n + 1)
    weights = (np.arange(1, n + 1)[None, :] / n) ** ks[:, None] - (np.arange(n)[None, :] / n) ** ks[:, None]
    expected = weights @ v
    draws = np.sort(np.random.default_rng(seed).choice(v, size=(boot, n), replace=True), axis=1)
    curves = draws @ weights.T
    low, high = np.percentile(curves, [2.5, 97.5], axis=0)
    climbing = bool(expected[-1] - expected[math.ceil(n / 2) - 1] > tol) if n > 1 else True
    return {"k": ks.tolist(), "expected": expected.tolist(), "low": low.tolist(), "high": high.tolist(),
            "climbing": climbing}


def at_boundary(value: Any, factor: Any, edge: float = EDGE) -> bool | None:
    """Whether `value` lies in the outer `edge` of a nuisance range on either side (on the log scale for a log
    range); None for listed levels, which have no inside and outside."""
    if not hasattr(factor, "low"):
        return None
    lo, hi, x = float(factor.low), float(factor.high), float(value)
    if factor.log:
        lo, hi, x = math.log(lo), math.log(hi), math.log(x)
    u = (x - lo) / (hi - lo)
    return u < edge or u > 1 - edge


def pick_winner(trials: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The complete trial best on validation accuracy (the first of equals, as search.best_configurations)."""
    done = [t for t in trials if t["state"] == State.COMPLETE.value and t["val_accuracy"] is not None]
    return max(done, key=lambda t: t["val_accuracy"]) if done else None


def verdict(values: Mapping[str, Sequence[float]]) -> dict[str, Any]:
    """The levels ranked by mean, the best and its best group (report.stats.places) of per-seed `values`."""
    found = places(values)
    ranked = sorted((k for k in values if len(values[k])), key=lambda k: -float(np.mean(values[k])))
    return {"order": ranked, "best": ranked[0] if ranked else None,
            "best_group": [k for k in ranked if found[k].same_as_best],
            "places": {k: {"same_as_best": p.same_as_best, "p_value": p.p_value, "test": p.test}
                       for k, p in found.items()}}


def verdict_change(fixed: Mapping[str, Any] | None, tuned: Mapping[str, Any]) -> str | None:
    """A plain sentence when the fixed recipe and the tuned comparison disagree on the best or its group."""
    if not fixed or not fixed["best"] or not tuned["best"]:
        return None
    if fixed["best"] == tuned["best"] and set(fixed["best_group"]) == set(tuned["best_group"]):
        return None
    return (f"The verdict changes with tuning: under the fixed recipe the best is {fixed['best']} (best group: "
            f"{', '.join(fixed['best_group'])}); with the nuisance hyperparameters tuned per level it is "
            f"{tuned['best']} (best group: {', '.join(tuned['best_group'])}).")


def fair_section(store: StudyStore) -> dict[str, Any]:
    """`report["fair"]`: roles, per level its trials, winner, retrained seeds, best-of-k and boundary flags, the
    tuned and fixed-recipe verdicts, and the warnings (a range to widen, a budget still climbing)."""
    study, spec = store.study, store.study.fair
    nuisance = {k: parse_factor(k, v) for k, v in spec.nuisance.items()}
    combos = scientific_levels(spec)
    levels = [_level(store, study, i, combo, nuisance) for i, combo in enumerate(combos)]
    tuned = verdict({lv["label"]: lv["test_accuracy"]["values"] for lv in levels})
    fixed = _fixed_recipe(store, list(combos[0]), combos)
    warnings = [f"{lv['label']}: the best {name} ({lv['best']['nuisance'][name]:.4g}) lies in the outer "
                f"{EDGE:.0%} of its range; widen the range" for lv in levels if lv["best"]
                for name, flag in lv["boundary"].items() if flag]
    warnings += [f"{lv['label']}: the expected best is still climbing at k = {len(lv['best_of_k']['k'])}; a larger "
                 "budget may find a better setting" for lv in levels if lv["best_of_k"]["climbing"]]
    return {
        "scientific": list(combos[0]), "nuisance": {k: spec.nuisance[k] for k in nuisance},
        "fixed": _fixed_settings(study), "sampler": spec.sampler, "pruner": spec.pruner, "seed": spec.seed,
        "budget": next((lv["budget"] for lv in levels if lv["budget"]), spec.trials.model_dump(exclude_none=True)),
        "metric": METRIC, "levels": levels,
        "tuned": {**tuned, "effects": _effects(levels)},
        "fixed_recipe": fixed, "verdict_change": verdict_change(fixed, tuned), "warnings": warnings,
    }


def _level(store: StudyStore, study: Study, index: int, combo: dict[str, Any], nuisance: dict[str, Any]
           ) -> dict[str, Any]:
    """One level's search directory read back: every trial on the first seed, the winner on all seeds."""
    where = level_dirname(index, combo)
    out = {"levels": combo, "label": label(combo), "dir": f"fair/{where}", "trials": [], "best": None,
           "boundary": {}, "seeds": [], "test_accuracy": describe([]), "best_of_k": best_of_k([]), "budget": None}
    try:
        sub = StudyStore.open_existing(store.out / "fair" / where)
    except StoreError:  # not started yet
        return out
    try:
        out["budget"] = sub.study.search.trials.model_dump(exclude_none=True)  # as run: --trials N included
        seed = study.seeds[0]
        recs = {(r.model, r.seed): r for r in sub.db.trials()}
        for m in sub.study.models:
            rec = recs.get((m.name, seed))
            if rec is None:
                continue
            last = sub.db.epochs(rec.id)
            out["trials"].append({"model": m.name, "state": rec.state.value, "epochs": rec.epochs_done,
                                  "nuisance": {k: m.factors[k] for k in nuisance},
                                  "val_accuracy": last[-1].val_accuracy if last and rec.state in (
                                      State.COMPLETE, State.PRUNED) else None})
        win = pick_winner(out["trials"])
        if win is not None:
            done = [r for (m, _), r in sorted(recs.items(), key=lambda kv: kv[0][1])
                    if m == win["model"] and r.state == State.COMPLETE and r.seed in study.seeds]
            out["best"] = {"model": win["model"], "nuisance": win["nuisance"], "val_accuracy": win["val_accuracy"]}
            out["boundary"] = {k: at_boundary(v, nuisance[k]) for k, v in win["nuisance"].items()
                               if at_boundary(v, nuisance[k]) is not None}
            out["seeds"] = [r.seed for r in done]
            out["test_accuracy"] = describe([r.test_accuracy for r in done])
        out["best_of_k"] = best_of_k([t["val_accuracy"] for t in out["trials"]])
    finally:
        sub.close()
    return out


def _fixed_recipe(store: StudyStore, names: list[str], combos: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The study's own models whose factors are exactly the scientific ones, compared like the tuned winners; None
    when the study runs no fixed recipe."""
    wanted = {label(c) for c in combos}
    models = {label({k: m.factors[k] for k in names}): m.name for m in store.study.models
              if set(m.factors) == set(names)}
    models = {k: v for k, v in models.items() if k in wanted}
    if not models:
        return None
    done: dict[str, list[float]] = {k: [] for k in models}
    by_name = {v: k for k, v in models.items()}
    for r in store.db.trials():
        if r.model in by_name and r.state == State.COMPLETE and r.seed in store.study.seeds:
            done[by_name[r.model]].append(r.test_accuracy)
    return {**verdict(done), "models": models, "test_accuracy": {k: describe(v) for k, v in done.items()}}


def _effects(levels: list[dict[str, Any]]) -> dict[str, Any]:
    """Factor effects (report.factors.fit_effects) of the scientific factors on the winners' per-seed test accuracy."""
    import pandas as pd

    names = list(levels[0]["levels"]) if levels else []
    rows = [{"value": v, **lv["levels"]} for lv in levels for v in lv["test_accuracy"]["values"]]
    return fit_effects(pd.DataFrame(rows, columns=["value", *names], dtype=object), names) if rows else {}


def _fixed_settings(study: Study) -> dict[str, Any]:
    """What the comparison holds constant: [train] overlaid with the template's train settings (the scientific and
    nuisance ones shown as their {placeholder})."""
    train = study.train.model_dump(mode="json", exclude_none=True)
    per_level = {"per_level": study.fair.per_level} if study.fair.per_level else {}
    return {**train, **study.fair.space.get("train", {}), **per_level,
            "layers": list(study.fair.space.get("layers", []))}

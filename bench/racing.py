"""Replay racing on a finished fixed-seed study: which trials would it have run, and same best group?

    python bench/racing.py OUT [--min 2] [--margin PP] [--json FILE]

Reads every finished trial's selection metric from OUT/study.db (read-only), replays
`convstudy.executors.racing.race` with the study's seeds as the maximum and racing's rule (`decider`:
the margin from `--margin`, or from the first round's seed noise), and compares the best group racing
would report (report.stats.places on the raced trials at the race's level) with the fixed-seed study's
(places on all trials at 0.05).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from convstudy.executors.racing import decider, default_margin, finished_values, race
from convstudy.report.stats import ALPHA, look_alpha, places
from convstudy.store import StudyStore


def best_group(values: dict[str, list[float]], alpha: float = ALPHA) -> set[str]:
    return {name for name, place in places(values, alpha=alpha).items() if place.same_as_best}


def replay(out: Path, first: int, margin_pp: float | None = None) -> dict:
    store = StudyStore.open_existing(out)
    try:
        study = store.study
        finished = finished_values(store, study.train.validation)
    finally:
        store.close()
    models = [m.name for m in study.models if any(k[0] == m.name for k in finished)]
    seeds = sorted({s for (_, s) in finished})
    missing = [(m, s) for m in models for s in seeds if (m, s) not in finished]
    if missing:
        raise SystemExit(f"{out}: not a finished fixed-seed study; {len(missing)} trials missing, e.g. {missing[0]}")
    margin = None if margin_pp is None else margin_pp / 100
    state = race(models, seeds, first, finished, decider(first, len(seeds), margin))
    assert state.done

    def values(alloc: dict[str, tuple[int, ...]]) -> dict[str, list[float]]:
        return {m: [v for s in alloc[m] if (v := finished[(m, s)]) is not None] for m in models}

    alpha = look_alpha(first, len(seeds))
    raced_values = values(state.seeds)
    full, raced = best_group(values({m: tuple(seeds) for m in models})), best_group(raced_values, alpha)
    if margin is None:
        margin = default_margin({m: v[:first] for m, v in raced_values.items()}, len(seeds), alpha)
    ran = sum(map(len, state.seeds.values()))
    return {"study": str(out), "models": len(models), "max_seeds": len(seeds), "min_seeds": first,
            "trials_fixed": len(models) * len(seeds), "trials_raced": ran,
            "share": ran / (len(models) * len(seeds)), "margin_pp": 100 * margin, "same_best_group": full == raced,
            "best_group_fixed": sorted(full), "best_group_raced": sorted(raced),
            "seeds_per_model": {m: len(s) for m, s in state.seeds.items()}, "stopped": state.why}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--min", type=int, default=2, help="seeds every model trains first (default 2)")
    ap.add_argument("--margin", type=float, help="race margin in pp (default: from the first round's seed noise)")
    ap.add_argument("--json", type=Path, help="also write the result here")
    args = ap.parse_args()
    result = replay(args.out, args.min, args.margin)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

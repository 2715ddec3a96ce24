"""Replay racing on a finished fixed-seed study: which trials would it have run, and same best group?

    python bench/racing.py OUT [--min 2] [--json FILE]

Reads every finished trial's selection metric from OUT/study.db (read-only), replays
`convstudy.executors.racing.race` with the study's seeds as the maximum, and compares the best
group racing would report (report.stats.places on the raced trials) with the one from all trials.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from convstudy.executors.racing import decide, finished_values, race
from convstudy.report.stats import places
from convstudy.store import StudyStore


def best_group(values: dict[str, list[float]]) -> set[str]:
    return {name for name, place in places(values).items() if place.same_as_best}


def replay(out: Path, first: int) -> dict:
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
    state = race(models, seeds, first, finished, decide)
    assert state.done

    def values(alloc: dict[str, tuple[int, ...]]) -> dict[str, list[float]]:
        return {m: [v for s in alloc[m] if (v := finished[(m, s)]) is not None] for m in models}

    full, raced = best_group(values({m: tuple(seeds) for m in models})), best_group(values(state.seeds))
    ran = sum(map(len, state.seeds.values()))
    return {"study": str(out), "models": len(models), "max_seeds": len(seeds), "min_seeds": first,
            "trials_fixed": len(models) * len(seeds), "trials_raced": ran,
            "share": ran / (len(models) * len(seeds)), "same_best_group": full == raced,
            "best_group_fixed": sorted(full), "best_group_raced": sorted(raced),
            "seeds_per_model": {m: len(s) for m, s in state.seeds.items()}, "stopped": state.why}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--min", type=int, default=2, help="seeds every model trains first (default 2)")
    ap.add_argument("--json", type=Path, help="also write the result here")
    args = ap.parse_args()
    result = replay(args.out, args.min)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

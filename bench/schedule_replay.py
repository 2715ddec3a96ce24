"""Replay a finished study's trial times on W workers: the study's order against the longest trials first.

    python bench/schedule_replay.py STUDY_DIR [--workers 2]

Each trial's time is what study.db recorded (finished_at - started_at, one attempt each). A free worker takes
the next trial in the given order, as `convstudy run` claims them; the makespan is when the last one ends.
With measured workers `convstudy run` now claims the models with the longest measured trial time first
(measure.parallel: `Parallelism.first`); this shows what that order is worth on real trial times.
"""

from __future__ import annotations

import argparse
import heapq
import sqlite3
from pathlib import Path


def makespan(durations: list[float], workers: int) -> float:
    """When the last of `durations`, taken in order by the first free of `workers`, ends."""
    free = [0.0] * workers
    for d in durations:
        heapq.heappush(free, heapq.heappop(free) + d)
    return max(free)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study_dir", type=Path)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    con = sqlite3.connect(f"file:{args.study_dir / 'study.db'}?mode=ro", uri=True)
    rows = con.execute("SELECT model, seed, finished_at - started_at FROM trials WHERE state = 'complete' "
                       "AND attempts = 1 ORDER BY position, seed").fetchall()
    times = [t for _, _, t in rows]
    for model, seed, t in rows:
        print(f"{model} seed {seed}: {t / 60:.1f} min")
    study, longest = makespan(times, args.workers), makespan(sorted(times, reverse=True), args.workers)
    print(f"{len(rows)} trials, {sum(times) / 60:.1f} min of trial time on {args.workers} workers: "
          f"study order {study / 60:.1f} min, longest first {longest / 60:.1f} min ({study / longest:.2f}x), "
          f"bound {max(max(times), sum(times) / args.workers) / 60:.1f} min")


if __name__ == "__main__":
    main()

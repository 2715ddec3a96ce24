"""Time the whole seed study end to end (process start, data loading, training, reports).

    python bench/seed_study.py --device cuda --seeds 5 --workers 4 --out /tmp/seed5 -- --data-dir DIR

Runs `convstudy run seed` in a fresh output directory as a subprocess, and prints one JSON line:
wall seconds, the settings, and each trial's test accuracy with per-model mean/std over seeds.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True, help="a fresh output directory (removed first)")
    ap.add_argument("extra", nargs="*", help="more `convstudy run` arguments, after --")
    args = ap.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    cmd = [sys.executable, "-m", "convstudy", "run", "seed", "--out", str(args.out), "--device", args.device,
           "--precision", args.precision, "--seeds", str(args.seeds), "--workers", str(args.workers), "--quiet",
           *args.extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
        return proc.returncode

    from convstudy.store import StudyDB

    db = StudyDB(args.out / "study.db")
    trials = [r for r in db.trials()]
    by_model: dict[str, list[float]] = {}
    for r in trials:
        by_model.setdefault(r.model, []).append(r.test_accuracy if r.test_accuracy is not None else float("nan"))
    summary = {m: {"mean": round(statistics.fmean(a), 5), "std": round(statistics.stdev(a), 5) if len(a) > 1 else 0.0,
                   "accuracies": [round(x, 5) for x in a]} for m, a in by_model.items()}
    print(json.dumps({"wall_s": round(wall, 1), "device": args.device, "precision": args.precision,
                      "seeds": args.seeds, "workers": args.workers, "trials": len(trials),
                      "states": sorted({r.state for r in trials}),
                      "train_seconds": round(sum(r.train_seconds or 0 for r in trials), 1), "models": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

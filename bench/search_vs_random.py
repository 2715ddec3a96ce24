"""Issue 18, acceptance 1: a 30-trial TPE search with successive halving against 30 random configurations.

    .venv/bin/python bench/search_vs_random.py --data-dir /work/shared/data/mnist [--work runs/search-bench]
                                               [--trials 30] [--epochs 4] [--train-limit 6000] [--confirm 3]
                                               [--reduction-factor R]

Both sample the same space of 216 configurations (kernel 3/5/7 x filters 8/16/32 x dense 32/64 x
dropout 0/0.25 x batch-norm on/off x Adam lr 3e-4/1e-3/3e-3) on real MNIST with `--train-limit` training
images, one seed per configuration, then `--confirm K` retrains each one's best K on seeds 0-2. Printed
(and written to WORK/summary.json): epochs the TPE search trained against the same trials unpruned
(trials x epochs; goal at most 50%), epochs the random sample trained, both bests (validation accuracy
of the search seed), and after confirming, the best group of all 2K confirmed models by mean final
validation accuracy (Welch's t-test against the best, alpha 0.05): is the search's best in it with the
random sample's best? Each study is an ordinary `convstudy run`, so a killed benchmark resumes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SPACE = """\
[search.space]
name = "cnn"
layers = ["conv({filters},{kernel},same)", {if = "bn", layer = "bn"}, "pool(2)", "conv({filters},3)", "pool(2)",
          "flatten", "dropout({dropout})", "dense({dense})", "dense(10)"]
train = {optimizer = {name = "adam", lr = "{lr}"}}

[search.space.factors]
kernel = [3, 5, 7]
filters = [8, 16, 32]
dense = [32, 64]
dropout = [0.0, 0.25]
bn = [true, false]
lr = [3e-4, 1e-3, 3e-3]
"""


def study_file(path: Path, name: str, sampler: str, pruner: str, trials: int, epochs: int,
               reduction_factor: int | None) -> Path:
    factor = f"reduction_factor = {reduction_factor}\n" if reduction_factor and pruner != "none" else ""
    path.write_text(f'name = "{name}"\ndataset = "mnist"\nseeds = 3\n\n[train]\nepochs = {epochs}\nbatch_size = 64\n'
                    f'validation = "holdout"\n\n[search]\nsampler = "{sampler}"\ntrials = {trials}\n'
                    f'pruner = "{pruner}"\n{factor}seed = 0\n\n' + SPACE)
    return path


def run(study: Path, out: Path, args: argparse.Namespace) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "convstudy", "run", str(study), "--out", str(out), "--quiet",
                    "--data-dir", args.data_dir, "--train-limit", str(args.train_limit), "--confirm",
                    str(args.confirm)], check=True)
    return time.perf_counter() - t0


def confirmed(report: dict) -> list[dict]:
    """The study's models trained on every seed: name, validation accuracies (final epoch) and test accuracies."""
    out = []
    for m in report["models"]:
        done = [t for t in m["trials"] if t["state"] == "complete"]
        if len(done) == len(report["study"]["seeds"]):
            out.append({"name": m["name"], "val": [t["epochs"][-1]["val_accuracy"] for t in done],
                        "test": [t["test_accuracy"] for t in done]})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--work", type=Path, default=Path("runs/search-bench"))
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--train-limit", type=int, default=6000)
    parser.add_argument("--confirm", type=int, default=3)
    parser.add_argument("--reduction-factor", type=int, default=None,
                        help="successive halving's reduction factor (default: Optuna's, 4)")
    args = parser.parse_args()
    from convstudy.report.stats import places

    args.work.mkdir(parents=True, exist_ok=True)
    runs = {"tpe+sh": ("tpe", "successive-halving"), "random": ("random", "none")}
    summary: dict = {"trials": args.trials, "epochs": args.epochs, "train_limit": args.train_limit,
                     "reduction_factor": args.reduction_factor, "studies": {}}  # None: Optuna's default
    pool = []
    for label, (sampler, pruner) in runs.items():
        name = f"bench-{sampler}"
        study = study_file(args.work / f"{name}.toml", name, sampler, pruner, args.trials, args.epochs,
                           args.reduction_factor)
        seconds = run(study, args.work / name, args)
        report = json.loads((args.work / name / "report.json").read_text())
        s = report["search"]
        best = max((t for t in s["trials"] if t["values"]), key=lambda t: t["values"][0])
        confirm = confirmed(report)
        pool += [{**c, "from": label} for c in confirm]
        summary["studies"][label] = {
            "epochs_trained": s["epochs_trained"], "epochs_unpruned": args.trials * args.epochs,
            "share": s["epochs_trained"] / (args.trials * args.epochs), "pruned": len(s["pruned"]),
            "best": best["model"], "best_val_accuracy": best["values"][0], "best_params": best["params"],
            "seconds": round(seconds), "importances": s["importances"],
            "confirmed": [{"name": c["name"], "val_mean": float(np.mean(c["val"])),
                           "test_mean": float(np.mean(c["test"]))} for c in confirm]}
    place = places({f"{c['from']}:{c['name']}": c["val"] for c in pool})
    group = [c for c in pool if place[f"{c['from']}:{c['name']}"].same_as_best]
    best_of = {label: max((c for c in pool if c["from"] == label), key=lambda c: np.mean(c["val"]))["name"]
               for label in runs}
    summary["best_group"] = [f"{c['from']}:{c['name']}" for c in group]
    summary["p_vs_best"] = {k: p.p_value for k, p in place.items()}
    summary["search_best_in_group"] = any(c["from"] == "tpe+sh" and c["name"] == best_of["tpe+sh"] for c in group)
    summary["random_best_in_group"] = any(c["from"] == "random" and c["name"] == best_of["random"] for c in group)
    (args.work / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()

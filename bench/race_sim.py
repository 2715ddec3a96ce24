"""Racing's error rates and cost in simulated studies (issue 30), no training:

    .venv/bin/python bench/race_sim.py [--studies 1000] [--min 2] [--max 10]
                                       [--margin-sd X] [--seed 0]

Each study draws every model's 10 seed results (normal, seed std 1, model means below the best by the
scenario's gaps, in units of the seed std), replays racing on them (`executors.racing.race` with the
rule a racing run uses, `decider`) and takes the best group the report would show from the raced seeds
(Tukey-Kramer at family-wise 0.05, the test of `report.stats.places`). Per scenario: the share of trials
racing ran, the share of studies in which a model truly worse than the best by more than the study's
race margin is kept in the best group (goal <= 5%), and the share in which a model truly equal to the
best is called worse (goal <= 5%). `--margin-sd` fixes the margin (seed stds) instead of the default.
"""

from __future__ import annotations

import argparse

import numpy as np
from statsmodels.stats.proportion import proportion_confint

from convstudy.executors.racing import POWER_Z, decider, default_margin, look_alpha, race
from convstudy.report.stats import race_decisions, tukey_critical



def scenarios(first: int, most: int) -> dict[str, list[float]]:
    """Model gaps below the best, in seed stds; `edge` is 1.1 x the default margin at seed std 1."""
    alpha = look_alpha(first, most)
    edge = 1.1 * (tukey_critical(12, 12 * (most - 1), alpha) + POWER_Z * np.sqrt(2)) / np.sqrt(most)
    return {"A/A: 12 equal models": [0.0] * 12,
            "like the 3x2x2 space (gaps 0-9 sd)": [0, 0, 0.5, 1, 2.5, 3, 5, 5.5, 6, 7, 8, 9],
            f"one model at 1.1 x the default margin ({edge:.2f} sd), 11 equal": [edge] + [0.0] * 11,
            "graded gaps 0-3 sd": list(np.linspace(0, 3, 12))}


def simulate(gaps: list[float], studies: int, first: int, most: int, margin_sd: float | None,
             seed: int) -> dict[str, float]:
    """Run `studies` raced studies of models `gaps` seed-stds below the best; their error rates and cost."""
    rng = np.random.default_rng(seed)
    gaps_a = np.asarray(gaps, dtype=float)
    names = [f"m{i}" for i in range(len(gaps))]
    decide = decider(first, most, margin_sd)
    kept = worse = ran = 0
    for _ in range(studies):
        x = rng.standard_normal((len(gaps), most)) - gaps_a[:, None]
        finished = {(m, s): float(x[i, s]) for i, m in enumerate(names) for s in range(most)}
        state = race(names, range(most), first, finished, decide)
        values = {m: [finished[(m, s)] for s in state.seeds[m]] for m in names}
        alpha = look_alpha(first, most)
        delta = margin_sd if margin_sd is not None else default_margin({m: v[:first] for m, v in values.items()},
                                                                       most, alpha)
        called = race_decisions(values, 0.0, alpha)  # the best group a raced study's report shows
        true_gap = gaps_a - gaps_a.min()
        kept += any(called[m] != "worse" for i, m in enumerate(names) if true_gap[i] > delta)
        worse += any(called[m] == "worse" for i, m in enumerate(names) if true_gap[i] == 0)
        ran += sum(map(len, state.seeds.values()))
    return {"kept": kept / studies, "called_worse": worse / studies, "trials": ran / (studies * len(gaps) * most)}


def _rate(rate: float, n: int) -> str:
    lo, hi = proportion_confint(round(rate * n), n, method="wilson")
    return f"{100 * rate:.1f}% ({100 * lo:.1f}-{100 * hi:.1f}%)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=1000)
    ap.add_argument("--min", type=int, default=2)
    ap.add_argument("--max", type=int, default=10)
    ap.add_argument("--margin-sd", type=float, help="a fixed race margin in seed stds (default: from the seed noise)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    margin = "default (from the first round's seed noise)" if a.margin_sd is None else f"{a.margin_sd} seed sd"
    print(f"{a.studies} studies per scenario, racing seeds {a.min}..{a.max}, margin {margin}")
    print("| scenario | trials run | worse by > margin, kept in the group (<= 5%) | equal, called worse (<= 5%) |")
    print("|---|---:|---:|---:|")
    for i, (name, gaps) in enumerate(scenarios(a.min, a.max).items()):
        r = simulate(gaps, a.studies, a.min, a.max, a.margin_sd, a.seed + i)
        print(f"| {name} | {100 * r['trials']:.0f}% | {_rate(r['kept'], a.studies)} | "
              f"{_rate(r['called_worse'], a.studies)} |")


if __name__ == "__main__":
    main()

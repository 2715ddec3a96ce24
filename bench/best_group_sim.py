"""The best group's error rates in simulated studies (issue 17), no training:

    .venv/bin/python bench/best_group_sim.py [--studies 2000] [--models 20] [--seeds 5] [--std-pp 0.1]
                                             [--worse-pp 0.3] [--seed 0]

A/A: every model identical, seed noise normal with std `--std-pp`: the share of studies in which any
model is called worse than the best (goal: at most 5%). Power: model 0 is `--worse-pp` below the others:
the share in which it is called worse (goal: at least 80%). Both run the report's procedure
(`report.stats.places`, Tukey-Kramer HSD at α = 0.05) vectorised over the studies.
"""

from __future__ import annotations

import argparse

from statsmodels.stats.proportion import proportion_confint

from convstudy.report.stats import called_worse_rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=2000)
    ap.add_argument("--models", type=int, default=20)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--std-pp", type=float, default=0.1)
    ap.add_argument("--worse-pp", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    aa, _ = called_worse_rates(a.studies, a.models, a.seeds, a.std_pp / 100, seed=a.seed)
    _, power = called_worse_rates(a.studies, a.models, a.seeds, a.std_pp / 100, a.worse_pp / 100, seed=a.seed)
    print(f"{a.studies} studies of {a.models} models x {a.seeds} seeds, seed std {a.std_pp} pp, Tukey-Kramer HSD")
    for label, rate in (("A/A: any model called worse than the best (goal <= 5%)", aa),
                        (f"power: the model {a.worse_pp} pp worse called worse (goal >= 80%)", power)):
        lo, hi = proportion_confint(round(rate * a.studies), a.studies, method="wilson")
        print(f"{label}: {100 * rate:.2f}% (95% CI {100 * lo:.2f}-{100 * hi:.2f}%)")


if __name__ == "__main__":
    main()

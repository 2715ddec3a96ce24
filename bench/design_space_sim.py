"""The design-space tests' error rates in simulated studies (issue 31), no training:

    .venv/bin/python bench/design_space_sim.py [--reps 400] [--models 100] [--shift 0.4] [--size-shift 2.0]
                                               [--perm 199] [--seed 0]

Each space is a population of models: log-parameters uniform on [8, 12] (B's moved up by `--size-shift` in
the confounded case), error = -0.5 x (log-parameters - 10) + normal noise (std 1). Three cases, each run
`--reps` times with `--models` models per space, through the report's tests (report.design_spaces: KS,
the weighted KS with a within-bin permutation p-value, Holm over the two), at alpha = 0.05:
  A/A        two samples of one space: the share called "different" (goal: at most 5%, plain and normalised);
  shift      B's errors `--shift` std higher: the share detected (plain) beside the power the report
             predicts (its bootstrap power at the sample's size, averaged) and the models needed for 80%
             power, predicted by the report against the truth (simulated from the true spaces);
  confound   B only bigger: the plain test should say "different", the normalised one should not.
"""

from __future__ import annotations

import argparse

import numpy as np
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

from convstudy.report import design_spaces as ds


def space(rng: np.random.Generator, n: int, shift: float = 0.0, size_shift: float = 0.0
          ) -> tuple[np.ndarray, np.ndarray]:
    """(errors, parameter counts) of n models sampled from a simulated space."""
    logp = rng.uniform(8, 12, n) + size_shift
    return -0.5 * (logp - 10) + shift + rng.normal(0, 1, n), np.exp(logp)


def calls(rng: np.random.Generator, a: tuple, b: tuple, n_perm: int) -> tuple[bool, bool, bool]:
    """The report's two calls for one pair (plain KS and normalised weighted KS, Holm-adjusted together),
    and the plain KS test's call alone."""
    p_plain = ds.ks_test(a[0], b[0]).pvalue
    p_norm = ds.weighted_ks(a[0], b[0], a[1], b[1], ds.n_bins(len(a[0])), rng, n_perm, n_perm)["p"]
    reject = multipletests([p_plain, p_norm], alpha=ds.ALPHA, method="holm")[0]
    return bool(reject[0]), bool(reject[1]), bool(p_plain < ds.ALPHA)


def _n(v: float) -> str:
    return "more" if v >= 10 ** 9 else f"{v:g}"


def rate(hits: list[bool]) -> str:
    lo, hi = proportion_confint(sum(hits), len(hits), method="wilson")
    return f"{100 * np.mean(hits):5.1f}% (95% CI {100 * lo:.1f}-{100 * hi:.1f}%)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=400)
    ap.add_argument("--models", type=int, default=100)
    ap.add_argument("--shift", type=float, default=0.4)
    ap.add_argument("--size-shift", type=float, default=2.0)
    ap.add_argument("--perm", type=int, default=199)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rng, n = np.random.default_rng(a.seed), a.models
    print(f"{a.reps} simulated studies, {n} models per space, alpha {ds.ALPHA}, normalised by parameters, "
          f"{a.perm} permutations")
    aa = [calls(rng, space(rng, n), space(rng, n), a.perm) for _ in range(a.reps)]
    print(f"A/A, plain:       called different {rate([c[0] for c in aa])}  (goal <= 5%)")
    print(f"A/A, normalised:  called different {rate([c[1] for c in aa])}  (goal <= 5%)")
    sizes = ds.power_sizes(n)
    shifted, predicted, needed = [], [], []
    for _ in range(a.reps):
        x, y = space(rng, n), space(rng, n, shift=a.shift)
        shifted.append(calls(rng, x, y, a.perm))
        power = ds.ks_power(x[0], y[0], sizes, rng)
        predicted.append(power[sizes.index(n)] if n in sizes else np.nan)
        needed.append(next((s for s, p in zip(sizes, power) if p >= ds.POWER_TARGET), 10 ** 9))
    truth = [np.mean([ds.ks_test(space(rng, s)[0], space(rng, s, shift=a.shift)[0]).pvalue < ds.ALPHA
                      for _ in range(a.reps)]) for s in sizes]
    true_n80 = next((s for s, p in zip(sizes, truth) if p >= ds.POWER_TARGET), None)
    print(f"shift {a.shift} std, plain:      detected {rate([c[0] for c in shifted])}; the report predicted "
          f"{100 * np.nanmean(predicted):.1f}% (its bootstrap power at n = {n}, mean over studies)")
    print(f"shift {a.shift} std, plain KS alone (no Holm): detected {rate([c[2] for c in shifted])}")
    print(f"shift {a.shift} std, normalised: detected {rate([c[1] for c in shifted])}")
    print(f"shift {a.shift} std: models per space for 80% power: true {true_n80} (KS at alpha {ds.ALPHA}, "
          f"simulated from the spaces); the report's estimate: median {_n(np.median(needed))}, "
          f"quartiles {_n(np.percentile(needed, 25))}-{_n(np.percentile(needed, 75))} (> {sizes[-1]}: beyond its grid)")
    print("true power by models per space: " + ", ".join(f"{s}: {100 * p:.0f}%" for s, p in zip(sizes, truth)))
    conf = [calls(rng, space(rng, n), space(rng, n, size_shift=a.size_shift), a.perm) for _ in range(a.reps)]
    print(f"B bigger by {a.size_shift} in log-params, plain:      called different {rate([c[0] for c in conf])}"
          "  (goal: high)")
    print(f"B bigger by {a.size_shift} in log-params, normalised: called different {rate([c[1] for c in conf])}"
          "  (goal: <= 5%)")


if __name__ == "__main__":
    main()

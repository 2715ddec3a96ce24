"""The best group (Tukey-Kramer HSD, McNemar + Holm for single seeds): scipy's numbers, the racing
decisions, and its error rates in simulation (issue 17: A/A and power, no training)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from convstudy.report.stats import Place, called_worse_rates, places


def test_aa_and_power_in_2000_simulated_studies():
    """20 models x 5 seeds, seed std 0.1 pp: identical models are called worse than the best in at most 5%
    of studies; one model 0.3 pp worse is called worse in at least 80% (the docs' figures)."""
    aa, _ = called_worse_rates(2000, models=20, seeds=5, std=0.001)
    _, power = called_worse_rates(2000, models=20, seeds=5, std=0.001, worse_by=0.003)
    assert aa <= 0.05 and power >= 0.80
    # Not a lucky seed: over 5 more seeds' 10,000 studies the A/A rate stays within binomial noise of 5%.
    more = np.mean([called_worse_rates(2000, 20, 5, 0.001, seed=s)[0] for s in range(1, 6)])
    assert abs(more - 0.05) < 3 * np.sqrt(0.05 * 0.95 / 10_000)


def test_the_simulation_decides_as_places_does():
    """called_worse_rates is places() vectorised: the same draws give the same calls."""
    studies, k, n, std, worse = 6, 5, 4, 0.001, 0.0015
    x = np.random.default_rng(7).normal(0.0, std, (studies, k, n))
    x[:, 0] -= worse
    any_out, first_out = [], []
    for study in x:
        found = places({f"m{i}": list(v) for i, v in enumerate(study)})
        any_out.append(any(not p.same_as_best for p in found.values()))
        first_out.append(not found["m0"].same_as_best)
    assert 0 < sum(first_out) < studies  # a mixed case, so the comparison means something
    assert called_worse_rates(studies, k, n, std, worse, seed=7) == (np.mean(any_out), np.mean(first_out))


def test_p_values_are_scipys_tukey_hsd_with_unequal_seeds():
    rng = np.random.default_rng(3)
    groups = [rng.normal(mu, 0.002, n) for mu, n in ((0.99, 5), (0.989, 3), (0.985, 4), (0.98, 2))]
    found = places({f"m{i}": list(g) for i, g in enumerate(groups)})
    ref = stats.tukey_hsd(*groups).pvalue
    assert found["m0"].test == "best" and found["m0"].p_value == 1.0 and found["m0"].same_as_best
    for i in range(1, 4):
        assert found[f"m{i}"].test == "tukey-hsd"
        assert found[f"m{i}"].p_value == pytest.approx(ref[0, i], rel=1e-6, abs=1e-9)
        assert found[f"m{i}"].same_as_best == (ref[0, i] >= 0.05)
    assert found["m1"].same_as_best and not found["m3"].same_as_best


def test_single_seeds_beside_replicated_ones_share_the_pooled_variance():
    found = places({"a": [0.99, 0.991, 0.989], "b": [0.9895], "c": [0.97], "none": []})
    assert found["b"].test == found["c"].test == "tukey-hsd"
    assert found["b"].same_as_best and not found["c"].same_as_best
    assert found["none"] == Place(False, None, None, False)  # nothing finished: unranked, undecided


def test_mcnemar_is_holm_corrected_when_every_model_has_one_seed():
    truth = np.ones(500, dtype=bool)
    close, far, farther = truth.copy(), truth.copy(), truth.copy()
    close[:3], far[:20], farther[:60] = False, False, False
    correct = {"a": truth, "b": close, "c": far, "d": farther}
    found = places({k: [float(v.mean())] for k, v in correct.items()}, correct)
    raw = {k: stats.binomtest(int((~v).sum()), int((~v).sum()), 0.5).pvalue for k, v in correct.items() if k != "a"}
    # Holm: the smallest raw p times 3, the next times 2 (kept monotone), the largest times 1.
    assert found["d"].p_value == pytest.approx(3 * raw["d"])
    assert found["c"].p_value == pytest.approx(max(3 * raw["d"], 2 * raw["c"]))
    assert found["b"].p_value == pytest.approx(max(2 * raw["c"], raw["b"]))
    assert {k: p.test for k, p in found.items()} == {"a": "best", "b": "mcnemar-holm", "c": "mcnemar-holm",
                                                    "d": "mcnemar-holm"}
    assert found["b"].same_as_best and not found["c"].same_as_best and not found["d"].same_as_best
    assert places({"a": [0.9], "b": [0.8]})["b"] == Place(False, None, None, False)  # no predictions: no test


def test_decided_places_for_racing():
    vals = {"best": [0.990, 0.991, 0.992, 0.991], "near": [0.9905, 0.9912, 0.9902, 0.9908],
            "out": [0.960, 0.961, 0.962, 0.961]}
    plain = places(vals)
    assert plain["out"].decided and not plain["out"].same_as_best  # called worse: its race is over
    assert plain["near"].same_as_best and not plain["near"].decided  # in, but more seeds could still move it
    assert not plain["best"].decided  # the best races while any other place is open
    wide = places(vals, margin=0.005)  # within 0.5 pp of the best, simultaneously: in, for good
    assert wide["near"].decided and wide["best"].decided and wide["out"].decided
    assert not places(vals, margin=1e-5)["near"].decided
    assert places({"only": [0.9, 0.91]})["only"].decided  # nothing to race against


def test_no_seed_noise_at_all_decides_by_the_means():
    found = places({"a": [0.5, 0.5], "b": [0.5, 0.5], "c": [0.4, 0.4]})
    assert found["b"].same_as_best and found["b"].p_value == 1.0
    assert not found["c"].same_as_best and found["c"].p_value == 0.0

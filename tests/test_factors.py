"""Factor effects on synthetic results with known effects: estimates, CI coverage, interactions, and the
cases the design cannot answer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from convstudy.report.factors import factor_effects, fit_effects

KERNEL = {3: 0.0, 5: 0.002, 7: 0.001}  # true main effects (accuracy), reference 3
BN = {"on": 0.0, "off": -0.0015}


def design(rng, sd=0.001, seeds=3, inter=0.0, drop=()):
    """A 3 x 2 x 2 design (kernel x bn x filters), `seeds` rows per cell; filters has no effect; `inter` is
    added to the cell kernel=7, bn=off."""
    rows = [{"kernel": k, "bn": b, "filters": f,
             "value": 0.98 + KERNEL[k] + BN[b] + (inter if (k, b) == (7, "off") else 0.0) + rng.normal(0, sd)}
            for k in KERNEL for b in BN for f in (32, 64) for _ in range(seeds) if (k, b) not in drop]
    return pd.DataFrame(rows, dtype=object)


def effects(out):
    return {(f["name"], e["level"]): e for f in out["factors"] for e in f["effects"]}


def test_estimates_recover_known_effects_and_cis_cover_them():
    truth = {("kernel", 5): 0.002, ("kernel", 7): 0.001, ("bn", "off"): -0.0015, ("filters", 64): 0.0}
    rng = np.random.default_rng(0)
    covered, sims = [], 40
    for _ in range(sims):
        found = effects(fit_effects(design(rng), ["kernel", "bn", "filters"]))
        covered += [found[k]["ci95"][0] <= v <= found[k]["ci95"][1] for k, v in truth.items()]
    # 160 intervals at 95%: binomial sd 1.7 pp, so 88% .. 100% holds unless the intervals are wrong.
    assert 0.88 <= np.mean(covered)
    out = fit_effects(design(np.random.default_rng(1), sd=0.0002), ["kernel", "bn", "filters"])
    found = effects(out)
    for key, v in truth.items():
        assert found[key]["estimate"] == pytest.approx(v, abs=2e-4), key
    assert found[("kernel", 5)]["p_value"] < 1e-6 and found[("filters", 64)]["p_value"] > 0.01
    kernel = out["factors"][0]
    assert kernel["levels"] == [3, 5, 7] and kernel["reference"] == 3 and kernel["p_value"] < 1e-6
    assert out["factor_fit"] == {"n": 36, "df_resid": 36 - 5, "note": None}


def test_a_real_interaction_is_found_and_a_missing_one_is_not():
    out = fit_effects(design(np.random.default_rng(2), sd=0.0003, inter=0.003), ["kernel", "bn", "filters"])
    pairs = {tuple(i["factors"]): i for i in out["interactions"]}
    assert set(pairs) == {("kernel", "bn"), ("kernel", "filters"), ("bn", "filters")}
    kb = {tuple(e["levels"]): e for e in pairs[("kernel", "bn")]["effects"]}
    assert kb[(7, "off")]["estimate"] == pytest.approx(0.003, abs=4e-4) and kb[(7, "off")]["p_value"] < 1e-6
    assert kb[(5, "off")]["ci95"][0] < 0 < kb[(5, "off")]["ci95"][1]
    assert pairs[("kernel", "bn")]["p_value"] < 1e-6 and pairs[("bn", "filters")]["p_value"] > 0.001
    cells = {tuple(c["levels"]): c for c in pairs[("kernel", "bn")]["means"]}
    assert len(cells) == 6 and cells[(3, "on")]["n"] == 6
    # An empty cell: kernel x bn is not crossed any more, so it is not fitted; the other pairs still are.
    partial = fit_effects(design(np.random.default_rng(2), drop=[(7, "off")]), ["kernel", "bn", "filters"])
    assert {tuple(i["factors"]) for i in partial["interactions"]} == {("kernel", "filters"), ("bn", "filters")}


def test_designs_that_cannot_answer_say_so():
    one_level = pd.DataFrame({"value": [0.9, 0.91], "k": [3, 3]}, dtype=object)
    out = fit_effects(one_level, ["k"])
    assert out["factors"][0]["effects"] == [] and "two levels" in out["factor_fit"]["note"]
    # Two factors that always move together (confounded), and no residual df with one seed per cell.
    confounded = pd.DataFrame({"value": [0.9, 0.91, 0.92, 0.93], "a": [1, 1, 2, 2], "b": ["x", "x", "y", "y"]},
                              dtype=object)
    out = fit_effects(confounded, ["a", "b"])
    assert all(f["effects"] == [] for f in out["factors"]) and "separate" in out["factor_fit"]["note"]
    assert fit_effects(pd.DataFrame({"value": [0.9, 0.8], "a": [1, 2]}, dtype=object), ["a"])["factor_fit"]["note"]


def test_factor_effects_read_the_models_and_keep_level_types():
    models = [{"name": f"m{i}", "factors": {"use bn?": bn, "rate": r},
               "val_accuracy": {"values": [0.9 + 0.01 * bn + d for d in (0.0, 0.001, -0.001)]}}
              for i, (bn, r) in enumerate([(True, 0.25), (False, 0.25), (True, 0.5), (False, 0.5)])]
    models.append({"name": "hand-written", "factors": {}, "val_accuracy": {"values": [0.5, 0.6]}})  # left out
    out = factor_effects(models, "val_accuracy")
    bn, rate = out["factors"]
    assert (bn["name"], bn["levels"], rate["levels"]) == ("use bn?", [True, False], [0.25, 0.5])
    assert bn["effects"][0]["level"] is False and bn["effects"][0]["estimate"] == pytest.approx(-0.01)
    assert out["factor_fit"]["n"] == 12
    assert factor_effects([{"name": "m", "factors": {}, "val_accuracy": {"values": [0.9]}}], "val_accuracy") == {}


def test_no_finished_value_yet_fits_nothing():
    import pandas as pd

    from convstudy.report.factors import fit_effects

    df = pd.DataFrame({"value": [None, None], "kernel": [3, 5]}, dtype=object)  # e.g. a search's pruned trials
    assert fit_effects(df, ["kernel"]) == {}


def test_six_factors_draw_every_interaction_in_readable_panels():
    """A search over six two-level factors has 15 interaction pairs: they wrap into rows of panels
    instead of one strip too narrow to lay out (matplotlib's "axes sizes collapsed" warning)."""
    import itertools
    import warnings

    from convstudy.report.factors import factor_figures
    from convstudy.report.figures import PANELS_PER_ROW, to_svg

    rng = np.random.default_rng(0)
    names = ["a", "b", "c", "d", "e", "f"]
    models = [{"name": f"m{i}", "factors": dict(zip(names, levels)),
               "val_accuracy": {"values": list(0.9 + 0.01 * levels[0] + rng.normal(0, 0.002, 2))}}
              for i, levels in enumerate(itertools.product((0, 1), repeat=6))]
    report = {"study": {"selection_metric": "val_accuracy"}, **factor_effects(models, "val_accuracy")}
    assert len(report["interactions"]) == 15
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        figs = factor_figures(report)
        svg = {k: to_svg(f) for k, f in figs.items()}
    shown = [ax for ax in figs["interactions"].axes if ax.get_visible()]
    assert len(shown) == 15 and all(ax.get_title() for ax in shown)
    width, height = figs["interactions"].get_size_inches()
    assert width / PANELS_PER_ROW >= 3 and height >= 4 * 3  # four rows of panels at least 3 inches wide
    assert "a × b" in svg["interactions"] and "e × f" in svg["interactions"]

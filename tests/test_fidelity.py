"""Rank fidelity (issue 30): does an early epoch rank the models like the final one, and does the report say so?"""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest
from scipy import stats

from convstudy.report import collect, render
from convstudy.report.markup import md_text
from convstudy.report.fidelity import (audit_statistics, fidelity_section, kendall_tau_b, pruning_evidence,
                                       pruning_fidelity, racing_evidence, rank_stability)
from convstudy.spec import build_study
from convstudy.store import State, StudyStore

EPOCHS = 6


def _curves(reversed_until: int, models: int = 6, seeds: int = 3, noise: float = 0.002) -> dict[str, np.ndarray]:
    """Model i ends at 0.90 + 0.01 i; up to epoch `reversed_until` the order is the reverse of the final one."""
    rng = np.random.default_rng(1)
    out = {}
    for i in range(models):
        final = 0.90 + 0.01 * i
        early = 0.90 + 0.01 * (models - 1 - i)
        curve = [early if e <= reversed_until else final for e in range(1, EPOCHS + 1)]
        out[f"m{i}"] = np.array(curve) + noise * rng.standard_normal((seeds, EPOCHS))
    return out


def test_vectorised_tau_b_matches_scipy_with_ties():
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 4, (50, 9)).astype(float), rng.integers(0, 4, (50, 9)).astype(float)
    want = [stats.kendalltau(a, b).statistic for a, b in zip(x, y)]
    np.testing.assert_allclose(kendall_tau_b(x, y), want)
    assert np.isnan(kendall_tau_b(np.ones(5), np.arange(5.0)))


def test_early_epochs_in_reverse_order_warn():
    """Acceptance 3: early epochs rank the models in the reverse of the final order: the report warns."""
    found = rank_stability(_curves(reversed_until=3))
    rows = {r["epoch"]: r for r in found["rows"]}
    assert rows[1]["tau"] == pytest.approx(-1.0) and rows[1]["ci95"][1] < 0
    assert rows[4]["tau"] == pytest.approx(1.0)
    assert found["stable_from"] == 4
    assert len(found["warnings"]) == 1 and "Epoch 1 ranks the models unlike epoch 6" in found["warnings"][0]
    assert "settles from epoch 4" in found["warnings"][0]


def test_a_consistent_ranking_is_stable_from_epoch_1_without_warnings():
    found = rank_stability(_curves(reversed_until=0))
    assert found["stable_from"] == 1 and found["warnings"] == []
    assert all(r["tau"] == pytest.approx(1.0) and r["ci95"][0] > 0 for r in found["rows"])


def test_a_ranking_still_changing_at_the_last_epoch_warns():
    found = rank_stability(_curves(reversed_until=EPOCHS - 1))
    assert found["stable_from"] == EPOCHS
    assert any("still changing at the last epoch" in w for w in found["warnings"])


def test_too_little_to_rank_gives_nothing():
    assert rank_stability(dict(list(_curves(0).items())[:2])) is None
    assert rank_stability({k: v[:, :1] for k, v in _curves(0).items()}) is None


def test_pruning_epoch_agreement_over_the_trials_that_ran_to_the_end():
    found = pruning_fidelity(_curves(reversed_until=1), [1, 1, 2, EPOCHS])
    assert [r["epoch"] for r in found["rows"]] == [1, 2]
    assert len(found["warnings"]) == 1 and "Pruning stopped trials at epoch 1" in found["warnings"][0]
    assert pruning_fidelity(_curves(0), [EPOCHS]) is None


def _fabricate(out, curves: dict[str, np.ndarray], pruned: dict[str, int] | None = None) -> None:
    """A study directory with these validation curves (no training); `pruned`: model -> epoch it stopped at."""
    models = [{"name": k, "layers": ["flatten", "dense(10)"]} for k in [*curves, *(pruned or {})]]
    seeds = len(next(iter(curves.values())))
    study = build_study({"name": "fid", "seeds": seeds, "train": {"epochs": EPOCHS}, "models": models}, source="test")
    store = StudyStore.create_or_open(out, study)
    store.db.ensure_trials([(m.name, s, i) for i, m in enumerate(study.models) for s in study.seeds])
    for rec in store.db.trials():
        curve = curves[rec.model][rec.seed] if rec.model in curves else np.full(pruned[rec.model], 0.5)
        for e, v in enumerate(curve, 1):
            store.db.record_epoch(rec.id, e, {"loss": 1.0, "accuracy": 0.5, "val_loss": 1.0, "val_accuracy": float(v),
                                              "seconds": 0.1})
        if rec.model in curves:
            store.db.finish(rec.id, test_loss=0.3, test_accuracy=float(curve[-1]), device="cpu")
        else:
            store.db.mark(rec.id, State.PRUNED)
    store.close()


def test_the_report_shows_rank_stability_and_warns_in_every_format(tmp_path):
    _fabricate(tmp_path / "out", _curves(reversed_until=3), pruned={"cut": 1})
    store = StudyStore.open_existing(tmp_path / "out")
    try:
        report = collect(store)
    finally:
        store.close()
    fid = report["fidelity"]
    assert fid["rank_stability"]["stable_from"] == 4
    assert [r["epoch"] for r in fid["pruning"]["rows"]] == [1]
    assert any("Epoch 1 ranks the models unlike epoch 6" in w for w in report["study"]["warnings"])
    md, html = render(report, "markdown"), render(report, "html")
    assert "## Rank stability" in md and "**Warning:** Epoch 1 ranks the models unlike epoch 6" in md
    assert "Rank stability" in html and "Epoch 1 ranks the models unlike epoch 6" in html
    assert '"fidelity"' in render(report, "json")


def test_a_single_epoch_study_has_no_fidelity_section():
    models = [{"name": f"m{i}", "trials": [{"state": "complete", "epochs": [{"val_accuracy": 0.9 + i / 100}]}]}
              for i in range(4)]
    assert fidelity_section(models) is None


def test_models_that_tie_at_an_epoch_give_a_warning_in_words_not_an_error():
    """Found by the search tests: on tiny data every model can reach the same accuracy, so an epoch's tau is
    undefined; the report must still be written."""
    tied = {f"m{i}": np.array([[0.5, 0.5, 0.9 + 0.01 * i]] * 2) for i in range(4)}
    found = rank_stability(tied)
    assert found["rows"][-1]["tau"] is None
    assert any("the models tie" in w for w in found["warnings"])


def _audit(order: list[int]) -> dict:
    """An audit of 6 models whose full-budget means are 0.95 + 0.004 i and whose cheap ranking follows `order`."""
    rng = np.random.default_rng(3)
    cheap = {f"m{i}": 0.90 + 0.01 * order[i] + 0.001 * rng.standard_normal(5) for i in range(6)}
    full = {f"m{i}": 0.95 + 0.004 * i + 0.0005 * rng.standard_normal(3) for i in range(6)}
    return audit_statistics(cheap, full, 2, "2-epoch, 6,000-image", "12-epoch, full-data")


def test_an_audit_of_a_cheap_ranking_in_the_full_order_agrees_and_costs_nothing():
    found = _audit([0, 1, 2, 3, 4, 5])
    assert found["kendall_tau"]["estimate"] == pytest.approx(1) and found["spearman_rho"]["estimate"] == pytest.approx(1)
    assert found["kendall_tau"]["ci95"][1] == pytest.approx(1) and found["top_k"]["overlap"] == 2
    assert found["regret"]["estimate"] == 0 and found["regret"]["cheap_winner"] == "m5"
    assert found["verdict"].startswith("2-epoch, 6,000-image rankings agree with 12-epoch, full-data rankings: tau 1.00")
    assert "cost nothing here (m5 wins both" in found["verdict"]


def test_an_audit_of_a_reversed_cheap_ranking_disagrees_and_names_the_regret():
    found = _audit([5, 4, 3, 2, 1, 0])
    assert found["kendall_tau"]["estimate"] == pytest.approx(-1) and found["kendall_tau"]["ci95"][0] == pytest.approx(-1)
    assert found["top_k"] == {"k": 2, "overlap": 0, "cheap": ["m0", "m1"], "full": ["m5", "m4"]}
    regret = found["regret"]
    assert regret["cheap_winner"] == "m0" and regret["full_winner"] == "m5"
    assert regret["estimate"] == pytest.approx(0.02, abs=0.002) and regret["ci95"][0] > 0.015
    assert "rankings do not agree with" in found["verdict"] and "cost 2.0" in found["verdict"]


def test_the_racing_section_names_the_rank_stability_it_rests_on(tmp_path):
    _fabricate(tmp_path / "out", _curves(reversed_until=3))
    conn = sqlite3.connect(tmp_path / "out" / "study.db")
    with conn:
        conn.execute("INSERT INTO meta VALUES ('racing', ?)",
                     (json.dumps({f"m{i}": {"seeds": 3, "stopped": "called worse than the best"} for i in range(6)}),))
    conn.close()
    store = StudyStore.open_existing(tmp_path / "out")
    try:
        report = collect(store)
    finally:
        store.close()
    said = racing_evidence(report)
    assert said.startswith("Racing decided on the 6-epoch, full-data ranking")
    assert "from epoch 4 on it agrees with epoch 6's (tau" in said
    assert said[:40] in render(report, "markdown") and said[:40] in render(report, "html")
    assert pruning_evidence(report["fidelity"]).startswith("Too few trials ran to the end")


def test_the_pruning_evidence_names_the_pruning_epochs_tau():
    said = pruning_evidence({"pruning": pruning_fidelity(_curves(reversed_until=1), [1])})
    assert "over the 6 models that ran to the end, against epoch 6, epoch 1: tau -1.00" in said


def test_a_pruned_searchs_summary_names_the_fidelity_its_pruning_rests_on(tiny_mnist, tmp_path, one_thread):
    from convstudy.cli import main
    from test_search import write_search

    study = write_search(tmp_path / "s.toml", trials=6, epochs=3, pruner="successive-halving")
    out = tmp_path / "out"
    assert main(["run", str(study), "--out", str(out), "--data-dir", str(tiny_mnist.dir), "--quiet"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["search"]["pruned"]
    note = report["search"]["fidelity_note"]
    assert note == pruning_evidence(report.get("fidelity"))
    assert note.startswith(("Pruning rests on early epochs", "Too few trials ran to the end"))
    assert md_text(note)[:30] in (out / "report.md").read_text()


def test_a_search_study_without_its_search_db_still_reports(tmp_path):
    """The fidelity hook must leave a search that has not sampled yet (no search.db) as it was: search None."""
    from convstudy.spec import load_study_file
    from test_search import write_search

    store = StudyStore.create_or_open(tmp_path / "out", load_study_file(write_search(tmp_path / "s.toml")))
    try:
        assert collect(store)["search"] is None
    finally:
        store.close()

"""Reports from study.db rows written directly (no training): a holdout study selects on the final
validation accuracy although test accuracy would pick another model; a study with factors gets its
Factors section in JSON, Markdown, HTML and plots."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from convstudy.report import write_reports
from convstudy.spec import build_study
from convstudy.store import StudyStore

LAYERS = ["conv(4,3)", "pool(2)", "flatten", "dense(10)"]


def fabricate(out, models, results, validation="holdout", seeds=(0, 1, 2), predictions=None):
    """A study directory whose trials finished with `results[(model, seed)] = (val_accuracy, test_accuracy)`
    and, where `predictions[model]` gives per-example correctness, test predictions saying so."""
    study = build_study({"name": "fab", "dataset": "mnist", "seeds": list(seeds),
                         "train": {"epochs": 2, "validation": validation}, "models": models}, source="test")
    store = StudyStore.create_or_open(out, study)
    store.db.ensure_trials([(m.name, s, i) for i, m in enumerate(study.models) for s in seeds])
    for (model, seed), (val, test) in results.items():
        rec = store.db.find(model, seed)
        for epoch, v in ((1, val - 0.05), (2, val)):  # only the final epoch's validation accuracy counts
            store.db.record_epoch(rec.id, epoch, {"loss": 0.2, "accuracy": 0.9, "val_loss": 0.1,
                                                  "val_accuracy": v, "seconds": 0.5})
        digests = (None, None)
        if predictions and model in predictions:
            right = torch.as_tensor(predictions[model])
            labels = torch.zeros(len(right), dtype=torch.long)
            probs = torch.nn.functional.one_hot(torch.where(right, 0, 1), 10).float()
            digests = store.save_results(rec.id, model, seed, {"w": torch.zeros(1)}, probs, labels)
        store.db.finish(rec.id, 0.1, test, "cpu", *digests)
    return store


def crossed(val_a, test_a, val_b, test_b):
    """Model a is ahead on validation, b on test (0.5 pp either way, tiny seed noise)."""
    noise = (0.0, 0.0004, -0.0004)
    return {**{("a", s): (val_a + d, test_a + d) for s, d in enumerate(noise)},
            **{("b", s): (val_b + d, test_b - d) for s, d in enumerate(noise)}}


@pytest.mark.parametrize("validation", ["holdout", "test"])
def test_holdout_selects_on_validation_where_test_would_pick_another(tmp_path, validation):
    models = [{"name": n, "layers": LAYERS} for n in ("a", "b")]
    results = crossed(0.990, 0.980, 0.985, 0.985)
    store = fabricate(tmp_path / "out", models, results, validation)
    report = write_reports(store)
    by = {m["name"]: m for m in report["models"]}
    assert by["b"]["test_accuracy"]["mean"] > by["a"]["test_accuracy"]["mean"]  # test would pick b
    if validation == "holdout":
        assert report["study"]["selection_metric"] == "val_accuracy" and report["study"]["validation_note"] is None
        assert by["a"]["test"] == "best" and by["b"]["test"] == "tukey-hsd" and not by["b"]["same_as_best"]
        assert by["a"]["val_accuracy"]["values"] == pytest.approx([0.990, 0.9904, 0.9896])
    else:  # the seed study's semantics: test accuracy selects, and the report says test = validation
        assert report["study"]["selection_metric"] == "test_accuracy" and report["study"]["validation_note"]
        assert by["b"]["test"] == "best" and not by["a"]["same_as_best"]
    saved = json.loads((store.out / "report.json").read_text())
    assert saved["study"]["selection_metric"] == report["study"]["selection_metric"]
    md = (store.out / "report.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| 3x3 | a |"))
    assert ("★" in row) == (validation == "holdout")
    assert ("final validation accuracy (test accuracy is shown, never selects)" in md) == (validation == "holdout")
    assert ("val acc % (mean ± std)" in (store.out / "report.html").read_text()) == (validation == "holdout")
    assert "Factors" not in md and 'id="factors"' not in (store.out / "report.html").read_text()


@pytest.mark.parametrize("validation", ["holdout", "test"])
def test_mcnemar_decides_single_seeds_only_where_the_test_set_selects(tmp_path, validation):
    right = np.ones(400, dtype=bool)
    wrong = right.copy()
    wrong[:40] = False  # b misses 40 test images a gets right: McNemar's p is about 2e-12
    store = fabricate(tmp_path / "out", [{"name": n, "layers": LAYERS} for n in ("a", "b")],
                      {("a", 0): (0.99, 1.0), ("b", 0): (0.98, 0.9)}, validation, seeds=(0,),
                      predictions={"a": right, "b": wrong})
    b = {m["name"]: m for m in write_reports(store)["models"]}["b"]
    if validation == "test":
        assert b["test"] == "mcnemar-holm" and b["p_value"] < 1e-9 and not b["same_as_best"]
    else:  # test predictions may not decide a holdout study's best group
        assert b["test"] is None and b["p_value"] is None and not b["same_as_best"]


def test_a_study_with_factors_reports_them_everywhere(tmp_path):
    rng = np.random.default_rng(0)
    models, results = [], {}
    for k in (3, 5):
        for bn in ("on", "off"):
            name = f"k{k}-{bn}"
            models.append({"name": name, "layers": [f"conv(4,{k})", "pool(2)", "flatten", "dense(10)"],
                           "factors": {"kernel": k, "bn <b>": bn}})
            for s in range(3):
                val = 0.97 + (0.003 if k == 5 else 0.0) + rng.normal(0, 0.0005)
                results[(name, s)] = (val, 0.96 + rng.normal(0, 0.001))
    store = fabricate(tmp_path / "out", models, results)
    report = write_reports(store)
    kernel = report["factors"][0]
    assert (kernel["name"], kernel["levels"], kernel["reference"]) == ("kernel", [3, 5], 3)
    (effect,) = kernel["effects"]
    assert set(effect) == {"level", "estimate", "ci95", "p_value"} and effect["level"] == 5
    assert effect["ci95"][0] < 0.003 < effect["ci95"][1] and effect["p_value"] < 1e-4
    assert report["interactions"][0]["factors"] == ["kernel", "bn <b>"]
    assert {m["name"]: m["factors"] for m in report["models"]}["k5-off"] == {"kernel": 5, "bn <b>": "off"}
    md = (store.out / "report.md").read_text()
    assert "## Factors" in md and "![factors](plots/_factors.png)" in md
    assert f"| kernel | 5 | \\{100 * effect['estimate']:+.2f} |" in md and "| bn &lt;b&gt; | off |" in md
    html = (store.out / "report.html").read_text()
    start = html.index('id="factors"')
    part = html[start:html.find("<section", start) % (len(html) + 1)]  # up to the next section, or the end
    assert part.count("<svg") == 2 and "bn &lt;b&gt;" in part and "bn <b>" not in part
    assert (store.out / "plots" / "_factors.png").stat().st_size > 1000
    assert (store.out / "plots" / "_interactions.png").stat().st_size > 1000

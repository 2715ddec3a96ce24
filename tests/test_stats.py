"""Statistics over seeds (hand-checked against scipy) and the report's consistency with the stored runs."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
from scipy import stats

from conftest import run_here
from convstudy.cli import main
from convstudy.data import stratified_split
from convstudy.report.stats import best_group, describe, mcnemar_p, welch_p
from convstudy.spec import load_study_file
from convstudy.train.data import make_trial_data


def test_describe_matches_hand_computation():
    values = [0.9912, 0.9925, 0.9931, 0.9908, 0.9920]
    d = describe(values)
    mean = sum(values) / 5
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / 4)
    half = stats.t.ppf(0.975, 4) * std / math.sqrt(5)
    assert d["n"] == 5 and d["values"] == values
    assert d["mean"] == pytest.approx(mean, abs=1e-15)
    assert d["std"] == pytest.approx(std, rel=1e-12)
    assert d["ci95"] == pytest.approx([mean - half, mean + half], rel=1e-12)
    assert (d["min"], d["max"]) == (0.9908, 0.9931)
    lo, hi = stats.t.interval(0.95, 4, loc=mean, scale=stats.sem(values))
    assert d["ci95"] == pytest.approx([lo, hi], rel=1e-12)


def test_describe_small_samples():
    assert describe([])["n"] == 0 and describe([])["mean"] is None
    one = describe([0.5])
    assert (one["n"], one["mean"], one["ci95"], one["values"]) == (1, 0.5, None, [0.5])


def test_welch_matches_scipy_and_handles_constants():
    a, b = [0.991, 0.992, 0.993], [0.980, 0.985, 0.983, 0.984]
    assert welch_p(a, b) == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
    assert welch_p([0.5, 0.5], [0.5, 0.5]) == 1.0
    assert welch_p([0.5, 0.5], [0.4, 0.4]) == 0.0


TIED = ([0.1, 0.1, 0.1], [0.9871] * 5, [0.9913, 0.9913])  # np.std of the first two is 1e-17, not 0


@pytest.mark.parametrize("tied", TIED)
def test_tied_seeds_warn_nothing_and_give_a_point_interval(tied):
    varied = [tied[0] - d for d in (0.001, 0.004, 0.002, 0.003)]  # below the tie, so the tie is the best
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d = describe(tied)
        assert (d["mean"], d["std"], d["ci95"]) == (tied[0], 0.0, [tied[0], tied[0]])
        assert welch_p(tied, list(tied)) == 1.0 and welch_p(list(tied), tied + [tied[0]]) == 1.0
        assert welch_p(tied, [tied[0] + 1e-4] * 3) == 0.0  # no noise on either side: any difference is real
        # One side constant: Welch's t with that side's variance 0, i.e. t on the other side's n - 1 df.
        sem = np.std(varied, ddof=1) / math.sqrt(len(varied))
        t = (tied[0] - np.mean(varied)) / sem
        expected = 2 * stats.t.sf(abs(t), len(varied) - 1)
        assert welch_p(tied, varied) == pytest.approx(expected, rel=1e-9)
        assert welch_p(varied, tied) == pytest.approx(expected, rel=1e-9)
        models = [_model("a", tied), _model("b", list(tied)), _model("c", varied)]
        best_group(models, "test_accuracy")
    assert models[0]["same_as_best"] and models[1]["same_as_best"] and models[1]["p_value"] == 1.0
    # The best group is Tukey-Kramer HSD now (was Welch's test against the best): the tied models add no
    # variance, so only c's seeds estimate it, over all three models' residual df.
    assert models[2]["p_value"] == pytest.approx(stats.tukey_hsd(tied, list(tied), varied).pvalue[0, 2], rel=1e-6)


def test_mcnemar_is_the_exact_binomial_test_on_discordant_pairs():
    rng = np.random.default_rng(0)
    a = rng.random(1000) < 0.95
    b = a.copy()
    b[:40] = ~b[:40]
    n01 = int(np.sum(a & ~b))
    n10 = int(np.sum(~a & b))
    assert mcnemar_p(a, b) == pytest.approx(stats.binomtest(n01, n01 + n10, 0.5).pvalue)
    assert mcnemar_p(a, a) == 1.0


def _model(name, values):
    return {"name": name, "test_accuracy": describe(values)}


def test_best_group_with_seeds_is_tukey_hsd():
    """Was Welch's test of each model against the best at α = 0.05 each; now Tukey-Kramer's family-wise p."""
    a, b, c = [0.990, 0.991, 0.992], [0.9895, 0.9912, 0.9905], [0.950, 0.951, 0.952]
    models = [_model("a", a), _model("b", b), _model("c", c), _model("d", [])]
    best_group(models, "test_accuracy")
    by = {m["name"]: m for m in models}
    tukey = stats.tukey_hsd(a, b, c).pvalue
    assert by["a"]["same_as_best"] and by["a"]["p_value"] == 1.0 and by["a"]["test"] == "best"
    assert by["b"]["same_as_best"] and by["b"]["p_value"] == pytest.approx(tukey[0, 1], rel=1e-6)
    assert not by["c"]["same_as_best"] and by["c"]["p_value"] < 0.05 and by["c"]["test"] == "tukey-hsd"
    assert not by["d"]["same_as_best"] and by["d"]["p_value"] is None


def test_best_group_with_one_seed_uses_mcnemar_with_holm():
    truth = np.ones(500, dtype=bool)
    close, far = truth.copy(), truth.copy()
    close[:3] = False
    far[:60] = False
    models = [_model("a", [1.0]), _model("b", [close.mean()]), _model("c", [far.mean()])]
    best_group(models, "test_accuracy", {"a": truth, "b": close, "c": far})
    by = {m["name"]: m for m in models}
    # Holm over the two comparisons: the largest raw p is kept, the smallest doubled.
    assert by["b"]["same_as_best"] and by["b"]["p_value"] == pytest.approx(stats.binomtest(3, 3, 0.5).pvalue)
    assert not by["c"]["same_as_best"] and by["c"]["p_value"] == pytest.approx(2 * stats.binomtest(60, 60).pvalue)
    assert by["b"]["test"] == "mcnemar-holm"


def test_holdout_validation_comes_from_train_and_test_is_separate(tiny_mnist, tiny_study_file):
    from convstudy.data import load_dataset

    study = load_study_file(tiny_study_file())
    ds = load_dataset("mnist", tiny_mnist.dir)
    data = make_trial_data(ds, study.train, torch.device("cpu"))
    assert study.train.validation == "holdout" and study.train.holdout_fraction == 0.1
    assert (len(data.train), len(data.val), len(data.test)) == (540, 60, 200)
    keep, held = stratified_split(ds.y_train, 0.1, study.train.split_seed)
    assert torch.equal(data.val.x, ds.x_train[held]) and torch.equal(data.train.x, ds.x_train[keep])
    assert set(keep.tolist()).isdisjoint(held.tolist())
    assert torch.bincount(data.val.y).tolist() == [6] * 10  # stratified
    assert torch.equal(data.test.x, ds.x_test)
    same = make_trial_data(ds, study.train, torch.device("cpu"))
    assert torch.equal(same.val.y, data.val.y)  # fixed by the split seed
    as_test = make_trial_data(ds, study.train.model_copy(update={"validation": "test"}), torch.device("cpu"))
    assert as_test.val is as_test.test and len(as_test.train) == 600


def test_test_set_is_evaluated_once_at_the_end(tiny_mnist, tiny_study_file, monkeypatch, tmp_path):
    from convstudy.data import load_dataset
    from convstudy.store import CheckpointStorage
    from convstudy.executors import trial as loop
    from convstudy.executors.trial import Finished, TrialJob, run_trial
    from convstudy.train import Plan

    study = load_study_file(tiny_study_file(epochs=2))
    data = make_trial_data(load_dataset("mnist", tiny_mnist.dir), study.train, torch.device("cpu"))
    seen = []
    real = loop.evaluate

    def spy(model, split, *args, **kwargs):
        seen.append("test" if split is data.test else "val" if split is data.val else "other")
        return real(model, split, *args, **kwargs)

    monkeypatch.setattr(loop, "evaluate", spy)
    m = study.models[0]
    job = TrialJob(1, m, m.settings(study.train), 0, (28, 28, 1), Plan())
    events = list(run_trial(job, data, CheckpointStorage(str(tmp_path))))
    assert isinstance(events[-1], Finished)
    assert seen.count("test") == 1 and seen[-1] == "test" and seen.count("val") == 2


def test_json_report_statistics_match_per_seed_values(tiny_mnist, one_thread, tiny_study_file, tmp_path, capsys):
    study = tiny_study_file(epochs=1, seeds=3)
    out = tmp_path / "out"
    run_here(study, out, tiny_mnist)
    capsys.readouterr()
    assert main(["report", str(out), "--format", "json"]) == 0  # in-process: the command's own main()
    report = json.loads(capsys.readouterr().out)
    assert report["study"]["validation"] == "holdout" and report["study"]["validation_note"] is None
    assert report["study"]["selection_metric"] == "val_accuracy"
    means = {}
    for m in report["models"]:
        acc = m["test_accuracy"]
        per_seed = sorted((t["seed"], t["test_accuracy"]) for t in m["trials"])
        assert [s for s, _ in per_seed] == [0, 1, 2]
        assert sorted(acc["values"]) == sorted(v for _, v in per_seed)
        assert acc == describe(acc["values"])
        assert set(acc) == {"mean", "std", "ci95", "n", "min", "max", "values"}
        assert isinstance(m["same_as_best"], bool) and isinstance(m["p_value"], float)
        final_val = sorted(t["epochs"][-1]["val_accuracy"] for t in m["trials"])
        assert sorted(m["val_accuracy"]["values"]) == final_val
        means[m["name"]] = m["val_accuracy"]["mean"]  # a holdout study selects on validation, not test
    best = max(means, key=means.get)
    assert next(m for m in report["models"] if m["name"] == best)["same_as_best"]
    assert main(["report", str(out), "--format", "markdown"]) == 0
    md = capsys.readouterr().out
    for m in report["models"]:
        cell = f"{100 * m['test_accuracy']['mean']:.2f} ± {100 * m['test_accuracy']['std']:.2f}"
        assert cell in md
    assert "★" in md


# ---------------------------------------------------------------- Markdown: user text cannot inject markup

HOSTILE = "x\n# Owned\n<script>alert(1)</script> | [link](http://evil) ![img](x) *b* `c` ~~s~~ $m$ &lt;i&gt;"


def _md_html(md: str) -> str:
    """The Markdown as a GitHub-like renderer (CommonMark + tables + strikethrough) turns it into HTML."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(md)


def _hostile_report() -> dict:
    def model(name, acc):
        return {"name": name, "kernel": "3x3", "description": "a | b\n## c", "params": 10, "mflops": 0.5,
                "test_accuracy": describe(acc), "test_loss": describe([0.1]), "seconds_per_epoch": 1.0,
                "states": {"complete": 1, "failed|x": 1}, "same_as_best": False}
    return {"study": {"name": "s|<b>t</b>", "description": HOSTILE, "dataset": "d*a*ta|x", "epochs": 1,
                      "batch_size": 32, "validation": "holdout", "trials": 2, "validation_note": None},
            "models": [model("m|1", [0.9, 0.91]), model("[m2](http://evil)", [0.5])]}


def test_markdown_report_escapes_user_text():
    from convstudy.report.markdown import render_markdown

    md = render_markdown(_hostile_report())
    html = _md_html(md)
    assert html.count("<h1>") == 1 and "<h2>" not in html  # only the report's own heading
    for tag in ("<script", "<b>", "<a ", "<code>", "<s>", "<del>", "&lt;i&gt;"):
        assert tag not in html, tag
    assert html.count("<em>") == 1 and html.count("<strong>") == 1  # the report's own footnote and dataset
    assert "<strong>d*a*ta|x</strong>" in html
    assert html.count("<img") == 2  # just the two plots
    assert "# Owned &lt;script&gt;alert(1)&lt;/script&gt; | [link](http://evil) ![img](x) *b*" in html
    assert "x # Owned" in md.replace("\\", "")  # newlines collapsed, text otherwise kept
    table = html.split("<table>")[1].split("</table>")[0]
    rows = table.split("<tr>")[1:]
    assert len(rows) == 3 and all(r.count("<td") + r.count("<th") == 10 for r in rows)
    assert "m|1" in table and "[m2](http://evil)" in table and "a | b ## c" in table
    assert "](plots/m%7C1.png)" in md  # the plot path of a strange name stays one URL


def test_compare_markdown_escapes_user_text():
    from convstudy.report.compare import render_compare_markdown

    acc = describe([0.9, 0.91])
    side = {"path": "/tmp/a|b/[x](http://evil)", "name": "a|<i>n</i>", "dataset": "d", "epochs": 1, "seeds": [0],
            "trials": 1, "device": "cpu\n# dev", "git_commit": None}
    row = {"name": "m|1", "test_accuracy_a": acc, "test_accuracy_b": acc, "difference": 0.0, "p_value": 1.0,
           "test": "welch", "significant": False, "seconds_per_epoch_a": 1.0, "seconds_per_epoch_b": 1.0,
           "speedup": 1.0}
    cmp = {"a": side, "b": dict(side, name="*b*"), "same_spec": True, "same_test_set": True, "alpha": 0.05,
           "models": [row], "only_a": ["[o](http://evil)"], "only_b": []}
    html = _md_html(render_compare_markdown(cmp))
    assert html.count("<h1>") == 1 and "<h2>" not in html
    for tag in ("<i>", "<a ", "<em>", "<img"):
        assert tag not in html, tag
    rows = html.split("<table>")[1].split("</table>")[0].split("<tr>")[1:]
    assert len(rows) == 2 and all(r.count("<td") + r.count("<th") == 10 for r in rows)
    assert "cpu # dev" in html and "/tmp/a|b/[x](http://evil)" in html

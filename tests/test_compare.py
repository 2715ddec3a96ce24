"""`convstudy compare`: two real study directories side by side, with Welch or McNemar significance."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from convstudy.cli import main
from convstudy.report.stats import mcnemar_p, welch_p
from convstudy.store import StudyStore
from test_html_report import run_study


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    """A: 2 seeds x 2 epochs; B: the same models, 1 seed x 1 epoch (both trained for real)."""
    tmp = tmp_path_factory.mktemp("compare")
    mp = pytest.MonkeyPatch()
    try:
        yield {"a": run_study(tmp, mp, name="two-epochs", epochs=2, seeds=2),
               "b": run_study(tmp, mp, name="one-epoch", epochs=1, seeds=1, description="<b>v2</b>"),
               "tmp": tmp, "monkeypatch": mp}
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def b2(studies):
    """B resumed with a second seed (in a copy, so B itself keeps one seed)."""
    out = studies["tmp"] / "b2"
    shutil.copytree(studies["b"], out)
    return run_study(studies["tmp"], studies["monkeypatch"], name="one-epoch", epochs=1, seeds=2,
                     description="<b>v2</b>", out=out)


def compare_json(capsys, a, b) -> dict:
    capsys.readouterr()
    assert main(["compare", str(a), str(b), "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_welch_over_seeds_on_both_sides(studies, b2, capsys):
    cmp = compare_json(capsys, studies["a"], b2)
    ra = json.loads((studies["a"] / "report.json").read_text())
    rb = json.loads((b2 / "report.json").read_text())
    assert [r["name"] for r in cmp["models"]] == ["small", "wide"] and not cmp["only_a"] and not cmp["only_b"]
    assert cmp["same_test_set"] and not cmp["same_spec"]  # epochs differ
    for row, ma, mb in zip(cmp["models"], ra["models"], rb["models"]):
        va, vb = ma["test_accuracy"]["values"], mb["test_accuracy"]["values"]
        assert row["test"] == "welch" and row["p_value"] == pytest.approx(welch_p(va, vb))
        assert row["difference"] == pytest.approx(np.mean(vb) - np.mean(va))
        assert row["significant"] == (row["p_value"] < 0.05)
        assert row["test_accuracy_a"]["n"] == row["test_accuracy_b"]["n"] == 2
        assert row["speedup"] == pytest.approx(ma["seconds_per_epoch"] / mb["seconds_per_epoch"])


def test_mcnemar_when_a_side_has_one_seed(studies, capsys):
    cmp = compare_json(capsys, studies["a"], studies["b"])
    a, c = StudyStore.open_existing(studies["a"]), StudyStore.open_existing(studies["b"])
    for row in cmp["models"]:
        assert row["test"] == "mcnemar" and row["mcnemar_seeds"] == [0, 0]
        assert row["test_accuracy_a"]["n"] == 2 and row["test_accuracy_b"]["n"] == 1
        pa, pc = a.load_predictions(row["name"], 0), c.load_predictions(row["name"], 0)
        correct = [(p.argmax(1) == y).numpy() for p, y in (pa, pc)]
        assert row["p_value"] == pytest.approx(mcnemar_p(*correct))


def test_every_format(studies, capsys, tmp_path):
    a, b = str(studies["a"]), str(studies["b"])
    capsys.readouterr()
    assert main(["compare", a, b]) == 0
    table = capsys.readouterr().out
    assert "two-epochs" in table and "one-epoch" in table and "mcnemar" in table and "small" in table
    assert main(["compare", a, b, "--format", "markdown"]) == 0
    md = capsys.readouterr().out
    assert md.count("\n| small |") == 1 and md.count("\n| wide |") == 1 and "|---|---:|" in md
    out = tmp_path / "cmp.html"
    assert main(["compare", a, b, "--format", "html", "-o", str(out)]) == 0
    page = out.read_text()
    assert page.startswith("<!doctype html>") and page.count("<tr") == 3 and 'data-v="small"' in page
    assert page.count("<script") == 1 and "https://" not in page


def test_compare_rejects_a_non_study_directory(studies, tmp_path, capsys):
    assert main(["compare", str(studies["a"]), str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not a study directory" in err and "Traceback" not in err


def test_seeds_that_all_tie_compare_and_report_without_a_warning(studies, tmp_path, capsys):
    """Seeds at one accuracy (std 0): no scipy RuntimeWarning, a point CI, ties p = 1, one tied side is Welch."""
    import sqlite3
    import warnings

    from scipy import stats

    accuracies = {"a": {"small": (0.9, 0.9), "wide": (0.1, 0.1)}, "b": {"small": (0.9, 0.9), "wide": (0.2, 0.25)}}
    tied = {}
    for side, models in accuracies.items():
        tied[side] = tmp_path / side
        shutil.copytree(studies["a"], tied[side])
        conn = sqlite3.connect(tied[side] / "study.db")
        with conn:
            for model, per_seed in models.items():
                for seed, acc in enumerate(per_seed):
                    conn.execute("UPDATE trials SET test_accuracy = ? WHERE model = ? AND seed = ?", (acc, model, seed))
        conn.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning would become an exception, so exit 1 with a traceback
        cmp = compare_json(capsys, tied["a"], tied["b"])
        assert main(["report", str(tied["b"]), "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    rows = {r["name"]: r for r in cmp["models"]}
    assert rows["small"]["test"] == "welch" and rows["small"]["p_value"] == 1.0 and not rows["small"]["significant"]
    # A constant at 0.1 against 0.2, 0.25: t = -0.125 / sqrt(0.00125 / 2) = -5 on 1 degree of freedom.
    assert rows["wide"]["p_value"] == pytest.approx(2 * stats.t.sf(5, 1))
    small = next(m for m in report["models"] if m["name"] == "small")
    assert small["test_accuracy"]["std"] == 0.0 and small["test_accuracy"]["ci95"] == [0.9, 0.9]


def test_markdown_of_a_study_shows_its_html_description_as_text(studies, capsys):
    """B's description is "<b>v2</b>": report.md, `report --format markdown` and compare keep it literal."""
    assert main(["report", str(studies["b"]), "--format", "markdown"]) == 0
    md = capsys.readouterr().out
    assert "<b>" not in md and "&lt;b&gt;v2&lt;/b&gt;" in md
    assert (studies["b"] / "report.md").read_text() == md

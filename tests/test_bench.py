"""`convstudy bench`: one quick smoke run of the real command, and its input errors."""

from __future__ import annotations

import json

import pytest


from convstudy.cli import main


def test_bench_json_reports_both_loops_and_the_peak(capsys):
    code = main(["bench", "--models", "k3-2", "--device", "cpu", "--seconds", "0.5", "--format", "json"])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["device"] == "cpu" and doc["peak_gflops"] > 0
    (m,) = doc["models"]
    assert m["name"] == "k3-2"
    assert {"name", "samples_per_s", "baseline_samples_per_s", "gflops", "peak_share"} <= set(m)
    assert m["samples_per_s"] > 0 and m["baseline_samples_per_s"] > 0
    assert abs(m["ratio"] - m["samples_per_s"] / m["baseline_samples_per_s"]) < 0.01
    assert 0 < m["peak_share"] == pytest.approx(m["gflops"] / doc["peak_gflops"], rel=0.01)


def test_bench_unknown_model_is_a_user_error(capsys):
    assert main(["bench", "--models", "k9-9", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "k9-9" in err and "k3-1" in err and "Traceback" not in err


def test_bench_rejects_non_positive_seconds(capsys):
    try:
        code = main(["bench", "--seconds", "0"])
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    assert "positive" in capsys.readouterr().err

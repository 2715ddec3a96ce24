"""`convstudy bench`: one quick smoke run of the real command, and its input errors."""

from __future__ import annotations

import json
import os

import pytest
import torch


from convstudy.measure.throughput import thread_counts
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


def test_bench_reports_each_sides_threads_and_the_ratio_to_the_best_plain_loop(capsys):
    threads = torch.get_num_threads()
    code = main(["bench", "--models", "k3-2", "--device", "cpu", "--seconds", "0.5", "--format", "json"])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["threads"] == doc["trainer"]["threads"] == doc["baseline"]["default_threads"] == threads
    assert doc["trainer"]["workers"] == doc["baseline"]["workers"] == 1
    tried = doc["baseline"]["threads_tried"]
    assert tried == thread_counts(threads, os.cpu_count()) and 1 in tried and threads in tried
    assert len(doc["load"]) == 2
    (m,) = doc["models"]
    by = m["baseline_by_threads"]
    assert sorted(map(int, by)) == tried
    assert m["baseline_samples_per_s"] == by[str(threads)]  # the old field keeps its meaning: default threads
    assert m["best_baseline_samples_per_s"] == max(by.values()) == by[str(m["best_baseline_threads"])]
    assert abs(m["best_ratio"] - m["samples_per_s"] / m["best_baseline_samples_per_s"]) < 0.01
    assert m["best_ratio"] <= m["ratio"] + 1e-9
    assert torch.get_num_threads() == threads  # the process's setting is restored
    # OMP_NUM_THREADS is set (conftest), so `convstudy run` would train one trial at a time at these threads.
    assert doc["study"] == {"threads": threads, "workers": 1}
    assert (m["study_threads"], m["study_workers"]) == (threads, 1) and m["study_samples_per_s"] > 0
    assert abs(m["study_best_ratio"] - m["study_samples_per_s"] / m["best_baseline_samples_per_s"]) < 0.01


def test_bench_times_the_study_with_the_measured_threads_and_workers(tmp_path, monkeypatch, capsys):
    from convstudy.measure import calibrate
    from convstudy.spec import resolve_study
    from convstudy.train import resolve_precision

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setenv("CONVSTUDY_CACHE_DIR", str(tmp_path))
    study = resolve_study("seed")
    (k32,) = [m for m in study.models if m.name == "k3-2"]
    key = calibrate.model_key(k32, k32.settings(study.train), (28, 28, 1),
                              resolve_precision("auto", torch.device("cpu")))
    # More threads barely pay, so two trials at once at 1 thread each finish a study soonest on 2 cores.
    rates = {str(t): 100.0 + t for t in thread_counts(torch.get_num_threads(), 2)}
    (tmp_path / "calibration.json").write_text(json.dumps({calibrate.machine_key(): {key: rates}}))
    code = main(["bench", "--models", "k3-2", "--device", "cpu", "--seconds", "0.3", "--format", "json"])
    assert code == 0
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert "calibrating" not in err  # the cached calibration decided, as it does for `convstudy run`
    assert doc["study"] == {"threads": 1, "workers": 2}
    assert doc["trainer"] == {"threads": torch.get_num_threads(), "workers": 1}  # the lone trial's figure stays
    (m,) = doc["models"]
    assert (m["study_threads"], m["study_workers"]) == (1, 2) and m["study_samples_per_s"] > 0
    assert m["study_workers"] * m["study_threads"] <= 2
    assert abs(m["study_best_ratio"] - m["study_samples_per_s"] / m["best_baseline_samples_per_s"]) < 0.01


def test_thread_counts_are_powers_of_two_up_to_the_cpus_with_the_default_and_cpu_count():
    assert thread_counts(2, 2) == [1, 2]
    assert thread_counts(6, 12) == [1, 2, 4, 6, 8, 12]
    assert thread_counts(1, 1) == [1]


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

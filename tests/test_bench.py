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

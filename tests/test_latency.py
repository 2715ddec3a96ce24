"""latency: `convstudy latency` and `run --latency` measure each trained model on the CPU into OUT/latency.json,
and the report carries it (JSON fields, the Pareto panels). Timings themselves are machine-dependent: never asserted."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import convstudy_cmd, write_tiny_study
from scipy.stats import binom

from convstudy.cli import main
from convstudy.measure.latency import MAX_FACTOR, MIN_REPEATS, median_ci, onnxruntime_version
from convstudy.train import default_channels_last, resolve_precision

# One xdist worker runs this file (`--dist loadgroup`), and its costly fixtures are session-scoped, so each is
# built once: a worker may run other files' tests in between, which would tear module fixtures down.
pytestmark = pytest.mark.xdist_group("test_latency")

FIELDS = ("batch1_ms", "batch256_ms_per_image")
REPEATS = str(MIN_REPEATS)


@pytest.fixture(scope="session")
def measured(tmp_path_factory, tiny_mnist_session):
    """A tiny two-model study trained for an epoch by `run --latency`, which measured both models."""
    root = tmp_path_factory.mktemp("latency")
    study, out = write_tiny_study(root / "tiny.toml", epochs=1, seeds=1), root / "out"
    proc = subprocess.run(convstudy_cmd("run", study, "--out", out, "--data-dir", tiny_mnist_session.dir, "--quiet",
                                        "--latency", "--latency-repeats", REPEATS),
                          env=tiny_mnist_session.env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return out, proc.stdout


def fresh(measured, tmp_path, keep_latency: bool = False):
    """A copy of the measured study directory, without its latency.json unless `keep_latency`."""
    out = tmp_path / "study"
    shutil.copytree(measured[0], out)
    if not keep_latency:
        (out / "latency.json").unlink()
    return out


def snapshot(out):
    return {p.relative_to(out): (p.stat().st_size, p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}


def check_entry(entry: dict, repeats: int = MIN_REPEATS, precision: str = "auto") -> None:
    cpu = torch.device("cpu")
    assert entry["runtime"] == f"torch {torch.__version__}" and entry["device"].startswith("cpu: ")
    assert entry["precision"] == resolve_precision(precision, cpu) and entry["channels_last"] == default_channels_last(cpu)
    assert entry["threads"] == entry["hardware"]["threads"] >= 1 and entry["seed"] == 0
    hw = entry["hardware"]
    assert hw["cpu"] and hw["cores"] >= 1 and hw["torch"] == torch.__version__ and hw["onnxruntime"] == onnxruntime_version()
    runs = [entry, *entry["other_runtimes"]]
    assert [r["runtime"].split()[0] for r in runs] == ["torch"] + ["onnxruntime"] * (onnxruntime_version() is not None)
    for r in runs:
        for field in FIELDS:
            t = r[field]
            assert repeats <= t["n"] <= MAX_FACTOR * repeats and t["ci95"][0] <= t["median"] <= t["ci95"][1] and t["median"] > 0


def test_run_latency_measures_every_model_and_the_run_reports_it(measured):
    out, stdout = measured
    data = json.loads((out / "latency.json").read_text())
    assert sorted(data["models"]) == ["small-a", "small-b"] and "quantile_test" in data["method"]
    for entry in data["models"].values():
        check_entry(entry)
    assert "Inference latency per image" in stdout and "small-b" in stdout
    report = json.loads((out / "report.json").read_text())  # the run refreshed its reports after measuring
    for m in report["models"]:
        assert set(FIELDS) | {"device", "runtime"} <= set(m["latency"]) and "hardware" not in m["latency"]
        assert m["latency"]["batch1_ms"] == data["models"][m["name"]]["batch1_ms"]
    assert report["study"]["latency"]["hardware"] == [data["models"]["small-a"]["hardware"]]
    trade = (out / "report.html").read_text().split('id="tradeoffs"')[1]
    for label in ("parameters", "MFLOPs per image", "latency at batch 1 (ms per image)",
                  "latency at batch 256 (ms per image)", "by latency at batch 256"):
        assert label in trade, label


def test_latency_command_writes_only_latency_json(measured, tmp_path, capsys):
    out = fresh(measured, tmp_path)
    before = snapshot(out)
    assert main(["latency", str(out), "--repeats", REPEATS, "--precision", "fp32"]) == 0
    stdout = capsys.readouterr().out
    after = snapshot(out)
    assert set(after) - set(before) == {Path("latency.json")}
    assert all(after[p] == before[p] for p in before)  # study.db, weights and reports untouched
    entries = json.loads((out / "latency.json").read_text())["models"]
    for entry in entries.values():
        check_entry(entry, precision="fp32")
    assert "small-a" in stdout and "small-b" in stdout and "not measured" not in stdout
    assert ("onnxruntime" in stdout) == (onnxruntime_version() is not None)
    # `report` reads it (and writes nothing); the per-runtime rows keep the field names
    before = snapshot(out)
    assert main(["report", str(out), "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert snapshot(out) == before
    lat = {m["name"]: m["latency"] for m in report["models"]}
    assert lat["small-a"]["batch256_ms_per_image"] == entries["small-a"]["batch256_ms_per_image"]
    for r in lat["small-b"]["other_runtimes"]:
        assert set(FIELDS) | {"device", "runtime"} <= set(r)


def test_budget_and_models(measured, tmp_path, capsys):
    out = fresh(measured, tmp_path)
    # The budget is spent after the first model: the second is listed as not measured, never dropped.
    assert main(["latency", str(out), "--repeats", REPEATS, "--budget", "0.001"]) == 0
    stdout = capsys.readouterr().out
    entries = json.loads((out / "latency.json").read_text())["models"]
    check_entry(entries["small-a"])
    assert "budget of 0.001 s" in entries["small-b"]["not_measured"] and "not measured" in stdout
    measured_a = entries["small-a"]
    # --models picks models and their order; a budget note never replaces a measurement
    assert main(["latency", str(out), "--repeats", REPEATS, "--budget", "0.001", "--models", "small-b,small-a"]) == 0
    entries = json.loads((out / "latency.json").read_text())["models"]
    check_entry(entries["small-b"])
    assert entries["small-a"] == measured_a
    # a model without a complete trial is named with the reason
    with sqlite3.connect(out / "study.db") as conn:
        conn.execute("UPDATE trials SET state = 'failed' WHERE model = 'small-b'")
    capsys.readouterr()
    assert main(["latency", str(out), "--repeats", REPEATS, "--models", "small-b"]) == 0
    assert "no complete trial" in capsys.readouterr().out
    assert json.loads((out / "latency.json").read_text())["models"]["small-b"] == entries["small-b"]


def test_study_without_latency_still_reports(measured, tmp_path, capsys):
    out = fresh(measured, tmp_path)
    assert main(["report", str(out), "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["study"]["latency"] is None and all(m["latency"] is None for m in report["models"])
    assert main(["report", str(out), "--format", "html", "-o", str(tmp_path / "r.html")]) == 0
    trade = (tmp_path / "r.html").read_text().split('id="tradeoffs"')[1]
    assert "training time per trial" in trade and "latency at batch" not in trade


def test_damaged_latency_file_is_a_warning_in_reports_and_kept(measured, tmp_path, capsys):
    out = fresh(measured, tmp_path)
    (out / "latency.json").write_text('{"models": {"small-a": {"batch1_ms": 3, "other_runtimes": []}}}')
    assert main(["report", str(out), "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert any("latency.json" in w and "small-a" in w for w in report["study"]["warnings"])
    assert all(m["latency"] is None for m in report["models"])
    assert main(["latency", str(out), "--repeats", REPEATS]) == 2
    assert "batch1_ms has no median" in capsys.readouterr().err
    assert (out / "latency.json").read_text() == '{"models": {"small-a": {"batch1_ms": 3, "other_runtimes": []}}}'


@pytest.mark.parametrize("args, message", [
    (["--models", "nope"], 'has no model "nope"'),
    (["--repeats", "5"], "at least 6"),
    (["--budget", "-1"], "expected seconds >= 0"),
    (["--budget", "soon"], "expected seconds"),
    (["--precision", "fp8"], "invalid choice"),
])
def test_bad_input_is_one_line_exit_2(measured, tmp_path, capsys, args, message):
    out = fresh(measured, tmp_path)
    assert main(["latency", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("convstudy: error: ") and err.count("\n") == 1 and message in err, err
    assert not (out / "latency.json").exists()


def test_not_a_study_directory(tmp_path, capsys):
    assert main(["latency", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a study directory" in err


@pytest.mark.parametrize("n", [MIN_REPEATS, 30, 50, 101])
def test_median_ci_covers_95_percent_without_assuming_a_distribution(n):
    values = list(np.random.default_rng(n).lognormal(size=n))  # skewed, as timings on a shared machine are
    stat = median_ci(values)
    ranks = sorted(values)
    lo, hi = ranks.index(stat["ci95"][0]), ranks.index(stat["ci95"][1])  # 0-based order statistics
    # P(X_(lo+1) <= median < X_(hi+1)) = P(lo+1 <= B <= hi) for B ~ Binomial(n, 1/2)
    assert binom.cdf(hi, n, 0.5) - binom.cdf(lo, n, 0.5) >= 0.95
    assert stat["median"] == float(np.median(values)) and stat["n"] == n

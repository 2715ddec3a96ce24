"""CLI end to end on a tiny IDX dataset written to a temp --data-dir: run, report, models, datasets, resume."""

from __future__ import annotations

import csv
import io
import json
import signal
import sqlite3
import subprocess
import time

from conftest import convstudy_cmd, db_rows
from convstudy.cli import main
from convstudy.data import REGISTRY


def test_run_then_report_in_every_format(run_cli, tiny_mnist, tiny_study_file, tmp_path, capsys):
    study = tiny_study_file(epochs=2, seeds=2)
    out = tmp_path / "out"
    res = run_cli("run", study, "--data-dir", tiny_mnist.dir, "--out", out, "--device", "cpu")
    assert res.returncode == 0, res.stderr
    assert "Epoch 2/2" in res.stdout and "small-a" in res.stdout
    for name in ("study.db", "report.json", "report.md", "plots/small-a.png", "plots/small-b.png",
                 "trials/small-a/seed-0/weights.safetensors", "trials/small-b/seed-1/predictions.safetensors"):
        assert (out / name).exists(), name
    assert not (out / "trials/small-a/seed-0/checkpoint.safetensors").exists()  # removed once complete

    def report_cli(*args) -> str:  # `report` in-process: the same main() as the command, without a
        capsys.readouterr()  # fresh interpreter's few seconds of imports per call
        assert main(["report", str(out), *map(str, args)]) == 0
        return capsys.readouterr().out

    report = json.loads(report_cli("--format", "json"))
    assert report["study"]["name"] == "tiny"
    models = {m["name"]: m for m in report["models"]}
    assert set(models) == {"small-a", "small-b"}
    a = models["small-a"]
    assert a["params"] == 4 * 9 + 4 + 13 * 13 * 4 * 10 + 10 and a["trainable_params"] == a["params"]
    assert len(a["test_accuracy"]["values"]) == 2 and len(a["epochs"]) == 2
    for key in ("name", "params", "trainable_params", "description", "test_accuracy", "test_loss", "epochs"):
        assert key in a
    rows = db_rows(out / "study.db", "SELECT seed, test_accuracy FROM trials WHERE model='small-a' ORDER BY seed")
    assert a["test_accuracy"]["values"] == [r[1] for r in rows]

    md = report_cli("--format", "markdown")
    assert "| small-a |" in md.replace("| 3x3    |", "|") or "small-a" in md
    assert "](plots/small-a.png)" in md and " ± " in md
    table = list(csv.DictReader(io.StringIO(report_cli("--format", "csv"))))
    assert len(table) == 4 and {r["model"] for r in table} == {"small-a", "small-b"}
    text = report_cli("--format", "table")
    assert "small-b" in text and "±" in text
    target = tmp_path / "r.json"
    report_cli("--format", "json", "-o", target)
    assert json.loads(target.read_text())["study"]["name"] == "tiny"

    capsys.readouterr()
    assert main(["run", str(study), "--data-dir", str(tiny_mnist.dir), "--out", str(out), "--device", "cpu"]) == 0
    assert "nothing to run" in " ".join(capsys.readouterr().out.split())
    assert db_rows(out / "study.db", "SELECT COUNT(*) FROM epochs")[0][0] == 8


def test_notebook_validation_is_said_in_reports(tiny_mnist, one_thread, tiny_study_file, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", str(tiny_study_file(epochs=1, seeds=1, validation="test")), "--models", "small-a",
                 "--data-dir", str(tiny_mnist.dir), "--out", str(out)]) == 0
    assert "test set was also the validation data" in " ".join(capsys.readouterr().out.split())
    assert "test set was also the validation data" in (out / "report.md").read_text()
    assert json.loads((out / "report.json").read_text())["study"]["validation_note"]


def test_killed_run_rerun_skips_finished_trials(tiny_mnist, one_thread, tiny_study_file, tmp_path, capsys):
    study = tiny_study_file(epochs=2, seeds=1)
    # The second model trains long enough that the kill lands while it runs, never after it.
    study.write_text(study.read_text() + 'train = {epochs = 20}\n')
    out = tmp_path / "out"
    proc = subprocess.Popen(convstudy_cmd("run", study, "--data-dir", tiny_mnist.dir, "--out", out),
                            env=tiny_mnist.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while time.time() < deadline:  # kill -9 once small-a is complete and small-b is mid-training
        try:
            if db_rows(out / "study.db", "SELECT COUNT(*) FROM trials WHERE state='complete'")[0][0] and \
                    db_rows(out / "study.db", "SELECT epochs_done FROM trials WHERE model='small-b'")[0][0] >= 1:
                break
        except sqlite3.OperationalError:  # not created yet
            pass
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = db_rows(out / "study.db", "SELECT model, finished_at FROM trials WHERE state='complete'")
    assert finished
    capsys.readouterr()
    assert main(["run", str(study), "--data-dir", str(tiny_mnist.dir), "--out", str(out)]) == 0  # in this process
    assert "already finished" in " ".join(capsys.readouterr().out.split())
    for model, finished_at in finished:  # untouched: not trained again
        assert db_rows(out / "study.db", "SELECT finished_at, attempts FROM trials WHERE model=?", (model,)) == [(finished_at, 1)]
    assert db_rows(out / "study.db", "SELECT COUNT(*) FROM trials WHERE state='complete'")[0][0] == 2
    assert db_rows(out / "study.db", "SELECT attempts FROM trials WHERE model='small-b'") == [(2,)]


def test_models_command_table_and_json(capsys):
    assert main(["models", "seed", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["models"]) == 12
    k31 = data["models"][0]
    assert k31["name"] == "k3-1" and k31["params"] == 1_199_882
    assert k31["description"] == "ConvNet(32-64) | 2 Dropouts | 1 MaxPool | Dense(128-10) | Adadelta"
    assert {"name", "params", "trainable_params", "flops", "description", "layers"} <= set(k31)
    assert main(["models", "seed"]) == 0
    table = capsys.readouterr().out
    assert "Total params: 84,266" in table and "Trainable params: 84,138" in table and "(None, 26, 26, 32)" in table


def test_datasets_command_lists_registry(tiny_mnist, capsys):
    assert main(["datasets", "--data-dir", str(tiny_mnist.dir.parent)]) == 0
    out = capsys.readouterr().out
    for name in REGISTRY:
        assert name in out


def test_missing_data_offline_is_one_line(tiny_mnist, tmp_path, tiny_study_file, capsys):  # no mirrors: offline
    assert main(["run", str(tiny_study_file(epochs=1, seeds=1)), "--data-dir", str(tmp_path / "empty"),
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--data-dir" in err


def test_removed_speed_flags_are_unknown_arguments(tiny_study_file, tmp_path, capsys):
    # Seed stacking and side-by-side streams were never measured faster (issue 27): both flags are gone.
    for flag in ("--stack-seeds", "--streams"):
        assert main(["run", str(tiny_study_file()), "--out", str(tmp_path / "o"), flag, "1"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"unrecognized arguments: {flag} 1" in err
    assert not (tmp_path / "o").exists()


def test_python_dash_m_and_version(run_cli):
    res = run_cli("--version")
    assert res.returncode == 0 and res.stdout.startswith("convstudy ")

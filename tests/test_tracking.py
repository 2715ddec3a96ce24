"""TensorBoard and MLflow exports (issue 19, acceptance 3): read back with the libraries' own readers."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import convstudy_cmd, epoch_metrics, trial_results

from convstudy.cli import main
from convstudy.store import State

# One xdist worker runs this file (`--dist loadgroup`), and its costly fixtures are session-scoped, so each is
# built once: a worker may run other files' tests in between, which would tear module fixtures down.
pytestmark = pytest.mark.xdist_group("test_tracking")

pytest.importorskip("tensorboard", reason="tensorboard not installed: pip install 'convstudy[tracking]'")
pytest.importorskip("mlflow", reason="mlflow not installed: pip install 'convstudy[tracking]'")

STUDY = """\
name = "tiny-tracking"
dataset = "mnist"
seeds = 2

[train]
epochs = 2
batch_size = 64
optimizer = "adam"

[[models]]
name = "k3"
layers = ["conv(4,3)", "pool(2)", "flatten", "dense(10)"]
factors = {kernel = 3, pool = "max"}

[[models]]
name = "k5"
layers = ["conv(4,5)", "pool(2)", "flatten", "dense(10)"]
factors = {kernel = 5, pool = "max"}
"""
TRIALS = {(m, s) for m in ("k3", "k5") for s in (0, 1)}
EPOCH_COLUMNS = {"train/loss": 0, "train/accuracy": 1, "val/loss": 2, "val/accuracy": 3}


@pytest.fixture(scope="session")
def study_dir(tmp_path_factory, tiny_mnist_session) -> Path:
    """A finished 2 models x 2 seeds x 2 epochs study on the tiny MNIST, made by `convstudy run`."""
    root = tmp_path_factory.mktemp("tracking")
    (root / "study.toml").write_text(STUDY)
    out = root / "out"
    done = subprocess.run(convstudy_cmd("run", root / "study.toml", "--out", out, "--data-dir", tiny_mnist_session.dir,
                                        "--quiet"), env=tiny_mnist_session.env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return out


def snapshot(root: Path) -> dict[str, str]:
    """Every file under `root` (names included) and its SHA-256: what 'unchanged byte for byte' compares."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("convstudy: error: ") and "Traceback" not in err, err
    return err


# ------------------------------------------------------------------------------------------ TensorBoard

def test_tensorboard_event_files_hold_the_epochs_test_metrics_and_hparams(study_dir, tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import metadata

    before = snapshot(study_dir)
    logdir = tmp_path / "tb"
    assert main(["report", str(study_dir), "--format", "tensorboard", "-o", str(logdir)]) == 0
    assert "wrote 4 trials" in capsys.readouterr().err
    epochs, results = epoch_metrics(study_dir / "study.db"), trial_results(study_dir / "study.db")
    assert {(m, s) for m, s, _ in epochs} == TRIALS and len(epochs) == 8
    for model, seed in TRIALS:
        acc = EventAccumulator(str(logdir / model / f"seed-{seed}"))
        acc.Reload()
        for tag, col in EPOCH_COLUMNS.items():
            got = [(e.step, e.value) for e in acc.Scalars(tag)]
            want = [(ep, pytest.approx(epochs[model, seed, ep][col], rel=1e-6)) for ep in (1, 2)]  # float32 in files
            assert got == want, (model, seed, tag)
        assert [e.step for e in acc.Scalars("epoch/seconds")] == [1, 2]
        state, test_acc, test_loss = results[model, seed]
        assert state == "complete"
        assert [(e.step, e.value) for e in acc.Scalars("test/accuracy")] == [(2, pytest.approx(test_acc, rel=1e-6))]
        assert [e.value for e in acc.Scalars("test/loss")] == [pytest.approx(test_loss, rel=1e-6)]
        start = metadata.parse_session_start_info_plugin_data(
            acc.PluginTagToContent(metadata.PLUGIN_NAME)[metadata.SESSION_START_INFO_TAG])
        hp = start.hparams
        assert hp["model"].string_value == model and hp["seed"].number_value == seed
        assert hp["factor.kernel"].number_value == int(model[1]) and hp["factor.pool"].string_value == "max"
        assert hp["optimizer"].string_value == "adam" and hp["optimizer.lr"].number_value == pytest.approx(0.001)
        assert hp["epochs"].number_value == 2 and hp["batch_size"].number_value == 64 and hp["params"].number_value > 0
    root = EventAccumulator(str(logdir))
    root.Reload()
    config = metadata.parse_experiment_plugin_data(
        root.PluginTagToContent(metadata.PLUGIN_NAME)[metadata.EXPERIMENT_TAG])
    kernel = next(h for h in config.hparam_infos if h.name == "factor.kernel")
    assert [v.number_value for v in kernel.domain_discrete.values] == [3, 5]
    assert {m.name.tag for m in config.metric_infos} == {"test/accuracy", "test/loss", "val/accuracy", "val/loss"}
    assert snapshot(study_dir) == before

    # A second export into the same directory would duplicate every point: refused, nothing changed.
    written = snapshot(logdir)
    assert main(["report", str(study_dir), "--format", "tensorboard", "-o", str(logdir)]) == 2
    assert "not an empty directory" in one_line_error(capsys)
    assert snapshot(logdir) == written
    for bad, says in ((study_dir / "tb", "inside the study directory"), (None, "give the directory")):
        assert main(["report", str(study_dir), "--format", "tensorboard", *(["-o", str(bad)] if bad else [])]) == 2
        assert says in one_line_error(capsys)
    assert snapshot(study_dir) == before


# ----------------------------------------------------------------------------------------------- MLflow

def mlflow_runs(uri: str) -> dict[str, object]:
    """The study's trial runs in the store at `uri`, by model/seed, read back through MlflowClient."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("tiny-tracking")
    runs = client.search_runs([exp.experiment_id])
    return {r.data.tags.get("convstudy.kind", "?") + ":" + r.data.tags.get("model", "") + "/" +
            r.data.tags.get("seed", ""): r for r in runs}, len(runs), client


def test_mlflow_file_store_holds_one_run_per_trial_and_reruns_update(study_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks for it to read a file store here
    uri = (tmp_path / "mlruns").as_uri()
    before = snapshot(study_dir)

    # First from a copy of the study as it stood mid-run: trial k5 seed 1 running, after its first epoch.
    partial = tmp_path / "partial"
    shutil.copytree(study_dir, partial)
    conn = sqlite3.connect(partial / "study.db")
    with conn:
        (tid,) = conn.execute("SELECT id FROM trials WHERE model='k5' AND seed=1").fetchone()
        conn.execute("DELETE FROM epochs WHERE trial_id=? AND epoch=2", (tid,))
        conn.execute("UPDATE trials SET state='running', epochs_done=1, test_accuracy=NULL, test_loss=NULL, "
                     "finished_at=NULL WHERE id=?", (tid,))
    conn.close()
    assert main(["export-mlflow", str(partial), "--tracking-uri", uri]) == 0
    assert "4 runs created, 0 updated, 0 unchanged" in capsys.readouterr().out
    runs, n, _ = mlflow_runs(uri)
    assert n == 5 and runs["trial:k5/1"].data.tags["state"] == "running"
    assert runs["trial:k5/1"].info.status == "RUNNING" and "test/accuracy" not in runs["trial:k5/1"].data.metrics

    # Then the finished study: the running trial gets its second epoch and test metrics, the rest stay.
    for _ in range(2):
        assert main(["export-mlflow", str(study_dir), "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    assert "0 runs created, 1 updated, 3 unchanged" in out and "0 runs created, 0 updated, 4 unchanged" in out
    runs, n, client = mlflow_runs(uri)
    assert n == 5, "a rerun made new runs"  # 4 trials and the study's run
    epochs, results = epoch_metrics(study_dir / "study.db"), trial_results(study_dir / "study.db")
    study_run = runs["study:/"]
    for model, seed in TRIALS:
        run = runs[f"trial:{model}/{seed}"]
        assert run.info.status == "FINISHED" and run.data.tags["state"] == "complete"
        assert run.data.tags["mlflow.parentRunId"] == study_run.info.run_id
        assert run.data.tags["factor.kernel"] == model[1] and run.data.params["factor.kernel"] == model[1]
        assert run.data.params["layers"].startswith(f"conv(4,{model[1]})") and run.data.params["optimizer"] == "adam"
        for tag, col in EPOCH_COLUMNS.items():
            history = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, tag)]
            assert sorted(history) == [(ep, epochs[model, seed, ep][col]) for ep in (1, 2)], (model, seed, tag)
        _, test_acc, test_loss = results[model, seed]
        assert run.data.metrics["test/accuracy"] == test_acc and run.data.metrics["test/loss"] == test_loss
        assert len(client.get_metric_history(run.info.run_id, "test/accuracy")) == 1
    assert {a.path for a in client.list_artifacts(study_run.info.run_id)} == {"report.html", "report.json"}

    client.delete_experiment(study_run.info.experiment_id)  # MLflow keeps its name: refused in one line
    assert main(["export-mlflow", str(study_dir), "--tracking-uri", uri]) == 2
    assert "is deleted" in one_line_error(capsys)
    assert snapshot(study_dir) == before


# MLflow's status for each trial state, and whether the study's run is then finished (every trial ended).
MLFLOW_STATUS = {"pending": ("SCHEDULED", False), "running": ("RUNNING", False), "complete": ("FINISHED", True),
                 "failed": ("FAILED", True), "diverged": ("FAILED", True), "pruned": ("FINISHED", True)}


@pytest.mark.parametrize("state", list(State))
def test_every_trial_state_has_an_mlflow_status(state, study_dir, tmp_path, capsys, monkeypatch):
    """A new State without its MLflow status fails here (export-mlflow once failed on `pruned` with a KeyError)."""
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    study = tmp_path / "study"
    shutil.copytree(study_dir, study)
    conn = sqlite3.connect(study / "study.db")
    with conn:
        conn.execute("UPDATE trials SET state=? WHERE model='k5' AND seed=1", (state.value,))
    conn.close()
    uri = (tmp_path / "mlruns").as_uri()
    assert main(["export-mlflow", str(study), "--tracking-uri", uri]) == 0, capsys.readouterr().err
    runs, _, _ = mlflow_runs(uri)
    status, ended = MLFLOW_STATUS[state.value]
    assert runs["trial:k5/1"].info.status == status and runs["trial:k5/1"].data.tags["state"] == state.value
    assert runs["study:/"].info.status == ("FINISHED" if ended else "RUNNING")


def test_an_export_that_fails_midway_ends_the_study_run_and_a_rerun_completes_it(study_dir, tmp_path, capsys,
                                                                                   monkeypatch):
    from mlflow.exceptions import MlflowException

    from convstudy.report import tracking

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = (tmp_path / "mlruns").as_uri()
    sync, calls = tracking._sync_trial, []

    def lost_on_the_second(*args):  # the tracking server goes away after the first trial's run
        calls.append(args)
        if len(calls) == 2:
            raise MlflowException("connection refused")
        return sync(*args)

    monkeypatch.setattr(tracking, "_sync_trial", lost_on_the_second)
    assert main(["export-mlflow", str(study_dir), "--tracking-uri", uri]) == 2
    assert "connection refused" in one_line_error(capsys)
    runs, n, _ = mlflow_runs(uri)
    assert n == 2 and runs["study:/"].info.status == "FAILED" and runs["study:/"].info.end_time
    monkeypatch.setattr(tracking, "_sync_trial", sync)
    assert main(["export-mlflow", str(study_dir), "--tracking-uri", uri]) == 0
    assert "3 runs created, 0 updated, 1 unchanged" in capsys.readouterr().out
    runs, n, _ = mlflow_runs(uri)
    assert n == 5 and {r.info.status for r in runs.values()} == {"FINISHED"}


def test_missing_extra_is_one_line_exit_2(study_dir, tmp_path, capsys, monkeypatch):
    before = snapshot(study_dir)
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` now raises ImportError
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    assert main(["export-mlflow", str(study_dir), "--tracking-uri", (tmp_path / "mlruns").as_uri()]) == 2
    assert "pip install 'convstudy[tracking]'" in one_line_error(capsys)
    assert main(["report", str(study_dir), "--format", "tensorboard", "-o", str(tmp_path / "tb")]) == 2
    assert "needs tensorboard" in one_line_error(capsys)
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "tb").exists()
    assert snapshot(study_dir) == before

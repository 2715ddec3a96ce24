"""Crash safety end to end: kill -9, Ctrl-C, two processes on one directory, divergence.

Every run is a real `python -m convstudy run` subprocess on the tiny MNIST. Results of interrupted
and concurrent runs must equal an uninterrupted run's exactly (per-epoch metrics and test accuracy).
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import convstudy_cmd, db_rows, epoch_metrics, run_here, trial_results, write_tiny_study

from convstudy.cli import main
from convstudy.errors import StoreError
from convstudy.store import load_tensors

EPOCHS, SEEDS = 4, [0, 1]
N_EPOCH_ROWS = 2 * len(SEEDS) * EPOCHS


def start(study: Path, out: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(convstudy_cmd("run", study, "--out", out, "--data-dir", env["TINY_DATA_DIR"], "--quiet"),
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 240) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def progress(out: Path) -> tuple[int, int]:
    """(epochs checkpointed or finished, trials finished), read from the trial files, not the database.

    A checkpoint appears only by an atomic rename, so it is an exact signal that an epoch finished;
    polling study.db from the test (a connection every 20 ms) was seen to miss a busy run's progress.
    """
    epochs = finished = 0
    for trial in (out / "trials").glob("*/seed-*"):
        if (trial / "weights.safetensors").exists():
            epochs, finished = epochs + EPOCHS, finished + 1
        elif (trial / "checkpoint.safetensors").exists():
            try:
                epochs += int(load_tensors(trial / "checkpoint.safetensors")[1]["epoch"])
            except StoreError:  # renamed away between the check and the read
                pass
    return epochs, finished


def wait_for(proc: subprocess.Popen, out: Path, which: int, at_least: int, timeout: float = 180) -> None:
    """Poll `progress(out)[which]` until it reaches `at_least`; fails if the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if progress(out)[which] >= at_least:
            return
        if proc.poll() is not None:
            pytest.fail(f"run ended (rc {proc.returncode}) before progress[{which}] reached {at_least}: "
                        f"{proc.stderr.read()}")
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    pytest.fail(f"timed out waiting for progress[{which}] >= {at_least}")


EPOCHS_DONE, TRIALS_DONE = 0, 1


@pytest.fixture(scope="module")
def env(tiny_mnist_session):
    return {**tiny_mnist_session.env, "TINY_DATA_DIR": str(tiny_mnist_session.dir)}


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    return write_tiny_study(tmp_path_factory.mktemp("study") / "tiny.toml", epochs=EPOCHS, seeds=SEEDS)


@pytest.fixture(scope="module")
def baseline(study, env, tmp_path_factory) -> Path:
    """study.db of an uninterrupted run."""
    out = tmp_path_factory.mktemp("baseline") / "out"
    rc, _, err = finish(start(study, out, env))
    assert rc == 0, err
    return out / "study.db"


def assert_same_results(db: Path, baseline: Path) -> None:
    got, want = trial_results(db), trial_results(baseline)
    assert all(state == "complete" for state, _, _ in want.values())
    assert got == want  # exact floats: per-seed test accuracy and loss
    assert epoch_metrics(db) == epoch_metrics(baseline)
    assert len(epoch_metrics(db)) == N_EPOCH_ROWS


def test_kill_9_three_times_then_resume_equals_an_uninterrupted_run(study, env, baseline, tiny_mnist, one_thread,
                                                                   tmp_path, capsys):
    out = tmp_path / "out"
    db = out / "study.db"
    rng = random.Random(4)
    # Kill points: just after the first epoch row; mid-run after a random pause; after a finished trial.
    plans = [(EPOCHS_DONE, 1, 0.0), (EPOCHS_DONE, 3, rng.uniform(0.05, 0.3)), (TRIALS_DONE, 1, rng.uniform(0.0, 0.2))]
    for which, more, pause in plans:
        proc = start(study, out, env)
        wait_for(proc, out, which, progress(out)[which] + more)
        time.sleep(pause)
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert progress(out)[TRIALS_DONE] < 2 * len(SEEDS)
    capsys.readouterr()
    run_here(study, out, tiny_mnist)  # the resume, in this process
    assert "resuming" in capsys.readouterr().out
    assert_same_results(db, baseline)
    dupes = db_rows(db, "SELECT trial_id, epoch, COUNT(*) FROM epochs GROUP BY trial_id, epoch HAVING COUNT(*) > 1")
    assert dupes == []
    restarts = db_rows(db, "SELECT detail FROM events WHERE kind='restart'")
    assert restarts and all("gone" in d for (d,) in restarts)
    assert db_rows(db, "SELECT MAX(attempts) FROM trials")[0][0] >= 2
    assert db_rows(db, "SELECT COUNT(*) FROM runs")[0][0] == 4


def test_two_processes_on_one_directory_never_train_the_same_trial(study, env, baseline, tmp_path):
    out = tmp_path / "out"
    procs = [start(study, out, env) for _ in range(2)]
    results = [finish(p) for p in procs]
    assert [rc for rc, _, _ in results] == [0, 0], [err for _, _, err in results]
    db = out / "study.db"
    assert db_rows(db, "SELECT MAX(attempts) FROM trials")[0][0] == 1
    kinds = db_rows(db, "SELECT trial_id, kind FROM events WHERE kind IN ('start','restart') ORDER BY trial_id")
    assert sorted(kinds) == sorted((t, "start") for (t,) in db_rows(db, "SELECT id FROM trials"))
    assert_same_results(db, baseline)


def test_ctrl_c_checkpoints_says_how_to_resume_and_resume_completes(study, env, baseline, tiny_mnist, one_thread,
                                                                   tmp_path):
    out = tmp_path / "out"
    db = out / "study.db"
    proc = start(study, out, env)
    wait_for(proc, out, EPOCHS_DONE, 1)
    proc.send_signal(signal.SIGINT)
    rc, stdout, err = finish(proc)
    assert rc == 130, err
    assert "Resume with the same command" in " ".join((stdout + err).split())
    assert "Traceback" not in err
    states = [s for _, (s, _, _) in trial_results(db).items()]
    assert "running" not in states and "pending" in states
    released = db_rows(db, "SELECT error FROM trials WHERE state='pending' AND epochs_done > 0")
    assert released == [("interrupted",)]
    run_here(study, out, tiny_mnist)  # the resume, in this process
    assert_same_results(db, baseline)


def test_divergence_marks_the_trial_and_the_study_goes_on(tiny_mnist, one_thread, tmp_path, capsys):
    study = write_tiny_study(tmp_path / "tiny.toml", epochs=3, seeds=1)
    # weight decay of 10 at lr 10 multiplies every weight by -99 a step: they overflow within an epoch
    sgd = 'train = { optimizer = { name = "sgd", lr = 10.0, weight_decay = 10.0 } }'
    text = study.read_text().replace('name = "small-b"', f'name = "small-b"\n{sgd}')
    study.write_text(text)
    out = tmp_path / "out"
    # in this process: what divergence does to the study is the question here, not the process
    assert main(["run", str(study), "--out", str(out), "--data-dir", str(tiny_mnist.dir), "--quiet"]) == 0
    results = trial_results(out / "study.db")
    assert results[("small-a", 0)][0] == "complete"
    assert results[("small-b", 0)][0] == "diverged"
    (epoch,) = db_rows(out / "study.db", "SELECT diverged_epoch FROM trials WHERE model='small-b'")[0]
    assert epoch in (1, 2, 3)
    capsys.readouterr()
    assert main(["report", str(out), "--format", "json"]) == 0
    models = {m["name"]: m for m in json.loads(capsys.readouterr().out)["models"]}
    assert models["small-b"]["diverged"] == 1
    assert models["small-b"]["trials"][0]["diverged_epoch"] == epoch
    assert models["small-b"]["test_accuracy"]["n"] == 0
    assert models["small-a"]["test_accuracy"]["n"] == 1
    assert main(["report", str(out), "--format", "markdown"]) == 0
    assert "1 diverged" in capsys.readouterr().out

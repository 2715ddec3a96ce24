"""The Ray executor: same results as the local executor, lost workers resumed from checkpoints.

One local Ray instance (num_cpus=2, conftest.ray_session) serves every Ray test of the session; run_study finds
it already initialised and leaves it running. The dataset is the tiny synthetic MNIST from conftest.py.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import RAY, db_rows
from convstudy.cli import main
from convstudy.executors import RunOptions, run_study
from convstudy.spec import build_study, resolve_study

pytestmark = pytest.mark.xdist_group(RAY)  # the session's one Ray (conftest.ray_session)

RAY_MISSING = "convstudy: error: --executor ray needs Ray: pip install 'convstudy[ray]'"


def slow_study(epochs: int = 4):
    """One model big enough that an epoch of the tiny data takes a noticeable moment on one thread."""
    return build_study({
        "name": "slow", "dataset": "mnist", "seeds": 1,
        "train": {"epochs": epochs, "batch_size": 32, "optimizer": "adam", "validation": "test"},
        "models": [{"name": "wide", "layers": ["conv(32,3)", "conv(32,3)", "pool(2)", "flatten", "dense(10)"]}],
    }, source="test")


def kill_after_first_epoch(db_path: Path, killed: list[int], stop: threading.Event) -> None:
    """Watch study.db like any reader; SIGKILL the worker that reported epoch 1 of trial 1, once."""
    while not stop.is_set() and not killed:
        time.sleep(0.02)
        if not db_path.exists():
            continue
        try:
            workers = db_rows(db_path, "SELECT detail FROM events WHERE kind='worker' AND trial_id=1 ORDER BY id")
            epochs = db_rows(db_path, "SELECT COUNT(*) FROM epochs WHERE trial_id=1")[0][0]
        except Exception:  # the schema is not there yet
            continue
        if workers and epochs >= 1:
            pid = int(re.match(r"[^,]*:(\d+),", workers[-1][0]).group(1))
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)


def run_with_killer(study, opts: RunOptions) -> tuple[list[int], bool]:
    killed: list[int] = []
    stop = threading.Event()
    watcher = threading.Thread(target=kill_after_first_epoch, args=(opts.out / "study.db", killed, stop))
    watcher.start()
    try:
        _, finished = run_study(study, opts)
    finally:
        stop.set()
        watcher.join()
    return killed, finished




def test_killed_worker_resumes_from_checkpoint(ray_session, tiny_mnist, tmp_path):
    opts = RunOptions(out=tmp_path / "out", executor="ray", data_dir=str(tiny_mnist.dir), device="cpu", quiet=True)
    killed, finished = run_with_killer(slow_study(epochs=4), opts)
    assert finished and len(killed) == 1
    db = opts.out / "study.db"
    assert db_rows(db, "SELECT state, attempts FROM trials WHERE id=1") == [("complete", 2)]
    kinds = [k for (k,) in db_rows(db, "SELECT kind FROM events WHERE trial_id=1 ORDER BY id")]
    assert kinds.count("restart") == 1 and kinds[-1] == "complete"
    workers = [d for (d,) in db_rows(db, "SELECT detail FROM events WHERE kind='worker' ORDER BY id")]
    assert len(workers) == 2 and workers[0].endswith("from scratch")
    resumed = int(re.search(r"resuming after epoch (\d+)", workers[1]).group(1))
    assert 1 <= resumed <= 4  # the kill lands after epoch 1 was recorded, before the task returned
    assert f":{killed[0]}," not in workers[1]
    rows = db_rows(db, "SELECT epoch, COUNT(*) FROM epochs WHERE trial_id=1 GROUP BY epoch ORDER BY epoch")
    assert rows == [(1, 1), (2, 1), (3, 1), (4, 1)]


def test_worker_lost_past_retries_fails_with_reason(ray_session, tiny_mnist, tmp_path, monkeypatch):
    from convstudy.executors import ray_executor

    monkeypatch.setattr(ray_executor, "MAX_RETRIES", 0)
    storage = f"file://{tmp_path / 'ckpt'}"
    study = slow_study(epochs=4)
    opts = RunOptions(out=tmp_path / "out", executor="ray", data_dir=str(tiny_mnist.dir), device="cpu", quiet=True,
                      storage=storage)
    killed, finished = run_with_killer(study, opts)
    assert finished and len(killed) == 1
    [(state, error)] = db_rows(opts.out / "study.db", "SELECT state, error FROM trials")
    assert state == "failed" and error.startswith("worker lost 1 times; last: WorkerCrashedError")
    # The checkpoint went to --storage, not the study directory, and is kept for a later retry.
    ckpt = tmp_path / "ckpt" / f"slow-{study.fingerprint()}" / "trials" / "wide" / "seed-0" / "checkpoint.safetensors"
    assert ckpt.exists()
    assert not (opts.out / "trials" / "wide" / "seed-0" / "checkpoint.safetensors").exists()


def test_event_queue_pinned_to_the_driver_node(ray_session, tiny_mnist, tiny_study_file, tmp_path, monkeypatch):
    """Every trial's events pass through one queue actor; on a worker node, losing that node would take it and
    the driver down (bench/ray_multinode.py kills nodes for real), so Ray must keep it on the driver's node."""
    from ray.util import queue as ray_queue
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    made: list[dict] = []

    class Recorded(ray_queue.Queue):
        def __init__(self, maxsize: int = 0, actor_options: dict | None = None) -> None:
            made.append(dict(actor_options or {}))
            super().__init__(maxsize, actor_options)

    monkeypatch.setattr(ray_queue, "Queue", Recorded)
    study = resolve_study(str(tiny_study_file(epochs=1, seeds=1)))
    _, finished = run_study(study, RunOptions(out=tmp_path / "out", executor="ray", data_dir=str(tiny_mnist.dir),
                                              device="cpu", quiet=True, models=("small-a",)))
    assert finished and len(made) == 1
    where = made[0].get("scheduling_strategy")
    assert isinstance(where, NodeAffinitySchedulingStrategy) and not where.soft
    assert where.node_id == ray_session.get_runtime_context().get_node_id()


def test_without_ray_one_line_and_exit_2(tiny_mnist, tiny_study_file, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    out = tmp_path / "out"
    code = main(["run", str(tiny_study_file()), "--executor", "ray", "--data-dir", str(tiny_mnist.dir),
                 "--out", str(out)])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == [RAY_MISSING]
    assert not out.exists()


def test_live_view_lists_running_trials():
    from rich.console import Console

    from convstudy.executors.progress import ProgressView
    from convstudy.executors.trial import TrialJob
    from convstudy.train import EpochResult, Plan

    study = slow_study(epochs=3)
    model = study.models[0]
    job = TrialJob(trial_id=7, model=model, settings=model.settings(study.train), seed=5, input_shape=(28, 28, 1),
                   plan=Plan())
    console = Console(record=True, width=120, force_terminal=False)
    view = ProgressView(console, n_train=600)
    view.submitted(job, 2)
    view.started(job, 1, "node-a:4242")
    view.epoch(job, EpochResult(2, 0.51, 0.81, 0.42, 0.86, 3.0))
    console.print(view._table())
    text = console.export_text()
    assert "wide seed 5: 3 epochs" in text and "resuming after epoch 1" in text
    row = next(line for line in text.splitlines() if "node-a:4242" in line and "│" in line)
    assert [cell.strip() for cell in row.split("│")[1:-1]] == ["wide", "5", "2", "node-a:4242", "2/3", "0/600",
                                                              "0.5100", "0.8100", "0.4200", "0.8600"]
    view.finished(job, 0.4, 0.87)
    assert not view.rows

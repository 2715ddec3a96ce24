"""Trials side by side in one process (`run --streams N`, executors.lanes), checked on the CPU.

On a GPU each lane has its own CUDA stream; the turn-taking, the per-lane random state and the
stop paths are the same code on the CPU, where lanes must give exactly a sequential run's numbers.
"""

from __future__ import annotations

import _thread
import hashlib
import json
import random
import signal
import threading
import time

import numpy as np
import pytest
import torch

from conftest import db_rows, epoch_metrics, finish, kill_when, start_run, trial_results, write_tiny_study
from convstudy.executors import lanes
from convstudy.executors.lanes import Lane, run_lanes

CPU = torch.device("cpu")


def _draws(seed: int, steps: int, turn=lambda: None) -> list[tuple[float, float, float]]:
    """Seed every generator as a trial does, then draw from each, calling `turn` between draws."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
    out = []
    for _ in range(steps):
        out.append((torch.rand(()).item(), random.random(), float(np.random.rand())))
        turn()
    return out


def test_lanes_interleave_and_each_draws_the_random_numbers_it_would_alone(monkeypatch):
    monkeypatch.setattr(lanes, "TURN_BATCHES", 2)
    before = torch.get_rng_state()
    order: list[int] = []
    got: dict[int, list] = {}

    def serve(lane: Lane) -> bool:
        def turn() -> None:
            order.append(lane.index)
            lane.turn()
        got[lane.index] = _draws(100 + lane.index, 12, turn)
        return True

    assert run_lanes(3, serve, CPU) is True
    assert torch.equal(torch.get_rng_state(), before)  # the caller's random state is back
    for i in range(3):
        assert got[i] == _draws(100 + i, 12), f"lane {i} drew another lane's numbers"
    # The lanes really took turns: every 2 draws the next one ran, round robin.
    assert order[:12] == [0, 0, 1, 1, 2, 2, 0, 0, 1, 1, 2, 2]


def test_an_error_in_one_lane_stops_the_others_and_is_raised_once_all_ended():
    steps = [0, 0, 0]

    def serve(lane: Lane) -> bool:
        for _ in range(10_000):
            if lane.index == 1 and steps[1] == 5:
                raise ValueError("lane 1 broke")
            steps[lane.index] += 1
            lane.turn()
        return True

    with pytest.raises(ValueError, match="lane 1 broke"):
        run_lanes(3, serve, CPU)
    assert max(steps) <= 2 * lanes.TURN_BATCHES  # the others stopped at their next turn, not at 10,000


def test_ctrl_c_in_the_main_thread_stops_every_lane_at_its_next_turn():
    # Test runners may ignore SIGINT in their workers; a terminal's Ctrl-C raises KeyboardInterrupt.
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    steps = [0, 0]

    def serve(lane: Lane) -> bool:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # a trial that would not end before the deadline on its own
            steps[lane.index] += 1
            time.sleep(0.001)
            lane.turn()
        return True

    threading.Timer(0.3, _thread.interrupt_main).start()
    started = time.monotonic()
    try:
        assert run_lanes(2, serve, CPU) is False
    finally:
        signal.signal(signal.SIGINT, old)
    assert time.monotonic() - started < 10
    assert steps[0] > lanes.TURN_BATCHES and steps[1] > lanes.TURN_BATCHES  # both had turns before the stop


# ---- end to end: `convstudy run --streams` ---------------------------------------------------------

def _files(out) -> dict[str, str]:
    """Digest of every weights and predictions file of a study directory, by relative path."""
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.glob("trials/*/seed-*/*.safetensors"))}


@pytest.fixture(scope="module")
def sequential(tiny_mnist_session, tmp_path_factory):
    """The tiny study (2 models x 3 seeds, 4 epochs) trained one trial after another."""
    root = tmp_path_factory.mktemp("lanes")
    study = write_tiny_study(root / "tiny.toml", epochs=4, seeds=[0, 1, 2])
    finish(start_run(study, root / "one", tiny_mnist_session, "--streams", "1"))
    return study, root / "one"


def test_trials_in_lanes_give_the_sequential_runs_numbers_and_files(sequential, tiny_mnist_session, tmp_path):
    study, one = sequential
    finish(start_run(study, tmp_path / "three", tiny_mnist_session, "--streams", "3"))
    db = tmp_path / "three" / "study.db"
    assert trial_results(db) == trial_results(one / "study.db")
    assert epoch_metrics(db) == epoch_metrics(one / "study.db")
    assert _files(tmp_path / "three") == _files(one) and len(_files(one)) == 12
    assert json.loads(db_rows(db, "SELECT provenance FROM runs")[0][0])["streams"] == 3
    # They did run side by side: some trial started before another had finished.
    spans = sorted(db_rows(db, "SELECT started_at, finished_at FROM trials"))
    assert any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:]))


def test_a_run_in_lanes_killed_with_sigkill_resumes_to_the_sequential_runs_numbers(sequential, tiny_mnist_session,
                                                                                     tmp_path):
    study, one = sequential
    out = tmp_path / "killed"
    kill_when(start_run(study, out, tiny_mnist_session, "--streams", "2"),
              lambda: len(list(out.glob("trials/*/seed-*/checkpoint.safetensors"))) >= 2)
    finish(start_run(study, out, tiny_mnist_session, "--streams", "2"))
    assert trial_results(out / "study.db") == trial_results(one / "study.db")
    assert epoch_metrics(out / "study.db") == epoch_metrics(one / "study.db")
    assert _files(out) == _files(one)


def test_streams_rejects_bad_values_in_one_line(run_cli, tiny_study_file, tmp_path):
    for bad in ("0", "many"):
        proc = run_cli("run", tiny_study_file(), "--out", tmp_path / "o", "--streams", bad)
        assert proc.returncode == 2 and "--streams" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("run", tiny_study_file(), "--out", tmp_path / "o", "--streams", "2", "--executor", "ray")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "--streams: only the local executor" in proc.stderr
    assert not (tmp_path / "o").exists()


def test_stacked_seeds_in_lanes_give_the_numbers_of_stacked_seeds_one_model_after_another(tiny_mnist_session,
                                                                                          tmp_path):
    study = write_tiny_study(tmp_path / "tiny.toml", epochs=3, seeds=[0, 1, 2])
    for streams in ("1", "2"):
        finish(start_run(study, tmp_path / streams, tiny_mnist_session, "--stack-seeds", "3", "--streams", streams))
    assert trial_results(tmp_path / "2" / "study.db") == trial_results(tmp_path / "1" / "study.db")
    assert epoch_metrics(tmp_path / "2" / "study.db") == epoch_metrics(tmp_path / "1" / "study.db")
    assert _files(tmp_path / "2") == _files(tmp_path / "1")


def test_ctrl_c_stops_every_lane_after_its_epoch_and_the_rerun_gives_the_sequential_numbers(sequential,
                                                                                           tiny_mnist_session,
                                                                                           tmp_path):
    study, one = sequential
    out = tmp_path / "stopped"
    proc = start_run(study, out, tiny_mnist_session, "--streams", "2")
    deadline = time.monotonic() + 180
    while len(list(out.glob("trials/*/seed-*/checkpoint.safetensors"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    stdout, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Resume with the same command" in " ".join((stdout + err).split()) and "Traceback" not in err
    states = db_rows(out / "study.db", "SELECT state, error FROM trials WHERE state != 'complete'")
    assert ("pending", "interrupted") in states and all(s == "pending" for s, _ in states)
    finish(start_run(study, out, tiny_mnist_session, "--streams", "2"))
    assert epoch_metrics(out / "study.db") == epoch_metrics(one / "study.db")
    assert _files(out) == _files(one)

"""One suite every executor passes (issue 27): in this process, in `--workers` processes and as Ray tasks,
the one executor loop gives the same rows and files, resumes an interrupted trial to the same numbers,
records a failing trial as failed, stops a trial where a search's pruner says so and runs a [fair] study to the
same trials.

Every executor trains on one thread (Ray: --cpus-per-trial 1), so their numbers agree bit for bit with the
local run's. The Ray cases share one local Ray instance and are skipped without Ray.
"""

from __future__ import annotations

import dataclasses
import os
import signal
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from conftest import RAY, TinyMnist, db_rows, epoch_metrics, trial_results, write_tiny_study
from convstudy.api import RunRequest, prepare
from convstudy.data import REGISTRY
from convstudy.executors import RunOptions, run_study
from convstudy.report import write_reports
from convstudy.search.fair import run_fair
from convstudy.spec import resolve_study
from test_fair import FAIR_STUDY, LEVELS

EXECUTORS = {"local": {}, "workers": {"workers": 2}, "ray": {"executor": "ray", "cpus_per_trial": 1}}


@pytest.fixture(params=[pytest.param(k, marks=pytest.mark.xdist_group(RAY)) if k == "ray" else k for k in EXECUTORS])
def executor(request, tiny_mnist, one_thread, monkeypatch) -> dict:
    """The RunOptions that pick one executor, every trial on one thread."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # --workers: each worker keeps this process's one thread
    if request.param == "ray":
        request.getfixturevalue("ray_session")
    return EXECUTORS[request.param]


@pytest.fixture
def study(tiny_study_file):
    return resolve_study(str(tiny_study_file(epochs=2, seeds=2)))


def run(study, out: Path, executor: dict, data_dir: Path, grow=None, **options):
    opts = RunOptions(out=out, data_dir=str(data_dir), device="cpu", quiet=True, **executor, **options)
    store, finished = run_study(study, opts, grow=grow)
    store.close()
    return finished


def files(out: Path) -> dict:
    """What a run leaves per trial: its results, every epoch's metrics and its files' digests (checkpoints hold
    wall times, so theirs differ)."""
    db = out / "study.db"
    return {"trials": trial_results(db), "epochs": epoch_metrics(db),
            "digests": db_rows(db, "SELECT model, seed, weights_digest, predictions_digest FROM trials ORDER BY 1, 2")}


@contextmanager
def _one_thread_on_tiny_mnist(tiny: TinyMnist):
    """tiny_mnist and one_thread for a module-scoped fixture (theirs are per test)."""
    before = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(REGISTRY, "mnist", dataclasses.replace(REGISTRY["mnist"], sha256=tiny.sha256, mirrors=()))
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(before)


@pytest.fixture(scope="module")
def reference(tiny_mnist_session, tmp_path_factory) -> dict:
    """An uninterrupted run of the `study` fixture's study in this process, once per module (and xdist worker)."""
    out = tmp_path_factory.mktemp("reference")
    with _one_thread_on_tiny_mnist(tiny_mnist_session):
        study = resolve_study(str(write_tiny_study(out / "tiny.toml", epochs=2, seeds=2)))
        assert run(study, out / "run", EXECUTORS["local"], tiny_mnist_session.dir)
    return files(out / "run")


class Grow:
    """A search's hooks without the search: prune `model` after its first epoch, or interrupt the run there."""

    def __init__(self, prune: str | None = None, interrupt: bool = False) -> None:
        self.model, self.interrupt = prune, interrupt

    def start(self, store, add) -> None:
        pass

    def more(self) -> bool:
        return False

    def prune(self, event) -> bool:
        if self.interrupt:  # what Ctrl-C does, at the first epoch the driver records
            self.interrupt = False
            os.kill(os.getpid(), signal.SIGINT)
        return event.job.model.name == self.model


def test_the_same_trials_give_the_same_rows_and_files(executor, study, reference, tiny_mnist, tmp_path):
    out = tmp_path / "out"
    assert run(study, out, executor, tiny_mnist.dir, refresh=write_reports)
    assert files(out) == reference
    assert {state for state, _, _ in reference["trials"].values()} == {"complete"}
    assert (out / "report.json").is_file()  # the caller's refresh ran
    assert not list((out / "trials").rglob("checkpoint.safetensors"))


def test_an_interrupted_run_resumes_to_the_same_numbers(executor, study, reference, tiny_mnist, tmp_path):
    out = tmp_path / "out"
    assert not run(study, out, executor, tiny_mnist.dir, grow=Grow(interrupt=True))
    states = [state for state, _, _ in trial_results(out / "study.db").values()]
    assert "running" not in states and "pending" in states
    assert ("interrupted",) in db_rows(out / "study.db", "SELECT error FROM trials WHERE epochs_done > 0")
    assert run(study, out, executor, tiny_mnist.dir)
    assert files(out) == reference


def test_a_failing_trial_is_recorded_failed_and_the_others_run(executor, study, reference, tiny_mnist, tmp_path):
    ckpt = tmp_path / "ckpt"
    blocked = ckpt / f"{study.name}-{study.fingerprint()}" / "trials" / "small-b"
    blocked.parent.mkdir(parents=True)
    blocked.write_text("not a directory")  # small-b's checkpoints cannot be written
    out = tmp_path / "out"
    assert run(study, out, executor, tiny_mnist.dir, storage=str(ckpt))
    rows = db_rows(out / "study.db", "SELECT model, state, error FROM trials ORDER BY model, seed")
    assert [(m, s) for m, s, _ in rows] == [("small-a", "complete")] * 2 + [("small-b", "failed")] * 2
    assert all("trials/small-b" in error for m, _, error in rows if m == "small-b")
    assert {k: v for k, v in trial_results(out / "study.db").items() if k[0] == "small-a"} == \
        {k: v for k, v in reference["trials"].items() if k[0] == "small-a"}


def test_a_pruned_trial_stops_after_its_epoch(executor, study, reference, tiny_mnist, tmp_path):
    out = tmp_path / "out"
    assert run(study, out, executor, tiny_mnist.dir, grow=Grow(prune="small-b"))
    results = trial_results(out / "study.db")
    assert {k: v[0] for k, v in results.items() if k[0] == "small-b"} == {("small-b", 0): "pruned",
                                                                         ("small-b", 1): "pruned"}
    assert sorted(k for k in epoch_metrics(out / "study.db") if k[0] == "small-b") == [("small-b", 0, 1),
                                                                                       ("small-b", 1, 1)]
    assert {k: v for k, v in results.items() if k[0] == "small-a"} == \
        {k: v for k, v in reference["trials"].items() if k[0] == "small-a"}


def _fair(out: Path, executor: dict, data_dir: Path) -> dict:
    """Run the one-epoch FAIR_STUDY into `out` with `executor`: what it leaves at the top and in each level."""
    study = out.parent / "fair.toml"
    study.write_text(FAIR_STUDY.replace("epochs = 3", "epochs = 1"))
    spec, opts = prepare(study, RunRequest(out=out, data_dir=str(data_dir), device="cpu", quiet=True, **executor))
    store, finished = run_fair(spec, opts)
    store.close()
    assert finished
    return {level: files(out / level) for level in (".", *(Path("fair") / lv for lv in LEVELS))}


@pytest.fixture(scope="module")
def fair_reference(tiny_mnist_session, tmp_path_factory) -> dict:
    """The fair study run in this process, once per module (and xdist worker)."""
    with _one_thread_on_tiny_mnist(tiny_mnist_session):
        return _fair(tmp_path_factory.mktemp("fair-reference") / "out", EXECUTORS["local"], tiny_mnist_session.dir)


@pytest.mark.parametrize("executor", ["local", "workers"], indirect=True)
def test_a_fair_study_trains_the_same_trials_to_the_same_numbers(executor, fair_reference, tiny_mnist, tmp_path):
    """Each level's search asks in an order no executor changes (QMC, no pruner), so the fixed recipe, every
    nuisance trial and every winner's retraining are the local run's, bit for bit. (Ray: a fair study is runs
    of run_search and run_study, whose Ray runs the search and executor tests above compare already.)"""
    assert _fair(tmp_path / "out", executor, tiny_mnist.dir) == fair_reference
    assert len(trial_results(tmp_path / "out" / "fair" / LEVELS[0] / "study.db")) == 3  # 2 tried, 1 retrained


def test_a_fair_study_refreshes_each_directory_once_at_its_end(tiny_mnist, one_thread, tmp_path, monkeypatch):
    """The fixed recipe's run and each level's search are followed by more runs in this process: only the end
    of each level (its confirmation) and of the whole study refresh unpaced, each directory once."""
    from convstudy.executors import run as run_module

    now = [0.0]  # a clock that only a refresh moves: every paced refresh after the first waits
    monkeypatch.setattr(run_module, "_PACER", run_module.Pacer(clock=lambda: now[0]))
    study = tmp_path / "fair.toml"
    study.write_text(FAIR_STUDY.replace("epochs = 3", "epochs = 1"))
    out = tmp_path / "out"
    refreshed = []

    def refresh(store) -> None:
        refreshed.append(store.out.relative_to(out))
        now[0] += 1.0

    spec, opts = prepare(study, RunRequest(out=out, data_dir=str(tiny_mnist.dir), device="cpu", quiet=True),
                         refresh=refresh)
    store, finished = run_fair(spec, opts)
    store.close()
    assert finished
    # each level's end and the study's (the fake clock never reaches the first paced refresh)
    assert refreshed == [Path("fair") / LEVELS[0], Path("fair") / LEVELS[1], Path(".")]


def test_report_refreshes_after_trials_are_paced_by_their_own_cost():
    """The first refresh waits REFRESH_PACE times FIRST_REFRESH_S from the start; later ones until REFRESH_PACE
    times the last refresh has passed; the end of a run refreshes whatever the pace, and the next run in the
    process is paced by it."""
    from convstudy.executors.run import FIRST_REFRESH_S, REFRESH_PACE, Pacer

    now = [0.0]
    calls = []

    def refresh():  # takes 2 s of the fake clock
        calls.append(now[0])
        now[0] += 2.0

    pace = Pacer(clock=lambda: now[0])
    first = REFRESH_PACE * FIRST_REFRESH_S
    now[0] = first - 0.5
    pace(refresh)  # a first trial that ended soon after the start: skipped
    now[0] = first
    pace(refresh)  # refreshes, ends 2 s later
    now[0] = first + 2.0 + REFRESH_PACE * 2.0 - 0.5
    pace(refresh)  # too soon after the last refresh: skipped
    now[0] = first + 2.0 + REFRESH_PACE * 2.0
    pace(refresh)  # paced enough: refreshes, ends 2 s later
    end = now[0]
    pace(refresh, force=True)  # a run's end: always
    now[0] += 1.0
    pace(refresh)  # the next run's first trial, right after: skipped
    assert calls == [first, first + 2.0 + REFRESH_PACE * 2.0, end]

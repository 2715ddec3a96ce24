"""A trial's numbers do not depend on what ran beside it (issue 26, acceptance 3), and the measured
parallelism (measure.calibrate, measure.parallel) that `convstudy run` uses when given neither --workers nor
OMP_NUM_THREADS: its decisions from fake rates and a fake timer (no timed assertions), its cache, and
that it pins the threads per trial however many trials run at once. Explicit --workers against a local run:
tests/test_executors.py (every executor gives the same rows and files)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from pathlib import Path

import torch

from conftest import convstudy_cmd, db_rows
from convstudy.measure import calibrate, parallel
from convstudy.measure.parallel import best_threads, choose

TRIAL = ("SELECT t.model, t.seed, t.state, t.test_loss, t.test_accuracy, t.weights_digest, t.predictions_digest "
         "FROM trials t WHERE t.state = 'complete'")
EPOCHS = ("SELECT t.model, t.seed, e.epoch, e.loss, e.accuracy, e.val_loss, e.val_accuracy "
          "FROM epochs e JOIN trials t ON t.id = e.trial_id")


def numbers(out: Path) -> dict[tuple[str, int], tuple]:
    """(model, seed) -> its epoch rows (all but wall time), test results and weights/predictions digests."""
    epochs: dict[tuple[str, int], list] = {}
    for m, s, *row in sorted(db_rows(out / "study.db", EPOCHS)):
        epochs.setdefault((m, s), []).append(tuple(row))
    return {(m, s): (tuple(epochs[(m, s)]), *rest) for m, s, *rest in db_rows(out / "study.db", TRIAL)}


def run(study: Path, out: Path, env: dict, *extra: str) -> str:
    done = subprocess.run(convstudy_cmd("run", study, "--out", out, "--device", "cpu", "--quiet", *extra),
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout




def _cache_with(path: Path, study_file: Path, rates: dict[int, float]) -> None:
    """A calibration cache in which every model of the tiny study trains at `rates` (threads -> samples/s)."""
    from convstudy.spec import resolve_study
    from convstudy.train import resolve_precision

    study = resolve_study(str(study_file))
    precision = resolve_precision("auto", torch.device("cpu"))
    models = {calibrate.model_key(m, m.settings(study.train), (28, 28, 1), precision): {str(t): r for t, r in
                                                                                       rates.items()}
              for m in study.models}
    path.mkdir(parents=True, exist_ok=True)
    (path / "calibration.json").write_text(json.dumps({calibrate.machine_key(): models}))


def calibrate_counts(cpus: int) -> list[int]:
    """The thread counts a calibration measures on `cpus` cores."""
    from convstudy.measure.throughput import thread_counts

    return thread_counts(torch.get_num_threads(), cpus)


def test_measured_parallelism_pins_threads_so_alone_and_beside_others_agree(tiny_mnist, tiny_study_file, tmp_path,
                                                                          monkeypatch):
    study = tiny_study_file(epochs=1, seeds=2)
    cpus = os.cpu_count() or 1
    # One thread each is measured best (more threads barely help): a full machine of 1-thread trials.
    _cache_with(tmp_path / "cache", study, {t: 100.0 * (1 + 0.1 * (t > 1)) for t in calibrate_counts(cpus)})
    env = {k: v for k, v in tiny_mnist.env.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["CONVSTUDY_CACHE_DIR"] = str(tmp_path / "cache")
    said = run(study, tmp_path / "all", env, "--data-dir", tiny_mnist.dir)
    run(study, tmp_path / "alone", env, "--data-dir", tiny_mnist.dir, "--models", "small-a", "--seeds", "1")
    together, alone = numbers(tmp_path / "all"), numbers(tmp_path / "alone")
    assert set(alone) == {("small-a", 0)} and len(together) == 4
    assert together[("small-a", 0)] == alone[("small-a", 0)]
    # What it chose is recorded: the workers as an event, the threads with every trial (its numerics).
    events = {out: [json.loads(d) for (d,) in db_rows(tmp_path / out / "study.db",
                                                       "SELECT detail FROM events WHERE kind = 'parallelism'")]
              for out in ("all", "alone")}
    assert [(e["workers"], e["threads"]) for e in events["all"]] == [(min(4, cpus), 1)]
    assert [(e["workers"], e["threads"]) for e in events["alone"]] == [(1, 1)]
    assert f"{min(4, cpus)} trial" in said and "1 thread each" in said
    for out in ("all", "alone"):
        assert {json.loads(n)["threads"] for (n,) in db_rows(tmp_path / out / "study.db",
                                                              "SELECT numerics FROM trials")} == {1}
    # A later run of the same study keeps the threads its trials recorded, whatever the cache says now.
    _cache_with(tmp_path / "cache", study, {t: 1000.0 * t * t for t in calibrate_counts(cpus)})
    monkeypatch.setenv("CONVSTUDY_CACHE_DIR", str(tmp_path / "cache"))
    from convstudy.api import RunRequest, prepare

    spec, opts = prepare(str(study), RunRequest(out=tmp_path / "all", data_dir=str(tiny_mnist.dir), seeds=3))
    choice = parallel.decide(spec, opts)
    assert (choice.threads, choice.workers) == (1, min(2, cpus))  # seed 2 of each model is left


# -- the decision, from fake rates ---------------------------------------------------------------------------

def test_one_thread_per_trial_when_more_threads_do_not_pay_for_the_cores_they_take():
    rates = {"a": {1: 100.0, 2: 130.0}, "b": {1: 50.0, 2: 90.0}}  # 2 threads: 1.3x and 1.8x, not 2x
    assert best_threads(rates, {"a": 3, "b": 3}, cpus=2) == 1
    assert (choose(rates, {"a": 3, "b": 3}, pending=6, cpus=2).workers,
            choose(rates, {"a": 3, "b": 3}, pending=1, cpus=2).workers) == (2, 1)


def test_with_several_workers_the_longest_trials_start_first():
    rates = {"quick": {1: 900.0, 2: 1000.0}, "long": {1: 20.0, 2: 30.0}, "mid": {1: 100.0, 2: 150.0}}
    trials = {"quick": 3, "long": 1, "mid": 3}  # estimated time: trials / samples/s at the chosen threads
    two = choose(rates, trials, pending=7, cpus=2)
    assert (two.workers, two.threads) == (2, 1) and two.first == ("long", "mid", "quick")
    assert choose(rates, trials, pending=1, cpus=2).first == ()  # one at a time: the study's order
    assert choose({}, {}, pending=4, cpus=2, recorded=1).first == ()  # a resume without rates: the study's order


def test_a_resumed_study_starts_the_longest_training_left_first(tiny_study_file, tiny_mnist, tmp_path, monkeypatch):
    from convstudy.executors import RunOptions
    from convstudy.spec import resolve_study
    from convstudy.store import StudyStore

    study_file = tiny_study_file(epochs=4, seeds=[0, 1])
    monkeypatch.setenv("CONVSTUDY_CACHE_DIR", str(tmp_path / "cache"))
    _cache_with(tmp_path / "cache", study_file, {1: 100.0, 2: 150.0})  # both models train at the same rate
    study = resolve_study(str(study_file))
    out = tmp_path / "out"
    with contextlib.closing(StudyStore.create_or_open(out, study)) as store:
        store.db.ensure_trials([("small-a", 0, 0), ("small-a", 1, 0), ("small-b", 0, 1), ("small-b", 1, 1)])
        recorded = json.dumps({"threads": 1})
        # small-a: seed 0 finished, seed 1 one of its four epochs in; small-b: seed 1 three epochs in, so
        # small-a has 3/4 of a trial left and small-b 1 1/4: small-b first, though the study lists it second.
        for model, seed, state, epochs in (("small-a", 0, "complete", 4), ("small-a", 1, "pending", 1),
                                           ("small-b", 1, "pending", 3)):
            store.db.conn.execute("UPDATE trials SET state=?, epochs_done=?, numerics=? WHERE model=? AND seed=?",
                                  (state, epochs, recorded, model, seed))
    opts = RunOptions(out=out, data_dir=str(tiny_mnist.dir))
    assert parallel._trials_state(study, opts) == (3, {"small-a": 0.75, "small-b": 1.25}, 1)
    choice = parallel.decide(study, opts)
    assert (choice.workers, choice.threads, choice.first) == (2, 1, ("small-b", "small-a"))
    (tmp_path / "cache" / "calibration.json").unlink()  # nothing cached: nothing is measured for the order
    assert parallel.decide(study, opts).first == ()


def test_more_threads_where_they_pay_and_the_fewest_within_five_percent():
    assert best_threads({"a": {1: 100.0, 2: 230.0}}, {"a": 4}, cpus=2) == 2  # cache effects: over 2x
    assert best_threads({"a": {1: 100.0, 2: 204.0}}, {"a": 4}, cpus=2) == 1  # 2% faster: not worth the risk
    many = {"a": {1: 10.0, 2: 25.0, 4: 60.0, 8: 70.0, 16: 71.0}}
    assert best_threads(many, {"a": 8}, cpus=16) == 4
    big = choose(many, {"a": 8}, pending=8, cpus=16)
    assert (big.threads, big.workers) == (4, 4)


def test_the_threads_follow_the_studys_models_not_the_pending_trials():
    rates = {"fast": {1: 1000.0, 2: 1100.0}, "slow": {1: 10.0, 2: 25.0}}  # the slow model dominates the time
    trials = {"fast": 2, "slow": 2}
    assert {choose(rates, trials, pending=p, cpus=2).threads for p in (1, 2, 4)} == {2}
    assert choose(rates, trials, pending=4, cpus=2, recorded=1).threads == 1  # a study keeps what it recorded


def test_measure_rates_times_each_thread_count_interleaved_and_keeps_the_faster_round():
    clock = [0.0]
    seen: list[int] = []

    def make_loop():
        def run(n_batches: int) -> int:
            threads = torch.get_num_threads()
            seen.append(threads)
            clock[0] += n_batches * (1.0 / threads) * (3 if len(seen) == 2 else 1)  # the first timed chunk is slow
            return 10 * n_batches
        return run

    before = torch.get_num_threads()
    rates = calibrate.measure_rates(None, None, (28, 28, 1), "fp32", [1, 2], timer=lambda: clock[0],
                                    make_loop=make_loop)
    assert rates == {1: 10.0, 2: 20.0}
    assert seen == [1, 1, 2, 2, 1, 2]  # warm-up and timed at each count, then a second round
    assert torch.get_num_threads() == before


def test_study_rates_are_measured_once_per_machine_and_model(tiny_study_file, tmp_path, monkeypatch):
    from convstudy.spec import resolve_study

    monkeypatch.setenv("CONVSTUDY_CACHE_DIR", str(tmp_path / "cache"))
    study = resolve_study(str(tiny_study_file()))
    calls: list[str] = []

    def fake(spec, settings, shape, precision, counts):
        calls.append(spec.name)
        return {t: 100.0 * t for t in counts}

    first = parallel.study_rates(study, (28, 28, 1), "fp32", [1, 2], measure=fake)
    assert calls == ["small-a", "small-b"] and first == {"small-a": {1: 100.0, 2: 200.0},
                                                          "small-b": {1: 100.0, 2: 200.0}}
    assert parallel.study_rates(study, (28, 28, 1), "fp32", [1, 2], measure=fake) == first and len(calls) == 2
    parallel.study_rates(study, (28, 28, 1), "fp32", [1, 2, 4], measure=fake)  # a count not measured yet: measured again
    assert len(calls) == 4
    (tmp_path / "cache" / "calibration.json").write_text("{not json")  # a damaged cache is only a miss
    assert parallel.study_rates(study, (28, 28, 1), "fp32", [1, 2], measure=fake) == first and len(calls) == 6


def test_a_wrong_data_dir_is_refused_before_any_calibration(tiny_study_file, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["CONVSTUDY_CACHE_DIR"] = str(tmp_path / "cache")
    done = subprocess.run(convstudy_cmd("run", tiny_study_file(), "--out", tmp_path / "out", "--device", "cpu",
                                        "--data-dir", tmp_path / "nowhere"),
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "nowhere" in done.stderr and "calibrating" not in done.stdout
    assert not (tmp_path / "cache" / "calibration.json").exists() and not (tmp_path / "out").exists()

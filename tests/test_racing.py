"""Racing seeds: only undecided models get more seeds, rounds replay from study.db, kill -9 resumes the race."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest
from conftest import db_rows, finish, kill_when, start_run, trial_results, write_tiny_study

from convstudy.cli import main
from convstudy.executors.racing import decide, race
from convstudy.spec import build_study


def _values(means: dict[str, float], seeds: int, std: float = 0.001, rng_seed: int = 0) -> dict:
    rng = np.random.default_rng(rng_seed)
    return {(m, s): mu + std * rng.standard_normal() for m, mu in means.items() for s in range(seeds)}


def test_a_round_asks_for_the_missing_trials_first():
    state = race(["a", "b"], range(5), 2, {("a", 0): 0.9}, decide)
    assert not state.done and state.seeds == {"a": (0, 1), "b": (0, 1)}


def test_clearly_worse_models_stop_early_and_close_ones_race_on():
    means = {"best": 0.99, "close": 0.9895, "bad": 0.95, "awful": 0.90}
    finished = _values(means, 10)
    state = race(list(means), range(10), 2, finished, decide)
    assert state.done
    assert len(state.seeds["bad"]) < 10 and len(state.seeds["awful"]) < 10
    assert state.why["bad"] == "place decided"
    assert len(state.seeds["best"]) > 2  # the close race needs more seeds than the minimum
    assert sum(map(len, state.seeds.values())) < 40


def test_identical_models_race_to_the_maximum_and_say_so():
    finished = _values({"a": 0.99, "b": 0.99, "c": 0.99}, 4, std=0.002)
    state = race(["a", "b", "c"], range(4), 2, finished, lambda v: {m: False for m in v})
    assert state.done and all(len(s) == 4 for s in state.seeds.values())
    assert set(state.why.values()) == {"all 4 seeds ran, undecided"}


def test_a_diverged_trial_counts_as_finished_without_a_value():
    finished = {("a", 0): 0.9, ("a", 1): None, ("b", 0): 0.5, ("b", 1): 0.51}
    state = race(["a", "b"], range(2), 2, finished, decide)
    assert state.done


def test_racing_seeds_are_spelled_min_max_in_the_file_and_on_the_command_line(tmp_path):
    study = build_study({"name": "r", "seeds": {"min": 2, "max": 6},
                         "models": [{"name": "a", "layers": ["flatten", "dense(10)"]}]})
    assert study.seeds == tuple(range(6)) and study.race == 2
    assert build_study(study.to_dict()) == study
    plain = build_study({"name": "r", "seeds": 6, "models": [{"name": "a", "layers": ["flatten", "dense(10)"]}]})
    assert plain.fingerprint() == study.fingerprint()  # racing decides how many seeds run, not what a trial is


@pytest.mark.parametrize("seeds, message", [
    ({"min": 0, "max": 3}, "1 <= min <= max"),
    ({"min": 4, "max": 3}, "1 <= min <= max"),
    ({"min": 2}, "racing seeds are {min = N, max = M}"),
])
def test_bad_racing_seeds_are_one_line(tmp_path, capsys, seeds, message):
    path = write_tiny_study(tmp_path / "s.toml", epochs=1, seeds=2)
    path.write_text(path.read_text().replace("seeds = 2", f"seeds = {{{', '.join(f'{k} = {v}' for k, v in seeds.items())}}}"))
    assert main(["models", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_bad_seeds_flag_is_one_line(tiny_study_file, capsys):
    assert main(["run", str(tiny_study_file(epochs=1)), "--seeds", "3..x"]) == 2
    assert "expected N or MIN..MAX" in capsys.readouterr().err


def _raced_trials(db) -> dict:
    return {k: v for k, v in trial_results(db).items() if v[0] == "complete"}


def test_racing_run_killed_with_9_resumes_to_the_same_trials_and_report(tmp_path, tiny_mnist):
    study = write_tiny_study(tmp_path / "race.toml", epochs=1, seeds=2)
    study.write_text(study.read_text().replace("seeds = 2", "seeds = {min = 2, max = 3}"))
    ref = tmp_path / "ref"
    finish(start_run(study, ref, tiny_mnist))
    want = trial_results(ref / "study.db")
    n = len(want)
    assert 4 <= n <= 6 and all(v[0] == "complete" for v in want.values())
    racing = json.loads(db_rows(ref / "study.db", "SELECT value FROM meta WHERE key = 'racing'")[0][0])
    assert {m: r["seeds"] for m, r in racing.items()} == {
        m: sum(1 for (mm, _) in want if mm == m) for m in ("small-a", "small-b")}
    report = json.loads((ref / "report.json").read_text())
    assert {m["name"]: m["racing"]["seeds"] for m in report["models"]} == {m: r["seeds"] for m, r in racing.items()}

    out = tmp_path / "out"

    def two_trials_done() -> bool:
        try:
            return len(db_rows(out / "study.db", "SELECT id FROM trials WHERE state = 'complete'")) >= 2
        except sqlite3.OperationalError:  # not created yet
            return False

    kill_when(start_run(study, out, tiny_mnist), two_trials_done)
    finish(start_run(study, out, tiny_mnist))
    assert trial_results(out / "study.db") == want
    got = json.loads((out / "report.json").read_text())
    assert [(m["name"], m["same_as_best"], m["test_accuracy"], m["racing"]) for m in got["models"]] == \
        [(m["name"], m["same_as_best"], m["test_accuracy"], m["racing"]) for m in report["models"]]

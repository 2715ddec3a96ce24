"""Racing seeds: only undecided models get more seeds, rounds replay from study.db, kill -9 resumes the race."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest
from conftest import db_rows, kill_when, run_here, start_run, trial_results, write_tiny_study

from convstudy.cli import main
from convstudy.executors.racing import decider, default_margin, race
from convstudy.report.stats import look_alpha, race_decisions
from convstudy.spec import build_study


def _values(means: dict[str, float], seeds: int, std: float = 0.001, rng_seed: int = 0) -> dict:
    rng = np.random.default_rng(rng_seed)
    return {(m, s): mu + std * rng.standard_normal() for m, mu in means.items() for s in range(seeds)}


decide = decider(2, 10)


def test_a_round_asks_for_the_missing_trials_first():
    state = race(["a", "b"], range(5), 2, {("a", 0): 0.9}, decide)
    assert not state.done and state.seeds == {"a": (0, 1), "b": (0, 1)}


def test_clearly_worse_models_stop_early_and_close_ones_race_on():
    means = {"best": 0.99, "close": 0.9895, "bad": 0.95, "awful": 0.90}
    finished = _values(means, 10)
    state = race(list(means), range(10), 2, finished, decider(2, 10, margin=0.0001))
    assert state.done
    assert len(state.seeds["bad"]) < 10 and len(state.seeds["awful"]) < 10
    assert state.why["bad"] == "called worse than the best"
    assert len(state.seeds["best"]) > 2  # the close race needs more seeds than the minimum
    assert sum(map(len, state.seeds.values())) < 40


def test_models_within_the_margin_stop_too_and_say_so():
    """Issue 30: with the old 0.2 pp rule, in-group models with 1 pp seed noise raced to the maximum; a margin
    of practical equivalence stops them once shown within it (the default: from the first round's noise)."""
    means = {"a": 0.91, "b": 0.91, "c": 0.905, "far": 0.85}
    finished = _values(means, 10, std=0.01, rng_seed=3)
    old = race(list(means), range(10), 2, finished, decider(2, 10, margin=0.002))
    assert all(len(old.seeds[m]) == 10 for m in ("a", "b", "c"))
    new = race(list(means), range(10), 2, finished, decide)
    assert sum(map(len, new.seeds.values())) < sum(map(len, old.seeds.values()))
    assert any(why.startswith("within ") and why.endswith("pp of the best (race margin)") for why in new.why.values())
    assert new.why["far"] == "called worse than the best"


def test_the_default_margin_follows_the_seed_noise_and_rounds_decide_at_a_bonferroni_level():
    first = {m: [0.9, 0.92] for m in "abcd"}
    wider = {m: [0.88, 0.94] for m in "abcd"}
    assert default_margin(wider, 10, 0.05) == pytest.approx(3 * default_margin(first, 10, 0.05))
    assert look_alpha(2, 10) == pytest.approx(0.05 / 9)
    assert default_margin({m: [0.9] for m in "ab"}, 10, 0.05) == 0.0  # no noise measured: exact decisions only
    # Zero seed noise: any gap is real, no gap is within a zero margin.
    assert race_decisions({"a": [0.9, 0.9], "b": [0.8, 0.8], "c": [0.9, 0.9]}, 0.0) == \
        {"a": "open", "b": "worse", "c": "open"}


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


@pytest.mark.parametrize("flag", ["3..x", "2..5@", "2..5@0", "2..5@x"])
def test_bad_seeds_flag_is_one_line(tiny_study_file, capsys, flag):
    assert main(["run", str(tiny_study_file(epochs=1)), "--seeds", flag]) == 2
    assert "expected N or MIN..MAX" in capsys.readouterr().err


def test_the_race_margin_is_kept_in_the_file_and_leaves_the_fingerprint_alone():
    models = [{"name": "a", "layers": ["flatten", "dense(10)"]}]
    study = build_study({"name": "r", "seeds": {"min": 2, "max": 6, "margin": 1.5}, "models": models})
    assert study.race_margin == 1.5 and build_study(study.to_dict()) == study
    assert study.fingerprint() == build_study({"name": "r", "seeds": 6, "models": models}).fingerprint()
    with pytest.raises(Exception, match="racing margin is in percentage points"):
        build_study({"name": "r", "seeds": {"min": 2, "max": 6, "margin": "wide"}, "models": models})


def _raced_trials(db) -> dict:
    return {k: v for k, v in trial_results(db).items() if v[0] == "complete"}


def test_racing_run_killed_with_9_resumes_to_the_same_trials_and_report(tmp_path, tiny_mnist, one_thread):
    study = write_tiny_study(tmp_path / "race.toml", epochs=1, seeds=2)
    study.write_text(study.read_text().replace("seeds = 2", "seeds = {min = 2, max = 3}"))
    ref = tmp_path / "ref"
    run_here(study, ref, tiny_mnist)
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
    run_here(study, out, tiny_mnist)
    assert trial_results(out / "study.db") == want
    got = json.loads((out / "report.json").read_text())
    assert [(m["name"], m["same_as_best"], m["test_accuracy"], m["racing"]) for m in got["models"]] == \
        [(m["name"], m["same_as_best"], m["test_accuracy"], m["racing"]) for m in report["models"]]

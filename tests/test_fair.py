"""Fair comparisons (issue 29): nuisance hyperparameters tuned per scientific level, winners retrained on every seed.

The statistics are checked on a synthetic objective (no training); the run path on the tiny synthetic MNIST
(conftest.py), killed with -9 during a level's search and again during its retraining.
"""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import numpy as np
import optuna
import pytest

from conftest import db_rows, kill_when, run_here, start_run, trial_results
from convstudy.cli import main
from convstudy.report.fair import at_boundary, best_of_k, pick_winner, verdict, verdict_change
from convstudy.search.optuna_study import sampler, suggest
from convstudy.spec.fair import FairSpec
from convstudy.spec.search import search_space
from convstudy.spec.space import parse_factor

# Each optimiser has its own best learning rate; at its best, b beats c beats a. At a's best lr (the "recipe"
# everyone shares), a looks best: the fixed recipe ranks the levels wrongly.
OPTIMUM = {"a": (1e-3, 0.950), "b": (1e-1, 0.975), "c": (1.0, 0.965)}
SEEDS = range(5)


def accuracy(level: str, lr: float, seed: int) -> float:
    """The synthetic objective: a parabola in log10(lr) around the level's optimum, plus seed noise."""
    best_lr, peak = OPTIMUM[level]
    return peak - 0.02 * (math.log10(lr) - math.log10(best_lr)) ** 2 + np.random.default_rng(seed).normal(0, 0.002)


def fair_spec(high: float) -> FairSpec:
    return FairSpec(space={"name": "cnn", "layers": ["conv(2,3)", "flatten", "dense(10)"],
                           "train": {"optimizer": {"name": "{optimizer}", "lr": "{lr}"}},
                           "factors": {"optimizer": list(OPTIMUM)}},
                    nuisance={"lr": {"low": 1e-4, "high": high, "log": True}}, trials=16)


def tune(spec: FairSpec, level: str) -> dict:
    """One level's nuisance search with convstudy's own sampler and suggest, on the synthetic objective."""
    search = spec.level_search({"optimizer": level})
    space = search_space(search)
    study = optuna.create_study(direction="maximize", sampler=sampler(search, space, search.seed))
    trials = []
    for _ in range(spec.trials.count):
        trial = study.ask()
        params = suggest(trial, space)
        val = accuracy(level, params["lr"], 100 + trial.number)  # the first seed's validation
        study.tell(trial, val)
        trials.append({"model": f"trial-{trial.number:04d}", "state": "complete", "val_accuracy": val,
                       "nuisance": {"lr": params["lr"]}})
    return pick_winner(trials)


def test_tuning_per_level_ranks_the_levels_right_where_one_fixed_recipe_ranks_them_wrong():
    fixed = verdict({lv: [accuracy(lv, 1e-3, s) for s in SEEDS] for lv in OPTIMUM})
    assert fixed["order"][0] == "a"  # wrong: a is the worst at its own best

    spec = fair_spec(high=10.0)
    winners = {lv: tune(spec, lv) for lv in OPTIMUM}
    tuned = verdict({lv: [accuracy(lv, w["nuisance"]["lr"], s) for s in SEEDS] for lv, w in winners.items()})
    assert tuned["order"] == ["b", "c", "a"] and tuned["best_group"] == ["b"]
    assert verdict_change(fixed, tuned).startswith("The verdict changes with tuning: under the fixed recipe the best "
                                                   "is a")
    assert verdict_change(tuned, tuned) is None
    lr = parse_factor("lr", spec.nuisance["lr"])
    assert not any(at_boundary(w["nuisance"]["lr"], lr) for w in winners.values())


def test_the_boundary_warning_fires_when_the_range_excludes_a_levels_optimum():
    spec = fair_spec(high=0.3)  # c's optimum, lr 1, lies outside
    lr = parse_factor("lr", spec.nuisance["lr"])
    flags = {lv: at_boundary(tune(spec, lv)["nuisance"]["lr"], lr) for lv in OPTIMUM}
    assert flags == {"a": False, "b": False, "c": True}
    # On the log scale: 1e-4..1 has its outer 10% below 10^-3.6 and above 10^-0.4.
    wide = parse_factor("lr", {"low": 1e-4, "high": 1.0, "log": True})
    assert [at_boundary(x, wide) for x in (2e-4, 3e-4, 0.3, 0.45)] == [True, False, False, True]
    assert at_boundary("adam", parse_factor("opt", ["adam", "sgd"])) is None


def test_best_of_k_says_whether_the_budget_was_enough():
    rising = best_of_k(list(np.linspace(0.5, 0.9, 12)))
    assert rising["climbing"] and rising["k"] == list(range(1, 13))
    assert all(lo <= e <= hi for lo, e, hi in zip(rising["low"], rising["expected"], rising["high"]))
    assert rising["expected"] == sorted(rising["expected"])
    flat = best_of_k([0.9] * 11 + [0.5])
    assert not flat["climbing"]
    assert math.isclose(best_of_k([0.1, 0.3])["expected"][1], 0.25 * 0.1 + 0.75 * 0.3)  # Dodge et al.: (i/n)^k
    assert best_of_k([None])["climbing"] is None


FAIR_STUDY = """\
name = "tiny-fair"
dataset = "mnist"
seeds = 2

[train]
epochs = 3
batch_size = 32
validation = "holdout"

[fair]
trials = 2
seed = 1

[fair.space]
name = "cnn"
layers = ["conv(2,3)", "pool(2)", "flatten", "dense(10)"]
train = {optimizer = {name = "{optimizer}", lr = "{lr}"}}
factors = {optimizer = ["sgd", "adam"]}

[fair.nuisance]
lr = {low = 1e-3, high = 0.3, log = true}

[[spaces]]
name = "fixed"
names = "fixed-{optimizer}"
layers = ["conv(2,3)", "pool(2)", "flatten", "dense(10)"]
train = {optimizer = "{optimizer}"}
factors = {optimizer = ["sgd", "adam"]}
"""
LEVELS = ("01-optimizer_sgd", "02-optimizer_adam")


def _rows(db: Path, sql: str) -> list[tuple]:
    try:
        return db_rows(db, sql)
    except sqlite3.Error:  # not created yet
        return []


def _epochs(out: Path) -> dict[tuple[str, str, int, int], tuple]:
    """(level, model, seed, epoch) -> (seconds, loss, checkpoint digest) over every level's study.db."""
    rows = {}
    for level in LEVELS:
        for m, s, e, *rest in _rows(out / "fair" / level / "study.db", "SELECT t.model, t.seed, e.epoch, e.seconds, "
                                    "e.loss, e.checkpoint_digest FROM epochs e JOIN trials t ON t.id = e.trial_id"):
            rows[(level, m, s, e)] = tuple(rest)
    return rows


def _mid(out: Path, seed: int) -> bool:
    """A level's trial on `seed` is running with 1 or 2 of its 3 epochs recorded."""
    return any(1 <= e < 3 for level in LEVELS for e, in _rows(
        out / "fair" / level / "study.db", f"SELECT epochs_done FROM trials WHERE state = 'running' AND seed = {seed}"))


def test_killed_during_a_levels_search_and_its_retraining_the_rerun_trains_nothing_twice(tiny_mnist, one_thread,
                                                                                          tmp_path):
    study = tmp_path / "fair.toml"
    study.write_text(FAIR_STUDY)
    ref = tmp_path / "ref"  # uninterrupted, in this process on one thread, as the killed runs' subprocesses train
    run_here(study, ref, tiny_mnist)
    want = json.loads((ref / "report.json").read_text())["fair"]
    assert [lv["label"] for lv in want["levels"]] == ["optimizer=sgd", "optimizer=adam"]
    assert all(len(lv["trials"]) == 2 and lv["seeds"] == [0, 1] for lv in want["levels"])
    assert want["fixed_recipe"]["models"] == {"optimizer=sgd": "fixed-sgd", "optimizer=adam": "fixed-adam"}

    out = tmp_path / "out"
    kill_when(start_run(study, out, tiny_mnist), lambda: _mid(out, seed=0))  # a nuisance trial, mid-way
    seen = _epochs(out)
    kill_when(start_run(study, out, tiny_mnist), lambda: _mid(out, seed=1))  # a winner's retraining, mid-way
    assert any(s == 1 for _, _, s, _ in _epochs(out))
    seen.update(_epochs(out))
    run_here(study, out, tiny_mnist)
    rows = _epochs(out)
    assert all(rows[key] == value for key, value in seen.items())  # resumed from checkpoints, never retrained
    for level in LEVELS:
        assert trial_results(out / "fair" / level / "study.db") == trial_results(ref / "fair" / level / "study.db")
        storage = optuna.storages.RDBStorage(f"sqlite:///{out / 'fair' / level / 'search.db'}")
        trials = optuna.load_study(study_name="tiny-fair", storage=storage).get_trials()
        assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]  # the budget, nothing asked twice
        events = db_rows(out / "fair" / level / "study.db", "SELECT t.model, t.seed, e.kind FROM events e "
                         "JOIN trials t ON t.id = e.trial_id WHERE e.kind = 'start'")
        assert len(events) == len(set(events))  # every trial started once
    assert sorted({(lv, s) for lv, _, s, _ in rows}) == sorted((lv, s) for lv in LEVELS for s in (0, 1))
    got = json.loads((out / "report.json").read_text())["fair"]
    assert got == want
    assert "## Fair comparison" in (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    assert "Isolation plot of optimizer" in page and "Best of k nuisance trials" in page


def _bad(tmp_path: Path, old: str, new: str) -> Path:
    path = tmp_path / "s.toml"
    assert old in FAIR_STUDY
    path.write_text(FAIR_STUDY.replace(old, new))
    return path


BAD = {
    "nuisance is a factor": ('lr = {low = 1e-3, high = 0.3, log = true}', 'optimizer = ["sgd", "adam"]',
                             'nuisance "optimizer" is also a scientific factor'),
    "nuisance changes nothing": ('lr = {low = 1e-3, high = 0.3, log = true}',
                                 'lr = {low = 1e-3, high = 0.3, log = true}\nmomentum = {low = 0.0, high = 0.9}',
                                 'factor "momentum" changes no layer or train setting'),
    "range with no room": ("high = 0.3", "high = 1e-3", "empty range: low (0.001) must be below high (0.001)"),
    "one value": ('lr = {low = 1e-3, high = 0.3, log = true}', "lr = [0.01]", 'nuisance "lr" has no room: one value'),
    "stepped range with one value": ('lr = {low = 1e-3, high = 0.3, log = true}', "lr = {low = 0.01, high = 0.02, "
                                     "step = 0.05}", 'nuisance "lr" has no room: one value (0.01)'),
    "budget of 0": ("trials = 2", "trials = 0", "trials.count: Input should be greater than or equal to 1"),
    "scientific range": ('factors = {optimizer = ["sgd", "adam"]}\n\n[fair.nuisance]',
                         'factors = {optimizer = ["sgd", "adam"], width = {low = 1, high = 4}}\n\n[fair.nuisance]',
                         'scientific factor "width" is a range'),
    "test as validation": ('validation = "holdout"', 'validation = "test"', 'set [train] validation = "holdout"'),
    "per_level for no level": ("seed = 1", 'seed = 1\n[fair.per_level."optimizer=sdg"]\ntrain = {optimizer = '
                               '{momentum = 0.9}}', 'per_level "optimizer=sdg" names no combination of levels; they '
                               'are: optimizer=sgd, optimizer=adam'),
    "per_level setting a level does not take": ("seed = 1", 'seed = 1\n[fair.per_level."optimizer=adam"]\ntrain = '
                                                '{optimizer = {momentum = 0.9}}', 'adam has no argument "momentum"'),
    "unknown sampler": ("seed = 1", 'seed = 1\nsampler = "grid"', 'unknown sampler "grid"; valid: qmc, tpe, random'),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_fair_section_is_one_line_and_exit_2(case, tmp_path, capsys):
    old, new, message = BAD[case]
    out = tmp_path / "out"
    assert main(["run", str(_bad(tmp_path, old, new)), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("convstudy: error: s.toml") and message in err[0], err
    assert not out.exists()


def test_trials_0_on_the_command_line_is_refused(tmp_path, capsys):
    path = _bad(tmp_path, "seed = 1", "seed = 1")
    assert main(["run", str(path), "--trials", "0", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--trials: expected a positive integer, got 0" in err[0], err


def test_the_section_renders_both_verdicts_the_warnings_and_the_plots_without_training():
    from convstudy.report.fair_view import fair_html, fair_markdown, verdict_lines
    from convstudy.report.stats import describe

    spec = fair_spec(high=0.3)
    lr = parse_factor("lr", spec.nuisance["lr"])
    winners = {lv: tune(spec, lv) for lv in OPTIMUM}
    levels = [{"levels": {"optimizer": lv}, "label": f"optimizer={lv}", "trials": [w] * 3, "best": w,
               "boundary": {"lr": at_boundary(w["nuisance"]["lr"], lr)}, "seeds": list(SEEDS),
               "test_accuracy": describe([accuracy(lv, w["nuisance"]["lr"], s) for s in SEEDS]),
               "best_of_k": best_of_k([w["val_accuracy"]] * 3)} for lv, w in winners.items()]
    tuned = verdict({lv["label"]: lv["test_accuracy"]["values"] for lv in levels})
    fixed = {**verdict({f"optimizer={lv}": [accuracy(lv, 1e-3, s) for s in SEEDS] for lv in OPTIMUM}),
             "test_accuracy": {f"optimizer={lv}": describe([accuracy(lv, 1e-3, s) for s in SEEDS]) for lv in OPTIMUM}}
    f = {"scientific": ["optimizer"], "nuisance": spec.nuisance, "fixed": {"epochs": 1, "layers": ["flatten"]},
         "sampler": "qmc", "pruner": "none", "seed": 0, "budget": {"count": 16}, "levels": levels, "tuned": tuned,
         "fixed_recipe": fixed, "verdict_change": verdict_change(fixed, tuned),
         "warnings": ["optimizer=c: the best lr (0.29) lies in the outer 10% of its range; widen the range"]}
    lines = verdict_lines(f)
    assert lines[0] == "Tuned: best optimizer=b; best group: optimizer=b."
    assert lines[1].startswith("Fixed recipe: best optimizer=a") and lines[2].startswith("The verdict changes")
    assert lines[-1].endswith("widen the range")
    md = fair_markdown(f)
    assert "| optimizer=c | 3 |" in md and "| lr |" in md  # the edge column names lr for c only
    page = fair_html({"fair": f})
    assert page.count("<svg") == 2 and "Isolation plot of optimizer" in page


def test_a_study_built_in_python_gets_the_same_checks(tmp_path):
    from convstudy.errors import UserError
    from convstudy.executors import RunOptions
    from convstudy.search.fair import run_fair
    from convstudy.spec import load_study_file

    study = load_study_file(_bad(tmp_path, "seed = 1", "seed = 1"))
    bad = study.model_copy(update={"fair": study.fair.model_copy(update={"nuisance": {"optimizer": ["sgd", "adam"]}})})
    with pytest.raises(UserError, match='nuisance "optimizer" is also a scientific factor'):
        run_fair(bad, RunOptions(out=tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_qmc_asked_while_its_first_trial_runs_logs_nothing(caplog):
    """Ray asks for a level's next trial before the first has ended; QMCSampler's warning about conditional
    spaces (a convstudy space has none) would be one stray stderr line per level."""
    search = fair_spec(high=1.0).level_search({"optimizer": "a"})
    space = search_space(search)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=sampler(search, space, 0))
    first = study.ask()
    suggest(first, space)
    second = study.ask()
    assert suggest(second, space)["lr"] != suggest(first, space)["lr"]
    assert not [r for r in caplog.records if r.name.startswith("optuna")]




def test_per_level_settings_join_only_their_levels_template():
    """SGD's momentum, which Adam does not take: fixed for one level, merged into the template key by key."""
    spec = fair_spec(high=1.0).model_copy(update={"per_level": {"optimizer=b": {"train": {"optimizer": {
        "momentum": 0.9}}}}})
    train = {lv: spec.level_search({"optimizer": lv}).space["train"]["optimizer"] for lv in OPTIMUM}
    assert train["b"] == {"name": "{optimizer}", "lr": "{lr}", "momentum": 0.9}
    assert train["a"] == train["c"] == {"name": "{optimizer}", "lr": "{lr}"}


def test_a_fair_study_round_trips_and_a_larger_budget_is_the_same_study():
    from convstudy.spec import build_study, load_study_file

    study = load_study_file(Path(__file__).parent.parent / "examples" / "fair_optimizers.toml")
    assert build_study(study.to_dict(), "again") == study
    budget = study.fair.trials.model_copy(update={"count": 50})
    more = study.model_copy(update={"fair": study.fair.model_copy(update={"trials": budget})})
    assert more.fingerprint() == study.fingerprint()
    other = study.model_copy(update={"fair": study.fair.model_copy(update={"nuisance": {"lr": {"low": 1e-3,
                                                                                              "high": 1.0}}})})
    assert other.fingerprint() != study.fingerprint()

"""Search (issue 18): Optuna samples a space, every sample is a normal model, a killed search resumes exactly.

Tiny synthetic MNIST (conftest.py), models of a few hundred parameters, 2-3 epochs.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from pathlib import Path

import optuna
import pytest

from conftest import RAY, db_rows, finish, kill_when, run_here, start_run
from convstudy.cli import main
from convstudy.executors import RunOptions
from convstudy.search import run_search
from convstudy.spec import load_study_file

SEARCH_STUDY = """\
name = "tiny-search"
dataset = "mnist"
seeds = {seeds}

[train]
epochs = {epochs}
batch_size = 32
validation = "holdout"

[search]
sampler = "{sampler}"
trials = {trials}
pruner = "{pruner}"
seed = 3
{extra}

[search.space]
name = "cnn"
layers = ["conv({{filters}},{{kernel}})", "pool(2)", "flatten", "dense(10)"]
train = {{optimizer = {{name = "adam", lr = "{{lr}}"}}}}

[search.space.factors]
filters = [2, 4]
kernel = {{low = 3, high = 5, step = 2}}
lr = {kernel_lr}
"""


def write_search(path: Path, *, trials: int = 4, epochs: int = 2, seeds: int = 1, sampler: str = "tpe",
                 pruner: str = "none", extra: str = "", lr: str = "{low = 1e-3, high = 3e-2, log = true}") -> Path:
    path.write_text(SEARCH_STUDY.format(trials=trials, epochs=epochs, seeds=seeds, sampler=sampler, pruner=pruner,
                                        extra=extra, kernel_lr=lr))
    return path


def optuna_trials(out: Path) -> list:
    storage = optuna.storages.RDBStorage(f"sqlite:///{out / 'search.db'}")
    return optuna.load_study(study_name="tiny-search", storage=storage).get_trials()


def trials_of(out: Path) -> dict[str, tuple[str, int]]:
    """model -> (state, epochs_done) of the search's trials in study.db."""
    return {m: (s, e) for m, s, e in db_rows(out / "study.db", "SELECT model, state, epochs_done FROM trials")}


def stored_models(out: Path) -> dict[str, dict]:
    spec = json.loads(db_rows(out / "study.db", "SELECT value FROM meta WHERE key='study'")[0][0])
    return {m["name"]: m for m in spec["models"]}


def test_a_search_trains_its_budget_as_normal_models_with_their_factors(tiny_mnist, tmp_path, one_thread, capsys):
    study = write_search(tmp_path / "s.toml", trials=3, epochs=1, seeds=2)
    out = tmp_path / "out"
    assert main(["run", str(study), "--out", str(out), "--data-dir", str(tiny_mnist.dir), "--quiet"]) == 0
    names = [f"trial-{i:04d}" for i in range(3)]
    assert trials_of(out) == {n: ("complete", 1) for n in names}  # one seed (the first) per configuration
    ot = optuna_trials(out)
    assert [t.state.name for t in ot] == ["COMPLETE"] * 3
    models = stored_models(out)
    for t in ot:  # each model is its trial's configuration, levels recorded as factors
        model = models[t.user_attrs["model"]]
        assert model["factors"] == t.params
        assert model["layers"][0] == f"conv({t.params['filters']},{t.params['kernel']})"
        assert model["train"]["optimizer"]["lr"] == pytest.approx(t.params["lr"])
        last = db_rows(out / "study.db", "SELECT e.val_accuracy FROM epochs e JOIN trials t ON t.id = e.trial_id "
                                         "WHERE t.model = ?", (model["name"],))[-1][0]
        assert t.values == [pytest.approx(last)]  # the objective: final validation accuracy
    report = json.loads((out / "report.json").read_text())
    assert [m["name"] for m in report["models"]] == names
    assert [t["model"] for t in report["search"]["trials"]] == names
    assert report["search"]["best"] == max(ot, key=lambda t: t.values[0]).user_attrs["model"]
    imp = report["search"]["importances"]
    try:  # the `search` extra (in `all`) brings scikit-learn, whose random forest fANOVA needs
        import sklearn  # noqa: F401
        assert imp["evaluator"].startswith("fANOVA")
    except ImportError:
        assert imp["evaluator"].startswith("PED-ANOVA")
    assert set(imp["values"]) <= {"filters", "kernel", "lr"} and imp["values"]
    assert "## Search" in (out / "report.md").read_text() and 'id="search"' in (out / "report.html").read_text()
    # `report` reads search.db and study.db without writing a byte into the study directory.
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    capsys.readouterr()
    assert main(["report", str(out), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["search"]["trials"][0]["model"] == "trial-0000"
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    # A sampled model is a model like any other: export reads it back.
    assert main(["export", str(out), "--model", "trial-0002", "--format", "safetensors",
                 "-o", str(tmp_path / "m.safetensors")]) == 0
    # The budget reached, a rerun trains nothing and samples nothing; then --trials 4 samples one more, and
    # --confirm 2 trains the two best on validation accuracy on their second seed; nothing else trains.
    assert main(["run", str(study), "--out", str(out), "--data-dir", str(tiny_mnist.dir), "--quiet"]) == 0
    assert len(optuna_trials(out)) == 3
    assert main(["run", str(study), "--out", str(out), "--data-dir", str(tiny_mnist.dir), "--quiet",
                 "--trials", "4", "--confirm", "2"]) == 0
    ot = optuna_trials(out)
    assert len(ot) == 4 and trials_of(out)["trial-0003"] == ("complete", 1)
    top = {t.user_attrs["model"] for t in sorted(ot, key=lambda t: -t.values[0])[:2]}
    seeds = db_rows(out / "study.db", "SELECT model, seed, state FROM trials WHERE seed = 1")
    assert {m for m, _, st in seeds if st == "complete"} == top and len(seeds) == 2


def test_a_repeated_configuration_trains_nothing_and_a_converged_search_ends(tiny_mnist, tmp_path, one_thread):
    study = write_search(tmp_path / "s.toml", trials=3, epochs=1, lr="[0.01]")
    study.write_text(study.read_text().replace("filters = [2, 4]", "filters = [2]").replace(
        "kernel = {low = 3, high = 5, step = 2}", "kernel = [3]"))  # one configuration
    out = tmp_path / "out"
    assert main(["run", str(study), "--out", str(out), "--data-dir", str(tiny_mnist.dir), "--quiet"]) == 0
    assert trials_of(out) == {"trial-0000": ("complete", 1)}
    ot = optuna_trials(out)
    assert ot[0].state.name == "COMPLETE" and len(ot) == 101
    assert all(t.state.name == "FAIL" and t.user_attrs["duplicate_of"] == "trial-0000" for t in ot[1:])
    states = {t["state"] for t in json.loads((out / "report.json").read_text())["search"]["trials"][1:]}
    assert states == {"duplicate"}


def test_confirm_with_no_complete_configuration_confirms_nothing(tiny_mnist, tmp_path, one_thread, capsys):
    """Every sampled configuration diverges: --confirm has nothing to retrain, and says so, instead of
    retraining every configuration on the other seeds."""
    study = write_search(tmp_path / "s.toml", trials=2, epochs=1, seeds=2, lr="[10.0]")
    # weight decay of 10 at lr 10 multiplies every weight by -99 a step: they overflow within an epoch
    study.write_text(study.read_text().replace('{name = "adam", lr = "{lr}"}',
                                               '{name = "sgd", lr = "{lr}", weight_decay = 10.0}'))
    out = tmp_path / "out"
    assert main(["run", str(study), "--out", str(out), "--data-dir", str(tiny_mnist.dir), "--quiet",
                 "--confirm", "2"]) == 0
    assert {s for s, _ in trials_of(out).values()} == {"diverged"} and len(trials_of(out)) == 2
    assert db_rows(out / "study.db", "SELECT COUNT(*) FROM trials WHERE seed = 1") == [(0,)]
    said = " ".join(capsys.readouterr().out.split())  # rich wraps at the terminal's width
    assert "--confirm 2: no search trial completed (2 diverged), so there is nothing to confirm" in said, said
    assert "confirming the best" not in said


def test_several_objectives_give_a_pareto_front(tiny_mnist, tmp_path, one_thread):
    study = write_search(tmp_path / "s.toml", trials=3, epochs=1, sampler="nsga2",
                         extra='objective = ["val_accuracy", "params"]')
    out = tmp_path / "out"
    assert main(["run", str(study), "--out", str(out), "--data-dir", str(tiny_mnist.dir), "--quiet"]) == 0
    s = json.loads((out / "report.json").read_text())["search"]
    points = {t["model"]: t["values"] for t in s["trials"]}
    assert all(len(v) == 2 for v in points.values())
    dominated = {a for a, (acc, par) in points.items()
                 if any(b != a and v[0] >= acc and v[1] <= par and v != [acc, par] for b, v in points.items())}
    assert s["pareto_front"] and set(s["pareto_front"]) == set(points) - dominated


def test_pruned_trials_are_recorded_with_the_epoch_they_stopped_at(tiny_mnist, tmp_path, one_thread, capsys):
    study = write_search(tmp_path / "s.toml", trials=6, epochs=3, pruner="successive-halving")
    out = tmp_path / "out"
    assert main(["run", str(study), "--out", str(out), "--data-dir", str(tiny_mnist.dir), "--quiet"]) == 0
    states = trials_of(out)
    pruned = {m: e for m, (s, e) in states.items() if s == "pruned"}
    assert pruned and len(states) == 6 and all(s in ("complete", "pruned") for s, _ in states.values())
    by_model = {t.user_attrs["model"]: t for t in optuna_trials(out)}
    for model, epoch in pruned.items():
        assert 1 <= epoch < 3
        assert by_model[model].state.name == "PRUNED"
        assert sorted(by_model[model].intermediate_values) == list(range(1, epoch + 1))
        rows = db_rows(out / "study.db", "SELECT e.epoch FROM epochs e JOIN trials t ON t.id = e.trial_id "
                                         "WHERE t.model = ? ORDER BY e.epoch", (model,))
        assert [r[0] for r in rows] == list(range(1, epoch + 1))
        assert db_rows(out / "study.db", "SELECT e.detail FROM events e JOIN trials t ON t.id = e.trial_id "
                                         "WHERE t.model = ? AND e.kind = 'pruned'", (model,)) == [(f"after epoch {epoch}",)]
    report = json.loads((out / "report.json").read_text())
    assert {p["model"]: p["epoch"] for p in report["search"]["pruned"]} == pruned
    assert report["search"]["epochs_trained"] == sum(e for _, e in states.values()) < 18
    assert report["study"]["states"]["pruned"] == len(pruned)


def _epoch_rows(out: Path) -> dict[tuple[str, int], tuple]:
    try:
        rows = db_rows(out / "study.db", "SELECT t.model, e.epoch, e.seconds, e.loss, e.checkpoint_digest "
                                         "FROM epochs e JOIN trials t ON t.id = e.trial_id")
    except sqlite3.Error:
        return {}
    return {(m, e): rest for m, e, *rest in rows}


def _mid_trial(out: Path, after: int, epochs: int = 3) -> bool:
    """A trial is running with some but not all of its `epochs` recorded, and more than `after` rows exist."""
    try:
        running = db_rows(out / "study.db", "SELECT model, epochs_done FROM trials WHERE state = 'running'")
    except sqlite3.Error:
        return False
    return len(_epoch_rows(out)) > after and any(1 <= e < epochs for _, e in running)


def test_killed_twice_mid_search_the_rerun_completes_the_budget_without_retraining(tiny_mnist, one_thread, tmp_path):
    study = write_search(tmp_path / "s.toml", trials=3, epochs=3)
    out = tmp_path / "out"
    seen: dict[tuple[str, int], tuple] = {}
    interrupted = []
    for _ in range(2):
        proc = start_run(study, out, tiny_mnist)
        kill_when(proc, lambda: _mid_trial(out, len(seen)))
        seen.update(_epoch_rows(out))
        interrupted += [m for m, s, e in db_rows(out / "study.db", "SELECT model, state, epochs_done FROM trials")
                        if s == "running" and 1 <= e < 3]
    assert [t.state.name for t in optuna_trials(out)].count("RUNNING") >= 1  # the kill left one behind
    run_here(study, out, tiny_mnist)
    states = trials_of(out)
    assert states == {f"trial-{i:04d}": ("complete", 3) for i in range(3)}  # exactly the budget, all finished
    ot = optuna_trials(out)
    assert len(ot) == 3 and all(t.state.name == "COMPLETE" for t in ot)  # none RUNNING, none sampled twice
    assert {t.user_attrs["model"] for t in ot} == set(states)
    rows = _epoch_rows(out)
    # Every epoch recorded before a kill is the same row now (same wall time, loss and checkpoint): resumed, never
    # trained again from scratch; and every trial's epochs are 1, 2, 3.
    assert all(rows[key] == value for key, value in seen.items())
    assert sorted(rows) == sorted((m, e) for m in states for e in (1, 2, 3))
    assert interrupted
    for model in interrupted:
        events = db_rows(out / "study.db", "SELECT e.kind, e.detail FROM events e JOIN trials t ON t.id = e.trial_id "
                                           "WHERE t.model = ? ORDER BY e.id", (model,))
        assert [k for k, _ in events].count("start") == 1 and ("restart" in [k for k, _ in events])
        assert not any(k == "rewind" and "scratch" in d for k, d in events)


def test_a_second_run_on_a_searching_directory_is_refused_in_one_line(tiny_mnist, tmp_path, run_cli):
    """Two processes would each ask Optuna for configurations without seeing the other's models (a false
    'no model "trial-0001"' once the other's trial ended): the second is refused while the first searches.
    The first is stopped (SIGSTOP) mid-trial while the second runs, so it cannot end first on a fast machine."""
    study = write_search(tmp_path / "s.toml", trials=2, epochs=3)
    out = tmp_path / "out"
    first = start_run(study, out, tiny_mnist)
    try:
        deadline = time.monotonic() + 180
        while not _mid_trial(out, 0) and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        first.send_signal(signal.SIGSTOP)
        assert first.poll() is None, "the first run ended before the second started"
        second = run_cli("run", study, "--out", out, "--data-dir", tiny_mnist.dir, "--quiet")
    finally:
        first.send_signal(signal.SIGCONT)
        finish(first)
    assert second.returncode == 2, second.stderr
    assert second.stderr.splitlines() == [f"convstudy: error: {out}: another convstudy run is searching this study "
                                          "directory; rerun when it has ended (several trials at once: --workers N)"]
    assert trials_of(out) == {f"trial-{i:04d}": ("complete", 3) for i in range(2)}
    ot = optuna_trials(out)
    assert len(ot) == 2 and all(t.state.name == "COMPLETE" for t in ot)
    starts = db_rows(out / "study.db", "SELECT COUNT(*) FROM events WHERE kind = 'start'")[0][0]
    assert starts == 2 and db_rows(out / "study.db", "SELECT COUNT(*) FROM runs") == [(1,)]  # second wrote no run
    again = run_cli("run", study, "--out", out, "--data-dir", tiny_mnist.dir, "--quiet")  # the lock went with it
    assert again.returncode == 0, again.stderr
    assert trials_of(out) == {f"trial-{i:04d}": ("complete", 3) for i in range(2)} and len(optuna_trials(out)) == 2


@pytest.mark.parametrize("executor", [pytest.param({"workers": 2}, id="workers"), pytest.param(
    {"executor": "ray", "cpus_per_trial": 1}, id="ray", marks=pytest.mark.xdist_group(RAY))])
def test_the_same_search_on_two_workers_or_ray_runs_two_trials_at_once(executor, request, tiny_mnist, tmp_path,
                                                                       monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # --workers: one thread each, as Ray's --cpus-per-trial 1
    if "executor" in executor:
        request.getfixturevalue("ray_session")
    study = load_study_file(write_search(tmp_path / "s.toml", trials=4, epochs=2, pruner="successive-halving"))
    out = tmp_path / "out"
    opts = RunOptions(out=out, data_dir=str(tiny_mnist.dir), device="cpu", quiet=True, **executor)
    _, finished = run_search(study, opts)
    assert finished
    states = trials_of(out)
    assert len(states) == 4 and all(s in ("complete", "pruned") for s, _ in states.values())
    ot = optuna_trials(out)
    assert len(ot) == 4 and all(t.state.name in ("COMPLETE", "PRUNED") for t in ot)
    assert {t.user_attrs["model"]: t.state.name.lower() for t in ot} == {m: s for m, (s, _) in states.items()}
    # Two trials overlapped: one started before another had finished.
    spans = db_rows(out / "study.db", "SELECT started_at, finished_at FROM trials")
    assert any(a0 < b1 and b0 < a1 for i, (a0, a1) in enumerate(spans) for b0, b1 in spans[i + 1:])
    workers = db_rows(out / "study.db", "SELECT COUNT(*) FROM events WHERE kind = 'worker'")[0][0]
    assert workers == 4


def test_a_search_on_two_workers_killed_mid_trial_resumes_to_its_budget(tiny_mnist, one_thread, tmp_path):
    """`--workers 2`: Optuna is asked as a worker frees up, the driver alone writes search.db and study.db; after
    kill -9 the rerun finishes exactly the budget from the checkpoints, asking nothing twice."""
    # 8 epochs: on a quiet machine two workers finish 3-epoch trials between two looks at study.db.
    study = write_search(tmp_path / "s.toml", trials=3, epochs=8)
    out = tmp_path / "out"
    kill_when(start_run(study, out, tiny_mnist, "--workers", "2"), lambda: _mid_trial(out, 0, epochs=8))
    seen = _epoch_rows(out)
    run_here(study, out, tiny_mnist, "--workers", "2")
    assert trials_of(out) == {f"trial-{i:04d}": ("complete", 8) for i in range(3)}
    ot = optuna_trials(out)
    assert len(ot) == 3 and all(t.state.name == "COMPLETE" for t in ot)
    assert all(_epoch_rows(out)[key] == value for key, value in seen.items())  # resumed, never retrained
    assert db_rows(out / "study.db", "SELECT COUNT(*) FROM events WHERE kind = 'restart'")[0][0] >= 1


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_a_sampler_that_keeps_repeating_itself_falls_back_to_random_draws(tiny_mnist, tmp_path, one_thread,
                                                                          monkeypatch):
    """TPE in a discrete space can propose its best configuration over and over; a repeat trains nothing,
    so after EXPLORE_AFTER repeats in a row one configuration comes from Optuna's RandomSampler and the
    budget is spent on distinct configurations."""
    from convstudy import search
    from convstudy.search import optuna_study

    always_first = {"filters": 2, "kernel": 3, "lr": 0.01}  # a sampler that has "converged" on one point
    monkeypatch.setattr(optuna_study, "sampler", lambda spec, space, seed: optuna.samplers.PartialFixedSampler(
        always_first, optuna.samplers.RandomSampler(seed=seed)))
    study = write_search(tmp_path / "s.toml", trials=2, epochs=1, lr="[0.01]")
    study.write_text(study.read_text().replace("kernel = {low = 3, high = 5, step = 2}", "kernel = [3]"))
    out = tmp_path / "out"
    assert main(["run", str(study), "--out", str(out), "--data-dir", str(tiny_mnist.dir), "--quiet"]) == 0
    assert trials_of(out) == {"trial-0000": ("complete", 1), f"trial-{search.EXPLORE_AFTER + 1:04d}": ("complete", 1)}
    ot = optuna_trials(out)
    assert [t.params["filters"] for t in ot if "model" in t.user_attrs] == [2, 4]
    repeats = [t for t in ot if "duplicate_of" in t.user_attrs]
    assert len(repeats) == search.EXPLORE_AFTER and all(t.state.name == "FAIL" for t in repeats)
    assert ot[-1].user_attrs["sampled_by"] == "random" and "sampled_by" not in ot[0].user_attrs


TAKEN = {  # every way a model could be named trial-NNNN besides being sampled
    "models": '[[models]]\nname = "trial-0001"\nlayers = ["flatten", "dense(10)"]\n',
    "models with factors": '[[models]]\nname = "trial-0001"\nfactors = {filters = 2}\n'
                           'layers = ["flatten", "dense(10)"]\n',
    "a space's names": '[[spaces]]\nname = "g"\nnames = "trial-000{w}"\nfactors = {w = [1, 2]}\n'
                       'layers = ["conv({w},3)", "flatten", "dense(10)"]\n',
}


@pytest.mark.parametrize("where", list(TAKEN))
def test_a_model_named_like_a_sampled_one_is_refused_in_one_line(where, tiny_mnist, tmp_path, capsys):
    """Such a model would stand in for Optuna's trial of that number: Optuna told its accuracy, the report
    crediting it to settings that were never trained."""
    path = tmp_path / "s.toml"
    for text in (write_search(path).read_text(), 'name = "plain"\n'):  # a search study, and a study without one
        path.write_text(text.replace("[train]", f"{TAKEN[where]}\n[train]", 1) if "[train]" in text
                        else text + TAKEN[where])
        out = tmp_path / "out"
        assert main(["run", str(path), "--out", str(out), "--data-dir", str(tiny_mnist.dir), "--quiet"]) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and err[0].startswith("convstudy: error: s.toml") and \
            'model name "trial-0001" is kept for a search\'s sampled models (trial-NNNN)' in err[0], err
        assert not out.exists()


BAD = {
    'sampler = "annealing"': 'search.sampler: unknown sampler "annealing"; valid: tpe, random, grid, cmaes, nsga2',
    'objective = "accuracy"': 'unknown objective "accuracy"; valid: val_accuracy, val_loss, params, mflops',
    "lr = {low = 0.1, high = 0.01}": "empty range: low (0.1) must be below high (0.01)",
    "lr = {low = 0.0, high = 0.1, log = true}": "a log range needs bounds above 0 (low is 0)",
    'sampler = "grid"': 'sampler grid needs discrete levels; factor "lr" is a continuous range',
    'sampler = "cmaes"': 'sampler cmaes samples numeric ranges only; factor "filters" is a list of levels',
    'objective = ["val_accuracy", "params"]\npruner = "median"': "pruner median: Optuna prunes single-objective",
    "trials = {}": "trials needs a count, epochs or both",
    # Issue 25 item 12: a range wholly outside what the setting takes is refused before search.db or study.db exist.
    "lr = {low = 2e6, high = 3e6, log = true}": "s.toml: search: none of 100 configurations drawn from the space is a "
                                                "valid model; the first: space \"cnn\" (filters=2, kernel=3, "
                                                "lr=2000000.0), train.optimizer: adam lr must be in (0, 1e+06)",
    "lr = {low = -1.0, high = -0.5}": "adam lr must be in (0, 1e+06) (got -1.0)",
    "reduction_factor = 3": "reduction_factor: applies to pruner successive-halving or hyperband, not none",
    'pruner = "successive-halving"\nreduction_factor = 1':
        "reduction_factor: Input should be greater than or equal to 2",
}


@pytest.mark.parametrize("pruner_name, factor, want", [("successive-halving", None, 4), ("successive-halving", 3, 3),
                                                        ("hyperband", None, 3), ("hyperband", 2, 2)])
def test_the_reduction_factor_is_optunas_default_unless_set(pruner_name, factor, want, tmp_path):
    from convstudy.search.optuna_study import pruner

    extra = "" if factor is None else f"reduction_factor = {factor}"
    study = load_study_file(write_search(tmp_path / "s.toml", pruner=pruner_name, extra=extra))
    made = pruner(study.search, epochs=4)
    assert made._reduction_factor == want


@pytest.mark.parametrize("change", list(BAD))
def test_a_bad_search_section_is_one_line_and_exit_2(change, tmp_path, capsys):
    if change.startswith("lr ="):
        path = write_search(tmp_path / "s.toml", lr=change.removeprefix("lr = "))
    else:
        text = write_search(tmp_path / "s.toml").read_text()
        key = change.split(" =")[0]
        lines = [line for line in text.splitlines() if not line.startswith(("sampler =", "pruner =", "trials ="))
                 or not any(line.startswith(k.split(" =")[0]) for k in change.splitlines())]
        text = "\n".join(lines).replace('seed = 3\n', f'seed = 3\n{change}\n', 1)
        path = tmp_path / "s.toml"
        path.write_text(text)
        assert key in text
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("convstudy: error: s.toml") and BAD[change] in err[0], err
    assert not out.exists()

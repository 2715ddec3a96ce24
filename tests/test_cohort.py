"""Seeds trained together (train.stack): the stacked network is each member's network side by side,
so its outputs, gradients and optimiser steps are the members' own, and a member's checkpoint is a
lone trial's checkpoint."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import db_rows, epoch_metrics, finish, kill_when, start_run, trial_results, write_tiny_study
from convstudy.data import load_dataset
from convstudy.errors import StoreError
from convstudy.store import CheckpointStorage
from convstudy.executors.trial import Diverged, EpochDone, Finished, Progress, TrialJob, run_trial
from convstudy.spec import ModelSpec, TrainSettings
from convstudy.spec.builtin import seed_study
from convstudy.store import load_tensors
from convstudy.train import Plan, Stacked, init_state, make_trial_data, state_to_tensors
from convstudy.model import stack_modules

PLAN = Plan()  # the CPU, fp32
SEEDS = [3, 4, 5]
# Every stackable kind: valid/same/strided convs, both batch norms, avg and max pooling, dropout.
MIXED = ModelSpec(name="mixed", layers=["conv(6,3)", "bn", "pool(2)", "conv(5,5,same)", "conv(4,3,same,stride=2)",
                                        "pool(2,mode=avg)", "dropout(0.3)", "flatten", "dense(16)", "bn",
                                        "dropout(0.5)", "dense(10)"])
NO_DROPOUT = ModelSpec(name="nodrop", layers=["conv(8,3)", "pool(2)", "conv(8,3,same)", "flatten", "dense(32)",
                                              "bn", "dense(10)"])


def _members(spec: ModelSpec, settings: TrainSettings | None = None) -> list:
    settings = settings or TrainSettings(epochs=1, batch_size=32)
    return [init_state(spec, settings, (28, 28, 1), seed, PLAN) for seed in SEEDS]


def _no_dropout(model: nn.Module) -> None:
    for mod in model.modules():
        if isinstance(mod, nn.Dropout):
            mod.p = 0.0


@pytest.mark.parametrize("spec", [MIXED, seed_study().model("k3-4"), seed_study().model("k5-3")],
                         ids=["mixed", "k3-4", "k5-3"])
def test_stacked_network_computes_each_members_outputs_and_gradients(spec):
    members = [st.model.double() for st in _members(spec)]
    stacked = stack_modules(members)
    for model in (*members, stacked):
        model.train()
        _no_dropout(model)
    x = torch.rand(16, len(SEEDS), 1, 28, 28, dtype=torch.float64)
    y = torch.randint(0, 10, (16, len(SEEDS)))
    out = stacked(x.reshape(16, len(SEEDS), 28, 28))
    F.cross_entropy(out.transpose(1, 2), y, reduction="none").mean(0).sum().backward()
    grads = {name: p.grad for name, p in stacked.named_parameters()}
    for i, model in enumerate(members):
        ref = model(x[:, i])
        torch.testing.assert_close(out[:, i], ref, rtol=1e-10, atol=1e-10)
        F.cross_entropy(ref, y[:, i]).backward()
        for name, p in model.named_parameters():
            torch.testing.assert_close(grads[name].chunk(len(SEEDS))[i], p.grad, rtol=1e-9, atol=1e-12)
        for name, buf in model.named_buffers():  # batch-norm running statistics, per member
            expect = stacked.get_buffer(name)
            if not name.endswith("num_batches_tracked"):
                expect = expect.chunk(len(SEEDS))[i]
            torch.testing.assert_close(expect, buf)


def test_stacking_keeps_each_members_initial_weights_and_keys():
    states = _members(MIXED)
    stacked = Stacked(_members(MIXED), TrainSettings(), PLAN)
    for i, st in enumerate(states):
        member = stacked.weights(i)
        assert member.keys() == st.model.state_dict().keys()
        for key, value in st.model.state_dict().items():
            assert torch.equal(member[key], value), key


def _data(tiny_mnist, settings):
    return make_trial_data(load_dataset("mnist", tiny_mnist.dir), settings, torch.device("cpu"))


def _jobs(spec, settings, seeds=SEEDS) -> list[TrialJob]:
    return [TrialJob(i, spec, settings, s, (28, 28, 1), PLAN, owner=f"trial {s}") for i, s in enumerate(seeds)]


def _train(jobs, data, root, saved=None) -> list:
    """run_trial's events for `jobs` trained together, checkpointing under `root`; no progress events."""
    return [e for e in run_trial(jobs, data, CheckpointStorage(str(root)), saved) if not isinstance(e, Progress)]


def _histories(events, seeds=SEEDS) -> list[list]:
    return [[e.result for e in events if isinstance(e, EpochDone) and e.job.seed == s] for s in seeds]


def _finished(events) -> dict:
    return {e.job.seed: e for e in events if isinstance(e, Finished)}


def test_a_cohort_trains_each_member_as_its_lone_trial_would(tiny_mnist, tmp_path):
    # Without dropout nothing random is shared, so the members follow their lone trials to rounding. SGD,
    # because Adam's g / sqrt(v) turns rounding-level gradients of dead units into full-size steps.
    settings = TrainSettings(epochs=2, batch_size=32, validation="holdout", optimizer="sgd")
    data = _data(tiny_mnist, settings)
    lone = [e for job in _jobs(NO_DROPOUT, settings) for e in _train([job], data, tmp_path / "lone")]
    stacked = _train(_jobs(NO_DROPOUT, settings), data, tmp_path / "stacked")
    for seed, mine, theirs in zip(SEEDS, _histories(stacked), _histories(lone)):
        want = _finished(lone)[seed].weights
        for key, value in _finished(stacked)[seed].weights.items():
            torch.testing.assert_close(value, want[key], rtol=1e-4, atol=1e-5)
        for a, b in zip(mine, theirs, strict=True):
            assert a.loss == pytest.approx(b.loss, rel=1e-4)
            assert a.val_accuracy == pytest.approx(b.val_accuracy, abs=2 / len(data.val))
    assert len({h[-1].loss for h in _histories(stacked)}) == len(SEEDS)  # members differ: own seeds, own batches
    for done in _finished(stacked).values():
        assert done.probs.shape == (len(data.test), 10)
        torch.testing.assert_close(done.probs.sum(1), torch.ones(len(data.test)))


def test_a_members_checkpoint_resumes_as_a_lone_trial_and_a_cohort_resumes_exactly(tiny_mnist, tmp_path):
    import shutil

    settings = TrainSettings(epochs=2, batch_size=32, validation="holdout")
    data = _data(tiny_mnist, settings)
    straight = _train(_jobs(MIXED, settings), data, tmp_path / "straight")
    first = TrainSettings(epochs=1, batch_size=32, validation="holdout")
    part = _train(_jobs(MIXED, first), data, tmp_path / "part")  # leaves each member's epoch-1 checkpoint
    shutil.copytree(tmp_path / "part", tmp_path / "lone")
    # The cohort rebuilt from its members' checkpoints continues bit for bit (dropout included).
    resumed = _train(_jobs(MIXED, settings), data, tmp_path / "part")
    assert _metrics(_histories(part)) == [m[:1] for m in _metrics(_histories(straight))]
    assert _metrics(_histories(resumed)) == [m[1:] for m in _metrics(_histories(straight))]
    for seed, done in _finished(straight).items():
        for key, value in done.weights.items():
            assert torch.equal(_finished(resumed)[seed].weights[key], value), key
    # A lone trial takes a member's checkpoint as its own.
    lone = _train(_jobs(MIXED, settings)[1:2], data, tmp_path / "lone")
    assert [e.result.epoch for e in lone if isinstance(e, EpochDone)] == [2] and SEEDS[1] in _finished(lone)


def _metrics(histories):
    return [[(r.epoch, r.loss, r.accuracy, r.val_loss, r.val_accuracy) for r in h] for h in histories]


def test_a_diverging_member_is_reported_and_the_others_train_on(tiny_mnist, tmp_path):
    settings = TrainSettings(epochs=2, batch_size=32, validation="holdout")
    data = _data(tiny_mnist, settings)
    states = _members(NO_DROPOUT, settings)
    with torch.no_grad():
        states[1].model[0].weight.fill_(float("nan"))
    events = _train(_jobs(NO_DROPOUT, settings), data, tmp_path, saved=[(state_to_tensors(st), None) for st in states])
    assert [(e.job.seed, e.epoch) for e in events if isinstance(e, Diverged)] == [(SEEDS[1], 1)]
    assert [len(h) for h in _histories(events)] == [2, 0, 2]
    assert all(h[-1].val_accuracy > 0.3 for i, h in enumerate(_histories(events)) if i != 1)
    assert set(_finished(events)) == {SEEDS[0], SEEDS[2]}


# ---- end to end: `convstudy run --stack-seeds` -------------------------------------------------

def _checkpointed(out) -> int:
    """Epochs checkpointed over all unfinished trials (a checkpoint appears by atomic rename)."""
    total = 0
    for path in out.glob("trials/*/seed-*/checkpoint.safetensors"):
        try:
            total += int(load_tensors(path)[1]["epoch"])
        except StoreError:  # renamed away between the glob and the read
            pass
    return total


def test_a_stacked_run_is_killed_and_resumes_to_the_uninterrupted_runs_numbers(tiny_mnist_session, tmp_path):
    study = write_tiny_study(tmp_path / "tiny.toml", epochs=4, seeds=[0, 1, 2])
    finish(start_run(study, tmp_path / "straight", tiny_mnist_session, "--stack-seeds", "3"))
    want = trial_results(tmp_path / "straight" / "study.db")
    assert len(want) == 6 and all(state == "complete" for state, _, _ in want.values())
    assert len({loss for (model, _), (_, _, loss) in want.items() if model == "small-a"}) == 3  # seeds differ
    runs = db_rows(tmp_path / "straight" / "study.db", "SELECT provenance FROM runs")
    assert json.loads(runs[0][0])["stack_seeds"] == 3

    out = tmp_path / "killed"
    kill_when(start_run(study, out, tiny_mnist_session, "--stack-seeds", "3"), lambda: _checkpointed(out) >= 3)
    finish(start_run(study, out, tiny_mnist_session, "--stack-seeds", "3"))
    assert trial_results(out / "study.db") == want
    assert epoch_metrics(out / "study.db") == epoch_metrics(tmp_path / "straight" / "study.db")
    # Every member left a lone trial's files: weights that load into the plain model, and predictions.
    for seed in (0, 1, 2):
        trial = out / "trials" / "small-a" / f"seed-{seed}"
        assert (trial / "weights.safetensors").exists() and (trial / "predictions.safetensors").exists()


def test_stack_seeds_rejects_bad_values_in_one_line(run_cli, tiny_study_file, tmp_path):
    proc = run_cli("run", tiny_study_file(), "--out", tmp_path / "o", "--stack-seeds", "many")
    assert proc.returncode == 2 and "--stack-seeds" in proc.stderr and "positive integer or auto" in proc.stderr
    proc = run_cli("run", tiny_study_file(), "--out", tmp_path / "o", "--stack-seeds", "2", "--executor", "ray")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "--stack-seeds: only the local executor" in proc.stderr
    assert not (tmp_path / "o").exists()


def test_members_checkpointed_at_different_epochs_train_alone(tiny_mnist, tmp_path):
    settings = TrainSettings(epochs=2, batch_size=32, validation="holdout")
    data = _data(tiny_mnist, settings)
    jobs = _jobs(NO_DROPOUT, settings, SEEDS[:2])
    _train([TrialJob(0, NO_DROPOUT, TrainSettings(epochs=1, batch_size=32, validation="holdout"), SEEDS[0],
                     (28, 28, 1), PLAN, owner=jobs[0].owner)], data, tmp_path)  # seed 0 is one epoch ahead
    events = _train(jobs, data, tmp_path)
    assert [(e.job.seed, e.result.epoch) for e in events if isinstance(e, EpochDone)] == \
        [(SEEDS[0], 2), (SEEDS[1], 1), (SEEDS[1], 2)]  # the first resumed after its epoch 1
    assert set(_finished(events)) == set(SEEDS[:2])

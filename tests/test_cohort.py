"""Seeds trained together (train.cohort): the stacked network is each member's network side by side,
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
from convstudy.spec import ModelSpec, TrainSettings
from convstudy.spec.builtin import seed_study
from convstudy.train import fit, init_state, load_state_tensors
from convstudy.train.cohort import (
    evaluate_cohort, fit_cohort, init_cohort, member_checkpoint, member_model_state, stack_modules,
)
from convstudy.store import load_tensors
from convstudy.train.data import make_trial_data

CPU = torch.device("cpu")
SEEDS = [3, 4, 5]
# Every stackable kind: valid/same/strided convs, both batch norms, avg and max pooling, dropout.
MIXED = ModelSpec(name="mixed", layers=["conv(6,3)", "bn", "pool(2)", "conv(5,5,same)", "conv(4,3,same,stride=2)",
                                        "pool(2,mode=avg)", "dropout(0.3)", "flatten", "dense(16)", "bn",
                                        "dropout(0.5)", "dense(10)"])
NO_DROPOUT = ModelSpec(name="nodrop", layers=["conv(8,3)", "pool(2)", "conv(8,3,same)", "flatten", "dense(32)",
                                              "bn", "dense(10)"])


def _members(spec: ModelSpec, settings: TrainSettings | None = None) -> list:
    settings = settings or TrainSettings(epochs=1, batch_size=32)
    return [init_state(spec, settings, (28, 28, 1), seed, CPU) for seed in SEEDS]


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
    cohort = init_cohort(MIXED, TrainSettings(), (28, 28, 1), SEEDS, CPU)
    for i, st in enumerate(states):
        member = member_model_state(cohort, i)
        assert member.keys() == st.model.state_dict().keys()
        for key, value in st.model.state_dict().items():
            assert torch.equal(member[key], value), key


def _data(tiny_mnist, settings):
    return make_trial_data(load_dataset("mnist", tiny_mnist.dir), settings, CPU)


def test_a_cohort_trains_each_member_as_its_lone_trial_would(tiny_mnist):
    # Without dropout nothing random is shared, so the members follow their lone trials to rounding. SGD,
    # because Adam's g / sqrt(v) turns rounding-level gradients of dead units into full-size steps.
    settings = TrainSettings(epochs=2, batch_size=32, validation="holdout", optimizer="sgd")
    data = _data(tiny_mnist, settings)
    lone = [fit(st, settings, data) for st in _members(NO_DROPOUT, settings)]
    cohort = fit_cohort(init_cohort(NO_DROPOUT, settings, (28, 28, 1), SEEDS, CPU), settings, data)
    for i, st in enumerate(lone):
        for key, value in st.model.state_dict().items():
            torch.testing.assert_close(member_model_state(cohort, i)[key], value, rtol=1e-4, atol=1e-5)
        for mine, theirs in zip(cohort.histories[i], st.history):
            assert mine.loss == pytest.approx(theirs.loss, rel=1e-4)
            assert mine.val_accuracy == pytest.approx(theirs.val_accuracy, abs=2 / len(data.val))
    assert len({h[-1].loss for h in cohort.histories}) == len(SEEDS)  # members differ: own seeds, own batches
    losses, accs, probs = evaluate_cohort(cohort, data.test, with_probs=True)
    assert probs.shape == (len(SEEDS), len(data.test), 10)
    torch.testing.assert_close(probs.sum(2), torch.ones(len(SEEDS), len(data.test)))


def test_a_members_checkpoint_resumes_as_a_lone_trial_and_a_cohort_resumes_exactly(tiny_mnist):
    settings = TrainSettings(epochs=2, batch_size=32, validation="holdout")
    data = _data(tiny_mnist, settings)
    straight = fit_cohort(init_cohort(MIXED, settings, (28, 28, 1), SEEDS, CPU), settings, data)

    first = TrainSettings(epochs=1, batch_size=32, validation="holdout")
    part = fit_cohort(init_cohort(MIXED, first, (28, 28, 1), SEEDS, CPU), first, data)
    saved = [member_checkpoint(part, i) for i in range(len(SEEDS))]
    # The cohort rebuilt from its members' checkpoints continues bit for bit (dropout included).
    states = [load_state_tensors(init_state(MIXED, settings, (28, 28, 1), s, CPU), *saved[i])
              for i, s in enumerate(SEEDS)]
    resumed = fit_cohort(init_cohort(MIXED, settings, (28, 28, 1), SEEDS, CPU, states=states), settings, data)
    assert _metrics(resumed.histories) == _metrics(straight.histories)
    for key, value in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key
    # A lone trial takes a member's checkpoint as its own.
    lone = load_state_tensors(init_state(MIXED, settings, (28, 28, 1), SEEDS[1], CPU), *saved[1])
    assert lone.epoch == 1 and lone.history == part.histories[1]
    fit(lone, settings, data)
    assert lone.epoch == 2 and len(lone.optimizer.state) == len(list(lone.model.parameters()))


def _metrics(histories):
    return [[(r.epoch, r.loss, r.accuracy, r.val_loss, r.val_accuracy) for r in h] for h in histories]


def test_a_diverging_member_is_reported_and_the_others_train_on(tiny_mnist):
    settings = TrainSettings(epochs=2, batch_size=32, validation="holdout")
    data = _data(tiny_mnist, settings)
    cohort = init_cohort(NO_DROPOUT, settings, (28, 28, 1), SEEDS, CPU)
    with torch.no_grad():
        cohort.model[0].weight.chunk(len(SEEDS))[1].fill_(float("nan"))
    reported: list[tuple[int, int]] = []
    fit_cohort(cohort, settings, data, on_diverged=lambda i, epoch: reported.append((i, epoch)))
    assert reported == [(1, 1)]
    assert [len(h) for h in cohort.histories] == [2, 0, 2]
    assert all(r.val_accuracy > 0.3 for i in (0, 2) for r in cohort.histories[i][-1:])


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


class _MemorySink:
    """A TrialSink that keeps everything in memory."""

    def __init__(self, checkpoints=None) -> None:
        self.checkpoints = dict(checkpoints or {})
        self.epochs: list[tuple[int, int]] = []
        self.done: dict[int, float] = {}

    def load_checkpoint(self, job):
        return self.checkpoints.get(job.seed)

    def epoch_done(self, job, result, tensors, meta) -> None:
        self.checkpoints[job.seed] = (tensors, meta)
        self.epochs.append((job.seed, result.epoch))

    def finished(self, job, weights, probs, labels, test_loss, test_accuracy) -> None:
        self.done[job.seed] = test_accuracy

    def diverged(self, job, epoch) -> None:  # pragma: no cover - not expected here
        raise AssertionError("diverged")


def test_members_checkpointed_at_different_epochs_train_alone(tiny_mnist):
    from convstudy.executors.trial import TrialJob, run_cohort
    from convstudy.train import state_to_tensors

    settings = TrainSettings(epochs=2, batch_size=32, validation="holdout")
    data = _data(tiny_mnist, settings)
    jobs = [TrialJob(trial_id=i, model=NO_DROPOUT, settings=settings, seed=s, input_shape=(28, 28, 1))
            for i, s in enumerate(SEEDS[:2])]
    ahead = fit(init_state(NO_DROPOUT, settings, (28, 28, 1), SEEDS[0], CPU), TrainSettings(
        epochs=1, batch_size=32, validation="holdout"), data)
    sink = _MemorySink({SEEDS[0]: state_to_tensors(ahead)})
    ends = run_cohort(jobs, data, sink)
    assert ends == {0: "complete", 1: "complete"}
    assert sink.epochs == [(SEEDS[0], 2), (SEEDS[1], 1), (SEEDS[1], 2)]  # the first resumed after its epoch 1
    assert set(sink.done) == set(SEEDS[:2])

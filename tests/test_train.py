"""Train stage on synthetic data: it learns, honours Keras fit() semantics, and stops on divergence."""

from __future__ import annotations

import torch

from conftest import trial_events
from convstudy.data import load_dataset
from convstudy.executors.trial import Diverged, EpochDone, Finished
from convstudy.spec import ModelSpec, TrainSettings, OptimizerSpec, load_study_file
from convstudy.store import StudyStore
from convstudy.train import make_trial_data

SMALL = ModelSpec(name="small", layers=["conv(8,3)", "pool(2)", "flatten", "dense(32)", "dense(10)"])


def test_trainer_learns_synthetic_digits(tiny_mnist, tmp_path):
    ds = load_dataset("mnist", tiny_mnist.dir)
    settings = TrainSettings(epochs=3, batch_size=32, validation="holdout")
    data = make_trial_data(ds, settings, torch.device("cpu"))
    events = trial_events(SMALL, settings, data, tmp_path, seed=0)
    history = [e.result for e in events if isinstance(e, EpochDone)]
    assert [r.epoch for r in history] == [1, 2, 3] and isinstance(events[-1], Finished)
    assert history[-1].loss < history[0].loss
    assert history[-1].val_accuracy > 0.5  # chance is 0.1
    assert events[-1].probs.shape == (tiny_mnist.n_test, 10)


def test_holdout_validation_comes_from_training_set(tiny_mnist):
    ds = load_dataset("mnist", tiny_mnist.dir)
    holdout = make_trial_data(ds, TrainSettings(validation="holdout"), torch.device("cpu"))
    assert len(holdout.train) + len(holdout.val) == tiny_mnist.n_train
    assert len(holdout.val) == tiny_mnist.n_train // 10
    assert torch.bincount(holdout.val.y, minlength=10).tolist() == [6] * 10  # stratified
    notebook = make_trial_data(ds, TrainSettings(validation="test"), torch.device("cpu"))
    assert notebook.val is notebook.test and len(notebook.train) == tiny_mnist.n_train


def test_train_limit_keeps_a_stratified_subset(tiny_mnist):
    ds = load_dataset("mnist", tiny_mnist.dir)
    data = make_trial_data(ds, TrainSettings(validation="test", train_limit=100), torch.device("cpu"))
    assert len(data.train) == 100
    assert torch.bincount(data.train.y, minlength=10).tolist() == [10] * 10


def test_last_partial_batch_is_kept(tiny_mnist, tmp_path, monkeypatch):
    from convstudy.store import CheckpointStorage
    from convstudy.executors.trial import Progress, TrialJob, run_trial
    from convstudy.train import Plan

    ds = load_dataset("mnist", tiny_mnist.dir)
    settings = TrainSettings(epochs=1, batch_size=256, validation="test")  # 600 = 2*256 + 88
    data = make_trial_data(ds, settings, torch.device("cpu"))
    job = TrialJob(0, SMALL, settings, 0, (28, 28, 1), Plan())
    done = [e.done for e in run_trial(job, data, CheckpointStorage(str(tmp_path))) if isinstance(e, Progress)]
    assert done == [256, 512, 600]


def test_divergence_is_an_event_with_its_epoch(tiny_mnist, tmp_path):
    ds = load_dataset("mnist", tiny_mnist.dir)
    settings = TrainSettings(epochs=3, batch_size=64, validation="test",
                             optimizer=OptimizerSpec(name="sgd", args={"lr": 1e5}))
    data = make_trial_data(ds, settings, torch.device("cpu"))
    linear = ModelSpec(name="linear", layers=["conv(8,3,activation=linear)", "flatten", "dense(32,linear)", "dense(10)"])
    events = trial_events(linear, settings, data, tmp_path, seed=0)
    assert isinstance(events[-1], Diverged) and 1 <= events[-1].epoch <= 3
    assert not any(isinstance(e, Finished) for e in events)


def test_an_epoch_is_one_record_from_the_loop_to_study_db(tiny_mnist, tiny_study_file, tmp_path):
    """What run_trial yields for an epoch is what study.db gives back: one record type, equal field for field."""
    settings = TrainSettings(epochs=2, batch_size=32, validation="holdout")
    data = make_trial_data(load_dataset("mnist", tiny_mnist.dir), settings, torch.device("cpu"))
    history = [e.result for e in trial_events(SMALL, settings, data, tmp_path / "ckpt", seed=0)
               if isinstance(e, EpochDone)]
    store = StudyStore.create_or_open(tmp_path / "out", load_study_file(tiny_study_file()))
    store.db.ensure_trials([("small-a", 0, 0)])
    (rec,) = store.db.trials()
    for r in history:
        store.db.record_epoch(rec.id, r.epoch, vars(r))
    assert store.db.epochs(rec.id) == history

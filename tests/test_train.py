"""Train stage on synthetic data: it learns, honours Keras fit() semantics, and stops on divergence."""

from __future__ import annotations

import pytest
import torch

from convstudy.data import load_dataset
from convstudy.spec import ModelSpec, TrainSettings, OptimizerSpec
from convstudy.train import Diverged, fit, init_state, make_optimizer
from convstudy.train.data import make_trial_data

SMALL = ModelSpec(name="small", layers=["conv(8,3)", "pool(2)", "flatten", "dense(32)", "dense(10)"])


def test_trainer_learns_synthetic_digits(tiny_mnist):
    ds = load_dataset("mnist", tiny_mnist.dir)
    settings = TrainSettings(epochs=3, batch_size=32, validation="holdout")
    data = make_trial_data(ds, settings, torch.device("cpu"))
    state = init_state(SMALL, settings, (28, 28, 1), seed=0, device=torch.device("cpu"))
    fit(state, settings, data)
    first, last = state.history[0], state.history[-1]
    assert len(state.history) == 3 and state.epoch == 3
    assert last.loss < first.loss
    assert last.val_accuracy > 0.5  # chance is 0.1


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


def test_last_partial_batch_is_kept(tiny_mnist):
    ds = load_dataset("mnist", tiny_mnist.dir)
    settings = TrainSettings(epochs=1, batch_size=256, validation="test")  # 600 = 2*256 + 88
    data = make_trial_data(ds, settings, torch.device("cpu"))
    state = init_state(SMALL, settings, (28, 28, 1), seed=0, device=torch.device("cpu"))
    steps = []
    state.optimizer.register_step_post_hook(lambda *a: steps.append(1))
    fit(state, settings, data)
    assert len(steps) == 3


def test_divergence_raises_with_epoch(tiny_mnist):
    ds = load_dataset("mnist", tiny_mnist.dir)
    settings = TrainSettings(epochs=3, batch_size=64, validation="test",
                             optimizer=OptimizerSpec(name="sgd", args={"lr": 1e5}))
    data = make_trial_data(ds, settings, torch.device("cpu"))
    linear = ModelSpec(name="linear", layers=["conv(8,3,activation=linear)", "flatten", "dense(32,linear)", "dense(10)"])
    state = init_state(linear, settings, (28, 28, 1), seed=0, device=torch.device("cpu"))
    with pytest.raises(Diverged) as exc:
        fit(state, settings, data)
    assert 1 <= exc.value.epoch <= 3


@pytest.mark.parametrize("name", ["adadelta", "adam", "adamw", "sgd", "rmsprop"])
def test_optimizer_registry_uses_keras_defaults(name):
    from convstudy.spec import OPTIMIZERS

    opt = make_optimizer(OptimizerSpec(name=name), torch.nn.Linear(2, 2).parameters())
    group = opt.param_groups[0]
    assert group["lr"] == OPTIMIZERS[name]["lr"]
    if "eps" in OPTIMIZERS[name]:
        assert group["eps"] == 1e-7

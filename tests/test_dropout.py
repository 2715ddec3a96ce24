"""Dropout masks drawn as Keras draws them (uniform >= rate), where the train stage chooses it."""

import pytest
import torch

from convstudy.model import Dropout, build_model
from convstudy.spec import ModelSpec
from convstudy.spec.builtin import seed_study
from convstudy.train import plan


def _uniform(p):
    mod = Dropout(p)
    mod.uniform = True
    return mod.train()


@pytest.mark.parametrize("p", [0.25, 0.5, 0.3])
def test_keeps_each_unit_with_probability_one_minus_rate_and_scales_the_kept_ones(p):
    torch.manual_seed(0)
    x = torch.rand(400, 50, 50) + 0.5
    y = _uniform(p)(x)
    kept = y != 0
    n = x.numel()
    sd = (p * (1 - p) / n) ** 0.5
    assert abs(kept.double().mean().item() - (1 - p)) < 5 * sd
    assert torch.allclose(y[kept], x[kept] / (1 - p))


def test_the_gradient_is_the_same_mask_and_scale():
    torch.manual_seed(1)
    x = torch.randn(64, 32, 6, 6).contiguous(memory_format=torch.channels_last).requires_grad_()
    y = _uniform(0.25)(x)
    y.backward(torch.ones_like(y))
    mask = (y != 0).float()
    assert torch.equal(x.grad, mask / 0.75)
    assert y.is_contiguous(memory_format=torch.channels_last)


def test_the_same_seed_draws_the_same_mask_and_evaluation_drops_nothing():
    x = torch.randn(8, 16, 5, 5)
    drop = _uniform(0.5)
    torch.manual_seed(3)
    a = drop(x)
    torch.manual_seed(3)
    b = drop(x)
    assert torch.equal(a, b)
    torch.manual_seed(3)
    bernoulli = Dropout(0.5).train()(x)  # torch's sampler: same distribution, other draws
    assert not torch.equal(a, bernoulli)
    assert torch.equal(drop.eval()(x), x)


def test_a_bf16_activation_stays_bf16_and_rates_zero_and_one_behave_as_torchs():
    x = torch.randn(32, 64, dtype=torch.bfloat16)
    assert _uniform(0.5)(x).dtype == torch.bfloat16
    assert torch.equal(_uniform(0.0)(x), x)
    assert torch.equal(_uniform(1.0)(x), torch.zeros_like(x))


def test_the_plan_draws_uniform_masks_on_cpus_without_native_bf16_only(monkeypatch):
    spec = seed_study().model("k3-1")
    monkeypatch.setattr("convstudy.train.device.cpu_has_native_bf16", lambda: False)
    how = plan(spec, (28, 28, 1), torch.device("cpu"), "fp32", 1)
    assert how.uniform_dropout and how.numerics()["dropout"] == "uniform"
    monkeypatch.setattr("convstudy.train.device.cpu_has_native_bf16", lambda: True)
    for precision in ("fp32", "bf16"):
        how = plan(spec, (28, 28, 1), torch.device("cpu"), precision, 1)
        assert not how.uniform_dropout and how.numerics()["dropout"] == "bernoulli"
    assert not plan(spec, (28, 28, 1), torch.device("cuda"), "bf16", 1).uniform_dropout


def test_build_model_sets_every_dropout_including_those_inside_a_residual_block():
    spec = ModelSpec.model_validate({"name": "r", "layers": [
        "conv(8,3,same)", {"type": "residual", "layers": ["conv(8,3,same)", "dropout(0.2)"]},
        "flatten", "dropout(0.5)", "dense(10)"]})
    drops = [m for m in build_model(spec, (8, 8, 1), uniform_dropout=True).modules() if isinstance(m, Dropout)]
    assert len(drops) == 2 and all(m.uniform for m in drops)
    assert not any(m.uniform for m in build_model(spec, (8, 8, 1)).modules() if isinstance(m, Dropout))

"""Max pooling before ReLU on the CPU: the same weights bit for bit, on a quarter of the pixels."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from convstudy.model import build_model
from convstudy.spec.builtin import seed_study
from convstudy.train import plan


def _plan(name, device="cpu", precision="fp32"):
    return plan(seed_study().model(name), (28, 28, 1), torch.device(device), precision, 1)


def test_pool_first_is_on_for_the_cpu_only():
    assert _plan("k3-1").pool_first
    assert not _plan("k3-1", device="cuda").pool_first


def _trained(name: str, pool_first: bool, steps: int = 3) -> nn.Module:
    torch.manual_seed(0)
    model = build_model(seed_study().model(name), (28, 28, 1), pool_first=pool_first)
    model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.rand(16, 1, 28, 28, generator=gen).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (16,), generator=gen)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


@pytest.mark.parametrize("name", ["k3-1", "k3-3", "k5-4"])
def test_pool_first_trains_bitwise_the_same_weights(name):
    before, after = _trained(name, False), _trained(name, True)
    kinds = [type(m) for m in after]
    assert kinds != [type(m) for m in before]  # ReLU and MaxPool2d traded places somewhere
    i = kinds.index(nn.MaxPool2d)
    assert kinds[i + 1] is nn.ReLU
    a, b = before.state_dict(), after.state_dict()
    assert list(a) == list(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key

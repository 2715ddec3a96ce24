"""The CPU's fp32 paths for small models: a one-channel conv as one patch GEMM, and max pooling before ReLU."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from convstudy.model import build_model
from convstudy.model.conv import Conv2d
from convstudy.spec.builtin import SEED_MODELS, seed_study
from convstudy.train import plan

GEOMETRIES = [  # (cout, h, w, kernel, padding): one input channel
    (4, 28, 28, 3, "valid"),
    (3, 14, 14, 7, "same"),
    (2, 8, 9, 4, "same"),  # even kernel: torch pads the extra pixel at the bottom/right
    (3, 7, 10, (3, 5), (1, 2)),
]


def _pair(cout, kernel, padding, dtype=torch.float64):
    torch.manual_seed(0)
    conv = Conv2d(1, cout, kernel, padding=padding).to(dtype)
    gemm = Conv2d(1, cout, kernel, padding=padding, algorithm="gemm").to(dtype)
    gemm.load_state_dict(conv.state_dict())
    return conv, gemm


@pytest.mark.parametrize("cout,h,w,kernel,padding", GEOMETRIES)
@pytest.mark.parametrize("channels_last", [False, True])
def test_gemm_matches_direct_convolution_in_float64(cout, h, w, kernel, padding, channels_last):
    conv, gemm = _pair(cout, kernel, padding)
    assert gemm.gemm_supported()
    x = torch.randn(3, 1, h, w, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, y2 = conv(x1), gemm(x2)
    assert y2.shape == y1.shape
    torch.testing.assert_close(y2, y1, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(y1)
    y1.backward(g)
    y2.backward(g)
    torch.testing.assert_close(x2.grad, x1.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gemm.weight.grad, conv.weight.grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gemm.bias.grad, conv.bias.grad, rtol=1e-12, atol=1e-12)


def test_gemm_gradcheck_and_no_bias():
    torch.manual_seed(0)
    gemm = Conv2d(1, 2, 3, padding="same", bias=False, algorithm="gemm").double()
    x = torch.randn(2, 1, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(gemm, (x,))
    torch.testing.assert_close(gemm(x), F.conv2d(x, gemm.weight, padding="same"))


def test_gemm_in_fp32_is_as_accurate_as_direct_fp32():
    conv, gemm = _pair(128, 7, "same", torch.float32)
    x = torch.rand(8, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    exact = F.conv2d(x.double(), conv.weight.double(), conv.bias.double(), padding="same")
    errs = [((mod(x).double() - exact).abs().max() / exact.abs().max()).item() for mod in (conv, gemm)]
    assert errs[1] < 2 * errs[0] + 1e-6, errs


def test_multi_channel_or_strided_convs_stay_direct():
    for conv in (Conv2d(2, 4, 3, algorithm="gemm"), Conv2d(1, 4, 3, stride=2, algorithm="gemm")):
        assert not conv.gemm_supported()
        x = torch.randn(1, conv.in_channels, 9, 9)
        torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight, conv.bias, stride=conv.stride))


def _plan(name, device="cpu", precision="fp32"):
    return plan(seed_study().model(name), (28, 28, 1), torch.device(device), precision, 1)


@pytest.mark.parametrize("native_bf16", [False, True])
def test_no_plan_picks_the_patch_gemm_it_measured_no_faster_per_model(monkeypatch, native_bf16):
    monkeypatch.setattr("convstudy.train.device.cpu_has_native_bf16", lambda: native_bf16)
    for name in SEED_MODELS:
        for precision in ("fp32", "bf16"):
            assert _plan(name, precision=precision).gemm == (), name
    assert _plan("k3-1").numerics()["conv_gemm"] == []
    study = seed_study()
    gemm = build_model(study.model("k3-1"), (28, 28, 1), gemm=("0",))  # a benchmark can still set it
    assert gemm[0].algorithm == "gemm" and gemm[0].gemm_supported()


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

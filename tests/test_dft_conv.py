"""The DFT convolution computes the same function and gradients as direct convolution."""

import pytest
import torch
import torch.nn.functional as F

from convstudy.model import build_model
from convstudy.model.conv import Conv2d
from convstudy.spec.builtin import seed_study
from convstudy.train import plan

GEOMETRIES = [  # (cin, cout, h, w, kernel, padding)
    (3, 4, 14, 14, 7, "same"),
    (2, 3, 22, 22, 7, "valid"),
    (3, 2, 9, 12, 5, 2),
    (2, 2, 8, 8, 4, "same"),  # even kernel: torch pads the extra pixel at the bottom/right
    (2, 3, 7, 10, (3, 5), (1, 2)),
    (2, 2, 5, 5, 1, 0),
]


def _pair(cin, cout, kernel, padding, dtype=torch.float64):
    torch.manual_seed(0)
    conv = Conv2d(cin, cout, kernel, padding=padding).to(dtype)
    dft = Conv2d(cin, cout, kernel, padding=padding, algorithm="dft").to(dtype)
    dft.load_state_dict(conv.state_dict())
    return conv, dft


@pytest.mark.parametrize("cin,cout,h,w,kernel,padding", GEOMETRIES)
@pytest.mark.parametrize("channels_last", [False, True])
def test_dft_matches_direct_convolution_in_float64(cin, cout, h, w, kernel, padding, channels_last):
    conv, dft = _pair(cin, cout, kernel, padding)
    x = torch.randn(3, cin, h, w, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, y2 = conv(x1), dft(x2)
    assert y2.shape == y1.shape
    assert y2.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    torch.testing.assert_close(y2, y1, rtol=1e-9, atol=1e-9)
    g = torch.randn_like(y1)
    y1.backward(g)
    y2.backward(g)
    torch.testing.assert_close(x2.grad, x1.grad, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(dft.weight.grad, conv.weight.grad, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(dft.bias.grad, conv.bias.grad, rtol=1e-9, atol=1e-9)


def test_dft_gradcheck():
    _, dft = _pair(2, 2, 3, "same")
    x = torch.randn(2, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(dft, (x,))


def test_dft_in_bf16_is_about_as_accurate_as_direct_bf16():
    conv, dft = _pair(64, 32, 7, "same", torch.float32)
    x = torch.rand(8, 64, 14, 14).contiguous(memory_format=torch.channels_last)
    exact = F.conv2d(x.double(), conv.weight.double(), conv.bias.double(), padding="same")
    errs = []
    for mod in (conv, dft):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = mod(x)
        assert y.dtype == torch.bfloat16
        errs.append(((y.double() - exact).abs().max() / exact.abs().max()).item())
    assert errs[1] < 3 * errs[0] + 1e-3, errs


def test_strided_or_grouped_convs_stay_direct():
    conv = Conv2d(4, 4, 3, stride=2, groups=2, algorithm="dft")
    assert not conv.dft_supported()
    x = torch.randn(1, 4, 9, 9)
    torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight, conv.bias, stride=2, groups=2))


def test_rule_picks_the_large_5x5_and_7x7_convs_on_the_cpu_in_bf16_only():
    study = seed_study()

    def chosen(name, device="cpu", precision="bf16"):
        return list(plan(study.model(name), (28, 28, 1), torch.device(device), precision, 1).dft)

    assert chosen("k7-3") == ["3"]  # conv(64,7,same) over 256 channels; not the 1- or 64-channel ones
    assert chosen("k7-1") == ["2"]
    assert chosen("k7-3", precision="fp32") == []
    assert chosen("k7-3", device="cuda") == []
    assert chosen("k5-1") == ["2"]  # conv(64,5) over 128 channels; not conv(32,5) over 64
    assert chosen("k5-3") == ["3"]
    assert chosen("k5-2") == [] and chosen("k3-1") == []
    direct = build_model(study.model("k7-3"), (28, 28, 1))
    dft = build_model(study.model("k7-3"), (28, 28, 1), dft=("3",))
    assert dft[3].algorithm == "dft" and direct[3].algorithm == "direct"
    assert set(dft.state_dict()) == set(direct.state_dict())  # checkpoints and exports are unchanged

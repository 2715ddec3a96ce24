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


def _chosen(name, device="cpu", precision="bf16", threads=1):
    return list(plan(seed_study().model(name), (28, 28, 1), torch.device(device), precision, threads).dft)


def test_rule_picks_the_large_5x5_and_7x7_convs_on_a_cpu_with_native_bf16(monkeypatch):
    monkeypatch.setattr("convstudy.train.device.cpu_has_native_bf16", lambda: True)
    assert _chosen("k7-3") == ["3"]  # conv(64,7,same) over 256 channels; not the 1- or 64-channel ones
    assert _chosen("k7-1") == ["2"]
    assert _chosen("k7-3", device="cuda") == []
    assert _chosen("k5-1") == ["2"]  # conv(64,5) over 128 channels; not conv(32,5) over 64
    assert _chosen("k5-3") == ["3"]
    assert _chosen("k5-2") == [] and _chosen("k3-1") == []
    study = seed_study()
    direct = build_model(study.model("k7-3"), (28, 28, 1))
    dft = build_model(study.model("k7-3"), (28, 28, 1), dft=("3",))
    assert dft[3].algorithm == "dft" and direct[3].algorithm == "direct"
    assert set(dft.state_dict()) == set(direct.state_dict())  # checkpoints and exports are unchanged


@pytest.mark.parametrize("native_bf16", [True, False])
def test_in_fp32_the_rule_is_the_same_with_or_without_native_bf16(monkeypatch, native_bf16):
    """An explicit fp32 on a CPU with native bf16 takes the fp32 rule too (measured faster on a Zen 4)."""
    monkeypatch.setattr("convstudy.train.device.cpu_has_native_bf16", lambda: native_bf16)
    for threads in (1, 2):
        assert _chosen("k7-3", precision="fp32", threads=threads) == (["3", "7"] if threads == 1 else ["3"])
        assert _chosen("k5-2", precision="fp32", threads=threads) == (["4"] if threads == 1 else [])
        assert _chosen("k3-1", precision="fp32", threads=threads) == []


def test_rule_picks_the_same_convs_in_fp32_on_a_cpu_without_native_bf16_at_two_threads(monkeypatch):
    monkeypatch.setattr("convstudy.train.device.cpu_has_native_bf16", lambda: False)
    for name in ("k5-1", "k5-3", "k7-1", "k7-2", "k7-3", "k5-2", "k3-1", "k7-4"):
        assert _chosen(name, precision="fp32", threads=2) == _chosen(name, precision="bf16", threads=2), name
    assert _chosen("k7-3", precision="fp32", threads=2) == ["3"]
    assert _chosen("k7-3", device="cuda", precision="fp32") == []


def test_at_one_thread_fp32_also_picks_the_64_channel_convs_where_the_dft_saves_half_the_work(monkeypatch):
    monkeypatch.setattr("convstudy.train.device.cpu_has_native_bf16", lambda: False)
    assert _chosen("k5-2", precision="fp32") == ["4"]  # conv(32,5) over 64 channels on 12x12
    assert _chosen("k7-4", precision="fp32") == ["3"]
    assert _chosen("k7-3", precision="fp32") == ["3", "7"]  # and the 256-channel one, as at two threads
    assert _chosen("k5-1", precision="fp32") == ["2", "6"]
    # k7-1's 7x7 conv over 64 channels on 8x8 maps: direct does fewer multiply-adds, so it stays direct.
    assert _chosen("k7-1", precision="fp32") == ["2"]
    direct, dft = build_model(seed_study().model("k7-1"), (28, 28, 1))[6].dft_macs(8, 8)
    assert direct < 2 * dft
    assert _chosen("k3-1", precision="fp32") == [] and _chosen("k3-3", precision="fp32") == []
    # bf16 keeps its measured rule at any thread count.
    assert _chosen("k5-2") == [] and _chosen("k7-3") == ["3"]


def test_the_dft_multiply_add_count_matches_the_products_the_layer_computes():
    """dft_macs counts each matrix product of Conv2d._dft_forward; direct's count is cin*cout*Ho*Wo*k*k."""
    conv = Conv2d(64, 32, 5, algorithm="dft")
    direct, dft = conv.dft_macs(12, 12)
    assert direct == 64 * 32 * 8 * 8 * 25
    plan_ = conv._plan(12, 12, torch.float32, torch.device("cpu"))
    p, v, ho, wo = 12, 7, 8, 8
    assert plan_.fwd_w.shape == (2 * v, 12) and plan_.fwd_h.shape == (2 * p, 2 * 12)
    products = (plan_.fwd_w.numel() * 12 * 64 + plan_.fwd_h.numel() * v * 64 + p * v * (2 * 64) * (2 * 32)
                + plan_.inv_h.numel() * v * 32 + plan_.inv_w.numel() * 32 * ho)
    assert dft == products


# The seed layers the fp32 rule picks, at their own sizes: (cin, cout, h, w, kernel, padding).
FP32_LAYERS = [(256, 64, 14, 14, 7, "same"), (128, 64, 22, 22, 7, 0), (128, 64, 24, 24, 5, 0),
               (128, 64, 14, 14, 5, "same"), (64, 32, 12, 12, 5, 0), (64, 32, 14, 14, 7, 0), (64, 32, 7, 7, 7, "same")]


@pytest.mark.parametrize("kernel,padding,h,w", [(7, "same", 14, 14), (7, 0, 22, 22), (5, 0, 24, 24), (5, 0, 12, 12),
                                                (7, "same", 7, 7)])
def test_dft_gradcheck_at_the_fp32_layer_geometries(kernel, padding, h, w):
    """float64 gradcheck of the same module (and code path) the fp32 plan runs, with fewer channels."""
    _, dft = _pair(2, 2, kernel, padding)
    x = torch.randn(1, 2, h, w, dtype=torch.float64).contiguous(memory_format=torch.channels_last)

    def f(x, weight, bias):
        return torch.func.functional_call(dft, {"weight": weight, "bias": bias}, (x,))

    inputs = (x.requires_grad_(), dft.weight.detach().clone().requires_grad_(),
              dft.bias.detach().clone().requires_grad_())
    assert torch.autograd.gradcheck(f, inputs)


@pytest.mark.parametrize("cin,cout,h,w,kernel,padding", FP32_LAYERS)
def test_dft_in_fp32_matches_direct_fp32_within_fp32_rounding(cin, cout, h, w, kernel, padding):
    """Forward and both gradients of DFT and direct fp32 against float64, within a rounding bound.

    A sum of m fp32 products a_i b_i is off by at most about lambda * sqrt(m) * u * sum |a_i b_i|
    (u = 2^-24; Higham & Mary's probabilistic bound, lambda a small constant; 4 here). The sums
    |a_i b_i| are the same convolution of |x|, |w| and |grad| (computed in float64 below); m
    counts every reduction either path makes: direct cin*k*k, cout*k*k, n*Ho*Wo; the DFT's
    transforms (w, 2h, 2P, 2V), channel mix (2cin, 2cout), batch (n) and kernel spectrum (2PV)
    products, whose unitary-scaled transforms do not amplify the error.
    """
    n = 4
    conv, dft = _pair(cin, cout, kernel, padding, torch.float32)
    x = torch.randn(n, cin, h, w).contiguous(memory_format=torch.channels_last)
    g = torch.randn_like(conv(x))
    ho, wo = g.shape[-2:]
    pad = (kernel - 1) if padding == "same" else 0
    p, v = h + pad, (w + pad) // 2 + 1
    m = (cin + cout) * kernel**2 + n * ho * wo + w + 2 * h + 2 * p + 2 * v + 2 * cin + 2 * cout + n + 2 * p * v
    tol = 4 * 2.0**-24 * m**0.5

    def run(mod, dtype, xx, gg, magnitude=False):
        xx = xx.detach().to(dtype, copy=True).requires_grad_()
        w, b = (t.detach().to(dtype) for t in (mod.weight, mod.bias))
        w, b = (w.abs(), b.abs()) if magnitude else (w, b)
        params = {"weight": w.requires_grad_(), "bias": b.requires_grad_()}
        y = torch.func.functional_call(mod, params, (xx,))
        y.backward(gg.to(dtype))
        return y, xx.grad, params["weight"].grad

    exact = run(conv, torch.float64, x, g)
    scale = run(conv, torch.float64, x.abs(), g.abs(), magnitude=True)  # sum |a_i b_i| of every output and gradient
    for mod in (dft, conv):
        got = run(mod, torch.float32, x, g)
        for name, a, e, s in zip(("output", "input grad", "weight grad"), got, exact, scale):
            err = (a.double() - e).abs()
            assert (err <= tol * s).all(), (mod.algorithm, name, (err / s).max().item(), tol)
    # Hence DFT and direct fp32 differ by at most twice the bound: only by rounding.
    y_dft, y_dir = run(dft, torch.float32, x, g)[0], run(conv, torch.float32, x, g)[0]
    assert ((y_dft - y_dir).abs().double() <= 2 * tol * scale[0]).all()

"""Model stage, driven by the registries: every layer kind and every seed model builds, runs and counts like Keras."""

from __future__ import annotations

import pytest
import torch

from conftest import count_params
from convstudy.model import build_model, summarize_model
from convstudy.spec import ModelSpec, seed_study

# Keras's model.summary() totals for the notebook's models (BN moving stats count in total only).
KERAS_PARAMS = {
    "k3-1": (1_199_882, 1_199_882), "k3-2": (32_874, 32_874), "k3-3": (315_146, 315_146), "k3-4": (84_266, 84_138),
    "k5-1": (297_706, 297_706), "k5-2": (123_018, 123_018), "k5-3": (280_330, 280_330), "k5-4": (106_954, 106_762),
    "k7-1": (513_770, 513_770), "k7-2": (609_290, 609_290), "k7-3": (957_514, 957_514), "k7-4": (139_210, 139_018),
}
SEED = {m.name: m for m in seed_study().models}


@pytest.mark.parametrize("name", list(SEED))
def test_seed_model_params_equal_keras_and_forward_backward(name):
    spec = SEED[name]
    summary = summarize_model(spec, (28, 28, 1))
    net = build_model(spec, (28, 28, 1))
    assert (summary.total_params, summary.trainable_params) == KERAS_PARAMS[name]
    assert count_params(net) == KERAS_PARAMS[name]
    x = torch.rand(3, 1, 28, 28)
    out = net(x)
    assert out.shape == (3, 10)
    out.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


LAYER_MODELS = {
    "conv": ["conv(4,3)", "conv(4,3,same,stride=2)", "conv(4,2,same)", "flatten", "dense(10)"],
    "pool": ["conv(4,3)", "pool(2)", "pool(3,2,mode=avg)", "flatten", "dense(10)"],
    "dropout": ["conv(4,3)", "dropout(0.3)", "flatten", "dense(10)"],
    "flatten": ["flatten", "dense(10)"],
    "dense": ["flatten", "dense(16,tanh)", "dense(10)"],
    "bn": ["conv(4,3)", "bn", "flatten", "dense(8)", "bn", "dense(10)"],
    "activation": ["conv(4,3,activation=linear)", "gelu", "flatten", "dense(10)"],
    "dwconv": ["conv(4,3)", "dwconv(3,same,stride=2,multiplier=2)", "flatten", "dense(10)"],
    "sepconv": ["conv(4,3)", "sepconv(8,3,same,stride=2)", "flatten", "dense(10)"],
    "gap": ["conv(4,3)", "gap", "dense(10)"],
    "gmp": ["conv(4,3)", "gmp", "dense(10)"],
    "ln": ["conv(4,3)", "ln", "flatten", "dense(10)"],
    "gn": ["conv(4,3)", "gn(2)", "flatten", "dense(10)"],
    "se": ["conv(8,3)", "se", "flatten", "dense(10)"],
    "residual": ["conv(4,3)", "residual([conv(8,3,same,stride=2),bn],projection_bn=true)", "gap", "dense(10)"],
}


@pytest.mark.parametrize("kind", sorted(LAYER_MODELS))
def test_every_layer_kind_matches_its_inferred_shapes(kind):
    from convstudy.spec import LAYERS

    assert set(LAYER_MODELS) == set(LAYERS)
    spec = ModelSpec(name="m", layers=LAYER_MODELS[kind])
    net = build_model(spec, (28, 28, 1))
    summary = summarize_model(spec, (28, 28, 1))
    assert count_params(net) == (summary.total_params, summary.trainable_params)
    # Walk the modules to compare every spec layer's inferred shape with the real tensor's.
    shapes = spec.shapes((28, 28, 1))
    x = torch.rand(2, 1, 28, 28)
    y = net(x)
    assert y.shape == (2, 10) and shapes[-1] == (10,)
    y.sum().backward()


def test_same_padding_with_stride_matches_tensorflow():
    spec = ModelSpec(name="m", layers=["conv(3,4,same,stride=3)", "flatten", "dense(10)"])
    net = build_model(spec, (28, 28, 1))
    feat = net[:3](torch.rand(1, 1, 28, 28))  # ZeroPad2d, Conv2d, ReLU
    assert tuple(feat.shape[1:]) == (3, 10, 10)
    assert spec.shapes((28, 28, 1))[0] == (10, 10, 3)


def test_keras_init_and_batchnorm_semantics():
    net = build_model(SEED["k3-4"], (28, 28, 1))
    conv = net[0]
    assert torch.count_nonzero(conv.bias) == 0
    bound = (6 / (9 * 1 + 9 * 32)) ** 0.5  # glorot_uniform limit for a 3x3x1->32 kernel
    assert conv.weight.abs().max() <= bound
    bn = [m for m in net if isinstance(m, torch.nn.BatchNorm1d)][0]
    assert bn.momentum == pytest.approx(0.01) and bn.eps == pytest.approx(1e-3)


def test_flops_count_multiply_adds_twice():
    spec = ModelSpec(name="m", layers=["conv(2,3)", "flatten", "dense(10)"])
    summary = summarize_model(spec, (28, 28, 1))
    assert summary.flops == 2 * (9 * 1 * 2 * 26 * 26) + 2 * (26 * 26 * 2 * 10)


def test_flatten_sends_channels_last_gradients_back_and_trains_the_same():
    """The flatten's gradient keeps the NHWC layout (max pooling's backward then converts nothing); same bits."""
    spec = seed_study().model("k3-1")  # ... pool, dropout, flatten, dense ...
    flat = next(m for m in build_model(spec, (28, 28, 1)) if isinstance(m, torch.nn.Flatten))
    x = torch.randn(4, 8, 6, 6).contiguous(memory_format=torch.channels_last).requires_grad_()
    h = x * 1  # not a leaf: a leaf's .grad takes its layout anyway; the pooling before it is what matters
    y = flat(h)
    seen = []
    h.register_hook(seen.append)  # runs after the flatten's own hook
    g = torch.randn(4, 8 * 6 * 6)
    y.backward(g)
    assert seen[0].is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(seen[0], g.view(4, 8, 6, 6))

    weights = []
    for plain in (False, True):
        torch.manual_seed(0)
        model = build_model(spec, (28, 28, 1)).to(memory_format=torch.channels_last)
        if plain:
            i = next(i for i, m in enumerate(model) if isinstance(m, torch.nn.Flatten))
            model[i] = torch.nn.Flatten()
        opt = torch.optim.Adam(model.parameters())
        xb = torch.rand(16, 1, 28, 28).contiguous(memory_format=torch.channels_last)
        for _ in range(2):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xb), torch.arange(16) % 10).backward()
            opt.step()
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(weights[0], weights[1])

"""Every layer kind in the registry, end to end (timm-style: a kind without its Keras counts fails here).

For each kind, the networks in tests/data/keras/layer_counts.json (made by make_keras_data.py from real
tf_keras 2.21 and Keras 3) go through parsing, shape inference (each layer's inferred shape against the
tensor's), build, forward/backward, Keras's parameter counts, to_dict/from_dict and TOML round trips,
ONNX parity with onnxruntime and the predict path.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path

import numpy as np
import pytest
import tomli_w
import torch

from convstudy.data import get_info
from convstudy.deploy.export import TOLERANCE, check_onnx, onnx_bytes
from convstudy.deploy.predict import Trained, probabilities
from conftest import count_params
from convstudy.model import MODULES, build_model, chain, predict_proba, summarize_model
from convstudy.spec import LAYERS, ModelSpec, Residual, TrainSettings, parse_layer

DATA = json.loads((Path(__file__).parent / "data" / "keras" / "layer_counts.json").read_text())
EXAMPLES = {kind: [e for e in DATA["examples"] if e["kind"] == kind] for kind in LAYERS}


def _kinds(layers) -> set[str]:
    return set().union(*({layer.type} | (_kinds(layer.layers) if isinstance(layer, Residual) else set())
                         for layer in layers))


def test_every_kind_has_a_torch_builder_and_keras_counts():
    assert set(MODULES) == set(LAYERS)
    missing = [kind for kind, found in EXAMPLES.items() if not found]
    assert not missing, f"no Keras counts for {missing}: add them to tests/data/keras/make_keras_data.py"


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_layer_kind_end_to_end(kind):
    torch.manual_seed(0)
    for example in EXAMPLES[kind]:
        shape = tuple(example["input_shape"])
        spec = ModelSpec(name="m", layers=example["layers"])
        assert kind in _kinds(spec.layers)
        spec.check(shape, 10)

        summary = summarize_model(spec, shape)
        counts = [summary.total_params, summary.trainable_params]
        assert counts == example["tf_keras"] == example["keras3"]
        net = build_model(spec, shape)
        assert list(count_params(net)) == counts

        h, w, c = shape
        x = torch.rand(4, c, h, w)
        y = net.train()(x)
        assert y.shape == (4, 10)
        y.square().sum().backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())

        net.eval()
        feat, cur = x, shape
        with torch.no_grad():  # each layer's inferred shape against the tensor it makes
            for layer, out in zip(spec.layers, spec.shapes(shape)):
                feat = chain([layer], cur).eval()(feat)
                assert tuple(feat.shape[1:]) == ((out[2], out[0], out[1]) if len(out) == 3 else out), layer
                cur = out

        for layer in spec.layers:
            assert parse_layer(layer.to_string()) == layer
            assert parse_layer(layer.to_dict()) == layer
            assert parse_layer(json.loads(json.dumps(layer.to_dict()))) == layer
        text = tomli_w.dumps(spec.to_dict())
        assert ModelSpec.model_validate(tomllib.loads(text)) == spec
        again = build_model(ModelSpec.model_validate(spec.to_dict()), shape)
        again.load_state_dict(net.state_dict())

        parity = check_onnx(onnx_bytes(net, shape), net, x, "random inputs")
        assert parity.max_abs_diff < TOLERANCE and parity.passed, parity.sentence()

        info = dataclasses.replace(get_info("cifar10"), input_shape=shape)
        trained = Trained(spec, 0, net, info, None, TrainSettings())
        images = np.random.default_rng(0).integers(0, 256, (3, c, h, w), dtype=np.uint8)
        got = probabilities(trained, images)
        want = predict_proba(net, torch.from_numpy(images).float() / 255)
        assert torch.allclose(got, want, atol=1e-6) and torch.allclose(got.sum(1), torch.ones(3))

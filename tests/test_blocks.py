"""Modern blocks in study files: a space switching the skip connection, Keras's semantics, one-line mistakes."""

from __future__ import annotations

import pytest
import torch

from convstudy.cli import main
from convstudy.model import build_model, summarize_model
from convstudy.spec import LayerError, ModelSpec, Residual, load_study_file, parse_layer

SPACE = """\
name = "modern"
dataset = "mnist"
[[spaces]]
name = "m"
factors = {skip = [true, false], head = ["gap", "flatten"], conv = ["conv", "sepconv"], bn = [true, false]}
layers = ["conv(8,3,same,stride=2)",
          {type = "residual", skip = "{skip}", layers = ["{conv}(8,3,same)", {if = "bn", layer = "bn"},
                                                        "{conv}(8,3,same,activation=linear)"]},
          "{head}", "dense(10)"]
"""


def test_a_space_switches_the_skip_and_the_blocks_inside_it(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(SPACE)
    models = {tuple(sorted(m.factors.items())): m for m in load_study_file(path).models}
    assert len(models) == 16
    on = models[(("bn", True), ("conv", "sepconv"), ("head", "gap"), ("skip", True))]
    off = models[(("bn", False), ("conv", "sepconv"), ("head", "gap"), ("skip", False))]
    assert on.layers[1] == parse_layer("residual([sepconv(8,3,same),bn,sepconv(8,3,same,activation=linear)])")
    assert off.layers[1] == Residual(layers=("sepconv(8,3,same)", "sepconv(8,3,same,activation=linear)"), skip=False)
    # The skip adds no parameters where the shapes match; the identity sum is what differs.
    net = build_model(on, (28, 28, 1))
    block = net[3]
    x = torch.rand(2, 8, 14, 14)
    assert torch.allclose(block.eval()(x), torch.relu(block.branch(x) + x))


def test_projection_shortcut_is_a_strided_1x1_conv_with_optional_bn():
    layer = parse_layer("residual([conv(16,3,same,stride=2)],projection_bn=true)")
    assert layer.projection((28, 28, 8)) == 2 and layer.output_shape((27, 27, 8)) == (14, 14, 16)
    assert layer.params((28, 28, 8)) == (9 * 8 * 16 + 16 + 8 * 16 + 16 + 4 * 16, 9 * 8 * 16 + 16 + 8 * 16 + 16 + 32)
    assert parse_layer("residual([conv(8,3,same)])").projection((28, 28, 8)) is None
    spec = ModelSpec(name="m", layers=["conv(8,3,same)", layer, "gap", "dense(10)"])
    summary = summarize_model(spec, (28, 28, 1))
    assert summary.flops == 2 * 9 * 8 * 28 * 28 + 2 * 9 * 8 * 16 * 14 * 14 + 2 * 8 * 16 * 14 * 14 + 2 * 16 * 10


def test_keras_initialisers_and_defaults():
    net = build_model(ModelSpec(name="m", layers=["dwconv(3,multiplier=2)", "ln", "gn(2)", "flatten", "dense(10)"]),
                      (28, 28, 4))
    dw, ln, gn = net[0], net[2], net[3]
    bound = (6 / (9 * 4 + 9 * 2)) ** 0.5  # Keras's fans of a (3, 3, 4, 2) depthwise kernel
    assert dw.weight.abs().max() <= bound and dw.weight.abs().max() > 0.9 * bound
    assert ln.eps == pytest.approx(1e-3) and gn.eps == pytest.approx(1e-3) and gn.num_groups == 2
    x = torch.randn(2, 8, 5, 5)  # LayerNormalization(axis=-1): each pixel's channels
    want = (x - x.mean(1, keepdim=True)) / torch.sqrt(x.var(1, unbiased=False, keepdim=True) + 1e-3)
    assert torch.allclose(ln(x), want, atol=1e-5)
    assert parse_layer("swish") == parse_layer("silu") == parse_layer("activation(SiLU)")


@pytest.mark.parametrize("layer, words", [
    ("conv(8,3,same)", None),
    ("residual([conv(8,3)])", "no 1x1 strided projection"),
    ("residual([flatten])", "only feature maps get a projection"),
    ("residual([])", "at least one layer"),
    ('residual("conv(8,3)")', "layers is a list"),
    ("residual([conv(8,3,wat=1)])", "layer 1 conv(8,3,wat=1): wat: unknown argument"),
    ("residual([conv(8,3,same)],skip=yes)", "skip: Input should be a valid boolean"),
    ("conv(6,3,groups=4)", "groups 4 does not divide filters 6"),
    ("conv(8,3,groups=8)", "groups 8 does not divide the 1 input channels"),
    ("conv(8,3,groups=0)", "groups: Input should be greater than or equal to 1"),
    ("conv(8,3,use_bias=1)", "use_bias: Input should be a valid boolean"),
    ("conv(8,3,stride=0)", "stride: Input should be greater than or equal to 1"),
    ("dwconv(3,multiplier=0)", "multiplier: Input should be greater than or equal to 1"),
    ("sepconv(8,3,multiplier=0)", "multiplier: Input should be greater than or equal to 1"),
    ("sepconv(8,40)", "smaller than the 40x40 kernel"),
    ("gn(3)", "groups 3 does not divide the 1 channels"),
    ("ln(epsilon=0)", "epsilon: Input should be greater than 0"),
    ("se(0)", "ratio: Input should be greater than 0"),
    ("activation(swishy)", "fn: Input should be"),
    ("gap(2)", "too many arguments"),
])
def test_bad_block_is_one_line_with_exit_2(layer, words, tmp_path, capsys):
    path = tmp_path / "s.toml"
    body = f'"{layer}"' if '"' not in layer else "'" + layer + "'"
    path.write_text(f'name = "s"\n[[models]]\nname = "m"\nlayers = [{body}, "gap", "dense(10)"]\n')
    code = main(["models", str(path)])
    err = capsys.readouterr().err.strip()
    if words is None:
        assert code == 0
        return
    assert code == 2 and len(err.splitlines()) == 1, err
    assert words in err and 'model "m", layer 1' in err, err


def test_gap_on_a_flat_input_names_the_layer_and_shape():
    with pytest.raises(LayerError, match="layer 2 gap: needs an HxWxC feature map but gets a flat 784 input"):
        ModelSpec(name="m", layers=["flatten", "gap", "dense(10)"]).check((28, 28, 1), 10)


def test_models_shows_a_residual_block_and_its_keras_count(tmp_path, capsys):
    path = tmp_path / "s.toml"
    path.write_text('name = "s"\n[[models]]\nname = "m"\n'
                    'layers = ["conv(8,3,same)", "residual([sepconv(16,3,same),bn],projection_bn=true)", "gap", "dense(10)"]\n')
    assert main(["models", str(path)]) == 0
    out = capsys.readouterr().out
    # rich would read "[sepconv...]" as markup and drop it; the row must show the block as written.
    assert "residual([sepconv(16,3,same),bn],projection_bn=true)" in out.replace("\n", "") or "residual([sepconv" in out
    assert "1 Residual" in out


def test_the_modern_fashion_example_expands_to_its_eight_models():
    from pathlib import Path

    study = load_study_file(Path(__file__).parents[1] / "examples" / "modern_fashion.toml")
    assert len(study.models) == 8
    assert {m.factors["conv"] for m in study.models} == {"conv", "sepconv"}

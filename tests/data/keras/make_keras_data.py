"""Regenerate tests/data/keras/ from real Keras: parameter counts per layer kind and functional model JSON.

Not a project dependency; run it in a venv with TensorFlow, tf_keras and Keras 3 (how the files here were made):
    python3 -m venv /tmp/kv && /tmp/kv/bin/pip install tensorflow-cpu==2.21.* tf_keras==2.21.*
    /tmp/kv/bin/python tests/data/keras/make_keras_data.py
It writes layer_counts.json (for each layer kind, convstudy layer lists beside the Keras 2 and Keras 3 counts of
the same network) and, per model below, MODEL_tfkeras2.json / MODEL_keras3.json plus models.json (their counts).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import keras as k3  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as k2  # noqa: E402

HERE = Path(__file__).parent
SHAPE = (8, 8, 4)


def _acts(K, x):
    """silu hardswish mish gelu relu6 leaky_relu softsign hard_sigmoid elu selu softplus tanh sigmoid."""
    L = K.layers
    if K is k3:
        names = ["silu", "hard_silu", "mish", "gelu", "relu6", "leaky_relu", "softsign", "hard_sigmoid"]
        for n in names:
            x = L.Activation(n)(x)
    else:  # tf_keras has no relu6, leaky_relu or hard_silu activation names; the same functions as layers
        x = L.Activation("swish")(x)
        x = L.Activation(lambda t: t * tf.nn.relu6(t + 3) / 6)(x)
        x = L.Activation("mish")(x)
        x = L.Activation("gelu")(x)
        x = L.ReLU(max_value=6)(x)
        x = L.LeakyReLU(alpha=0.2)(x)
        x = L.Activation("softsign")(x)
        x = L.Activation(lambda t: tf.nn.relu6(t + 3) / 6)(x)
    for n in ["elu", "selu", "softplus", "tanh", "sigmoid"]:
        x = L.Activation(n)(x)
    return x


def _se(K, x, channels, squeeze):
    L = K.layers
    s = L.GlobalAveragePooling2D(keepdims=True)(x)
    s = L.Conv2D(squeeze, 1, activation="relu")(s)
    s = L.Conv2D(channels, 1, activation="sigmoid")(s)
    return L.Multiply()([x, s])


def _block(K, x, filters, stride=1, bn=True, projection_bn=False, act="relu", skip=True):
    """residual([conv(f,3,same,stride),bn,conv(f,3,same,activation=linear)]) in Keras."""
    L = K.layers
    y = L.Conv2D(filters, 3, strides=stride, padding="same", activation="relu")(x)
    if bn:
        y = L.BatchNormalization()(y)
    y = L.Conv2D(filters, 3, padding="same")(y)
    if skip:
        short = x
        if stride != 1 or x.shape[-1] != filters:
            short = L.Conv2D(filters, 1, strides=stride)(x)
            if projection_bn:
                short = L.BatchNormalization()(short)
        y = L.Add()([y, short])
    return L.Activation(act)(y) if act != "linear" else y


# kind -> (convstudy layers on SHAPE, Keras body: f(K, x) -> features before the classifier)
EXAMPLES = {
    "conv": (["conv(6,3,same,stride=2,groups=2)", "conv(4,2,use_bias=false)", "flatten", "dense(10)"],
             lambda K, x: K.layers.Flatten()(K.layers.Conv2D(4, 2, use_bias=False, activation="relu")(
                 K.layers.Conv2D(6, 3, padding="same", strides=2, groups=2, activation="relu")(x)))),
    "dwconv": (["dwconv(3,same,multiplier=2)", "dwconv(3,stride=2,use_bias=false)", "flatten", "dense(10)"],
               lambda K, x: K.layers.Flatten()(K.layers.DepthwiseConv2D(3, strides=2, use_bias=False, activation="relu")(
                   K.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, activation="relu")(x)))),
    "sepconv": (["sepconv(8,3,same,stride=2,multiplier=2)", "sepconv(6,3,use_bias=false)", "flatten", "dense(10)"],
                lambda K, x: K.layers.Flatten()(K.layers.SeparableConv2D(6, 3, use_bias=False, activation="relu")(
                    K.layers.SeparableConv2D(8, 3, padding="same", strides=2, depth_multiplier=2,
                                             activation="relu")(x)))),
    "pool": (["pool(2)", "pool(3,1,mode=avg)", "flatten", "dense(10)"],
             lambda K, x: K.layers.Flatten()(K.layers.AveragePooling2D(3, 1)(K.layers.MaxPooling2D(2)(x)))),
    "gap": (["conv(6,3)", "gap", "dense(10)"],
            lambda K, x: K.layers.GlobalAveragePooling2D()(K.layers.Conv2D(6, 3, activation="relu")(x))),
    "gmp": (["conv(6,3)", "gmp", "dense(10)"],
            lambda K, x: K.layers.GlobalMaxPooling2D()(K.layers.Conv2D(6, 3, activation="relu")(x))),
    "dropout": (["dropout(0.3)", "flatten", "dense(10)"],
                lambda K, x: K.layers.Flatten()(K.layers.Dropout(0.3)(x))),
    "flatten": (["flatten", "dense(10)"], lambda K, x: K.layers.Flatten()(x)),
    "dense": (["flatten", "dense(16,tanh)", "dense(10)"],
              lambda K, x: K.layers.Dense(16, activation="tanh")(K.layers.Flatten()(x))),
    "bn": (["conv(6,3)", "bn", "flatten", "dense(8)", "bn", "dense(10)"],
           lambda K, x: K.layers.BatchNormalization()(K.layers.Dense(8, activation="relu")(K.layers.Flatten()(
               K.layers.BatchNormalization()(K.layers.Conv2D(6, 3, activation="relu")(x)))))),
    "ln": (["conv(6,3)", "ln", "flatten", "dense(8)", "ln", "dense(10)"],
           lambda K, x: K.layers.LayerNormalization()(K.layers.Dense(8, activation="relu")(K.layers.Flatten()(
               K.layers.LayerNormalization()(K.layers.Conv2D(6, 3, activation="relu")(x)))))),
    "gn": (["conv(8,3)", "gn(4)", "flatten", "dense(10)"],
           lambda K, x: K.layers.Flatten()(K.layers.GroupNormalization(4)(K.layers.Conv2D(8, 3, activation="relu")(x)))),
    "activation": (["conv(6,3,activation=linear)", "silu", "hardswish", "mish", "gelu", "relu6", "leaky_relu",
                    "softsign", "hard_sigmoid", "elu", "selu", "softplus", "tanh", "sigmoid", "flatten", "dense(10)"],
                   lambda K, x: K.layers.Flatten()(_acts(K, K.layers.Conv2D(6, 3)(x)))),
    "se": (["conv(8,3)", "se(0.25)", "flatten", "dense(10)"],
           lambda K, x: K.layers.Flatten()(_se(K, K.layers.Conv2D(8, 3, activation="relu")(x), 8, 2))),
    "residual": (["conv(8,3,same)", "residual([conv(8,3,same),bn,conv(8,3,same,activation=linear)])",
                  "residual([conv(16,3,same,stride=2),bn,conv(16,3,same,activation=linear)],projection_bn=true)",
                  "residual([conv(16,3,same),conv(16,3,same,activation=linear)],activation=linear)",
                  "residual([conv(24,3,same),conv(24,3,same,activation=linear)],skip=false)", "gap", "dense(10)"],
                 lambda K, x: K.layers.GlobalAveragePooling2D()(
                     _block(K, _block(K, _block(K, _block(K, K.layers.Conv2D(8, 3, padding="same", activation="relu")(x),
                                                         8), 16, stride=2, projection_bn=True),
                                      16, bn=False, act="linear"), 24, bn=False, skip=False))),
}


def _count(model) -> list[int]:
    trainable = sum(int(w.shape.num_elements() if hasattr(w.shape, "num_elements") else
                        __import__("math").prod(w.shape)) for w in model.trainable_weights)
    return [int(model.count_params()), trainable]


def _classifier(K, body, shape=SHAPE):
    inp = K.Input(shape)
    return K.Model(inp, K.layers.Dense(10, activation="softmax")(body(K, inp)))


def layer_counts() -> list[dict]:
    rows = []
    for kind, (layers, body) in EXAMPLES.items():
        counts = {name: _count(_classifier(K, body)) for name, K in (("tf_keras", k2), ("keras3", k3))}
        rows.append({"kind": kind, "input_shape": list(SHAPE), "layers": layers, **counts})
        print(kind, counts, file=sys.stderr)
    return rows


def resnet_mini(K):
    """Residual Add with an identity and a strided projection shortcut, GAP, swish."""
    L = K.layers
    inp = K.Input((28, 28, 1))
    x = L.Conv2D(16, 3, padding="same", activation="swish")(inp)
    x = _block(K, x, 16)
    x = _block(K, x, 32, stride=2, projection_bn=True)
    x = L.GlobalAveragePooling2D()(x)
    return K.Model(inp, L.Dense(10, activation="softmax")(x), name="resnet_mini")


def mobile_mini(K):
    """Strided conv, DepthwiseConv2D, SeparableConv2D, a residual around a depthwise-separable pair, GAP."""
    L = K.layers
    inp = K.Input((28, 28, 1))
    x = L.Conv2D(16, 3, strides=2, padding="same", use_bias=False)(inp)
    x = L.BatchNormalization()(x)
    x = L.ReLU()(x)
    y = L.DepthwiseConv2D(3, padding="same", activation="relu")(x)
    y = L.Conv2D(16, 1)(y)
    x = L.Add()([x, y])
    x = L.SeparableConv2D(32, 3, padding="same", activation="swish")(x)
    x = L.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=2)(x)
    x = L.GlobalAveragePooling2D()(x)
    return K.Model(inp, L.Dense(10, activation="softmax")(x), name="mobile_mini")


def grouped_ln(K):
    """Grouped strided convs, LayerNormalization, GroupNormalization, gelu, GlobalMaxPooling2D, Dropout."""
    L = K.layers
    inp = K.Input((28, 28, 1))
    x = L.Conv2D(16, 3, activation="gelu")(inp)
    x = L.Conv2D(32, 3, strides=2, groups=4, activation="swish")(x)
    x = L.LayerNormalization()(x)
    y = L.Conv2D(32, 3, padding="same", groups=2, activation="gelu")(x)
    y = L.LayerNormalization()(y)
    x = L.Activation("relu")(L.Add()([y, x]))
    x = L.GroupNormalization(groups=8)(x)
    x = L.GlobalMaxPooling2D()(x)
    x = L.Dense(32, activation="swish")(x)
    x = L.Dropout(0.25)(x)
    x = L.Dense(10)(x)
    return K.Model(inp, L.Activation("softmax")(x), name="grouped_ln")


def sep_flatten(K):
    """SeparableConv2D with a stride and a multiplier, max pooling, flatten + dense with gelu."""
    L = K.layers
    inp = K.Input((28, 28, 1))
    x = L.SeparableConv2D(16, 5, strides=2, depth_multiplier=2, activation="relu")(inp)
    x = L.MaxPooling2D()(x)
    y = L.SeparableConv2D(16, 3, padding="same", activation="relu")(x)
    y = L.SeparableConv2D(16, 3, padding="same")(y)
    x = L.Add()([x, y])
    x = L.Flatten()(x)
    x = L.Dense(64, activation="gelu")(x)
    return K.Model(inp, L.Dense(10, activation="softmax")(x), name="sep_flatten")


MODELS = (resnet_mini, mobile_mini, grouped_ln, sep_flatten)


def main() -> None:
    (HERE / "layer_counts.json").write_text(json.dumps({"keras": {"tf_keras": k2.__version__,
                                                                  "keras3": k3.__version__},
                                                        "examples": layer_counts()}, indent=1) + "\n")
    counts = {}
    for build in MODELS:
        for tag, K in (("tfkeras2", k2), ("keras3", k3)):
            model = build(K)
            name = f"{build.__name__}_{tag}.json"
            (HERE / name).write_text(json.dumps(json.loads(model.to_json()), indent=1) + "\n")
            counts[name] = {"total": _count(model)[0], "trainable": _count(model)[1], "dataset": "mnist"}
            print(name, counts[name], file=sys.stderr)
    (HERE / "models.json").write_text(json.dumps(counts, indent=1) + "\n")


if __name__ == "__main__":
    main()

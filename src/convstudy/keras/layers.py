"""Keras layer configs into convstudy layer records (one converter per class name): every option maps onto the
record or is at its Keras default, else one UserError line, since a silently different network compares nothing.
"""

from __future__ import annotations

import json
from typing import Any

from convstudy.errors import UserError
from convstudy.spec import (
    ACTIVATIONS, Activation, BatchNorm, Conv, Dense, DepthwiseConv, Dropout, Flatten, GlobalAvgPool, GlobalMaxPool,
    GroupNorm, LayerNorm, Pool, SeparableConv, Shape, canonical_act,
)
from convstudy.spec import Layer as _Layer

# Keys that never change what the network computes (names, dtype policies, RNG seeds, input hints).
_IGNORED = {"name", "dtype", "seed", "batch_input_shape", "batch_shape", "input_shape", "batch_size", "input_dim",
            "autocast", "renorm_momentum", "fused"}


def _int(value: Any) -> bool:
    """A JSON integer; `true` is not 1 here (Python's bool is an int)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _same(value: Any, allowed: Any) -> bool:
    """Equal and of the same kind, so `1` is not `true` and `false` is not `0`."""
    return value == allowed and isinstance(value, bool) == isinstance(allowed, bool)


class _Options:
    """One layer's config: converters take what they support; whatever is left over must be unset."""

    def __init__(self, cfg: dict[str, Any], where: str, keras2: bool = False) -> None:
        self.cfg, self.where, self.used, self.keras2 = cfg, where, set(), keras2

    def get(self, key: str, default: Any = None) -> Any:
        self.used.add(key)
        return self.cfg.get(key, default)

    def fail(self, key: str, why: str) -> UserError:
        return UserError(f"{self.where}: {key} {_show(self.cfg.get(key))} is not supported ({why})")

    def pair(self, key: str, default: int | None = None) -> int | None:
        """A Keras int-or-(a, a) option as one int; non-square values are not supported."""
        value = self.get(key, default)
        if value is None or _int(value):
            return value
        if isinstance(value, list) and len(value) == 2 and all(_int(v) for v in value):
            if value[0] != value[1]:
                raise self.fail(key, "only square values")
            return value[0]
        raise self.fail(key, "expected an integer or a pair")

    def must_be(self, key: str, allowed: tuple[Any, ...], why: str) -> None:
        value = self.get(key, allowed[0])
        if not any(_same(value, a) for a in allowed):
            raise self.fail(key, why)

    def finish(self) -> None:
        """Leftover keys are fine only when unset (null/false/empty) or known not to change the network."""
        for key, value in self.cfg.items():
            if key in self.used or key in _IGNORED or value in (None, False, "", [], {}):
                continue
            if key == "trainable" and value is True:
                continue
            raise self.fail(key, "convstudy has no such option")


def _show(value: Any) -> str:
    text = json.dumps(value, separators=(",", ":"))
    return text if len(text) <= 60 else text[:57] + "..."


def _activation(opts: _Options, key: str = "activation") -> str:
    value = opts.get(key)
    name = canonical_act("linear" if value is None else value)
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise opts.fail(key, f"supported: {', '.join(ACTIVATIONS)}")
    if name == "hard_sigmoid" and opts.keras2:
        raise opts.fail(key, "Keras 2's hard_sigmoid is 0.2x + 0.5; convstudy's is Keras 3's relu6(x + 3) / 6")
    return name


def _initializer(opts: _Options, key: str, wanted: str) -> None:
    """Keras's default initialisers are what convstudy uses; any other (or a seeded variant) is refused."""
    value = opts.get(key)
    if value is None:
        return
    if not isinstance(value, (str, dict)):
        raise opts.fail(key, "expected an initialiser name or {class_name, config}")
    name, cfg = (value, {}) if isinstance(value, str) else (value.get("class_name"), value.get("config") or {})
    if not isinstance(cfg, dict):
        raise opts.fail(key, "its config is not an object")
    canon = str(name).replace("_", "").lower()
    if canon == "variancescaling" and (cfg.get("scale"), cfg.get("mode"), cfg.get("distribution")) == (1.0, "fan_avg", "uniform"):
        canon = "glorotuniform"
    if canon != wanted:
        raise opts.fail(key, f"only the default {wanted} initialiser")


def _regularisers(opts: _Options, *keys: str) -> None:
    for key in keys:
        if opts.get(key) is not None:
            raise opts.fail(key, "regularisers and constraints are not supported")


def _channels_last(opts: _Options) -> None:
    opts.must_be("data_format", (None, "channels_last"), "only channels_last")


def _window(opts: _Options, kernel: str = "kernel_initializer") -> None:
    """What every conv kind shares: channels_last, no dilation, valid/same, Keras's default initialisers."""
    _channels_last(opts)
    if opts.pair("dilation_rate", 1) != 1:
        raise opts.fail("dilation_rate", "only 1")
    opts.must_be("padding", ("valid", "same"), "only valid or same")
    _initializer(opts, kernel, "glorotuniform")
    _initializer(opts, "bias_initializer", "zeros")
    _regularisers(opts, kernel.replace("initializer", "regularizer"), "bias_regularizer", "activity_regularizer",
                  kernel.replace("initializer", "constraint"), "bias_constraint")


def _bias(opts: _Options) -> bool:
    value = opts.get("use_bias", True)
    if not isinstance(value, bool):
        raise opts.fail("use_bias", "expected true or false")
    return value


def _conv(opts: _Options, shape: Shape) -> _Layer:
    _window(opts)
    return Conv(filters=opts.get("filters"), kernel=opts.pair("kernel_size"), padding=opts.get("padding", "valid"),
                stride=opts.pair("strides", 1), activation=_activation(opts), groups=opts.get("groups", 1),
                use_bias=_bias(opts))


def _depthwise_only(opts: _Options) -> None:
    """tf_keras's depthwise layers also carry Conv2D's unused kernel_* and groups options: they must be unset."""
    opts.must_be("groups", (1,), "only 1")
    _initializer(opts, "kernel_initializer", "glorotuniform")
    _regularisers(opts, "kernel_regularizer", "kernel_constraint")


def _dwconv(opts: _Options, shape: Shape) -> _Layer:
    _window(opts, "depthwise_initializer")
    _depthwise_only(opts)
    return DepthwiseConv(kernel=opts.pair("kernel_size"), padding=opts.get("padding", "valid"),
                         stride=opts.pair("strides", 1), multiplier=opts.get("depth_multiplier", 1),
                         activation=_activation(opts), use_bias=_bias(opts))


def _sepconv(opts: _Options, shape: Shape) -> _Layer:
    _window(opts, "depthwise_initializer")
    _depthwise_only(opts)
    _initializer(opts, "pointwise_initializer", "glorotuniform")
    _regularisers(opts, "pointwise_regularizer", "pointwise_constraint")
    return SeparableConv(filters=opts.get("filters"), kernel=opts.pair("kernel_size"),
                         padding=opts.get("padding", "valid"), stride=opts.pair("strides", 1),
                         multiplier=opts.get("depth_multiplier", 1), activation=_activation(opts),
                         use_bias=_bias(opts))


def _global(cls):
    def convert(opts: _Options, shape: Shape) -> _Layer:
        _channels_last(opts)
        opts.must_be("keepdims", (False,), "only keepdims=false, a flat output")
        return cls()
    return convert


def _pool(mode: str):
    def convert(opts: _Options, shape: Shape) -> _Layer:
        _channels_last(opts)
        opts.must_be("padding", ("valid",), "only valid")
        size = opts.pair("pool_size", 2)
        stride = opts.pair("strides")
        return Pool(size=size, stride=None if stride in (None, size) else stride, mode=mode)
    return convert


def _dropout(opts: _Options, shape: Shape) -> _Layer:
    if opts.get("noise_shape") is not None:
        raise opts.fail("noise_shape", "only element-wise dropout")
    return Dropout(rate=opts.get("rate"))


def _flatten(opts: _Options, shape: Shape) -> _Layer:
    _channels_last(opts)
    return Flatten()


def _dense(opts: _Options, shape: Shape) -> _Layer:
    opts.must_be("use_bias", (True,), "convstudy layers always have a bias")
    _initializer(opts, "kernel_initializer", "glorotuniform")
    _initializer(opts, "bias_initializer", "zeros")
    _regularisers(opts, "kernel_regularizer", "bias_regularizer", "activity_regularizer", "kernel_constraint",
                  "bias_constraint")
    return Dense(units=opts.get("units"), activation=_activation(opts))


def _norm_common(opts: _Options, shape: Shape) -> None:
    """The channel axis, center and scale on, Keras's default initialisers, no regularisers."""
    axis = opts.get("axis", -1)
    axis = axis[0] if isinstance(axis, list) and len(axis) == 1 else axis
    if not (_same(axis, -1) or _same(axis, len(shape))):  # len(shape): the channel axis, batch axis counted
        raise opts.fail("axis", "only the last (channel) axis")
    opts.must_be("center", (True,), "only center=true")
    opts.must_be("scale", (True,), "only scale=true")
    _initializer(opts, "beta_initializer", "zeros")
    _initializer(opts, "gamma_initializer", "ones")
    _regularisers(opts, "beta_regularizer", "gamma_regularizer", "beta_constraint", "gamma_constraint")


def _layernorm(opts: _Options, shape: Shape) -> _Layer:
    _norm_common(opts, shape)
    opts.must_be("rms_scaling", (False, None), "only plain layer normalisation")
    return LayerNorm(epsilon=opts.get("epsilon", 1e-3))


def _groupnorm(opts: _Options, shape: Shape) -> _Layer:
    _norm_common(opts, shape)
    return GroupNorm(groups=opts.get("groups", 32), epsilon=opts.get("epsilon", 1e-3))


def _batchnorm(opts: _Options, shape: Shape) -> _Layer:
    _norm_common(opts, shape)
    for key in ("renorm", "synchronized"):
        opts.must_be(key, (False, None), "not supported")
    for key in ("virtual_batch_size", "adjustment", "renorm_clipping"):
        if opts.get(key) is not None:
            raise opts.fail(key, "not supported")
    for key, init in (("moving_mean_initializer", "zeros"), ("moving_variance_initializer", "ones")):
        _initializer(opts, key, init)
    return BatchNorm(momentum=opts.get("momentum", 0.99), epsilon=opts.get("epsilon", 1e-3))


def _act_layer(opts: _Options, shape: Shape) -> _Layer:
    return Activation(fn=_activation(opts))


def _relu_layer(opts: _Options, shape: Shape) -> _Layer:
    relu6 = opts.get("max_value") in (6, 6.0)
    for key in ("max_value", "negative_slope", "threshold"):
        value = opts.get(key)
        if value is not None and not (_same(value, 0) or _same(value, 0.0)) and not (key == "max_value" and relu6):
            raise opts.fail(key, "only a plain ReLU or ReLU6")
    return Activation(fn="relu6" if relu6 else "relu")


def _leaky_relu_layer(opts: _Options, shape: Shape) -> _Layer:
    key = "alpha" if "alpha" in opts.cfg else "negative_slope"  # Keras 2 / Keras 3 (both default to 0.3)
    if opts.get(key, 0.3) not in (0.2,):
        raise opts.fail(key, "only 0.2, the slope of convstudy's leaky_relu (Keras's activation default)")
    return Activation(fn="leaky_relu")


def _softmax_layer(opts: _Options, shape: Shape) -> _Layer:
    opts.must_be("axis", (-1, len(shape)), "only the last axis")
    return Activation(fn="softmax")


CONVERTERS = {
    "Conv2D": _conv, "Convolution2D": _conv, "MaxPooling2D": _pool("max"), "MaxPool2D": _pool("max"),
    "AveragePooling2D": _pool("avg"), "AvgPool2D": _pool("avg"), "Dropout": _dropout, "Flatten": _flatten,
    "Dense": _dense, "BatchNormalization": _batchnorm, "Activation": _act_layer, "ReLU": _relu_layer,
    "Softmax": _softmax_layer, "LeakyReLU": _leaky_relu_layer, "DepthwiseConv2D": _dwconv,
    "SeparableConv2D": _sepconv, "SeparableConvolution2D": _sepconv,
    "GlobalAveragePooling2D": _global(GlobalAvgPool), "GlobalAvgPool2D": _global(GlobalAvgPool),
    "GlobalMaxPooling2D": _global(GlobalMaxPool), "GlobalMaxPool2D": _global(GlobalMaxPool),
    "LayerNormalization": _layernorm, "GroupNormalization": _groupnorm,
}

"""Keras 2 / Keras 3 Sequential `model.to_json()` files into study models, refusing what would differ.

Every layer option either maps onto a convstudy layer record or must be at its Keras default; anything
else (a dilation, a regulariser, a custom layer) is one UserError line naming the layer and the option,
because training a silently different network would make the comparison meaningless.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import tomli_w
from pydantic import ValidationError

from convstudy.data import get_info
from convstudy.errors import UserError
from convstudy.spec import (
    ACTIVATIONS, OPTIMIZERS, Activation, BatchNorm, Conv, Dense, Dropout, Flatten, LayerError, ModelSpec,
    OptimizerSpec, Pool, Shape, Study, build_study, check_memory, fmt_shape, pydantic_reason,
)
from convstudy.spec import Layer as _Layer
from convstudy.spec.models import reserved
from convstudy.untrusted import load_untrusted

# Keys that never change what the network computes (names, dtype policies, RNG seeds, input hints).
_IGNORED = {"name", "dtype", "seed", "batch_input_shape", "batch_shape", "input_shape", "batch_size", "input_dim",
            "autocast", "renorm_momentum", "fused"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")
MAX_JSON_BYTES = 16 << 20  # a Sequential model.to_json() is kilobytes; weights are never in it


def _int(value: Any) -> bool:
    """A JSON integer; `true` is not 1 here (Python's bool is an int)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _same(value: Any, allowed: Any) -> bool:
    """Equal and of the same kind, so `1` is not `true` and `false` is not `0`."""
    return value == allowed and isinstance(value, bool) == isinstance(allowed, bool)


class _Options:
    """One layer's config: converters take what they support; whatever is left over must be unset."""

    def __init__(self, cfg: dict[str, Any], where: str) -> None:
        self.cfg, self.where, self.used = cfg, where, set()

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
    name = "linear" if value is None else value
    if not isinstance(name, str) or name.lower() not in ACTIVATIONS:
        raise opts.fail(key, f"supported: {', '.join(ACTIVATIONS)}")
    return name.lower()


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


def _conv(opts: _Options, shape: Shape) -> _Layer:
    _channels_last(opts)
    if opts.pair("dilation_rate", 1) != 1:
        raise opts.fail("dilation_rate", "only 1")
    opts.must_be("groups", (1,), "only 1")
    opts.must_be("use_bias", (True,), "convstudy layers always have a bias")
    opts.must_be("padding", ("valid", "same"), "only valid or same")
    _initializer(opts, "kernel_initializer", "glorotuniform")
    _initializer(opts, "bias_initializer", "zeros")
    _regularisers(opts, "kernel_regularizer", "bias_regularizer", "activity_regularizer", "kernel_constraint",
                  "bias_constraint")
    return Conv(filters=opts.get("filters"), kernel=opts.pair("kernel_size"), padding=opts.get("padding", "valid"),
                stride=opts.pair("strides", 1), activation=_activation(opts))


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


def _batchnorm(opts: _Options, shape: Shape) -> _Layer:
    axis = opts.get("axis", -1)
    axis = axis[0] if isinstance(axis, list) and len(axis) == 1 else axis
    if not (_same(axis, -1) or _same(axis, len(shape))):  # len(shape): the channel axis, batch axis counted
        raise opts.fail("axis", "only the last (channel) axis")
    opts.must_be("center", (True,), "only center=true")
    opts.must_be("scale", (True,), "only scale=true")
    for key in ("renorm", "synchronized"):
        opts.must_be(key, (False, None), "not supported")
    for key in ("virtual_batch_size", "adjustment", "renorm_clipping"):
        if opts.get(key) is not None:
            raise opts.fail(key, "not supported")
    for key, init in (("beta_initializer", "zeros"), ("gamma_initializer", "ones"),
                      ("moving_mean_initializer", "zeros"), ("moving_variance_initializer", "ones")):
        _initializer(opts, key, init)
    _regularisers(opts, "beta_regularizer", "gamma_regularizer", "beta_constraint", "gamma_constraint")
    return BatchNorm(momentum=opts.get("momentum", 0.99), epsilon=opts.get("epsilon", 1e-3))


def _act_layer(opts: _Options, shape: Shape) -> _Layer:
    return Activation(fn=_activation(opts))


def _relu_layer(opts: _Options, shape: Shape) -> _Layer:
    for key in ("max_value", "negative_slope", "threshold"):
        value = opts.get(key)
        if value is not None and not (_same(value, 0) or _same(value, 0.0)):
            raise opts.fail(key, "only a plain ReLU")
    return Activation(fn="relu")


def _softmax_layer(opts: _Options, shape: Shape) -> _Layer:
    opts.must_be("axis", (-1, len(shape)), "only the last axis")
    return Activation(fn="softmax")


CONVERTERS = {
    "Conv2D": _conv, "Convolution2D": _conv, "MaxPooling2D": _pool("max"), "MaxPool2D": _pool("max"),
    "AveragePooling2D": _pool("avg"), "AvgPool2D": _pool("avg"), "Dropout": _dropout, "Flatten": _flatten,
    "Dense": _dense, "BatchNormalization": _batchnorm, "Activation": _act_layer, "ReLU": _relu_layer,
    "Softmax": _softmax_layer,
}


def read_keras_json(path: str | Path) -> dict[str, Any]:
    """The parsed `model.to_json()` file; unreadable, hostile or non-JSON files are one UserError line."""
    path = Path(path)
    doc = load_untrusted(path, "json", what="Keras model JSON file", max_bytes=MAX_JSON_BYTES)
    if not isinstance(doc, dict):
        raise UserError(f"{path.name}: not a Keras model JSON (expected an object with class_name and config)")
    return doc


def keras_layers(doc: dict[str, Any], source: str) -> tuple[str | None, list[dict[str, Any]]]:
    """(model name, layer entries) of a Sequential model in either Keras 2 or Keras 3 form."""
    kind = doc.get("class_name")
    if kind != "Sequential":
        raise UserError(f"{source}: only Sequential models can be imported (got {_show(kind)})")
    config = doc.get("config")
    if isinstance(config, list):  # Keras <= 2.1 stored the layer list as the whole config
        return None, config
    if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
        raise UserError(f"{source}: Sequential config has no layers list")
    return config.get("name"), config["layers"]


def keras_to_model(doc: dict[str, Any], source: str, name: str, input_shape: Shape) -> ModelSpec:
    """The ModelSpec equal to a Keras Sequential model on `input_shape` inputs (H, W, C)."""
    _, entries = keras_layers(doc, source)
    layers: list[_Layer] = []
    wheres: list[str] = []
    shape = tuple(input_shape)
    for i, entry in enumerate(entries, 1):
        if not isinstance(entry, dict) or not isinstance(entry.get("config", {}), dict):
            raise UserError(f"{source}: layer {i}: not a Keras layer entry (an object with class_name and config)")
        kind = entry.get("class_name")
        if not isinstance(kind, str):
            raise UserError(f"{source}: layer {i}: class_name {_show(kind)} is not a layer type name")
        cfg = entry.get("config") or {}
        label = cfg.get("name", "?")
        where = f'{source}: layer {i} "{label if isinstance(label, str) else "?"}" ({_show(kind)[1:-1]})'
        _check_input(entry, cfg, where, input_shape, first=not layers)
        if kind == "InputLayer":
            continue
        if kind not in CONVERTERS:
            raise UserError(f"{where}: layer type not supported; supported: {', '.join(sorted(CONVERTERS))}, "
                            "InputLayer")
        opts = _Options(cfg, where)
        if cfg.get("trainable", True) is not True:
            raise opts.fail("trainable", "frozen layers are not supported")
        try:
            layer = CONVERTERS[kind](opts, shape)
            opts.finish()
            shape = layer.output_shape(shape)
        except LayerError as exc:
            raise UserError(f"{where}: {exc}") from None
        except ValidationError as exc:  # a convstudy field out of range or of the wrong type
            raise UserError(f"{where}: invalid option ({pydantic_reason(exc)})") from None
        except (ValueError, TypeError) as exc:
            reason = " ".join(str(exc).split())[:160]
            raise UserError(f"{where}: invalid option ({reason})") from None
        layers.append(layer)
        wheres.append(where)
    if not layers:
        raise UserError(f"{source}: the model has no layers")
    layers = _classifier(layers, wheres)
    return ModelSpec(name=name, layers=tuple(layers))


def _classifier(layers: list[_Layer], wheres: list[str]) -> list[_Layer]:
    """Keras ends in Dense(n, softmax) or Dense(n) + Activation(softmax); convstudy spells both dense(n)."""
    if len(layers) >= 2 and layers[-1] == Activation(fn="softmax") and isinstance(layers[-2], Dense) \
            and layers[-2].activation == "linear":
        layers, wheres = layers[:-1], wheres[:-1]
    last = layers[-1]
    if not isinstance(last, Dense):
        raise UserError(f"{wheres[-1]}: the last layer must be the Dense softmax classifier")
    if last.activation not in ("softmax", "linear"):  # linear: logits trained with from_logits=True
        raise UserError(f"{wheres[-1]}: activation {last.activation!r} is not supported on the classifier "
                        "(softmax or linear)")
    return [*layers[:-1], Dense(units=last.units)]


def _check_input(entry: dict[str, Any], cfg: dict[str, Any], where: str, want: Shape, first: bool) -> None:
    """A declared input shape (InputLayer, or the first layer's) must be the dataset's (None, H, W, C)."""
    declared = cfg.get("batch_input_shape") or cfg.get("batch_shape")
    build = entry.get("build_config")
    if declared is None and first and isinstance(build, dict):
        declared = build.get("input_shape")  # Keras 3 without an InputLayer; later layers' are their own inputs
    if declared is None:
        return
    if not isinstance(declared, list) or len(declared) < 2:
        raise UserError(f"{where}: input shape {_show(declared)} is not a batch shape like [null, 28, 28, 1]")
    shape = tuple(declared[1:])
    if shape != tuple(want):
        text = "x".join("?" if d is None else str(d) for d in shape)
        raise UserError(f"{where}: input shape {text} is not the dataset's {fmt_shape(want)} "
                        "(--dataset names data of the model's shape, e.g. a folder source with channels=3)")


def model_name(doc: dict[str, Any], path: Path, given: str | None) -> str:
    """--name, else the Keras model's own name unless it is Keras's default, else the file's stem."""
    if given is not None:
        if not _NAME.match(given):
            raise UserError(f"--name {given!r}: letters, digits and _.+- only, starting with a letter or digit")
        if why := reserved(given):
            raise UserError(f"--name {given!r}: {why}; choose another")
        return given
    keras_name, _ = keras_layers(doc, path.name)
    if isinstance(keras_name, str) and not re.fullmatch(r"sequential(_\d+)?", keras_name):
        candidate = keras_name
    else:
        candidate = path.stem
    cleaned = re.sub(r"[^A-Za-z0-9_.+-]", "-", candidate).lstrip("_.+-")[:64]
    if why := reserved(cleaned):
        raise UserError(f"{path.name}: {why}; give the model another with --name")
    return cleaned or "imported"


def import_keras(path: str | Path, name: str | None = None, dataset: str = "mnist",
                 study_name: str | None = None) -> Study:
    """A one-model study (convstudy's default training settings) from a Keras model JSON file."""
    path = Path(path)
    doc = read_keras_json(path)
    info = get_info(dataset)
    model = keras_to_model(doc, path.name, model_name(doc, path, name), info.input_shape)
    version = doc.get("keras_version")
    if not (isinstance(version, str) and re.fullmatch(r"[A-Za-z0-9_.+-]{1,32}", version)):
        version = "3" if "module" in doc else "2"
    data = {
        "name": study_name or model.name,
        "description": f"Imported from {path.name} (Keras {version}).",
        "dataset": dataset,
        "seeds": 1,
        "train": {"epochs": 12, "batch_size": 128, "optimizer": keras_optimizer(doc, path.name) or "adam"},
        "models": [model.to_dict()],
    }
    study = build_study(data, source=path.name)
    check_memory(study, path.name)
    return study


# Keras optimiser argument -> convstudy's name for it (see convstudy.spec.OPTIMIZERS).
_OPT_ARGS = {"learning_rate": "lr", "rho": "rho", "epsilon": "eps", "beta_1": "beta1", "beta_2": "beta2",
             "momentum": "momentum", "weight_decay": "weight_decay"}


def keras_optimizer(doc: dict[str, Any], source: str = "model.json") -> dict[str, Any] | None:
    """The optimiser of a compiled Keras 3 model (its `compile_config`), if convstudy has it; else None."""
    compile_config = doc.get("compile_config")
    if compile_config is None:
        return None
    if not isinstance(compile_config, dict):
        raise UserError(f"{source}: compile_config {_show(compile_config)} is not an object")
    opt = compile_config.get("optimizer")
    if opt is None:
        return None
    if isinstance(opt, str):
        name, cfg = opt, {}
    elif isinstance(opt, dict):
        name, cfg = opt.get("class_name"), opt.get("config") or {}
        if not isinstance(cfg, dict):
            raise UserError(f"{source}: compile_config optimizer config {_show(cfg)} is not an object")
    else:
        raise UserError(f"{source}: compile_config optimizer {_show(opt)} is not a name or a class_name/config object")
    if not isinstance(name, str) or name.lower() not in OPTIMIZERS:
        return None
    name = name.lower()
    known = OPTIMIZERS[name]
    args: dict[str, float] = {}
    for key, value in cfg.items():
        ours = _OPT_ARGS.get(key)
        if ours is None or ours not in known or value is None:
            continue
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            why = "learning-rate schedules are not supported" if isinstance(value, dict) else "expected a number"
            raise UserError(f"{source}: compile_config optimizer {name} {key} {_show(value)} is not supported ({why})")
        args[ours] = float(value)
    try:  # a Keras value convstudy would refuse in a study file is refused here, naming the Keras option
        OptimizerSpec(name=name, args=args).resolved()
    except ValidationError as exc:
        raise UserError(f"{source}: compile_config optimizer {name}: {pydantic_reason(exc)}") from None
    except ValueError as exc:
        raise UserError(f"{source}: compile_config optimizer {name}: {exc}") from None
    return {"name": name, **{k: v for k, v in args.items() if v != known[k]}}


def study_toml(study: Study) -> str:
    """The study as a TOML file (tomli_w's layout) that `build_study` reads back as the same study."""
    d = study.to_dict()
    train = {"epochs": study.train.epochs, "batch_size": study.train.batch_size,
             "optimizer": study.train.optimizer.name, "validation": study.train.validation, **d["train"]}
    return tomli_w.dumps({"name": d["name"], "description": d["description"], "dataset": d["dataset"],
                          "seeds": d["seeds"], "train": train, "models": d["models"]})

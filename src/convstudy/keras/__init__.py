"""Keras 2 / Keras 3 `model.to_json()` files (Sequential, or functional chains with residual `Add`s) into
study models, refusing what would differ: each layer's options through `keras.layers.CONVERTERS`, the graph
through `keras.graph.functional_chain`; anything else is one UserError line naming the layer.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import tomli_w
from pydantic import ValidationError

from convstudy.data import get_info
from convstudy.errors import UserError
from convstudy.keras.graph import Block, functional_chain
from convstudy.keras.layers import CONVERTERS, _Options, _show
from convstudy.spec import (
    OPTIMIZERS, Activation, BatchNorm, Conv, Dense, LayerError, ModelSpec, OptimizerSpec, Residual, Shape, Study,
    build_study, check_memory, fmt_shape, pydantic_reason,
)
from convstudy.spec import Layer as _Layer
from convstudy.spec.models import reserved
from convstudy.spec.space import NAME_RE
from convstudy.untrusted import load_untrusted

MAX_JSON_BYTES = 16 << 20  # a model.to_json() is kilobytes; weights are never in it


def read_keras_json(path: str | Path) -> dict[str, Any]:
    """The parsed `model.to_json()` file; unreadable, hostile or non-JSON files are one UserError line."""
    path = Path(path)
    doc = load_untrusted(path, "json", what="Keras model JSON file", max_bytes=MAX_JSON_BYTES)
    if not isinstance(doc, dict):
        raise UserError(f"{path.name}: not a Keras model JSON (expected an object with class_name and config)")
    return doc


def keras_layers(doc: dict[str, Any], source: str) -> tuple[str | None, list[dict[str, Any]]]:
    """(model name, layer entries) of a Sequential or functional model in either Keras 2 or Keras 3 form."""
    kind = doc.get("class_name")
    if kind not in ("Sequential", "Functional", "Model"):
        raise UserError(f"{source}: only Sequential and functional models can be imported (got {_show(kind)})")
    config = doc.get("config")
    if isinstance(config, list) and kind == "Sequential":  # Keras <= 2.1 stored the layer list as the whole config
        return None, config
    if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
        raise UserError(f"{source}: {kind} config has no layers list")
    return config.get("name"), config["layers"]


def keras_to_model(doc: dict[str, Any], source: str, name: str, input_shape: Shape) -> ModelSpec:
    """The ModelSpec equal to a Keras Sequential or functional (chain + residual Add) model on (H, W, C) inputs."""
    _, entries = keras_layers(doc, source)
    items = list(enumerate(entries, 1)) if doc.get("class_name") == "Sequential" else functional_chain(entries, source)
    keras2 = "module" not in doc  # Keras 3 files name the module of every class
    layers, wheres, _ = _convert(items, tuple(input_shape), source, keras2, input_shape)
    if not layers:
        raise UserError(f"{source}: the model has no layers")
    layers = _classifier(layers, wheres)
    return ModelSpec(name=name, layers=tuple(layers))


def _convert(items: list, shape: Shape, source: str, keras2: bool, input_shape: Shape | None
             ) -> tuple[list[_Layer], list[str], Shape]:
    """Layer records for `items` on `shape` inputs; `input_shape` is checked against declared ones (top level)."""
    layers: list[_Layer] = []
    wheres: list[str] = []
    for item in items:
        if isinstance(item, Block):
            layer, where = _block(item, shape, source, keras2)
        else:
            converted = _layer(item, shape, source, keras2, input_shape, first=not layers)
            if converted is None:
                continue
            layer, where = converted
        try:
            shape = layer.output_shape(shape)
        except LayerError as exc:
            raise UserError(f"{where}: {exc}") from None
        layers.append(layer)
        wheres.append(where)
    return layers, wheres, shape


def _layer(item: tuple[int, Any], shape: Shape, source: str, keras2: bool, input_shape: Shape | None,
           first: bool) -> tuple[_Layer, str] | None:
    """One Keras layer entry as a record (None for an InputLayer), or one UserError line naming it."""
    i, entry = item
    if not isinstance(entry, dict) or not isinstance(entry.get("config", {}), dict):
        raise UserError(f"{source}: layer {i}: not a Keras layer entry (an object with class_name and config)")
    kind = entry.get("class_name")
    if not isinstance(kind, str):
        raise UserError(f"{source}: layer {i}: class_name {_show(kind)} is not a layer type name")
    cfg = entry.get("config") or {}
    label = cfg.get("name", "?")
    where = f'{source}: layer {i} "{label if isinstance(label, str) else "?"}" ({_show(kind)[1:-1]})'
    if input_shape is not None:
        _check_input(entry, cfg, where, input_shape, first=first)
    if kind == "InputLayer":
        return None
    if kind not in CONVERTERS:
        raise UserError(f"{where}: layer type not supported; supported: {', '.join(sorted(CONVERTERS))}, "
                        "InputLayer, Add (residual blocks)")
    opts = _Options(cfg, where, keras2)
    if cfg.get("trainable", True) is not True:
        raise opts.fail("trainable", "frozen layers are not supported")
    try:
        layer = CONVERTERS[kind](opts, shape)
        opts.finish()
    except ValidationError as exc:  # a convstudy field out of range or of the wrong type
        raise UserError(f"{where}: invalid option ({pydantic_reason(exc)})") from None
    except (ValueError, TypeError) as exc:
        reason = " ".join(str(exc).split())[:160]
        raise UserError(f"{where}: invalid option ({reason})") from None
    return layer, where


def _block(block: Block, shape: Shape, source: str, keras2: bool) -> tuple[_Layer, str]:
    """A residual Add as a Residual record; its shortcut must be what convstudy would add by itself."""
    i, entry = block.add
    where = f'{source}: layer {i} "{entry.get("name") or (entry.get("config") or {}).get("name")}" (Add)'
    branch, _, out = _convert(block.branch, shape, source, keras2, None)
    short, short_wheres, short_out = _convert(block.shortcut, shape, source, keras2, None)
    act = "linear"
    if block.act is not None:
        layer, act_where = _layer(block.act, out, source, keras2, None, first=False)
        if not isinstance(layer, Activation):
            raise UserError(f"{act_where}: only a plain activation after a residual Add is supported")
        act = layer.fn
    try:
        residual = Residual(layers=tuple(branch), activation=act, projection_bn=len(short) == 2)
        stride = residual.projection(shape)
    except LayerError as exc:
        raise UserError(f"{where}: {exc}") from None
    if short_out != out:
        raise UserError(f"{where}: adds {fmt_shape(out)} to {fmt_shape(short_out)}")
    if not short:
        return residual, where
    conv = short[0]
    want = Conv(filters=out[-1], kernel=1, stride=stride or 1, activation="linear", padding=conv.padding) \
        if isinstance(conv, Conv) else None
    if stride is None or conv != want or short[1:] not in ([], [BatchNorm()]):
        raise UserError(f"{short_wheres[0]}: a residual shortcut must be the identity, or where the shapes differ a "
                        "1x1 Conv2D with bias and no activation (strides to match) and optionally a default "
                        "BatchNormalization")
    return residual, where


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
        if not NAME_RE.match(given):
            raise UserError(f"--name {given!r}: letters, digits and _.+- only, starting with a letter or digit")
        if why := reserved(given):
            raise UserError(f"--name {given!r}: {why}; choose another")
        return given
    keras_name, _ = keras_layers(doc, path.name)
    default = not isinstance(keras_name, str) or re.fullmatch(r"sequential(_\d+)?", keras_name)
    candidate = path.stem if default else keras_name
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

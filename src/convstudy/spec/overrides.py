"""Command-line overrides of a study: `--epochs`, `--seeds`, `--train-limit`, and `--dataset`, which moves the
study onto other data before it is validated."""

from __future__ import annotations

from typing import Any

from convstudy.errors import UserError
from convstudy.spec.layers import Dense, LayerError, parse_layer
from convstudy.spec.memory import check_memory
from convstudy.spec.study import Study, build_study


def retarget(data: Any, dataset: Any) -> Any:
    """A raw study (a file's tables or `Study.to_dict()`) moved onto `dataset`: the dataset replaced, and each
    classifier (the last layer of every model, space and search or fair space, when it is a plain dense) sized to the
    data's class count, as timm's `num_classes` resets a head; every other layer stays as written."""
    from convstudy.data import canonical_dataset, get_info

    try:
        canonical = canonical_dataset(dataset)
        classes = get_info(canonical).num_classes
    except UserError as exc:
        raise UserError(f"--dataset: {exc}") from None
    if not isinstance(data, dict):
        return data  # build_study says what a study is
    out = {**data, "dataset": canonical}
    for key in ("models", "spaces"):
        if isinstance(out.get(key), list):
            out[key] = [_with_classes(m, classes) for m in out[key]]
    for key in ("search", "fair"):
        if isinstance(out.get(key), dict) and "space" in out[key]:
            out[key] = {**out[key], "space": _with_classes(out[key].get("space"), classes)}
    return out


def _with_classes(model: Any, classes: int) -> Any:
    """A model or space table whose last layer, if a plain dense, has `classes` units."""
    layers = model.get("layers") if isinstance(model, dict) else None
    if not isinstance(layers, (list, tuple)) or not layers:
        return model
    try:
        last = parse_layer(layers[-1])
    except LayerError:
        return model  # a placeholder, a condition or a mistake: validation names the layer
    if not isinstance(last, Dense) or last.units == classes:
        return model
    head = last.model_copy(update={"units": classes})
    return {**model, "layers": [*layers[:-1], head.to_dict() if isinstance(layers[-1], dict) else head.to_string()]}


def with_overrides(study: Study, *, epochs: int | None = None, seeds: int | list[int] | dict | None = None,
                   dataset: str | None = None, train_limit: int | None = None, source: str = "flags") -> Study:
    """The study with command-line overrides applied and re-validated (a new dataset re-checks shapes and memory)."""
    data = study.to_dict()
    if epochs is not None:
        data["train"]["epochs"] = epochs
        for m in data["models"]:
            m.get("train", {}).pop("epochs", None)
    if seeds is not None:
        data["seeds"] = seeds
    if dataset is not None:
        data = retarget(data, dataset)
    if train_limit is not None:
        data["train"]["train_limit"] = train_limit
    new = build_study(data, source=source)
    check_memory(new, source)
    return new

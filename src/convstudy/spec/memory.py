"""Training-memory estimates from the spec alone, so a model this machine cannot hold is refused before allocation.
The estimate is a lower bound (parameters, gradients, optimiser state, one batch of outputs): a refusal is right.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING
from pathlib import Path

from convstudy.errors import UserError
from convstudy.spec.layers import Shape
from convstudy.spec.models import ModelSpec, TrainSettings

if TYPE_CHECKING:
    from convstudy.spec.study import Study

BYTES_PER_VALUE = 4  # float32 master weights; bf16 autocast keeps them float32 too


def optimizer_states(settings: TrainSettings) -> int:
    """Tensors the optimiser keeps per parameter (Adam: two moments; plain SGD: none)."""
    opt = settings.optimizer
    args = opt.resolved()
    if opt.name in ("adam", "adamw", "adadelta"):
        return 2
    if opt.name == "rmsprop":
        return 1 + (args["momentum"] > 0)
    return int(args.get("momentum", 0.0) > 0)  # sgd: a momentum buffer only when momentum is used


def training_bytes(model: ModelSpec, settings: TrainSettings, input_shape: Shape) -> int:
    """Bytes that training `model` needs at least: parameters, gradients, optimiser state, one batch's outputs."""
    shape, total, trainable, outputs = tuple(input_shape), 0, 0, 0
    for layer, out in zip(model.layers, model.shapes(input_shape)):
        n, t = layer.params(shape)
        total, trainable, outputs, shape = total + n, trainable + t, outputs + math.prod(out), out
    values = total + trainable * (1 + optimizer_states(settings)) + settings.batch_size * outputs
    return BYTES_PER_VALUE * values


def machine_memory() -> int | None:
    """Physical memory, or the container's cgroup limit where lower; None where neither can be read."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
        break
    return total if total > 0 else None


def fmt_bytes(n: int) -> str:
    """`784 TiB`, `23.5 GiB`, `512 B`: three significant digits in binary units."""
    value, unit = float(n), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if value < 1024 or unit == "EiB":
            break
        value /= 1024
    return f"{n} B" if unit == "B" else f"{value:.3g} {unit}" if value < 1000 else f"{value:.0f} {unit}"


def check_memory(study: Study, source: str, available: int | None = None) -> None:
    """Refuse (UserError) the first model whose `training_bytes` exceed `available` (default: this machine's)."""
    from convstudy.data import get_info

    available = machine_memory() if available is None else available
    if available is None:
        return
    input_shape = get_info(study.dataset).input_shape
    for model in study.models:
        settings = model.settings(study.train)
        need = training_bytes(model, settings, input_shape)
        if need > available:
            raise UserError(f'{source}: model "{model.name}" needs about {fmt_bytes(need)} to train (parameters, '
                            f"gradients, optimiser state and one batch of {settings.batch_size}); this machine "
                            f"has {fmt_bytes(available)}")

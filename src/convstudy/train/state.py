"""A trial's state (TrainState) and its checkpoint format: flat tensors plus JSON metadata, so
checkpoints can be safetensors files (no pickle)."""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class EpochResult:
    epoch: int
    loss: float
    accuracy: float
    val_loss: float
    val_accuracy: float
    seconds: float


@dataclass
class TrainState:
    """Everything a trial needs to continue bit-identically: module, optimiser, RNGs, epochs done.

    `augment`: the augmentation generator (None without augmentation); `schedule`: the lr scheduler's
    state_dict as last saved (None without a schedule), which run_trial builds its scheduler from.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    shuffle: torch.Generator
    epoch: int = 0
    history: list[EpochResult] = field(default_factory=list)
    augment: torch.Generator | None = None
    schedule: dict | None = None


def state_to_tensors(state: TrainState) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) capturing weights, optimiser state, every RNG (the trial's and the process's global
    ones) and the epoch counter. Only a trial with augmentation has `rng.augment`, only one with a schedule
    `schedule` metadata: a Keras 2 recipe's checkpoint is what it always was."""
    model_sd, opt_sd = state.model.state_dict(), state.optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model_sd.items()}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, slots in opt_sd["state"].items():
        for key, val in slots.items():
            if torch.is_tensor(val):
                tensors[f"optim.{idx}.{key}"] = val.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = val
    tensors["rng.torch"] = torch.get_rng_state()
    tensors["rng.shuffle"] = state.shuffle.get_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    np_state = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(np_state[1].astype(np.int64))
    meta = {
        "epoch": str(state.epoch),
        "history": json.dumps([asdict(h) for h in state.history]),
        "optim.param_groups": json.dumps(opt_sd["param_groups"]),
        "optim.scalars": json.dumps(scalars),
        "rng.python": json.dumps(random.getstate()),
        "rng.numpy.pos": json.dumps([int(np_state[2]), int(np_state[3]), float(np_state[4])]),
    }
    if state.augment is not None:
        tensors["rng.augment"] = state.augment.get_state()
    if state.schedule is not None:
        meta["schedule"] = json.dumps(state.schedule)
    return tensors, meta


def load_state_tensors(state: TrainState, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> TrainState:
    """Restore `state` (freshly initialised for the same spec) from `state_to_tensors` output."""
    device = next(state.model.parameters()).device
    model_sd = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    state.model.load_state_dict(model_sd)
    opt_state: dict[int, dict[str, Any]] = {}
    for key, val in tensors.items():
        if key.startswith("optim."):
            _, idx, slot = key.split(".", 2)
            # Adam's `step` lives on the CPU unless capturable; everything else beside its parameter.
            opt_state.setdefault(int(idx), {})[slot] = val if slot == "step" else val.to(device)
    for idx, slots in json.loads(meta["optim.scalars"]).items():
        opt_state.setdefault(int(idx), {}).update(slots)
    state.optimizer.load_state_dict({"state": opt_state, "param_groups": json.loads(meta["optim.param_groups"])})
    torch.set_rng_state(tensors["rng.torch"])
    state.shuffle.set_state(tensors["rng.shuffle"])
    if state.augment is not None:
        if "rng.augment" not in tensors:
            raise ValueError("the checkpoint has no augmentation state")
        state.augment.set_state(tensors["rng.augment"])
    state.schedule = json.loads(meta["schedule"]) if "schedule" in meta else None
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    version, internal, gauss = json.loads(meta["rng.python"])
    random.setstate((version, tuple(internal), gauss))
    pos, has_gauss, cached = json.loads(meta["rng.numpy.pos"])
    np.random.set_state(("MT19937", tensors["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
    state.epoch = int(meta["epoch"])
    state.history = [EpochResult(**h) for h in json.loads(meta["history"])]
    return state

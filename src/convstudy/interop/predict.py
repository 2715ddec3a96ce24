"""A trained trial back as a module, and its top-k predictions on image files."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from convstudy.data import DatasetInfo, get_info
from convstudy.errors import StoreError, UserError
from convstudy.interop.images import ImageError, load_digit
from convstudy.model import build_model, predict_proba
from convstudy.spec import ModelSpec, TrainSettings
from convstudy.store import StudyStore


@dataclass(frozen=True)
class Trained:
    """One finished trial, ready to run: its module in eval mode and what it was trained on."""

    spec: ModelSpec
    seed: int
    module: nn.Module
    info: DatasetInfo
    test_accuracy: float | None
    settings: TrainSettings


def pick_seed(store: StudyStore, model: str, seed: int | None) -> tuple[int, float | None]:
    """`seed` if its trial is complete; by default the lowest complete seed (not the best: no test-set picking)."""
    store.study.model(model)  # an unknown name is a UserError listing the models
    trials = [t for t in store.db.trials() if t.model == model]
    done = {t.seed: t.test_accuracy for t in trials if t.state == "complete"}
    if seed is not None:
        if seed not in done:
            state = next((t.state for t in trials if t.seed == seed), "not in the study")
            have = ", ".join(map(str, sorted(done))) or "none"
            raise UserError(f'{store.out}: model "{model}" seed {seed} is {state}; complete seeds: {have}')
        return seed, done[seed]
    if not done:
        states = ", ".join(f"seed {t.seed} {t.state}" for t in trials) or "no trials yet"
        raise UserError(f'{store.out}: model "{model}" has no complete trial ({states}); run the study first')
    first = min(done)
    return first, done[first]


def load_trained(store: StudyStore, model: str, seed: int | None = None) -> Trained:
    """The final weights of trial (model, seed) in a fresh module, in eval mode on the CPU."""
    seed, accuracy = pick_seed(store, model, seed)
    spec = store.study.model(model)
    info = get_info(store.study.dataset)
    module = build_model(spec, info.input_shape)
    path = store.weights_path(model, seed)
    try:
        module.load_state_dict(store.load_weights(model, seed))
    except RuntimeError as exc:  # keys or shapes that do not match the spec
        raise StoreError(f"{path}: weights do not fit model \"{model}\" ({str(exc).splitlines()[0]})") from None
    module.eval()
    return Trained(spec, seed, module, info, accuracy, spec.settings(store.study.train))


@dataclass
class Predictions:
    """Per readable file its top-k (class name, probability); per unreadable file its one-line error."""

    rows: list[tuple[Path, list[tuple[str, float]]]] = field(default_factory=list)
    errors: list[tuple[Path, str]] = field(default_factory=list)


@torch.inference_mode()
def probabilities(module: nn.Module, images: np.ndarray) -> torch.Tensor:
    """Class probabilities for uint8 images [N, H, W] (or [N, C, H, W]), scaled /255 as in training."""
    x = torch.from_numpy(np.ascontiguousarray(images))
    if x.ndim == 3:
        x = x.unsqueeze(1)
    return predict_proba(module, x.float().div_(255.0))


def predict_files(trained: Trained, paths: list[Path], k: int = 3) -> Predictions:
    """Preprocess each file MNIST-style and classify the readable ones; errors never stop the rest."""
    out = Predictions()
    ok, images = [], []
    for path in paths:
        try:
            images.append(load_digit(path))
            ok.append(path)
        except ImageError as exc:
            out.errors.append((path, str(exc)))
    if not ok:
        return out
    probs = probabilities(trained.module, np.stack(images))
    k = min(k, probs.shape[1])
    top_p, top_i = probs.topk(k, dim=1)
    names = trained.info.class_names
    for path, ps, idx in zip(ok, top_p.tolist(), top_i.tolist()):
        out.rows.append((path, [(names[i], p) for i, p in zip(idx, ps)]))
    return out

"""A trained trial back as a module, and its top-k predictions on image files."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from convstudy.data import DatasetInfo, get_info
from convstudy.errors import StoreError, UserError
from convstudy.deploy.images import ImageError, load_image
from convstudy.model import build_model, predict_proba
from convstudy.spec import ModelSpec, TrainSettings
from convstudy.store import State, StudyStore
from convstudy.train import norm_from_meta, to_input

Norm = tuple[torch.Tensor, torch.Tensor]  # per-channel (mean, std), shaped (1, C, 1, 1)


class Standardise(nn.Module):
    """`net` behind the training split's per-channel standardisation: float images in [0, 1] in, logits out."""

    def __init__(self, net: nn.Module, norm: Norm) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", norm[0].clone())
        self.register_buffer("std", norm[1].clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)  # the same float32 ops as train.to_input's


def deployed(net: nn.Module, norm: Norm | None) -> nn.Module:
    """The network on images scaled /255, as training fed it: itself for "/255", behind Standardise for "channel"."""
    return net if norm is None else Standardise(net, norm).eval()


@dataclass(frozen=True)
class Trained:
    """One finished trial, ready to run: its module in eval mode and what it was trained on."""

    spec: ModelSpec
    seed: int
    module: nn.Module
    info: DatasetInfo
    test_accuracy: float | None
    settings: TrainSettings
    norm: Norm | None = None  # the training split's per-channel mean/std for normalize = "channel"

    @property
    def deployed(self) -> nn.Module:
        """The module fed images scaled /255 (NCHW float in [0, 1]): what predict runs and export writes."""
        return deployed(self.module, self.norm)


def pick_seed(store: StudyStore, model: str, seed: int | None) -> tuple[int, float | None]:
    """`seed` if its trial is complete; by default the lowest complete seed (not the best: no test-set picking)."""
    store.study.model(model)  # an unknown name is a UserError listing the models
    trials = [t for t in store.db.trials() if t.model == model]
    done = {t.seed: t.test_accuracy for t in trials if t.state == State.COMPLETE}
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
    weights, meta = store.load_weights(model, seed)
    try:
        module.load_state_dict(weights)
    except RuntimeError as exc:  # keys or shapes that do not match the spec
        raise StoreError(f"{path}: weights do not fit model \"{model}\" ({str(exc).splitlines()[0]})") from None
    module.eval()
    settings = spec.settings(store.study.train)
    norm = norm_from_meta(meta)  # recorded with the weights at training time
    if settings.normalize == "channel" and norm is None:
        raise StoreError(f'{path}: model "{model}" trains with normalize = "channel" but these weights do not record '
                         "the training split's mean and std (an older convstudy wrote them); train the trial again")
    return Trained(spec, seed, module, info, accuracy, settings, norm)


@dataclass
class Predictions:
    """Per readable file its top-k (class name, probability); per unreadable file its one-line error."""

    rows: list[tuple[Path, list[tuple[str, float]]]] = field(default_factory=list)
    errors: list[tuple[Path, str]] = field(default_factory=list)


@torch.inference_mode()
def probabilities(trained: Trained, images: np.ndarray) -> torch.Tensor:
    """Class probabilities for uint8 images [N, C, H, W], fed exactly as training fed them (/255, then the
    training split's mean/std for a "channel" model)."""
    x = to_input(torch.from_numpy(np.ascontiguousarray(images)), channels_last=False)
    return predict_proba(trained.deployed, x)


def predict_files(trained: Trained, paths: list[Path], k: int = 3) -> Predictions:
    """Decode each file to the model's input (deploy.images.load_image) and classify the readable ones;
    errors never stop the rest."""
    out = Predictions()
    ok, images = [], []
    digits = trained.info.format == "idx"  # MNIST-like datasets: preprocess as MNIST was made
    for path in paths:
        try:
            images.append(load_image(path, trained.info.input_shape, digits))
            ok.append(path)
        except ImageError as exc:
            out.errors.append((path, str(exc)))
    if not ok:
        return out
    probs = probabilities(trained, np.stack(images))
    k = min(k, probs.shape[1])
    top_p, top_i = probs.topk(k, dim=1)
    names = trained.info.class_names
    for path, ps, idx in zip(ok, top_p.tolist(), top_i.tolist()):
        out.rows.append((path, [(names[i], p) for i, p in zip(idx, ps)]))
    return out

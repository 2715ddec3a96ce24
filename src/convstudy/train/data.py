"""From a loaded dataset to device-resident splits for training, validation and test."""

from __future__ import annotations

import torch

from convstudy.data import Dataset, stratified_indices, stratified_split
from convstudy.spec import TrainSettings
from convstudy.train.loop import Split, TrialData


def make_trial_data(ds: Dataset, settings: TrainSettings, device: torch.device) -> TrialData:
    """Move the dataset to `device` once, as uint8, and cut the splits the settings ask for.

    `validation = "test"` is the notebook's semantics (the test set doubles as validation data);
    `holdout` validates on a stratified fraction of the training set, fixed by `split_seed`.
    `train_limit` keeps a stratified subset of the training images for quick looks.
    """
    x, y = ds.x_train, ds.y_train
    if settings.validation == "holdout":
        train_idx, val_idx = stratified_split(y, settings.holdout_fraction, settings.split_seed)
        val = Split(x[val_idx].to(device), y[val_idx].to(device))
        x, y = x[train_idx], y[train_idx]
    if settings.train_limit is not None and settings.train_limit < len(y):
        keep = stratified_indices(y, settings.train_limit, settings.split_seed)
        x, y = x[keep], y[keep]
    test = Split(ds.x_test.to(device), ds.y_test.to(device))
    train = Split(x.contiguous().to(device), y.to(device))
    return TrialData(train=train, val=test if settings.validation == "test" else val, test=test)

"""The worker side of the Ray executor: one trial per task, never touching study.db.

The worker runs the same loop as the local executor (executors.trial.run_trial): checkpoints go to
shared storage, and every event (the epoch's, after its checkpoint; the final weights and test
predictions) goes to the driver through a Ray queue, where the same Recorder writes it.
"""

from __future__ import annotations

import os
import socket
import warnings
from typing import Any

import numpy as np
import torch

from convstudy.data import Dataset
from convstudy.executors.storage import CheckpointStorage
from convstudy.executors.trial import Progress, TrialJob, run_trial
from convstudy.spec import TrainSettings
from convstudy.train import make_trial_data


def dataset_arrays(ds: Dataset) -> dict[str, Any]:
    """The dataset as numpy arrays, which Ray's object store shares with workers without copying."""
    return {"info": ds.info, "source_dir": ds.source_dir, "x_train": ds.x_train.numpy(),
            "y_train": ds.y_train.numpy(), "x_test": ds.x_test.numpy(), "y_test": ds.y_test.numpy()}


def dataset_from_arrays(arrays: dict[str, Any]) -> Dataset:
    """A Dataset over the object store's read-only arrays (training only ever reads them)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        tensors = {k: torch.from_numpy(v) for k, v in arrays.items() if isinstance(v, np.ndarray)}
    return Dataset(info=arrays["info"], source_dir=arrays["source_dir"], **tensors)


def train_on_worker(job: TrialJob, arrays: dict[str, Any], settings: TrainSettings, storage: CheckpointStorage,
                    queue) -> None:
    """Run the trial's loop in a Ray worker (resuming from its checkpoint) and forward its events."""
    torch.set_num_threads(job.plan.threads)
    data = make_trial_data(dataset_from_arrays(arrays), settings, torch.device(job.plan.device))
    where = f"{socket.gethostname()}:{os.getpid()}"
    for event in run_trial([job], data, storage):
        if not isinstance(event, Progress):  # the driver's table shows epochs, not batches
            queue.put((where, event))

"""The worker side of the Ray executor: one trial per task, never touching study.db.

Checkpoints go to shared storage (checkpoint first, then the epoch's message, as in the local
executor); epoch metrics stream to the driver through a Ray queue; the final weights and test
predictions come back as the task's return value and the driver writes them.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import warnings
from typing import Any

import numpy as np
import torch

from convstudy.data import Dataset
from convstudy.executors.local import meta_history
from convstudy.executors.ray_storage import CheckpointStorage
from convstudy.executors.trial import TrialJob, run_trial, trusted_checkpoint
from convstudy.spec import TrainSettings
from convstudy.train import EpochResult
from convstudy.train.data import make_trial_data
from convstudy.train.device import default_channels_last, describe, resolve_precision


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


class RaySink:
    """Checkpoints to shared storage, metrics to the driver's queue, results kept for the return value."""

    def __init__(self, storage: CheckpointStorage, queue, device: str) -> None:
        self.storage, self.queue, self.device = storage, queue, device
        self.outcome: dict[str, Any] = {"state": "interrupted"}

    def _key(self, job: TrialJob) -> str:
        return self.storage.key(job.model.name, job.seed)

    def load_checkpoint(self, job: TrialJob):
        key = self._key(job)
        saved, note = trusted_checkpoint(job, lambda: self.storage.load(key, job.owner),
                                         lambda: self.storage.quarantine(key))
        meta = saved[1] if saved else {}
        # The driver replays the checkpoint's history: a worker lost between its checkpoint and its
        # message leaves epoch rows only the checkpoint knows.
        self.queue.put({"kind": "start", "trial": job.trial_id, "where": f"{socket.gethostname()}:{os.getpid()}",
                        "epoch": int(meta.get("epoch", 0)), "history": meta_history(meta), "note": note})
        return saved

    def epoch_done(self, job: TrialJob, result: EpochResult, tensors, meta) -> None:
        digest = self.storage.save(self._key(job), tensors, meta, job.owner)
        self.queue.put({"kind": "epoch", "trial": job.trial_id, "result": dataclasses.asdict(result),
                        "digest": digest})

    def finished(self, job: TrialJob, weights, probs, labels, test_loss: float, test_accuracy: float) -> None:
        self.outcome = {"state": "complete", "weights": weights, "probs": probs.to(torch.float16),
                        "labels": labels.to(torch.uint8), "test_loss": test_loss, "test_accuracy": test_accuracy,
                        "device": self.device}

    def diverged(self, job: TrialJob, epoch: int) -> None:
        self.outcome = {"state": "diverged", "epoch": epoch}


def train_on_worker(job: TrialJob, arrays: dict[str, Any], settings: TrainSettings, storage: CheckpointStorage,
                    queue, threads: int, device_name: str, precision: str) -> dict[str, Any]:
    """Train one trial in a Ray worker (resuming from its checkpoint); returns its outcome."""
    torch.set_num_threads(threads)
    device = torch.device(device_name)
    job = dataclasses.replace(job, precision=resolve_precision(precision, device),
                              channels_last=default_channels_last(device))
    data = make_trial_data(dataset_from_arrays(arrays), settings, device)
    sink = RaySink(storage, queue, describe(device))
    run_trial(job, data, sink)
    return sink.outcome

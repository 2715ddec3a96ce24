"""CUDA-only paths, run with `pytest -m cuda` wherever a GPU exists and skipped cleanly elsewhere.

The CPU suite cannot reach them: CUDA graph capture and replay (train.loop.CudaGraph), bf16 autocast
on a GPU, and a kill-free resume through checkpoints written from CUDA.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from conftest import trial_events
from convstudy.data import load_dataset
from convstudy.executors.trial import EpochDone, Finished
from convstudy.spec import ModelSpec, TrainSettings
from convstudy.train import make_trial_data, plan

pytestmark = pytest.mark.cuda

CUDA = torch.device("cuda")
SMALL = ModelSpec(name="small", layers=["conv(8,3)", "bn", "pool(2)", "conv(8,3,same)", "flatten", "dense(32)",
                                        "dropout(0.25)", "dense(10)"])


def _run(tiny_mnist, root, epochs=3, **how):
    settings = TrainSettings(epochs=epochs, batch_size=32, validation="holdout")
    data = make_trial_data(load_dataset("mnist", tiny_mnist.dir), settings, CUDA)
    chosen = replace(plan(SMALL, (28, 28, 1), CUDA, how.pop("precision", "fp32"), 1), **how)
    return trial_events(SMALL, settings, data, root, plan=chosen)


def _history(events, seed=3):
    return [e.result for e in events if isinstance(e, EpochDone) and e.job.seed == seed]


def test_cuda_graph_replay_trains_like_eager_steps(tiny_mnist, tmp_path):
    graphed = _run(tiny_mnist, tmp_path / "g", cuda_graphs=True)
    eager = _run(tiny_mnist, tmp_path / "e", cuda_graphs=False)
    for a, b in zip(_history(graphed), _history(eager), strict=True):
        assert a.loss == pytest.approx(b.loss, rel=1e-3)
        assert a.val_accuracy == pytest.approx(b.val_accuracy, abs=0.02)
    assert _history(graphed)[-1].val_accuracy > 0.5


def test_bf16_on_cuda_learns_with_fp32_master_weights(tiny_mnist, tmp_path):
    events = _run(tiny_mnist, tmp_path, precision="bf16")
    assert _history(events)[-1].loss < _history(events)[0].loss and _history(events)[-1].val_accuracy > 0.5
    done = next(e for e in events if isinstance(e, Finished))
    assert all(v.dtype == torch.float32 for v in done.weights.values() if v.is_floating_point())


def test_a_cuda_checkpoint_resumes_where_the_trial_stopped(tiny_mnist, tmp_path):
    first = _run(tiny_mnist, tmp_path, epochs=1)
    resumed = _run(tiny_mnist, tmp_path, epochs=3)
    assert [r.epoch for r in _history(first)] == [1] and [r.epoch for r in _history(resumed)] == [2, 3]
    straight = _run(tiny_mnist, tmp_path / "straight", epochs=3)
    for a, b in zip(_history(resumed), _history(straight)[1:], strict=True):
        assert a.loss == pytest.approx(b.loss, rel=1e-3)  # GPU kernels need not be bit-deterministic

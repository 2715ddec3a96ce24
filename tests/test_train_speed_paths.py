"""The trainer's fast paths on the CPU: bf16 learns, channels_last and multi-tensor optimisers compute
the same training as the plain path, and several worker processes train every trial exactly once."""

from __future__ import annotations

import os
import subprocess

import pytest
import torch

from conftest import convstudy_cmd, db_rows, trial_results
from convstudy.data import load_dataset
from convstudy.spec import ModelSpec, TrainSettings
from convstudy.train import fit, init_state
from convstudy.train import loop
from convstudy.train.data import make_trial_data

CPU = torch.device("cpu")
SMALL = ModelSpec(name="small", layers=["conv(8,3)", "pool(2)", "conv(8,3,same)", "flatten", "dense(32)",
                                        "dropout(0.25)", "bn", "dense(10)"])


# Pooled to 7x7 first so the 128-channel 7x7 conv (which the CPU bf16 rule trains as a DFT) stays cheap.
DFT_MODEL = ModelSpec(name="dftnet", layers=["pool(4)", "conv(128,3,same)", "conv(16,7,same)", "pool(2)", "flatten",
                                             "dense(10)"])


def _train(tiny_mnist, epochs: int = 2, spec: ModelSpec = SMALL, **kw) -> loop.TrainState:
    ds = load_dataset("mnist", tiny_mnist.dir)
    settings = TrainSettings(epochs=epochs, batch_size=32, validation="holdout")
    data = make_trial_data(ds, settings, CPU)
    state = init_state(spec, settings, (28, 28, 1), seed=3, device=CPU, channels_last=kw.get("channels_last", False),
                       precision=kw.get("precision", "fp32"))
    return fit(state, settings, data, **kw)


def _weights(state: loop.TrainState) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in state.model.parameters()])


def test_bf16_autocast_trains_and_learns(tiny_mnist):
    state = _train(tiny_mnist, epochs=3, precision="bf16")
    first, last = state.history[0], state.history[-1]
    assert last.loss < first.loss and last.val_accuracy > 0.5  # chance is 0.1
    assert all(p.dtype == torch.float32 for p in state.model.parameters())  # master weights stay fp32


def test_dft_convolutions_train_deterministically_and_learn(tiny_mnist):
    runs = [_train(tiny_mnist, epochs=3, spec=DFT_MODEL, precision="bf16", channels_last=True) for _ in range(2)]
    assert [m.algorithm for m in runs[0].model.modules() if hasattr(m, "algorithm")] == ["direct", "dft"]
    first, last = runs[0].history[0], runs[0].history[-1]
    assert last.loss < first.loss and last.val_accuracy > 0.5
    assert torch.equal(_weights(runs[0]), _weights(runs[1]))  # same seed, same bits: resume stays exact


def test_channels_last_computes_the_same_training(tiny_mnist):
    plain = _train(tiny_mnist)
    nhwc = _train(tiny_mnist, channels_last=True)
    assert next(nhwc.model.parameters()).is_contiguous(memory_format=torch.channels_last)
    for a, b in zip(plain.history, nhwc.history):
        assert a.loss == pytest.approx(b.loss, rel=2e-3) and a.val_accuracy == pytest.approx(b.val_accuracy, abs=0.02)
    rel = (_weights(plain) - _weights(nhwc)).norm() / _weights(plain).norm()
    assert rel < 1e-2  # fp32 rounding differs by layout and grows over 40 steps; a wrong layout is O(1)


@pytest.mark.parametrize("foreach", [True, False])
def test_multi_tensor_optimizer_matches_the_per_parameter_loop(tiny_mnist, monkeypatch, foreach):
    monkeypatch.setattr(loop, "FOREACH", False)
    reference = _train(tiny_mnist)
    monkeypatch.setattr(loop, "FOREACH", foreach)
    other = _train(tiny_mnist)
    assert other.optimizer.defaults["foreach"] is foreach
    rel = (_weights(reference) - _weights(other)).norm() / _weights(reference).norm()
    assert rel < 1e-5


def test_workers_train_every_trial_exactly_once_on_their_share_of_the_cores(tiny_mnist, tiny_study_file, tmp_path):
    out = tmp_path / "out"
    env = {k: v for k, v in tiny_mnist.env.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    res = subprocess.run(convstudy_cmd("run", tiny_study_file(epochs=1, seeds=2), "--out", out, "--data-dir",
                                       tiny_mnist.dir, "--workers", "2", "--device", "cpu", "--quiet"),
                         env=env, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr
    results = trial_results(out / "study.db")
    assert set(results) == {(m, s) for m in ("small-a", "small-b") for s in (0, 1)}
    assert {state for state, _, _ in results.values()} == {"complete"}
    # Two processes, each on half the cores (torch's default would give each all of them).
    share = max(1, (os.cpu_count() or 1) // 2)
    assert {d for (d,) in db_rows(out / "study.db", "SELECT device FROM trials")} == {f"cpu:{share} threads"}

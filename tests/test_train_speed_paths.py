"""The trainer's fast paths on the CPU: bf16 learns, channels_last and multi-tensor optimisers compute
the same training as the plain path, and several worker processes train every trial exactly once."""

from __future__ import annotations

import os
import subprocess
from dataclasses import replace

import pytest
import torch

from conftest import convstudy_cmd, db_rows, trial_events, trial_results
from convstudy.data import load_dataset
from convstudy.executors.trial import EpochDone, Finished
from convstudy.spec import ModelSpec, TrainSettings
from convstudy.train import Plan, make_trial_data, plan

CPU = torch.device("cpu")
SMALL = ModelSpec(name="small", layers=["conv(8,3)", "pool(2)", "conv(8,3,same)", "flatten", "dense(32)",
                                        "dropout(0.25)", "bn", "dense(10)"])


# Pooled to 7x7 first so the 128-channel 7x7 conv (which the CPU bf16 rule trains as a DFT) stays cheap.
DFT_MODEL = ModelSpec(name="dftnet", layers=["pool(4)", "conv(128,3,same)", "conv(16,7,same)", "pool(2)", "flatten",
                                             "dense(10)"])


class Run:
    """A finished lone trial: its epochs, final weights, and the plan it trained with."""

    def __init__(self, events: list, how: Plan) -> None:
        self.history = [e.result for e in events if isinstance(e, EpochDone)]
        self.weights = next(e for e in events if isinstance(e, Finished)).weights
        self.plan = how

    def flat(self) -> torch.Tensor:
        return torch.cat([v.flatten().float() for k, v in sorted(self.weights.items()) if v.is_floating_point()])


def _train(tiny_mnist, tmp_path, epochs: int = 2, spec: ModelSpec = SMALL, precision: str = "fp32",
           channels_last: bool = False, foreach: bool | None = None, tag: str = "") -> Run:
    ds = load_dataset("mnist", tiny_mnist.dir)
    settings = TrainSettings(epochs=epochs, batch_size=32, validation="holdout")
    data = make_trial_data(ds, settings, CPU)
    how = replace(plan(spec, (28, 28, 1), CPU, precision, torch.get_num_threads()), channels_last=channels_last,
                  foreach=foreach)
    root = tmp_path / f"{precision}-{channels_last}-{foreach}-{tag}"
    return Run(trial_events(spec, settings, data, root, plan=how), how)


def test_bf16_autocast_trains_and_learns(tiny_mnist, tmp_path):
    run = _train(tiny_mnist, tmp_path, epochs=3, precision="bf16")
    first, last = run.history[0], run.history[-1]
    assert last.loss < first.loss and last.val_accuracy > 0.5  # chance is 0.1
    assert all(v.dtype == torch.float32 for v in run.weights.values() if v.is_floating_point())  # fp32 masters


def test_dft_convolutions_train_deterministically_and_learn(tiny_mnist, tmp_path):
    runs = [_train(tiny_mnist, tmp_path, epochs=3, spec=DFT_MODEL, precision="bf16", channels_last=True, tag=str(i))
            for i in range(2)]
    assert runs[0].plan.dft == ("3",)  # module 3, the 7x7 conv over 128 channels; not the 3x3 over one
    first, last = runs[0].history[0], runs[0].history[-1]
    assert last.loss < first.loss and last.val_accuracy > 0.5
    assert torch.equal(runs[0].flat(), runs[1].flat())  # same seed, same bits: resume stays exact


def test_channels_last_computes_the_same_training(tiny_mnist, tmp_path):
    plain = _train(tiny_mnist, tmp_path)
    nhwc = _train(tiny_mnist, tmp_path, channels_last=True)
    for a, b in zip(plain.history, nhwc.history):
        assert a.loss == pytest.approx(b.loss, rel=2e-3) and a.val_accuracy == pytest.approx(b.val_accuracy, abs=0.02)
    rel = (plain.flat() - nhwc.flat()).norm() / plain.flat().norm()
    assert rel < 1e-2  # fp32 rounding differs by layout and grows over 40 steps; a wrong layout is O(1)


@pytest.mark.parametrize("foreach", [True, False])
def test_multi_tensor_optimizer_matches_the_per_parameter_loop(tiny_mnist, tmp_path, foreach):
    reference = _train(tiny_mnist, tmp_path, foreach=False, tag="ref")
    other = _train(tiny_mnist, tmp_path, foreach=foreach)
    rel = (reference.flat() - other.flat()).norm() / reference.flat().norm()
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

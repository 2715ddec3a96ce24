"""Which CUDA tricks pay for the seed models: seconds per epoch of the real trainer per variant.

    python bench/cuda_paths.py --data-dir DIR [--models k3-2,k7-3]

Variants switch CUDA graphs, bf16 and channels_last; each runs 2 epochs of MNIST (the first pays for
capture and cuDNN's search) and reports the second epoch's seconds and the test accuracy after both.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace

import torch

from convstudy.data import load_dataset
from convstudy.store import CheckpointStorage
from convstudy.executors.trial import EpochDone, Finished, TrialJob, run_trial
from convstudy.spec import resolve_study, with_overrides
from convstudy.train import make_trial_data, plan

VARIANTS = {  # name: (graphs, precision, channels_last)
    "eager fp32": (False, "fp32", False),
    "eager bf16+cl": (False, "bf16", True),
    "graph fp32": (True, "fp32", False),
    "graph bf16": (True, "bf16", False),
    "graph bf16+cl": (True, "bf16", True),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--models", default="k3-2,k3-1,k5-1,k7-3")
    args = ap.parse_args()
    study = with_overrides(resolve_study("seed"), epochs=2)
    device = torch.device("cuda")
    ds = load_dataset("mnist", args.data_dir)
    data = make_trial_data(ds, study.train, device)
    for spec in study.models:
        if spec.name not in args.models.split(","):
            continue
        for name, (graphs, precision, cl) in VARIANTS.items():
            how = replace(plan(spec, ds.info.input_shape, device, precision, 1, cuda_graphs=graphs), channels_last=cl)
            job = TrialJob(0, spec, spec.settings(study.train), 0, ds.info.input_shape, how)
            times, acc = [time.perf_counter()], None
            with tempfile.TemporaryDirectory() as tmp:
                for event in run_trial([job], data, CheckpointStorage(tmp)):
                    if isinstance(event, EpochDone):
                        torch.cuda.synchronize()
                        times.append(time.perf_counter())
                    elif isinstance(event, Finished):
                        acc = event.test_accuracy
            print(json.dumps({"model": spec.name, "variant": name, "epoch1_s": round(times[1] - times[0], 3),
                              "epoch2_s": round(times[2] - times[1], 3), "test_acc_2ep": round(acc, 4)}), flush=True)


if __name__ == "__main__":
    main()

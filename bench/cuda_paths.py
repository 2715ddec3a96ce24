"""Which CUDA tricks pay for the seed models: seconds per epoch of the real trainer per variant.

    python bench/cuda_paths.py --data-dir DIR [--models k3-2,k7-3]

Variants switch CUDA graphs, bf16 and channels_last; each runs 2 epochs of MNIST (the first pays for
capture and cuDNN's search) and reports the second epoch's seconds and the test accuracy after both.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from convstudy.data import load_dataset
from convstudy.spec import resolve_study, with_overrides
from convstudy.train import evaluate, loop
from convstudy.train.data import make_trial_data

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
    rows = []
    for spec in study.models:
        if spec.name not in args.models.split(","):
            continue
        settings = spec.settings(study.train)
        for name, (graphs, precision, cl) in VARIANTS.items():
            loop.CUDA_GRAPHS = graphs
            state = loop.init_state(spec, settings, ds.info.input_shape, 0, device, cl)
            times = []

            def on_epoch(result, st, times=times):
                torch.cuda.synchronize()
                times.append(time.perf_counter())

            t0 = time.perf_counter()
            loop.fit(state, settings, data, precision=precision, channels_last=cl, on_epoch=on_epoch)
            acc = evaluate(state.model, data.test, precision, cl)[1]
            rows.append({"model": spec.name, "variant": name, "epoch1_s": round(times[0] - t0, 3),
                         "epoch2_s": round(times[1] - times[0], 3), "test_acc_2ep": round(acc, 4)})
            print(json.dumps(rows[-1]), flush=True)
    loop.CUDA_GRAPHS = True


if __name__ == "__main__":
    main()

"""Where one CPU training step of a seed model spends its time: torch.profiler over convstudy's own steps.

    nice python bench/profile_step.py --models k3-1,k5-1,k7-3 [--precision fp32] [--steps 3] [--direct]

Prints, per model, the operators with the most self CPU time over `--steps` steps (after two warm-up
steps), grouped: convolution (direct, or the DFT conv's matrix products), dropout, pooling,
batch norm, the optimiser step, the rest. `--direct` turns the plan's DFT convolutions off.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

import torch
from torch.profiler import ProfilerActivity, profile

from convstudy.spec.builtin import seed_study
from convstudy.train import init_state, plan, train_step
from convstudy.train.device import keep_freed_memory

GROUPS = [  # (group, substrings of operator names), first match wins
    ("optimizer", ("Optimizer.", "_foreach_", "_fused_adam", "addcdiv", "addcmul", "lerp")),
    ("conv", ("convolution", "conv2d", "mkldnn_conv", "matmul", "bmm", "aten::mm", "permute", "clone", "cat",
              "contiguous", "copy_", "neg", "reshape", "view", "unsafe_view", "_unsafe_view")),
    ("dropout", ("dropout", "bernoulli", "native_dropout")),
    ("pool", ("pool",)),
    ("batch_norm", ("batch_norm",)),
]


def group_of(name: str) -> str:
    return next((g for g, keys in GROUPS if any(k in name for k in keys)), "other")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="k3-1,k5-1,k7-3")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--direct", action="store_true")
    ap.add_argument("--top", type=int, default=12)
    args = ap.parse_args()
    keep_freed_memory()
    study = seed_study()
    gen = torch.Generator().manual_seed(0)
    for name in args.models.split(","):
        spec = study.model(name)
        settings = spec.settings(study.train)
        how = plan(spec, (28, 28, 1), torch.device("cpu"), args.precision, torch.get_num_threads())
        if args.direct:
            how = replace(how, dft=())
        state = init_state(spec, settings, (28, 28, 1), 0, how)
        step = train_step(state.model, state.optimizer, how, None, settings.label_smoothing)
        n = (args.steps + 2) * settings.batch_size
        xs = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=gen)
        ys = torch.randint(0, 10, (n,), generator=gen)
        loss_sum, correct = torch.zeros(()), torch.zeros((), dtype=torch.int64)
        b = settings.batch_size
        state.model.train()

        def batch(i: int) -> None:  # run_trial's step and zero_grad
            step(xs[i * b:(i + 1) * b], ys[i * b:(i + 1) * b], loss_sum, correct)
            state.optimizer.zero_grad(set_to_none=True)

        for i in range(2):
            batch(i)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for i in range(2, args.steps + 2):
                batch(i)
        events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
        total = sum(e.self_cpu_time_total for e in events)
        groups: dict[str, float] = {}
        for e in events:
            groups[group_of(e.key)] = groups.get(group_of(e.key), 0.0) + e.self_cpu_time_total
        print(f"\n{name} ({how.precision}, conv_dft={list(how.dft)}, {how.threads} threads): "
              f"{total / 1e3 / args.steps:.1f} ms per step (self CPU, profiled)")
        print("  " + ", ".join(f"{g} {100 * t / total:.1f}%" for g, t in sorted(groups.items(), key=lambda kv: -kv[1])))
        for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:args.top]:
            print(f"    {e.key:42} {e.self_cpu_time_total / 1e3 / args.steps:8.2f} ms  {e.count // args.steps:4d} calls"
                  f"  {100 * e.self_cpu_time_total / total:5.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())

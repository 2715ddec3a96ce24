"""What each CPU speed switch is worth, per seed model: one JSON line per model and variant.

    python bench/cpu_paths.py --models k7-3,k3-2 --threads 1 [--compile] [--precision fp32] [--kept-only]

Variants of convstudy's trainer (run_trial's batch loop on synthetic uint8 images, bf16 autocast or
fp32, channels_last), each adding one switch of the train stage's plan: `direct` (every conv direct),
`dft` (its DFT convs), `pool_first` (max pooling before ReLU), `uniform_dropout` (Keras's dropout masks: the
whole plan on CPUs without native bf16), `nchw` (the whole plan in NCHW), and with --compile `compiled` (torch.compile of the module). Variants alternate in one process, so load hits
them alike. The allocator setting is process-wide, so each model runs twice in fresh subprocesses:
with glibc's default malloc and with `keep_freed_memory()` (only the latter with --kept-only).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def measure(model: str, threads: int, tuned: bool, compile_: bool, rounds: int, batches: int,
            precision: str = "bf16") -> dict:
    import torch

    from dataclasses import replace

    from convstudy.spec.builtin import seed_study
    from convstudy.train import init_state, plan, train_step
    from convstudy.train.device import keep_freed_memory

    torch.set_num_threads(threads)
    if tuned:
        keep_freed_memory()
    study = seed_study()
    spec = study.model(model)
    settings = spec.settings(study.train)
    gen = torch.Generator().manual_seed(0)
    n = batches * settings.batch_size
    x, y = (torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=gen),
            torch.randint(0, 10, (n,), generator=gen))
    chosen = plan(spec, (28, 28, 1), torch.device("cpu"), precision, threads)  # the train stage's algorithm choice
    # Each variant adds one switch to the one before; the last of direct, dft, pool_first, uniform_dropout is the plan.
    plans = {"direct": replace(chosen, dft=(), pool_first=False, uniform_dropout=False)}
    if chosen.dft:
        plans["dft"] = replace(chosen, pool_first=False, uniform_dropout=False)
    if chosen.pool_first:
        plans["pool_first"] = replace(chosen, uniform_dropout=False)
    if chosen.uniform_dropout:
        plans["uniform_dropout"] = chosen
    if chosen.channels_last:  # the whole plan with NCHW activations instead
        plans["nchw"] = replace(chosen, channels_last=False)
    def net(how, compiled=False):  # (state, its step)
        state = init_state(spec, settings, (28, 28, 1), 0, how)
        model = torch.compile(state.model) if compiled else state.model
        return state, train_step(model, state.optimizer, how, None, settings.label_smoothing)

    nets = {key: net(how) for key, how in plans.items()}
    if compile_:
        nets["compiled"] = net(plans["direct"], compiled=True)

    def epoch(net) -> None:  # run_trial's batch loop
        state, step = net
        state.model.train()
        perm = torch.randperm(n, generator=state.shuffle)
        xs, ys, loss_sum, correct = x[perm], y[perm], torch.zeros(()), torch.zeros((), dtype=torch.int64)
        for start in range(0, n, settings.batch_size):
            step(xs[start:start + settings.batch_size], ys[start:start + settings.batch_size], loss_sum, correct)
            state.optimizer.zero_grad(set_to_none=True)
        loss_sum.item()

    seconds = dict.fromkeys(nets, 0.0)
    for net in nets.values():  # warm-up: compilation, allocator growth
        epoch(net)
    for _ in range(rounds):
        for key, net in nets.items():
            t0 = time.perf_counter()
            epoch(net)
            seconds[key] += time.perf_counter() - t0
    return {"model": model, "precision": precision, "threads": threads, "conv_dft": list(chosen.dft),
            "allocator": "kept" if tuned else "glibc default", "load": os.getloadavg()[0],
            **{f"{k}_samples_per_s": round(rounds * n / s, 1) for k, s in seconds.items()}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="k3-1,k3-2,k3-3,k3-4,k5-1,k5-2,k5-3,k5-4,k7-1,k7-2,k7-3,k7-4")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--precision", default="bf16", choices=("bf16", "fp32"))
    ap.add_argument("--kept-only", action="store_true", help="only the allocator setting the trainer uses")
    ap.add_argument("--child", nargs=2, metavar=("MODEL", "TUNED"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        model, tuned = args.child
        print(json.dumps(measure(model, args.threads, tuned == "1", args.compile, args.rounds, args.batches,
                                 args.precision)))
        return 0
    for model in args.models.split(","):
        for tuned in ("1",) if args.kept_only else ("0", "1"):
            cmd = [sys.executable, __file__, "--threads", str(args.threads), "--rounds", str(args.rounds),
                   "--batches", str(args.batches), "--precision", args.precision,
                   *(["--compile"] if args.compile else []), "--child", model, tuned]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            print(out, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

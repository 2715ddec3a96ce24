"""The cost of `augment = ["flip", "crop(4)", "cutout(8)"]` as a share of a training epoch, on the CPU.

    .venv/bin/python bench/augment_cost.py [--models k3-2 k5-1] [--images 6000] [--repeats 3] [--threads 2]
                                           [--data-dir /work/shared/data/mnist]

For each seed model, on `--images` MNIST training images in batches of its batch size (fp32, the
plan `convstudy run` makes on the CPU): the training steps of one epoch without augmentation, the
augmentation of the same batches alone (train.Augment with the trial's generator), and one epoch of
steps with augmentation. Validation is left out, so the share is of the training part only, an upper
bound for a whole epoch. Each timed epoch follows WARMUP untimed steps; the fastest of `--repeats` counts (a shared
machine only ever adds time). Goal (issue 16): at most 10%.
"""

from __future__ import annotations

import argparse
import time

import torch

from convstudy.data import load_dataset
from convstudy.spec import seed_study
from convstudy.train import Augment, init_state, make_trial_data, plan, train_step
from convstudy.train.augment import seeded_generator

AUGMENT = ("flip", "crop(4)", "cutout(8)")
WARMUP = 5  # untimed steps before each timed epoch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["k3-2", "k5-1"])
    parser.add_argument("--images", type=int, default=6000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    study = seed_study()
    ds = load_dataset(study.dataset, args.data_dir)
    device = torch.device("cpu")
    settings0 = study.train.model_copy(update={"train_limit": args.images})
    data = make_trial_data(ds, settings0, device)
    x, y = data.train.x, data.train.y
    print(f"torch {torch.__version__}, {args.threads} threads, {len(y)} training images, augment = {list(AUGMENT)}")
    for name in args.models:
        spec = study.model(name)
        base = spec.settings(settings0)
        batch = base.batch_size
        p = plan(spec, ds.info.input_shape, device, "fp32", args.threads)
        runs = {"steps": [], "augment alone": [], "steps + augment": []}
        for r in range(args.repeats):
            order = (("steps", ()), ("steps + augment", AUGMENT))
            for label, names in order[::-1] if r % 2 else order:  # alternated, against drifting load
                settings = base.model_copy(update={"augment": names})
                state = init_state(spec, settings, ds.info.input_shape, 0, p)
                step, augment = train_step(state.model, state.optimizer, p, None, 0.0), Augment(names)
                state.model.train()
                loss_sum, correct = torch.zeros(()), torch.zeros((), dtype=torch.int64)

                def batch_at(start: int) -> None:  # run_trial's batch: augment, step, zero_grad
                    xb = x[start:start + batch]
                    step(augment(xb, state.augment) if augment else xb, y[start:start + batch], loss_sum, correct)
                    state.optimizer.zero_grad(set_to_none=True)

                for start in range(0, WARMUP * batch, batch):  # oneDNN's first calls are slow: not timed
                    batch_at(start)
                t0 = time.perf_counter()
                for start in range(0, len(y), batch):
                    batch_at(start)
                loss_sum.item()
                runs[label].append(time.perf_counter() - t0)
            aug, gen = Augment(AUGMENT), seeded_generator(0, device)
            t0 = time.perf_counter()
            for start in range(0, len(y), batch):
                aug(x[start:start + batch], gen)
            runs["augment alone"].append(time.perf_counter() - t0)
        med = {k: min(v) for k, v in runs.items()}  # the least disturbed run: others share the cores
        share = med["augment alone"] / med["steps"]
        diff = (med["steps + augment"] - med["steps"]) / med["steps"]
        print(f"{name}: steps {med['steps']:.2f} s, augment alone {med['augment alone'] * 1000:.0f} ms "
              f"({share:.1%} of the steps), steps + augment {med['steps + augment']:.2f} s ({diff:+.1%}); "
              f"per image {med['augment alone'] / len(y) * 1e6:.1f} us")


if __name__ == "__main__":
    main()

"""Throughput benchmark: convstudy's trainer against the plain PyTorch loop a typical user writes.

Both loops train the same model on the same synthetic images in one process, in alternating chunks, so load from
other processes hits both alike. The plain loop also runs at each thread count from 1 up, and the ratio against its
fastest is the one that counts. On the CPU the trainer is also timed as `convstudy run` trains a study by default
(`study_throughput`): W processes at the measured threads per trial, at once. GFLOP/s count 3x the forward FLOPs
(forward + two backward products).
"""

from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from typing import Callable

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from convstudy.model import build_model, summarize_model
from convstudy.spec import ModelSpec, Shape, TrainSettings
from convstudy.train import (
    CudaGraph, configure_backends, init_state, make_optimizer, make_scheduler, plan, seed_everything, train_step,
)

BASELINE_BATCH = 128
ROUNDS = 4  # timed chunks per loop and model, alternating trainer and baseline


@dataclass(frozen=True)
class ModelBench:
    name: str
    samples_per_s: float
    baseline_samples_per_s: float  # the plain loop at PyTorch's default threads, the trainer's own
    ratio: float
    gflops: float
    peak_share: float
    best_baseline_samples_per_s: float  # the plain loop at its fastest thread count
    best_baseline_threads: int
    best_ratio: float  # against the best plain loop: the ratio that counts
    baseline_by_threads: dict[str, float]  # samples/s per thread count tried (JSON keys are strings)
    # The study: `study_workers` trials at once, `study_threads` each, samples/s summed (on a GPU: the lone trainer).
    study_samples_per_s: float = 0.0
    study_threads: int = 0
    study_workers: int = 1
    study_best_ratio: float = 0.0  # against one best plain loop: what running the models one after the other gets


def thread_counts(default: int, cpus: int) -> list[int]:
    """Thread counts to try for the plain loop: powers of two up to `cpus`, `cpus` itself and the default."""
    return sorted({default, cpus, *(2**i for i in range(cpus.bit_length()))})


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, precision: str, seconds: float = 1.0) -> float:
    """Measured GFLOP/s of a large square matrix product in `precision` (bf16 or fp32, no TF32)."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    n = 8192 if device.type == "cuda" else 1024
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    torch.mm(a, b)
    _sync(device)
    reps, t0 = 0, time.perf_counter()
    while True:
        torch.mm(a, b)
        reps += 1
        if reps % 4 == 0:
            _sync(device)
            if time.perf_counter() - t0 >= seconds:
                break
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def plain_loop(spec: ModelSpec, settings: TrainSettings, input_shape: Shape, x: torch.Tensor, y: torch.Tensor,
               device: torch.device) -> Callable[[int], int]:
    """The loop as a user writes it: fp32, DataLoader over a TensorDataset, batch 128, loss.item() per batch."""
    seed_everything(0)
    model = build_model(spec, input_shape).to(device)
    opt = make_optimizer(settings.optimizer, model.parameters())
    loader = DataLoader(TensorDataset(x.float() / 255.0, y), batch_size=BASELINE_BATCH, shuffle=True)
    batches = iter(())

    def run(n_batches: int) -> int:
        nonlocal batches
        model.train()
        done, running = 0, 0.0
        for _ in range(n_batches):
            batch = next(batches, None)
            if batch is None:
                batches = iter(loader)
                batch = next(batches)
            xb, yb = batch[0].to(device), batch[1].to(device)
            opt.zero_grad()
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            running += loss.item()
            done += yb.shape[0]
        return done

    return run


def trainer_loop(spec: ModelSpec, settings: TrainSettings, input_shape: Shape, x: torch.Tensor, y: torch.Tensor,
                 device: torch.device, precision: str, channels_last: bool,
                 threads: int | None = None) -> Callable[[int], int]:
    """convstudy's own steps (run_trial's batch loop) over device-resident uint8 data, `n_batches` per call,
    as planned for `threads` (default: the current count), since the plan can differ by thread count."""
    how = replace(plan(spec, input_shape, device, precision, threads or torch.get_num_threads()),
                  channels_last=channels_last)
    state = init_state(spec, settings, input_shape, 0, how)
    step = train_step(state.model, state.optimizer, how, None, settings.label_smoothing)
    if how.cuda_graphs and device.type == "cuda" and make_scheduler(settings, state.optimizer, 1) is None:
        step = CudaGraph(step, settings.batch_size)
    xd, yd = x.to(device), y.to(device)

    def run(n_batches: int) -> int:
        n, batch = min(n_batches * settings.batch_size, len(yd)), settings.batch_size
        state.model.train()
        perm = torch.randperm(n, generator=state.shuffle).to(device)
        xs, ys = xd[:n].index_select(0, perm), yd[:n].index_select(0, perm)
        loss_sum, correct = torch.zeros((), device=device), torch.zeros((), device=device, dtype=torch.int64)
        for start in range(0, n, batch):
            step(xs[start:start + batch], ys[start:start + batch], loss_sum, correct)
            state.optimizer.zero_grad(set_to_none=True)
        loss_sum.item()  # the epoch's one host sync, as run_trial's
        return n

    return run


def _timed(run: Callable[[int], int], n_batches: int, device: torch.device) -> tuple[int, float]:
    _sync(device)
    t0 = time.perf_counter()
    done = run(n_batches)
    _sync(device)
    return done, time.perf_counter() - t0


def _with_threads(run: Callable[[int], int], threads: int) -> Callable[[int], int]:
    def timed_run(n_batches: int) -> int:
        torch.set_num_threads(threads)
        return run(n_batches)
    return timed_run


def _synthetic(settings: TrainSettings, input_shape: Shape) -> tuple[torch.Tensor, torch.Tensor]:
    """Enough seeded uint8 images for the longest chunk; the trainer reads a prefix, the baseline cycles its loader."""
    h, w, c = input_shape
    gen, n_max = torch.Generator().manual_seed(0), 256 * settings.batch_size
    x = torch.randint(0, 256, (n_max, c, h, w), dtype=torch.uint8, generator=gen)
    return x, torch.randint(0, 10, (n_max,), generator=gen)


_start = None  # the barrier the study's trial processes wait at, so that they are timed together


def _join(barrier) -> None:
    global _start
    _start = barrier


def _study_trial(spec: ModelSpec, settings: TrainSettings, input_shape: Shape, precision: str, channels_last: bool,
                 threads: int, seconds: float) -> float:
    """One trial process of `study_throughput`: the trainer's samples/s over `seconds` after the others are warm."""
    cpu = torch.device("cpu")
    torch.set_num_threads(threads)
    configure_backends(cpu)
    run = trainer_loop(spec, settings, input_shape, *_synthetic(settings, input_shape), cpu, precision, channels_last)
    _timed(run, 2, cpu)
    _, t4 = _timed(run, 4, cpu)
    chunk = int(max(1, min(256, seconds / (2 * ROUNDS) / (t4 / 4))))
    _start.wait(timeout=600)
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        done += run(chunk)
    return done / (time.perf_counter() - t0)


def study_throughput(spec: ModelSpec, settings: TrainSettings, input_shape: Shape, precision: str,
                     channels_last: bool, threads: int, workers: int, seconds: float) -> float:
    """CPU samples/s of `workers` trainer processes (spawned, `threads` each) training `spec` at once, as
    `convstudy run` trains a study: the sum of their rates while they ran together."""
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_join, initargs=(ctx.Barrier(workers),)) as pool:
        trials = [pool.submit(_study_trial, spec, settings, input_shape, precision, channels_last, threads, seconds)
                  for _ in range(workers)]
        return sum(t.result() for t in trials)


def bench_model(spec: ModelSpec, settings: TrainSettings, input_shape: Shape, device: torch.device, seconds: float,
                precision: str, channels_last: bool, peak_gflops: float,
                baseline_threads: list[int] | None = None) -> ModelBench:
    """Time the trainer and the plain loop (at each of `baseline_threads`) on `spec` for about `seconds` in
    all, alternating chunks of similar duration; the trainer keeps the threads current at the call."""
    x, y = _synthetic(settings, input_shape)
    threads = torch.get_num_threads()
    counts = sorted({threads, *(baseline_threads or [])})
    ours = trainer_loop(spec, settings, input_shape, x, y, device, precision, channels_last)
    base = plain_loop(spec, settings, input_shape, x, y, device)
    loops = {"ours": _with_threads(ours, threads), **{t: _with_threads(base, t) for t in counts}}
    try:
        warm = 2 * (1 + 3) if device.type == "cuda" else 2  # past CUDA graph capture and cuDNN's algorithm search
        chunks = {}
        for key, run in loops.items():
            _timed(run, warm, device)
            _, t4 = _timed(run, 4, device)
            chunks[key] = int(max(2, min(256, seconds / (len(loops) * ROUNDS) / (t4 / 4))))
        totals = {key: [0, 0.0] for key in loops}
        for _ in range(ROUNDS):
            for key, run in loops.items():
                done, dt = _timed(run, chunks[key], device)
                totals[key][0] += done
                totals[key][1] += dt
    finally:
        torch.set_num_threads(threads)
    sps = totals["ours"][0] / totals["ours"][1]
    by_threads = {t: totals[t][0] / totals[t][1] for t in counts}
    base_sps = by_threads[threads]
    best = max(counts, key=by_threads.__getitem__)
    gflops = sps * 3 * summarize_model(spec, input_shape).flops / 1e9
    return ModelBench(spec.name, round(sps, 1), round(base_sps, 1), round(sps / base_sps, 3), round(gflops, 2),
                      round(gflops / peak_gflops, 4), round(by_threads[best], 1), best,
                      round(sps / by_threads[best], 3), {str(t): round(v, 1) for t, v in by_threads.items()},
                      round(sps, 1), threads, 1, round(sps / by_threads[best], 3))


def bench_models(specs: list[tuple[ModelSpec, TrainSettings]], input_shape: Shape, device: torch.device,
                 seconds: float, precision: str, channels_last: bool,
                 on_model: Callable[[ModelBench], None] | None = None, study: tuple[int, int] | None = None) -> dict:
    """The benchmark's JSON document: the peak, the threads and processes each side used, one entry per model.
    The trainer's process settings (configure_backends) apply to the baseline too: a conservative ratio.
    `study` (threads, workers): also time that many trainer processes at once for `seconds` / 2 (CPU)."""
    configure_backends(device)
    threads = torch.get_num_threads()
    counts = thread_counts(threads, os.cpu_count() or threads) if device.type == "cpu" else [threads]
    load = [round(os.getloadavg()[0], 2)] if hasattr(os, "getloadavg") else []
    peak = matmul_peak(device, precision)
    results = []
    for spec, settings in specs:
        r = bench_model(spec, settings, input_shape, device, seconds, precision, channels_last, peak, counts)
        if study is not None:
            sps = study_throughput(spec, settings, input_shape, precision, channels_last, *study, seconds / 2)
            r = replace(r, study_samples_per_s=round(sps, 1), study_threads=study[0], study_workers=study[1],
                        study_best_ratio=round(sps / r.best_baseline_samples_per_s, 3))
        results.append(r)
        if on_model is not None:
            on_model(results[-1])
    return {
        "device": device.type,
        "precision": precision,
        "channels_last": channels_last,
        "threads": threads,
        # One process each; the trainer as `convstudy run` trains a lone trial (--workers 1), the plain
        # loop with a DataLoader in the main process (num_workers 0).
        "trainer": {"threads": threads, "workers": 1},
        # As `convstudy run` trains a study of these models by default: W trials at once (CPU), samples/s summed;
        # its ratio is against one plain loop at its best threads, as a user runs the models one after the other.
        "study": {"threads": study[0] if study else threads, "workers": study[1] if study else 1},
        "baseline": {"default_threads": threads, "threads_tried": counts, "workers": 1, "loader_workers": 0},
        "load": load + ([round(os.getloadavg()[0], 2)] if load else []),  # 1-minute load average, start and end
        "peak_gflops": round(peak, 1),
        "seconds_per_model": seconds,
        "models": [asdict(r) for r in results],
    }

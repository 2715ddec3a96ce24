"""Throughput benchmark: convstudy's trainer against the plain PyTorch loop a typical user writes.

Both loops train the same model on the same synthetic uint8 images, in one process, in alternating
chunks, so that load from other processes on a shared machine hits both alike and their ratio stays
fair. Achieved GFLOP/s count 3x the forward FLOPs per sample (forward + two backward products) and
are set against a matrix product timed here, in the trainer's precision.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from typing import Callable

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from convstudy.model import build_model, summarize_model
from convstudy.spec import ModelSpec, Shape, TrainSettings
from convstudy.train import Lone, Split, configure_backends, init_state, make_optimizer, plan, seed_everything

BASELINE_BATCH = 128
ROUNDS = 4  # timed chunks per loop and model, alternating trainer and baseline


@dataclass(frozen=True)
class ModelBench:
    name: str
    samples_per_s: float
    baseline_samples_per_s: float
    ratio: float
    gflops: float
    peak_share: float


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
                 device: torch.device, precision: str, channels_last: bool) -> Callable[[int], int]:
    """convstudy's own steps (run_trial's batch loop) over device-resident uint8 data, `n_batches` per call."""
    how = replace(plan(spec, input_shape, device, precision, torch.get_num_threads()), channels_last=channels_last)
    net = Lone(init_state(spec, settings, input_shape, 0, how), settings, how)
    xd, yd = x.to(device), y.to(device)

    def run(n_batches: int) -> int:
        n, batch = min(n_batches * settings.batch_size, len(yd)), settings.batch_size
        xs, ys, loss_sum, correct = net.shuffled(Split(xd[:n], yd[:n]))
        for start in range(0, n, batch):
            net.step(xs[start:start + batch], ys[start:start + batch], loss_sum, correct)
        loss_sum.item()  # the epoch's one host sync, as run_trial's
        return n

    return run


def _timed(run: Callable[[int], int], n_batches: int, device: torch.device) -> tuple[int, float]:
    _sync(device)
    t0 = time.perf_counter()
    done = run(n_batches)
    _sync(device)
    return done, time.perf_counter() - t0


def bench_model(spec: ModelSpec, settings: TrainSettings, input_shape: Shape, device: torch.device, seconds: float,
                precision: str, channels_last: bool, peak_gflops: float) -> ModelBench:
    """Time both loops on `spec` for about `seconds` in all, alternating chunks of similar duration."""
    h, w, c = input_shape
    gen = torch.Generator().manual_seed(0)
    # Enough images for the longest chunk; the trainer reads a prefix, the baseline cycles its loader.
    n_max = 256 * settings.batch_size
    x = torch.randint(0, 256, (n_max, c, h, w), dtype=torch.uint8, generator=gen)
    y = torch.randint(0, 10, (n_max,), generator=gen)
    ours = trainer_loop(spec, settings, input_shape, x, y, device, precision, channels_last)
    base = plain_loop(spec, settings, input_shape, x, y, device)
    warm = 2 * (1 + 3)  # past the CUDA graph capture and cuDNN's algorithm search
    _timed(ours, warm, device)
    _timed(base, warm, device)
    _, t_ours = _timed(ours, 4, device)
    _, t_base = _timed(base, 4, device)
    per_chunk = seconds / (2 * ROUNDS)
    chunk_ours = int(max(2, min(256, per_chunk / (t_ours / 4))))
    chunk_base = int(max(2, min(256, per_chunk / (t_base / 4))))
    totals = {"ours": [0, 0.0], "base": [0, 0.0]}
    for _ in range(ROUNDS):
        for key, run, chunk in (("ours", ours, chunk_ours), ("base", base, chunk_base)):
            done, dt = _timed(run, chunk, device)
            totals[key][0] += done
            totals[key][1] += dt
    sps = totals["ours"][0] / totals["ours"][1]
    base_sps = totals["base"][0] / totals["base"][1]
    gflops = sps * 3 * summarize_model(spec, input_shape).flops / 1e9
    return ModelBench(spec.name, round(sps, 1), round(base_sps, 1), round(sps / base_sps, 3), round(gflops, 2),
                      round(gflops / peak_gflops, 4))


def bench_models(specs: list[tuple[ModelSpec, TrainSettings]], input_shape: Shape, device: torch.device,
                 seconds: float, precision: str, channels_last: bool,
                 on_model: Callable[[ModelBench], None] | None = None) -> dict:
    """The benchmark's JSON document: the peak, then one entry per model.

    The trainer's process settings (configure_backends: on the CPU, an allocator that keeps freed
    memory) apply to the whole process, so the baseline runs with them too: a conservative ratio.
    """
    configure_backends(device)
    peak = matmul_peak(device, precision)
    results = []
    for spec, settings in specs:
        r = bench_model(spec, settings, input_shape, device, seconds, precision, channels_last, peak)
        results.append(r)
        if on_model is not None:
            on_model(r)
    return {
        "device": device.type,
        "precision": precision,
        "channels_last": channels_last,
        "threads": torch.get_num_threads(),
        "peak_gflops": round(peak, 1),
        "seconds_per_model": seconds,
        "models": [asdict(r) for r in results],
    }

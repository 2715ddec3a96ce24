"""A short calibration: each model's training steps timed at 1, 2, 4 ... threads on this machine, for
measure.parallel. Cached per machine and model in $CONVSTUDY_CACHE_DIR/calibration.json (default
~/.cache/convstudy), so a study decides the same way each time it starts on this machine.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import time
from pathlib import Path
from typing import Callable

import torch

from convstudy.spec import ModelSpec, Shape, TrainSettings
from convstudy.store import atomic_write

STEPS = 2  # timed batches per thread count and round, after one warm-up batch
ROUNDS = 2  # rounds over the thread counts, interleaved; the faster round counts (a brief load spike loses)
# Environment variables that change which kernels run (docs/benchmarks.md, the AVX2 section).
_ISA_CAPS = ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")


def calibration_file() -> Path:
    """$CONVSTUDY_CACHE_DIR/calibration.json, else ~/.cache/convstudy/calibration.json."""
    given = os.environ.get("CONVSTUDY_CACHE_DIR")
    return (Path(given).expanduser() if given else Path.home() / ".cache" / "convstudy") / "calibration.json"


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else what the platform module says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_key() -> str:
    """What a calibration holds for: CPU model, core count, torch version and the kernel-ISA caps."""
    caps = ",".join(f"{k}={os.environ[k]}" for k in _ISA_CAPS if k in os.environ)
    return f"{cpu_model()} | {os.cpu_count()} cpus | torch {torch.__version__}" + (f" | {caps}" if caps else "")


def model_key(spec: ModelSpec, settings: TrainSettings, input_shape: Shape, precision: str) -> str:
    """A digest of what sets a model's step time: layers, batch size, optimizer, augmentation, input, precision,
    and the train stage's plan at one thread and at all cores (a new rule there measures anew)."""
    from convstudy.train import plan

    cpu = torch.device("cpu")
    plans = [plan(spec, input_shape, cpu, precision, t).numerics() for t in sorted({1, os.cpu_count() or 1})]
    body = {"layers": [layer.to_string() for layer in spec.layers], "batch": settings.batch_size,
            "optimizer": settings.optimizer.model_dump(mode="json"), "augment": list(settings.augment),
            "shape": list(input_shape), "precision": precision, "plans": plans}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:24]


def load_cache(path: Path | None = None) -> dict[str, dict[str, dict[str, float]]]:
    """machine key -> model key -> {threads: samples/s}; empty if missing or unreadable (it is only a cache)."""
    try:
        doc = json.loads((path or calibration_file()).read_text())
        return doc if isinstance(doc, dict) else {}
    except (OSError, ValueError):
        return {}


def save_cache(cache: dict, path: Path | None = None) -> None:
    """Write the cache atomically; a read-only home only costs a new calibration next time."""
    with contextlib.suppress(OSError):
        atomic_write(path or calibration_file(), json.dumps(cache, indent=1, sort_keys=True).encode())


def measure_rates(spec: ModelSpec, settings: TrainSettings, input_shape: Shape, precision: str,
                  counts: list[int], timer: Callable[[], float] = time.perf_counter,
                  make_loop: Callable | None = None) -> dict[int, float]:
    """Training samples/s of `spec` (convstudy's own steps on synthetic images) at each of `counts` threads;
    rounds alternate the counts so other load hits each alike, and the faster round counts."""
    from convstudy.measure.throughput import trainer_loop

    cpu = torch.device("cpu")
    if make_loop is None:
        from convstudy.train import default_channels_last

        h, w, c = input_shape
        n = (1 + STEPS) * settings.batch_size
        gen = torch.Generator().manual_seed(0)
        x = torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=gen)
        y = torch.randint(0, 10, (n,), generator=gen)
        # Each count trains as planned for it: at one thread the plan can choose other convolutions.
        runs = {t: trainer_loop(spec, settings, input_shape, x, y, cpu, precision, default_channels_last(cpu), t)
                for t in counts}
    else:
        runs = dict.fromkeys(counts, make_loop())
    before = torch.get_num_threads()
    best: dict[int, float] = {}
    try:
        for round_ in range(ROUNDS):
            for t in counts:
                torch.set_num_threads(t)
                run = runs[t]
                if round_ == 0:
                    run(1)  # warm-up at this thread count (oneDNN primitives, allocator)
                t0 = timer()
                done = run(STEPS)
                rate = done / max(timer() - t0, 1e-9)
                best[t] = max(best.get(t, 0.0), rate)
    finally:
        torch.set_num_threads(before)
    return {t: round(r, 1) for t, r in best.items()}

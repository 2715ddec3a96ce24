"""Measured inference latency of a study's trained models on this CPU: PyTorch as the trainer runs them, and onnxruntime.

Per model, runtime and batch: the median of timed repeats and its distribution-free 95% CI (METHOD says how),
since a shared machine makes timings skewed.
"""

from __future__ import annotations

import math
import os
import platform
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterator

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from scipy.stats import quantile_test

from convstudy.errors import UserError
from convstudy.deploy.export import INPUT_NAME, onnx_bytes, ort_session
from convstudy.deploy.predict import Trained, load_trained
from convstudy.model import build_model, predict_proba
from convstudy.store import StudyStore, provenance
from convstudy.train import Plan, configure_backends, plan, resolve_precision
from convstudy.train.device import cpu_has_native_bf16
from convstudy.train.loop import autocast

MIN_REPEATS = 6  # the fewest repeats for which an order-statistic 95% CI of the median exists
BATCHES = {"batch1_ms": 1, "batch256_ms_per_image": 256}  # report field -> batch size
WARMUP_S = 0.2
MIN_REPEAT_S = 0.005
TARGET_WIDTH = 0.10  # past the requested repeats, keep timing (up to MAX_FACTOR times as many) until the CI is this narrow
MAX_FACTOR = 4
METHOD = (f"per model, runtime and batch: >= {WARMUP_S:g} s of warm-up, then timed repeats, each the mean ms per "
          f"image over enough forward passes (with softmax) to last >= {MIN_REPEAT_S * 1e3:g} ms; at least the "
          f"requested repeats, and more (up to {MAX_FACTOR}x) until the CI is within {TARGET_WIDTH:.0%} of the median; "
          "median of the repeats with a distribution-free 95% CI (binomial order statistics, "
          "scipy.stats.quantile_test); inputs are random float32 images in [0, 1]")


@dataclass(frozen=True)
class LatencyOptions:
    """What `convstudy latency` (and `run --latency`) measures, and for how long."""

    repeats: int  # timed repeats per model, runtime and batch (the CLI's default: 50)
    budget_s: float  # no new model starts after this many seconds; 0: no limit (the CLI's default: 600)
    precision: str = "auto"  # PyTorch's precision, chosen as the trainer chooses it (train.device)
    threads: int | None = None  # intra-op threads of both runtimes; None: torch's, as the trainer runs

    def check(self) -> None:
        if self.repeats < MIN_REPEATS:
            raise UserError(f"--repeats {self.repeats}: at least {MIN_REPEATS} are needed for a 95% CI of the median")
        if not (self.budget_s >= 0 and math.isfinite(self.budget_s)):
            raise UserError(f"--budget {self.budget_s}: expected seconds >= 0 (0: no limit)")
        resolve_precision(self.precision, torch.device("cpu"))


def median_ci(values: list[float]) -> dict[str, Any]:
    """Median of `values` and its distribution-free 95% CI from the binomial order statistics."""
    median = float(np.median(values))
    ci = quantile_test(values, q=median, p=0.5).confidence_interval(0.95)
    return {"median": median, "ci95": [float(ci.low), float(ci.high)], "n": len(values)}


def time_repeats(fn: Callable[[], object], repeats: int) -> tuple[list[float], int]:
    """(seconds per call of `fn`, one value per timed repeat; calls per repeat), after a warm-up: `repeats`
    repeats, then more until the median's CI is within TARGET_WIDTH of it or MAX_FACTOR * `repeats` were timed."""
    start, calls = time.perf_counter(), 0
    while calls < 3 or time.perf_counter() - start < WARMUP_S:
        fn()
        calls += 1
    t = time.perf_counter()
    fn()
    per_repeat = max(1, math.ceil(MIN_REPEAT_S / max(time.perf_counter() - t, 1e-9)))
    out: list[float] = []
    while len(out) < repeats or (len(out) < MAX_FACTOR * repeats and _wide(out)):
        t = time.perf_counter()
        for _ in range(per_repeat):
            fn()
        out.append((time.perf_counter() - t) / per_repeat)
    return out, per_repeat


def _wide(values: list[float]) -> bool:
    """Whether the median's CI is wider than TARGET_WIDTH of it (checked every fifth repeat, to keep it cheap)."""
    if len(values) % 5:
        return True
    stat = median_ci(values)
    return stat["ci95"][1] - stat["ci95"][0] > TARGET_WIDTH * stat["median"]


def _inputs(trained: Trained, batch: int) -> torch.Tensor:
    h, w, c = trained.info.input_shape
    return torch.rand(batch, c, h, w, generator=torch.Generator().manual_seed(batch))


def torch_forwards(trained: Trained, p: Plan) -> dict[int, Callable[[], object]]:
    """Per batch size, one inference call as the trainer's evaluation runs it: `p`'s convolution algorithms,
    memory format and autocast precision, eval mode, torch.inference_mode."""
    model = build_model(trained.spec, trained.info.input_shape, dft=p.dft, pool_first=p.pool_first)
    model.load_state_dict(trained.module.state_dict())
    model = model.eval().to(memory_format=torch.channels_last) if p.channels_last else model.eval()

    def call(x: torch.Tensor) -> Callable[[], object]:
        x = x.contiguous(memory_format=torch.channels_last) if p.channels_last else x

        def forward() -> torch.Tensor:
            with torch.inference_mode(), autocast(x.device, p.precision):
                return predict_proba(model, x)
        return forward

    return {b: call(_inputs(trained, b)) for b in BATCHES.values()}


def onnx_forwards(trained: Trained, threads: int) -> dict[int, Callable[[], object]]:
    """Per batch size, one onnxruntime call of the model exported as `convstudy export --format onnx` does (fp32)."""
    session = ort_session(onnx_bytes(trained.module, trained.info.input_shape), threads)

    def call(x: np.ndarray) -> Callable[[], object]:  # binds x per batch size
        return lambda: session.run(None, {INPUT_NAME: x})

    return {b: call(_inputs(trained, b).numpy()) for b in BATCHES.values()}


def measure_runtime(forwards: dict[int, Callable[[], object]], repeats: int) -> dict[str, Any]:
    """The issue's fields for one runtime: per batch, median and 95% CI of milliseconds per image."""
    out: dict[str, Any] = {}
    for field, batch in BATCHES.items():
        seconds, per_repeat = time_repeats(forwards[batch], repeats)
        out[field] = {**median_ci([1e3 * s / batch for s in seconds]), "calls_per_repeat": per_repeat}
    return out


def onnxruntime_version() -> str | None:
    try:
        import onnx  # noqa: F401  (the export needs it too)
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime.__version__


def hardware() -> dict[str, Any]:
    """The machine the numbers belong to: CPU model, cores, threads, native bf16, library versions."""
    cpu, cores = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as fh:
            fields = [line.partition(":")[::2] for line in fh]
        names = [v.strip() for k, v in fields if k.strip() == "model name"]
        cpu = names[0] if names else cpu
        ids = [v.strip() for k, v in fields if k.strip() in ("physical id", "core id")]
        cores = set(zip(ids[::2], ids[1::2]))
    except OSError:
        pass
    stored = {k: v for k, v in provenance(f"cpu: {cpu}").items() if k != "argv"}  # the machine, not the command
    return {**stored, "cpu": cpu, "cores": len(cores) or os.cpu_count(),
            "logical_cpus": os.cpu_count(), "native_bf16": cpu_has_native_bf16(), "onnxruntime": onnxruntime_version()}


def measure_model(trained: Trained, p: Plan, repeats: int, hw: dict[str, Any]) -> dict[str, Any]:
    """One model's latency entry: PyTorch's fields at the top (the issue's names), onnxruntime's in `other_runtimes`."""
    device = f"cpu: {hw['cpu']} ({hw['cores']} cores, {p.threads} threads)"
    entry = {"seed": trained.seed, "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
             "device": device, "runtime": f"torch {torch.__version__}", "precision": p.precision,
             "channels_last": p.channels_last, "conv_dft": list(p.dft), "threads": p.threads,
             **measure_runtime(torch_forwards(trained, p), repeats), "other_runtimes": [], "hardware": hw}
    if hw["onnxruntime"] is not None:
        entry["other_runtimes"].append({"device": device, "runtime": f"onnxruntime {hw['onnxruntime']}",
                                        "precision": "fp32", "threads": p.threads,
                                        **measure_runtime(onnx_forwards(trained, p.threads), repeats)})
    return entry


def measure_study(store: StudyStore, models: list[str], opts: LatencyOptions) -> Iterator[tuple[str, dict[str, Any]]]:
    """(model, latency entry) for each of `models`, in order, as each is measured. A model without a complete
    trial, with unusable weights, or reached after the budget is spent gets `{"not_measured": why}`."""
    cpu = torch.device("cpu")
    configure_backends(cpu)
    precision = resolve_precision(opts.precision, cpu)
    threads, before = opts.threads or torch.get_num_threads(), torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        hw, start = hardware(), time.perf_counter()
        for name in models:
            if opts.budget_s and time.perf_counter() - start >= opts.budget_s:
                yield name, {"not_measured": f"the time budget of {opts.budget_s:g} s was spent before it (--budget)"}
                continue
            try:
                trained = load_trained(store, name)
            except UserError as exc:  # no complete trial, or weights that fail their checks
                yield name, {"not_measured": str(exc)}
                continue
            p = plan(trained.spec, trained.info.input_shape, cpu, precision, threads)
            yield name, measure_model(trained, p, opts.repeats, hw)
    finally:
        torch.set_num_threads(before)


def measure_and_show(store: StudyStore, models: list[str] | None, opts: LatencyOptions, console: Console) -> None:
    """Measure `models` (default: all) of the study in `store`, record each in OUT/latency.json as soon as it is
    measured (an interrupted run keeps what it measured), and print the table."""
    names = [store.study.model(n).name for n in models] if models else [m.name for m in store.study.models]
    store.read_latency()  # a damaged latency.json stops here, before the work, and is left as it is
    budget = f"{opts.budget_s:g} s" if opts.budget_s else "none"
    console.print(f"measuring the latency of {len(names)} model{'s' * (len(names) != 1)} on this CPU "
                  f"({opts.repeats} repeats per batch and runtime; budget {budget})", soft_wrap=True)
    table = Table("model", "seed", "runtime", "precision", "batch 1: ms (95% CI)", "batch 256: ms/image (95% CI)",
                  title="Inference latency per image: median of the repeats")
    devices, missing = set(), {}
    with console.status(f"measuring {names[0] if names else ''}") as status:
        for i, (name, entry) in enumerate(measure_study(store, names, opts), 1):
            store.record_latency(name, entry, METHOD)
            if i < len(names):
                status.update(f"measured {i}/{len(names)}; measuring {names[i]}")
            if "not_measured" in entry:
                missing.setdefault(entry["not_measured"], []).append(name)
                continue
            devices.add(entry["device"])
            for j, r in enumerate([entry, *entry["other_runtimes"]]):
                table.add_row(name if j == 0 else "", str(entry["seed"]) if j == 0 else "", r["runtime"],
                              r["precision"], _ms(r["batch1_ms"]), _ms(r["batch256_ms_per_image"]))
    if table.rows:
        console.print(table)
    for device in sorted(devices):
        console.print(f"device: {device}", soft_wrap=True)
    for why, which in missing.items():
        console.print(f"not measured: {', '.join(which)}: {why}", soft_wrap=True, markup=False)


def _ms(t: dict) -> str:
    lo, hi = t["ci95"]
    return f"{t['median']:.4g} ({lo:.4g}–{hi:.4g})"

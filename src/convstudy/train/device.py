"""Choosing the device, precision and memory format a trial trains with."""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
from dataclasses import dataclass

import torch
from torch import nn

from convstudy.errors import UserError
from convstudy.model import Conv2d, build_model
from convstudy.spec import ModelSpec


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA when present, else the CPU; asking for CUDA without one is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available here (use --device cpu or auto)")
    if name not in ("cpu", "cuda"):
        raise UserError(f'--device {name}: unknown device; valid: auto, cpu, cuda')
    return torch.device(name)


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bf16 natively here (AVX-512 BF16 or AMX); without it bf16 is emulated and slow."""
    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(torch.backends.mkldnn.is_available() and probe is not None and probe())


def resolve_precision(name: str, device: torch.device) -> str:
    """`auto` is bf16 where the hardware runs it natively, else fp32.

    Both measured faster in bf16 with 12-epoch test accuracy within fp32's seed-to-seed spread: CUDA
    (bf16-capable GPUs) and CPUs with native bf16 (docs/benchmarks.md).
    """
    if name not in ("auto", "fp32", "bf16"):
        raise UserError(f"--precision {name}: unknown precision; valid: auto, fp32, bf16")
    if name == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        return "bf16" if cpu_has_native_bf16() else "fp32"
    return name


def describe(device: torch.device) -> str:
    """A human name for the device, stored with every trial."""
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{torch.get_num_threads()} threads"


def configure_backends(device: torch.device) -> None:
    """Library switches that pay off for these small convnets (measured in docs/benchmarks.md)."""
    if device.type == "cuda":
        # cuDNN's algorithm search cost 3-6 s per model and precision on an H100 (four batch shapes:
        # train, last train batch, eval, last eval batch), more than a whole 12-epoch trial's gain.
        torch.backends.cudnn.benchmark = False
    else:
        keep_freed_memory()


# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4
_KEEP = 1 << 30  # heap top kept before trimming: above any one step's working set of the seed models
_allocator_tuned = False


def keep_freed_memory() -> bool:
    """Make glibc malloc reuse freed activation memory instead of returning it to the OS each step.

    By default every tensor above glibc's mmap threshold is a fresh mapping whose pages fault in (and
    are zeroed) on first touch, every batch; on these CPUs that was 10-35% of a training step
    (docs/benchmarks.md). Serving them from a heap that is not trimmed is what PyTorch's CPU tuning
    guide gets from jemalloc or tcmalloc, without preloading a library. Process-wide, done once;
    returns whether the allocator could be tuned (glibc only).
    """
    global _allocator_tuned
    if _allocator_tuned:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    ok = all(libc.mallopt(param, value) == 1 for param, value in
             ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _KEEP), (_M_TOP_PAD, 256 << 20)))
    _allocator_tuned = ok
    return ok


# Convolutions that train faster as separable-DFT matrix products (model.conv) on the CPU: stride-1
# kernels of 5x5 or more over 128+ input channels. Measured per layer (forward + backward, batch 128,
# docs/benchmarks.md): in bf16 on a 2-core AVX-512 machine the 5x5 convs of k5-1 and k5-3 ran 1.7-1.9x
# faster than oneDNN's direct bf16 convolution, the 7x7 convs of k7-1, k7-2 and k7-3 2.4-3.1x; in fp32
# with AVX2 kernels (bench/conv_fp32.py) the same layers ran 2.5x (5x5) and 3.1-3.4x (7x7) faster at
# 1 thread. 1-channel and 3x3 layers are slower as DFT products, so they stay direct.
DFT_MIN_KERNEL = 5
DFT_MIN_CHANNELS = 128
# In fp32 on an AVX2 CPU (AMD EPYC, 2026-12-04) at one thread per trial, the 64-channel 5x5 and 7x7 layers
# also ran 1.2-2.1x faster as DFT products wherever direct does at least twice the DFT's multiply-adds, and
# 0.95x where it does fewer (k7-1's 7x7 conv on 8x8 maps). At 2 threads they were slower (on an AVX2-capped
# Xeon), so the rule is for one thread. On a Zen 4 EPYC with native bf16 (2026-12-05), fp32 at one thread
# with its own AVX-512 kernels: 128+ channels 2.1-3.8x, these 64-channel layers 1.1-1.9x, k7-1's 0.66x.
DFT_ONE_THREAD_MIN_CHANNELS = 64
DFT_MIN_MACS_RATIO = 2.0


@dataclass(frozen=True)
class Plan:
    """How a trial computes, decided once (train.device.plan) and recorded with the trial.

    `dft` names the convolutions that run as DFT matrix products; `pool_first` max-pools before ReLU (bitwise
    the same); `uniform_dropout` draws dropout masks from uniform draws (Keras's way; other draws than torch's
    Bernoulli sampler); `cuda_graphs` and `foreach` exist so a benchmark can time the other paths (they do not
    change the arithmetic's result class).
    """

    device: str = "cpu"
    precision: str = "fp32"
    channels_last: bool = False
    threads: int = 1
    dft: tuple[str, ...] = ()
    pool_first: bool = False
    uniform_dropout: bool = False
    cuda_graphs: bool = True
    foreach: bool | None = None  # None: torch's default per device (multi-tensor on CUDA)

    def numerics(self) -> dict[str, object]:
        """What changes a trial's numbers, as study.db records it per trial."""
        return {"device": torch.device(self.device).type, "precision": self.precision, "threads": self.threads,
                "channels_last": self.channels_last, "conv_dft": list(self.dft),
                "dropout": "uniform" if self.uniform_dropout else "bernoulli"}


def _conv_inputs(model: nn.Module, input_shape: tuple[int, int, int]) -> dict[str, tuple[int, int]]:
    """(H, W) of each convolution's input, from one pass of a meta-device model (nothing allocated)."""
    sizes: dict[str, tuple[int, int]] = {}

    def record(name: str):
        def hook(_mod: nn.Module, args: tuple) -> None:
            sizes[name] = tuple(args[0].shape[-2:])
        return hook

    hooks = [mod.register_forward_pre_hook(record(name)) for name, mod in model.named_modules()
             if isinstance(mod, Conv2d)]
    h, w, c = input_shape
    with torch.no_grad():
        model.eval()(torch.empty(1, c, h, w, device="meta"))
    for hook in hooks:
        hook.remove()
    return sizes


def plan(spec: ModelSpec, input_shape: tuple[int, int, int], device: torch.device, precision: str,
         threads: int, cuda_graphs: bool = True, foreach: bool | None = None) -> Plan:
    """Everything about how `spec` trains on `device`, decided once per trial, here.

    The convolutions that measured faster as DFT matrix products are read off a model built on the meta
    device, so nothing is allocated and a resumed trial makes the same choice: stride-1 kernels of
    DFT_MIN_KERNEL or more over DFT_MIN_CHANNELS+ inputs on the CPU in bf16 and in fp32 (with or without
    native bf16); in fp32 at one thread also DFT_ONE_THREAD_MIN_CHANNELS+ inputs where the DFT saves
    DFT_MIN_MACS_RATIO of the multiply-adds. On the CPU max pooling goes before ReLU (bitwise the same,
    measured faster), and on a CPU without native bf16 dropout masks come from uniform draws (measured
    faster there): docs/benchmarks.md.
    """
    dft: list[str] = []
    cpu_without_bf16 = device.type == "cpu" and not cpu_has_native_bf16()
    if device.type == "cpu" and precision in ("bf16", "fp32"):
        with torch.device("meta"):
            model = build_model(spec, input_shape)
        convs = {name: mod for name, mod in model.named_modules()
                 if isinstance(mod, Conv2d) and mod.dft_supported() and min(mod.kernel_size) >= DFT_MIN_KERNEL}
        narrow = DFT_ONE_THREAD_MIN_CHANNELS if precision == "fp32" and threads == 1 else DFT_MIN_CHANNELS
        # A meta forward pass gives the map sizes the MACs rule needs; its first call costs seconds (torch's meta
        # kernels load), so it runs only for a model with a conv that rule decides.
        undecided = any(narrow <= mod.in_channels < DFT_MIN_CHANNELS for mod in convs.values())
        sizes = _conv_inputs(model, input_shape) if undecided else {}
        dft = [name for name, mod in convs.items() if mod.in_channels >= DFT_MIN_CHANNELS
               or (mod.in_channels >= narrow and _saves(mod.dft_macs(*sizes[name])))]
    return Plan(device=str(device), precision=precision, channels_last=default_channels_last(device),
                threads=threads, dft=tuple(dft), pool_first=device.type == "cpu", uniform_dropout=cpu_without_bf16,
                cuda_graphs=cuda_graphs, foreach=foreach)


def _saves(macs: tuple[int, int]) -> bool:
    direct, dft = macs
    return direct >= DFT_MIN_MACS_RATIO * dft


def default_channels_last(device: torch.device) -> bool:
    """NHWC activations: faster on CUDA (tensor-core kernels) and on the CPU (oneDNN's blocked convs).

    On the CPU it measured 1.1-1.5x faster in fp32 and bf16 for 11 of the 12 seed models and within
    noise for the 12th (docs/benchmarks.md).
    """
    return device.type in ("cuda", "cpu")

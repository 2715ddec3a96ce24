"""Device, precision and allocator choices of the train stage."""

import platform
import subprocess
import sys
import textwrap

import pytest
import torch

from convstudy.errors import UserError
from convstudy.train.device import cpu_has_native_bf16, resolve_device, resolve_precision

# Page faults of re-allocating and filling a 64 MiB tensor 20 times, once past a warm-up (as a training
# loop is after its first steps), with the allocator tuned or not. The project's claim is relative:
# tuned, freed memory is reused instead of faulted in again. The absolute counts are the kernel's
# (transparent huge pages in `madvise` or `always` mode fault 2 MiB at a time), so only the ratio is
# asserted; tuned, the block is now and then faulted in once more, hence a share and not zero.
FAULTS = textwrap.dedent("""
    import resource, sys, torch
    from convstudy.train.device import keep_freed_memory
    if sys.argv[1] == "tuned":
        assert keep_freed_memory()
    for _ in range(5):  # warm-up: the heap grows to its working size
        torch.empty(16 << 20).fill_(1.0)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        torch.empty(16 << 20).fill_(1.0)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the allocator setting is glibc's mallopt")
def test_tuned_allocator_reuses_freed_memory_instead_of_faulting_it_in_again():
    untuned, tuned = _faults("default"), _faults("tuned")
    assert untuned > 0
    assert tuned * 4 <= untuned, (tuned, untuned)


def test_precision_names_and_cuda_default():
    assert resolve_precision("fp32", torch.device("cpu")) == "fp32"
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"
    with pytest.raises(UserError, match="--precision fp16"):
        resolve_precision("fp16", torch.device("cpu"))
    expected = "bf16" if cpu_has_native_bf16() else "fp32"
    assert resolve_precision("auto", torch.device("cpu")) == expected


def test_device_names():
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(UserError, match="--device tpu"):
        resolve_device("tpu")

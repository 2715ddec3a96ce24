"""Per conv layer of the seed models, fp32 forward + backward: direct against the DFT conv and friends.

    nice python bench/conv_fp32.py [--threads 1,2] [--rounds 5] [--batch 128] [--cin 1] [--out FILE]

Variants, all on the same weights and channels_last inputs, interleaved in one process (direct, dft,
fft, winograd, direct, dft, ...; load from other processes hits them alike): `direct` (oneDNN's
convolution), `dft` (model.conv's separable DFT as matrix products), `fft` (torch.fft.rfft2, a complex
per-frequency bmm, irfft2) and, for 3x3 kernels over 32+ channels, `winograd` (F(2x2, 3x3) with
per-point GEMMs) and, for one input channel, `gemm` (im2col and one GEMM; measured, not in any plan). The first layer's input needs no gradient, as in training. Each figure is the median
over rounds, each ratio the median of per-round direct/variant ratios; `load` is the 1-minute load
average (uptime's) before each round. `err` is max |variant - float64| / max |float64| of a forward pass.

To see an AVX2-only CPU's kernels (oneDNN, ATen, MKL) on a newer x86 CPU, run it under
ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from convstudy.model import build_model
from convstudy.model.conv import Conv2d, _pads, dft_macs
from convstudy.spec.builtin import seed_study


def geometries() -> dict[tuple, list[str]]:
    """(cin, cout, h, w, k, pads) of every conv of the seed models, with the layers that have it."""
    found: dict[tuple, list[str]] = {}
    for spec in seed_study().models:
        net = build_model(spec, (28, 28, 1)).eval()
        for name, mod in net.named_modules():
            if isinstance(mod, Conv2d):
                def hook(mod, inp, _out, label=f"{spec.name}/{name}"):
                    key = (mod.in_channels, mod.out_channels, *inp[0].shape[2:], mod.kernel_size[0], _pads(mod))
                    found.setdefault(key, []).append(label)
                mod.register_forward_hook(hook)
        with torch.no_grad():
            net(torch.zeros(1, 1, 28, 28))
    return found


class _Copied(nn.Module):
    """A conv variant holding a copy of `conv`'s weight, bias and padding, so every variant sees the same numbers."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.weight, self.bias, self.pads = nn.Parameter(conv.weight.detach().clone()), \
            nn.Parameter(conv.bias.detach().clone()), _pads(conv)


class FFTConv(_Copied):
    """Correlation through torch.fft: rfft2 of the padded input and kernel, Y = X conj(K) per bin, irfft2."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom, left, right = self.pads
        xp = F.pad(x, (left, right, top, bottom))
        n, c, p, q = xp.shape
        co, _, kh, kw = self.weight.shape
        xs = torch.fft.rfft2(xp)
        v = xs.shape[-1]
        ks = torch.fft.rfft2(self.weight, s=(p, q))
        y = torch.bmm(xs.permute(2, 3, 0, 1).reshape(p * v, n, c), ks.conj().permute(2, 3, 1, 0).reshape(p * v, c, co))
        y = torch.fft.irfft2(y.view(p, v, n, co).permute(2, 3, 0, 1), s=(p, q))
        return y[..., :p - kh + 1, :q - kw + 1] + self.bias.view(1, -1, 1, 1)


class PatchGEMM(_Copied):
    """One input channel as im2col: (N*Ho*Wo, k*k) patches @ (k*k, Cout), read back as NHWC (one GEMM)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom, left, right = self.pads
        x = F.pad(x, (left, right, top, bottom))
        n, _, h, w = x.shape
        co, _, kh, kw = self.weight.shape
        ho, wo = h - kh + 1, w - kw + 1
        cols = x[:, 0].unfold(1, kh, 1).unfold(2, kw, 1).reshape(n * ho * wo, kh * kw)
        out = torch.addmm(self.bias, cols, self.weight.view(co, kh * kw).t())
        return out.view(n, ho, wo, co).permute(0, 3, 1, 2)


BT = torch.tensor([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=torch.float32)
G = torch.tensor([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]], dtype=torch.float32)
AT = torch.tensor([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=torch.float32)


class Winograd(_Copied):
    """F(2x2, 3x3) (Lavin & Gray 2016): 4x4 input tiles at stride 2, 16 per-point channel GEMMs, 2x2 outputs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom, left, right = self.pads
        n, c, h, w = x.shape
        ho, wo = h + top + bottom - 2, w + left + right - 2
        th, tw = (ho + 1) // 2, (wo + 1) // 2
        xp = F.pad(x, (left, 2 * tw + 2 - w - left, top, 2 * th + 2 - h - top))
        d = xp.unfold(2, 4, 2).unfold(3, 4, 2)  # (n, c, th, tw, 4, 4)
        bt = BT.to(x.dtype)
        v = torch.einsum("ai,nctwij,bj->abntwc", bt, d, bt).reshape(16, n * th * tw, c)
        u = torch.einsum("ai,ocij,bj->abco", G.to(x.dtype), self.weight, G.to(x.dtype)).reshape(16, c, -1)
        m = torch.bmm(v, u).view(4, 4, n, th, tw, -1)
        at = AT.to(x.dtype)
        y = torch.einsum("ia,abntwo,jb->notiwj", at, m, at).reshape(n, -1, 2 * th, 2 * tw)
        return y[..., :ho, :wo] + self.bias.view(1, -1, 1, 1)


def macs(variant: str, cin: int, cout: int, h: int, w: int, k: int, pads: tuple, n: int) -> int:
    """Forward multiply-adds of one batch (the transforms' matrix products included, the kernel's left out)."""
    p, q = h + pads[0] + pads[1], w + pads[2] + pads[3]
    ho, wo, nv = p - k + 1, q - k + 1, q // 2 + 1
    if variant in ("direct", "gemm"):
        return n * cin * cout * ho * wo * k * k
    if variant == "dft":
        return n * dft_macs(cin, cout, h, w, k, k, pads)[1]
    if variant == "fft":  # the complex product as 4 real multiply-adds; the FFTs' n log n left out
        return n * p * nv * cin * cout * 4
    tiles = ((ho + 1) // 2) * ((wo + 1) // 2)
    return n * tiles * 16 * cin * cout


def measure(key: tuple, labels: list[str], batch: int, threads: int, rounds: int) -> dict:
    cin, cout, h, w, k, pads = key
    torch.manual_seed(0)
    direct = Conv2d(cin, cout, k, padding=(pads[0], pads[2]) if pads[0] == pads[1] else "same")
    assert _pads(direct) == pads
    dft = Conv2d(cin, cout, k, padding=direct.padding, algorithm="dft")
    dft.load_state_dict(direct.state_dict())
    mods: dict[str, nn.Module] = {"direct": direct, "dft": dft, "fft": FFTConv(direct)}
    if k == 3 and cin >= 32:
        mods["winograd"] = Winograd(direct)
    if cin == 1:
        mods["gemm"] = PatchGEMM(direct)

    x64 = torch.randn(8, cin, h, w, dtype=torch.float64)
    exact = F.conv2d(x64, direct.weight.double(), direct.bias.double(), padding=direct.padding)
    errs = {}
    with torch.no_grad():
        for name, mod in mods.items():
            y = mod(x64.float().contiguous(memory_format=torch.channels_last)).double()
            errs[name] = float((y - exact).abs().max() / exact.abs().max())

    x = torch.randn(batch, cin, h, w).contiguous(memory_format=torch.channels_last).requires_grad_(cin > 1)
    g = torch.randn_like(direct(x)).contiguous(memory_format=torch.channels_last)

    def step(mod: nn.Module, reps: int) -> float:
        t0 = time.perf_counter()
        for _ in range(reps):
            mod.zero_grad(set_to_none=True)
            x.grad = None
            mod(x).backward(g)
        return (time.perf_counter() - t0) / reps

    torch.set_num_threads(threads)
    for mod in mods.values():  # warm-up: plans, allocator growth
        step(mod, 1)
    reps = max(1, round(0.15 / step(direct, 1)))
    times: dict[str, list[float]] = {name: [] for name in mods}
    loads = []
    for _ in range(rounds):
        loads.append(os.getloadavg()[0])
        for name, mod in mods.items():
            times[name].append(step(mod, reps))
    return {
        "cin": cin, "cout": cout, "h": h, "w": w, "kernel": k, "pads": list(pads), "layers": labels,
        "batch": batch, "threads": threads, "reps_per_round": reps, "load": loads,
        "ms": {name: round(1e3 * statistics.median(t), 3) for name, t in times.items()},
        "speedup": {name: round(statistics.median(d / v for d, v in zip(times["direct"], t)), 3)
                    for name, t in times.items() if name != "direct"},
        "macs_ratio": {name: round(macs("direct", *key, batch) / macs(name, *key, batch), 2)
                       for name in mods if name != "direct"},
        "err": {name: float(f"{e:.3g}") for name, e in errs.items()},
    }


def machine() -> dict:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    info = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
    flags = set(info.get("Flags", "").split())
    return {"cpu": info.get("Model name", platform.processor()).strip(), "cores": os.cpu_count(),
            "avx512": "avx512f" in flags, "amx": "amx_tile" in flags,
            "aten_isa": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
            "isa_cap": {v: os.environ[v] for v in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY",
                                                   "MKL_ENABLE_INSTRUCTIONS") if v in os.environ}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--min-macs", type=float, default=0.0, help="skip layers below this many GMAC per batch")
    ap.add_argument("--cin", type=int, help="only the layers with this many input channels")
    ap.add_argument("--out", default="bench/results/conv_fp32.json")
    args = ap.parse_args()
    from convstudy.train.device import keep_freed_memory

    keep_freed_memory()  # as the trainer runs
    doc = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes"),
           "machine": machine(), "command": " ".join(sys.argv), "results": []}
    print(f"{doc['machine']}")
    variants = ("dft", "fft", "winograd", "gemm")
    print(f"{'layer geometry':34} {'thr':>3} {'direct ms':>9}  " + " ".join(f"{v:>13}" for v in variants) + "  load")
    for key, labels in sorted(geometries().items(), key=lambda kv: -macs("direct", *kv[0], 1)):
        if macs("direct", *key, args.batch) < args.min_macs * 1e9 or args.cin not in (None, key[0]):
            continue
        for threads in map(int, args.threads.split(",")):
            r = measure(key, labels, args.batch, threads, args.rounds)
            doc["results"].append(r)
            cells = [f"{r['speedup'][v]:5.2f}x ({r['macs_ratio'][v]:4.1f})" if v in r["speedup"] else ""
                     for v in variants]
            geo = f"{key[0]}->{key[1]} {key[2]}x{key[3]} k{key[4]} {labels[0]}"
            print(f"{geo:34} {threads:3} {r['ms']['direct']:9.1f}  " + " ".join(f"{c:>13}" for c in cells)
                  + f"  {min(r['load']):.1f}-{max(r['load']):.1f}", flush=True)
            Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

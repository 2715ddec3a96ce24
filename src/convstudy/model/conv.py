"""A Conv2d that can compute its correlation with separable DFTs and per-frequency GEMMs.

For large kernels over many channels (the seed study's 5x5 and 7x7 convs on 128-256 channels) direct
convolution costs Cout*Cin*Ho*Wo*k*k multiply-adds per image. Transforming each input channel to its
real 2-D spectrum (a DFT along W, then along H), mixing channels there (one complex Cin x Cout
product per frequency) and transforming back costs 2-5x fewer, all as matrix products, the same
idea as cuDNN's FFT algorithms. The transforms are constant matrices, so autograd derives the
backward pass from the matmuls and the result is the same function, up to rounding, with the same
parameters and state_dict.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn


def _pads(conv: nn.Conv2d) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) zero padding of `conv`, as torch applies it."""
    kh, kw = conv.kernel_size
    if conv.padding == "valid":
        return 0, 0, 0, 0
    if conv.padding == "same":  # torch puts the odd pixel of an even kernel at the bottom/right
        return (kh - 1) // 2, kh - 1 - (kh - 1) // 2, (kw - 1) // 2, kw - 1 - (kw - 1) // 2
    ph, pw = conv.padding
    return ph, ph, pw, pw


class DFTPlan(NamedTuple):
    """The constant matrices of one layer geometry; see dft_plan for their layouts."""

    fwd_w: torch.Tensor  # (2V, w)
    fwd_h: torch.Tensor  # (2P, 2h)
    kernel: torch.Tensor  # (2 * P * V, kh * kw)
    inv_h: torch.Tensor  # (2Ho, 2P)
    inv_w: torch.Tensor  # (Wo, 2V)
    ho: int
    wo: int
    bins: int


def dft_plan(h: int, w: int, kh: int, kw: int, pads: tuple[int, int, int, int]) -> DFTPlan:
    """Float64 transforms for a stride-1 correlation of an h x w input by a kh x kw kernel.

    The circular size P x Q is the padded input, so no output we keep wraps around; spectra are full
    along H (P rows) and half along W (V = Q // 2 + 1 columns), the zero padding folded into the
    matrices. Complex values are (re, im) pairs: fwd_w maps a row of pixels to (re, im) x V; fwd_h
    maps (row, re/im) pairs to (re, im) x P; kernel gives the conjugate kernel spectrum (correlation
    theorem) as (re, im) x P x V; inv_h maps (re, im) x P back to (output row, re/im) pairs; inv_w
    maps (re, im) x V to Wo real pixels with the Hermitian weights and the 1/(P*Q) scale.
    """
    top, bottom, left, right = pads
    p, q = h + top + bottom, w + left + right
    ho, wo = p - kh + 1, q - kw + 1
    nv = q // 2 + 1
    f64 = torch.float64
    u, v = torch.arange(p, dtype=f64), torch.arange(nv, dtype=f64)

    a = 2 * math.pi * torch.outer(v, torch.arange(w, dtype=f64) + left) / q  # (V, w)
    fwd_w = torch.cat([a.cos(), -a.sin()], 0)
    a = 2 * math.pi * torch.outer(u, torch.arange(h, dtype=f64) + top) / p  # (P, h)
    c, s = a.cos(), a.sin()  # (x + iy) e^{-ia} = (xc + ys) + i(yc - xs)
    fwd_h = torch.stack([torch.stack([c, s], -1), torch.stack([-s, c], -1)], 0).reshape(2 * p, 2 * h)
    a = (2 * math.pi * (torch.outer(u, torch.arange(kh, dtype=f64)) / p)[:, None, :, None]
         + 2 * math.pi * (torch.outer(v, torch.arange(kw, dtype=f64)) / q)[None, :, None, :])
    kernel = torch.stack([a.cos(), a.sin()], 0).reshape(2 * p * nv, kh * kw)
    a = 2 * math.pi * torch.outer(torch.arange(ho, dtype=f64), u) / p  # (Ho, P)
    c, s = a.cos(), a.sin()  # (x + iy) e^{ia} = (xc - ys) + i(xs + yc)
    inv_h = torch.stack([torch.cat([c, -s], 1), torch.cat([s, c], 1)], 1).reshape(2 * ho, 2 * p)
    weight = torch.full((nv,), 2.0, dtype=f64)
    weight[0] = 1.0
    if q % 2 == 0:
        weight[-1] = 1.0
    weight = weight / (p * q)
    a = 2 * math.pi * torch.outer(torch.arange(wo, dtype=f64), v) / q  # (Wo, V)
    inv_w = torch.cat([weight * a.cos(), -weight * a.sin()], 1)
    return DFTPlan(fwd_w, fwd_h, kernel, inv_h, inv_w, ho, wo, p * nv)


def dft_macs(cin: int, cout: int, h: int, w: int, kh: int, kw: int, pads: tuple[int, int, int, int]) -> tuple[int, int]:
    """(direct, DFT) multiply-adds of a stride-1 convolution's forward on one h x w image (the DFT's
    transforms included), so the train stage can tell where the DFT product can pay (train.device.plan)."""
    top, bottom, left, right = pads
    p, q = h + top + bottom, w + left + right
    ho, wo, nv = p - kh + 1, q - kw + 1, q // 2 + 1
    direct = cin * cout * ho * wo * kh * kw
    dft = (2 * nv * w * cin * h + 2 * p * 2 * h * nv * cin + p * nv * 2 * cin * 2 * cout
           + 2 * ho * 2 * p * nv * cout + wo * 2 * nv * cout * ho)
    return direct, dft


class Conv2d(nn.Conv2d):
    """torch's Conv2d computed by `algorithm`: "direct" (torch's own) or "dft", which the train stage chooses.

    "dft" applies to stride 1, dilation 1, groups 1, zero padding; anything else runs direct.
    Export, import and prediction build models without it, so they see a plain convolution.
    """

    def __init__(self, *args, algorithm: str = "direct", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if algorithm not in ("direct", "dft"):
            raise ValueError(f"unknown convolution algorithm {algorithm!r}")
        self.algorithm = algorithm
        self._dft_cache: dict[tuple, tuple] = {}

    def dft_macs(self, h: int, w: int) -> tuple[int, int]:
        """(direct, DFT) multiply-adds of this layer's forward on one h x w image."""
        return dft_macs(self.in_channels, self.out_channels, h, w, *self.kernel_size, _pads(self))

    def dft_supported(self) -> bool:
        return (self.stride == (1, 1) and self.dilation == (1, 1) and self.groups == 1
                and self.padding_mode == "zeros")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.algorithm == "dft" and self.dft_supported() and x.dim() == 4:
            return self._dft_forward(x)
        return super().forward(x)

    def _plan(self, h: int, w: int, dtype: torch.dtype, device: torch.device) -> DFTPlan:
        key = (h, w, dtype, device)
        if key not in self._dft_cache:
            plan = dft_plan(h, w, *self.kernel_size, _pads(self))
            self._dft_cache[key] = DFTPlan(*(t.to(device, dtype) for t in plan[:5]), *plan[5:])
        return self._dft_cache[key]

    def _dft_forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        co, kk = self.out_channels, self.kernel_size[0] * self.kernel_size[1]
        kind = x.device.type
        dtype = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else x.dtype
        plan = self._plan(h, w, dtype, x.device)
        bins, ho, wo = plan.bins, plan.ho, plan.wo
        p, nv = plan.fwd_h.shape[0] // 2, plan.fwd_w.shape[0] // 2
        with torch.autocast(kind, enabled=False):
            # Rows of pixels to half spectra, then columns: (N, h, w, C) -> (N, h, re/im, V, C) -> (N, re/im, P, V, C).
            xl = x.to(dtype).permute(0, 2, 3, 1).reshape(n * h, w, c)
            a = torch.matmul(plan.fwd_w, xl)
            spec = torch.matmul(plan.fwd_h, a.view(n, 2 * h, nv * c))
            spec = spec.view(n, 2, bins, c).permute(2, 0, 1, 3).reshape(bins, n, 2 * c)
            # Per bin, [Xr | Xi] @ [[Kr, Ki], [-Ki, Kr]] = [Yr | Yi]: the complex channel mix as one real GEMM.
            k = torch.mm(plan.kernel, self.weight.to(dtype).permute(2, 3, 1, 0).reshape(kk, c * co))
            kr, ki = k.view(2, bins, c, co).unbind(0)
            k = torch.cat([torch.cat([kr, ki], 2), torch.cat([-ki, kr], 2)], 1)
            y = torch.bmm(spec, k).view(bins, n, 2, co).permute(1, 2, 0, 3).contiguous()
            # Back along H (keeping output rows only), then along W to real pixels: (N, Ho, Wo, Co).
            b = torch.matmul(plan.inv_h, y.view(n, 2 * p, nv * co))
            out = torch.matmul(plan.inv_w, b.view(n * ho, 2 * nv, co)).view(n, ho, wo, co)
            if self.bias is not None:
                out = out + self.bias.to(dtype)
        out = out.permute(0, 3, 1, 2)  # NCHW shape in channels_last memory
        return out if x.is_contiguous(memory_format=torch.channels_last) else out.contiguous()

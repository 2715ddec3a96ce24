"""A Conv2d that can compute its correlation as dense-DFT matrix products instead of direct convolution.

For large kernels over many channels (the seed study's 7x7 convs on 128-256 channels) direct
convolution costs Cout*Cin*Ho*Wo*k*k multiply-adds per image; transforming each input channel to its
real 2-D spectrum, mixing channels there (one complex Cin x Cout product per frequency) and
transforming back costs 2-4x fewer, all as large GEMMs, the same idea as cuDNN's FFT algorithms.
The transforms are dense matrices, so autograd derives the backward pass from the matmuls and the
result is the same function, up to rounding, with the same parameters and state_dict.
"""

from __future__ import annotations

import math

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


def dft_matrices(h: int, w: int, kh: int, kw: int, pads: tuple[int, int, int, int]
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, int]:
    """Float64 (Tin, Tk, Tout, Ho, Wo) for a stride-1 correlation of an h x w input by a kh x kw kernel.

    The circular size is the padded input, so no output we keep wraps around. Spectra are real 2-D
    DFTs (full along H, half along W), B = Ph * (Pw // 2 + 1) bins:
    Tin (2B, h*w): rows (bin, re/im), the zero padding folded in; Tk (2B, kh*kw): the kernel's
    conjugate spectrum (correlation theorem), rows (re/im, bin); Tout (Ho*Wo, 2B): the inverse
    real DFT with its Hermitian weights and 1/(Ph*Pw), columns (re/im, bin).
    """
    top, bottom, left, right = pads
    ph, pw = h + top + bottom, w + left + right
    ho, wo = ph - kh + 1, pw - kw + 1
    nv = pw // 2 + 1
    u = torch.arange(ph, dtype=torch.float64)
    v = torch.arange(nv, dtype=torch.float64)

    def angles(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:  # (ph, nv, len(rows), len(cols))
        return (2 * math.pi * (torch.outer(u, rows) / ph)[:, None, :, None]
                + 2 * math.pi * (torch.outer(v, cols) / pw)[None, :, None, :])

    a_in = angles(torch.arange(h, dtype=torch.float64) + top, torch.arange(w, dtype=torch.float64) + left)
    t_in = torch.stack([a_in.cos(), -a_in.sin()], 2).reshape(2 * ph * nv, h * w)
    a_k = angles(torch.arange(kh, dtype=torch.float64), torch.arange(kw, dtype=torch.float64))
    t_k = torch.stack([a_k.cos(), a_k.sin()], 0).reshape(2 * ph * nv, kh * kw)
    weight = torch.full((nv,), 2.0, dtype=torch.float64)
    weight[0] = 1.0
    if pw % 2 == 0:
        weight[-1] = 1.0
    weight = weight[None, :, None, None] / (ph * pw)
    a_out = angles(torch.arange(ho, dtype=torch.float64), torch.arange(wo, dtype=torch.float64))
    t_out = torch.stack([weight * a_out.cos(), -weight * a_out.sin()], 0).reshape(2 * ph * nv, ho * wo)
    return t_in, t_k, t_out.t().contiguous(), ho, wo


class Conv2d(nn.Conv2d):
    """torch's Conv2d plus an `algorithm` switch ("direct" or "dft") that the train stage sets.

    "dft" applies to stride 1, dilation 1, groups 1, zero padding; anything else runs direct.
    Export, import and prediction never change it, so they see a plain convolution.
    """

    algorithm: str = "direct"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._dft_cache: dict[tuple, tuple] = {}

    def dft_supported(self) -> bool:
        return (self.stride == (1, 1) and self.dilation == (1, 1) and self.groups == 1
                and self.padding_mode == "zeros")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.algorithm == "dft" and self.dft_supported() and x.dim() == 4:
            return self._dft_forward(x)
        return super().forward(x)

    def _mats(self, h: int, w: int, dtype: torch.dtype, device: torch.device) -> tuple:
        key = (h, w, dtype, device)
        if key not in self._dft_cache:
            t_in, t_k, t_out, ho, wo = dft_matrices(h, w, *self.kernel_size, _pads(self))
            self._dft_cache[key] = (t_in.to(device, dtype), t_k.to(device, dtype), t_out.to(device, dtype), ho, wo)
        return self._dft_cache[key]

    def _dft_forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        co, kk = self.out_channels, self.kernel_size[0] * self.kernel_size[1]
        kind = x.device.type
        dtype = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else x.dtype
        t_in, t_k, t_out, ho, wo = self._mats(h, w, dtype, x.device)
        bins = t_in.shape[0] // 2
        with torch.autocast(kind, enabled=False):
            # Spectra of every (image, channel): one GEMM over the pixels, laid out (bin, [re; im] x N, Cin).
            xs = x.to(dtype).permute(2, 3, 0, 1).reshape(h * w, n * c)
            spec = torch.mm(t_in, xs).view(bins, 2 * n, c)
            # The kernel's conjugate spectrum, per bin a (Cin, [re | im] x Cout) matrix.
            k = torch.mm(t_k, self.weight.to(dtype).permute(2, 3, 1, 0).reshape(kk, c * co))
            k = k.view(2, bins, c, co).permute(1, 2, 0, 3).reshape(bins, c, 2 * co)
            # Channel mixing per bin: all four real products in one batched GEMM, then complex recombination.
            prod = torch.bmm(spec, k).view(bins, 2, n, 2, co)
            re = prod[:, 0, :, 0] - prod[:, 1, :, 1]
            im = prod[:, 0, :, 1] + prod[:, 1, :, 0]
            y = torch.mm(t_out, torch.stack([re, im], 0).view(2 * bins, n * co))
            y = y.view(ho, wo, n, co).permute(2, 3, 0, 1)
            if self.bias is not None:
                y = y + self.bias.to(dtype).view(1, co, 1, 1)
        fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        return y.contiguous(memory_format=fmt)

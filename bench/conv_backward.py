"""Where a 3x3 conv's backward time goes, fp32, and whether another formulation of each half is faster.

    nice python bench/conv_backward.py [--threads 1] [--rounds 7] [--batch 128] [--cin 32 --cout 64 --size 26]

k3-1's 32->64 3x3 'valid' conv on 26x26 maps is about two thirds of its step on the AVX2 EPYC, and its
backward took 2.6x its forward where the multiply-adds say 2x. Timed, interleaved per round, on the same
channels_last tensors: `forward`; `grad_input` and `grad_weight` each alone through
aten.convolution_backward (oneDNN); `grad_input_transposed` (conv_transpose2d of the output gradient, the
forward kernel family); `grad_weight_gemm` (unfold and one GEMM). Medians over rounds, in ms, with the
max relative error against oneDNN's result. `grad_weight_padded_*`: the weight gradient as shifted GEMMs over
the zero-padded output gradient (see below). A figure, not a test: nothing here is used by a plan
(docs/benchmarks.md, "Tried and not kept").
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch
import torch.nn.functional as F


def timed(fn, reps: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return 1000 * (time.perf_counter() - start) / reps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--cin", type=int, default=32)
    ap.add_argument("--cout", type=int, default=64)
    ap.add_argument("--size", type=int, default=26)
    ap.add_argument("--k", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cl = torch.channels_last
    x = torch.randn(a.batch, a.cin, a.size, a.size).to(memory_format=cl)
    w = (torch.randn(a.cout, a.cin, a.k, a.k) * 0.05).to(memory_format=cl)
    b = torch.zeros(a.cout)
    y = F.conv2d(x, w, b)
    g = torch.randn_like(y).to(memory_format=cl)
    conv_bwd = torch.ops.aten.convolution_backward

    def backward(mask):
        return conv_bwd(g, x, w, [a.cout], [1, 1], [0, 0], [1, 1], False, [0, 0], 1, mask)

    ref_gi, ref_gw, _ = backward([True, True, False])

    def gi_transposed():
        return F.conv_transpose2d(g, w)

    def gw_gemm():
        cols = F.unfold(x, a.k)  # [N, Cin*k*k, L]
        go = g.reshape(a.batch, a.cout, -1)  # [N, Cout, L]
        return (go.transpose(0, 1).reshape(a.cout, -1) @ cols.transpose(1, 2).reshape(-1, a.cin * a.k * a.k)
                ).reshape(a.cout, a.cin, a.k, a.k)

    gh = g.permute(0, 2, 3, 1).reshape(-1, a.cout).t()  # [Cout, N*Ho*Wo], channels_last: a view
    xh = x.permute(0, 2, 3, 1)  # [N, H, W, Cin], channels_last: a view
    out = a.size - a.k + 1

    def gw_shifts():  # one GEMM per kernel offset, K = N*Ho*Wo: no im2col of the whole input
        gw = torch.empty(a.k, a.k, a.cout, a.cin)
        for i in range(a.k):
            for j in range(a.k):
                torch.mm(gh, xh[:, i:i + out, j:j + out, :].reshape(-1, a.cin), out=gw[i, j])
        return gw.permute(2, 3, 0, 1)

    # The same shifted GEMMs without copies of each shift: the output gradient zero-padded to the input's
    # H x W, so that for kernel offset (i, j) output pixel p meets input pixel p + i*W + j in the batch-flat
    # layout (rows of the padding are zeros and add nothing). `gw_padded_offsets`: one GEMM per offset on
    # plain views; `gw_padded_rows`: the k column shifts gathered once (K x k*Cin), one GEMM per kernel row
    # (tried in a plan, not kept); `gw_padded_image`: padded only along W, one batched GEMM per kernel row,
    # image by image, then summed.
    n_, h_, w_ = a.batch, a.size, a.size
    L = n_ * h_ * w_
    K = L - ((a.k - 1) * w_ + (a.k - 1))  # the padded gradient's rows past K - 1 meet no input pixel
    xf = xh.reshape(L, a.cin)
    gf = F.pad(g.permute(0, 2, 3, 1), (0, 0, 0, w_ - out, 0, h_ - out)).reshape(L, a.cout)[:K].t()

    def gw_padded_offsets():
        gw = torch.empty(a.k, a.k, a.cout, a.cin)
        for i in range(a.k):
            for j in range(a.k):
                o = i * w_ + j
                torch.mm(gf, xf[o:o + K], out=gw[i, j])
        return gw.permute(2, 3, 0, 1)

    def gw_padded_rows():
        cols = torch.cat([xf[j:L - a.k + 1 + j] for j in range(a.k)], 1)
        gw = torch.empty(a.k, a.cout, a.k * a.cin)
        for i in range(a.k):
            torch.mm(gf, cols[i * w_:i * w_ + K], out=gw[i])
        return gw.view(a.k, a.cout, a.k, a.cin).permute(1, 3, 0, 2)

    def gw_padded_image():
        kk = out * w_ - (a.k - 1)
        gfi = F.pad(g.permute(0, 2, 3, 1), (0, 0, 0, w_ - out)).reshape(n_, out * w_, a.cout)[:, :kk].transpose(1, 2)
        xi = xh.reshape(n_, h_ * w_, a.cin)
        z = torch.cat([xi[:, j:h_ * w_ - a.k + 1 + j] for j in range(a.k)], 2)
        gw = torch.empty(a.k, a.cout, a.k * a.cin)
        for i in range(a.k):
            torch.sum(torch.bmm(gfi, z[:, i * w_:i * w_ + kk]), 0, out=gw[i])
        return gw.view(a.k, a.cout, a.k, a.cin).permute(1, 3, 0, 2)

    def rel_err(fn, ref):
        return float((fn() - ref).abs().max() / ref.abs().max())

    err = {"grad_input_transposed": rel_err(gi_transposed, ref_gi)}
    for name, fn in (("grad_weight_shifts", gw_shifts), ("grad_weight_gemm", gw_gemm),
                     ("grad_weight_padded_offsets", gw_padded_offsets), ("grad_weight_padded_rows", gw_padded_rows),
                     ("grad_weight_padded_image", gw_padded_image)):
        err[name] = rel_err(fn, ref_gw)
    variants = {"forward": lambda: F.conv2d(x, w, b), "grad_input": lambda: backward([True, False, False]),
                "grad_weight": lambda: backward([False, True, False]), "both": lambda: backward([True, True, False]),
                "grad_input_transposed": gi_transposed, "grad_weight_gemm": gw_gemm, "grad_weight_shifts": gw_shifts,
                "grad_weight_padded_offsets": gw_padded_offsets, "grad_weight_padded_rows": gw_padded_rows,
                "grad_weight_padded_image": gw_padded_image}
    times: dict[str, list[float]] = {k: [] for k in variants}
    loads = []
    with torch.no_grad():
        for _ in range(a.rounds):
            loads.append(os.getloadavg()[0])
            for name, fn in variants.items():
                times[name].append(timed(fn, a.reps))
    med = {k: round(statistics.median(v), 2) for k, v in times.items()}
    macs = a.batch * a.cout * a.cin * a.k * a.k * (a.size - a.k + 1) ** 2
    print(json.dumps({"cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
                      "args": vars(a), "gflop_per_pass": round(2 * macs / 1e9, 3), "median_ms": med,
                      "gflops": {k: round(2 * macs / 1e6 / v, 1) for k, v in med.items() if k != "both"},
                      "max_rel_err": err, "load_1min": loads}, indent=1))


if __name__ == "__main__":
    main()

"""MobileNetV2's inverted residual blocks: the conv_chain kernel against the
same three layers run one by one, side by side in one run.

    python benchmarks/bench_chain.py [--threads 1,2] [--batch 1,8] [--repeat 25]
                                     [--isa baseline|avx2|avx512]

Each block (expansion 1x1 + ReLU6, depthwise 3x3 + ReLU6, projection 1x1, the
residual where the block has one) runs as a chain (_kernels._chain, weights
packed once) and as three convolutions with the algorithms a compiled plan
picks (weights prepacked alike). Figures are the best of --repeat calls, the
two taking turns; "plan runs" says whether a compiled plan runs the block as
a chain on this target (_kernels._chain.pays: with fused multiply-adds).
"""
import argparse
import time

import numpy as np

import fastcnn
from fastcnn import _kernels
from fastcnn._bench.cli import script_args

# (input channels, expanded, output, input size, stride): MobileNetV2 at 224x224
BLOCKS = [(16, 96, 24, 112, 2), (24, 144, 24, 56, 1), (24, 144, 32, 56, 2),
          (32, 192, 32, 28, 1), (32, 192, 64, 28, 2), (64, 384, 64, 14, 1),
          (96, 576, 96, 14, 1), (96, 576, 160, 14, 2), (160, 960, 160, 7, 1),
          (160, 960, 320, 7, 1)]
RELU6 = 2


def geometry(n, cin, cout, groups, size, out, kernel, stride, pad):
    return (n, cin, cout, groups, 1, size, size, 1, out, out, 1, kernel, kernel, 1, stride,
            stride, 0, pad, pad, 1, 1, 1)


def prepared(geom, w, threads):
    conv = _kernels._conv
    algorithm = conv.select(geom, True)
    shared, per_thread, _, packed_size = conv.plan(geom, algorithm, 4)
    weights = w
    if packed_size:
        weights = np.empty(packed_size, np.float32)
        conv.pack(geom, algorithm, w, weights, threads)
    ws = np.empty(shared + per_thread * threads, np.float32) if shared + per_thread else None
    return algorithm, weights, ws


def block(n, cin, cexp, cout, size, stride, threads, repeat):
    conv, chain = _kernels._conv, _kernels._chain
    l2 = conv.cache_budgets()["l2"]
    out = (size - 1) // stride + 1
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, cin, size, size)).astype(np.float32)
    we = (rng.standard_normal((cexp, cin, 1, 1)) * 0.2).astype(np.float32)
    wd = (rng.standard_normal((cexp, 1, 3, 3)) * 0.3).astype(np.float32)
    wp = (rng.standard_normal((cout, cexp, 1, 1)) * 0.1).astype(np.float32)
    be, bd, bp = (rng.standard_normal(c).astype(np.float32) for c in (cexp, cexp, cout))
    res = rng.standard_normal((n, cout, out, out)).astype(np.float32) \
        if stride == 1 and cin == cout else None
    g_e = geometry(n, cin, cexp, 1, size, size, 1, 1, 0)
    g_d = geometry(n, cexp, cexp, cexp, size, out, 3, stride, 1)
    g_p = geometry(n, cexp, cout, 1, out, out, 1, 1, 0)
    steps = [(g_e, *prepared(g_e, we, threads), be, RELU6),
             (g_d, *prepared(g_d, wd, threads), bd, RELU6),
             (g_p, *prepared(g_p, wp, threads), bp, 0)]
    e = np.empty((n, cexp, size, size), np.float32)
    d = np.empty((n, cexp, out, out), np.float32)
    y_layers = np.empty((n, cout, out, out), np.float32)
    y_chain = np.empty_like(y_layers)

    def layers():
        for (g, algorithm, weights, ws, bias, act), src, dst, r in zip(
                steps, (x, e, d), (e, d, y_layers), (None, None, res)):
            conv.forward(g, algorithm, src, weights, bias, dst, ws, act, threads, r)

    cg = (cin, size, size, cexp, cout, out, out, 3, 3, stride, stride, 1, 1, 1, 1, size, size, 1,
          1, 0)
    rows, bands, scratch, _ = chain.plan(cg, True, l2)
    packed = chain.pack(cg, we, be, wd, bd, wp, bp, l2)
    ws = np.empty(scratch * threads, np.float32)

    def fused():
        chain.forward(cg, True, x, packed, res, y_chain, ws, RELU6, RELU6, 0, threads, l2)

    layers()
    fused()
    err = float(np.abs(y_layers - y_chain).max() / max(1.0, np.abs(y_layers).max()))
    t_layers = t_chain = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        layers()
        t_layers = min(t_layers, time.perf_counter() - t0)
        t0 = time.perf_counter()
        fused()
        t_chain = min(t_chain, time.perf_counter() - t0)
    algorithms = "/".join(s[1] for s in steps)
    print(f"| {n} | {threads} | {cin}->{cexp}->{cout} @{size} s{stride} | {algorithms} | "
          f"{t_layers * 1e3:.3f} | {t_chain * 1e3:.3f} | {t_layers / t_chain:.2f}x | "
          f"{bands} x {rows} | {'chain' if chain.pays(True) else 'layers'} | "
          f"{err:.1e} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", default="1,8")
    parser.add_argument("--repeat", type=int, default=25)
    args, threads = script_args(parser)
    print(f"L2 per core: {_kernels._conv.cache_budgets()['l2'] // 1024} KiB\n")
    print("| batch | threads | block | layers' algorithms | layers ms | chain ms | chain "
          "speed-up | bands x rows | plan runs | max rel. difference |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n in (int(b) for b in args.batch.split(",")):
        for t in threads:
            with fastcnn.threads(t):
                for cin, cexp, cout, size, stride in BLOCKS:
                    block(n, cin, cexp, cout, size, stride, t, args.repeat)


if __name__ == "__main__":
    main()

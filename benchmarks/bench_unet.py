"""U-Net decoder layers and dynamic-shape ONNX models, side by side in one run.

    python benchmarks/bench_unet.py [--threads 1,2] [--repeat 10] [--isa baseline|avx2|avx512]

1. Transposed convolutions and upsampling on U-Net decoder shapes (batch 1):
   fastcnn vs PyTorch on the same threads (ratio = PyTorch ms / fastcnn ms),
   and the transposed convolutions' rate as a % of the sgemm peak measured
   in the same run (the 4x4 layer's Winograd can pass 100 %).
2. ResNet-18 exported by fastcnn with a fixed batch and with the batch (and
   image size) left open, run by fastcnn.onnx at batch 1 and 8: the open model
   should cost nothing more than the fixed one.
Each figure is the best of --repeat calls, the contenders taking turns (each
turn after a short pause, see PAUSE). --isa
caps fastcnn's kernels and PyTorch's alike.
"""
import argparse
import math
import os
import tempfile

import numpy as np

import fastcnn
import fastcnn.functional as F
from fastcnn._bench.cli import script_args
from fastcnn._bench.machine import sgemm_gflops
from fastcnn._bench.timing import best_of

# Seconds of sleep before each contender's turn: the OpenMP threads of the one
# before spin-wait for work for a while and would take cores from the next
# (seen here: 2-thread rows 30-40 % slower for whichever ran second).
PAUSE = 0.2

# (name, op, input shape, weight shape or None, keyword arguments)
LAYERS = [
    ("up-conv 1024->512 @28", "conv_transpose2d", (1, 1024, 28, 28), (1024, 512, 2, 2),
     dict(stride=2)),
    ("up-conv 512->256 @56", "conv_transpose2d", (1, 512, 56, 56), (512, 256, 2, 2),
     dict(stride=2)),
    ("up-conv 256->128 @112", "conv_transpose2d", (1, 256, 112, 112), (256, 128, 2, 2),
     dict(stride=2)),
    ("up-conv 128->64 k4 s2 p1 @64", "conv_transpose2d", (1, 128, 64, 64), (128, 64, 4, 4),
     dict(stride=2, padding=1)),
    ("up-conv 64->32 k3 s2 p1 op1 @128", "conv_transpose2d", (1, 64, 128, 128),
     (64, 32, 3, 3), dict(stride=2, padding=1, output_padding=1)),
    ("upsample nearest x2 256@56", "interpolate", (1, 256, 56, 56), None,
     dict(scale_factor=2, mode="nearest")),
    ("upsample bilinear x2 128@112", "interpolate", (1, 128, 112, 112), None,
     dict(scale_factor=2, mode="bilinear", align_corners=False)),
    ("upsample bilinear x2 ac 64@128", "interpolate", (1, 64, 128, 128), None,
     dict(scale_factor=2, mode="bilinear", align_corners=True)),
]


def layers(threads, repeat):
    import torch
    rng = np.random.default_rng(0)
    peak = {n: sgemm_gflops(n) for n in threads}
    print("sgemm peak, this run: " + ", ".join(f"{peak[n]:.0f} GFLOP/s at {n} thread(s)"
                                              for n in threads) + "\n")
    print("| layer | threads | fastcnn ms | PyTorch ms | vs PyTorch | fastcnn % sgemm peak |")
    print("|---|---|---|---|---|---|")
    for name, op, shape, wshape, kw in LAYERS:
        # a transposed convolution's multiply-adds: every input x its output taps
        flops = None if wshape is None else 2 * math.prod(shape) * math.prod(wshape[1:])
        x = rng.standard_normal(shape).astype(np.float32)
        args = [] if wshape is None else [(rng.standard_normal(wshape) * 0.05).astype(np.float32)]
        targs = [torch.from_numpy(a) for a in args]
        tx = torch.from_numpy(x)
        fn, tfn = getattr(F, op), getattr(torch.nn.functional, op)
        for n in threads:
            torch.set_num_threads(n)
            ours = theirs = float("inf")
            for _ in range(2):                      # turns, so a busy moment hits both
                with fastcnn.threads(n):
                    ours = min(ours, best_of(lambda: fn(x, *args, **kw), repeat, PAUSE))
                with torch.no_grad():
                    theirs = min(theirs, best_of(lambda: tfn(tx, *targs, **kw), repeat, PAUSE))
            rate = "" if flops is None else f"{100 * flops / ours / 1e9 / peak[n]:.0f} %"
            print(f"| {name} | {n} | {ours * 1e3:.2f} | {theirs * 1e3:.2f} | "
                  f"{theirs / ours:.2f}x | {rate} |")


def dynamic(threads, repeat):
    from fastcnn import onnx as fonnx
    model = fastcnn.models.resnet18().eval()
    rng = np.random.default_rng(0)
    print("\n| ResNet-18 ONNX | batch | threads | fixed ms | open batch ms | open / fixed |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for batch in (1, 8):
            fixed, open_ = os.path.join(tmp, "fixed.onnx"), os.path.join(tmp, "open.onnx")
            fonnx.export(model, (batch, 3, 224, 224), fixed, dynamic_batch=False)
            fonnx.export(model, (1, 3, 224, 224), open_, dynamic_batch=True)
            a, b = fonnx.load(fixed), fonnx.load(open_)
            x = rng.standard_normal((batch, 3, 224, 224)).astype(np.float32)
            for n in threads:
                ta = tb = float("inf")
                with fastcnn.threads(n):
                    for _ in range(3):
                        tb = min(tb, best_of(lambda: b(x), repeat))
                        ta = min(ta, best_of(lambda: a(x), repeat))
                print(f"| | {batch} | {n} | {ta * 1e3:.1f} | {tb * 1e3:.1f} | {tb / ta:.3f} |")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=10)
    args, threads = script_args(p)
    layers(threads, args.repeat)
    dynamic(threads, args.repeat)


if __name__ == "__main__":
    main()

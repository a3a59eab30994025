"""Training speed: fastcnn and PyTorch side by side in one run.

    python benchmarks/bench_train.py [--threads 1,2] [--repeat 5] [--skip-layers]
                                     [--isa baseline|avx2|avx512]

1. One training step (forward, cross-entropy, backward, SGD with momentum and
   weight decay) of LeNet-5 at batch 64 (3x32x32) and ResNet-18 at batch 8
   (3x224x224), same weights, same threads; ratio = PyTorch ms / fastcnn ms.
   PyTorch's input does not require a gradient, so fastcnn is asked for none
   either (model.backward(g, input_grad=False)).
2. The backward of each distinct ResNet-18 convolution (batch 8): fastcnn's
   grad input + grad weight against PyTorch's autograd backward of the same
   conv, with the % of this machine's sgemm peak (measured in the same run)
   that fastcnn's pair reaches (2 x the forward's multiply-adds, x 2 flops).
Each figure is the best of --repeat, the contenders taking turns. --isa caps
fastcnn's kernels and PyTorch's (ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA) alike.
"""
import argparse

import numpy as np

import fastcnn
from fastcnn import models, nn, optim
import fastcnn.grad as G
from fastcnn._bench.cli import script_args
from fastcnn._bench.timing import best_of
from fastcnn._bench.machine import sgemm_gflops
from fastcnn._bench.torch_nets import torch_twin

NETS = [("lenet5", models.lenet5, 64, (3, 32, 32), 10),
        ("resnet18", models.resnet18, 8, (3, 224, 224), 1000)]

# ResNet-18's distinct convolutions at batch 8: (name, cin, cout, k, stride, pad, size)
CONVS = [("conv1 7x7/2", 3, 64, 7, 2, 3, 224), ("layer1 3x3", 64, 64, 3, 1, 1, 56),
         ("layer2 3x3/2", 64, 128, 3, 2, 1, 56), ("layer2 3x3", 128, 128, 3, 1, 1, 28),
         ("layer2 1x1/2", 64, 128, 1, 2, 0, 56), ("layer3 3x3/2", 128, 256, 3, 2, 1, 28),
         ("layer3 3x3", 256, 256, 3, 1, 1, 14), ("layer4 3x3/2", 256, 512, 3, 2, 1, 14),
         ("layer4 3x3", 512, 512, 3, 1, 1, 7)]


def steps(threads, repeat):
    import torch
    rng = np.random.default_rng(0)
    print("| network | batch | threads | fastcnn ms | PyTorch ms | vs PyTorch |")
    print("|---|---|---|---|---|---|")
    for name, ctor, batch, shape, classes in NETS:
        model = ctor()
        twin = torch_twin(name, model)
        model.train()
        twin.train()
        opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
        topt = torch.optim.SGD(twin.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
        criterion = nn.CrossEntropyLoss()
        x = rng.standard_normal((batch,) + shape).astype(np.float32)
        y = rng.integers(0, classes, batch)
        tx, ty = torch.from_numpy(x), torch.from_numpy(y)

        def ours():
            opt.zero_grad()
            criterion(model(x), y)
            model.backward(criterion.backward(), input_grad=False)
            opt.step()

        def theirs():
            topt.zero_grad()
            torch.nn.functional.cross_entropy(twin(tx), ty).backward()
            topt.step()

        for n in threads:
            torch.set_num_threads(n)
            a = b = float("inf")
            for _ in range(2):
                with fastcnn.threads(n):
                    a = min(a, best_of(ours, repeat))
                b = min(b, best_of(theirs, repeat))
            print(f"| {name} | {batch} | {n} | {a * 1e3:.1f} | {b * 1e3:.1f} | {b / a:.2f}x |")


def conv_layers(threads, repeat, batch=8):
    import torch
    rng = np.random.default_rng(0)
    print("\n| ResNet-18 conv backward (batch 8) | threads | fastcnn ms | PyTorch ms | "
          "vs PyTorch | fastcnn % sgemm peak |")
    print("|---|---|---|---|---|---|")
    for n in threads:
        peak = sgemm_gflops(n)
        torch.set_num_threads(n)
        for name, cin, cout, k, s, p, size in CONVS:
            x = rng.standard_normal((batch, cin, size, size)).astype(np.float32)
            w = (rng.standard_normal((cout, cin, k, k)) * 0.05).astype(np.float32)
            out = (size + 2 * p - k) // s + 1
            gy = rng.standard_normal((batch, cout, out, out)).astype(np.float32)
            tx = torch.from_numpy(x).requires_grad_()
            tw = torch.from_numpy(w).requires_grad_()
            tgy = torch.from_numpy(gy)

            def ours():
                G.conv2d_input(x.shape, w, gy, s, p)
                G.conv2d_weight(x, w.shape, gy, s, p)

            def theirs():
                y = torch.nn.functional.conv2d(tx, tw, None, s, p)
                torch.autograd.grad(y, (tx, tw), tgy)

            def theirs_forward():
                with torch.no_grad():
                    torch.nn.functional.conv2d(tx, tw, None, s, p)

            a = b = f = float("inf")
            for _ in range(2):
                with fastcnn.threads(n):
                    a = min(a, best_of(ours, repeat))
                b = min(b, best_of(theirs, repeat))
                f = min(f, best_of(theirs_forward, repeat))
            b -= f                        # PyTorch's backward alone
            flops = 2 * 2 * batch * cout * cin * k * k * out * out
            print(f"| {name} {cin}->{cout} @{size} | {n} | {a * 1e3:.2f} | {b * 1e3:.2f} | "
                  f"{b / a:.2f}x | {100 * flops / a / 1e9 / peak:.0f} % |")
        print(f"| (sgemm peak, {n} thread(s)) | {n} | | | | {peak:.0f} GFLOP/s |")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--skip-layers", action="store_true")
    args, threads = script_args(p)
    steps(threads, args.repeat)
    if not args.skip_layers:
        conv_layers(threads, args.repeat)


if __name__ == "__main__":
    main()

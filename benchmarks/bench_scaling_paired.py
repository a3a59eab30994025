"""Batch-1 scaling from 1 to 2 threads against sgemm's own, in paired rounds.

    python benchmarks/bench_scaling_paired.py [--nets resnet18,mobilenet_v2] [--batch 1]
                                              [--rounds 20] [--calls 10]
                                              [--isa baseline|avx2|avx512]

The target compares a network's speed-up from 1 to 2 threads with sgemm's
speed-up measured in the same run. Both are ratios of timings, and a ratio of
two ratios taken minutes apart on a shared machine moves by 10-20 %. Here
each round times, back to back, sgemm (2048^3) on 1 and on 2 threads and each
network's compiled plan on 1 and on 2 threads (each the best of --calls
calls; the order reversed every other round), and takes the round's
efficiency: the network's speed-up over sgemm's. The table gives the median
of the rounds' efficiencies and its quartiles, and the figure from each one's
best times over all rounds.
"""
import argparse

import numpy as np

import fastcnn
from fastcnn._bench.cli import script_args
from fastcnn._bench.machine import sgemm_gflops
from fastcnn._bench.nets import contenders
from fastcnn._bench.timing import best_of


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", default="resnet18,mobilenet_v2")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--calls", type=int, default=10)
    args, threads = script_args(parser)
    if len(threads) != 2 or threads[0] >= threads[1]:
        parser.error("--threads takes two counts, fewer first (default 1,2)")
    if args.rounds < 1 or args.calls < 1:
        parser.error("--rounds and --calls must be at least 1")
    nets = [n.strip() for n in args.nets.split(",") if n.strip()]
    plans = {name: contenders(name, args.batch, rivals=(), eager=False,
                              onnx_load=False)[1]["fastcnn"] for name in nets}
    lo, hi = threads
    times = {key: [] for key in [("sgemm", t) for t in threads]
             + [(n, t) for n in nets for t in threads]}
    for r in range(args.rounds):
        order = threads if r % 2 == 0 else threads[::-1]
        for t in order:
            times["sgemm", t].append(1 / sgemm_gflops(t, repeat=3))
            with fastcnn.threads(t):
                for name in nets:
                    times[name, t].append(best_of(plans[name], args.calls))
    sgemm = [a / b for a, b in zip(times["sgemm", lo], times["sgemm", hi])]
    sgemm_best = min(times["sgemm", lo]) / min(times["sgemm", hi])
    print(f"batch {args.batch}, threads {lo} -> {hi}, {args.rounds} rounds; sgemm speed-up: "
          f"median {np.median(sgemm):.3f}, from best times {sgemm_best:.3f}\n")
    print(f"| network | {lo} thread ms | {hi} threads ms | speed-up | efficiency against "
          f"sgemm: median of rounds | quartiles | from best times |")
    print("|---|---|---|---|---|---|---|")
    for name in nets:
        speedup = [a / b for a, b in zip(times[name, lo], times[name, hi])]
        eff = [s / g for s, g in zip(speedup, sgemm)]
        q1, med, q3 = np.percentile(eff, [25, 50, 75])
        best_lo, best_hi = min(times[name, lo]), min(times[name, hi])
        print(f"| {name} | {best_lo * 1e3:.3g} | {best_hi * 1e3:.3g} | "
              f"{np.median(speedup):.3f} | {100 * med:.1f} % | {100 * q1:.1f}-{100 * q3:.1f} % | "
              f"{100 * best_lo / best_hi / sgemm_best:.1f} % |", flush=True)


if __name__ == "__main__":
    main()

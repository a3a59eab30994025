"""fastcnn.onnx.load against the compiled plan of the same model, in paired
rounds: how far apart the two are, measured closely enough to tell.

    python benchmarks/bench_onnx_load.py [--threads 1,2] [--rounds 24] [--calls 5]
                                         [--isa baseline|avx2|avx512]

Each reference network is compiled (fastcnn.compile) and exported to ONNX and
loaded back (fastcnn.onnx.load), on the same weights and input, as in the nets
suite. Timings taken seconds apart on a shared machine move by 5-10 %, more
than the difference asked about, so the two take turns within each round (the
plan, then the loaded model twice, then the plan: ABBA, which cancels a drift
within the round), each turn the best of --calls calls after one untimed. A round's ratio is
the loaded model's best time over the plan's; the table gives the median of
the rounds' ratios and its quartiles, and each one's best time overall.
"""
import argparse

import numpy as np

import fastcnn
from fastcnn._bench.cli import script_args
from fastcnn._bench.nets import contenders
from fastcnn._bench.onnx_models import ROWS
from fastcnn._bench.timing import best_of


def paired(plan, loaded, rounds, calls):
    """Per-round ratios (loaded / plan) and each one's best time (seconds)."""
    ratios, best_plan, best_loaded = [], float("inf"), float("inf")
    for _ in range(rounds):
        a1 = best_of(plan, calls)
        b1 = best_of(loaded, calls)
        b2 = best_of(loaded, calls)
        a2 = best_of(plan, calls)
        ratios.append(min(b1, b2) / min(a1, a2))
        best_plan = min(best_plan, a1, a2)
        best_loaded = min(best_loaded, b1, b2)
    return ratios, best_plan, best_loaded


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=24)
    parser.add_argument("--calls", type=int, default=5)
    args, threads = script_args(parser)
    if args.rounds < 1 or args.calls < 1:
        parser.error("--rounds and --calls must be at least 1")
    print(f"{args.rounds} rounds of plan, onnx.load, onnx.load, plan; each turn the best "
          f"of {args.calls} calls\n")
    print("| network | batch | threads | plan ms | onnx.load ms | onnx.load / plan: median "
          "of rounds | quartiles |")
    print("|---|---|---|---|---|---|---|")
    worst = 0.0
    for name, batches in ROWS:
        for b in batches:
            _, fns = contenders(name, b, rivals=(), eager=False)
            if "onnx_load" not in fns:
                raise SystemExit("bench_onnx_load: needs the onnx package (pip install onnx)")
            for t in threads:
                with fastcnn.threads(t):
                    ratios, tp, tl = paired(fns["fastcnn"], fns["onnx_load"], args.rounds,
                                            args.calls)
                q1, med, q3 = np.percentile(ratios, [25, 50, 75])
                worst = max(worst, abs(med - 1))
                print(f"| {name} | {b} | {t} | {tp * 1e3:.3g} | {tl * 1e3:.3g} | {med:.3f} | "
                      f"{q1:.3f}-{q3:.3f} |", flush=True)
    print(f"\nlargest distance of a median from 1: {100 * worst:.1f} %")


if __name__ == "__main__":
    main()

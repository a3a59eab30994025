"""Convolution layers under each ISA target of this install, side by side, and
optionally against another fastcnn install (for example a machine-local
FASTCNN_MARCH=native build of an earlier commit).

    python benchmarks/bench_isa.py --targets avx2,baseline --threads 1,2
    python benchmarks/bench_isa.py --targets avx2 --against /path/to/other/venv/bin/python

Each contender runs in a process of its own (FASTCNN_MAX_ISA set for it); the
rounds alternate between contenders, and each figure is the best over rounds of
the best of --repeat calls, so a busy moment on a shared machine hits every
contender alike. Shapes: the conv suite's ResNet-18 and MobileNetV2 layers.
"""
import argparse
import json
import os
import subprocess
import sys

WORKER = r"""
import json, sys, time
import numpy as np
import fastcnn, fastcnn.functional as F
from fastcnn._bench.conv import RESNET18, MOBILENET_V2
threads, batch, repeat = json.loads(sys.argv[1])
out = {"isa": getattr(fastcnn, "get_isa", lambda: "unknown")(), "rows": {}}
for name, group, cin, cout, hw, k, s, p, g in RESNET18 + MOBILENET_V2:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, cin, hw, hw)).astype(np.float32)
    w = (rng.standard_normal((cout, cin // g, k, k)) * 0.1).astype(np.float32)
    for n in threads:
        with fastcnn.threads(n):
            y = F.conv2d(x, w, None, s, p, 1, g)
            F.conv2d(x, w, None, s, p, 1, g, out=y)
            best = float("inf")
            for _ in range(repeat):
                t = time.perf_counter()
                F.conv2d(x, w, None, s, p, 1, g, out=y)
                best = min(best, time.perf_counter() - t)
        out["rows"][f"{name}|{n}"] = best
print(json.dumps(out))
"""


def run(python, target, threads, batch, repeat):
    env = dict(os.environ)
    if target:
        env["FASTCNN_MAX_ISA"] = target
    done = subprocess.run([python, "-c", WORKER, json.dumps([threads, batch, repeat])],
                          capture_output=True, text=True, env=env, cwd=os.path.expanduser("~"))
    if done.returncode:
        sys.exit(f"bench_isa: {python} ({target or 'default'}) failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--targets", default="avx2,baseline")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--against", metavar="PYTHON",
                   help="another interpreter whose fastcnn runs as a further contender")
    args = p.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    contenders = [(sys.executable, t, t) for t in args.targets.split(",")]
    if args.against:
        contenders.append((args.against, None, "other build"))
    best = {}
    for _ in range(args.rounds):
        for python, target, label in contenders:
            result = run(python, target, threads, args.batch, args.repeat)
            label = f"{label} ({result['isa']})"
            for key, t in result["rows"].items():
                best.setdefault(label, {})[key] = min(t, best.get(label, {}).get(key, t))
    labels = list(best)
    from fastcnn._config import cpu_name
    print(f"CPU: {cpu_name()}; batch {args.batch}; best of {args.rounds} rounds x "
          f"{args.repeat} calls; ratio = {labels[0]} speed relative to each other contender\n")
    print("| layer | threads | " + " | ".join(f"{lb} ms" for lb in labels) + " | "
          + " | ".join(f"vs {lb}" for lb in labels[1:]) + " |")
    print("|---" * (2 + 2 * len(labels) - 1) + "|")
    for key in best[labels[0]]:
        name, n = key.split("|")
        times = [best[lb][key] * 1e3 for lb in labels]
        print(f"| {name} | {n} | " + " | ".join(f"{t:.3f}" for t in times) + " | "
              + " | ".join(f"{t / times[0]:.2f}x" for t in times[1:]) + " |")


if __name__ == "__main__":
    main()

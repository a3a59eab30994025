"""The latency suite: per-call latency at batch 1 (the median and the 99th
percentile of single calls, contenders taking turns) of the compiled plan, the
same network through fastcnn.onnx.load and the rivals; and the plan's memory:
its buffers and workspaces, its packed weights, and what one call allocates
(tracemalloc's peak over the call: NumPy reports its arrays to it)."""
import math
import tracemalloc

import numpy as np

from fastcnn._bench.nets import contenders
from fastcnn._bench.report import names_with
from fastcnn._bench.rivals import same_threads
from fastcnn._bench.timing import samples

NETS = ("resnet18", "mobilenet_v2")
QUICK = ("lenet5",)
CALLS = 300                  # single calls per contender and thread count


def call_allocation(fn):
    """Bytes allocated at the peak of one call of fn (after a warm-up call)."""
    fn()
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def measure(name, nthreads, rivals, repeat, quick=False):
    """One row: p50/p99 per contender (ms) and the plan's memory (bytes)."""
    plan, fns = contenders(name, 1, rivals, eager=False)
    rounds = max(1, repeat)
    calls = 20 if quick else math.ceil(CALLS / rounds)
    times = samples(fns, calls, rounds)
    row = {"suite": "latency", "case": name, "group": "latency", "batch": 1,
           "threads": nthreads, "calls": calls * rounds,
           "plan_buffer_bytes": plan.nbytes, "plan_weight_bytes": plan.weight_nbytes,
           "call_alloc_bytes": call_allocation(fns["fastcnn"])}
    for contender, t in times.items():
        row[f"{contender}_p50_ms"] = float(np.percentile(t, 50)) * 1e3
        row[f"{contender}_p99_ms"] = float(np.percentile(t, 99)) * 1e3
    return row


def run(threads, rivals, repeat, quick=False):
    rows = []
    for nthreads in threads:
        for name in (QUICK if quick else NETS):
            with same_threads(nthreads, rivals):
                rows.append(measure(name, nthreads, rivals, repeat, quick))
    return rows


def table(rows):
    names = names_with(rows, "_p50_ms")
    head = ["net", "batch", "threads", "calls"] + [f"{n} p50 / p99 ms" for n in names] + \
        ["plan buffers + workspaces MB", "packed weights MB", "allocated per call KB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["case"], row["batch"], row["threads"], row["calls"]]
        for n in names:
            cells.append(f"{row[n + '_p50_ms']:.3f} / {row[n + '_p99_ms']:.3f}"
                         if f"{n}_p50_ms" in row else "-")
        cells += [f"{row['plan_buffer_bytes'] / 1e6:.1f}", f"{row['plan_weight_bytes'] / 1e6:.1f}",
                  f"{row['call_alloc_bytes'] / 1e3:.1f}"]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)

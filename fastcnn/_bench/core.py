"""Suites, cases and the runner that measures them side by side."""
import sys
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from fastcnn._bench import machine
from fastcnn._bench.rivals import same_threads
from fastcnn._bench.timing import compare


@dataclass
class Case:
    """One benchmark row family: make(batch, dtype, rivals) -> {contender: fn}.

    Compute-bound cases give flops(batch); memory-bound ones give
    traffic(batch) = (bytes that must be read, bytes that must be written).
    effective(batch) is True where fastcnn does fewer operations than flops
    counts (Winograd), so its rate is an effective one and may pass the peak."""
    name: str
    group: str
    make: Callable
    shape: str = ""
    flops: Optional[Callable] = None
    traffic: Optional[Callable] = None
    effective: Optional[Callable] = None
    batches: Optional[tuple] = None      # None: every --batch value


class Progress:
    """A one-line progress bar on stderr, only when stderr is a terminal."""

    def __init__(self, total, label):
        self.total, self.done, self.label = total, 0, label
        self.enabled = sys.stderr.isatty() and total > 0

    def step(self, what):
        self.done += 1
        if self.enabled:
            width = 30
            filled = int(width * self.done / self.total)
            sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] "
                             f"{self.done}/{self.total} {what[:40]:40s}")
            sys.stderr.flush()

    def close(self):
        if self.enabled:
            sys.stderr.write("\r" + " " * 100 + "\r")
            sys.stderr.flush()


def run_cases(suite, cases, threads, batches, dtype, rivals, limits, repeat, min_time):
    """Measure every case x batch x thread count; return a list of row dicts."""
    rows = []
    plan = [(c, b, t) for t in threads for c in cases for b in (c.batches or batches)]
    progress = Progress(len(plan), suite)
    for case, batch, nthreads in plan:
        progress.step(case.name)
        with same_threads(nthreads, rivals):
            fns = case.make(batch, dtype, rivals)
            timings, other = _timed(fns, repeat, min_time)
        row = {"suite": suite, "case": case.name, "group": case.group, "shape": case.shape,
               "batch": batch, "threads": nthreads, "dtype": np.dtype(dtype).name,
               "other_load_cores": other}
        for name, t in timings.items():
            row[f"{name}_best_ms"] = t.best * 1e3
            row[f"{name}_median_ms"] = t.median * 1e3
            row[f"{name}_max_ms"] = t.worst * 1e3
        best = timings["fastcnn"].best
        limit = limits.get(nthreads, {})
        if case.flops is not None:
            row["gflops"] = case.flops(batch) / best / 1e9
            if "sgemm_gflops" in limit:
                row["pct_peak"] = 100 * row["gflops"] / limit["sgemm_gflops"]
            row["effective_rate"] = bool(case.effective and case.effective(batch))
        if case.traffic is not None:
            read, written = case.traffic(batch)
            row["gbs"] = (read + written) / best / 1e9
            if "read_gbs" in limit:
                row["pct_peak"] = 100 * machine.traffic_limit_seconds(limit, read, written) / best
        for name in timings:
            if name != "fastcnn":
                row[f"ratio_{name}"] = timings[name].best / best
        rows.append(row)
    progress.close()
    return rows


def _timed(fns, repeat, min_time):
    """Timings of the contenders, and the cores other processes used meanwhile;
    measured again (keeping the quietest run) while that load was high."""
    best = None
    for _ in range(1 + machine.RETRIES):
        with machine.OtherLoad() as load:
            timings = compare(fns, repeat=repeat, min_time=min_time)
        if best is None or (load.cores is not None and load.cores < best[1]):
            best = (timings, load.cores)
        if load.cores is None or load.cores < machine.BUSY_CORES:
            break
    return best


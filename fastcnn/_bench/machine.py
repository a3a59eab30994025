"""This machine's limits, measured in the same run as the benchmarks, and the
load other processes put on it while a benchmark runs."""
import os
import time

import numpy as np
from threadpoolctl import threadpool_limits

from fastcnn._bench.timing import compare

# The tensor the memory-bound suites stream (float32), and its batch with --quick.
SHAPE = (8, 64, 112, 112)
QUICK_BATCH = 2


def tensor_bytes(quick=False):
    """Bytes of the float32 tensor the memory-bound suites stream."""
    return (QUICK_BATCH if quick else SHAPE[0]) * int(np.prod(SHAPE[1:])) * 4


# Extra rounds for a measurement taken while other processes were busy, or a
# limit lower with more threads than with fewer (impossible on an idle machine:
# the extra thread could idle).
RETRIES = 2
# Other processes using this many cores make a measurement "taken under load".
BUSY_CORES = 0.25


def sgemm_gflops(threads, n=2048, repeat=5):
    """OpenBLAS sgemm GFLOP/s on n x n matrices (SciPy's BLAS, the one fastcnn uses)."""
    from scipy.linalg.blas import sgemm
    a = np.asfortranarray(np.random.default_rng(0).random((n, n), np.float32))
    with threadpool_limits(threads, user_api="blas"):
        t = compare({"sgemm": lambda: sgemm(1.0, a, a)}, repeat=repeat, min_time=0.2)["sgemm"]
    return 2 * n ** 3 / t.best / 1e9


def read_gbs(threads, nbytes, repeat=5):
    """Bytes read per second over an nbytes buffer, `threads` parts read at once."""
    from fastcnn._kernels import _omp
    buf = np.zeros(nbytes, np.uint8)
    t = compare({"read": lambda: _omp.parallel_read(buf, threads)}, repeat=repeat,
                min_time=0.2)["read"]
    return nbytes / t.best / 1e9


def write_gbs(threads, nbytes, repeat=5):
    """Bytes written per second over an nbytes buffer, `threads` parts written at once."""
    from fastcnn._kernels import _omp
    buf = np.ones(nbytes, np.uint8)
    t = compare({"write": lambda: _omp.parallel_write(buf, threads)}, repeat=repeat,
                min_time=0.2)["write"]
    return nbytes / t.best / 1e9


_PROBES = {"sgemm_gflops": sgemm_gflops, "read_gbs": read_gbs, "write_gbs": write_gbs}


def limits(thread_counts, quick=False):
    """{threads: {"sgemm_gflops", "read_gbs", "write_gbs", "sgemm_n", "nbytes",
    "floored": [limits raised to a fewer-thread measurement],
    "loaded": [limits measured while other processes used BUSY_CORES or more]}}.

    Each is the best of several measurements. One taken while other processes
    were busy, or lower with more threads than with fewer (impossible on an
    idle machine), is measured again; a limit still lower is raised to the
    fewer-thread value (a lower bound of the true limit) and listed under
    "floored", one still measured under load under "loaded". Read and write
    are measured on a buffer the size of the memory-bound suites' tensor, so
    both see the same caches."""
    n = 1024 if quick else 2048
    repeat = 3 if quick else 5
    nbytes = tensor_bytes(quick)
    out = {}
    for t in sorted(thread_counts):
        lim = {"sgemm_n": n, "nbytes": nbytes, "floored": [], "loaded": []}
        for key, probe in _PROBES.items():
            args = (t, n, repeat) if key == "sgemm_gflops" else (t, nbytes, repeat)
            fewer = max((out[f][key] for f in out), default=0.0)
            value, busy = 0.0, True
            for _ in range(1 + RETRIES):
                with OtherLoad() as load:
                    value = max(value, probe(*args))
                busy = load.cores is not None and load.cores >= BUSY_CORES
                if value >= fewer and not busy:
                    break
            if value < fewer:
                value = fewer
                lim["floored"].append(key)
            elif busy:
                lim["loaded"].append(key)
            lim[key] = value
        out[t] = lim
    return out


def traffic_limit_seconds(limit, bytes_read, bytes_written):
    """The least time an op that reads and writes these bytes can take: it can
    read no faster than the read limit and write no faster than the write limit."""
    return max(bytes_read / (limit["read_gbs"] * 1e9), bytes_written / (limit["write_gbs"] * 1e9))


class OtherLoad:
    """CPU time other processes used while the block ran, in cores (Linux
    /proc/stat; None elsewhere): `with OtherLoad() as load: ...; load.cores`."""

    def __enter__(self):
        self.cores = None
        self._start = _busy_seconds(), _own_seconds(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        busy0, own0, t0 = self._start
        busy1 = _busy_seconds()
        if busy0 is not None and busy1 is not None:
            wall = time.perf_counter() - t0
            self.cores = max(0.0, (busy1 - busy0) - (_own_seconds() - own0)) / max(wall, 1e-9)
        return False


def _busy_seconds():
    """Non-idle CPU seconds of the whole machine since boot, or None."""
    try:
        with open("/proc/stat") as fh:
            fields = fh.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    # user nice system idle iowait irq softirq steal (guest time is inside user)
    values = [int(v) for v in fields[1:9]]
    busy = values[0] + values[1] + values[2] + values[5] + values[6] + values[7]
    return busy / os.sysconf("SC_CLK_TCK")


def _own_seconds():
    t = os.times()
    return t.user + t.system

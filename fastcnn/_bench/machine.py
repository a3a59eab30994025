"""This machine's limits, measured in the same run as the benchmarks."""
import numpy as np
from threadpoolctl import threadpool_limits

from fastcnn._bench.timing import compare


def sgemm_gflops(threads, n=2048, repeat=5):
    """OpenBLAS sgemm GFLOP/s on n x n matrices (SciPy's BLAS, the one fastcnn uses)."""
    from scipy.linalg.blas import sgemm
    a = np.asfortranarray(np.random.default_rng(0).random((n, n), np.float32))
    with threadpool_limits(threads, user_api="blas"):
        t = compare({"sgemm": lambda: sgemm(1.0, a, a)}, repeat=repeat, min_time=0.2)["sgemm"]
    return 2 * n ** 3 / t.best / 1e9


def copy_gbs(threads, nbytes=256 * 2**20, repeat=5):
    """Copy bandwidth (bytes read + written per second) of an nbytes buffer,
    with `threads` threads, one contiguous memcpy per thread (the best case)."""
    from fastcnn._kernels import _omp
    n = nbytes // 4
    src = np.ones(n, np.float32)
    dst = np.empty_like(src)
    t = compare({"copy": lambda: _omp.parallel_copy(dst, src, threads)}, repeat=repeat,
                min_time=0.2)["copy"]
    return 2 * src.nbytes / t.best / 1e9


# The memory-bound benchmarks stream an 8x64x112x112 float32 tensor (25.7 MB
# in, up to as much out); the copy limit they are judged by moves the same size.
LAYER_TENSOR_BYTES = 8 * 64 * 112 * 112 * 4


def limits(thread_counts, quick=False):
    """{threads: {"sgemm_gflops", "copy_gbs" (layer-tensor size), "copy_dram_gbs"
    (256 MiB)}} for each thread count."""
    n = 1024 if quick else 2048
    repeat = 3 if quick else 5
    out = {}
    big = (64 if quick else 256) * 2**20
    for t in thread_counts:
        out[t] = {"sgemm_gflops": sgemm_gflops(t, n, repeat), "sgemm_n": n,
                  "copy_gbs": copy_gbs(t, LAYER_TENSOR_BYTES, repeat),
                  "copy_bytes": LAYER_TENSOR_BYTES,
                  "copy_dram_gbs": copy_gbs(t, big, repeat), "copy_dram_bytes": big}
    return out

"""The one thread-count resolver.

Precedence: a `with fastcnn.threads(n):` block in the calling Python thread,
then `fastcnn.set_num_threads(n)`, then OpenMP's own setting for the calling
thread (OMP_NUM_THREADS, or threadpoolctl's openmp limit, which calls
omp_set_num_threads on fastcnn's OpenMP runtime).
"""
import contextlib
import operator
import threading

from fastcnn._kernels import _omp

_local = threading.local()


def _check(n, what):
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"{what}: expected a positive int, got {type(n).__name__}") from None
    if n < 1:
        raise ValueError(f"{what}: expected a positive number of threads, got {n}")
    return n


def set_num_threads(n):
    """Use n threads in every fastcnn kernel (all Python threads), like
    torch.set_num_threads. `set_num_threads(None)` returns to OpenMP's default."""
    # kept in the kernels, where the C-API's fcnn_set_num_threads sets it too
    _omp.set_threads_setting_py(0 if n is None else _check(n, "set_num_threads"))


def get_num_threads():
    """The number of threads the next kernel called from this thread will use."""
    n = getattr(_local, "threads", None)
    if n is not None:
        return n
    return _omp.get_threads_setting() or _omp.max_threads()


@contextlib.contextmanager
def threads(n):
    """Run the block's fastcnn calls with n threads; other Python threads are
    not affected, and the previous setting returns on exit."""
    n = _check(n, "threads")
    previous = getattr(_local, "threads", None)
    _local.threads = n
    try:
        yield
    finally:
        _local.threads = previous

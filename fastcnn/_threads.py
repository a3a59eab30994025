"""The one thread-count resolver.

Precedence: a `with fastcnn.threads(n):` block in the calling Python thread,
then `fastcnn.set_num_threads(n)`, then OpenMP's own setting for the calling
thread (OMP_NUM_THREADS, or threadpoolctl's openmp limit, which calls
omp_set_num_threads on fastcnn's OpenMP runtime). Each way in is limited to
MAX_THREADS; a count above it is an error, never a crash in a kernel.
"""
import contextlib
import operator
import os
import threading

from fastcnn._kernels import _omp

MAX_THREADS = _omp.MAX_THREADS


class _ThreadSetting(threading.local):
    threads = None          # a class default: no AttributeError to raise and catch per call


_local = _ThreadSetting()


def _check(n, what):
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"{what}: expected a positive int, got {type(n).__name__}") from None
    if n < 1:
        raise ValueError(f"{what}: expected a positive number of threads, got {n}")
    if n > _omp.MAX_THREADS:
        raise ValueError(f"{what}: at most {_omp.MAX_THREADS} threads (fastcnn's limit), got {n}")
    return n


def set_num_threads(n):
    """Use n threads in every fastcnn kernel (all Python threads), like
    torch.set_num_threads; n is at most fastcnn.MAX_THREADS (1024).
    `set_num_threads(None)` returns to OpenMP's default."""
    # kept in the kernels, where the C-API's fcnn_set_num_threads sets it too
    _omp.set_threads_setting_py(0 if n is None else _check(n, "set_num_threads"))


def get_num_threads():
    """The number of threads the next kernel called from this thread will use
    (always 1 in a child process made by fork(): see _after_fork)."""
    if _omp.in_forked_child():
        return 1
    n = _local.threads
    if n is not None:
        return n
    n = _omp.get_threads_setting()
    if n:
        return n
    n = _omp.max_threads()
    if n > _omp.MAX_THREADS:
        raise ValueError(f"fastcnn: OpenMP's thread count (OMP_NUM_THREADS or a threadpoolctl "
                         f"limit) is {n}, above fastcnn's limit of {_omp.MAX_THREADS} threads; "
                         f"lower it, or call fastcnn.set_num_threads(n)")
    return n


def _after_fork():
    """GNU OpenMP (libgomp) cannot start a team of threads in a process made
    by fork() from one that had used them: the child would hang. fastcnn runs
    single-threaded there; processes started with 'spawn' or 'forkserver' are
    unaffected."""
    _omp.mark_forked_child()


os.register_at_fork(after_in_child=_after_fork)


@contextlib.contextmanager
def threads(n):
    """Run the block's fastcnn calls with n threads; other Python threads are
    not affected, and the previous setting returns on exit."""
    n = _check(n, "threads")
    previous = _local.threads
    _local.threads = n
    try:
        yield
    finally:
        _local.threads = previous

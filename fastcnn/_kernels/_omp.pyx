"""OpenMP runtime queries for the Python layer (thread resolution, show_config)."""
from cython.parallel cimport prange
from libc.string cimport memcpy
from fastcnn._kernels._omp cimport omp_get_max_threads, omp_get_num_procs

cdef extern from "<omp.h>" nogil:
    int _OPENMP


cdef extern from "fpmode.h" nogil:
    int fcnn_ftz_supported()
    void fcnn_set_ftz_daz(int on)
    int fcnn_get_ftz_daz()

MAX_THREADS = FCNN_MAX_THREADS

cdef int _threads_setting = 0
cdef int _forked_child = 0       # GNU OpenMP cannot start thread teams after fork
cdef int _denormal_mode = -1     # -1: never set (threads keep their own mode), 0 off, 1 on


cdef void fp_enter() noexcept nogil:
    if _denormal_mode >= 0:
        fcnn_set_ftz_daz(_denormal_mode)


def set_flush_denormal(bint mode):
    """Flush denormal floats to zero in every fastcnn kernel (and the calling
    thread) when mode is True; back to IEEE gradual underflow when False.
    Returns False where the CPU has no such mode (nothing changes)."""
    global _denormal_mode
    if not fcnn_ftz_supported():
        return False
    _denormal_mode = 1 if mode else 0
    fcnn_set_ftz_daz(_denormal_mode)
    return True


def flush_denormal_enabled():
    """Whether the calling thread flushes denormals to zero now."""
    return bool(fcnn_get_ftz_daz())



cdef int threads_setting() noexcept nogil:
    return _threads_setting


cdef void set_threads_setting(int n) noexcept nogil:
    global _threads_setting
    _threads_setting = n


cdef int threads_cap() noexcept nogil:
    return 1 if _forked_child else 0


def mark_forked_child():
    """Called in a child after fork(): from now on every kernel runs on one
    thread (GNU libgomp's thread pool belongs to the parent; a parallel region
    with more threads would hang)."""
    global _forked_child
    _forked_child = 1


def in_forked_child():
    return bool(_forked_child)


def get_threads_setting():
    """The process-wide thread count set by fastcnn.set_num_threads or the
    C-API (0: follow OpenMP)."""
    return _threads_setting


def set_threads_setting_py(int n):
    set_threads_setting(n)


def max_threads():
    """omp_get_max_threads() of the calling thread (honours OMP_NUM_THREADS and
    threadpoolctl's openmp limits)."""
    return omp_get_max_threads()


def num_procs():
    return omp_get_num_procs()


def openmp_version():
    return _OPENMP


def parallel_copy(float[::1] dst, const float[::1] src, int num_threads):
    """dst[:] = src, one contiguous memcpy per thread: the memory bandwidth probe
    of the benchmarks (large memcpy uses non-temporal stores, the best case)."""
    cdef Py_ssize_t n = src.shape[0], chunk, c
    chunk = (n + num_threads - 1) // num_threads
    with nogil:
        for c in prange(num_threads, num_threads=num_threads, schedule='static'):
            if c * chunk < n:
                memcpy(&dst[c * chunk], &src[c * chunk], min(chunk, n - c * chunk) * sizeof(float))

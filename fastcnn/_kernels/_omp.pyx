"""OpenMP runtime queries for the Python layer (thread resolution, show_config)."""
from cython.parallel cimport prange
from libc.string cimport memchr, memset
from fastcnn._kernels._omp cimport (omp_get_max_threads, omp_get_num_procs,
                                    omp_get_num_threads)

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


def team_size(int num_threads):
    """The threads OpenMP starts for a parallel loop of fastcnn's that asks for
    num_threads (as every kernel does): what a thread setting really gives,
    whatever OMP_NUM_THREADS says."""
    cdef int c, total = 0
    if num_threads < 1 or num_threads > FCNN_MAX_THREADS:
        raise ValueError(f"team_size: 1 to {FCNN_MAX_THREADS} threads, got {num_threads}")
    if _forked_child:
        num_threads = 1
    with nogil:
        for c in prange(num_threads, num_threads=num_threads, schedule='static'):
            total += omp_get_num_threads()      # each iteration adds the team's size
    return total // num_threads


def parallel_read(const unsigned char[::1] buf, int num_threads):
    """Read every byte of buf, one contiguous part per thread: the read
    bandwidth probe of the benchmarks. memchr for a byte the buffer (zeros)
    does not hold scans at the C library's best vector width on any CPU.
    Returns the number of nonzero parts (0 for a buffer of zeros)."""
    cdef Py_ssize_t n = buf.shape[0], chunk, c
    cdef int found = 0
    chunk = (n + num_threads - 1) // num_threads
    with nogil:
        for c in prange(num_threads, num_threads=num_threads, schedule='static'):
            if c * chunk < n and memchr(&buf[c * chunk], 1, min(chunk, n - c * chunk)) != NULL:
                found += 1
    return found


def parallel_write(unsigned char[::1] buf, int num_threads):
    """Zero every byte of buf, one contiguous memset per thread: the write
    bandwidth probe of the benchmarks."""
    cdef Py_ssize_t n = buf.shape[0], chunk, c
    chunk = (n + num_threads - 1) // num_threads
    with nogil:
        for c in prange(num_threads, num_threads=num_threads, schedule='static'):
            if c * chunk < n:
                memset(&buf[c * chunk], 0, min(chunk, n - c * chunk))

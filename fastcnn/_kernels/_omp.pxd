from fastcnn._kernels._typedefs cimport index_t

cdef extern from "<omp.h>" nogil:
    int omp_get_max_threads()
    int omp_get_thread_num()
    int omp_get_num_threads()
    int omp_get_num_procs()
    int omp_in_parallel()


# The most threads a kernel runs, on every way in (fastcnn.set_num_threads,
# fastcnn.threads, the C-API, OpenMP's OMP_NUM_THREADS / threadpoolctl): far
# above any CPU's hardware threads, far below counts whose thread teams
# exhaust the process (GNU OpenMP crashes starting 100000). fastcnn.h says
# FCNN_MAX_THREADS, the same number.
cdef enum:
    FCNN_MAX_THREADS = 1024

# The process-wide thread count of fastcnn.set_num_threads and the C-API's
# fcnn_set_num_threads (0: OpenMP's default).
cdef int threads_setting() noexcept nogil
cdef void set_threads_setting(int n) noexcept nogil

# Denormal handling of the kernels' threads: every parallel region calls
# fp_enter() on each thread first, which applies fastcnn.set_flush_denormal's
# setting (flush-to-zero and denormals-are-zero on or off; untouched until set).
cdef void fp_enter() noexcept nogil
# 1 in a child process after fork (every kernel must then run on one thread), else 0.
cdef int threads_cap() noexcept nogil


# Per-thread scratch of doubles, each thread's run on cache lines of its own (a
# line written by two threads bounces between the cores on every write):
# thread_doubles(n, threads) doubles hold one run of n per thread, and
# thread_run(ws, n, t) is thread t's (ws 8-byte aligned).
cdef inline index_t _thread_stride(index_t n) noexcept nogil:
    return (n + 7) // 8 * 8 + 8


cdef inline index_t thread_doubles(index_t n, int threads) noexcept nogil:
    return _thread_stride(n) * max(threads, 1) + 8         # + 8: to align to a line


cdef inline double* thread_run(double* ws, index_t n, int t) noexcept nogil:
    return ws + (8 - <size_t>ws // 8 % 8) % 8 + t * _thread_stride(n)

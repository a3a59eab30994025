cdef extern from "<omp.h>" nogil:
    int omp_get_max_threads()
    int omp_get_thread_num()
    int omp_get_num_procs()
    int omp_in_parallel()


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

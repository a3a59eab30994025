cdef extern from "<omp.h>" nogil:
    int omp_get_max_threads()
    int omp_get_thread_num()
    int omp_get_num_procs()
    int omp_in_parallel()


# The process-wide thread count of fastcnn.set_num_threads and the C-API's
# fcnn_set_num_threads (0: OpenMP's default).
cdef int threads_setting() noexcept nogil
cdef void set_threads_setting(int n) noexcept nogil

cdef extern from "<omp.h>" nogil:
    int omp_get_max_threads()
    int omp_get_thread_num()
    int omp_get_num_procs()
    int omp_in_parallel()

"""BLAS access and BLAS thread control.

GEMM comes from SciPy's BLAS through scipy.linalg.cython_blas (no link step).
fastcnn calls it from inside its own OpenMP regions, where BLAS must run on
the calling thread alone, or its own pool multiplies the threads.

SciPy's OpenBLAS is a pthreads build whose thread count is one process-wide
setting (openblas_set_num_threads_local returns the old value but, in this
build, still sets it for every thread). So each fastcnn call enters a
reference-counted section: the first caller in saves the count and sets 1,
the last caller out restores it. Concurrent fastcnn calls from several
Python threads therefore never see BLAS re-threaded under them, and other
libraries find their setting unchanged after every call.

MKL runs single-threaded inside OpenMP regions by itself (MKL_DYNAMIC).
Any other BLAS is called as it is configured: limit it to one thread
(threadpoolctl, or its environment variable) before running fastcnn in
parallel.
"""

cdef extern from "<dlfcn.h>" nogil:
    void* dlopen(const char* filename, int flags)
    void* dlsym(void* handle, const char* symbol)
    int dlclose(void* handle)
    int RTLD_NOW
    int RTLD_NOLOAD

cdef extern from "<pthread.h>" nogil:
    ctypedef struct pthread_mutex_t:
        pass
    int pthread_mutex_lock(pthread_mutex_t*)
    int pthread_mutex_unlock(pthread_mutex_t*)

cdef extern from *:
    """
    static pthread_mutex_t fcnn_blas_mutex = PTHREAD_MUTEX_INITIALIZER;
    """
    pthread_mutex_t fcnn_blas_mutex

ctypedef int (*set_threads_t)(int) noexcept nogil
ctypedef char* (*corename_t)() noexcept nogil

cdef set_threads_t _openblas_set_threads = NULL
cdef str _blas_vendor = "unknown"
cdef str _blas_core = ""
# OpenBLAS cores whose sgemm/dgemm have a small-matrix kernel (no packing).
SMALL_GEMM_CORES = ("skylakex", "cooperlake", "sapphirerapids")
cdef int _users = 0
cdef int _saved_threads = 1


cdef void blas_enter() noexcept nogil:
    global _users, _saved_threads
    if _openblas_set_threads == NULL:
        return
    pthread_mutex_lock(&fcnn_blas_mutex)
    if _users == 0:
        _saved_threads = _openblas_set_threads(1)
    _users += 1
    pthread_mutex_unlock(&fcnn_blas_mutex)


cdef void blas_leave() noexcept nogil:
    global _users
    if _openblas_set_threads == NULL:
        return
    pthread_mutex_lock(&fcnn_blas_mutex)
    _users -= 1
    if _users == 0:
        _openblas_set_threads(_saved_threads)
    pthread_mutex_unlock(&fcnn_blas_mutex)


def _find_blas():
    global _openblas_set_threads, _blas_vendor, _blas_core
    cdef void* handle
    cdef corename_t corename
    import scipy.linalg.cython_blas as cython_blas
    # dlsym on the module's handle searches its dependencies too, i.e.
    # exactly the BLAS library that scipy.linalg.cython_blas calls into.
    handle = dlopen(cython_blas.__file__.encode(), RTLD_NOW | RTLD_NOLOAD)
    if handle == NULL:
        return
    _openblas_set_threads = <set_threads_t>dlsym(handle, b"openblas_set_num_threads_local")
    if _openblas_set_threads != NULL:
        _blas_vendor = "openblas"
        corename = <corename_t>dlsym(handle, b"openblas_get_corename")
        if corename == NULL:    # SciPy's wheels prefix OpenBLAS's own API with scipy_
            corename = <corename_t>dlsym(handle, b"scipy_openblas_get_corename")
        if corename != NULL and corename() != NULL:
            _blas_core = corename().decode("ascii", "replace")
    elif dlsym(handle, b"MKL_Get_Max_Threads") != NULL or dlsym(handle, b"mkl_get_max_threads") != NULL:
        _blas_vendor = "mkl"
    dlclose(handle)


_find_blas()


def blas_vendor():
    """'openblas', 'mkl' or 'unknown': the BLAS behind scipy.linalg.cython_blas."""
    return _blas_vendor


def blas_core():
    """The kernel set OpenBLAS chose at run time ('Haswell', 'SkylakeX', ...;
    '' for another BLAS)."""
    return _blas_core


def small_gemm():
    """Whether the BLAS multiplies small matrices without packing them (MKL
    and OpenBLAS's SkylakeX-family kernels do)."""
    return _blas_vendor == "mkl" or _blas_core.lower() in SMALL_GEMM_CORES

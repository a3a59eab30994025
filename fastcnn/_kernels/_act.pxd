from fastcnn._kernels._typedefs cimport index_t

cdef enum:
    INNER_BLOCK = 512                          # inner positions per softmax task (L1)
    SOFTMAX_WS_PER_THREAD = 2 * INNER_BLOCK + 16   # softmax scratch per thread (elements)

# y = act(x) (y may be x); act is an ACT_* code of _activation.pxd.
cdef void elementwise_f32(const float* x, float* y, index_t n, int act, double alpha,
                          double beta, double gamma, int num_threads) noexcept nogil
cdef void elementwise_f64(const double* x, double* y, index_t n, int act, double alpha,
                          double beta, double gamma, int num_threads) noexcept nogil
# Softmax along the middle axis of (outer, n, inner) (y may be x); ws: with
# inner > 1, SOFTMAX_WS_PER_THREAD elements per thread.
cdef void softmax_f32(const float* x, float* y, index_t outer, index_t n, index_t inner,
                      bint log, float* ws, int num_threads) noexcept nogil
cdef void softmax_f64(const double* x, double* y, index_t outer, index_t n, index_t inner,
                      bint log, double* ws, int num_threads) noexcept nogil
# True when x holds no NaN or Inf.
cdef bint all_finite_f32(const float* x, index_t n, int num_threads) noexcept nogil
cdef bint all_finite_f64(const double* x, index_t n, int num_threads) noexcept nogil

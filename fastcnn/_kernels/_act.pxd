from fastcnn._kernels._typedefs cimport index_t

cdef enum:
    INNER_BLOCK = 256           # most inner positions per softmax block
    SOFTMAX_TILE = 32768        # elements of a block's exponent tile (128 KB float32: L2)
    SOFTMAX_STREAM_BYTES = 8 << 20   # outputs this large bypass the cache (streaming stores)

# y = act(x) (y may be x); act is an ACT_* code of _activation.pxd.
cdef void elementwise_f32(const float* x, float* y, index_t n, int act, double alpha,
                          double beta, double gamma, int num_threads) noexcept nogil
cdef void elementwise_f64(const double* x, double* y, index_t n, int act, double alpha,
                          double beta, double gamma, int num_threads) noexcept nogil
# Softmax along the middle axis of (outer, n, inner) (y may be x); ws: with
# inner > 1, softmax_workspace(n, inner) elements per thread.
cdef index_t softmax_workspace(index_t n, index_t inner) noexcept nogil
cdef void softmax_f32(const float* x, float* y, index_t outer, index_t n, index_t inner,
                      bint log, float* ws, int num_threads) noexcept nogil
cdef void softmax_f64(const double* x, double* y, index_t outer, index_t n, index_t inner,
                      bint log, double* ws, int num_threads) noexcept nogil
# True when x holds no NaN or Inf.
cdef bint all_finite_f32(const float* x, index_t n, int num_threads) noexcept nogil
cdef bint all_finite_f64(const double* x, index_t n, int num_threads) noexcept nogil

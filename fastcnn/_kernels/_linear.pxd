from fastcnn._kernels._typedefs cimport index_t

# y[m, n] = act(x[m, k] @ w[n, k]^T + bias[n]) (bias may be NULL).
cdef void linear_f32(const float* x, const float* w, const float* bias, float* y, index_t m,
                     index_t n, index_t k, int activation, int num_threads) noexcept nogil
cdef void linear_f64(const double* x, const double* w, const double* bias, double* y,
                     index_t m, index_t n, index_t k, int activation,
                     int num_threads) noexcept nogil

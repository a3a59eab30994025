from fastcnn._kernels._typedefs cimport index_t

# Scratch elements linear_* wants for this shape and thread count (0: none).
cdef index_t linear_workspace(index_t m, index_t n, int num_threads) noexcept nogil
# y[m, n] = act(x[m, k] @ w[n, k]^T + bias[n]) (bias may be NULL); ws: NULL or
# linear_workspace(m, n, num_threads) elements (the faster form for few rows).
cdef void linear_f32(const float* x, const float* w, const float* bias, float* y, index_t m,
                     index_t n, index_t k, int activation, float* ws,
                     int num_threads) noexcept nogil
cdef void linear_f64(const double* x, const double* w, const double* bias, double* y,
                     index_t m, index_t n, index_t k, int activation, double* ws,
                     int num_threads) noexcept nogil

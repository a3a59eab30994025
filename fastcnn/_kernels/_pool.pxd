from libc.stdint cimport int64_t
from fastcnn._kernels._typedefs cimport index_t

cdef enum:
    POOL_MAX = 0
    POOL_AVG = 1
    POOL_LP = 2

# Pooling over planes (N * C of them) of (D, H, W); 1-D and 2-D set the
# leading sizes to 1. Sizes and padding already checked by the caller.
cdef struct PoolGeom:
    index_t planes
    index_t in_d, in_h, in_w
    index_t out_d, out_h, out_w
    index_t kernel_d, kernel_h, kernel_w
    index_t stride_d, stride_h, stride_w
    index_t pad_d, pad_h, pad_w
    index_t dilation_d, dilation_h, dilation_w
    int mode
    bint count_include_pad
    index_t divisor_override      # 0: none
    double norm_type              # LP pooling's p

# Elements of scratch each thread needs.
cdef index_t pool_workspace_per_thread(const PoolGeom* g) noexcept nogil
# idx: NULL, or int64 per output (max pooling); workspace: per-thread scratch
# of ws_per_thread elements for each of num_threads threads.
cdef void pool_forward_f32(const PoolGeom* g, const float* x, float* y, int64_t* idx,
                           float* workspace, index_t ws_per_thread, int num_threads) noexcept nogil
cdef void pool_forward_f64(const PoolGeom* g, const double* x, double* y, int64_t* idx,
                           double* workspace, index_t ws_per_thread,
                           int num_threads) noexcept nogil
# Doubles of scratch adaptive average pooling needs for num_threads threads.
cdef index_t adaptive_workspace(index_t in_w, int num_threads) noexcept nogil
# Adaptive pooling of planes (D, H, W) -> (out D, H, W); workspace:
# adaptive_workspace(in_w, num_threads) doubles (max pooling may pass NULL: it
# then goes window by window).
cdef void adaptive_forward_f32(index_t planes, index_t in_d, index_t in_h, index_t in_w,
                               index_t out_d, index_t out_h, index_t out_w, bint is_max,
                               const float* x, float* y, int64_t* idx, double* workspace,
                               int num_threads) noexcept nogil
cdef void adaptive_forward_f64(index_t planes, index_t in_d, index_t in_h, index_t in_w,
                               index_t out_d, index_t out_h, index_t out_w, bint is_max,
                               const double* x, double* y, int64_t* idx, double* workspace,
                               int num_threads) noexcept nogil

# Matrix transposition through register tiles (transpose.h), over the fused
# float type: weight packing, depthwise results, Linear's transposed form.
from fastcnn._kernels._typedefs cimport floating, index_t

cdef extern from "transpose.h" nogil:
    void fcnn_transpose_rect_f32(const float* src, long ld_src, long rows, long cols,
                                 float* dst, long ld_dst)
    void fcnn_transpose_rect_f64(const double* src, long ld_src, long rows, long cols,
                                 double* dst, long ld_dst)


cdef inline void transpose(const floating* src, index_t ld_src, index_t rows, index_t cols,
                           floating* dst, index_t ld_dst) noexcept nogil:
    """dst[j * ld_dst + i] = src[i * ld_src + j] for i < rows, j < cols."""
    if floating is float:
        fcnn_transpose_rect_f32(src, ld_src, rows, cols, dst, ld_dst)
    else:
        fcnn_transpose_rect_f64(src, ld_src, rows, cols, dst, ld_dst)

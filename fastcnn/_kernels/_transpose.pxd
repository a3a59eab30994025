# Matrix transposition through register tiles (transpose.h), over the fused
# float type: weight packing, depthwise results, Linear's transposed form.
from fastcnn._kernels._typedefs cimport floating, index_t

cdef extern from "transpose.h" nogil:
    void fcnn_transpose_rect_f32(const float* src, long ld_src, long rows, long cols,
                                 float* dst, long ld_dst)
    void fcnn_transpose_rect_f64(const double* src, long ld_src, long rows, long cols,
                                 double* dst, long ld_dst)
    void fcnn_transpose_epilogue_f32(const float* src, long ld_src, long rows, long cols,
                                     float* dst, long ld_dst, const float* bias, int clamp,
                                     float hi)
    void fcnn_transpose_epilogue_f64(const double* src, long ld_src, long rows, long cols,
                                     double* dst, long ld_dst, const double* bias, int clamp,
                                     double hi)


cdef inline void transpose(const floating* src, index_t ld_src, index_t rows, index_t cols,
                           floating* dst, index_t ld_dst) noexcept nogil:
    """dst[j * ld_dst + i] = src[i * ld_src + j] for i < rows, j < cols."""
    if floating is float:
        fcnn_transpose_rect_f32(src, ld_src, rows, cols, dst, ld_dst)
    else:
        fcnn_transpose_rect_f64(src, ld_src, rows, cols, dst, ld_dst)


cdef inline void transpose_epilogue(const floating* src, index_t ld_src, index_t rows,
                                    index_t cols, floating* dst, index_t ld_dst,
                                    const floating* bias, bint clamp,
                                    floating hi) noexcept nogil:
    """dst[j * ld_dst + i] = clamp(src[i * ld_src + j] + bias[j]) (bias NULL:
    none; clamp: to [0, hi]): the transpose with a layer's epilogue applied
    while the values are in registers."""
    if floating is float:
        fcnn_transpose_epilogue_f32(src, ld_src, rows, cols, dst, ld_dst, bias, clamp, hi)
    else:
        fcnn_transpose_epilogue_f64(src, ld_src, rows, cols, dst, ld_dst, bias, clamp, hi)

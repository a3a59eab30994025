# The im2col columns of a convolution (im2col.h), over the fused float type:
# the forward's column tiles and the weight gradient's chunks.
from fastcnn._kernels._typedefs cimport floating, index_t

cdef extern from "im2col.h" nogil:
    void fcnn_im2col_rows_f32(const float* x, long image_len, long c, long kd, long kh,
                              const long* size, const long* out, const long* kernel,
                              const long* stride, const long* pad, const long* dil, long first,
                              long count, float* cols, long ld)
    void fcnn_im2col_rows_f64(const double* x, long image_len, long c, long kd, long kh,
                              const long* size, const long* out, const long* kernel,
                              const long* stride, const long* pad, const long* dil, long first,
                              long count, double* cols, long ld)


cdef inline void im2col_rows(const floating* x, index_t image_len, index_t c, index_t kd,
                             index_t kh, const long* size, const long* out, const long* kernel,
                             const long* stride, const long* pad, const long* dil,
                             index_t first, index_t count, floating* cols,
                             index_t ld) noexcept nogil:
    """The kernel[2] column rows (ld apart from cols on) of channel c and
    taps (kd, kh, *) for the flat (image, position) indices first + j, j <
    count; x: image 0's channel 0, images image_len apart. Each array holds
    (d, h, w)."""
    if floating is float:
        fcnn_im2col_rows_f32(x, image_len, c, kd, kh, size, out, kernel, stride, pad, dil,
                             first, count, cols, ld)
    else:
        fcnn_im2col_rows_f64(x, image_len, c, kd, kh, size, out, kernel, stride, pad, dil,
                             first, count, cols, ld)

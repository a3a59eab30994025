# The depthwise kernels of conv_dw.h (per plane, and over channel vectors),
# shared by the direct and the depthwise algorithms.
from fastcnn._kernels._typedefs cimport index_t
from fastcnn._kernels._activation cimport ACT_RELU6
from libc.math cimport INFINITY

cdef extern from "conv_dw.h" nogil:
    enum:
        FCNN_DW_VL_F32
        FCNN_DW_VL_F64
    void fcnn_dw_rows_f32(const float* x, long planes, long in_h, long in_w, const float* w,
                          long kh, long kw, long sh, long sw, long ph, long pw, long dh,
                          long dw, long out_w, long oh0, long oh1, long wp, int has_bias,
                          const float* bias, int clamp, float lo, float hi, float* buf, float* out)
    void fcnn_dw3x3_plane_f32(float* y, const float* x, const float* zero, long in_h,
                              long in_w, long out_h, long out_w, long sh, long sw, long ph,
                              long pw, long lo, long hi, const float* w, float b)
    void fcnn_dw3x3_plane_f64(double* y, const double* x, const double* zero, long in_h,
                              long in_w, long out_h, long out_w, long sh, long sw, long ph,
                              long pw, long lo, long hi, const double* w, double b)
    long fcnn_dw3x3_workspace(long out_w, long vl, long stride)
    void fcnn_dw3x3_rows_f32(float* y, const float* x, long in_h, long in_w, long out_h,
                             long out_w, long ph, long pw, const float* w, float b,
                             int clamp, float lo, float hi, float* ws)
    void fcnn_dw3x3_rows_f64(double* y, const double* x, long in_h, long in_w, long out_h,
                             long out_w, long ph, long pw, const double* w, double b,
                             int clamp, double lo, double hi, double* ws)
    void fcnn_dw3x3_rows_s2_f32(float* y, const float* x, long in_h, long in_w, long out_h,
                                long out_w, long ph, long pw, const float* w, float b,
                                int clamp, float lo, float hi, float* ws)
    void fcnn_dw3x3_rows_s2_f64(double* y, const double* x, long in_h, long in_w,
                                long out_h, long out_w, long ph, long pw, const double* w,
                                double b, int clamp, double lo, double hi, double* ws)
    void fcnn_dw_rows_f64(const double* x, long planes, long in_h, long in_w, const double* w,
                          long kh, long kw, long sh, long sw, long ph, long pw, long dh,
                          long dw, long out_w, long oh0, long oh1, long wp, int has_bias,
                          const double* bias, int clamp, double lo, double hi, double* buf, double* out)



cdef inline index_t dw_lanes(index_t itemsize) noexcept nogil:
    """Channels per vector of the kernels over channel vectors."""
    return FCNN_DW_VL_F32 if itemsize == 4 else FCNN_DW_VL_F64


cdef inline double clamp_top(int activation) noexcept nogil:
    """The upper bound of the clamp the depthwise kernels apply for ReLU
    (none) and ReLU6 (6); their lower bound is 0."""
    return 6 if activation == ACT_RELU6 else INFINITY

# The direct convolution kernels of conv_block.h: the register tiles of the
# blocked (over pixels), pointwise and blocked_oc (over output channels)
# algorithms, and the tile shapes the plans and the dispatcher size work by.
cdef extern from "conv_block.h" nogil:
    ctypedef void (*fcnn_oc_kernel_f32_t)(const float*, long, const float*, const long*, long,
                                          long, float*, int, const float*, long)
    ctypedef void (*fcnn_oc_kernel_f64_t)(const double*, long, const double*, const long*, long,
                                          long, double*, int, const double*, long)
    fcnn_oc_kernel_f32_t fcnn_oc_kernel_f32(int tall, int sw, long p)
    fcnn_oc_kernel_f64_t fcnn_oc_kernel_f64(int tall, int sw, long p)
    enum:
        FCNN_HAS_FMA
        FCNN_BLOCK_OCB
        FCNN_BLOCK_QV
        FCNN_BLOCK_LANES_F32
        FCNN_BLOCK_LANES_F64
        FCNN_BLOCK_NARROW_OCB
        FCNN_BLOCK_NARROW_LANES_F32
        FCNN_BLOCK_NARROW_LANES_F64
        FCNN_POINT_OCB
        FCNN_POINT_LANES_F32
        FCNN_POINT_LANES_F64
        FCNN_OC_WIDE_P
        FCNN_OC_WIDE_V
        FCNN_OC_TALL_P
        FCNN_OC_TALL_V
        FCNN_OC_VL_F32
        FCNN_OC_VL_F64
    void fcnn_oc_pool_row_f32(const float* acc, long row_len, long mb, long h0, long h1,
                              long kw, long sw, long pw, long in_w, long out_w, float* dst)
    void fcnn_oc_pool_row_f64(const double* acc, long row_len, long mb, long h0, long h1,
                              long kw, long sw, long pw, long in_w, long out_w, double* dst)
    void fcnn_block_kernel_f32_point(const float* x, long ld_c, const float* w, const long* toff,
                                     long ntaps, long cin, float* out, long ld_out, int accumulate)
    void fcnn_block_kernel_f64_point(const double* x, long ld_c, const double* w,
                                     const long* toff, long ntaps, long cin, double* out,
                                     long ld_out, int accumulate)
    void fcnn_block_kernel_f32(const float* x, long ld_c, const float* w, const long* toff,
                               long ntaps, long cin, float* out, long ld_out, int accumulate)
    void fcnn_block_kernel_f64(const double* x, long ld_c, const double* w, const long* toff,
                               long ntaps, long cin, double* out, long ld_out,
                               int accumulate)
    void fcnn_block_kernel_f32_narrow(const float* x, long ld_c, const float* w,
                                      const long* toff, long ntaps, long cin, float* out,
                                      long ld_out, int accumulate)
    void fcnn_block_kernel_f64_narrow(const double* x, long ld_c, const double* w,
                                      const long* toff, long ntaps, long cin, double* out,
                                      long ld_out, int accumulate)

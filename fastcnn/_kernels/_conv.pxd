from fastcnn._kernels._typedefs cimport floating, index_t

# Every convolution runs as 3-D over (D, H, W); 1-D and 2-D set the leading
# sizes to 1. Padding is the amount before each axis; the amount after is
# implied by the output size, so asymmetric padding ('same', ONNX pads) is free.
cdef struct ConvGeom:
    index_t batch, in_channels, out_channels, groups
    index_t in_d, in_h, in_w
    index_t out_d, out_h, out_w
    index_t kernel_d, kernel_h, kernel_w
    index_t stride_d, stride_h, stride_w
    index_t pad_d, pad_h, pad_w
    index_t dilation_d, dilation_h, dilation_w

cdef enum:
    CONV_GEMM_1X1 = 0   # 1x1, stride 1, no padding: the input already is the GEMM operand
    CONV_IM2COL = 1     # column tiles gathered per task, then one GEMM per task
    CONV_DIRECT = 2     # depthwise and few channels per group: no GEMM

# How the work is cut into tasks. Chosen from the shape alone, never from the
# thread count, so each output element is computed the same way whatever the
# number of threads.
cdef struct ConvPlan:
    int algorithm
    index_t col_tile                # output positions per task
    index_t n_col_tiles
    index_t m_block                 # output channels of one group per task
    index_t n_m_blocks
    index_t n_tasks
    index_t workspace_per_thread    # elements

cdef int conv_select_algorithm(const ConvGeom* g) noexcept nogil
cdef ConvPlan conv_make_plan(const ConvGeom* g, int algorithm, index_t itemsize) noexcept nogil

cdef void conv_forward_f32(const ConvGeom* g, const ConvPlan* plan,
                           const float* x, const float* w, const float* bias,
                           float* y, float* workspace, int activation,
                           int num_threads) noexcept nogil
cdef void conv_forward_f64(const ConvGeom* g, const ConvPlan* plan,
                           const double* x, const double* w, const double* bias,
                           double* y, double* workspace, int activation,
                           int num_threads) noexcept nogil

# The C-API for Cython: `cimport fastcnn.kernels` (build with
# include_dirs=[fastcnn.get_include()]) and call import_fastcnn() once at
# module level, as with NumPy's import_array(). Every function is nogil and
# returns an fcnn_status; include/fastcnn.h documents each one.
from libc.stdint cimport int64_t

cdef extern from "fastcnn.h":
    # with the GIL, once per module; -1 with a Python exception set on failure
    int import_fastcnn() except -1

cdef extern from "fastcnn.h" nogil:
    enum: FCNN_ABI_VERSION

    ctypedef enum fcnn_status:
        FCNN_OK
        FCNN_ERR_ARG
        FCNN_ERR_SHAPE
        FCNN_ERR_OVERFLOW
        FCNN_ERR_NOMEM
        FCNN_ERR_WORKSPACE
        FCNN_ERR_NOT_IMPORTED

    ctypedef enum fcnn_dtype:
        FCNN_FLOAT32
        FCNN_FLOAT64

    ctypedef enum fcnn_activation:
        FCNN_ACT_NONE
        FCNN_ACT_RELU
        FCNN_ACT_RELU6
        FCNN_ACT_SILU
        FCNN_ACT_LEAKY_RELU
        FCNN_ACT_ELU
        FCNN_ACT_HARDTANH
        FCNN_ACT_SIGMOID
        FCNN_ACT_TANH
        FCNN_ACT_HARDSWISH
        FCNN_ACT_HARDSIGMOID
        FCNN_ACT_GELU
        FCNN_ACT_GELU_TANH
        FCNN_ACT_MISH
        FCNN_ACT_SOFTPLUS

    enum:
        FCNN_ACT_FUSABLE_LAST
        FCNN_ACT_PUBLIC_LAST

    ctypedef struct fcnn_conv_params:
        int ndim
        int64_t batch, in_channels, out_channels, groups
        int64_t in_size[3]
        int64_t kernel[3]
        int64_t stride[3]
        int64_t padding[3]
        int64_t dilation[3]
        int activation

    ctypedef struct fcnn_pool2d_params:
        int64_t batch, channels, in_h, in_w
        int64_t kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w
        int ceil_mode, count_include_pad
        int64_t divisor_override

    const char* fcnn_version()
    const char* fcnn_isa()
    const char* fcnn_strerror(fcnn_status status)
    fcnn_status fcnn_set_num_threads(int n)
    int fcnn_get_num_threads()

    fcnn_status fcnn_conv_output_size(const fcnn_conv_params* p, int64_t* out_size)
    fcnn_status fcnn_conv2d_output_size(int64_t in_h, int64_t in_w, int64_t kernel_h,
                                        int64_t kernel_w, int64_t stride_h, int64_t stride_w,
                                        int64_t pad_h, int64_t pad_w, int64_t dilation_h,
                                        int64_t dilation_w, int64_t* out_h, int64_t* out_w)
    fcnn_status fcnn_conv_workspace_size(const fcnn_conv_params* p, fcnn_dtype dtype, int packed,
                                         int num_threads, size_t* nbytes)
    fcnn_status fcnn_conv1d_f32(const fcnn_conv_params* p, const float* x, const float* weight,
                                const float* bias, float* y, void* workspace,
                                size_t workspace_bytes)
    fcnn_status fcnn_conv2d_f32(const fcnn_conv_params* p, const float* x, const float* weight,
                                const float* bias, float* y, void* workspace,
                                size_t workspace_bytes)
    fcnn_status fcnn_conv3d_f32(const fcnn_conv_params* p, const float* x, const float* weight,
                                const float* bias, float* y, void* workspace,
                                size_t workspace_bytes)
    fcnn_status fcnn_conv1d_f64(const fcnn_conv_params* p, const double* x, const double* weight,
                                const double* bias, double* y, void* workspace,
                                size_t workspace_bytes)
    fcnn_status fcnn_conv2d_f64(const fcnn_conv_params* p, const double* x, const double* weight,
                                const double* bias, double* y, void* workspace,
                                size_t workspace_bytes)
    fcnn_status fcnn_conv3d_f64(const fcnn_conv_params* p, const double* x, const double* weight,
                                const double* bias, double* y, void* workspace,
                                size_t workspace_bytes)
    fcnn_status fcnn_conv_packed_size(const fcnn_conv_params* p, fcnn_dtype dtype, size_t* nbytes)
    fcnn_status fcnn_conv_pack_f32(const fcnn_conv_params* p, const float* weight, void* packed,
                                   size_t packed_bytes)
    fcnn_status fcnn_conv_pack_f64(const fcnn_conv_params* p, const double* weight, void* packed,
                                   size_t packed_bytes)
    fcnn_status fcnn_conv_packed_f32(const fcnn_conv_params* p, const float* x, const void* packed,
                                     size_t packed_bytes, const float* bias, float* y,
                                     void* workspace, size_t workspace_bytes)
    fcnn_status fcnn_conv_packed_f64(const fcnn_conv_params* p, const double* x,
                                     const void* packed, size_t packed_bytes, const double* bias,
                                     double* y, void* workspace, size_t workspace_bytes)

    fcnn_status fcnn_pool2d_output_size(const fcnn_pool2d_params* p, int64_t* out_h,
                                        int64_t* out_w)
    fcnn_status fcnn_max_pool2d_f32(const fcnn_pool2d_params* p, const float* x, float* y,
                                    int64_t* indices)
    fcnn_status fcnn_max_pool2d_f64(const fcnn_pool2d_params* p, const double* x, double* y,
                                    int64_t* indices)
    fcnn_status fcnn_avg_pool2d_f32(const fcnn_pool2d_params* p, const float* x, float* y)
    fcnn_status fcnn_avg_pool2d_f64(const fcnn_pool2d_params* p, const double* x, double* y)
    fcnn_status fcnn_adaptive_avg_pool2d_f32(int64_t batch, int64_t channels, int64_t in_h,
                                             int64_t in_w, int64_t out_h, int64_t out_w,
                                             const float* x, float* y)
    fcnn_status fcnn_adaptive_avg_pool2d_f64(int64_t batch, int64_t channels, int64_t in_h,
                                             int64_t in_w, int64_t out_h, int64_t out_w,
                                             const double* x, double* y)

    fcnn_status fcnn_batch_norm_f32(int64_t batch, int64_t channels, int64_t spatial,
                                    const float* x, float* y, const float* weight,
                                    const float* bias, float* running_mean, float* running_var,
                                    int training, double momentum, double eps, int activation)
    fcnn_status fcnn_batch_norm_f64(int64_t batch, int64_t channels, int64_t spatial,
                                    const double* x, double* y, const double* weight,
                                    const double* bias, double* running_mean,
                                    double* running_var, int training, double momentum,
                                    double eps, int activation)
    fcnn_status fcnn_instance_norm_f32(int64_t batch, int64_t channels, int64_t spatial,
                                       const float* x, float* y, const float* weight,
                                       const float* bias, double eps, int activation)
    fcnn_status fcnn_instance_norm_f64(int64_t batch, int64_t channels, int64_t spatial,
                                       const double* x, double* y, const double* weight,
                                       const double* bias, double eps, int activation)
    fcnn_status fcnn_group_norm_f32(int64_t batch, int64_t channels, int64_t spatial,
                                    int64_t groups, const float* x, float* y,
                                    const float* weight, const float* bias, double eps,
                                    int activation)
    fcnn_status fcnn_group_norm_f64(int64_t batch, int64_t channels, int64_t spatial,
                                    int64_t groups, const double* x, double* y,
                                    const double* weight, const double* bias, double eps,
                                    int activation)
    fcnn_status fcnn_layer_norm_f32(int64_t outer, int64_t inner, const float* x, float* y,
                                    const float* weight, const float* bias, double eps,
                                    int activation)
    fcnn_status fcnn_layer_norm_f64(int64_t outer, int64_t inner, const double* x, double* y,
                                    const double* weight, const double* bias, double eps,
                                    int activation)

    fcnn_status fcnn_linear_f32(int64_t rows, int64_t in_features, int64_t out_features,
                                const float* x, const float* weight, const float* bias,
                                float* y, int activation)
    fcnn_status fcnn_linear_f64(int64_t rows, int64_t in_features, int64_t out_features,
                                const double* x, const double* weight, const double* bias,
                                double* y, int activation)
    fcnn_status fcnn_activation_f32(int activation, int64_t n, const float* x, float* y,
                                    double alpha, double beta)
    fcnn_status fcnn_activation_f64(int activation, int64_t n, const double* x, double* y,
                                    double alpha, double beta)
    fcnn_status fcnn_softmax_f32(int64_t outer, int64_t dim, int64_t inner, const float* x,
                                 float* y, int log)
    fcnn_status fcnn_softmax_f64(int64_t outer, int64_t dim, int64_t inner, const double* x,
                                 double* y, int log)

/*
 * fastcnn C-API: fastcnn's CPU kernels on raw buffers, for C and C++ code that
 * embeds CPython or builds Python extensions (as NumPy's C-API is used).
 *
 * Build against the header in fastcnn.get_include() and Python's headers; in
 * each translation unit that calls the API, call import_fastcnn() once (with
 * the GIL held, after Py_Initialize) before anything else:
 *
 *     #include <fastcnn.h>
 *     if (import_fastcnn() < 0) { PyErr_Print(); return -1; }
 *
 * Conventions, for every function below:
 *   - Arrays are C-contiguous. Images are NCHW (batch, channels, height, width);
 *     1-D and 3-D convolutions use NCL and NCDHW. Sizes are int64_t.
 *   - The _f32 functions take float, the _f64 ones double; one function per
 *     op and type.
 *   - Every function checks its arguments first (null pointers, non-positive or
 *     inconsistent sizes, sizes whose products overflow, unknown enum values)
 *     and returns a status; it never aborts or crashes on bad arguments.
 *   - None takes the GIL (call them from any thread, with or without it) and
 *     all are thread-safe: nothing is shared between calls except the thread
 *     count setting.
 *   - Results match fastcnn's Python API (and so PyTorch's), bit for bit, for
 *     the same thread count and any thread count.
 *   - NaN passes through as IEEE arithmetic says.
 */
#ifndef FASTCNN_H
#define FASTCNN_H

#include <Python.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The version of the function table below; import_fastcnn() refuses an
 * installed fastcnn whose table has another version. */
#define FCNN_ABI_VERSION 2

typedef enum fcnn_status {
    FCNN_OK = 0,
    FCNN_ERR_ARG = 1,          /* a null pointer, or an unknown enum or flag value */
    FCNN_ERR_SHAPE = 2,        /* sizes non-positive, inconsistent, or the kernel larger
                                  than the padded input */
    FCNN_ERR_OVERFLOW = 3,     /* sizes whose products do not fit in 64 bits */
    FCNN_ERR_NOMEM = 4,        /* internal scratch could not be allocated */
    FCNN_ERR_WORKSPACE = 5,    /* the caller's workspace is smaller than required */
    FCNN_ERR_NOT_IMPORTED = 6  /* import_fastcnn() was not called (or failed) */
} fcnn_status;

typedef enum fcnn_dtype {
    FCNN_FLOAT32 = 0,
    FCNN_FLOAT64 = 1
} fcnn_dtype;

/* Element-wise activations. Convolution, linear and the normalizations fuse
 * NONE, RELU, RELU6 and SILU into their last pass; fcnn_activation_* takes any.
 * alpha and beta parametrize some (unused ones are ignored). */
typedef enum fcnn_activation {
    FCNN_ACT_NONE = 0,
    FCNN_ACT_RELU = 1,
    FCNN_ACT_RELU6 = 2,
    FCNN_ACT_SILU = 3,          /* x * sigmoid(x) */
    FCNN_ACT_LEAKY_RELU = 4,    /* alpha: negative slope */
    FCNN_ACT_ELU = 5,           /* alpha: scale of the negative part */
    FCNN_ACT_HARDTANH = 6,      /* alpha: min, beta: max */
    FCNN_ACT_SIGMOID = 7,
    FCNN_ACT_TANH = 8,
    FCNN_ACT_HARDSWISH = 9,
    FCNN_ACT_HARDSIGMOID = 10,
    FCNN_ACT_GELU = 11,         /* exact (erf) */
    FCNN_ACT_GELU_TANH = 12,    /* tanh approximation */
    FCNN_ACT_MISH = 13,
    FCNN_ACT_SOFTPLUS = 14      /* alpha: beta, beta: threshold (PyTorch's softplus) */
} fcnn_activation;

/* The last activation the layers fuse, and the last fcnn_activation_* takes.
 * These codes are the kernels' own: the Python API and the Cython kernels read
 * them from here. */
#define FCNN_ACT_FUSABLE_LAST FCNN_ACT_SILU
#define FCNN_ACT_PUBLIC_LAST FCNN_ACT_SOFTPLUS

/* A convolution. ndim spatial dimensions (1, 2 or 3); the arrays hold one
 * entry per spatial dimension in order (L | H, W | D, H, W), entries past ndim
 * are ignored. padding is added before and after each dimension alike.
 * Input (batch, in_channels, *in_size); weight (out_channels,
 * in_channels / groups, *kernel); bias (out_channels) or NULL; output
 * (batch, out_channels, *fcnn_conv_output_size). */
typedef struct fcnn_conv_params {
    int ndim;
    int64_t batch, in_channels, out_channels, groups;
    int64_t in_size[3];
    int64_t kernel[3];
    int64_t stride[3];
    int64_t padding[3];
    int64_t dilation[3];
    int activation;             /* FCNN_ACT_NONE, _RELU, _RELU6 or _SILU */
} fcnn_conv_params;

/* 2-D pooling over (batch, channels, in_h, in_w), as torch's max_pool2d and
 * avg_pool2d: padding at most half the kernel; with ceil_mode a last window
 * that would start in the right padding is dropped. */
typedef struct fcnn_pool2d_params {
    int64_t batch, channels, in_h, in_w;
    int64_t kernel_h, kernel_w;
    int64_t stride_h, stride_w;     /* 0: the kernel size */
    int64_t pad_h, pad_w;
    int64_t dilation_h, dilation_w; /* max pooling only; 0 or 1 for average */
    int ceil_mode;
    int count_include_pad;          /* average pooling: padding counts in the divisor */
    int64_t divisor_override;       /* average pooling: 0, or the divisor to use */
} fcnn_pool2d_params;

/* BEGIN GENERATED: table */
/* The function table behind the API (fetched by import_fastcnn);
 * generated by tools/capi.py from its TABLE: do not edit. */
typedef struct fcnn_api {
    int abi_version;
    const char *(*version)(void);
    const char *(*strerror)(fcnn_status);
    fcnn_status (*set_num_threads)(int);
    int (*get_num_threads)(void);
    fcnn_status (*conv_output_size)(const fcnn_conv_params *, int64_t *);
    fcnn_status (*conv_workspace_size)(const fcnn_conv_params *, fcnn_dtype, int, int,
                                       size_t *);
    fcnn_status (*conv_f32)(const fcnn_conv_params *, int, const float *, const float *,
                            const float *, float *, void *, size_t);
    fcnn_status (*conv_f64)(const fcnn_conv_params *, int, const double *, const double *,
                            const double *, double *, void *, size_t);
    fcnn_status (*conv_packed_size)(const fcnn_conv_params *, fcnn_dtype, size_t *);
    fcnn_status (*conv_pack_f32)(const fcnn_conv_params *, const float *, void *, size_t);
    fcnn_status (*conv_pack_f64)(const fcnn_conv_params *, const double *, void *, size_t);
    fcnn_status (*conv_packed_f32)(const fcnn_conv_params *, const float *, const void *,
                                   size_t, const float *, float *, void *, size_t);
    fcnn_status (*conv_packed_f64)(const fcnn_conv_params *, const double *, const void *,
                                   size_t, const double *, double *, void *, size_t);
    fcnn_status (*pool2d_output_size)(const fcnn_pool2d_params *, int64_t *, int64_t *);
    fcnn_status (*max_pool2d_f32)(const fcnn_pool2d_params *, const float *, float *,
                                  int64_t *);
    fcnn_status (*max_pool2d_f64)(const fcnn_pool2d_params *, const double *, double *,
                                  int64_t *);
    fcnn_status (*avg_pool2d_f32)(const fcnn_pool2d_params *, const float *, float *);
    fcnn_status (*avg_pool2d_f64)(const fcnn_pool2d_params *, const double *, double *);
    fcnn_status (*adaptive_avg_pool2d_f32)(int64_t, int64_t, int64_t, int64_t, int64_t,
                                           int64_t, const float *, float *);
    fcnn_status (*adaptive_avg_pool2d_f64)(int64_t, int64_t, int64_t, int64_t, int64_t,
                                           int64_t, const double *, double *);
    fcnn_status (*batch_norm_f32)(int64_t, int64_t, int64_t, const float *, float *,
                                  const float *, const float *, float *, float *, int, double,
                                  double, int);
    fcnn_status (*batch_norm_f64)(int64_t, int64_t, int64_t, const double *, double *,
                                  const double *, const double *, double *, double *, int,
                                  double, double, int);
    fcnn_status (*instance_norm_f32)(int64_t, int64_t, int64_t, const float *, float *,
                                     const float *, const float *, double, int);
    fcnn_status (*instance_norm_f64)(int64_t, int64_t, int64_t, const double *, double *,
                                     const double *, const double *, double, int);
    fcnn_status (*group_norm_f32)(int64_t, int64_t, int64_t, int64_t, const float *, float *,
                                  const float *, const float *, double, int);
    fcnn_status (*group_norm_f64)(int64_t, int64_t, int64_t, int64_t, const double *, double *,
                                  const double *, const double *, double, int);
    fcnn_status (*layer_norm_f32)(int64_t, int64_t, const float *, float *, const float *,
                                  const float *, double, int);
    fcnn_status (*layer_norm_f64)(int64_t, int64_t, const double *, double *, const double *,
                                  const double *, double, int);
    fcnn_status (*linear_f32)(int64_t, int64_t, int64_t, const float *, const float *,
                              const float *, float *, int);
    fcnn_status (*linear_f64)(int64_t, int64_t, int64_t, const double *, const double *,
                              const double *, double *, int);
    fcnn_status (*activation_f32)(int, int64_t, const float *, float *, double, double);
    fcnn_status (*activation_f64)(int, int64_t, const double *, double *, double, double);
    fcnn_status (*softmax_f32)(int64_t, int64_t, int64_t, const float *, float *, int);
    fcnn_status (*softmax_f64)(int64_t, int64_t, int64_t, const double *, double *, int);
    const char *(*isa)(void);
} fcnn_api;
/* END GENERATED: table */

/* Set by import_fastcnn(); one per translation unit, like NumPy's table. */
static const fcnn_api *fcnn_api_table = NULL;

/* Import fastcnn._capi and fetch its function table. Returns 0, or -1 with a
 * Python exception set (ImportError when the installed fastcnn has another
 * FCNN_ABI_VERSION). Needs the GIL. */
static inline int import_fastcnn(void)
{
    PyObject *module = PyImport_ImportModule("fastcnn._capi");
    PyObject *capsule;
    const fcnn_api *api;
    if (module == NULL)
        return -1;
    capsule = PyObject_GetAttrString(module, "_API");
    Py_DECREF(module);
    if (capsule == NULL)
        return -1;
    api = (const fcnn_api *)PyCapsule_GetPointer(capsule, "fastcnn._capi._API");
    Py_DECREF(capsule);
    if (api == NULL)
        return -1;
    if (api->abi_version != FCNN_ABI_VERSION) {
        PyErr_Format(PyExc_ImportError,
                     "fastcnn C-API version mismatch: this module was compiled against "
                     "FCNN_ABI_VERSION %d but the installed fastcnn provides %d; rebuild "
                     "it with fastcnn.get_include() of the installed fastcnn",
                     FCNN_ABI_VERSION, api->abi_version);
        return -1;
    }
    fcnn_api_table = api;
    return 0;
}

#define FCNN_CALL(name, ...) \
    (fcnn_api_table ? fcnn_api_table->name(__VA_ARGS__) : FCNN_ERR_NOT_IMPORTED)

/* ------------------------------------------------------------ general */

/* fastcnn's version string ("0.1.0"); NULL before import_fastcnn(). */
static inline const char *fcnn_version(void)
{ return fcnn_api_table ? fcnn_api_table->version() : NULL; }

/* The instruction-set target of the kernels behind this table ("baseline",
 * "avx2", "avx512"; "native" for a FASTCNN_MARCH build): the one fastcnn had
 * bound (FASTCNN_MAX_ISA, fastcnn.set_max_isa) when import_fastcnn() ran.
 * NULL before import_fastcnn(). */
static inline const char *fcnn_isa(void)
{ return fcnn_api_table ? fcnn_api_table->isa() : NULL; }

/* A sentence describing a status. */
static inline const char *fcnn_strerror(fcnn_status status)
{ return fcnn_api_table ? fcnn_api_table->strerror(status)
                        : "fastcnn C-API not imported: call import_fastcnn() first"; }

/* The most threads a kernel runs (fastcnn.MAX_THREADS in Python). */
#define FCNN_MAX_THREADS 1024

/* Threads every kernel uses, for the whole process (the Python API's
 * fastcnn.set_num_threads is the same setting). 1 <= n <= FCNN_MAX_THREADS,
 * or 0 for OpenMP's default (OMP_NUM_THREADS; a count above FCNN_MAX_THREADS
 * there runs FCNN_MAX_THREADS threads). FCNN_ERR_ARG for any other n. */
static inline fcnn_status fcnn_set_num_threads(int n)
{ return FCNN_CALL(set_num_threads, n); }

/* The number of threads the next call will use (0 before import_fastcnn()). */
static inline int fcnn_get_num_threads(void)
{ return fcnn_api_table ? fcnn_api_table->get_num_threads() : 0; }

/* BEGIN GENERATED: functions */
/* The functions below are generated by tools/capi.py from its WRAPPERS:
 * do not edit. */

/* ------------------------------------------------------------ convolution */

/* out_size[i] (3 values) = (in + 2 pad - dilation (kernel - 1) - 1) / stride + 1 for the
 * first p->ndim dimensions (the rest set to 1); FCNN_ERR_SHAPE when the kernel
 * is larger than the padded input or any size is invalid. */
static inline fcnn_status fcnn_conv_output_size(const fcnn_conv_params *p, int64_t *out_size)
{ return FCNN_CALL(conv_output_size, p, out_size); }

/* Bytes of workspace a convolution needs with num_threads threads (0: the
 * current setting), for unpacked weights (packed = 0, the plain calls) or for
 * weights packed by fcnn_conv_pack_* (packed = 1). May be 0. The convolution
 * functions never allocate: they use the caller's workspace. */
static inline fcnn_status fcnn_conv_workspace_size(const fcnn_conv_params *p, fcnn_dtype dtype,
                                                   int packed, int num_threads, size_t *bytes)
{ return FCNN_CALL(conv_workspace_size, p, dtype, packed, num_threads, bytes); }

/* y = act(conv(x, weight) + bias). ndim must be 1, 2 or 3 as the function's
 * name says (FCNN_ERR_ARG otherwise); bias may be NULL; y must not overlap x.
 * workspace: at least fcnn_conv_workspace_size(p, dtype, 0, 0) bytes for the
 * current thread count (FCNN_ERR_WORKSPACE otherwise; NULL when that is 0). */
static inline fcnn_status fcnn_conv1d_f32(const fcnn_conv_params *p, const float *x,
                                          const float *weight, const float *bias, float *y,
                                          void *workspace, size_t workspace_bytes)
{ return FCNN_CALL(conv_f32, p, 1, x, weight, bias, y, workspace, workspace_bytes); }
static inline fcnn_status fcnn_conv2d_f32(const fcnn_conv_params *p, const float *x,
                                          const float *weight, const float *bias, float *y,
                                          void *workspace, size_t workspace_bytes)
{ return FCNN_CALL(conv_f32, p, 2, x, weight, bias, y, workspace, workspace_bytes); }
static inline fcnn_status fcnn_conv3d_f32(const fcnn_conv_params *p, const float *x,
                                          const float *weight, const float *bias, float *y,
                                          void *workspace, size_t workspace_bytes)
{ return FCNN_CALL(conv_f32, p, 3, x, weight, bias, y, workspace, workspace_bytes); }
static inline fcnn_status fcnn_conv1d_f64(const fcnn_conv_params *p, const double *x,
                                          const double *weight, const double *bias, double *y,
                                          void *workspace, size_t workspace_bytes)
{ return FCNN_CALL(conv_f64, p, 1, x, weight, bias, y, workspace, workspace_bytes); }
static inline fcnn_status fcnn_conv2d_f64(const fcnn_conv_params *p, const double *x,
                                          const double *weight, const double *bias, double *y,
                                          void *workspace, size_t workspace_bytes)
{ return FCNN_CALL(conv_f64, p, 2, x, weight, bias, y, workspace, workspace_bytes); }
static inline fcnn_status fcnn_conv3d_f64(const fcnn_conv_params *p, const double *x,
                                          const double *weight, const double *bias, double *y,
                                          void *workspace, size_t workspace_bytes)
{ return FCNN_CALL(conv_f64, p, 3, x, weight, bias, y, workspace, workspace_bytes); }

/* Weights packed once for repeated calls (what compiled plans do), in the
 * layout of the algorithm chosen for prepacked weights (e.g. Winograd's
 * transformed filters, or a plain copy for algorithms that read the weights
 * as they are). fcnn_conv_packed_size gives the bytes. */
static inline fcnn_status fcnn_conv_packed_size(const fcnn_conv_params *p, fcnn_dtype dtype,
                                                size_t *bytes)
{ return FCNN_CALL(conv_packed_size, p, dtype, bytes); }
static inline fcnn_status fcnn_conv_pack_f32(const fcnn_conv_params *p, const float *weight,
                                             void *packed, size_t packed_bytes)
{ return FCNN_CALL(conv_pack_f32, p, weight, packed, packed_bytes); }
static inline fcnn_status fcnn_conv_pack_f64(const fcnn_conv_params *p, const double *weight,
                                             void *packed, size_t packed_bytes)
{ return FCNN_CALL(conv_pack_f64, p, weight, packed, packed_bytes); }

/* y = act(conv(x, weight) + bias) with the weights packed by fcnn_conv_pack_*
 * for the same parameters (any ndim). workspace: fcnn_conv_workspace_size(p,
 * dtype, 1, 0) bytes. */
static inline fcnn_status fcnn_conv_packed_f32(const fcnn_conv_params *p, const float *x,
                                               const void *packed, size_t packed_bytes,
                                               const float *bias, float *y, void *workspace,
                                               size_t workspace_bytes)
{ return FCNN_CALL(conv_packed_f32, p, x, packed, packed_bytes, bias, y, workspace,
                   workspace_bytes); }
static inline fcnn_status fcnn_conv_packed_f64(const fcnn_conv_params *p, const double *x,
                                               const void *packed, size_t packed_bytes,
                                               const double *bias, double *y, void *workspace,
                                               size_t workspace_bytes)
{ return FCNN_CALL(conv_packed_f64, p, x, packed, packed_bytes, bias, y, workspace,
                   workspace_bytes); }

/* ------------------------------------------------------------ pooling */

/* Output height and width of a 2-D pooling (FCNN_ERR_SHAPE if invalid). */
static inline fcnn_status fcnn_pool2d_output_size(const fcnn_pool2d_params *p, int64_t *out_h,
                                                  int64_t *out_w)
{ return FCNN_CALL(pool2d_output_size, p, out_h, out_w); }

/* y = max pooling of x; indices (NULL, or an int64 array shaped as y) gets the
 * flat index within each (h, w) plane of every maximum, as PyTorch's. */
static inline fcnn_status fcnn_max_pool2d_f32(const fcnn_pool2d_params *p, const float *x,
                                              float *y, int64_t *indices)
{ return FCNN_CALL(max_pool2d_f32, p, x, y, indices); }
static inline fcnn_status fcnn_max_pool2d_f64(const fcnn_pool2d_params *p, const double *x,
                                              double *y, int64_t *indices)
{ return FCNN_CALL(max_pool2d_f64, p, x, y, indices); }

/* y = average pooling of x (count_include_pad, divisor_override as PyTorch). */
static inline fcnn_status fcnn_avg_pool2d_f32(const fcnn_pool2d_params *p, const float *x,
                                              float *y)
{ return FCNN_CALL(avg_pool2d_f32, p, x, y); }
static inline fcnn_status fcnn_avg_pool2d_f64(const fcnn_pool2d_params *p, const double *x,
                                              double *y)
{ return FCNN_CALL(avg_pool2d_f64, p, x, y); }

/* y (batch, channels, out_h, out_w) = adaptive average pooling of x (batch,
 * channels, in_h, in_w): window [floor(i in / out), ceil((i + 1) in / out)). */
static inline fcnn_status fcnn_adaptive_avg_pool2d_f32(int64_t batch, int64_t channels,
                                                       int64_t in_h, int64_t in_w,
                                                       int64_t out_h, int64_t out_w,
                                                       const float *x, float *y)
{ return FCNN_CALL(adaptive_avg_pool2d_f32, batch, channels, in_h, in_w, out_h, out_w, x, y); }
static inline fcnn_status fcnn_adaptive_avg_pool2d_f64(int64_t batch, int64_t channels,
                                                       int64_t in_h, int64_t in_w,
                                                       int64_t out_h, int64_t out_w,
                                                       const double *x, double *y)
{ return FCNN_CALL(adaptive_avg_pool2d_f64, batch, channels, in_h, in_w, out_h, out_w, x, y); }

/* ------------------------------------------------------------ normalization */
/* x and y are (batch, channels, spatial) with spatial the product of the
 * trailing sizes (1 for (N, C) data); y may be x (in place). weight and bias
 * (per channel) may be NULL. activation: FCNN_ACT_NONE, _RELU, _RELU6, _SILU.
 * Statistics are accumulated in double. */

/* Batch norm. training = 0: y = (x - running_mean) / sqrt(running_var + eps)
 * scaled and shifted (both required). training = 1: normalizes with the
 * batch's statistics over (batch, spatial) (biased variance) and, when given,
 * updates running_mean and running_var in place with momentum and the
 * unbiased variance, as PyTorch (needs batch * spatial > 1). */
static inline fcnn_status fcnn_batch_norm_f32(int64_t batch, int64_t channels, int64_t spatial,
                                              const float *x, float *y, const float *weight,
                                              const float *bias, float *running_mean,
                                              float *running_var, int training,
                                              double momentum, double eps, int activation)
{ return FCNN_CALL(batch_norm_f32, batch, channels, spatial, x, y, weight, bias, running_mean,
                   running_var, training, momentum, eps, activation); }
static inline fcnn_status fcnn_batch_norm_f64(int64_t batch, int64_t channels, int64_t spatial,
                                              const double *x, double *y, const double *weight,
                                              const double *bias, double *running_mean,
                                              double *running_var, int training,
                                              double momentum, double eps, int activation)
{ return FCNN_CALL(batch_norm_f64, batch, channels, spatial, x, y, weight, bias, running_mean,
                   running_var, training, momentum, eps, activation); }

/* Instance norm: each (sample, channel) plane over its spatial positions
 * (spatial > 1). */
static inline fcnn_status fcnn_instance_norm_f32(int64_t batch, int64_t channels,
                                                 int64_t spatial, const float *x, float *y,
                                                 const float *weight, const float *bias,
                                                 double eps, int activation)
{ return FCNN_CALL(instance_norm_f32, batch, channels, spatial, x, y, weight, bias, eps,
                   activation); }
static inline fcnn_status fcnn_instance_norm_f64(int64_t batch, int64_t channels,
                                                 int64_t spatial, const double *x, double *y,
                                                 const double *weight, const double *bias,
                                                 double eps, int activation)
{ return FCNN_CALL(instance_norm_f64, batch, channels, spatial, x, y, weight, bias, eps,
                   activation); }

/* Group norm: each sample's groups of channels / groups channels over
 * (channels in group, spatial); groups must divide channels. */
static inline fcnn_status fcnn_group_norm_f32(int64_t batch, int64_t channels, int64_t spatial,
                                              int64_t groups, const float *x, float *y,
                                              const float *weight, const float *bias,
                                              double eps, int activation)
{ return FCNN_CALL(group_norm_f32, batch, channels, spatial, groups, x, y, weight, bias, eps,
                   activation); }
static inline fcnn_status fcnn_group_norm_f64(int64_t batch, int64_t channels, int64_t spatial,
                                              int64_t groups, const double *x, double *y,
                                              const double *weight, const double *bias,
                                              double eps, int activation)
{ return FCNN_CALL(group_norm_f64, batch, channels, spatial, groups, x, y, weight, bias, eps,
                   activation); }

/* Layer norm: each of `outer` rows of `inner` values over the row, with an
 * element-wise weight and bias of `inner` values (or NULL). */
static inline fcnn_status fcnn_layer_norm_f32(int64_t outer, int64_t inner, const float *x,
                                              float *y, const float *weight, const float *bias,
                                              double eps, int activation)
{ return FCNN_CALL(layer_norm_f32, outer, inner, x, y, weight, bias, eps, activation); }
static inline fcnn_status fcnn_layer_norm_f64(int64_t outer, int64_t inner, const double *x,
                                              double *y, const double *weight,
                                              const double *bias, double eps, int activation)
{ return FCNN_CALL(layer_norm_f64, outer, inner, x, y, weight, bias, eps, activation); }

/* ------------------------------------------------------------ linear, activations */

/* y (rows, out_features) = act(x (rows, in_features) @ weight^T + bias), weight
 * (out_features, in_features) as torch.nn.Linear's; bias may be NULL. */
static inline fcnn_status fcnn_linear_f32(int64_t rows, int64_t in_features,
                                          int64_t out_features, const float *x,
                                          const float *weight, const float *bias, float *y,
                                          int activation)
{ return FCNN_CALL(linear_f32, rows, in_features, out_features, x, weight, bias, y,
                   activation); }
static inline fcnn_status fcnn_linear_f64(int64_t rows, int64_t in_features,
                                          int64_t out_features, const double *x,
                                          const double *weight, const double *bias, double *y,
                                          int activation)
{ return FCNN_CALL(linear_f64, rows, in_features, out_features, x, weight, bias, y,
                   activation); }

/* y[i] = act(x[i]) for n values; y may be x (in place). */
static inline fcnn_status fcnn_activation_f32(int activation, int64_t n, const float *x,
                                              float *y, double alpha, double beta)
{ return FCNN_CALL(activation_f32, activation, n, x, y, alpha, beta); }
static inline fcnn_status fcnn_activation_f64(int activation, int64_t n, const double *x,
                                              double *y, double alpha, double beta)
{ return FCNN_CALL(activation_f64, activation, n, x, y, alpha, beta); }

/* Softmax (log_softmax when log != 0) of x viewed as (outer, dim, inner) along
 * dim, into y (may be x): dim = channels and inner = H * W for NCHW channel
 * softmax, inner = 1 for rows. */
static inline fcnn_status fcnn_softmax_f32(int64_t outer, int64_t dim, int64_t inner,
                                           const float *x, float *y, int log)
{ return FCNN_CALL(softmax_f32, outer, dim, inner, x, y, log); }
static inline fcnn_status fcnn_softmax_f64(int64_t outer, int64_t dim, int64_t inner,
                                           const double *x, double *y, int log)
{ return FCNN_CALL(softmax_f64, outer, dim, inner, x, y, log); }
/* END GENERATED: functions */

/* fcnn_conv_output_size for one 2-D convolution, from plain sizes. */
static inline fcnn_status fcnn_conv2d_output_size(int64_t in_h, int64_t in_w, int64_t kernel_h,
                                                  int64_t kernel_w, int64_t stride_h,
                                                  int64_t stride_w, int64_t pad_h, int64_t pad_w,
                                                  int64_t dilation_h, int64_t dilation_w,
                                                  int64_t *out_h, int64_t *out_w)
{
    fcnn_conv_params p;
    int64_t out[3];
    fcnn_status s;
    if (out_h == NULL || out_w == NULL)
        return FCNN_ERR_ARG;
    memset(&p, 0, sizeof p);    /* not = {0}: C++ -Wextra warns per field */
    p.ndim = 2; p.batch = 1; p.in_channels = 1; p.out_channels = 1; p.groups = 1;
    p.in_size[0] = in_h; p.in_size[1] = in_w;
    p.kernel[0] = kernel_h; p.kernel[1] = kernel_w;
    p.stride[0] = stride_h; p.stride[1] = stride_w;
    p.padding[0] = pad_h; p.padding[1] = pad_w;
    p.dilation[0] = dilation_h; p.dilation[1] = dilation_w;
    s = fcnn_conv_output_size(&p, out);
    if (s == FCNN_OK) { *out_h = out[0]; *out_w = out[1]; }
    return s;
}

#ifdef __cplusplus
}
#endif
#endif /* FASTCNN_H */

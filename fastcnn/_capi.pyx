"""The C-API behind include/fastcnn.h: a table of C functions on raw buffers,
published as the capsule `fastcnn._capi._API` for import_fastcnn().

Every function checks its arguments (null pointers, non-positive or
inconsistent sizes, overflowing products, unknown enum values) and returns an
fcnn_status; none touches Python objects, so none needs the GIL.
"""
from libc.stdint cimport int64_t, uintptr_t
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy
from cpython.pycapsule cimport PyCapsule_New

from fastcnn._kernels._typedefs cimport index_t
from fastcnn._kernels._omp cimport (omp_get_max_threads, threads_setting, set_threads_setting,
                                    threads_cap, FCNN_MAX_THREADS)
from fastcnn._kernels._conv cimport (ConvGeom, ConvPlan, conv_select_algorithm, conv_make_plan,
                                     conv_packed_size, conv_pack_weights_f32,
                                     conv_pack_weights_f64, conv_forward_f32, conv_forward_f64,
                                     CONV_IM2COL, CONV_DIRECT, CONV_WINOGRAD)
from fastcnn._kernels._pool cimport (PoolGeom, POOL_MAX, POOL_AVG, pool_workspace_per_thread,
                                     pool_forward_f32, pool_forward_f64, adaptive_forward_f32,
                                     adaptive_forward_f64, adaptive_workspace)
from fastcnn._kernels._norm cimport (NormGeom, NORM_BATCH, NORM_INSTANCE, NORM_GROUP, NORM_LAYER,
                                     norm_geom, norm_groups, norm_partial_size, norm_forward_f32,
                                     norm_forward_f64)
from fastcnn._kernels._linear cimport linear_f32, linear_f64, linear_workspace
from fastcnn._kernels._act cimport (softmax_workspace, elementwise_f32, elementwise_f64,
                                    softmax_f32, softmax_f64, all_finite_f32, all_finite_f64)

from fastcnn.kernels cimport (FCNN_ABI_VERSION, fcnn_status, FCNN_OK, FCNN_ERR_ARG,
                             FCNN_ERR_SHAPE, FCNN_ERR_OVERFLOW, FCNN_ERR_NOMEM,
                             FCNN_ERR_WORKSPACE, FCNN_ERR_NOT_IMPORTED, fcnn_dtype, FCNN_FLOAT32,
                             FCNN_FLOAT64, fcnn_conv_params, fcnn_pool2d_params,
                             FCNN_ACT_FUSABLE_LAST, FCNN_ACT_PUBLIC_LAST)

cdef extern from "fastcnn.h" nogil:
    ctypedef struct fcnn_api:
        int abi_version
        const char* (*version)() noexcept nogil
        const char* (*isa)() noexcept nogil
        const char* (*strerror)(fcnn_status) noexcept nogil
        fcnn_status (*set_num_threads)(int) noexcept nogil
        int (*get_num_threads)() noexcept nogil
        fcnn_status (*conv_output_size)(const fcnn_conv_params*, int64_t*) noexcept nogil
        fcnn_status (*conv_workspace_size)(const fcnn_conv_params*, fcnn_dtype, int, int,
                                           size_t*) noexcept nogil
        fcnn_status (*conv_f32)(const fcnn_conv_params*, int, const float*, const float*,
                                const float*, float*, void*, size_t) noexcept nogil
        fcnn_status (*conv_f64)(const fcnn_conv_params*, int, const double*, const double*,
                                const double*, double*, void*, size_t) noexcept nogil
        fcnn_status (*conv_packed_size)(const fcnn_conv_params*, fcnn_dtype,
                                        size_t*) noexcept nogil
        fcnn_status (*conv_pack_f32)(const fcnn_conv_params*, const float*, void*,
                                     size_t) noexcept nogil
        fcnn_status (*conv_pack_f64)(const fcnn_conv_params*, const double*, void*,
                                     size_t) noexcept nogil
        fcnn_status (*conv_packed_f32)(const fcnn_conv_params*, const float*, const void*,
                                       size_t, const float*, float*, void*,
                                       size_t) noexcept nogil
        fcnn_status (*conv_packed_f64)(const fcnn_conv_params*, const double*, const void*,
                                       size_t, const double*, double*, void*,
                                       size_t) noexcept nogil
        fcnn_status (*pool2d_output_size)(const fcnn_pool2d_params*, int64_t*,
                                          int64_t*) noexcept nogil
        fcnn_status (*max_pool2d_f32)(const fcnn_pool2d_params*, const float*, float*,
                                      int64_t*) noexcept nogil
        fcnn_status (*max_pool2d_f64)(const fcnn_pool2d_params*, const double*, double*,
                                      int64_t*) noexcept nogil
        fcnn_status (*avg_pool2d_f32)(const fcnn_pool2d_params*, const float*,
                                      float*) noexcept nogil
        fcnn_status (*avg_pool2d_f64)(const fcnn_pool2d_params*, const double*,
                                      double*) noexcept nogil
        fcnn_status (*adaptive_avg_pool2d_f32)(int64_t, int64_t, int64_t, int64_t, int64_t,
                                               int64_t, const float*, float*) noexcept nogil
        fcnn_status (*adaptive_avg_pool2d_f64)(int64_t, int64_t, int64_t, int64_t, int64_t,
                                               int64_t, const double*, double*) noexcept nogil
        fcnn_status (*batch_norm_f32)(int64_t, int64_t, int64_t, const float*, float*,
                                      const float*, const float*, float*, float*, int, double,
                                      double, int) noexcept nogil
        fcnn_status (*batch_norm_f64)(int64_t, int64_t, int64_t, const double*, double*,
                                      const double*, const double*, double*, double*, int,
                                      double, double, int) noexcept nogil
        fcnn_status (*instance_norm_f32)(int64_t, int64_t, int64_t, const float*, float*,
                                         const float*, const float*, double,
                                         int) noexcept nogil
        fcnn_status (*instance_norm_f64)(int64_t, int64_t, int64_t, const double*, double*,
                                         const double*, const double*, double,
                                         int) noexcept nogil
        fcnn_status (*group_norm_f32)(int64_t, int64_t, int64_t, int64_t, const float*, float*,
                                      const float*, const float*, double, int) noexcept nogil
        fcnn_status (*group_norm_f64)(int64_t, int64_t, int64_t, int64_t, const double*,
                                      double*, const double*, const double*, double,
                                      int) noexcept nogil
        fcnn_status (*layer_norm_f32)(int64_t, int64_t, const float*, float*, const float*,
                                      const float*, double, int) noexcept nogil
        fcnn_status (*layer_norm_f64)(int64_t, int64_t, const double*, double*, const double*,
                                      const double*, double, int) noexcept nogil
        fcnn_status (*linear_f32)(int64_t, int64_t, int64_t, const float*, const float*,
                                  const float*, float*, int) noexcept nogil
        fcnn_status (*linear_f64)(int64_t, int64_t, int64_t, const double*, const double*,
                                  const double*, double*, int) noexcept nogil
        fcnn_status (*activation_f32)(int, int64_t, const float*, float*, double,
                                      double) noexcept nogil
        fcnn_status (*activation_f64)(int, int64_t, const double*, double*, double,
                                      double) noexcept nogil
        fcnn_status (*softmax_f32)(int64_t, int64_t, int64_t, const float*, float*,
                                   int) noexcept nogil
        fcnn_status (*softmax_f64)(int64_t, int64_t, int64_t, const double*, double*,
                                   int) noexcept nogil

cdef extern from *:
    """
    static int fcnn_mul_overflow(int64_t a, int64_t b, int64_t *out)
    { return __builtin_mul_overflow(a, b, out); }
    """
    bint fcnn_mul_overflow(int64_t a, int64_t b, int64_t* out) nogil

ctypedef fused real:
    float
    double

cdef enum:
    INT32_LIMIT = 2147483647    # BLAS sizes are 32-bit
    ALIGN = 64

cdef char _version_text[64]

cdef extern from *:
    """
    #ifndef FCNN_BUILD_TARGET   /* setup.py's per-target wrapper defines it */
    #define FCNN_BUILD_TARGET "unknown"
    #endif
    """
    const char* FCNN_BUILD_TARGET


# ---------------------------------------------------------------- general

cdef const char* _version() noexcept nogil:
    return _version_text


cdef const char* _isa() noexcept nogil:
    return FCNN_BUILD_TARGET


def target():
    """The instruction-set target this table's kernels were compiled for."""
    return FCNN_BUILD_TARGET.decode()


cdef const char* _strerror(fcnn_status status) noexcept nogil:
    if status == FCNN_OK:
        return "success"
    if status == FCNN_ERR_ARG:
        return "invalid argument: a null pointer, or an unknown enum or flag value"
    if status == FCNN_ERR_SHAPE:
        return ("invalid sizes: non-positive, inconsistent (e.g. channels not divisible by "
                "groups), or a kernel larger than the padded input")
    if status == FCNN_ERR_OVERFLOW:
        return "sizes too large: their products overflow"
    if status == FCNN_ERR_NOMEM:
        return "out of memory allocating scratch"
    if status == FCNN_ERR_WORKSPACE:
        return "workspace too small: size it with fcnn_conv_workspace_size"
    if status == FCNN_ERR_NOT_IMPORTED:
        return "fastcnn C-API not imported: call import_fastcnn() first"
    return "unknown fcnn_status"


cdef fcnn_status _set_num_threads(int n) noexcept nogil:
    if n < 0 or n > FCNN_MAX_THREADS:
        return FCNN_ERR_ARG
    set_threads_setting(n)
    return FCNN_OK


cdef int _get_num_threads() noexcept nogil:
    cdef int n = threads_setting()
    if threads_cap():
        return 1                        # a forked child (see fastcnn._threads)
    if n > 0:
        return n
    # C has no exception to raise for OpenMP's own setting (the Python API
    # raises): a count above the limit runs at the limit, as fastcnn.h says
    return min(omp_get_max_threads(), <int>FCNN_MAX_THREADS)


cdef inline bint _product(int64_t* out, int64_t a, int64_t b) noexcept nogil:
    """out = a * b; False on overflow."""
    return not fcnn_mul_overflow(a, b, out)


cdef inline bint _elements(int64_t* out, int64_t a, int64_t b, int64_t c, int64_t d,
                           int64_t itemsize) noexcept nogil:
    """out = a * b * c * d; False when that many items of itemsize bytes overflow."""
    cdef int64_t t, nbytes
    if not (_product(&t, a, b) and _product(&t, t, c) and _product(&t, t, d)
            and _product(&nbytes, t, itemsize)):
        return False
    out[0] = t
    return True


cdef inline void* _aligned(void* p) noexcept nogil:
    return <void*>((<uintptr_t>p + ALIGN - 1) & ~(<uintptr_t>ALIGN - 1))


# ---------------------------------------------------------------- convolution

cdef fcnn_status _conv_geom(const fcnn_conv_params* p, int want_ndim, int64_t itemsize,
                            ConvGeom* g, int64_t* out_size) noexcept nogil:
    """Check p (want_ndim 0: any) and fill the kernels' 3-D geometry."""
    cdef int nd, i, j
    cdef int64_t size[3]
    cdef int64_t kernel[3]
    cdef int64_t stride[3]
    cdef int64_t pad[3]
    cdef int64_t dil[3]
    cdef int64_t out[3]
    cdef int64_t t, span, k_total, positions, n_x, n_y, n_w
    if p == NULL:
        return FCNN_ERR_ARG
    nd = p.ndim
    if nd < 1 or nd > 3 or (want_ndim and nd != want_ndim):
        return FCNN_ERR_ARG
    if p.activation < 0 or p.activation > FCNN_ACT_FUSABLE_LAST:
        return FCNN_ERR_ARG
    if p.batch < 1 or p.in_channels < 1 or p.out_channels < 1 or p.groups < 1:
        return FCNN_ERR_SHAPE
    if p.in_channels % p.groups or p.out_channels % p.groups:
        return FCNN_ERR_SHAPE
    for i in range(3):                  # leading dimensions of a 1-D/2-D conv are 1
        j = i - (3 - nd)
        if j < 0:
            size[i] = kernel[i] = stride[i] = dil[i] = 1
            pad[i] = 0
        else:
            size[i], kernel[i], stride[i] = p.in_size[j], p.kernel[j], p.stride[j]
            pad[i], dil[i] = p.padding[j], p.dilation[j]
        if size[i] < 1 or kernel[i] < 1 or stride[i] < 1 or dil[i] < 1 or pad[i] < 0:
            return FCNN_ERR_SHAPE
        if not (_product(&span, dil[i], kernel[i] - 1) and _product(&t, pad[i], 2)):
            return FCNN_ERR_OVERFLOW
        if size[i] > (<int64_t>1 << 60) or t > (<int64_t>1 << 60) or span > (<int64_t>1 << 60):
            return FCNN_ERR_OVERFLOW
        t = size[i] + t - span - 1
        if t < 0:
            return FCNN_ERR_SHAPE       # the kernel is larger than the padded input
        out[i] = t // stride[i] + 1
    if not (_elements(&n_x, size[0], size[1], size[2], 1, 1)
            and _elements(&n_x, p.batch, p.in_channels, n_x, 1, itemsize)
            and _elements(&positions, out[0], out[1], out[2], 1, 1)
            and _elements(&n_y, p.batch, p.out_channels, positions, 1, itemsize)
            and _elements(&k_total, p.in_channels // p.groups, kernel[0], kernel[1], kernel[2],
                          itemsize)
            and _elements(&n_w, p.out_channels, k_total, 1, 1, itemsize)):
        return FCNN_ERR_OVERFLOW
    if k_total > INT32_LIMIT or positions > INT32_LIMIT or p.out_channels > INT32_LIMIT:
        return FCNN_ERR_OVERFLOW
    if g != NULL:
        g.batch, g.in_channels, g.out_channels, g.groups = (p.batch, p.in_channels,
                                                            p.out_channels, p.groups)
        g.in_d, g.in_h, g.in_w = size[0], size[1], size[2]
        g.out_d, g.out_h, g.out_w = out[0], out[1], out[2]
        g.kernel_d, g.kernel_h, g.kernel_w = kernel[0], kernel[1], kernel[2]
        g.stride_d, g.stride_h, g.stride_w = stride[0], stride[1], stride[2]
        g.pad_d, g.pad_h, g.pad_w = pad[0], pad[1], pad[2]
        g.dilation_d, g.dilation_h, g.dilation_w = dil[0], dil[1], dil[2]
    if out_size != NULL:
        for j in range(3):
            out_size[j] = out[j + 3 - nd] if j < nd else 1
    return FCNN_OK


cdef fcnn_status _conv_output_size(const fcnn_conv_params* p, int64_t* out_size) noexcept nogil:
    if out_size == NULL:
        return FCNN_ERR_ARG
    return _conv_geom(p, 0, 8, NULL, out_size)


cdef int64_t _algorithm_bytes(const ConvGeom* g, int algorithm, int64_t itemsize, bint packed,
                              int threads) noexcept nogil:
    cdef ConvPlan plan = conv_make_plan(g, algorithm, itemsize)
    cdef int64_t elems = plan.workspace_shared + plan.workspace_per_thread * threads
    cdef int64_t pack = 0 if packed else conv_packed_size(g, algorithm, itemsize)
    if elems + pack == 0:
        return 0
    return (pack + elems) * itemsize + 2 * ALIGN


cdef int64_t _conv_bytes(const ConvGeom* g, int algorithm, int64_t itemsize, bint packed,
                         int threads) noexcept nogil:
    """Workspace bytes: the algorithm's scratch for `threads` threads, plus room
    to pack the weights per call when they come unpacked, plus alignment;
    enough for im2col too where non-finite values may send a call there."""
    cdef int64_t need = _algorithm_bytes(g, algorithm, itemsize, packed, threads)
    if algorithm == CONV_WINOGRAD or algorithm == CONV_DIRECT:
        need = max(need, _algorithm_bytes(g, CONV_IM2COL, itemsize, False, threads))
    return need


cdef inline bint _finite(const real* x, int64_t n, int threads) noexcept nogil:
    if real is float:
        return all_finite_f32(x, n, threads)
    else:
        return all_finite_f64(x, n, threads)


cdef fcnn_status _conv_workspace_size(const fcnn_conv_params* p, fcnn_dtype dtype, int packed,
                                      int num_threads, size_t* nbytes) noexcept nogil:
    cdef ConvGeom g
    cdef fcnn_status s
    cdef int64_t itemsize
    if nbytes == NULL or num_threads < 0 or (dtype != FCNN_FLOAT32 and dtype != FCNN_FLOAT64):
        return FCNN_ERR_ARG
    itemsize = 4 if dtype == FCNN_FLOAT32 else 8
    s = _conv_geom(p, 0, itemsize, &g, NULL)
    if s != FCNN_OK:
        return s
    nbytes[0] = <size_t>_conv_bytes(&g, conv_select_algorithm(&g, packed != 0), itemsize,
                                    packed != 0, num_threads or _get_num_threads())
    return FCNN_OK


cdef fcnn_status _conv(const fcnn_conv_params* p, int ndim, const real* x, const real* w,
                       const real* bias, real* y, void* workspace, size_t workspace_bytes,
                       bint prepacked) noexcept nogil:
    """The plain call (prepacked False: w are the weights, packed into the
    workspace if the algorithm packs) or the packed one (w packed by _conv_pack)."""
    cdef ConvGeom g
    cdef ConvPlan plan
    cdef fcnn_status s
    cdef int threads = _get_num_threads()
    cdef int algorithm
    cdef int64_t need, pack
    cdef real* base
    cdef const real* weights = w
    cdef const real* raw = w
    s = _conv_geom(p, ndim, sizeof(real), &g, NULL)
    if s != FCNN_OK:
        return s
    if x == NULL or w == NULL or y == NULL:
        return FCNN_ERR_ARG
    algorithm = conv_select_algorithm(&g, prepacked)
    need = _conv_bytes(&g, algorithm, sizeof(real), prepacked, threads)
    if need > 0 and workspace == NULL:
        return FCNN_ERR_ARG
    if <int64_t>workspace_bytes < need:
        return FCNN_ERR_WORKSPACE
    # as the Python API (ieee_safe): NaN/Inf inputs of Winograd and weights of
    # the direct kernel go through im2col, so they pass through as IEEE says
    if prepacked and algorithm == CONV_WINOGRAD:
        raw = w + conv_packed_size(&g, algorithm, sizeof(real))     # packed after U
    if ((algorithm == CONV_WINOGRAD and not _finite(x, g.batch * g.in_channels * g.in_d * g.in_h
                                                     * g.in_w, threads))
            or (algorithm == CONV_DIRECT and not _finite(raw, g.out_channels * (
                g.in_channels // g.groups) * g.kernel_d * g.kernel_h * g.kernel_w, threads))):
        algorithm = CONV_IM2COL
        weights = raw
        prepacked = True            # im2col reads the weights as they are
    plan = conv_make_plan(&g, algorithm, sizeof(real))
    base = <real*>_aligned(workspace) if need > 0 else NULL
    pack = 0 if prepacked else conv_packed_size(&g, algorithm, sizeof(real))
    if pack:
        if real is float:
            conv_pack_weights_f32(&g, algorithm, w, base, threads)
        else:
            conv_pack_weights_f64(&g, algorithm, w, base, threads)
        weights = base
        base = <real*>_aligned(base + pack)
    if real is float:
        conv_forward_f32(&g, &plan, x, weights, bias, y, NULL, base, p.activation, threads)
    else:
        conv_forward_f64(&g, &plan, x, weights, bias, y, NULL, base, p.activation, threads)
    return FCNN_OK


cdef fcnn_status _conv_f32(const fcnn_conv_params* p, int ndim, const float* x, const float* w,
                           const float* bias, float* y, void* workspace,
                           size_t workspace_bytes) noexcept nogil:
    return _conv(p, ndim, x, w, bias, y, workspace, workspace_bytes, False)


cdef fcnn_status _conv_f64(const fcnn_conv_params* p, int ndim, const double* x,
                           const double* w, const double* bias, double* y, void* workspace,
                           size_t workspace_bytes) noexcept nogil:
    return _conv(p, ndim, x, w, bias, y, workspace, workspace_bytes, False)


cdef int64_t _packed_elements(const ConvGeom* g, int64_t itemsize) noexcept nogil:
    """Elements of packed weights: the prepacked algorithm's layout, or a
    copy of the weights for algorithms that read them as they are."""
    cdef int algorithm = conv_select_algorithm(g, True)
    cdef int64_t n = conv_packed_size(g, algorithm, itemsize)
    cdef int64_t raw = (g.out_channels * (g.in_channels // g.groups)
                        * g.kernel_d * g.kernel_h * g.kernel_w)
    if algorithm == CONV_WINOGRAD:
        return n + raw                  # and the weights themselves, for non-finite inputs
    return n if n else raw


cdef fcnn_status _conv_packed_size(const fcnn_conv_params* p, fcnn_dtype dtype,
                                   size_t* nbytes) noexcept nogil:
    cdef ConvGeom g
    cdef fcnn_status s
    cdef int64_t itemsize
    if nbytes == NULL or (dtype != FCNN_FLOAT32 and dtype != FCNN_FLOAT64):
        return FCNN_ERR_ARG
    itemsize = 4 if dtype == FCNN_FLOAT32 else 8
    s = _conv_geom(p, 0, itemsize, &g, NULL)
    if s != FCNN_OK:
        return s
    nbytes[0] = <size_t>(_packed_elements(&g, itemsize) * itemsize)
    return FCNN_OK


cdef fcnn_status _conv_pack(const fcnn_conv_params* p, const real* w, void* packed,
                            size_t packed_bytes) noexcept nogil:
    cdef ConvGeom g
    cdef fcnn_status s = _conv_geom(p, 0, sizeof(real), &g, NULL)
    cdef int64_t n, pack
    cdef int algorithm
    if s != FCNN_OK:
        return s
    if w == NULL or packed == NULL:
        return FCNN_ERR_ARG
    n = _packed_elements(&g, sizeof(real))
    if <int64_t>packed_bytes < n * <int64_t>sizeof(real):
        return FCNN_ERR_WORKSPACE
    algorithm = conv_select_algorithm(&g, True)
    pack = conv_packed_size(&g, algorithm, sizeof(real))
    if pack == 0:
        memcpy(packed, w, n * sizeof(real))
        return FCNN_OK
    if real is float:
        conv_pack_weights_f32(&g, algorithm, w, <float*>packed, _get_num_threads())
    else:
        conv_pack_weights_f64(&g, algorithm, w, <double*>packed, _get_num_threads())
    if n > pack:                        # Winograd: the weights follow U
        memcpy(<real*>packed + pack, w, (n - pack) * sizeof(real))
    return FCNN_OK


cdef fcnn_status _conv_pack_f32(const fcnn_conv_params* p, const float* w, void* packed,
                                size_t packed_bytes) noexcept nogil:
    return _conv_pack(p, w, packed, packed_bytes)


cdef fcnn_status _conv_pack_f64(const fcnn_conv_params* p, const double* w, void* packed,
                                size_t packed_bytes) noexcept nogil:
    return _conv_pack(p, w, packed, packed_bytes)


cdef fcnn_status _conv_packed(const fcnn_conv_params* p, const real* x, const void* packed,
                              size_t packed_bytes, const real* bias, real* y, void* workspace,
                              size_t workspace_bytes) noexcept nogil:
    cdef ConvGeom g
    cdef fcnn_status s = _conv_geom(p, 0, sizeof(real), &g, NULL)
    if s != FCNN_OK:
        return s
    if packed == NULL:
        return FCNN_ERR_ARG
    if <int64_t>packed_bytes < _packed_elements(&g, sizeof(real)) * <int64_t>sizeof(real):
        return FCNN_ERR_ARG
    return _conv(p, p.ndim, x, <const real*>packed, bias, y, workspace, workspace_bytes, True)


cdef fcnn_status _conv_packed_f32(const fcnn_conv_params* p, const float* x, const void* packed,
                                  size_t packed_bytes, const float* bias, float* y,
                                  void* workspace, size_t workspace_bytes) noexcept nogil:
    return _conv_packed(p, x, packed, packed_bytes, bias, y, workspace, workspace_bytes)


cdef fcnn_status _conv_packed_f64(const fcnn_conv_params* p, const double* x,
                                  const void* packed, size_t packed_bytes, const double* bias,
                                  double* y, void* workspace,
                                  size_t workspace_bytes) noexcept nogil:
    return _conv_packed(p, x, packed, packed_bytes, bias, y, workspace, workspace_bytes)


# ---------------------------------------------------------------- pooling

cdef inline int64_t _pool_out(int64_t size, int64_t kernel, int64_t stride, int64_t pad,
                              int64_t dilation, bint ceil_mode) noexcept nogil:
    """PyTorch's rule: with ceil_mode the last window must start inside the
    input or its left padding."""
    cdef int64_t num = size + 2 * pad - dilation * (kernel - 1) - 1
    cdef int64_t out
    if ceil_mode:
        num += stride - 1
    if num < 0:
        return 0
    out = num // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


cdef fcnn_status _pool_geom(const fcnn_pool2d_params* p, int mode, int64_t itemsize,
                            PoolGeom* g) noexcept nogil:
    cdef int64_t sh, sw, dh, dw, oh, ow, n
    if p == NULL:
        return FCNN_ERR_ARG
    if p.ceil_mode not in (0, 1) or p.count_include_pad not in (0, 1):
        return FCNN_ERR_ARG
    if (p.batch < 1 or p.channels < 1 or p.in_h < 1 or p.in_w < 1 or p.kernel_h < 1
            or p.kernel_w < 1 or p.stride_h < 0 or p.stride_w < 0 or p.pad_h < 0 or p.pad_w < 0
            or p.dilation_h < 0 or p.dilation_w < 0 or p.divisor_override < 0):
        return FCNN_ERR_SHAPE
    if (p.in_h > (<int64_t>1 << 40) or p.in_w > (<int64_t>1 << 40) or p.kernel_h > (<int64_t>1 << 40)
            or p.kernel_w > (<int64_t>1 << 40) or p.stride_h > (<int64_t>1 << 40)
            or p.stride_w > (<int64_t>1 << 40) or p.dilation_h > (<int64_t>1 << 20)
            or p.dilation_w > (<int64_t>1 << 20)):
        return FCNN_ERR_OVERFLOW
    if 2 * p.pad_h > p.kernel_h or 2 * p.pad_w > p.kernel_w:
        return FCNN_ERR_SHAPE          # padding at most half the kernel, as PyTorch
    sh = p.stride_h or p.kernel_h
    sw = p.stride_w or p.kernel_w
    dh = p.dilation_h or 1
    dw = p.dilation_w or 1
    if mode == POOL_AVG and (dh != 1 or dw != 1):
        return FCNN_ERR_ARG
    oh = _pool_out(p.in_h, p.kernel_h, sh, p.pad_h, dh, p.ceil_mode)
    ow = _pool_out(p.in_w, p.kernel_w, sw, p.pad_w, dw, p.ceil_mode)
    if oh < 1 or ow < 1:
        return FCNN_ERR_SHAPE
    if not (_elements(&n, p.batch, p.channels, p.in_h, p.in_w, itemsize)
            and _elements(&n, p.batch, p.channels, oh, ow, 8)):
        return FCNN_ERR_OVERFLOW
    if g != NULL:
        g.planes = p.batch * p.channels
        g.in_d, g.in_h, g.in_w = 1, p.in_h, p.in_w
        g.out_d, g.out_h, g.out_w = 1, oh, ow
        g.kernel_d, g.kernel_h, g.kernel_w = 1, p.kernel_h, p.kernel_w
        g.stride_d, g.stride_h, g.stride_w = 1, sh, sw
        g.pad_d, g.pad_h, g.pad_w = 0, p.pad_h, p.pad_w
        g.dilation_d, g.dilation_h, g.dilation_w = 1, dh, dw
        g.mode = mode
        g.count_include_pad = p.count_include_pad
        g.divisor_override = p.divisor_override
        g.norm_type = 2.0
    return FCNN_OK


cdef fcnn_status _pool2d_output_size(const fcnn_pool2d_params* p, int64_t* out_h,
                                     int64_t* out_w) noexcept nogil:
    cdef PoolGeom g
    cdef fcnn_status s
    if out_h == NULL or out_w == NULL:
        return FCNN_ERR_ARG
    s = _pool_geom(p, POOL_MAX, 8, &g)
    if s == FCNN_OK:
        out_h[0], out_w[0] = g.out_h, g.out_w
    return s


cdef fcnn_status _pool(const fcnn_pool2d_params* p, int mode, const real* x, real* y,
                       int64_t* indices) noexcept nogil:
    cdef PoolGeom g
    cdef fcnn_status s = _pool_geom(p, mode, sizeof(real), &g)
    cdef int threads = _get_num_threads()
    cdef index_t per_thread
    cdef real* ws
    if s != FCNN_OK:
        return s
    if x == NULL or y == NULL:
        return FCNN_ERR_ARG
    per_thread = pool_workspace_per_thread(&g)
    ws = <real*>malloc(per_thread * threads * sizeof(real))
    if ws == NULL:
        return FCNN_ERR_NOMEM
    if real is float:
        pool_forward_f32(&g, x, y, indices, ws, per_thread, threads)
    else:
        pool_forward_f64(&g, x, y, indices, ws, per_thread, threads)
    free(ws)
    return FCNN_OK


cdef fcnn_status _max_pool2d_f32(const fcnn_pool2d_params* p, const float* x, float* y,
                                 int64_t* indices) noexcept nogil:
    return _pool(p, POOL_MAX, x, y, indices)


cdef fcnn_status _max_pool2d_f64(const fcnn_pool2d_params* p, const double* x, double* y,
                                 int64_t* indices) noexcept nogil:
    return _pool(p, POOL_MAX, x, y, indices)


cdef fcnn_status _avg_pool2d_f32(const fcnn_pool2d_params* p, const float* x,
                                 float* y) noexcept nogil:
    return _pool(p, POOL_AVG, x, y, NULL)


cdef fcnn_status _avg_pool2d_f64(const fcnn_pool2d_params* p, const double* x,
                                 double* y) noexcept nogil:
    return _pool(p, POOL_AVG, x, y, NULL)


cdef fcnn_status _adaptive_avg(int64_t batch, int64_t channels, int64_t in_h, int64_t in_w,
                               int64_t out_h, int64_t out_w, const real* x,
                               real* y) noexcept nogil:
    cdef int64_t n
    if x == NULL or y == NULL:
        return FCNN_ERR_ARG
    if batch < 1 or channels < 1 or in_h < 1 or in_w < 1 or out_h < 1 or out_w < 1:
        return FCNN_ERR_SHAPE
    if not (_elements(&n, batch, channels, in_h, in_w, sizeof(real))
            and _elements(&n, batch, channels, out_h, out_w, sizeof(real))):
        return FCNN_ERR_OVERFLOW
    cdef int threads = _get_num_threads()
    cdef double* ws = <double*>malloc(adaptive_workspace(in_w, threads) * sizeof(double))
    if ws == NULL:
        return FCNN_ERR_NOMEM
    if real is float:
        adaptive_forward_f32(batch * channels, 1, in_h, in_w, 1, out_h, out_w, False, x, y,
                             NULL, ws, threads)
    else:
        adaptive_forward_f64(batch * channels, 1, in_h, in_w, 1, out_h, out_w, False, x, y,
                             NULL, ws, threads)
    free(ws)
    return FCNN_OK


cdef fcnn_status _adaptive_avg_pool2d_f32(int64_t batch, int64_t channels, int64_t in_h,
                                          int64_t in_w, int64_t out_h, int64_t out_w,
                                          const float* x, float* y) noexcept nogil:
    return _adaptive_avg(batch, channels, in_h, in_w, out_h, out_w, x, y)


cdef fcnn_status _adaptive_avg_pool2d_f64(int64_t batch, int64_t channels, int64_t in_h,
                                          int64_t in_w, int64_t out_h, int64_t out_w,
                                          const double* x, double* y) noexcept nogil:
    return _adaptive_avg(batch, channels, in_h, in_w, out_h, out_w, x, y)


# ---------------------------------------------------------------- normalization

cdef fcnn_status _norm(int kind, int64_t batch, int64_t channels, int64_t spatial,
                       int64_t groups, const real* x, real* y, const real* weight,
                       const real* bias, const real* mean_in, const real* var_in, double eps,
                       int activation, double* stats_out) noexcept nogil:
    """Run the normalization kernel; mean_in / var_in (per channel) use given
    statistics; stats_out (2 * groups doubles) receives the computed mean and
    biased variance per group."""
    cdef NormGeom g
    cdef int64_t n, n_groups, partial_n, c
    cdef double* scratch
    cdef double* given = NULL
    if x == NULL or y == NULL:
        return FCNN_ERR_ARG
    if activation < 0 or activation > FCNN_ACT_FUSABLE_LAST or not eps >= 0:
        return FCNN_ERR_ARG
    if batch < 1 or channels < 1 or spatial < 1:
        return FCNN_ERR_SHAPE
    if not _elements(&n, batch, channels, spatial, 1, sizeof(real)):
        return FCNN_ERR_OVERFLOW
    g = norm_geom(kind, batch, channels, spatial, groups)
    n_groups = max(norm_groups(&g), 1)
    partial_n = norm_partial_size(&g)
    scratch = <double*>malloc((partial_n + 3 * n_groups + 2 * channels) * sizeof(double))
    if scratch == NULL:
        return FCNN_ERR_NOMEM
    if mean_in != NULL:
        given = scratch + partial_n + 3 * n_groups
        for c in range(channels):
            given[c] = mean_in[c]
            given[channels + c] = var_in[c]
    if real is float:
        norm_forward_f32(&g, x, y, weight, bias, given, given + channels if given else NULL,
                         eps, scratch, scratch + partial_n, scratch + partial_n + n_groups,
                         scratch + partial_n + 2 * n_groups, activation, _get_num_threads())
    else:
        norm_forward_f64(&g, x, y, weight, bias, given, given + channels if given else NULL,
                         eps, scratch, scratch + partial_n, scratch + partial_n + n_groups,
                         scratch + partial_n + 2 * n_groups, activation, _get_num_threads())
    if stats_out != NULL:
        memcpy(stats_out, scratch + partial_n, 2 * n_groups * sizeof(double))
    free(scratch)
    return FCNN_OK


cdef fcnn_status _batch_norm(int64_t batch, int64_t channels, int64_t spatial, const real* x,
                             real* y, const real* weight, const real* bias, real* running_mean,
                             real* running_var, int training, double momentum, double eps,
                             int activation) noexcept nogil:
    cdef double* stats
    cdef fcnn_status s
    cdef int64_t c, count
    if training not in (0, 1):
        return FCNN_ERR_ARG
    if not training:
        if running_mean == NULL or running_var == NULL:
            return FCNN_ERR_ARG
        return _norm(NORM_BATCH, batch, channels, spatial, 0, x, y, weight, bias, running_mean,
                     running_var, eps, activation, NULL)
    if batch < 1 or channels < 1 or spatial < 1:
        return FCNN_ERR_SHAPE
    if not _product(&count, batch, spatial):
        return FCNN_ERR_OVERFLOW
    if count <= 1:
        return FCNN_ERR_SHAPE           # the variance needs two values per channel
    stats = <double*>malloc(2 * channels * sizeof(double))
    if stats == NULL:
        return FCNN_ERR_NOMEM
    s = _norm(NORM_BATCH, batch, channels, spatial, 0, x, y, weight, bias, NULL, NULL, eps,
              activation, stats)
    if s == FCNN_OK:
        # as PyTorch (and the Python API, in the statistics' dtype):
        # running = running * (1 - momentum) + momentum * batch, variance unbiased
        for c in range(channels):
            if running_mean != NULL:
                running_mean[c] = running_mean[c] * <real>(1 - momentum)
                running_mean[c] = running_mean[c] + <real>momentum * <real>stats[c]
            if running_var != NULL:
                running_var[c] = running_var[c] * <real>(1 - momentum)
                running_var[c] = running_var[c] + <real>momentum * <real>(
                    stats[channels + c] * (<double>count / <double>(count - 1)))
    free(stats)
    return s


cdef fcnn_status _batch_norm_f32(int64_t batch, int64_t channels, int64_t spatial,
                                 const float* x, float* y, const float* weight,
                                 const float* bias, float* running_mean, float* running_var,
                                 int training, double momentum, double eps,
                                 int activation) noexcept nogil:
    return _batch_norm(batch, channels, spatial, x, y, weight, bias, running_mean, running_var,
                       training, momentum, eps, activation)


cdef fcnn_status _batch_norm_f64(int64_t batch, int64_t channels, int64_t spatial,
                                 const double* x, double* y, const double* weight,
                                 const double* bias, double* running_mean, double* running_var,
                                 int training, double momentum, double eps,
                                 int activation) noexcept nogil:
    return _batch_norm(batch, channels, spatial, x, y, weight, bias, running_mean, running_var,
                       training, momentum, eps, activation)


cdef fcnn_status _instance_norm_f32(int64_t batch, int64_t channels, int64_t spatial,
                                    const float* x, float* y, const float* weight,
                                    const float* bias, double eps, int activation) noexcept nogil:
    if spatial == 1:
        return FCNN_ERR_SHAPE
    return _norm(NORM_INSTANCE, batch, channels, spatial, 0, x, y, weight, bias, NULL, NULL,
                 eps, activation, NULL)


cdef fcnn_status _instance_norm_f64(int64_t batch, int64_t channels, int64_t spatial,
                                    const double* x, double* y, const double* weight,
                                    const double* bias, double eps,
                                    int activation) noexcept nogil:
    if spatial == 1:
        return FCNN_ERR_SHAPE
    return _norm(NORM_INSTANCE, batch, channels, spatial, 0, x, y, weight, bias, NULL, NULL,
                 eps, activation, NULL)


cdef fcnn_status _group_norm_f32(int64_t batch, int64_t channels, int64_t spatial,
                                 int64_t groups, const float* x, float* y, const float* weight,
                                 const float* bias, double eps, int activation) noexcept nogil:
    if groups < 1 or channels % groups:
        return FCNN_ERR_SHAPE
    return _norm(NORM_GROUP, batch, channels, spatial, groups, x, y, weight, bias, NULL, NULL,
                 eps, activation, NULL)


cdef fcnn_status _group_norm_f64(int64_t batch, int64_t channels, int64_t spatial,
                                 int64_t groups, const double* x, double* y,
                                 const double* weight, const double* bias, double eps,
                                 int activation) noexcept nogil:
    if groups < 1 or channels % groups:
        return FCNN_ERR_SHAPE
    return _norm(NORM_GROUP, batch, channels, spatial, groups, x, y, weight, bias, NULL, NULL,
                 eps, activation, NULL)


cdef fcnn_status _layer_norm_f32(int64_t outer, int64_t inner, const float* x, float* y,
                                 const float* weight, const float* bias, double eps,
                                 int activation) noexcept nogil:
    return _norm(NORM_LAYER, outer, 1, inner, 0, x, y, weight, bias, NULL, NULL, eps,
                 activation, NULL)


cdef fcnn_status _layer_norm_f64(int64_t outer, int64_t inner, const double* x, double* y,
                                 const double* weight, const double* bias, double eps,
                                 int activation) noexcept nogil:
    return _norm(NORM_LAYER, outer, 1, inner, 0, x, y, weight, bias, NULL, NULL, eps,
                 activation, NULL)


# ---------------------------------------------------------------- linear, activations

cdef fcnn_status _linear(int64_t rows, int64_t in_features, int64_t out_features, const real* x,
                         const real* w, const real* bias, real* y, int activation) noexcept nogil:
    cdef int64_t n
    cdef int threads
    cdef real* ws
    if x == NULL or w == NULL or y == NULL:
        return FCNN_ERR_ARG
    if activation < 0 or activation > FCNN_ACT_FUSABLE_LAST:
        return FCNN_ERR_ARG
    if rows < 1 or in_features < 1 or out_features < 1:
        return FCNN_ERR_SHAPE
    if not (_elements(&n, rows, in_features, 1, 1, sizeof(real))
            and _elements(&n, rows, out_features, 1, 1, sizeof(real))
            and _elements(&n, out_features, in_features, 1, 1, sizeof(real))):
        return FCNN_ERR_OVERFLOW
    if rows > INT32_LIMIT or in_features > INT32_LIMIT or out_features > INT32_LIMIT:
        return FCNN_ERR_OVERFLOW
    threads = _get_num_threads()
    ws = <real*>malloc(linear_workspace(rows, out_features, threads) * sizeof(real) + 1)
    if ws == NULL:
        return FCNN_ERR_NOMEM
    if real is float:
        linear_f32(x, w, bias, y, rows, out_features, in_features, activation, ws, threads)
    else:
        linear_f64(x, w, bias, y, rows, out_features, in_features, activation, ws, threads)
    free(ws)
    return FCNN_OK


cdef fcnn_status _linear_f32(int64_t rows, int64_t in_features, int64_t out_features,
                             const float* x, const float* w, const float* bias, float* y,
                             int activation) noexcept nogil:
    return _linear(rows, in_features, out_features, x, w, bias, y, activation)


cdef fcnn_status _linear_f64(int64_t rows, int64_t in_features, int64_t out_features,
                             const double* x, const double* w, const double* bias, double* y,
                             int activation) noexcept nogil:
    return _linear(rows, in_features, out_features, x, w, bias, y, activation)


cdef fcnn_status _activation(int act, int64_t n, const real* x, real* y, double alpha,
                             double beta) noexcept nogil:
    cdef double a = alpha, b = beta, gamma = 0
    if x == NULL or y == NULL or act < 0 or act > FCNN_ACT_PUBLIC_LAST:
        return FCNN_ERR_ARG
    if n < 0:
        return FCNN_ERR_SHAPE
    if n > (<int64_t>1 << 60):
        return FCNN_ERR_OVERFLOW
    if act == 5:                        # ELU: alpha * expm1(x) for x <= 0, x above
        b, gamma = 1.0, 1.0
    if real is float:
        elementwise_f32(x, y, n, act, a, b, gamma, _get_num_threads())
    else:
        elementwise_f64(x, y, n, act, a, b, gamma, _get_num_threads())
    return FCNN_OK


cdef fcnn_status _activation_f32(int act, int64_t n, const float* x, float* y, double alpha,
                                 double beta) noexcept nogil:
    return _activation(act, n, x, y, alpha, beta)


cdef fcnn_status _activation_f64(int act, int64_t n, const double* x, double* y, double alpha,
                                 double beta) noexcept nogil:
    return _activation(act, n, x, y, alpha, beta)


cdef fcnn_status _softmax(int64_t outer, int64_t dim, int64_t inner, const real* x, real* y,
                          int log) noexcept nogil:
    cdef int64_t n
    cdef int threads = _get_num_threads()
    cdef real* ws = NULL
    if x == NULL or y == NULL or log not in (0, 1):
        return FCNN_ERR_ARG
    if outer < 1 or dim < 1 or inner < 1:
        return FCNN_ERR_SHAPE
    if not _elements(&n, outer, dim, inner, 1, sizeof(real)):
        return FCNN_ERR_OVERFLOW
    if inner > 1:
        ws = <real*>malloc(softmax_workspace(dim, inner) * threads * sizeof(real))
        if ws == NULL:
            return FCNN_ERR_NOMEM
    if real is float:
        softmax_f32(x, y, outer, dim, inner, log, ws, threads)
    else:
        softmax_f64(x, y, outer, dim, inner, log, ws, threads)
    free(ws)
    return FCNN_OK


cdef fcnn_status _softmax_f32(int64_t outer, int64_t dim, int64_t inner, const float* x,
                              float* y, int log) noexcept nogil:
    return _softmax(outer, dim, inner, x, y, log)


cdef fcnn_status _softmax_f64(int64_t outer, int64_t dim, int64_t inner, const double* x,
                              double* y, int log) noexcept nogil:
    return _softmax(outer, dim, inner, x, y, log)


# ---------------------------------------------------------------- the table

cdef fcnn_api _TABLE


def _publish():
    from fastcnn._version import __version__
    text = __version__.encode()[:63]
    memcpy(_version_text, <const char*>text, len(text))
    _version_text[len(text)] = 0
    _TABLE.abi_version = FCNN_ABI_VERSION
    _TABLE.version = _version
    _TABLE.strerror = _strerror
    _TABLE.set_num_threads = _set_num_threads
    _TABLE.get_num_threads = _get_num_threads
    _TABLE.conv_output_size = _conv_output_size
    _TABLE.conv_workspace_size = _conv_workspace_size
    _TABLE.conv_f32 = _conv_f32
    _TABLE.conv_f64 = _conv_f64
    _TABLE.conv_packed_size = _conv_packed_size
    _TABLE.conv_pack_f32 = _conv_pack_f32
    _TABLE.conv_pack_f64 = _conv_pack_f64
    _TABLE.conv_packed_f32 = _conv_packed_f32
    _TABLE.conv_packed_f64 = _conv_packed_f64
    _TABLE.pool2d_output_size = _pool2d_output_size
    _TABLE.max_pool2d_f32 = _max_pool2d_f32
    _TABLE.max_pool2d_f64 = _max_pool2d_f64
    _TABLE.avg_pool2d_f32 = _avg_pool2d_f32
    _TABLE.avg_pool2d_f64 = _avg_pool2d_f64
    _TABLE.adaptive_avg_pool2d_f32 = _adaptive_avg_pool2d_f32
    _TABLE.adaptive_avg_pool2d_f64 = _adaptive_avg_pool2d_f64
    _TABLE.batch_norm_f32 = _batch_norm_f32
    _TABLE.batch_norm_f64 = _batch_norm_f64
    _TABLE.instance_norm_f32 = _instance_norm_f32
    _TABLE.instance_norm_f64 = _instance_norm_f64
    _TABLE.group_norm_f32 = _group_norm_f32
    _TABLE.group_norm_f64 = _group_norm_f64
    _TABLE.layer_norm_f32 = _layer_norm_f32
    _TABLE.layer_norm_f64 = _layer_norm_f64
    _TABLE.linear_f32 = _linear_f32
    _TABLE.linear_f64 = _linear_f64
    _TABLE.activation_f32 = _activation_f32
    _TABLE.activation_f64 = _activation_f64
    _TABLE.softmax_f32 = _softmax_f32
    _TABLE.softmax_f64 = _softmax_f64
    _TABLE.isa = _isa
    return PyCapsule_New(<void*>&_TABLE, b"fastcnn._capi._API", NULL)


_API = _publish()


# ---------------------------------------------------------------- overhead probe

def _run_tiny_convs(bint through_api, long calls):
    """Run `calls` 1x3x8x8 -> 8 channel 3x3 convolutions in a C loop, either
    through the C-API entry (validation, dispatch, workspace checks) or
    straight into the kernel with a geometry and plan made once: the
    benchmark's measure of the C-API's own cost per call."""
    cdef fcnn_conv_params p
    cdef ConvGeom g
    cdef ConvPlan plan
    cdef int threads = _get_num_threads()
    cdef int algorithm
    cdef size_t need = 0
    cdef long i
    cdef float* x = <float*>malloc(3 * 64 * sizeof(float))
    cdef float* w = <float*>malloc(8 * 27 * sizeof(float))
    cdef float* y = <float*>malloc(8 * 64 * sizeof(float))
    cdef void* ws = NULL
    cdef float* wsf
    if x == NULL or w == NULL or y == NULL:
        free(x); free(w); free(y)
        raise MemoryError()
    for i in range(3 * 64):
        x[i] = (i % 7) * 0.25
    for i in range(8 * 27):
        w[i] = (i % 5) * 0.125
    p.ndim = 2
    p.batch, p.in_channels, p.out_channels, p.groups = 1, 3, 8, 1
    for i in range(3):
        p.in_size[i], p.kernel[i], p.stride[i], p.padding[i], p.dilation[i] = 8, 3, 1, 1, 1
    p.activation = 0
    _conv_workspace_size(&p, FCNN_FLOAT32, 0, 0, &need)
    ws = malloc(need + 1)
    with nogil:
        if through_api:
            for i in range(calls):
                _TABLE.conv_f32(&p, 2, x, w, NULL, y, ws, need)
        else:
            _conv_geom(&p, 2, 4, &g, NULL)
            algorithm = conv_select_algorithm(&g, False)
            plan = conv_make_plan(&g, algorithm, 4)
            wsf = <float*>_aligned(ws)
            for i in range(calls):
                conv_forward_f32(&g, &plan, x, w, NULL, y, NULL, wsf, 0, threads)
    free(ws); free(x); free(w); free(y)

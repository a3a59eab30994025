"""Backward kernels: the gradients training needs, for float32 and float64.

Every kernel splits its work by shape alone and each output element is
written by one task summing in a fixed order, so gradients are bit-identical
for every thread count. Sums over many elements (a channel's gradient over a
batch, a row's statistics) accumulate in double.

  activation_backward   gx = gy * act'(x or y), by the forward's ACT_* code
  softmax_backward      softmax and log_softmax along the middle of (outer, n, inner)
  conv_weight_direct    the weight gradient of convolutions with few output
                        channels (conv_wgrad.h: no im2col, vectors along rows)
  conv_weight           the weight gradient: per chunk of output positions, the
                        chunk's im2col columns (cache-sized) and one GEMM per group
                        and column block accumulating into the gradient
  depthwise_input / depthwise_weight
                        the two gradients of a depthwise convolution, direct
  channel_sums          sum over (N, *, spatial) per channel (bias gradients)
  batch_norm_backward   grad input, gamma and beta of batch norm in one pass per channel
  rows_norm_backward    grad input of layer / group / instance norm and their
                        per-row affine partial sums
  max_pool_backward (from indices), max_pool_backward_search (from input and
  output), avg_pool_backward, adaptive_avg_backward
  sgd_step, adam_step   the optimizers' updates, in place, one pass each
"""
cimport numpy as cnp
import numpy as np
from cython.parallel cimport parallel, prange, threadid
from libc.math cimport exp, tanh, erf, sqrt, log1p, expm1, fabs, M_PI

from fastcnn._kernels._omp cimport fp_enter, thread_doubles, thread_run
from fastcnn._kernels._im2col cimport im2col_rows
from fastcnn._kernels._typedefs cimport floating, index_t
from fastcnn._kernels._blas cimport gemm, blas_enter, blas_leave
from fastcnn._kernels._transpose cimport transpose
from fastcnn._kernels._winograd cimport wino_grad_tiles, wino_gt
from fastcnn._kernels._block_gemm cimport block_vector
from libc.limits cimport INT_MAX
from libc.string cimport memcpy, memset
from libc.stdlib cimport malloc, free
from fastcnn._kernels._activation cimport (
    ACT_RELU, ACT_RELU6, ACT_SILU, ACT_LEAKY_RELU, ACT_ELU, ACT_HARDTANH, ACT_SIGMOID,
    ACT_TANH, ACT_HARDSWISH, ACT_HARDSIGMOID, ACT_GELU, ACT_GELU_TANH, ACT_MISH,
    ACT_SOFTPLUS, ACT_EXPM1_SCALED)

cdef extern from "reduce.h" nogil:
    double fcnn_sum_f32(const float* x, long n)
    double fcnn_sum_f64(const double* x, long n)
    void fcnn_shifted_sums_f32(const float* x, long n, double k, double* s)
    void fcnn_shifted_sums_f64(const double* x, long n, double k, double* s)
    void fcnn_grad_sums_f32(const float* x, const float* gy, long n, double mean, double* s)
    void fcnn_grad_sums_f64(const double* x, const double* gy, long n, double mean, double* s)

cnp.import_array()

cdef enum:
    CHUNK = 16384          # elements per element-wise task
    WGRAD_DIRECT_PARTS = 8  # image runs of the direct weight gradient (at most)


cdef inline double _sum(const floating* x, index_t n) noexcept nogil:
    """sum(x) in double, vectorised (reduce.h)."""
    if floating is float:
        return fcnn_sum_f32(x, n)
    else:
        return fcnn_sum_f64(x, n)


cdef inline void _sums(const floating* x, index_t n, double k, double* s) noexcept nogil:
    """s[0] = sum(x - k), s[1] = sum((x - k)^2), vectorised (reduce.h)."""
    if floating is float:
        fcnn_shifted_sums_f32(x, n, k, s)
    else:
        fcnn_shifted_sums_f64(x, n, k, s)


cdef inline void _grad_sums(const floating* x, const floating* gy, index_t n, double mean,
                            double* s) noexcept nogil:
    """s[0] = sum(gy), s[1] = sum(gy (x - mean)), vectorised (reduce.h)."""
    if floating is float:
        fcnn_grad_sums_f32(x, gy, n, mean, s)
    else:
        fcnn_grad_sums_f64(x, gy, n, mean, s)


cdef inline index_t _ceil_div(index_t a, index_t b) noexcept nogil:
    return (a + b - 1) // b


cdef inline bint _is_f32(cnp.ndarray a):
    return a.dtype.num == cnp.NPY_FLOAT32


cdef inline void* _data(object a):
    return NULL if a is None else cnp.PyArray_DATA(<cnp.ndarray>a)


# ---------------------------------------------------------------- activations

cdef inline double _sigmoid(double v) noexcept nogil:
    return 1.0 / (1.0 + exp(-v))


cdef inline double _derivative(int act, double x, double y, double alpha, double beta,
                               double gamma) noexcept nogil:
    """d act / d x at x (y = act(x)); PyTorch's choices at the kinks (the
    derivative of relu at 0 is 0, of hardtanh at its bounds 0)."""
    cdef double s, t, u, sp
    if act == ACT_RELU:
        return 1.0 if y > 0 else 0.0
    if act == ACT_RELU6:
        return 1.0 if (x > 0 and x < 6) else 0.0
    if act == ACT_HARDTANH:
        return 1.0 if (x > alpha and x < beta) else 0.0
    if act == ACT_LEAKY_RELU:
        return 1.0 if x > 0 else alpha
    if act == ACT_ELU:
        return 1.0 if x > 0 else y + alpha
    if act == ACT_EXPM1_SCALED:            # selu / celu: x > 0 ? beta x : alpha expm1(gamma x)
        return beta if x > 0 else alpha * gamma * exp(x * gamma)
    if act == ACT_SIGMOID:
        return y * (1.0 - y)
    if act == ACT_TANH:
        return 1.0 - y * y
    if act == ACT_SILU:
        s = _sigmoid(x)
        return s * (1.0 + x * (1.0 - s))
    if act == ACT_HARDSWISH:
        if x < -3:
            return 0.0
        if x <= 3:
            return x / 3.0 + 0.5
        return 1.0
    if act == ACT_HARDSIGMOID:
        return 1.0 / 6.0 if (x > -3 and x < 3) else 0.0
    if act == ACT_GELU:
        return 0.5 * (1.0 + erf(x * 0.7071067811865476)) + \
            x * exp(-0.5 * x * x) * 0.3989422804014327
    if act == ACT_GELU_TANH:
        u = 0.7978845608028654 * (x + 0.044715 * x * x * x)
        t = tanh(u)
        return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * 0.7978845608028654 * \
            (1.0 + 3.0 * 0.044715 * x * x)
    if act == ACT_MISH:
        sp = log1p(exp(-fabs(x))) + (x if x > 0 else 0.0)
        t = tanh(sp)
        return t + x * (1.0 - t * t) * _sigmoid(x)
    if act == ACT_SOFTPLUS:                # alpha: beta, beta: threshold
        return 1.0 if x * alpha > beta else _sigmoid(x * alpha)
    return 1.0


cdef inline void _clamp_backward(const floating* x, const floating* gy, floating* gx,
                                 index_t n, double lo, double hi) noexcept nogil:
    cdef index_t i
    cdef floating a = <floating>lo, b = <floating>hi
    for i in range(n):
        gx[i] = gy[i] if (x[i] > a and x[i] < b) else 0


cdef void _activation_backward(int act, const floating* x, const floating* y,
                               const floating* gy, floating* gx, index_t n, double alpha,
                               double beta, double gamma, int num_threads) noexcept nogil:
    cdef index_t c, i, start, stop
    cdef index_t chunks = _ceil_div(n, CHUNK)
    cdef double xv, yv
    with parallel(num_threads=max(1, min(num_threads, chunks))):
        fp_enter()
        for c in prange(chunks, schedule='static'):
            start = c * CHUNK
            stop = min(start + CHUNK, n)
            if act == ACT_RELU:                 # the common case, as a vector loop
                for i in range(start, stop):
                    gx[i] = gy[i] if y[i] > 0 else 0
            elif act == ACT_RELU6 or act == ACT_HARDTANH:
                _clamp_backward(x + start, gy + start, gx + start, stop - start,
                                0.0 if act == ACT_RELU6 else alpha,
                                6.0 if act == ACT_RELU6 else beta)
            else:
                for i in range(start, stop):
                    xv = x[i] if x != NULL else 0.0
                    yv = y[i] if y != NULL else 0.0
                    gx[i] = <floating>(gy[i] * _derivative(act, xv, yv, alpha, beta, gamma))


def activation_backward(int act, object x, object y, cnp.ndarray gy, cnp.ndarray gx,
                        double alpha, double beta, double gamma, int num_threads):
    """gx = gy * act'(x); x (the forward's input) or y (its output) may be None
    when the derivative does not read it. Contiguous arrays of one dtype."""
    cdef index_t n = gy.size
    cdef void* xp = _data(x)
    cdef void* yp = _data(y)
    cdef void* gyp = cnp.PyArray_DATA(gy)
    cdef void* gxp = cnp.PyArray_DATA(gx)
    if _is_f32(gy):
        with nogil:
            _activation_backward(act, <float*>xp, <float*>yp, <float*>gyp, <float*>gxp, n,
                                 alpha, beta, gamma, num_threads)
    else:
        with nogil:
            _activation_backward(act, <double*>xp, <double*>yp, <double*>gyp, <double*>gxp, n,
                                 alpha, beta, gamma, num_threads)


# ---------------------------------------------------------------- softmax

cdef void _softmax_backward(const floating* y, const floating* gy, floating* gx, index_t outer,
                            index_t n, index_t inner, bint log, int num_threads) noexcept nogil:
    """softmax: gx = y (gy - sum(gy y)); log_softmax: gx = gy - exp(y) sum(gy)."""
    cdef index_t task, o, i, j, base
    cdef double s
    with parallel(num_threads=num_threads):
        fp_enter()
        for task in prange(outer * inner, schedule='static'):
            o = task // inner
            i = task - o * inner
            base = o * n * inner + i
            s = 0
            for j in range(n):
                if log:
                    s = s + gy[base + j * inner]
                else:
                    s = s + <double>gy[base + j * inner] * y[base + j * inner]
            for j in range(n):
                if log:
                    gx[base + j * inner] = <floating>(gy[base + j * inner]
                                                      - exp(y[base + j * inner]) * s)
                else:
                    gx[base + j * inner] = <floating>(y[base + j * inner]
                                                      * (gy[base + j * inner] - s))


def softmax_backward(cnp.ndarray y, cnp.ndarray gy, cnp.ndarray gx, index_t outer, index_t n,
                     index_t inner, bint log, int num_threads):
    cdef void* yp = cnp.PyArray_DATA(y)
    cdef void* gyp = cnp.PyArray_DATA(gy)
    cdef void* gxp = cnp.PyArray_DATA(gx)
    if _is_f32(y):
        with nogil:
            _softmax_backward(<float*>yp, <float*>gyp, <float*>gxp, outer, n, inner, log,
                              num_threads)
    else:
        with nogil:
            _softmax_backward(<double*>yp, <double*>gyp, <double*>gxp, outer, n, inner, log,
                              num_threads)


# ---------------------------------------------------------------- convolution

cdef struct Geom:
    index_t images, channels
    index_t size[3]
    index_t out[3]
    index_t kernel[3]
    index_t stride[3]
    index_t pad[3]
    index_t dilation[3]


cdef Geom _geom(tuple g):
    """(images, channels, size3, out3, kernel3, stride3, pad3, dilation3) flattened."""
    cdef Geom r
    cdef int i
    r.images, r.channels = g[0], g[1]
    for i in range(3):
        r.size[i] = g[2 + i]
        r.out[i] = g[5 + i]
        r.kernel[i] = g[8 + i]
        r.stride[i] = g[11 + i]
        r.pad[i] = g[14 + i]
        r.dilation[i] = g[17 + i]
    return r


cdef struct Axes:
    # a Geom's per-axis sizes as the C headers take them
    long size[3]
    long out[3]
    long kernel[3]
    long stride[3]
    long pad[3]
    long dil[3]


cdef inline Axes _axes(Geom g) noexcept nogil:
    cdef Axes a
    cdef int i
    for i in range(3):
        a.size[i], a.out[i], a.kernel[i] = g.size[i], g.out[i], g.kernel[i]
        a.stride[i], a.pad[i], a.dil[i] = g.stride[i], g.pad[i], g.dilation[i]
    return a


cdef void _im2col_range(const floating* x, floating* cols, Geom g, index_t first,
                        index_t count, int num_threads) noexcept nogil:
    """cols[(c, tap), j] for the flat (image, position) indices first + j,
    j < count: the im2col columns of one chunk (im2col.h), a task per
    (c, kd, kh)."""
    cdef index_t plane = g.size[0] * g.size[1] * g.size[2]
    cdef index_t kdh = g.kernel[0] * g.kernel[1]
    cdef index_t task, c, r
    cdef Axes a = _axes(g)
    with parallel(num_threads=max(1, min(<index_t>num_threads, g.channels * kdh))):
        fp_enter()
        for task in prange(g.channels * kdh, schedule='static'):
            c = task // kdh
            r = task - c * kdh
            im2col_rows(x, g.channels * plane, c, r // g.kernel[1], r % g.kernel[1], a.size,
                        a.out, a.kernel, a.stride, a.pad, a.dil, first, count,
                        cols + task * g.kernel[2] * count, count)


cdef void _conv_weight(const floating* x, const floating* rows, floating* gw, floating* gwt,
                       floating* cols, Geom g, index_t groups, index_t cout, index_t chunk,
                       index_t col_block, int num_threads) noexcept nogil:
    """gw (cout, channels / groups * taps) = rows (cout, images * positions: the
    output gradient, channel-major) times the im2col columns of x, chunk by
    chunk: each chunk's columns are built in `cols` (channels * taps, chunk)
    and multiplied per (group, block of col_block columns) into gw, every
    chunk after the first added (beta = 1), so each element sums its chunks
    in order: results do not depend on the thread count. With gwt (not
    NULL) the products go to gw's transpose per group, the columns being the
    GEMM's left operand (OpenBLAS streams a much longer side better there),
    and gwt is transposed into gw at the end."""
    cdef index_t taps = g.kernel[0] * g.kernel[1] * g.kernel[2]
    cdef index_t total = g.images * g.out[0] * g.out[1] * g.out[2]
    cdef index_t cin_g = g.channels // groups, cout_g = cout // groups
    cdef index_t width = cin_g * taps
    cdef index_t blocks = (width + col_block - 1) // col_block
    cdef index_t first, count, task, grp, c0, nb
    cdef floating beta
    first = 0
    blas_enter()
    while first < total:
        count = min(chunk, total - first)
        _im2col_range(x, cols, g, first, count, num_threads)
        beta = 0 if first == 0 else 1
        with parallel(num_threads=min(<index_t>num_threads, groups * blocks)):
            fp_enter()
            for task in prange(groups * blocks, schedule='static'):
                grp = task // blocks
                c0 = (task - grp * blocks) * col_block
                nb = min(col_block, width - c0)
                if gwt != NULL:
                    gemm(False, True, <int>nb, <int>cout_g, <int>count, <floating>1,
                         cols + (grp * width + c0) * count, <int>count,
                         rows + grp * cout_g * total + first, <int>total, beta,
                         gwt + (grp * width + c0) * cout_g, <int>cout_g)
                else:
                    gemm(False, True, <int>cout_g, <int>nb, <int>count, <floating>1,
                         rows + grp * cout_g * total + first, <int>total,
                         cols + (grp * width + c0) * count, <int>count, beta,
                         gw + grp * cout_g * width + c0, <int>width)
        first = first + count
    blas_leave()
    if gwt == NULL:
        return
    with parallel(num_threads=min(<index_t>num_threads, groups)):
        for grp in prange(groups, schedule='static'):
            transpose(gwt + grp * width * cout_g, cout_g, width, cout_g,
                      gw + grp * cout_g * width, width)


cdef void _sum_parts(const floating* partial, index_t size, index_t parts, floating* gw,
                     int num_threads) noexcept nogil:
    """gw = the `parts` runs of `size` partial sums added in order, element by
    element (an order the shapes fix: the same bits on any thread count); gw
    may be the first run itself."""
    cdef index_t e, k
    cdef floating total
    with parallel(num_threads=num_threads):
        fp_enter()
        for e in prange(size, schedule='static'):
            total = partial[e]
            for k in range(1, parts):
                total = total + partial[k * size + e]
            gw[e] = total


cdef void _conv_weight_parts(const floating* x, const floating* rows, floating* gw,
                             floating* partial, floating* cols, Geom g, index_t groups,
                             index_t cout, index_t chunk, index_t parts,
                             int num_threads) noexcept nogil:
    """gw as _conv_weight computes it, for a small gw over many output
    positions: the positions cut into `parts` runs (by the shape alone),
    each run a task that builds its chunks' columns in its thread's slice of
    `cols` and multiplies them into its own partial gw (partial: parts x
    gw's size); then gw = the partials summed in order. Results do not
    depend on the thread count."""
    cdef index_t taps = g.kernel[0] * g.kernel[1] * g.kernel[2]
    cdef index_t kdh = g.kernel[0] * g.kernel[1]
    cdef index_t plane = g.size[0] * g.size[1] * g.size[2]
    cdef index_t total = g.images * g.out[0] * g.out[1] * g.out[2]
    cdef index_t cin_g = g.channels // groups, cout_g = cout // groups
    cdef index_t width = cin_g * taps, size = cout * width
    cdef index_t per_part = (total + parts - 1) // parts
    cdef index_t part, first, last, count, grp, task, e
    cdef floating* mine
    cdef floating* acc
    cdef Axes a = _axes(g)
    blas_enter()
    with parallel(num_threads=max(1, min(<index_t>num_threads, parts))):
        fp_enter()
        mine = cols + threadid() * g.channels * taps * chunk
        for part in prange(parts, schedule='static'):
            acc = partial + part * size
            first = part * per_part
            last = min(total, first + per_part)
            if first >= last:
                for e in range(size):
                    acc[e] = 0
            while first < last:
                count = min(chunk, last - first)
                for task in range(g.channels * kdh):
                    im2col_rows(x, g.channels * plane, task // kdh, (task % kdh) // g.kernel[1],
                                task % g.kernel[1], a.size, a.out, a.kernel, a.stride, a.pad,
                                a.dil, first,
                                count, mine + task * g.kernel[2] * count, count)
                for grp in range(groups):
                    gemm(False, True, <int>cout_g, <int>width, <int>count, <floating>1,
                         rows + grp * cout_g * total + first, <int>total,
                         mine + grp * width * count, <int>count,
                         <floating>(0 if first == part * per_part else 1),
                         acc + grp * cout_g * width, <int>width)
                first = first + count
    blas_leave()
    _sum_parts(partial, size, parts, gw, num_threads)


def conv_weight_parts(tuple geom, index_t groups, cnp.ndarray x, cnp.ndarray rows,
                      cnp.ndarray gw, cnp.ndarray partial, cnp.ndarray cols, index_t chunk,
                      index_t parts, int num_threads):
    """gw (cout, channels / groups, *kernel), as conv_weight, by `parts`
    runs of output positions summed at the end (small gw, many positions);
    partial: scratch of parts x gw's size; cols: scratch of num_threads x
    channels x taps x chunk elements. All C-contiguous, one dtype."""
    cdef Geom g = _geom(geom)
    cdef index_t cout = gw.shape[0]
    cdef index_t taps = g.kernel[0] * g.kernel[1] * g.kernel[2]
    if parts < 1 or chunk < 1 or num_threads < 1:
        raise ValueError("conv_weight_parts: parts, chunk and threads must be positive")
    if partial.size < parts * gw.size or cols.size < num_threads * g.channels * taps * chunk:
        raise ValueError("conv_weight_parts: scratch too small")
    cdef void* xp = cnp.PyArray_DATA(x)
    cdef void* rp = cnp.PyArray_DATA(rows)
    cdef void* wp = cnp.PyArray_DATA(gw)
    cdef void* pp = cnp.PyArray_DATA(partial)
    cdef void* cp = cnp.PyArray_DATA(cols)
    if _is_f32(x):
        with nogil:
            _conv_weight_parts(<float*>xp, <float*>rp, <float*>wp, <float*>pp, <float*>cp, g,
                               groups, cout, chunk, parts, num_threads)
    else:
        with nogil:
            _conv_weight_parts(<double*>xp, <double*>rp, <double*>wp, <double*>pp, <double*>cp,
                               g, groups, cout, chunk, parts, num_threads)


def conv_weight(tuple geom, index_t groups, cnp.ndarray x, cnp.ndarray rows, cnp.ndarray gw,
                object gwt, cnp.ndarray cols, index_t chunk, index_t col_block,
                int num_threads):
    """gw (cout, channels / groups, *kernel) of a convolution of x (images,
    channels, *size) whose output gradient, channel-major, is rows (cout,
    images * positions); gwt: None or scratch of gw's size (then the GEMMs
    compute gw's transpose); cols: scratch of channels * taps * chunk
    elements. All C-contiguous, one dtype."""
    cdef Geom g = _geom(geom)
    cdef index_t cout = gw.shape[0]
    cdef void* xp = cnp.PyArray_DATA(x)
    cdef void* rp = cnp.PyArray_DATA(rows)
    cdef void* wp = cnp.PyArray_DATA(gw)
    cdef void* tp = NULL if gwt is None else cnp.PyArray_DATA(<cnp.ndarray>gwt)
    cdef void* cp = cnp.PyArray_DATA(cols)
    if gwt is not None and (<cnp.ndarray>gwt).size < gw.size:
        raise ValueError("conv_weight: gwt scratch too small")
    if _is_f32(x):
        with nogil:
            _conv_weight(<float*>xp, <float*>rp, <float*>wp, <float*>tp, <float*>cp, g, groups,
                         cout, chunk, col_block, num_threads)
    else:
        with nogil:
            _conv_weight(<double*>xp, <double*>rp, <double*>wp, <double*>tp, <double*>cp, g,
                         groups, cout, chunk, col_block, num_threads)


# ---------------------------------------------------------------- Winograd weight gradient
#
# 2-D 3x3 stride-1 layers: gw = G^T [sum_t (A gy_t A^T) . (B^T d_t B)] G over
# the 4x4 tiles t of the output gradient and the 6x6 input tiles d_t under
# them (_winograd.pxd): 36 products per tile pair instead of 144, and one
# output transform per filter at the end. The tiles go in chunks (whole
# images, or tile rows of one image) fixed by the shape: a chunk's tiles are
# transformed into V (36, channels, tiles) and W (36, cout, tiles), then
# M[xi] (cout, channels) += W[xi] V[xi]^T for the 36 points xi, one GEMM each.
#
# The chunks fall into parts, runs of chunks fixed by the shape, each summed
# into its own M in chunk order; the parts' Ms are added in part order. With
# at least as many parts as threads, each thread takes whole parts: it
# transforms and multiplies its own chunks, so V and W never cross cores
# (sharing them, with the GEMMs split over the points, made the transforms
# slower at 2 threads than at 1). With fewer parts than threads, the threads
# share each chunk's transforms and GEMMs instead. Either way every M is the
# same sum of the same GEMMs: results do not depend on the thread count.

cdef enum:
    # Tiles a chunk: the GEMMs' depth (ResNet-18's 3x3 layers measured the
    # same from 256 to 512; 64 and 1024 up to 1.2x slower at 2 threads).
    WINO_WGRAD_CHUNK_TILES = 384
    # Parts at most, and their Ms' elements at most (64 -> 64 at 56x56,
    # batch 8, 2 threads: 2.6 ms with 8 parts, 5.2 ms sharing each chunk).
    WINO_WGRAD_PARTS_MAX = 8
    WINO_WGRAD_PARTS_ELEMENTS = 4 * 1024 * 1024
    WINO_WGRAD_MIN_CHANNELS = 8
    WINO_WGRAD_MIN_TILES = 16
    # With 16-lane vectors the GEMMs run twice as fast and the transforms do
    # not (gathers, planes a few tiles wide): Winograd then needs outputs at
    # least WINO_WGRAD_WIDE_MIN_OUT on each side (512 -> 512 at 7x7, batch 8:
    # 1.1-1.2x slower, 1.2-1.7x faster from 12x12) and, below
    # WINO_WGRAD_WIDE_MANY_TILES tiles, M (36 x cout x channels) within
    # WINO_WGRAD_WIDE_M_BYTES (512 -> 512 at 14x14: batch 1 1.2-1.4x slower,
    # batch 8 1.45x faster); with 8 lanes or none it wins from 5x5 on
    # (512 -> 512 at 7x7: 1.25x faster with AVX2, 1.9x without).
    WINO_WGRAD_MIN_OUT = 5
    WINO_WGRAD_WIDE_MIN_OUT = 8
    WINO_WGRAD_WIDE_MANY_TILES = 64
    WINO_WGRAD_WIDE_M_BYTES = 16 * 1024 * 1024

WINOGRAD_WEIGHT_CHUNK_TILES = WINO_WGRAD_CHUNK_TILES


def winograd_weight_pays(tuple geom, index_t cout, index_t itemsize):
    """Whether conv_weight_winograd applies to this weight gradient (a 2-D
    3x3 stride-1 undilated single-group convolution) and beats the im2col
    GEMMs on this target (the rules above)."""
    cdef Geom g = _geom(geom)
    cdef index_t tiles, least
    if not _wino_applies(g):
        return False
    tiles = g.images * _ceil_div(g.out[1], 4) * _ceil_div(g.out[2], 4)
    least = WINO_WGRAD_WIDE_MIN_OUT if block_vector(4) >= 16 else WINO_WGRAD_MIN_OUT
    if (min(g.channels, cout) < WINO_WGRAD_MIN_CHANNELS or tiles < WINO_WGRAD_MIN_TILES
            or min(g.out[1], g.out[2]) < least):
        return False
    return (block_vector(4) < 16 or tiles >= WINO_WGRAD_WIDE_MANY_TILES
            or 36 * cout * g.channels * itemsize <= WINO_WGRAD_WIDE_M_BYTES)


cdef bint _wino_applies(Geom g) noexcept nogil:
    return (g.kernel[0] == 1 and g.kernel[1] == 3 and g.kernel[2] == 3 and g.size[0] == 1
            and g.stride[1] == 1 and g.stride[2] == 1 and g.dilation[1] == 1
            and g.dilation[2] == 1)


cdef struct WinoChunks:
    index_t tiles_h, tiles_w, images_per, rows_per, per_image, count, max_tiles, parts
    index_t m_size, vw_size, thread_size


cdef WinoChunks _wino_chunks(Geom g, index_t cout, index_t chunk_tiles) noexcept nogil:
    """Whole images a chunk while an image has at most chunk_tiles tiles,
    else runs of tile rows within one image; as few chunks as that allows,
    evened out. Then the parts, and the scratch sizes: one M, one V and W,
    and one thread's transform rows (the gathered columns and half-done
    rows of one image's tiles of a chunk, and the output transform's
    (6, 3, channels) rows)."""
    cdef WinoChunks c
    cdef index_t image = 0
    c.tiles_h = _ceil_div(g.out[1], 4)
    c.tiles_w = _ceil_div(g.out[2], 4)
    image = c.tiles_h * c.tiles_w
    if image <= chunk_tiles:
        c.images_per = _ceil_div(g.images, _ceil_div(g.images, max(1, chunk_tiles // image)))
        c.count = _ceil_div(g.images, c.images_per)
        c.rows_per = c.tiles_h
        c.per_image = 1
    else:
        c.images_per = 1
        c.rows_per = _ceil_div(c.tiles_h, _ceil_div(c.tiles_h, max(1, chunk_tiles // c.tiles_w)))
        c.per_image = _ceil_div(c.tiles_h, c.rows_per)
        c.count = g.images * c.per_image
    c.max_tiles = c.images_per * c.rows_per * c.tiles_w
    c.m_size = 36 * cout * g.channels
    c.vw_size = 36 * (g.channels + cout) * c.max_tiles
    c.thread_size = 42 * c.rows_per * c.tiles_w + 18 * g.channels
    c.parts = max(1, min(c.count, WINO_WGRAD_PARTS_MAX, WINO_WGRAD_PARTS_ELEMENTS // c.m_size))
    return c


cdef inline bint _wino_by_parts(WinoChunks c, int num_threads) noexcept nogil:
    return num_threads <= c.parts


def winograd_weight_workspace(tuple geom, index_t cout, index_t chunk_tiles, int num_threads):
    """Elements of scratch conv_weight_winograd needs: the parts' Ms, a V and
    W per thread taking whole parts (else one), and the threads' rows."""
    cdef Geom g = _geom(geom)
    cdef WinoChunks c = _wino_chunks(g, cout, chunk_tiles)
    cdef index_t copies = num_threads if _wino_by_parts(c, num_threads) else 1
    return c.parts * c.m_size + copies * c.vw_size + num_threads * c.thread_size


cdef inline index_t _wino_chunk_images(Geom g, WinoChunks c, index_t chunk) noexcept nogil:
    if c.per_image == 1:
        return min(g.images, (chunk + 1) * c.images_per) - chunk * c.images_per
    return 1


cdef inline index_t _wino_chunk_tiles(Geom g, WinoChunks c, index_t chunk) noexcept nogil:
    if c.per_image == 1:
        return _wino_chunk_images(g, c, chunk) * c.tiles_h * c.tiles_w
    return (min(c.tiles_h, (chunk % c.per_image + 1) * c.rows_per)
            - chunk % c.per_image * c.rows_per) * c.tiles_w


cdef inline void _wino_transform(bint input, const floating* planes, Geom g, WinoChunks c,
                                 index_t channels, index_t chunk, index_t task,
                                 floating* mine, floating* dst) noexcept nogil:
    """Transform task (image i of the chunk, channel ch) of a chunk: of the
    input (V) or of the output gradient (W); dst: V or W."""
    cdef index_t i = task // channels, ch = task % channels
    cdef index_t n0, r0, r1, seg, nt = _wino_chunk_tiles(g, c, chunk)
    if c.per_image == 1:
        n0, r0, r1 = chunk * c.images_per, 0, c.tiles_h
    else:
        n0 = chunk // c.per_image
        r0 = (chunk % c.per_image) * c.rows_per
        r1 = min(c.tiles_h, r0 + c.rows_per)
    seg = (r1 - r0) * c.tiles_w
    if input:
        wino_grad_tiles(True, planes + ((n0 + i) * channels + ch) * g.size[1] * g.size[2],
                        g.size[1], g.size[2], g.pad[1], g.pad[2], r0, r1, c.tiles_w, mine,
                        mine + 6 * seg, dst + ch * nt + i * seg, channels * nt)
    else:
        wino_grad_tiles(False, planes + ((n0 + i) * channels + ch) * g.out[1] * g.out[2],
                        g.out[1], g.out[2], 0, 0, r0, r1, c.tiles_w, mine, mine + 6 * seg,
                        dst + ch * nt + i * seg, channels * nt)


cdef inline void _wino_point_gemm(const floating* v, const floating* w, floating* m,
                                  index_t cin, index_t cout, index_t nt, index_t xi,
                                  bint first) noexcept nogil:
    gemm(False, True, <int>cout, <int>cin, <int>nt, <floating>1, w + xi * cout * nt, <int>nt,
         v + xi * cin * nt, <int>nt, <floating>(0 if first else 1), m + xi * cout * cin,
         <int>cin)


cdef void _conv_weight_winograd(const floating* x, const floating* gy, floating* gw,
                                floating* work, Geom g, index_t cout, index_t chunk_tiles,
                                int num_threads) noexcept nogil:
    cdef WinoChunks c = _wino_chunks(g, cout, chunk_tiles)
    cdef index_t cin = g.channels, tasks, nt
    cdef floating* m = work
    cdef floating* vws = m + c.parts * c.m_size
    cdef bint by_parts = _wino_by_parts(c, num_threads)
    cdef floating* rows = vws + (num_threads if by_parts else 1) * c.vw_size
    cdef index_t part, chunk, first, task, xi, o, i, k
    cdef floating* mine
    cdef floating* v
    cdef floating* w
    blas_enter()
    if by_parts:
        with parallel(num_threads=num_threads):
            fp_enter()
            mine = rows + threadid() * c.thread_size
            v = vws + threadid() * c.vw_size
            w = v + 36 * cin * c.max_tiles
            for part in prange(c.parts, schedule='dynamic'):
                first = part * c.count // c.parts
                for chunk in range(first, (part + 1) * c.count // c.parts):
                    tasks = _wino_chunk_images(g, c, chunk)
                    nt = _wino_chunk_tiles(g, c, chunk)
                    for task in range(tasks * cin):
                        _wino_transform(True, x, g, c, cin, chunk, task, mine, v)
                    for task in range(tasks * cout):
                        _wino_transform(False, gy, g, c, cout, chunk, task, mine, w)
                    for xi in range(36):
                        _wino_point_gemm(v, w, m + part * c.m_size, cin, cout, nt, xi,
                                         chunk == first)
    else:
        v = vws
        w = v + 36 * cin * c.max_tiles
        for part in range(c.parts):
            first = part * c.count // c.parts
            for chunk in range(first, (part + 1) * c.count // c.parts):
                tasks = _wino_chunk_images(g, c, chunk) * (cin + cout)
                nt = _wino_chunk_tiles(g, c, chunk)
                with parallel(num_threads=min(<index_t>num_threads, tasks)):
                    fp_enter()
                    mine = rows + threadid() * c.thread_size
                    for task in prange(tasks, schedule='static'):
                        if task % (cin + cout) < cin:
                            _wino_transform(True, x, g, c, cin, chunk,
                                            task // (cin + cout) * cin + task % (cin + cout),
                                            mine, v)
                        else:
                            _wino_transform(False, gy, g, c, cout, chunk,
                                            task // (cin + cout) * cout
                                            + task % (cin + cout) - cin, mine, w)
                with parallel(num_threads=min(<index_t>num_threads, 36)):
                    fp_enter()
                    for xi in prange(36, schedule='static'):
                        _wino_point_gemm(v, w, m + part * c.m_size, cin, cout, nt, xi,
                                         chunk == first)
    blas_leave()
    if c.parts > 1:        # into the first part's M
        _sum_parts(m, c.m_size, c.parts, m, num_threads)
    # gw[o][c] = G^T M[.][o][c] G: along the points' columns, then their rows
    with parallel(num_threads=min(<index_t>num_threads, cout)):
        fp_enter()
        mine = rows + threadid() * c.thread_size + 42 * c.rows_per * c.tiles_w
        for o in prange(cout, schedule='static'):
            for i in range(6):
                wino_gt(m + (6 * i * cout + o) * cin, m + ((6 * i + 1) * cout + o) * cin,
                        m + ((6 * i + 2) * cout + o) * cin, m + ((6 * i + 3) * cout + o) * cin,
                        m + ((6 * i + 4) * cout + o) * cin, m + ((6 * i + 5) * cout + o) * cin,
                        mine + 3 * i * cin, cin, 1, cin)
            for k in range(3):
                wino_gt(mine + k * cin, mine + (3 + k) * cin, mine + (6 + k) * cin,
                        mine + (9 + k) * cin, mine + (12 + k) * cin, mine + (15 + k) * cin,
                        gw + o * cin * 9 + k, 3, 9, cin)


def conv_weight_winograd(tuple geom, cnp.ndarray x, cnp.ndarray gy, cnp.ndarray gw,
                         cnp.ndarray work, index_t chunk_tiles, int num_threads):
    """gw (cout, channels, 3, 3) of a 2-D 3x3 stride-1 undilated single-group
    convolution of x (images, channels, h, w) with output gradient gy, by
    Winograd (above); work: winograd_weight_workspace elements. All
    C-contiguous, one dtype, finite (a transform mixes an Inf into NaNs)."""
    cdef Geom g = _geom(geom)
    cdef index_t cout = gw.shape[0]
    if not _wino_applies(g) or gw.shape[1] != g.channels:
        raise ValueError("conv_weight_winograd: needs a 2-D 3x3 stride-1 undilated "
                         "single-group convolution")
    if chunk_tiles < 1 or num_threads < 1:
        raise ValueError("conv_weight_winograd: chunk_tiles and threads must be positive")
    if work.size < winograd_weight_workspace(geom, cout, chunk_tiles, num_threads):
        raise ValueError("conv_weight_winograd: scratch too small")
    cdef void* xp = cnp.PyArray_DATA(x)
    cdef void* gp = cnp.PyArray_DATA(gy)
    cdef void* wp = cnp.PyArray_DATA(gw)
    cdef void* sp = cnp.PyArray_DATA(work)
    if _is_f32(x):
        with nogil:
            _conv_weight_winograd(<float*>xp, <float*>gp, <float*>wp, <float*>sp, g, cout,
                                  chunk_tiles, num_threads)
    else:
        with nogil:
            _conv_weight_winograd(<double*>xp, <double*>gp, <double*>wp, <double*>sp, g,
                                  cout, chunk_tiles, num_threads)


cdef extern from "conv_wgrad.h" nogil:
    long FCNN_WGRAD_KW_MAX
    long FCNN_WGRAD_COUT_MAX
    long FCNN_WGRAD_PLANE_ALIGN
    long FCNN_WGRAD_ROWS_MAX
    long fcnn_wgrad_tile(long kw)
    void fcnn_wgrad_f32(const float* xp, const float* gp, float* gw, long images,
                        long channels, long cout, long c, long co0, long r0, long nrows,
                        const long* size, const long* out, const long* kernel,
                        const long* stride, const long* pad, const long* dil, long plen,
                        long plane_len, long out_len)
    void fcnn_wgrad_f64(const double* xp, const double* gp, double* gw, long images,
                        long channels, long cout, long c, long co0, long r0, long nrows,
                        const long* size, const long* out, const long* kernel,
                        const long* stride, const long* pad, const long* dil, long plen,
                        long plane_len, long out_len)

WGRAD_KW_MAX = FCNN_WGRAD_KW_MAX
WGRAD_COUT_MAX = FCNN_WGRAD_COUT_MAX
WGRAD_PLANE_ALIGN = FCNN_WGRAD_PLANE_ALIGN


cdef inline index_t _direct_part_start(index_t images, index_t parts, index_t p) noexcept nogil:
    return images * p // parts


cdef inline void _wgrad_call(const floating* xp, const floating* gp, floating* gw, Geom g,
                             index_t cout, index_t n0, index_t n1, index_t c, index_t co0,
                             index_t r0, index_t nrows, const Axes* a, index_t plen,
                             index_t plane_len, index_t out_len) noexcept nogil:
    """One task of conv_wgrad.h on images n0 .. n1 - 1, into gw."""
    if floating is float:
        fcnn_wgrad_f32(xp + n0 * g.channels * plane_len, gp + n0 * cout * out_len, gw,
                       n1 - n0, g.channels, cout, c, co0, r0, nrows, a.size, a.out, a.kernel,
                       a.stride, a.pad, a.dil, plen, plane_len, out_len)
    else:
        fcnn_wgrad_f64(xp + n0 * g.channels * plane_len, gp + n0 * cout * out_len, gw,
                       n1 - n0, g.channels, cout, c, co0, r0, nrows, a.size, a.out, a.kernel,
                       a.stride, a.pad, a.dil, plen, plane_len, out_len)


cdef void _conv_weight_direct(const floating* x, const floating* gy, floating* xp,
                              floating* gp, floating* partial, floating* gw, Geom g,
                              index_t cout, DirectSizes d, int num_threads) noexcept nogil:
    """Lay out xp and gp and sum gw over the images in parts: runs of images
    fixed by the batch (WGRAD_DIRECT_PARTS at most), each summed into its own
    partial gw, the parts then added in order, so the result does not depend
    on the thread count. With at least as many parts as threads, a thread
    takes whole parts: it lays out its own images and reads them back from
    its own cache (from the other core's, reads measured 3x slower). With
    fewer, the layout and then the tasks (part, input channel, output-channel
    tile, run of kernel rows) are shared out."""
    cdef index_t tile = fcnn_wgrad_tile(g.kernel[2])
    cdef index_t co_tiles = (cout + tile - 1) // tile
    cdef index_t rows = g.kernel[0] * g.kernel[1]
    cdef index_t parts = min(g.images, <index_t>WGRAD_DIRECT_PARTS)
    cdef index_t size = cout * g.channels * rows * g.kernel[2]
    cdef index_t plane_len = d.rows * d.width * g.size[0], out_len = d.plane * g.out[0]
    cdef index_t runs, run, tasks, task, part, c, co0, r0, n0, n1
    cdef Axes a = _axes(g)
    if parts >= num_threads:
        run = min(rows, <index_t>FCNN_WGRAD_ROWS_MAX)
        runs = _ceil_div(rows, run)
        with parallel(num_threads=num_threads):
            fp_enter()
            for part in prange(parts, schedule='static'):
                n0 = _direct_part_start(g.images, parts, part)
                n1 = _direct_part_start(g.images, parts, part + 1)
                _direct_layout_planes(x, gy, xp, gp, g, cout, d, n0 * g.channels * g.size[0],
                                      n1 * g.channels * g.size[0], n0 * cout * g.out[0],
                                      n1 * cout * g.out[0])
                for task in range(g.channels * co_tiles * runs):
                    c = task // (co_tiles * runs)
                    co0 = (task // runs) % co_tiles * tile
                    r0 = task % runs * run
                    _wgrad_call(xp, gp, partial + part * size, g, cout, n0, n1, c, co0, r0,
                                min(run, rows - r0), &a, d.plen, plane_len, out_len)
    else:
        _direct_layout(x, gy, xp, gp, g, cout, d, num_threads)
        # runs of kernel rows: as few as give 8 tasks a thread
        runs = max(_ceil_div(rows, FCNN_WGRAD_ROWS_MAX),
                   min(rows, _ceil_div(8 * num_threads, parts * g.channels * co_tiles)))
        run = _ceil_div(rows, runs)
        runs = _ceil_div(rows, run)
        tasks = parts * g.channels * co_tiles * runs
        with parallel(num_threads=max(1, min(<index_t>num_threads, tasks))):
            fp_enter()
            for task in prange(tasks, schedule='static'):
                part = task // (g.channels * co_tiles * runs)
                c = task // (co_tiles * runs) % g.channels
                co0 = (task // runs) % co_tiles * tile
                r0 = task % runs * run
                _wgrad_call(xp, gp, partial + part * size, g, cout,
                            _direct_part_start(g.images, parts, part),
                            _direct_part_start(g.images, parts, part + 1), c, co0, r0,
                            min(run, rows - r0), &a, d.plen, plane_len, out_len)
    # threads only for large gradients
    _sum_parts(partial, size, parts, gw, num_threads if size >= CHUNK else 1)


cdef void _direct_layout(const floating* x, const floating* gy, floating* xp, floating* gp,
                         Geom g, index_t cout, DirectSizes d, int num_threads) noexcept nogil:
    """All of xp and gp, a task per plane of each."""
    cdef index_t planes = g.images * g.channels * g.size[0]
    cdef index_t outs = g.images * cout * g.out[0]
    cdef index_t t
    with parallel(num_threads=max(1, min(<index_t>num_threads, planes))):
        for t in prange(planes + outs, schedule='static'):
            if t < planes:
                _direct_layout_planes(x, gy, xp, gp, g, cout, d, t, t + 1, 0, 0)
            else:
                _direct_layout_planes(x, gy, xp, gp, g, cout, d, 0, 0, t - planes,
                                      t - planes + 1)


cdef void _direct_layout_planes(const floating* x, const floating* gy, floating* xp,
                                floating* gp, Geom g, index_t cout, DirectSizes d,
                                index_t in0, index_t in1, index_t out0,
                                index_t out1) noexcept nogil:
    """Input planes in0 .. in1 - 1 into xp (zero-padded, rows split by phase)
    and output gradient planes out0 .. out1 - 1 into gp (rows R apart)."""
    cdef index_t sh = g.stride[1], sw = g.stride[2], width = d.width, plen = d.plen
    cdef index_t rows = d.rows, out_plane = d.plane
    cdef index_t h = max(0, min(g.size[1], rows - g.pad[1]))
    cdef index_t w = max(0, min(g.size[2], width - g.pad[2]))
    cdef index_t row = sh * sw * plen, t, i, ph, q, col
    cdef const floating* src
    cdef floating* dst
    for t in range(in0, in1):
        src = x + t * g.size[1] * g.size[2]
        dst = xp + t * rows * width
        memset(dst, 0, rows * width * sizeof(floating))
        for i in range(h):
            if sw == 1:
                memcpy(dst + (g.pad[1] + i) * width + g.pad[2], src + i * g.size[2],
                       w * sizeof(floating))
            else:
                for ph in range(sw):
                    for q in range(plen):
                        col = q * sw + ph - g.pad[2]
                        if 0 <= col < w:
                            dst[(g.pad[1] + i) * width + ph * plen + q] = src[i * g.size[2] + col]
    for t in range(out0, out1):
        src = gy + t * g.out[1] * g.out[2]
        dst = gp + t * out_plane
        memset(dst, 0, out_plane * sizeof(floating))
        for i in range(g.out[1]):
            memcpy(dst + i * row, src + i * g.out[2], g.out[2] * sizeof(floating))


cdef struct DirectSizes:
    index_t plen, rows, width, plane


cdef DirectSizes _direct_sizes(Geom g) noexcept nogil:
    """conv_wgrad.h's layout: the phase-row length; the padded plane's rows
    (sh spare rows, and enough more for whole vectors past the last output)
    and row length; an output gradient plane's elements (zeros up to whole
    vectors)."""
    cdef DirectSizes d
    d.plen = g.out[2] + (g.kernel[2] - 1) * g.dilation[2] // g.stride[2] + 1
    d.width = d.plen * g.stride[2]
    d.rows = ((g.out[1] - 1) * g.stride[1] + (g.kernel[1] - 1) * g.dilation[1] + 1
              + g.stride[1] + _ceil_div(FCNN_WGRAD_PLANE_ALIGN, d.width))
    d.plane = (_ceil_div(g.out[1] * g.stride[1] * d.width, FCNN_WGRAD_PLANE_ALIGN)
               * FCNN_WGRAD_PLANE_ALIGN)
    return d


def direct_layout_shapes(tuple geom, index_t cout):
    """The shapes of conv_weight_direct's operands xp and gp, and the
    phase-row length plen (conv_wgrad.h)."""
    cdef Geom g = _geom(geom)
    cdef DirectSizes d = _direct_sizes(g)
    return ((g.images, g.channels, g.size[0], d.rows, d.width),
            (g.images, cout, g.out[0], d.plane), d.plen)


def _check_direct_operands(tuple geom, cnp.ndarray x, cnp.ndarray gy, cnp.ndarray xp,
                           cnp.ndarray gp, str op):
    cdef Geom g = _geom(geom)
    cdef index_t cout = gy.shape[1]
    cdef DirectSizes d = _direct_sizes(g)
    if ((<object>xp).shape, (<object>gp).shape, d.plen) != direct_layout_shapes(geom, cout) or (
            x.size != g.images * g.channels * g.size[0] * g.size[1] * g.size[2]
            or gy.size != g.images * cout * g.out[0] * g.out[1] * g.out[2]):
        raise ValueError(f"{op}: operand shapes do not match the geometry")
    if not all(a.flags.c_contiguous and a.dtype == x.dtype and a.dtype in (np.float32, np.float64)
               for a in (x, gy, xp, gp)):
        raise ValueError(f"{op}: operands must be C-contiguous and of one float dtype")


def conv_weight_direct(tuple geom, cnp.ndarray x, cnp.ndarray gy, cnp.ndarray xp,
                       cnp.ndarray gp, cnp.ndarray partial, cnp.ndarray gw, int num_threads):
    """gw (cout, channels, *kernel) of an ungrouped convolution with at most
    WGRAD_COUT_MAX output channels and kernel width at most WGRAD_KW_MAX,
    from x (images, channels, *size) and gy (images, cout, *out): lays out
    xp and gp (direct_layout_shapes; conv_wgrad.h) and sums in
    direct_parts(images) parts, each into its slice of `partial` (gw.size
    elements a part). All C-contiguous, one float dtype."""
    cdef Geom g = _geom(geom)
    cdef index_t cout = gw.shape[0]
    cdef DirectSizes d = _direct_sizes(g)
    _check_direct_operands(geom, x, gy, xp, gp, "conv_weight_direct")
    if (gw.size != cout * g.channels * g.kernel[0] * g.kernel[1] * g.kernel[2]
            or gy.shape[1] != cout or partial.size < direct_parts(g.images) * gw.size):
        raise ValueError("conv_weight_direct: gw or partial does not match the geometry")
    if not (partial.flags.c_contiguous and gw.flags.c_contiguous
            and partial.dtype == gw.dtype == x.dtype):
        raise ValueError("conv_weight_direct: gw and partial must be C-contiguous, of the "
                         "operands' dtype")
    cdef void* a = cnp.PyArray_DATA(x)
    cdef void* b = cnp.PyArray_DATA(gy)
    cdef void* c = cnp.PyArray_DATA(xp)
    cdef void* dp = cnp.PyArray_DATA(gp)
    cdef void* pp = cnp.PyArray_DATA(partial)
    cdef void* wp = cnp.PyArray_DATA(gw)
    if _is_f32(x):
        with nogil:
            _conv_weight_direct(<float*>a, <float*>b, <float*>c, <float*>dp, <float*>pp,
                                <float*>wp, g, cout, d, num_threads)
    else:
        with nogil:
            _conv_weight_direct(<double*>a, <double*>b, <double*>c, <double*>dp, <double*>pp,
                                <double*>wp, g, cout, d, num_threads)


def direct_parts(index_t images):
    """The parts conv_weight_direct sums a batch of `images` in."""
    return max(1, min(images, <index_t>WGRAD_DIRECT_PARTS))


cdef void _depthwise_input(const floating* gy, const floating* w, floating* gx, Geom g,
                           index_t multiplier, int num_threads) noexcept nogil:
    """gx of a depthwise convolution (groups == channels, `multiplier` output
    channels per input channel): each input plane is one task, zeroed, then
    every output position of its channels scattered tap by tap in a fixed order."""
    cdef index_t taps = g.kernel[0] * g.kernel[1] * g.kernel[2]
    cdef index_t positions = g.out[0] * g.out[1] * g.out[2]
    cdef index_t plane = g.size[0] * g.size[1] * g.size[2]
    cdef index_t task, img, c, m, t, td, th, tw, o0, o1, o2, i0, i1, i2, j
    cdef floating* dst
    cdef const floating* src
    cdef const floating* wk
    cdef floating v
    with parallel(num_threads=num_threads):
        fp_enter()
        for task in prange(g.images * g.channels, schedule='static'):
            img = task // g.channels
            c = task - img * g.channels
            dst = gx + task * plane
            for j in range(plane):
                dst[j] = 0
            for m in range(multiplier):
                src = gy + (img * g.channels * multiplier + c * multiplier + m) * positions
                wk = w + (c * multiplier + m) * taps
                for o0 in range(g.out[0]):
                    for o1 in range(g.out[1]):
                        for o2 in range(g.out[2]):
                            v = src[(o0 * g.out[1] + o1) * g.out[2] + o2]
                            for t in range(taps):
                                td = t // (g.kernel[1] * g.kernel[2])
                                th = (t // g.kernel[2]) % g.kernel[1]
                                tw = t % g.kernel[2]
                                i0 = o0 * g.stride[0] + td * g.dilation[0] - g.pad[0]
                                i1 = o1 * g.stride[1] + th * g.dilation[1] - g.pad[1]
                                i2 = o2 * g.stride[2] + tw * g.dilation[2] - g.pad[2]
                                if (0 <= i0 < g.size[0] and 0 <= i1 < g.size[1]
                                        and 0 <= i2 < g.size[2]):
                                    dst[(i0 * g.size[1] + i1) * g.size[2] + i2] += v * wk[t]


def depthwise_input(tuple geom, index_t multiplier, cnp.ndarray gy, cnp.ndarray w,
                    cnp.ndarray gx, int num_threads):
    cdef Geom g = _geom(geom)
    cdef void* gyp = cnp.PyArray_DATA(gy)
    cdef void* wp = cnp.PyArray_DATA(w)
    cdef void* gxp = cnp.PyArray_DATA(gx)
    if _is_f32(gy):
        with nogil:
            _depthwise_input(<float*>gyp, <float*>wp, <float*>gxp, g, multiplier, num_threads)
    else:
        with nogil:
            _depthwise_input(<double*>gyp, <double*>wp, <double*>gxp, g, multiplier,
                             num_threads)


cdef void _depthwise_weight(const floating* x, const floating* gy, floating* gw, Geom g,
                            index_t multiplier, int num_threads) noexcept nogil:
    """gw[oc, tap] = sum over images and output positions of gy * x at the tap:
    one task per (output channel, tap), summed in double in a fixed order."""
    cdef index_t taps = g.kernel[0] * g.kernel[1] * g.kernel[2]
    cdef index_t positions = g.out[0] * g.out[1] * g.out[2]
    cdef index_t plane = g.size[0] * g.size[1] * g.size[2]
    cdef index_t outc = g.channels * multiplier
    cdef index_t task, oc, c, t, td, th, tw, img, o0, o1, o2, i0, i1, i2
    cdef const floating* src
    cdef const floating* grad
    cdef double acc
    with parallel(num_threads=num_threads):
        fp_enter()
        for task in prange(outc * taps, schedule='static'):
            oc = task // taps
            t = task - oc * taps
            c = oc // multiplier
            td = t // (g.kernel[1] * g.kernel[2])
            th = (t // g.kernel[2]) % g.kernel[1]
            tw = t % g.kernel[2]
            acc = 0
            for img in range(g.images):
                src = x + (img * g.channels + c) * plane
                grad = gy + (img * outc + oc) * positions
                for o0 in range(g.out[0]):
                    i0 = o0 * g.stride[0] + td * g.dilation[0] - g.pad[0]
                    if i0 < 0 or i0 >= g.size[0]:
                        continue
                    for o1 in range(g.out[1]):
                        i1 = o1 * g.stride[1] + th * g.dilation[1] - g.pad[1]
                        if i1 < 0 or i1 >= g.size[1]:
                            continue
                        for o2 in range(g.out[2]):
                            i2 = o2 * g.stride[2] + tw * g.dilation[2] - g.pad[2]
                            if 0 <= i2 < g.size[2]:
                                acc = acc + <double>grad[(o0 * g.out[1] + o1) * g.out[2] + o2] \
                                    * src[(i0 * g.size[1] + i1) * g.size[2] + i2]
            gw[task] = <floating>acc


def depthwise_weight(tuple geom, index_t multiplier, cnp.ndarray x, cnp.ndarray gy,
                     cnp.ndarray gw, int num_threads):
    cdef Geom g = _geom(geom)
    cdef void* xp = cnp.PyArray_DATA(x)
    cdef void* gyp = cnp.PyArray_DATA(gy)
    cdef void* gwp = cnp.PyArray_DATA(gw)
    if _is_f32(x):
        with nogil:
            _depthwise_weight(<float*>xp, <float*>gyp, <float*>gwp, g, multiplier, num_threads)
    else:
        with nogil:
            _depthwise_weight(<double*>xp, <double*>gyp, <double*>gwp, g, multiplier,
                              num_threads)


# ---------------------------------------------------------------- channel sums

cdef void _channel_sums(const floating* a, double* out, index_t outer, index_t channels,
                        index_t inner, int num_threads) noexcept nogil:
    """out[c] = sum over (outer, inner) of a: a task per channel, each plane
    summed in vector lanes (reduce.h), the planes in order. With inner 1 (a
    linear layer's rows) the rows are added in order, vectors across the
    channels: one task."""
    cdef index_t c, o
    cdef double acc
    if inner == 1:
        for c in range(channels):
            out[c] = 0
        for o in range(outer):
            for c in range(channels):
                out[c] += a[o * channels + c]
        return
    with parallel(num_threads=num_threads):
        fp_enter()
        for c in prange(channels, schedule='static'):
            acc = 0
            for o in range(outer):
                acc = acc + _sum(a + (o * channels + c) * inner, inner)
            out[c] = acc


def channel_sums(cnp.ndarray a, cnp.ndarray out, index_t outer, index_t channels,
                 index_t inner, int num_threads):
    """out (float64, channels) = per-channel sums of a viewed as (outer,
    channels, inner), C-contiguous."""
    cdef void* ap = cnp.PyArray_DATA(a)
    cdef double* op = <double*>cnp.PyArray_DATA(out)
    if _is_f32(a):
        with nogil:
            _channel_sums(<float*>ap, op, outer, channels, inner, num_threads)
    else:
        with nogil:
            _channel_sums(<double*>ap, op, outer, channels, inner, num_threads)


# ---------------------------------------------------------------- normalizations

cdef void _batch_norm_backward(const floating* x, const floating* gy, floating* gx,
                               const floating* weight, const double* mean_in,
                               const double* invstd_in, double eps, bint training,
                               double* gweight, double* gbias, index_t batch,
                               index_t channels, index_t inner, double* ws,
                               int num_threads) noexcept nogil:
    """One task per channel. Training: the batch statistics again (two passes
    in double), then sum(gy) and sum(gy * xhat), then
    gx = w invstd (gy - sum(gy) / M - xhat sum(gy xhat) / M).
    Eval: the given statistics, gx = gy w invstd."""
    cdef index_t c, n
    cdef index_t count = batch * inner
    cdef double mean, var, invstd, sdy, sdyx, w, scale, k1, k2
    cdef double* part
    cdef const floating* px
    cdef const floating* pg
    cdef floating* po
    with parallel(num_threads=num_threads):
        fp_enter()
        part = thread_run(ws, 2, threadid())
        for c in prange(channels, schedule='static'):
            if training:
                mean = 0
                for n in range(batch):
                    _sums(x + (n * channels + c) * inner, inner, 0.0, part)
                    mean = mean + part[0]
                mean = mean / count
                var = 0
                for n in range(batch):
                    _sums(x + (n * channels + c) * inner, inner, mean, part)
                    var = var + part[1]
                invstd = 1.0 / sqrt(var / count + eps)
            else:
                mean = mean_in[c]
                invstd = invstd_in[c]
            sdy = 0
            sdyx = 0
            for n in range(batch):
                _grad_sums(x + (n * channels + c) * inner, gy + (n * channels + c) * inner,
                           inner, mean, part)
                sdy = sdy + part[0]
                sdyx = sdyx + part[1]
            gbias[c] = sdy
            gweight[c] = sdyx * invstd
            w = weight[c] if weight != NULL else 1.0
            scale = w * invstd
            if gx == NULL:
                continue
            if training:
                k1 = sdy / count
                k2 = sdyx * invstd * invstd / count
            else:
                k1 = 0
                k2 = 0
            for n in range(batch):
                px = x + (n * channels + c) * inner
                pg = gy + (n * channels + c) * inner
                po = gx + (n * channels + c) * inner
                _bn_dx(px, pg, po, inner, scale, k1, k2, mean)


cdef inline void _bn_dx(const floating* px, const floating* pg, floating* po, index_t n,
                        double scale, double k1, double k2, double mean) noexcept nogil:
    cdef index_t i
    cdef floating a = <floating>scale, b = <floating>(scale * k1), k = <floating>(scale * k2)
    cdef floating m = <floating>mean
    for i in range(n):
        po[i] = a * pg[i] - b - (px[i] - m) * k


def batch_norm_backward(cnp.ndarray x, cnp.ndarray gy, object gx, object weight, object mean,
                        object invstd, double eps, bint training, cnp.ndarray gweight,
                        cnp.ndarray gbias, index_t batch, index_t channels, index_t inner,
                        int num_threads):
    """x, gy, gx (None: not wanted) (batch, channels, inner) C-contiguous;
    weight (channels,) or None; mean, invstd float64 (channels,) in eval mode;
    gweight, gbias float64 (channels,)."""
    cdef void* xp = cnp.PyArray_DATA(x)
    cdef void* gyp = cnp.PyArray_DATA(gy)
    cdef void* gxp = _data(gx)
    cdef void* wp = _data(weight)
    cdef double* mp = <double*>_data(mean)
    cdef double* sp = <double*>_data(invstd)
    cdef double* gwp = <double*>cnp.PyArray_DATA(gweight)
    cdef double* gbp = <double*>cnp.PyArray_DATA(gbias)
    cdef cnp.ndarray scratch = np.empty(thread_doubles(2, num_threads))
    cdef double* ws = <double*>cnp.PyArray_DATA(scratch)
    if _is_f32(x):
        with nogil:
            _batch_norm_backward(<float*>xp, <float*>gyp, <float*>gxp, <float*>wp, mp, sp, eps,
                                 training, gwp, gbp, batch, channels, inner, ws, num_threads)
    else:
        with nogil:
            _batch_norm_backward(<double*>xp, <double*>gyp, <double*>gxp, <double*>wp, mp, sp,
                                 eps, training, gwp, gbp, batch, channels, inner, ws,
                                 num_threads)


cdef void _rows_norm_backward(const floating* x, const floating* gy, floating* gx,
                              const floating* weight, double eps, index_t rows, index_t groups,
                              index_t row_channels, index_t inner, double* pdy,
                              double* pdyx, int num_threads) noexcept nogil:
    """Rows of row_channels * inner elements, each normalized by its own
    statistics (group norm: row (n, g); instance norm: (n, c); layer norm: n
    with inner == 1); the affine weight of element j of row r is
    weight[(r % groups) * row_channels + j // inner]. One task per row:
    gx = rstd (g - mean(g) - xhat mean(g xhat)) with g = gy * weight, and the
    row's per-channel sums of gy and gy * xhat for the affine gradients."""
    cdef index_t r, j, cj, i, base, wbase
    cdef index_t m = row_channels * inner
    cdef double mean, var, rstd, d, a, b, w, xh, s1, s2
    with parallel(num_threads=num_threads):
        fp_enter()
        for r in prange(rows, schedule='static'):
            base = r * m
            wbase = (r % groups) * row_channels
            mean = 0
            for j in range(m):
                mean = mean + x[base + j]
            mean = mean / m
            var = 0
            for j in range(m):
                d = x[base + j] - mean
                var = var + d * d
            rstd = 1.0 / sqrt(var / m + eps)
            a = 0
            b = 0
            for cj in range(row_channels):
                w = weight[wbase + cj] if weight != NULL else 1.0
                s1 = 0
                s2 = 0
                for i in range(inner):
                    j = base + cj * inner + i
                    xh = (x[j] - mean) * rstd
                    s1 = s1 + gy[j]
                    s2 = s2 + gy[j] * xh
                pdy[r * row_channels + cj] = s1
                pdyx[r * row_channels + cj] = s2
                a = a + w * s1
                b = b + w * s2
            a = a / m
            b = b / m
            if gx == NULL:
                continue
            for cj in range(row_channels):
                w = weight[wbase + cj] if weight != NULL else 1.0
                for i in range(inner):
                    j = base + cj * inner + i
                    xh = (x[j] - mean) * rstd
                    gx[j] = <floating>(rstd * (w * gy[j] - a - xh * b))


def rows_norm_backward(cnp.ndarray x, cnp.ndarray gy, object gx, object weight, double eps,
                       index_t rows, index_t groups, index_t row_channels, index_t inner,
                       cnp.ndarray pdy, cnp.ndarray pdyx, int num_threads):
    """x, gy, gx (None: not wanted) C-contiguous (rows, row_channels * inner);
    pdy, pdyx float64 (rows, row_channels) receive the per-row affine sums."""
    cdef void* xp = cnp.PyArray_DATA(x)
    cdef void* gyp = cnp.PyArray_DATA(gy)
    cdef void* gxp = _data(gx)
    cdef void* wp = _data(weight)
    cdef double* p1 = <double*>cnp.PyArray_DATA(pdy)
    cdef double* p2 = <double*>cnp.PyArray_DATA(pdyx)
    if _is_f32(x):
        with nogil:
            _rows_norm_backward(<float*>xp, <float*>gyp, <float*>gxp, <float*>wp, eps, rows,
                                groups, row_channels, inner, p1, p2, num_threads)
    else:
        with nogil:
            _rows_norm_backward(<double*>xp, <double*>gyp, <double*>gxp, <double*>wp, eps, rows,
                                groups, row_channels, inner, p1, p2, num_threads)


# ---------------------------------------------------------------- pooling

cdef void _max_pool_backward(const floating* gy, const long long* indices, floating* gx,
                             index_t planes, index_t out_size, index_t in_size,
                             int num_threads) noexcept nogil:
    cdef index_t p, j
    cdef floating* dst
    cdef const floating* src
    cdef const long long* idx
    with parallel(num_threads=num_threads):
        fp_enter()
        for p in prange(planes, schedule='static'):
            dst = gx + p * in_size
            src = gy + p * out_size
            idx = indices + p * out_size
            for j in range(in_size):
                dst[j] = 0
            for j in range(out_size):
                if 0 <= idx[j] < in_size:
                    dst[idx[j]] += src[j]


cdef enum:
    POOL_LOCAL_PLANE_BYTES = 256 * 1024    # a plane _max_pool_backward_search sums locally


cdef void _max_pool_backward_search(const floating* x, const floating* y, const floating* gy,
                                    floating* gx, Geom g, int num_threads) noexcept nogil:
    """Each output's gradient added at its window's maximum, found again from
    the input and the output: the first position (row-major) holding the
    output's value, or the last NaN when the output is NaN (PyTorch's
    choices). One task per plane (images = planes)."""
    cdef index_t positions = g.out[0] * g.out[1] * g.out[2]
    cdef index_t plane = g.size[0] * g.size[1] * g.size[2]
    cdef index_t p, j, o, o0, o1, o2, best, lo0, hi0, lo1, hi1, lo2, hi2
    cdef floating* dst
    cdef floating* local
    cdef const floating* src
    # 2-D, undilated: the outputs c0 .. c1-1 of each row, whose windows lie
    # inside the input's columns, by _max_pool_row_inside
    cdef bint flat = (g.size[0] == 1 and g.kernel[0] == 1 and g.dilation[1] == 1
                      and g.dilation[2] == 1)
    cdef index_t c0 = min(g.out[2], _ceil_div(g.pad[2], g.stride[2]))
    cdef index_t c1 = max(c0, min(g.out[2], (g.size[2] + g.pad[2] - g.kernel[2]) // g.stride[2]
                                   + 1 if g.size[2] + g.pad[2] >= g.kernel[2] else 0))
    flat = flat and c1 > c0 and plane <= INT_MAX         # tap offsets as int: vectors twice as wide
    if _disjoint_windows(&g):
        _max_pool_backward_disjoint(x, y, gy, gx, g, num_threads)
        return
    # each thread sums its planes in one buffer of its own, warm in cache
    # (zeroed and scattered into there, then copied out whole): zeroing and
    # scattering into gx itself fetched each cold line of it first (ResNet's
    # 3x3 / 2 pool, batch 8, 1 thread: 1.1-1.2x faster). Allocated before the
    # parallel region; without it (too large a plane, no memory) into gx.
    num_threads = <int>max(1, min(<index_t>num_threads, g.images))
    cdef floating* planes = NULL
    if plane * sizeof(floating) <= POOL_LOCAL_PLANE_BYTES:
        planes = <floating*>malloc(num_threads * plane * sizeof(floating))
    with parallel(num_threads=num_threads):
        fp_enter()
        local = planes + threadid() * plane if planes != NULL else NULL
        for p in prange(g.images, schedule='static'):
            dst = local if local != NULL else gx + p * plane
            src = x + p * plane
            for j in range(plane):
                dst[j] = 0
            o = p * positions
            for o0 in range(g.out[0]):
                lo0 = _first_tap_inside(&g, 0, o0)
                hi0 = _end_tap_inside(&g, 0, o0, lo0)
                for o1 in range(g.out[1]):
                    lo1 = _first_tap_inside(&g, 1, o1)
                    hi1 = _end_tap_inside(&g, 1, o1, lo1)
                    o2 = 0
                    while o2 < g.out[2]:
                        if o2 == c0 and flat:
                            _max_pool_row_inside(src, y + o - c0, gy + o - c0, dst, &g, o1,
                                                 lo1, hi1, c0, c1)
                            o = o + c1 - c0
                            o2 = c1
                            continue
                        lo2 = _first_tap_inside(&g, 2, o2)
                        hi2 = _end_tap_inside(&g, 2, o2, lo2)
                        best = _window_max_at(src, y[o], &g, o0, o1, o2,
                                              lo0, hi0, lo1, hi1, lo2, hi2)
                        if best >= 0:
                            dst[best] += gy[o]
                        o = o + 1
                        o2 = o2 + 1
            if local != NULL:
                memcpy(gx + p * plane, local, plane * sizeof(floating))
    free(planes)


cdef bint _disjoint_windows(const Geom* g) noexcept nogil:
    """2-D (or 1-D) pooling whose windows neither overlap nor leave the input
    (no padding, no dilation, stride >= kernel): most CNNs' 2x2 / 2 pooling."""
    cdef int a
    if g[0].size[0] != 1 or g[0].kernel[0] != 1:
        return False
    for a in range(1, 3):
        if (g[0].pad[a] != 0 or g[0].dilation[a] != 1 or g[0].stride[a] < g[0].kernel[a]
                or (g[0].out[a] - 1) * g[0].stride[a] + g[0].kernel[a] > g[0].size[a]):
            return False
    return True


cdef void _max_pool_backward_disjoint(const floating* x, const floating* y,
                                      const floating* gy, floating* gx, Geom g,
                                      int num_threads) noexcept nogil:
    """_max_pool_backward_search for disjoint windows: each window's taps in
    row-major order, the first one equal to the output taking its gradient
    (selects, no branches on the data); an output that is NaN takes the
    general search (its last NaN)."""
    cdef index_t oh = g.out[1], ow = g.out[2], h = g.size[1], w = g.size[2]
    cdef index_t kh = g.kernel[1], kw = g.kernel[2], sh = g.stride[1], sw = g.stride[2]
    cdef index_t p, j, o1, o2, k1, k2, at, best
    cdef floating v, gv
    cdef floating* dst
    cdef const floating* src
    # 2x2 / 2 windows by rows of 16-byte vectors (pool_grad.h)
    cdef bint pairs = kh == 2 and kw == 2 and sh == 2 and sw == 2
    with parallel(num_threads=num_threads):
        fp_enter()
        for p in prange(g.images, schedule='static'):
            dst = gx + p * h * w
            src = x + p * h * w
            if pairs:
                # every window's four cells written; rows and columns past
                # the last window zeroed
                for o1 in range(oh):
                    _max_pool_2x2_rows(src + 2 * o1 * w, src + (2 * o1 + 1) * w,
                                       y + (p * oh + o1) * ow, gy + (p * oh + o1) * ow,
                                       dst + 2 * o1 * w, dst + (2 * o1 + 1) * w, ow)
                    for j in range(2 * ow, w):
                        dst[2 * o1 * w + j] = 0
                        dst[(2 * o1 + 1) * w + j] = 0
                for j in range(2 * oh * w, h * w):
                    dst[j] = 0
                continue
            for j in range(h * w):
                dst[j] = 0
            for o1 in range(oh):
                for o2 in range(ow):
                    v = y[(p * oh + o1) * ow + o2]
                    gv = gy[(p * oh + o1) * ow + o2]
                    if v != v:
                        best = _window_max_at(src, v, &g, 0, o1, o2, 0, 1, 0, kh, 0, kw)
                        if best >= 0:
                            dst[best] += gv
                        continue
                    best = -1
                    for k1 in range(kh - 1, -1, -1):
                        for k2 in range(kw - 1, -1, -1):
                            at = (o1 * sh + k1) * w + o2 * sw + k2
                            best = _select(src[at] == v, at, best)
                    if best >= 0:
                        dst[best] = gv


cdef extern from "pool_grad.h" nogil:
    void fcnn_max_pool_2x2_row_f32(const float* r0, const float* r1, const float* y,
                                   const float* gy, float* d0, float* d1, long ow)
    void fcnn_max_pool_2x2_row_f64(const double* r0, const double* r1, const double* y,
                                   const double* gy, double* d0, double* d1, long ow)


cdef inline void _max_pool_2x2_rows(const floating* r0, const floating* r1, const floating* y,
                                    const floating* gy, floating* d0, floating* d1,
                                    index_t ow) noexcept nogil:
    """One output row of 2x2 / 2 max pooling's gradient (pool_grad.h)."""
    if floating is float:
        fcnn_max_pool_2x2_row_f32(r0, r1, y, gy, d0, d1, ow)
    else:
        fcnn_max_pool_2x2_row_f64(r0, r1, y, gy, d0, d1, ow)


cdef enum:
    POOL_ROW_BLOCK = 64        # outputs a block of _max_pool_row_inside


cdef void _max_pool_row_inside(const floating* src, const floating* y, const floating* gy,
                               floating* dst, const Geom* g, index_t o1, index_t lo1,
                               index_t hi1, index_t c0, index_t c1) noexcept nogil:
    """_window_max_at for outputs c0 .. c1-1 of output row o1 (2-D,
    undilated, every window inside the input's columns; y and gy point at
    the row's first output), by blocks of outputs: the taps in reverse
    row-major order, each compared across the block's outputs (a loop the
    compiler vectorises, selecting the tap's offset in the window, one
    constant per tap), then each gradient added at its window's start plus
    that offset; an output that is NaN takes _window_max_at (its last NaN)."""
    cdef int best[POOL_ROW_BLOCK]
    cdef index_t w = g[0].size[2], sw = g[0].stride[2], kw = g[0].kernel[2]
    cdef index_t top = o1 * g[0].stride[1] - g[0].pad[1]
    cdef index_t b0, n, j, k1, k2, row, start, at
    cdef int offset
    cdef const floating* taps
    cdef const floating* yb
    cdef floating v
    b0 = c0
    while b0 < c1:
        n = min(<index_t>POOL_ROW_BLOCK, c1 - b0)
        yb = y + b0
        for j in range(n):
            best[j] = -1
        for k1 in range(hi1 - 1, lo1 - 1, -1):
            row = top + k1
            for k2 in range(kw - 1, -1, -1):
                offset = <int>(k1 * w + k2)
                taps = src + row * w + b0 * sw - g[0].pad[2] + k2
                # a constant stride of 2 (most strided pooling) the compiler
                # loads in vectors, shuffled; a stride known only at run time
                # it reads one by one
                if sw == 2:
                    for j in range(n):
                        best[j] = offset if taps[2 * j] == yb[j] else best[j]
                elif sw == 1:
                    for j in range(n):
                        best[j] = offset if taps[j] == yb[j] else best[j]
                else:
                    for j in range(n):
                        best[j] = offset if taps[j * sw] == yb[j] else best[j]
        # window j starts at row top, column (b0 + j) sw - pad
        start = top * w + b0 * sw - g[0].pad[2]
        for j in range(n):
            v = yb[j]
            if v != v:
                at = _window_max_at(src, v, g, 0, o1, b0 + j, 0, 1, lo1, hi1, 0, kw)
                if at >= 0:
                    dst[at] += gy[b0 + j]
            elif best[j] >= 0:
                dst[start + best[j]] += gy[b0 + j]
            start = start + sw
        b0 = b0 + n


cdef inline index_t _first_tap_inside(const Geom* g, int axis, index_t o) noexcept nogil:
    """The first tap of output o's window along axis that falls inside the input."""
    cdef index_t start = o * g[0].stride[axis] - g[0].pad[axis]
    cdef index_t d = g[0].dilation[axis]
    return 0 if start >= 0 else (-start + d - 1) // d


cdef inline index_t _end_tap_inside(const Geom* g, int axis, index_t o,
                                    index_t first) noexcept nogil:
    """One past the last tap of output o's window along axis inside the input."""
    cdef index_t start = o * g[0].stride[axis] - g[0].pad[axis]
    cdef index_t d = g[0].dilation[axis], k = g[0].kernel[axis], n = g[0].size[axis]
    cdef index_t end = k if start + (k - 1) * d < n else (n - 1 - start) // d + 1
    return end if end > first else first


cdef inline index_t _window_max_at(const floating* src, floating v, const Geom* g, index_t o0,
                                   index_t o1, index_t o2, index_t lo0, index_t hi0,
                                   index_t lo1, index_t hi1, index_t lo2,
                                   index_t hi2) noexcept nogil:
    """Where in its window output (o0, o1, o2) took its value v: the first
    position holding v (scanned backwards with selects, not branches: which
    position holds a window's maximum is data, unpredictable), or the last
    NaN when v is NaN; -1 for none. [lo, hi) per axis: the taps inside the input."""
    cdef index_t k0, k1, k2, at, row, best = -1
    cdef index_t w = g[0].size[2], hw = g[0].size[1] * g[0].size[2]
    cdef index_t d2 = g[0].dilation[2]
    cdef index_t b0 = o0 * g[0].stride[0] - g[0].pad[0]
    cdef index_t b1 = o1 * g[0].stride[1] - g[0].pad[1]
    cdef index_t b2 = o2 * g[0].stride[2] - g[0].pad[2]
    if v != v:
        for k0 in range(lo0, hi0):
            for k1 in range(lo1, hi1):
                row = (b0 + k0 * g[0].dilation[0]) * hw + (b1 + k1 * g[0].dilation[1]) * w + b2
                for k2 in range(lo2, hi2):
                    at = row + k2 * d2
                    best = _select(src[at] != src[at], at, best)
        return best
    for k0 in range(hi0 - 1, lo0 - 1, -1):
        for k1 in range(hi1 - 1, lo1 - 1, -1):
            row = (b0 + k0 * g[0].dilation[0]) * hw + (b1 + k1 * g[0].dilation[1]) * w + b2
            for k2 in range(hi2 - 1, lo2 - 1, -1):
                at = row + k2 * d2
                best = _select(src[at] == v, at, best)
    return best


cdef inline index_t _select(bint take, index_t a, index_t b) noexcept nogil:
    """take ? a : b through a mask: compilers turn the conditional form into a
    branch on the data, mispredicted about every other window."""
    cdef index_t mask = -(<index_t>take)
    return (a & mask) | (b & ~mask)


def max_pool_backward_search(tuple geom, cnp.ndarray x, cnp.ndarray y, cnp.ndarray gy,
                             cnp.ndarray gx, int num_threads):
    """The gradient of max pooling from its input and output (no indices);
    geom as _geom reads it with images = planes. C-contiguous, one dtype."""
    cdef Geom g = _geom(geom)
    cdef void* xp = cnp.PyArray_DATA(x)
    cdef void* yp = cnp.PyArray_DATA(y)
    cdef void* gyp = cnp.PyArray_DATA(gy)
    cdef void* gxp = cnp.PyArray_DATA(gx)
    if _is_f32(x):
        with nogil:
            _max_pool_backward_search(<float*>xp, <float*>yp, <float*>gyp, <float*>gxp, g,
                                      num_threads)
    else:
        with nogil:
            _max_pool_backward_search(<double*>xp, <double*>yp, <double*>gyp, <double*>gxp, g,
                                      num_threads)


def max_pool_backward(cnp.ndarray gy, cnp.ndarray indices, cnp.ndarray gx, index_t planes,
                      index_t out_size, index_t in_size, int num_threads):
    """gx[plane] = gy scattered (summed) to the int64 flat indices within each plane."""
    cdef void* gyp = cnp.PyArray_DATA(gy)
    cdef long long* ip = <long long*>cnp.PyArray_DATA(indices)
    cdef void* gxp = cnp.PyArray_DATA(gx)
    if _is_f32(gy):
        with nogil:
            _max_pool_backward(<float*>gyp, ip, <float*>gxp, planes, out_size, in_size,
                               num_threads)
    else:
        with nogil:
            _max_pool_backward(<double*>gyp, ip, <double*>gxp, planes, out_size, in_size,
                               num_threads)


cdef void _avg_pool_backward(const floating* gy, floating* gx, Geom g, bint count_include_pad,
                             index_t divisor_override, int num_threads) noexcept nogil:
    """Each output's gradient / its divisor added to its window (PyTorch's
    divisor: the window clipped to the padded input when counting padding,
    else to the input; divisor_override when given). One task per plane."""
    cdef index_t positions = g.out[0] * g.out[1] * g.out[2]
    cdef index_t plane = g.size[0] * g.size[1] * g.size[2]
    cdef index_t p, j, o, o0, o1, o2, s0, s1, s2, e0, e1, e2, i0, i1, i2, pool_size, divisor
    cdef floating* dst
    cdef const floating* src
    cdef floating v
    with parallel(num_threads=num_threads):
        fp_enter()
        for p in prange(g.images, schedule='static'):
            dst = gx + p * plane
            src = gy + p * positions
            for j in range(plane):
                dst[j] = 0
            for o in range(positions):
                o0 = o // (g.out[1] * g.out[2])
                o1 = (o // g.out[2]) % g.out[1]
                o2 = o % g.out[2]
                s0 = o0 * g.stride[0] - g.pad[0]
                s1 = o1 * g.stride[1] - g.pad[1]
                s2 = o2 * g.stride[2] - g.pad[2]
                e0 = min(s0 + g.kernel[0], g.size[0] + g.pad[0])
                e1 = min(s1 + g.kernel[1], g.size[1] + g.pad[1])
                e2 = min(s2 + g.kernel[2], g.size[2] + g.pad[2])
                pool_size = (e0 - s0) * (e1 - s1) * (e2 - s2)
                s0 = max(s0, 0)
                s1 = max(s1, 0)
                s2 = max(s2, 0)
                e0 = min(e0, g.size[0])
                e1 = min(e1, g.size[1])
                e2 = min(e2, g.size[2])
                if divisor_override:
                    divisor = divisor_override
                elif count_include_pad:
                    divisor = pool_size
                else:
                    divisor = (e0 - s0) * (e1 - s1) * (e2 - s2)
                if divisor == 0 or e0 <= s0 or e1 <= s1 or e2 <= s2:
                    continue
                v = src[o] / divisor
                for i0 in range(s0, e0):
                    for i1 in range(s1, e1):
                        for i2 in range(s2, e2):
                            dst[(i0 * g.size[1] + i1) * g.size[2] + i2] += v


def avg_pool_backward(tuple geom, bint count_include_pad, index_t divisor_override,
                      cnp.ndarray gy, cnp.ndarray gx, int num_threads):
    """geom as _geom reads it with images = planes (dilation ignored)."""
    cdef Geom g = _geom(geom)
    cdef void* gyp = cnp.PyArray_DATA(gy)
    cdef void* gxp = cnp.PyArray_DATA(gx)
    if _is_f32(gy):
        with nogil:
            _avg_pool_backward(<float*>gyp, <float*>gxp, g, count_include_pad,
                               divisor_override, num_threads)
    else:
        with nogil:
            _avg_pool_backward(<double*>gyp, <double*>gxp, g, count_include_pad,
                               divisor_override, num_threads)


cdef void _adaptive_avg_backward(const floating* gy, floating* gx, Geom g,
                                 int num_threads) noexcept nogil:
    """Windows [floor(o I / O), ceil((o + 1) I / O)) on each axis, as PyTorch."""
    cdef index_t positions = g.out[0] * g.out[1] * g.out[2]
    cdef index_t plane = g.size[0] * g.size[1] * g.size[2]
    cdef index_t p, j, o0, o1, o2, s0, s1, s2, e0, e1, e2, i0, i1, i2
    cdef floating* dst
    cdef const floating* src
    cdef floating v
    with parallel(num_threads=num_threads):
        fp_enter()
        for p in prange(g.images, schedule='static'):
            dst = gx + p * plane
            src = gy + p * positions
            for j in range(plane):
                dst[j] = 0
            for o0 in range(g.out[0]):
                s0 = (o0 * g.size[0]) // g.out[0]
                e0 = _ceil_div((o0 + 1) * g.size[0], g.out[0])
                for o1 in range(g.out[1]):
                    s1 = (o1 * g.size[1]) // g.out[1]
                    e1 = _ceil_div((o1 + 1) * g.size[1], g.out[1])
                    for o2 in range(g.out[2]):
                        s2 = (o2 * g.size[2]) // g.out[2]
                        e2 = _ceil_div((o2 + 1) * g.size[2], g.out[2])
                        v = src[(o0 * g.out[1] + o1) * g.out[2] + o2] / \
                            ((e0 - s0) * (e1 - s1) * (e2 - s2))
                        for i0 in range(s0, e0):
                            for i1 in range(s1, e1):
                                for i2 in range(s2, e2):
                                    dst[(i0 * g.size[1] + i1) * g.size[2] + i2] += v


def adaptive_avg_backward(tuple geom, cnp.ndarray gy, cnp.ndarray gx, int num_threads):
    cdef Geom g = _geom(geom)
    cdef void* gyp = cnp.PyArray_DATA(gy)
    cdef void* gxp = cnp.PyArray_DATA(gx)
    if _is_f32(gy):
        with nogil:
            _adaptive_avg_backward(<float*>gyp, <float*>gxp, g, num_threads)
    else:
        with nogil:
            _adaptive_avg_backward(<double*>gyp, <double*>gxp, g, num_threads)


# ---------------------------------------------------------------- optimizer steps

cdef void _sgd(floating* p, const floating* g, floating* buf, index_t n, floating lr,
               floating momentum, floating dampening, floating wd, bint nesterov, bint first,
               int num_threads) noexcept nogil:
    cdef index_t c, i, start, stop
    cdef index_t chunks = _ceil_div(n, CHUNK)
    cdef floating d, b
    with parallel(num_threads=max(1, min(num_threads, chunks))):
        fp_enter()
        for c in prange(chunks, schedule='static'):
            start = c * CHUNK
            stop = min(start + CHUNK, n)
            for i in range(start, stop):
                d = g[i] + wd * p[i]
                if buf != NULL:
                    b = d if first else momentum * buf[i] + (1 - dampening) * d
                    buf[i] = b
                    d = d + momentum * b if nesterov else b
                p[i] = p[i] - lr * d


def sgd_step(cnp.ndarray p, cnp.ndarray g, object buf, double lr, double momentum,
             double dampening, double weight_decay, bint nesterov, bint first,
             int num_threads):
    """One SGD update in place (torch.optim.SGD's formula): p, g and the
    momentum buffer (None without momentum; filled from d when first)
    C-contiguous, one dtype."""
    cdef void* pp = cnp.PyArray_DATA(p)
    cdef void* gp = cnp.PyArray_DATA(g)
    cdef void* bp = _data(buf)
    cdef index_t n = p.size
    if _is_f32(p):
        with nogil:
            _sgd(<float*>pp, <float*>gp, <float*>bp, n, <float>lr, <float>momentum,
                 <float>dampening, <float>weight_decay, nesterov, first, num_threads)
    else:
        with nogil:
            _sgd(<double*>pp, <double*>gp, <double*>bp, n, lr, momentum, dampening,
                 weight_decay, nesterov, first, num_threads)


cdef void _adam(floating* p, const floating* g, floating* m, floating* v, floating* vmax,
                index_t n, floating lr, floating beta1, floating beta2, floating eps,
                floating wd, bint decoupled, floating step_size, floating bias2_sqrt,
                int num_threads) noexcept nogil:
    cdef index_t c, i, start, stop
    cdef index_t chunks = _ceil_div(n, CHUNK)
    cdef floating d, vv
    with parallel(num_threads=max(1, min(num_threads, chunks))):
        fp_enter()
        for c in prange(chunks, schedule='static'):
            start = c * CHUNK
            stop = min(start + CHUNK, n)
            for i in range(start, stop):
                d = g[i]
                if decoupled:
                    p[i] = p[i] * (1 - lr * wd)
                else:
                    d = d + wd * p[i]
                m[i] = m[i] + (1 - beta1) * (d - m[i])
                v[i] = beta2 * v[i] + (1 - beta2) * d * d
                vv = v[i]
                if vmax != NULL:
                    if vv > vmax[i]:
                        vmax[i] = vv
                    vv = vmax[i]
                p[i] = p[i] - step_size * m[i] / (sqrt(vv) / bias2_sqrt + eps)


def adam_step(cnp.ndarray p, cnp.ndarray g, cnp.ndarray m, cnp.ndarray v, object vmax,
              double lr, double beta1, double beta2, double eps, double weight_decay,
              bint decoupled, int step, int num_threads):
    """One Adam / AdamW update in place (torch.optim's formulas; vmax: the
    amsgrad maximum or None); step counts from 1."""
    cdef void* pp = cnp.PyArray_DATA(p)
    cdef void* gp = cnp.PyArray_DATA(g)
    cdef void* mp = cnp.PyArray_DATA(m)
    cdef void* vp = cnp.PyArray_DATA(v)
    cdef void* xp = _data(vmax)
    cdef index_t n = p.size
    cdef double step_size = lr / (1 - beta1 ** step)
    cdef double bias2_sqrt = sqrt(1 - beta2 ** step)
    if _is_f32(p):
        with nogil:
            _adam(<float*>pp, <float*>gp, <float*>mp, <float*>vp, <float*>xp, n, <float>lr,
                  <float>beta1, <float>beta2, <float>eps, <float>weight_decay, decoupled,
                  <float>step_size, <float>bias2_sqrt, num_threads)
    else:
        with nogil:
            _adam(<double*>pp, <double*>gp, <double*>mp, <double*>vp, <double*>xp, n, lr,
                  beta1, beta2, eps, weight_decay, decoupled, step_size, bias2_sqrt,
                  num_threads)

"""Linear layer kernel: y[M, N] = x[M, K] @ w[N, K]^T + bias.

Tasks are (row block, output-feature block), chosen from the shape alone; each
runs one single-threaded GEMM and adds the bias while the tile is hot.
"""
cimport numpy as cnp
import numpy as np
from cython.parallel cimport parallel, prange, threadid
from fastcnn._kernels._omp cimport fp_enter
from libc.stdint cimport int64_t

from fastcnn._kernels._typedefs cimport floating, index_t
from fastcnn._kernels._blas cimport (gemm, blas_enter, blas_leave, gemm_tasks, gemm_tiles,
                                     GEMM_MAX_TASKS)
from fastcnn._kernels._activation cimport bias_activation
from fastcnn._kernels._transpose cimport transpose
from libc.string cimport memcpy, memset
from fastcnn._kernels._block_gemm cimport (FCNN_BLOCK_OCB, block_gemm, block_splat,
                                           block_vector)

cnp.import_array()

cdef extern from "gemv.h" nogil:
    void fcnn_gemv_f32(long rows, long k, const float* a, long lda, const float* x, float* y)
    void fcnn_gemv_f64(long rows, long k, const double* a, long lda, const double* x, double* y)

cdef enum:
    SMALL_FMAS = 1 << 23    # products below this: GEMM_MAX_TASKS small tiles (see _linear)
    T_MAX_ROWS = 256        # the transposed form: at most this many rows ...
    T_COL_BLOCK = 256       # ... and this many output features per task


cdef inline index_t _ceil_div(index_t a, index_t b) noexcept nogil:
    return (a + b - 1) // b


cdef bint _transposed(index_t m, index_t n) noexcept nogil:
    """Few rows, many outputs: compute y^T = w @ x^T (OpenBLAS streams the
    weights better as the left operand; 1.25x on 64 x 4096 -> 1000)."""
    return m <= T_MAX_ROWS and 4 * m <= n


cdef index_t linear_workspace(index_t m, index_t n, int num_threads) noexcept nogil:
    """Elements of scratch _linear wants (0: none), for num_threads threads."""
    if not _transposed(m, n):
        return 0
    return (T_COL_BLOCK * m + 16) * num_threads


cdef void _linear_transposed(const floating* x, const floating* w, const floating* bias,
                             floating* y, index_t m, index_t n, index_t k, int activation,
                             floating* ws, int num_threads) noexcept nogil:
    cdef index_t blocks = _ceil_div(n, T_COL_BLOCK)
    cdef index_t task, c0, cols, r
    cdef floating* t
    blas_enter()
    with parallel(num_threads=num_threads):
        fp_enter()
        t = ws + threadid() * (T_COL_BLOCK * m + 16)
        for task in prange(blocks, schedule='static'):
            c0 = task * T_COL_BLOCK
            cols = min(<index_t>T_COL_BLOCK, n - c0)
            if m == 1:
                # one row: a matrix-vector product straight into y (gemv.h; a
                # GEMM with one column packs the whole weight block first)
                if floating is float:
                    fcnn_gemv_f32(cols, k, w + c0 * k, k, x, y + c0)
                else:
                    fcnn_gemv_f64(cols, k, w + c0 * k, k, x, y + c0)
            else:
                if k > 0:
                    gemm(False, True, <int>cols, <int>m, <int>k, <floating>1, w + c0 * k,
                         <int>k, x, <int>k, <floating>0, t, <int>m)
                else:
                    _zero_rows(t, cols, m, m)
                transpose(t, m, cols, m, y + c0, n)      # y[:, c0:c0+cols] = t^T
            for r in range(m):
                _row_epilogue(y + r * n + c0, bias + c0 if bias != NULL else NULL, cols,
                              activation)
    blas_leave()


cdef void _linear(const floating* x, const floating* w, const floating* bias, floating* y,
                  index_t m, index_t n, index_t k, int activation, floating* ws,
                  int num_threads) noexcept nogil:
    cdef index_t row_block = 0, row_blocks, col_block = 0, col_blocks, task, r0, c0, rows, cols, r
    cdef double fmas
    if m <= 0 or n <= 0:
        return
    if ws != NULL and _transposed(m, n):
        _linear_transposed(x, w, bias, y, m, n, k, activation, ws, num_threads)
        return
    # small products take GEMM_MAX_TASKS small tiles, which OpenBLAS
    # multiplies without packing where its core can, and which spread over
    # every thread; larger ones one task per GEMM_TASK_FMAS (gemm_tasks)
    fmas = <double>m * n * k
    gemm_tiles(m, n, GEMM_MAX_TASKS if fmas < SMALL_FMAS else gemm_tasks(fmas),
               &row_block, &col_block)
    row_blocks = _ceil_div(m, row_block)
    col_blocks = _ceil_div(n, col_block)
    blas_enter()
    with parallel(num_threads=num_threads):
        fp_enter()
        for task in prange(row_blocks * col_blocks, schedule='static'):
            r0 = (task // col_blocks) * row_block
            c0 = (task % col_blocks) * col_block
            rows = min(row_block, m - r0)
            cols = min(col_block, n - c0)
            if k > 0:
                gemm(False, True, <int>rows, <int>cols, <int>k, <floating>1, x + r0 * k, <int>k,
                     w + c0 * k, <int>k, <floating>0, y + r0 * n + c0, <int>n)
            else:
                _zero_rows(y + r0 * n + c0, rows, cols, n)
            for r in range(rows):
                _row_epilogue(y + (r0 + r) * n + c0, bias + c0 if bias != NULL else NULL,
                              cols, activation)
    blas_leave()


cdef inline void _zero_rows(floating* y, index_t rows, index_t cols, index_t ld) noexcept nogil:
    """K == 0: the product is empty, so the output is zero (plus bias)."""
    cdef index_t r, j
    for r in range(rows):
        for j in range(cols):
            y[r * ld + j] = 0


cdef inline void _row_epilogue(floating* row, const floating* bias, index_t cols,
                               int activation) noexcept nogil:
    cdef index_t j
    if bias == NULL and activation == 0:
        return
    if bias != NULL:
        for j in range(cols):
            row[j] = row[j] + bias[j]
    if activation != 0:
        bias_activation(row, cols, 0, False, activation)


cdef void linear_f32(const float* x, const float* w, const float* bias, float* y, index_t m,
                     index_t n, index_t k, int activation, float* ws,
                     int num_threads) noexcept nogil:
    _linear(x, w, bias, y, m, n, k, activation, ws, num_threads)


cdef void linear_f64(const double* x, const double* w, const double* bias, double* y,
                     index_t m, index_t n, index_t k, int activation, double* ws,
                     int num_threads) noexcept nogil:
    _linear(x, w, bias, y, m, n, k, activation, ws, num_threads)


def linear(cnp.ndarray x, cnp.ndarray w, object bias, cnp.ndarray y, int activation,
           int num_threads):
    """y = x @ w.T + bias for C-contiguous x (M, K), w (N, K), y (M, N)."""
    cdef index_t m = x.shape[0], k = x.shape[1], n = w.shape[0]
    cdef void* xp = cnp.PyArray_DATA(x)
    cdef void* wp = cnp.PyArray_DATA(w)
    cdef void* bp = NULL if bias is None else cnp.PyArray_DATA(<cnp.ndarray>bias)
    cdef void* yp = cnp.PyArray_DATA(y)
    cdef index_t wsize = linear_workspace(m, n, num_threads)
    cdef cnp.ndarray ws = np.empty(wsize, x.dtype) if wsize else None
    cdef void* sp = NULL if ws is None else cnp.PyArray_DATA(ws)
    if x.dtype.num == cnp.NPY_FLOAT32:
        with nogil:
            _linear(<float*>xp, <float*>wp, <float*>bp, <float*>yp, m, n, k, activation,
                    <float*>sp, num_threads)
    else:
        with nogil:
            _linear(<double*>xp, <double*>wp, <double*>bp, <double*>yp, m, n, k, activation,
                    <double*>sp, num_threads)


# ------------------------------------------------------- columns and col2im

cdef void _transposed_columns(const floating* w, const floating* xc, floating* cols,
                              index_t groups, index_t cin_g, index_t rows, index_t n,
                              int num_threads) noexcept nogil:
    """Per group g, cols_g (rows, n) = w_g^T xc_g: w_g (cin_g, rows) the
    weights as stored, xc_g (cin_g, n) the input channel-major; tiles of
    the product split from the shape alone, one single-threaded GEMM each."""
    cdef index_t row_block = 0, col_block = 0, row_blocks, col_blocks, tiles, task, grp, tile
    cdef index_t r0, c0
    cdef double fmas = <double>rows * n * cin_g
    gemm_tiles(rows, n, GEMM_MAX_TASKS if fmas < SMALL_FMAS else gemm_tasks(fmas),
               &row_block, &col_block)
    row_blocks = _ceil_div(rows, row_block)
    col_blocks = _ceil_div(n, col_block)
    tiles = row_blocks * col_blocks
    blas_enter()
    with parallel(num_threads=num_threads):
        fp_enter()
        for task in prange(groups * tiles, schedule='static'):
            grp = task // tiles
            tile = task - grp * tiles
            r0 = (tile // col_blocks) * row_block
            c0 = (tile % col_blocks) * col_block
            gemm(True, False, <int>min(row_block, rows - r0), <int>min(col_block, n - c0),
                 <int>cin_g, <floating>1, w + grp * cin_g * rows + r0, <int>rows,
                 xc + grp * cin_g * n + c0, <int>n, <floating>0,
                 cols + (grp * rows + r0) * n + c0, <int>n)
    blas_leave()


def transposed_columns(cnp.ndarray w, cnp.ndarray xc, cnp.ndarray cols, index_t groups,
                       int num_threads):
    """The GEMM half of a transposed convolution by columns: cols
    (groups * rows, n) = per group w_g^T xc_g, for w (in, out / groups, *k)
    as stored (rows = out / groups * taps) and xc (in, n), the input
    channel-major; all C-contiguous, one dtype, in % groups == 0."""
    cdef index_t cin_g = xc.shape[0] // groups
    cdef index_t rows = w.size // max(<index_t>1, w.shape[0])
    cdef index_t n = xc.shape[1]
    if cols.size < groups * rows * n:
        raise ValueError("transposed_columns: cols too small")
    if rows == 0 or n == 0:
        return
    cdef void* wp = cnp.PyArray_DATA(w)
    cdef void* xp = cnp.PyArray_DATA(xc)
    cdef void* cp = cnp.PyArray_DATA(cols)
    if w.dtype.num == cnp.NPY_FLOAT32:
        with nogil:
            _transposed_columns(<const float*>wp, <const float*>xp, <float*>cp, groups, cin_g,
                                rows, n, num_threads)
    else:
        with nogil:
            _transposed_columns(<const double*>wp, <const double*>xp, <double*>cp, groups,
                                cin_g, rows, n, num_threads)


cdef void _col2im(const floating* cols, floating* acc, index_t images, index_t taps,
                  index_t channels, const index_t* size, const index_t* kernel,
                  const index_t* stride, const index_t* dilation, const index_t* full,
                  int num_threads) noexcept nogil:
    """The scatter half of a transposed convolution: cols (channels, taps,
    images, positions) holds each input position's contribution at each
    kernel tap; each output plane (image, channel) is one task, set to zero
    and then summed tap by tap in a fixed order, so results do not depend on
    the threads."""
    cdef index_t positions = size[0] * size[1] * size[2]
    cdef index_t plane_size = full[0] * full[1] * full[2]
    cdef index_t task, img, c, t, td, th, tw, i0, i1, i2, j
    cdef floating* plane
    cdef floating* dst
    cdef const floating* src
    cdef const floating* row
    with parallel(num_threads=num_threads):
        fp_enter()
        for task in prange(images * channels, schedule='static'):
            img = task // channels
            c = task - img * channels
            plane = acc + task * plane_size
            for j in range(plane_size):
                plane[j] = 0
            for t in range(taps):
                td = t // (kernel[1] * kernel[2])
                th = (t // kernel[2]) % kernel[1]
                tw = t % kernel[2]
                src = cols + ((c * taps + t) * images + img) * positions
                for i0 in range(size[0]):
                    for i1 in range(size[1]):
                        dst = plane + ((i0 * stride[0] + td * dilation[0]) * full[1]
                                       + i1 * stride[1] + th * dilation[1]) * full[2] \
                            + tw * dilation[2]
                        row = src + (i0 * size[1] + i1) * size[2]
                        for i2 in range(size[2]):
                            dst[i2 * stride[2]] += row[i2]


def col2im(cnp.ndarray cols, cnp.ndarray acc, index_t images, index_t taps, tuple size,
           tuple kernel, tuple stride, tuple dilation, tuple full, int num_threads):
    """acc = the col2im of cols (C-contiguous, (channels, taps, images,
    positions)); acc C-contiguous (images, channels, *full); the tuples hold
    3 sizes each (leading ones for 1-D and 2-D)."""
    cdef index_t s[3]
    cdef index_t k[3]
    cdef index_t st[3]
    cdef index_t d[3]
    cdef index_t f[3]
    cdef int i
    for i in range(3):
        s[i], k[i], st[i], d[i], f[i] = size[i], kernel[i], stride[i], dilation[i], full[i]
    cdef index_t channels = acc.shape[1]
    if cols.size < channels * taps * images * s[0] * s[1] * s[2]:
        raise ValueError("col2im: cols too small")
    cdef void* cp = cnp.PyArray_DATA(cols)
    cdef void* ap = cnp.PyArray_DATA(acc)
    if cols.dtype.num == cnp.NPY_FLOAT32:
        with nogil:
            _col2im(<const float*>cp, <float*>ap, images, taps, channels, s, k, st, d, f,
                    num_threads)
    else:
        with nogil:
            _col2im(<const double*>cp, <double*>ap, images, taps, channels, s, k, st, d, f,
                    num_threads)


# ------------------------------------------------------------ channel-major copy

cdef void _channel_major(const floating* x, floating* y, index_t images, index_t channels,
                         index_t inner, int num_threads) noexcept nogil:
    cdef index_t task, img, c
    with parallel(num_threads=num_threads):
        for task in prange(images * channels, schedule='static'):
            c = task // images
            img = task - c * images
            memcpy(y + task * inner, x + (img * channels + c) * inner, inner * sizeof(floating))


def channel_major(cnp.ndarray x, cnp.ndarray y, index_t images, index_t channels,
                  index_t inner, int num_threads):
    """y (channels, images, inner) = x (images, channels, inner) with its two
    leading axes swapped (a GEMM operand's rows), one row a task; both
    C-contiguous, one float dtype."""
    if (x.size < images * channels * inner or y.size < images * channels * inner
            or x.dtype != y.dtype or not x.flags.c_contiguous or not y.flags.c_contiguous):
        raise ValueError("channel_major: expected C-contiguous arrays of one dtype holding "
                         f"{images} x {channels} x {inner} elements")
    cdef void* xp = cnp.PyArray_DATA(x)
    cdef void* yp = cnp.PyArray_DATA(y)
    if x.dtype.num == cnp.NPY_FLOAT32:
        with nogil:
            _channel_major(<float*>xp, <float*>yp, images, channels, inner, num_threads)
    elif x.dtype.num == cnp.NPY_FLOAT64:
        with nogil:
            _channel_major(<double*>xp, <double*>yp, images, channels, inner, num_threads)
    else:
        raise TypeError(f"channel_major: expected float32 or float64, got {x.dtype}")


# ------------------------------------------------------------ input windows

cdef void _copy_window(const floating* x, floating* y, index_t planes, const index_t* size,
                       const index_t* out, const index_t* start,
                       int num_threads) noexcept nogil:
    """y[p, i0, i1, i2] = x[p, start0 + i0, start1 + i1, start2 + i2], zero
    outside x: a row of y a task, each element written once."""
    cdef index_t rows = planes * out[0] * out[1]
    cdef index_t r, p, i0, i1, s0, s1, lo, hi, j
    cdef floating* dst
    cdef const floating* src
    with parallel(num_threads=num_threads):
        for r in prange(rows, schedule='static'):
            p = r // (out[0] * out[1])
            i0 = r // out[1] % out[0]
            i1 = r % out[1]
            dst = y + r * out[2]
            s0 = start[0] + i0
            s1 = start[1] + i1
            lo = hi = 0
            if 0 <= s0 < size[0] and 0 <= s1 < size[1]:
                lo = min(out[2], max(<index_t>0, -start[2]))
                hi = max(lo, min(out[2], size[2] - start[2]))
            src = x + ((p * size[0] + s0) * size[1] + s1) * size[2] + start[2]
            for j in range(lo):
                dst[j] = 0
            for j in range(lo, hi):
                dst[j] = src[j]
            for j in range(hi, out[2]):
                dst[j] = 0


def copy_window(cnp.ndarray x, cnp.ndarray y, tuple start, int num_threads):
    """y (planes, o0, o1, o2) = the window of x (planes, s0, s1, s2) from
    `start` (3 ints, any sign) on, zero where it lies outside x: a crop and
    a zero padding in one pass. Both C-contiguous, one float dtype."""
    cdef index_t size[3]
    cdef index_t out[3]
    cdef index_t st[3]
    cdef int i
    if x.ndim != 4 or y.ndim != 4 or not x.flags.c_contiguous or not y.flags.c_contiguous \
            or x.dtype != y.dtype or x.dtype.num not in (cnp.NPY_FLOAT32, cnp.NPY_FLOAT64) \
            or x.shape[0] != y.shape[0] or len(start) != 3:
        raise ValueError("copy_window: expected C-contiguous float32 or float64 (planes, d, h, "
                         "w) arrays of one dtype and plane count, and 3 starts")
    for i in range(3):
        size[i], out[i], st[i] = x.shape[1 + i], y.shape[1 + i], start[i]
    cdef void* xp = cnp.PyArray_DATA(x)
    cdef void* yp = cnp.PyArray_DATA(y)
    cdef index_t planes = y.shape[0]
    if y.size == 0:
        return
    if x.dtype.num == cnp.NPY_FLOAT32:
        with nogil:
            _copy_window(<const float*>xp, <float*>yp, planes, size, out, st, num_threads)
    else:
        with nogil:
            _copy_window(<const double*>xp, <double*>yp, planes, size, out, st, num_threads)


# ---------------------------------------------------------- phase interleave

cdef void _interleave_phases(const index_t* sources, floating* dst, index_t planes,
                             const index_t* full, const index_t* stride, const index_t* phases,
                             const floating* bias, index_t channels,
                             int num_threads) noexcept nogil:
    """dst[p, a0 + s0 q0, a1 + s1 q1, a2 + s2 q2] = phase (a0, a1, a2)[p, q0,
    q1, q2] + bias[p % channels], every output row written whole by one task
    (each of its cache lines once); a phase with no source is bias (or 0)."""
    cdef index_t rows = planes * full[0] * full[1]
    cdef index_t r, p, o0, o1, a0, a1, a2, c0, c1, c2, j, n2
    cdef floating b
    cdef floating* d
    cdef const floating* src
    cdef const floating* src1
    with parallel(num_threads=num_threads):
        for r in prange(rows, schedule='static'):
            p = r // (full[0] * full[1])
            o0 = r // full[1] % full[0]
            o1 = r % full[1]
            a0, a1 = o0 % stride[0], o1 % stride[1]
            c0 = (full[0] - a0 + stride[0] - 1) // stride[0]
            c1 = (full[1] - a1 + stride[1] - 1) // stride[1]
            b = bias[p % channels] if bias != NULL else 0
            d = dst + r * full[2]
            if stride[2] == 2 and phases[2] == 2 \
                    and sources[(a0 * phases[1] + a1) * 2] != 0 \
                    and sources[(a0 * phases[1] + a1) * 2 + 1] != 0:
                # two interleaved column phases: one loop the compiler vectorizes
                c2 = (full[2] + 1) // 2
                src = (<const floating*>sources[(a0 * phases[1] + a1) * 2]
                       + ((p * c0 + o0 // stride[0]) * c1 + o1 // stride[1]) * c2)
                src1 = (<const floating*>sources[(a0 * phases[1] + a1) * 2 + 1]
                        + ((p * c0 + o0 // stride[0]) * c1 + o1 // stride[1]) * (full[2] // 2))
                n2 = full[2] // 2
                for j in range(n2):
                    d[2 * j] = src[j] + b
                    d[2 * j + 1] = src1[j] + b
                if full[2] % 2:
                    d[full[2] - 1] = src[n2] + b
                continue
            for a2 in range(phases[2]):
                c2 = (full[2] - a2 + stride[2] - 1) // stride[2]
                src = <const floating*>sources[(a0 * phases[1] + a1) * phases[2] + a2]
                if src == NULL:
                    for j in range(c2):
                        d[a2 + j * stride[2]] = b
                else:
                    src = src + ((p * c0 + o0 // stride[0]) * c1 + o1 // stride[1]) * c2
                    for j in range(c2):
                        d[a2 + j * stride[2]] = src[j] + b


def interleave_phases(list sources, cnp.ndarray dst, tuple stride, bias, int num_threads):
    """Write the phases of a transposed convolution into dst (planes, f0, f1,
    f2), C-contiguous, adding bias (None, or one value per channel, planes
    a multiple of its length). stride: 3 ints (leading ones for 1-D and 2-D);
    sources: for every phase (a0, a1, a2), a_i < min(s_i, f_i), in C order,
    None (no kernel tap reaches it) or a C-contiguous (planes, c0, c1, c2)
    array of dst's dtype, c_i = ceil((f_i - a_i) / s_i)."""
    cdef index_t f[3]
    cdef index_t st[3]
    cdef index_t m[3]
    cdef index_t a[3]
    cdef index_t i, k, channels = 1
    cdef bint fits
    if dst.ndim != 4 or not dst.flags.c_contiguous \
            or dst.dtype.num not in (cnp.NPY_FLOAT32, cnp.NPY_FLOAT64):
        raise ValueError("interleave_phases: expected a C-contiguous float32 or float64 "
                         "(planes, d, h, w) output")
    if len(stride) != 3:
        raise ValueError("interleave_phases: expected 3 strides")
    for i in range(3):
        f[i], st[i] = dst.shape[1 + i], stride[i]
        if st[i] < 1:
            raise ValueError("interleave_phases: strides must be positive")
        m[i] = min(st[i], f[i])
    if len(sources) != m[0] * m[1] * m[2]:
        raise ValueError(f"interleave_phases: expected {m[0] * m[1] * m[2]} phases, got "
                         f"{len(sources)}")
    cdef cnp.ndarray addresses = np.zeros(len(sources), np.intp)
    cdef cnp.ndarray src
    for k in range(len(sources)):
        if sources[k] is None:
            continue
        src = sources[k]
        a[0], a[1], a[2] = k // (m[1] * m[2]), k // m[2] % m[1], k % m[2]
        fits = src.ndim == 4 and src.flags.c_contiguous and src.dtype == dst.dtype \
            and src.shape[0] == dst.shape[0]
        for i in range(3):
            fits = fits and src.shape[1 + i] == (f[i] - a[i] + st[i] - 1) // st[i]
        if not fits:
            raise ValueError(f"interleave_phases: phase {k} is not a C-contiguous array of "
                             f"the output's dtype and its phase's shape")
        addresses[k] = <cnp.intp_t>cnp.PyArray_DATA(src)
    cdef cnp.ndarray b
    cdef void* bp = NULL
    if bias is not None:
        b = bias
        if b.ndim != 1 or not b.flags.c_contiguous or b.dtype != dst.dtype \
                or b.shape[0] == 0 or dst.shape[0] % b.shape[0]:
            raise ValueError("interleave_phases: bias must be a contiguous 1-D array of the "
                             "output's dtype whose length divides the planes")
        bp, channels = cnp.PyArray_DATA(b), b.shape[0]
    cdef const index_t* sp = <const index_t*>cnp.PyArray_DATA(addresses)
    cdef void* dp = cnp.PyArray_DATA(dst)
    if dst.dtype.num == cnp.NPY_FLOAT32:
        with nogil:
            _interleave_phases(sp, <float*>dp, dst.shape[0], f, st, m, <const float*>bp,
                               channels, num_threads)
    else:
        with nogil:
            _interleave_phases(sp, <double*>dp, dst.shape[0], f, st, m, <const double*>bp,
                               channels, num_threads)


# ------------------------------------------- transposed convolution by taps
#
# Kernel == stride, no padding: the outputs of the taps never overlap, so the
# layer is one product per group, (cout_g * taps) x cin_g times cin_g x
# positions, whose rows ((channel, tap) pairs) are scattered into the output.
# A task is (image, group, channel block, block of input rows): it computes
# all its channels' taps into a tile kept in L2 and scatters the tile into y,
# adding the bias while it is hot. Each output is one fixed sum over the input
# channels: no dependence on threads.
#
# The product: with 16-byte vectors (SSE) the register-blocked kernel
# (conv_block.h), whose splatted weights need no shuffles, outruns an SSE
# BLAS; it reads the weights packed once into its blocks of FCNN_BLOCK_OCB
# rows (by_taps_pack) and the input as it lies. With AVX and later the BLAS's
# GEMM is as fast or faster and takes the weights as stored (the transposed
# operand): nothing to pack.

cdef enum:
    TAPS_TILE_BYTES = 1024 * 1024     # a task's product, kept in L2 until scattered
    TAPS_PANEL_BYTES = 256 * 1024     # a task's input rows (all channels), re-read
                                      # from L2 by each block of rows of the product


cdef inline bint _taps_blocked(index_t itemsize) noexcept nogil:
    """Whether the product runs on the block kernel (see the section's comment)."""
    return block_splat(itemsize) > 1


cdef inline index_t _gcd(index_t a, index_t b) noexcept nogil:
    while b:
        a, b = b, a % b
    return a


cdef void _by_taps_tiles(index_t units, index_t cout_g, index_t taps, index_t rows,
                         index_t width, index_t k, index_t itemsize, index_t* channel_block,
                         index_t* row_block) noexcept nogil:
    """A task's output channels and input rows (of `width` positions), from
    the shape alone: the GEMM tiles of gemm_tiles, at least enough of them
    that each product fits in TAPS_TILE_BYTES, in whole channels (all their
    taps) and whole rows; on the block kernel also each task's input rows in
    TAPS_PANEL_BYTES, and the channels in whole blocks of its rows where the
    group has more."""
    cdef index_t m = cout_g * taps, n = rows * width, rb = m, cb = n
    cdef bint blocked = _taps_blocked(itemsize)
    cdef index_t want, unit = FCNN_BLOCK_OCB // _gcd(FCNN_BLOCK_OCB, taps) if blocked else 1
    units = max(1, units)               # an empty batch: the tiles of one image
    want = _ceil_div(gemm_tasks(<double>units * m * n * k), units)
    want = max(want, _ceil_div(m * n * itemsize, TAPS_TILE_BYTES))
    gemm_tiles(m, n, want, &rb, &cb)
    channel_block[0] = max(1, min(cout_g, _ceil_div(_ceil_div(rb, taps), unit) * unit))
    row_block[0] = max(1, min(rows, _ceil_div(cb, width)))
    if blocked:
        row_block[0] = max(1, min(row_block[0], TAPS_PANEL_BYTES // max(1, k * width * itemsize)))


cdef inline index_t _by_taps_ld(index_t row_block, index_t width, index_t itemsize) noexcept nogil:
    """Elements per row of a task's product tile: its positions in whole vectors."""
    cdef index_t v = block_vector(itemsize)
    return _ceil_div(row_block * width, v) * v


cdef inline index_t by_taps_tile(index_t channel_block, index_t row_block, index_t taps,
                                 index_t width, index_t cin_g, index_t itemsize) noexcept nogil:
    """Elements of one thread's scratch: the product tile (its rows in whole
    kernel blocks) and a panel for the input's last partial vector, padded to
    whole cache lines plus one."""
    cdef index_t rows = _ceil_div(channel_block * taps, FCNN_BLOCK_OCB) * FCNN_BLOCK_OCB
    return ((rows * _by_taps_ld(row_block, width, itemsize) + cin_g * block_vector(itemsize) + 15)
            // 16 * 16 + 16)


cdef void _by_taps_pack(const floating* w, floating* packed, index_t groups, index_t cin_g,
                        index_t m, int num_threads) noexcept nogil:
    """packed[group][block][i][o][s] = w[group cin_g + i, block OCB + o] for the
    (groups cin_g, m) weights (m = cout_g taps), zero past m; `s` the kernel's
    copies of each weight (conv_block.h)."""
    cdef index_t nb = _ceil_div(m, FCNN_BLOCK_OCB), splat = block_splat(sizeof(floating))
    cdef index_t task, grp, b, i, o, r, t
    cdef floating v
    cdef floating* dst
    for task in prange(groups * nb, num_threads=num_threads, schedule='static'):
        grp = task // nb
        b = task - grp * nb
        dst = packed + task * cin_g * FCNN_BLOCK_OCB * splat
        for i in range(cin_g):
            for o in range(FCNN_BLOCK_OCB):
                r = b * FCNN_BLOCK_OCB + o
                v = w[(grp * cin_g + i) * m + r] if r < m else 0
                for t in range(splat):
                    dst[(i * FCNN_BLOCK_OCB + o) * splat + t] = v


cdef void _by_taps_blocks(const floating* xs, index_t ld_x, const floating* packed,
                          index_t k, index_t row0, index_t row1, index_t m, index_t ncols,
                          floating* tile, index_t ld, floating* panel,
                          bint at_end) noexcept nogil:
    """tile[r - row0, q] = sum_i w[i, r] xs[i, q] for rows row0 .. row1 - 1 of
    the product (row0 a whole number of kernel blocks), q < ncols, on the
    block kernel with one group's packed weights; at the input's very end
    (at_end) its last partial vector comes from a zero-padded copy in panel."""
    cdef index_t vl = block_vector(sizeof(floating)), splat = block_splat(sizeof(floating))
    cdef index_t whole = ncols // vl * vl if at_end else ncols
    cdef index_t i, b
    cdef const floating* wb
    cdef floating* out
    if whole < ncols:
        for i in range(k):
            memcpy(panel + i * vl, xs + i * ld_x + whole, (ncols - whole) * sizeof(floating))
            memset(panel + i * vl + ncols - whole, 0, (vl - (ncols - whole)) * sizeof(floating))
    for b in range(row0 // FCNN_BLOCK_OCB, min(_ceil_div(m, FCNN_BLOCK_OCB),
                                               _ceil_div(row1, FCNN_BLOCK_OCB))):
        wb = packed + b * k * FCNN_BLOCK_OCB * splat
        out = tile + (b * FCNN_BLOCK_OCB - row0) * ld
        block_gemm(xs, ld_x, wb, k, out, ld, whole)
        if whole < ncols:
            block_gemm(panel, vl, wb, k, out + whole, ld, ncols - whole)


cdef void _by_taps(const floating* x, const floating* packed, const floating* bias, floating* y,
                   floating* ws, index_t batch, index_t groups, index_t cin_g, index_t cout_g,
                   const index_t* size, const index_t* stride, int num_threads) noexcept nogil:
    """y = the transposed convolution of x (batch, groups * cin_g, *size) with
    the weights by_taps_pack packed (see the section's comment)."""
    cdef index_t taps = stride[0] * stride[1] * stride[2]
    cdef index_t rows = size[0] * size[1], width = size[2], positions = rows * width
    cdef index_t out1 = size[1] * stride[1], out2 = width * stride[2]
    cdef index_t out_plane = taps * positions, m = cout_g * taps
    cdef index_t nb = _ceil_div(m, FCNN_BLOCK_OCB), splat = block_splat(sizeof(floating))
    cdef index_t cb = 0, rb = 0, n_cb, n_rb, task, t, img, grp, c0, cc, r0, rr, ncols, ld
    cdef index_t c, r, i0, i1, a0, a1, a2, j
    cdef bint blocked = _taps_blocked(sizeof(floating))
    cdef floating bv
    cdef floating* tile
    cdef floating* panel
    cdef floating* d
    cdef const floating* xs
    cdef const floating* src
    cdef const floating* src1
    _by_taps_tiles(batch * groups, cout_g, taps, rows, width, cin_g, sizeof(floating), &cb, &rb)
    n_cb = _ceil_div(cout_g, cb)
    n_rb = _ceil_div(rows, rb)
    ld = _by_taps_ld(rb, width, sizeof(floating))
    blas_enter()
    with parallel(num_threads=num_threads):
        fp_enter()
        tile = ws + threadid() * by_taps_tile(cb, rb, taps, width, cin_g, sizeof(floating))
        panel = tile + _ceil_div(cb * taps, FCNN_BLOCK_OCB) * FCNN_BLOCK_OCB * ld
        for task in prange(batch * groups * n_cb * n_rb, schedule='static'):
            t = task
            r0 = (t % n_rb) * rb
            t = t // n_rb
            c0 = (t % n_cb) * cb
            t = t // n_cb
            grp = t % groups
            img = t // groups
            rr = min(rb, rows - r0)
            cc = min(cb, cout_g - c0)
            ncols = rr * width
            xs = x + (img * groups + grp) * cin_g * positions + r0 * width
            if cin_g == 0:
                _zero_rows(tile, cc * taps, ncols, ld)
            elif not blocked:
                gemm(True, False, <int>(cc * taps), <int>ncols, <int>cin_g, <floating>1,
                     packed + grp * cin_g * m + c0 * taps, <int>m, xs, <int>positions,
                     <floating>0, tile, <int>ld)
            else:
                _by_taps_blocks(xs, positions, packed + grp * nb * cin_g * FCNN_BLOCK_OCB * splat,
                                cin_g, c0 * taps, (c0 + cc) * taps, m, ncols, tile, ld, panel,
                                img == batch - 1 and grp == groups - 1 and r0 + rr == rows)
            for c in range(cc):
                bv = bias[grp * cout_g + c0 + c] if bias != NULL else 0
                for r in range(r0, r0 + rr):
                    i0 = r // size[1]
                    i1 = r % size[1]
                    for a0 in range(stride[0]):
                        for a1 in range(stride[1]):
                            # output row (i0 s0 + a0, i1 s1 + a1): the taps a2 interleaved
                            d = y + ((img * groups + grp) * cout_g + c0 + c) * out_plane \
                                + ((i0 * stride[0] + a0) * out1 + i1 * stride[1] + a1) * out2
                            src = tile + ((c * stride[0] + a0) * stride[1] + a1) * stride[2] \
                                * ld + (r - r0) * width
                            if stride[2] == 2:      # one loop the compiler vectorizes
                                src1 = src + ld
                                for j in range(width):
                                    d[2 * j] = src[j] + bv
                                    d[2 * j + 1] = src1[j] + bv
                            else:
                                for a2 in range(stride[2]):
                                    for j in range(width):
                                        d[j * stride[2] + a2] = src[a2 * ld + j] + bv
    blas_leave()


def by_taps_workspace(index_t batch, index_t groups, index_t cin_g, index_t cout_g,
                      tuple size, tuple stride, int itemsize, int num_threads):
    """Elements of scratch conv_transpose_by_taps wants (size, stride: 3 ints)."""
    cdef index_t taps = stride[0] * stride[1] * stride[2], rows = size[0] * size[1]
    cdef index_t cb = 0, rb = 0
    _by_taps_tiles(batch * groups, cout_g, taps, rows, size[2], cin_g, itemsize, &cb, &rb)
    return max(1, num_threads) * by_taps_tile(cb, rb, taps, size[2], cin_g, itemsize)


def by_taps_packed_size(index_t groups, index_t cin_g, index_t cout_g, index_t taps,
                        int itemsize):
    """Elements of the weights by_taps_pack writes; 0: the kernel takes them as
    stored (see the section's comment)."""
    if not _taps_blocked(itemsize):
        return 0
    return (groups * _ceil_div(cout_g * taps, FCNN_BLOCK_OCB) * FCNN_BLOCK_OCB * cin_g
            * block_splat(itemsize))


def by_taps_pack(cnp.ndarray w, int groups, cnp.ndarray packed, int num_threads):
    """Pack a transposed convolution's weights w (C_in, C_out / groups, *k)
    for conv_transpose_by_taps (kernel == stride), into by_taps_packed_size
    elements (none to write where that is 0)."""
    if w.ndim < 3 or not w.flags.c_contiguous or not packed.flags.c_contiguous \
            or w.dtype != packed.dtype or w.dtype.num not in (cnp.NPY_FLOAT32, cnp.NPY_FLOAT64):
        raise ValueError("by_taps_pack: expected C-contiguous float32 or float64 weights and "
                         "output of one dtype")
    if groups < 1 or w.shape[0] % groups:
        raise ValueError("by_taps_pack: groups must divide the input channels")
    cdef index_t cin_g = w.shape[0] // groups, m = w.size // max(1, w.shape[0])
    cdef index_t taps = m // max(1, w.shape[1])
    cdef index_t size = by_taps_packed_size(groups, cin_g, w.shape[1], taps, w.itemsize)
    if packed.size != size:
        raise ValueError(f"by_taps_pack: expected {size} packed elements, got {packed.size}")
    if size == 0:
        return
    cdef void* wp = cnp.PyArray_DATA(w)
    cdef void* pp = cnp.PyArray_DATA(packed)
    if w.dtype.num == cnp.NPY_FLOAT32:
        with nogil:
            _by_taps_pack(<const float*>wp, <float*>pp, groups, cin_g, m, num_threads)
    else:
        with nogil:
            _by_taps_pack(<const double*>wp, <double*>pp, groups, cin_g, m, num_threads)


def conv_transpose_by_taps(cnp.ndarray x, cnp.ndarray packed, object bias, cnp.ndarray y,
                           int groups, tuple stride, cnp.ndarray workspace, int num_threads):
    """y = the transposed convolution of x (N, C_in, *size) with weights
    (C_in, C_out / groups, *stride) as by_taps_pack packed them (or as
    stored, where by_taps_packed_size is 0) (kernel == stride, no padding, no
    dilation), plus bias; all C-contiguous, one float dtype, 1-D to 3-D
    (stride: as many ints; C_out from y)."""
    cdef int nd = x.ndim - 2, i
    cdef index_t s[3]
    cdef index_t sz[3]
    if not 1 <= nd <= 3 or len(stride) != nd or y.ndim != nd + 2 or groups < 1:
        raise ValueError("conv_transpose_by_taps: expected 1-D to 3-D operands and strides")
    for a in (x, packed, y, workspace) + (() if bias is None else (bias,)):
        if not (<cnp.ndarray>a).flags.c_contiguous or (<cnp.ndarray>a).dtype != x.dtype \
                or x.dtype.num not in (cnp.NPY_FLOAT32, cnp.NPY_FLOAT64):
            raise ValueError("conv_transpose_by_taps: expected C-contiguous float32 or "
                             "float64 operands of one dtype")
    for i in range(3):
        s[i] = 1 if i < 3 - nd else stride[i - (3 - nd)]
        sz[i] = 1 if i < 3 - nd else x.shape[2 + i - (3 - nd)]
        if s[i] < 1:
            raise ValueError("conv_transpose_by_taps: strides must be positive")
    cdef index_t cin = x.shape[1], cout_g = y.shape[1] // groups
    cdef index_t size = by_taps_packed_size(groups, cin // groups, cout_g, s[0] * s[1] * s[2],
                                            x.itemsize)
    cdef bint fits = cin % groups == 0 and y.shape[1] % groups == 0 \
        and y.shape[0] == x.shape[0] \
        and (bias is None or ((<cnp.ndarray>bias).ndim == 1
                              and (<cnp.ndarray>bias).shape[0] == y.shape[1]))
    if size:
        fits = fits and packed.size == size
    else:               # the weights as stored
        fits = (fits and packed.ndim == nd + 2 and packed.shape[0] == cin
                and packed.shape[1] == cout_g)
        for i in range(nd):
            fits = fits and packed.shape[2 + i] == stride[i]
    for i in range(nd):
        fits = fits and y.shape[2 + i] == x.shape[2 + i] * stride[i]
    if not fits:
        raise ValueError("conv_transpose_by_taps: operand shapes do not match")
    if workspace.size < by_taps_workspace(x.shape[0], groups, cin // groups, cout_g,
                                          (sz[0], sz[1], sz[2]), (s[0], s[1], s[2]),
                                          x.itemsize, num_threads):
        raise ValueError("conv_transpose_by_taps: workspace too small")
    if y.size == 0:
        return
    cdef void* xp = cnp.PyArray_DATA(x)
    cdef void* wp = cnp.PyArray_DATA(packed)
    cdef void* bp = NULL if bias is None else cnp.PyArray_DATA(<cnp.ndarray>bias)
    cdef void* yp = cnp.PyArray_DATA(y)
    cdef void* sp = cnp.PyArray_DATA(workspace)
    if x.dtype.num == cnp.NPY_FLOAT32:
        with nogil:
            _by_taps(<float*>xp, <float*>wp, <float*>bp, <float*>yp, <float*>sp, x.shape[0],
                     groups, cin // groups, cout_g, sz, s, num_threads)
    else:
        with nogil:
            _by_taps(<double*>xp, <double*>wp, <double*>bp, <double*>yp, <double*>sp,
                     x.shape[0], groups, cin // groups, cout_g, sz, s, num_threads)


# ------------------------------------------------ transposed-convolution weights

cdef enum:
    PW_FILTERS = 16     # output filters a phase_weights task: their kernels, adjacent in w, read at once


cdef void _phase_weights(const floating* w, floating* out, index_t groups, index_t cin_g,
                         index_t cout_g, index_t kernel, const int64_t* taps, index_t sets,
                         index_t n_taps, int num_threads) noexcept nogil:
    """out[(s groups + g) cout_g + o, i, t] = w[g cin_g + i, o, taps[s, t]] (0
    where taps[s, t] is -1): PW_FILTERS output filters (all their sets) a
    task, each filter written in one sequential run while the kernels it
    reads, adjacent in w for the task's filters, stay in cache."""
    cdef index_t blocks = (cout_g + PW_FILTERS - 1) // PW_FILTERS
    cdef index_t task, grp, o0, o1, o, i, t, st, set_stride = groups * cout_g * cin_g * n_taps
    cdef index_t last = n_taps - 1
    cdef const floating* src
    cdef floating* dst
    cdef const int64_t* tp
    cdef bint flipped
    with parallel(num_threads=num_threads):
        for task in prange(groups * blocks, schedule='static'):
            grp = task // blocks
            o0 = (task - grp * blocks) * PW_FILTERS
            o1 = min(cout_g, o0 + PW_FILTERS)
            for st in range(sets):
                tp = taps + st * n_taps
                # the whole kernel reversed (every stride-1 transposed
                # convolution): a plain loop, without the index table's loads
                flipped = n_taps == kernel
                for t in range(n_taps):
                    flipped = flipped and tp[t] == last - t
                for o in range(o0, o1):
                    # a filter's kernels in order: one sequential run of out
                    dst = out + st * set_stride + (grp * cout_g + o) * cin_g * n_taps
                    src = w + (grp * cin_g * cout_g + o) * kernel
                    for i in range(cin_g):
                        if flipped and n_taps == 9:     # 3x3: a known length, unrolled
                            for t in range(9):
                                dst[t] = src[8 - t]
                        elif flipped:
                            for t in range(n_taps):
                                dst[t] = src[last - t]
                        else:
                            for t in range(n_taps):
                                dst[t] = src[tp[t]] if tp[t] >= 0 else 0
                        dst = dst + n_taps
                        src = src + cout_g * kernel


def phase_weights(cnp.ndarray w, int groups, cnp.ndarray taps, cnp.ndarray out,
                  int num_threads):
    """A transposed convolution's weights w (in, out / groups, *k) as the
    convolution weights of output phases: out (sets * out, in / groups,
    n_taps) holds, per set of taps (a row of `taps`, int64 (sets, n_taps) or
    one set (n_taps,); -1: a zero) and filter, the kernel taps at those flat
    indices."""
    cdef index_t kernel, cin_g, cout_g, sets, n_taps
    if w.ndim < 3 or not w.flags.c_contiguous or out.ndim != 3 or not out.flags.c_contiguous \
            or w.dtype != out.dtype or w.dtype.num not in (cnp.NPY_FLOAT32, cnp.NPY_FLOAT64):
        raise ValueError("phase_weights: expected C-contiguous float32 or float64 weights "
                         "and output of one dtype")
    if groups < 1 or w.shape[0] % groups:
        raise ValueError("phase_weights: groups must divide the input channels")
    if taps.dtype != np.int64 or taps.ndim not in (1, 2) or not taps.flags.c_contiguous:
        raise ValueError("phase_weights: expected int64 taps (sets, taps) or (taps,)")
    sets = 1 if taps.ndim == 1 else taps.shape[0]
    n_taps = taps.shape[taps.ndim - 1]
    kernel = w.size // max(1, w.shape[0] * w.shape[1])
    cin_g, cout_g = w.shape[0] // groups, w.shape[1]
    if out.shape[0] != sets * groups * cout_g or out.shape[1] != cin_g \
            or out.shape[2] != n_taps:
        raise ValueError("phase_weights: expected an (sets * out, in / groups, taps) output")
    if taps.size and (taps.min() < -1 or taps.max() >= kernel):
        raise ValueError("phase_weights: a tap outside the kernel")
    if out.size == 0:
        return
    cdef const int64_t* tp = <const int64_t*>cnp.PyArray_DATA(taps)
    cdef void* wp = cnp.PyArray_DATA(w)
    cdef void* op = cnp.PyArray_DATA(out)
    if w.dtype.num == cnp.NPY_FLOAT32:
        with nogil:
            _phase_weights(<const float*>wp, <float*>op, groups, cin_g, cout_g, kernel, tp,
                           sets, n_taps, num_threads)
    else:
        with nogil:
            _phase_weights(<const double*>wp, <double*>op, groups, cin_g, cout_g, kernel, tp,
                           sets, n_taps, num_threads)

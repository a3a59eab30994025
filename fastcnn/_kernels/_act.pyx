"""Element-wise activations, PReLU and softmax kernels.

Element-wise ops split the flat array into fixed chunks (shape-only, so results
never depend on the thread count) and run one vectorised loop per chunk; they
may run in place (y is x). Softmax works on (outer, n, inner) views of the
array: with inner == 1 each row is contiguous; otherwise blocks of the inner
axis are reduced across n as vectors, in a pipeline (_softmax_blocks). A row
or column with a NaN gives NaN, as in PyTorch.
"""
cimport numpy as cnp
import numpy as np
from cython.parallel cimport parallel, prange, threadid
from fastcnn._kernels._omp cimport fp_enter

from fastcnn._kernels._typedefs cimport floating, index_t
from fastcnn._kernels._activation cimport (
    activate, max_nan, _exp, _log, ACT_NONE, ACT_RELU, ACT_RELU6, ACT_SILU, ACT_LEAKY_RELU,
    ACT_ELU, ACT_HARDTANH, ACT_SIGMOID, ACT_TANH, ACT_HARDSWISH, ACT_HARDSIGMOID, ACT_GELU,
    ACT_GELU_TANH, ACT_MISH, ACT_SOFTPLUS, ACT_EXPM1_SCALED, ACT_ERF, ACT_EXP, ACT_LOG,
    ACT_SQRT, ACT_COUNT, ACT_FUSABLE_LAST)

cnp.import_array()

# The activation codes for the Python layers (values from fastcnn.h and
# _activation.pxd): name -> code, and the names the layers fuse into their last pass.
CODES = {None: ACT_NONE, "relu": ACT_RELU, "relu6": ACT_RELU6, "silu": ACT_SILU,
         "leaky_relu": ACT_LEAKY_RELU, "elu": ACT_ELU, "hardtanh": ACT_HARDTANH,
         "sigmoid": ACT_SIGMOID, "tanh": ACT_TANH, "hardswish": ACT_HARDSWISH,
         "hardsigmoid": ACT_HARDSIGMOID, "gelu": ACT_GELU, "gelu_tanh": ACT_GELU_TANH,
         "mish": ACT_MISH, "softplus": ACT_SOFTPLUS, "expm1_scaled": ACT_EXPM1_SCALED,
         "erf": ACT_ERF, "exp": ACT_EXP, "log": ACT_LOG, "sqrt": ACT_SQRT}
FUSABLE = tuple(name for name, code in CODES.items() if code <= ACT_FUSABLE_LAST)

cdef enum:
    CHUNK = 16384          # elements per element-wise task


cdef inline index_t _ceil_div(index_t a, index_t b) noexcept nogil:
    return (a + b - 1) // b


# ---------------------------------------------------------------- element-wise

cdef void _elementwise(const floating* x, floating* y, index_t n, int act, double alpha,
                       double beta, double gamma, int num_threads) noexcept nogil:
    cdef index_t c, start
    cdef index_t chunks = _ceil_div(n, CHUNK)
    if chunks <= 1 or num_threads <= 1:
        # in the calling thread (OpenMP's primary thread too): a parallel
        # region costs more than a small call
        fp_enter()
        for c in range(chunks):
            start = c * CHUNK
            activate(x + start, y + start, min(<index_t>CHUNK, n - start), act, alpha, beta, gamma)
        return
    # no more threads than chunks: waking an idle one costs more than a small call
    with parallel(num_threads=min(num_threads, chunks)):
        fp_enter()
        for c in prange(chunks, schedule='static'):
            start = c * CHUNK
            activate(x + start, y + start, min(<index_t>CHUNK, n - start), act, alpha, beta, gamma)


def elementwise(int act, cnp.ndarray x, cnp.ndarray y, double alpha, double beta,
                double gamma, int num_threads):
    """y = act(x) for C-contiguous x, y of one dtype and size (y may be x)."""
    if not 0 <= act < ACT_COUNT:
        raise ValueError(f"unknown activation code {act}")
    cdef index_t n = x.size
    cdef void* xp = cnp.PyArray_DATA(x)
    cdef void* yp = cnp.PyArray_DATA(y)
    if x.dtype.num == cnp.NPY_FLOAT32:
        with nogil:
            _elementwise(<float*>xp, <float*>yp, n, act, alpha, beta, gamma, num_threads)
    else:
        with nogil:
            _elementwise(<double*>xp, <double*>yp, n, act, alpha, beta, gamma, num_threads)


def same_buffer(cnp.ndarray a, cnp.ndarray b):
    """Whether a and b are one array through two objects (an in-place call):
    the same data address, shape, strides and dtype. A C-level address test,
    as __array_interface__ costs a microsecond per call."""
    cdef int d
    if (cnp.PyArray_DATA(a) != cnp.PyArray_DATA(b) or cnp.PyArray_NDIM(a) != cnp.PyArray_NDIM(b)
            or a.dtype != b.dtype):
        return False
    for d in range(cnp.PyArray_NDIM(a)):
        if (cnp.PyArray_DIMS(a)[d] != cnp.PyArray_DIMS(b)[d]
                or cnp.PyArray_STRIDES(a)[d] != cnp.PyArray_STRIDES(b)[d]):
            return False
    return True


cdef void _add(const floating* a, const floating* b, floating* y, index_t n,
               int num_threads) noexcept nogil:
    cdef index_t c, start, i, stop
    cdef index_t chunks = _ceil_div(n, CHUNK)
    if chunks <= 1 or num_threads <= 1:
        fp_enter()              # in the calling thread, as _elementwise
        for i in range(n):
            y[i] = a[i] + b[i]
        return
    with parallel(num_threads=min(num_threads, chunks)):
        fp_enter()
        for c in prange(chunks, schedule='static'):
            start = c * CHUNK
            stop = min(start + CHUNK, n)
            for i in range(start, stop):
                y[i] = a[i] + b[i]


def add(cnp.ndarray a, cnp.ndarray b, cnp.ndarray y, int num_threads):
    """y = a + b for C-contiguous a, b, y of one float dtype and size (y may
    be a or b), in threaded chunks: what numpy's single-threaded add would
    leave to one core."""
    cdef index_t n = y.size
    if a.size != n or b.size != n or a.dtype != y.dtype or b.dtype != y.dtype:
        raise ValueError(f"add: operands of {a.size}, {b.size} and {n} elements, dtypes "
                         f"{a.dtype}, {b.dtype}, {y.dtype}: expected one size and dtype")
    if not (a.flags.c_contiguous and b.flags.c_contiguous and y.flags.c_contiguous):
        raise ValueError("add: expected C-contiguous operands")
    cdef void* ap = cnp.PyArray_DATA(a)
    cdef void* bp = cnp.PyArray_DATA(b)
    cdef void* yp = cnp.PyArray_DATA(y)
    if y.dtype.num == cnp.NPY_FLOAT32:
        with nogil:
            _add(<float*>ap, <float*>bp, <float*>yp, n, num_threads)
    elif y.dtype.num == cnp.NPY_FLOAT64:
        with nogil:
            _add(<double*>ap, <double*>bp, <double*>yp, n, num_threads)
    else:
        raise TypeError(f"add: expected float32 or float64, got {y.dtype}")


# ---------------------------------------------------------------- PReLU

cdef void _prelu(const floating* x, const floating* w, floating* y, index_t planes,
                 index_t channels, index_t inner, bint shared, int num_threads) noexcept nogil:
    """y = x > 0 ? x : w[c] * x over (planes = N * C, inner) with c = plane % C."""
    cdef index_t blocks = _ceil_div(inner, CHUNK) if inner > 0 else 0
    cdef index_t task, plane, start, stop, i
    cdef floating slope, v
    cdef floating zero = 0
    with parallel(num_threads=num_threads):
        fp_enter()
        for task in prange(planes * blocks, schedule='static'):
            plane = task // blocks
            start = (task % blocks) * CHUNK
            stop = min(start + CHUNK, inner)
            slope = w[0] if shared else w[plane % channels]
            for i in range(plane * inner + start, plane * inner + stop):
                v = x[i]
                y[i] = v if v > zero else slope * v


def prelu(cnp.ndarray x, cnp.ndarray weight, cnp.ndarray y, index_t planes, index_t channels,
          index_t inner, int num_threads):
    cdef bint shared = weight.size == 1
    cdef void* xp = cnp.PyArray_DATA(x)
    cdef void* wp = cnp.PyArray_DATA(weight)
    cdef void* yp = cnp.PyArray_DATA(y)
    if x.dtype.num == cnp.NPY_FLOAT32:
        with nogil:
            _prelu(<float*>xp, <float*>wp, <float*>yp, planes, channels, inner, shared, num_threads)
    else:
        with nogil:
            _prelu(<double*>xp, <double*>wp, <double*>yp, planes, channels, inner, shared, num_threads)


# ---------------------------------------------------------------- plane scale

cdef void _scale_planes(const floating* x, const floating* scale, floating* y, index_t planes,
                        index_t inner, int num_threads) noexcept nogil:
    """y = x * scale[p] over (planes, inner): channel dropout's mask."""
    cdef index_t blocks = _ceil_div(inner, CHUNK) if inner > 0 else 0
    cdef index_t task, plane, start, stop, i
    cdef floating k
    with parallel(num_threads=min(num_threads, max(planes * blocks, 1))):
        fp_enter()
        for task in prange(planes * blocks, schedule='static'):
            plane = task // blocks
            start = plane * inner + (task % blocks) * CHUNK
            stop = plane * inner + min((task % blocks + 1) * CHUNK, inner)
            k = scale[plane]
            for i in range(start, stop):
                y[i] = x[i] * k


def scale_planes(cnp.ndarray x, cnp.ndarray scale, cnp.ndarray y, int num_threads):
    """y = x * scale[p] for C-contiguous x, y (planes, ...) and scale (planes,),
    one dtype; y may be x."""
    cdef index_t planes = scale.size
    cdef index_t inner = x.size // planes if planes else 0
    cdef void* xp = cnp.PyArray_DATA(x)
    cdef void* sp = cnp.PyArray_DATA(scale)
    cdef void* yp = cnp.PyArray_DATA(y)
    if x.dtype.num == cnp.NPY_FLOAT32:
        with nogil:
            _scale_planes(<float*>xp, <float*>sp, <float*>yp, planes, inner, num_threads)
    else:
        with nogil:
            _scale_planes(<double*>xp, <double*>sp, <double*>yp, planes, inner, num_threads)


# ---------------------------------------------------------------- softmax

cdef extern from "softmax.h" nogil:
    void fcnn_softmax_rows_f32(const float* x, float* y, long rows, long n, int log)


cdef inline void _softmax_row_run(const floating* x, floating* y, index_t rows, index_t n,
                                  bint log) noexcept nogil:
    """Softmax of `rows` contiguous rows of n: float32 by softmax.h's vector
    kernel (short rows several in lockstep); otherwise row by row, max and sum
    over 16 interleaved partial results (the sum in double), combined in a
    fixed order."""
    cdef index_t i, j, row
    cdef floating m, e, lse, inv
    cdef floating mx[16]
    cdef double s[16]
    cdef double total
    cdef const floating* xr
    cdef floating* yr
    if floating is float:
        fcnn_softmax_rows_f32(x, y, rows, n, log)
    else:
        for row in range(rows):
            xr = x + row * n
            yr = y + row * n
            for j in range(16):
                mx[j] = xr[0]
                s[j] = 0
            i = 0
            while i + 16 <= n:
                for j in range(16):
                    mx[j] = max_nan(mx[j], xr[i + j])
                i += 16
            for j in range(n - i):
                mx[j] = max_nan(mx[j], xr[i + j])
            m = mx[0]
            for j in range(1, 16):
                m = max_nan(m, mx[j])
            i = 0
            while i + 16 <= n:
                for j in range(16):
                    e = _exp(xr[i + j] - m)
                    s[j] += e
                    if not log:
                        yr[i + j] = e
                i += 16
            for j in range(n - i):
                e = _exp(xr[i + j] - m)
                s[j] += e
                if not log:
                    yr[i + j] = e
            for j in range(8):
                s[j] += s[j + 8]
            for j in range(4):
                s[j] += s[j + 4]
            total = (s[0] + s[2]) + (s[1] + s[3])
            if log:
                lse = m + <floating>_log(<floating>total)
                for i in range(n):
                    yr[i] = xr[i] - lse
            else:
                inv = <floating>(1.0 / total)
                for i in range(n):
                    yr[i] = yr[i] * inv


cdef void _softmax_rows(const floating* x, floating* y, index_t rows, index_t n, bint log,
                        int num_threads) noexcept nogil:
    """Softmax of each of `rows` contiguous rows of n, each worker taking a
    contiguous run of rows."""
    cdef index_t workers = min(<index_t>max(num_threads, 1), rows)
    cdef index_t k, r0
    if workers == 1:                # in the calling thread: no parallel region to start
        fp_enter()
        _softmax_row_run(x, y, rows, n, log)
        return
    with parallel(num_threads=workers):
        fp_enter()
        for k in prange(workers, schedule='static', chunksize=1):
            r0 = rows * k // workers
            _softmax_row_run(x + r0 * n, y + r0 * n, rows * (k + 1) // workers - r0, n, log)


cdef extern from "softmax.h" nogil:
    void fcnn_softmax_step_f32(const float* xn, float* mn, long wn, int first,
                               const float* xc, const float* mc, float* s, float* ec, long wc,
                               const float* ap, const float* r, float* yp, long wp, int sub,
                               int stream, int rows, long xs, long es, long as_)
    void fcnn_stream_fence()


cdef inline void _softmax_step(const floating* xn, floating* mn, index_t wn, bint first,
                               const floating* xc, const floating* mc, floating* s,
                               floating* ec, index_t wc, const floating* ap, const floating* r,
                               floating* yp, index_t wp, bint sub, bint stream, int rows,
                               index_t xs, index_t es, index_t as_) noexcept nogil:
    """One step of the softmax pipeline (softmax.h) over `rows` rows (1, 2 or 4;
    row q at q * xs on in xn, xc, yp, q * es in ec, q * as_ in ap): the next
    block's running max, the current block's exponents (to ec unless NULL)
    and their sums, the previous block's output (ap - r or ap * r)."""
    cdef index_t j
    cdef int q
    cdef floating v, e
    if floating is float:
        fcnn_softmax_step_f32(xn, mn, wn, first, xc, mc, s, ec, wc, ap, r, yp, wp, sub, stream,
                              rows, xs, es, as_)
    else:
        for q in range(rows):
            for j in range(wn):
                v = xn[q * xs + j]
                mn[j] = v if (first and q == 0) or v > mn[j] else mn[j]
            for j in range(wc):
                e = _exp(xc[q * xs + j] - mc[j])
                s[j] = s[j] + e
                if ec != NULL:
                    ec[q * es + j] = e
            for j in range(wp):
                yp[q * xs + j] = ap[q * as_ + j] - r[j] if sub else ap[q * as_ + j] * r[j]


cdef inline index_t _softmax_block(index_t n, index_t inner) noexcept nogil:
    """Inner positions per softmax block: as many as let n rows of them fill one
    exponent tile (at least a vector, at most INNER_BLOCK or inner rounded up)."""
    cdef index_t b = SOFTMAX_TILE // n
    b = max(<index_t>16, min(b - b % 16, <index_t>INNER_BLOCK))
    return min(b, _ceil_div(inner, 16) * 16)


cdef index_t softmax_workspace(index_t n, index_t inner) noexcept nogil:
    cdef index_t b = _softmax_block(n, inner)
    return 4 * b + (2 * n * b if n * b <= SOFTMAX_TILE else 0) + 16   # + 16: to align it


cdef inline index_t _to_line(const void* p, index_t item) noexcept nogil:
    """Elements of size item from p to the next 64-byte boundary."""
    return ((64 - <size_t>p % 64) % 64) // item


cdef void _softmax_blocks(const floating* x, floating* y, index_t n, index_t inner, index_t bw,
                          index_t shift, index_t blocks, index_t b0, index_t b1, bint log,
                          bint tiled, bint stream, floating* scratch) noexcept nogil:
    """Softmax of blocks b0..b1-1 (block b: image b // blocks, inner positions
    [k * bw - shift, (k + 1) * bw - shift) within [0, inner) for k = b % blocks)
    as a pipeline: each sweep over the n rows takes the running max of the
    next block (reading memory), the exponents and their sums of the current
    one (computing, on rows still in cache) and writes the output of the
    previous one. Exponents go to a tile of the scratch (tiled) or to y
    itself; tile[1] is unused when not tiled."""
    cdef floating* m[2]                      # the current and the next block's max
    cdef floating* tile[2]                   # the current and the previous block's exponents
    cdef floating* s = scratch + 2 * bw      # the current block's sums
    cdef floating* r = scratch + 3 * bw      # the previous block's 1 / sum or max + log(sum)
    cdef index_t b, c, j, k, w_next, w_cur = 0, w_prev = 0
    cdef index_t e_stride = bw if tiled else inner
    cdef index_t a_stride = inner if log or not tiled else bw
    cdef const floating* x_next = x
    cdef const floating* x_cur = x
    cdef const floating* x_prev = x
    cdef floating* y_next = y
    cdef floating* y_cur = y
    cdef floating* y_prev = y
    cdef floating* e_cur
    cdef const floating* a_prev
    cdef int p = 0, rows
    # streamed rows stepped together must share their offset within a cache line
    cdef bint together = not stream or inner % 16 == 0
    cdef floating one = 1
    m[0] = scratch
    m[1] = scratch + bw
    tile[0] = scratch + 4 * bw
    tile[1] = tile[0] + n * bw
    for b in range(b0 - 1, b1 + 1):
        w_next = 0
        if b + 1 < b1:
            k = (b + 1) % blocks
            j = max(k * bw - shift, 0)
            x_next = x + (b + 1) // blocks * n * inner + j
            y_next = y + (b + 1) // blocks * n * inner + j
            w_next = min((k + 1) * bw - shift, inner) - j
        e_cur = NULL if log else (tile[p] if tiled else y_cur)
        a_prev = x_prev if log else (tile[1 - p] if tiled else y_prev)
        for j in range(w_cur):
            s[j] = 0
        # four rows a step (shared loads, four exponents in flight), the last two
        # or one as such
        c = 0
        while c < n:
            rows = 4 if c + 3 < n and together else (2 if c + 1 < n and together else 1)
            _softmax_step(x_next + c * inner, m[1 - p], w_next, c == 0,
                          x_cur + c * inner, m[p], s,
                          NULL if e_cur == NULL else e_cur + c * e_stride, w_cur,
                          a_prev + c * a_stride, r, y_prev + c * inner, w_prev, log, stream,
                          rows, inner, e_stride, a_stride)
            c += rows
        for j in range(w_cur):
            r[j] = m[p][j] + _log(s[j]) if log else one / s[j]
        x_prev, y_prev, w_prev = x_cur, y_cur, w_cur
        x_cur, y_cur, w_cur = x_next, y_next, w_next
        p = 1 - p
    if stream:
        fcnn_stream_fence()


cdef void _softmax_inner(const floating* x, floating* y, index_t outer, index_t n,
                         index_t inner, bint log, floating* ws, index_t ws_per_thread,
                         int num_threads) noexcept nogil:
    """Softmax along the middle axis of (outer, n, inner): blocks of inner
    positions reduced across n with vector operations, each worker taking a
    contiguous run of blocks. A column's result never depends on its block,
    so when every row of y starts at the same offset within a cache line the
    blocks are shifted to start on line boundaries (whole-line stores)."""
    cdef index_t bw = _softmax_block(n, inner)
    cdef index_t item = sizeof(floating)
    cdef index_t shift = <size_t>y % 64 // item if inner * item % 64 == 0 and <size_t>y % item == 0 else 0
    cdef index_t blocks = _ceil_div(inner + shift, bw)
    cdef index_t total = outer * blocks
    cdef index_t workers = min(<index_t>max(num_threads, 1), total)
    cdef bint tiled = n * bw <= SOFTMAX_TILE
    cdef bint stream = tiled and outer * n * inner * <index_t>sizeof(floating) >= SOFTMAX_STREAM_BYTES
    cdef index_t k
    cdef floating* scratch
    if workers == 1:                # in the calling thread: no parallel region to start
        fp_enter()
        _softmax_blocks(x, y, n, inner, bw, shift, blocks, 0, total, log, tiled, stream,
                        ws + _to_line(ws, item))
        return
    with parallel(num_threads=num_threads):
        fp_enter()
        for k in prange(workers, schedule='static', chunksize=1):
            scratch = ws + threadid() * ws_per_thread
            _softmax_blocks(x, y, n, inner, bw, shift, blocks, total * k // workers,
                            total * (k + 1) // workers, log, tiled, stream,
                            scratch + _to_line(scratch, item))


# ---------------------------------------------------------------- finiteness

cdef extern from "reduce.h" nogil:
    int fcnn_all_finite_f32(const float* x, long n)
    int fcnn_all_finite_f64(const double* x, long n)


cdef bint _all_finite(const floating* x, index_t n, int num_threads) noexcept nogil:
    """True when no value is NaN or +-Inf."""
    cdef index_t chunks = _ceil_div(n, CHUNK)
    cdef index_t c, start
    cdef int bad = 0
    with parallel(num_threads=num_threads):
        fp_enter()
        for c in prange(chunks, schedule='static'):
            start = c * CHUNK
            if floating is float:
                if not fcnn_all_finite_f32(x + start, min(<index_t>CHUNK, n - start)):
                    bad += 1
            else:
                if not fcnn_all_finite_f64(x + start, min(<index_t>CHUNK, n - start)):
                    bad += 1
    return bad == 0


cdef bint all_finite_f32(const float* x, index_t n, int num_threads) noexcept nogil:
    return _all_finite(x, n, num_threads)


cdef bint all_finite_f64(const double* x, index_t n, int num_threads) noexcept nogil:
    return _all_finite(x, n, num_threads)


def all_finite(cnp.ndarray x, int num_threads):
    """Whether a C-contiguous float array holds no NaN or Inf."""
    cdef void* xp = cnp.PyArray_DATA(x)
    cdef index_t n = x.size
    cdef bint ok
    if x.dtype.num == cnp.NPY_FLOAT32:
        with nogil:
            ok = _all_finite(<float*>xp, n, num_threads)
    else:
        with nogil:
            ok = _all_finite(<double*>xp, n, num_threads)
    return ok


cdef void elementwise_f32(const float* x, float* y, index_t n, int act, double alpha,
                          double beta, double gamma, int num_threads) noexcept nogil:
    _elementwise(x, y, n, act, alpha, beta, gamma, num_threads)


cdef void elementwise_f64(const double* x, double* y, index_t n, int act, double alpha,
                          double beta, double gamma, int num_threads) noexcept nogil:
    _elementwise(x, y, n, act, alpha, beta, gamma, num_threads)


cdef void _softmax(const floating* x, floating* y, index_t outer, index_t n, index_t inner,
                   bint log, floating* ws, int num_threads) noexcept nogil:
    if outer * n * inner == 0:
        return
    if inner == 1:
        _softmax_rows(x, y, outer, n, log, num_threads)
    else:
        _softmax_inner(x, y, outer, n, inner, log, ws, softmax_workspace(n, inner), num_threads)


cdef void softmax_f32(const float* x, float* y, index_t outer, index_t n, index_t inner,
                      bint log, float* ws, int num_threads) noexcept nogil:
    _softmax(x, y, outer, n, inner, log, ws, num_threads)


cdef void softmax_f64(const double* x, double* y, index_t outer, index_t n, index_t inner,
                      bint log, double* ws, int num_threads) noexcept nogil:
    _softmax(x, y, outer, n, inner, log, ws, num_threads)


def softmax(cnp.ndarray x, cnp.ndarray y, index_t outer, index_t n, index_t inner, bint log,
            int num_threads):
    """Softmax (or log-softmax) along the middle axis of a C-contiguous
    (outer, n, inner) array; y may be x."""
    cdef void* xp = cnp.PyArray_DATA(x)
    cdef void* yp = cnp.PyArray_DATA(y)
    cdef index_t ws_per_thread
    cdef cnp.ndarray ws
    cdef void* wp
    if outer * n * inner == 0:
        return
    if inner == 1:
        if x.dtype.num == cnp.NPY_FLOAT32:
            with nogil:
                _softmax_rows(<float*>xp, <float*>yp, outer, n, log, num_threads)
        else:
            with nogil:
                _softmax_rows(<double*>xp, <double*>yp, outer, n, log, num_threads)
        return
    ws_per_thread = softmax_workspace(n, inner)
    ws = np.empty(ws_per_thread * num_threads, x.dtype)
    wp = cnp.PyArray_DATA(ws)
    if x.dtype.num == cnp.NPY_FLOAT32:
        with nogil:
            _softmax_inner(<float*>xp, <float*>yp, outer, n, inner, log, <float*>wp,
                           ws_per_thread, num_threads)
    else:
        with nogil:
            _softmax_inner(<double*>xp, <double*>yp, outer, n, inner, log, <double*>wp,
                           ws_per_thread, num_threads)

"""Element-wise activations, PReLU and softmax kernels.

Element-wise ops split the flat array into fixed chunks (shape-only, so results
never depend on the thread count) and run one vectorised loop per chunk; they
may run in place (y is x). Softmax works on (outer, n, inner) views of the
array: with inner == 1 each row is contiguous; otherwise blocks of the inner
axis are reduced across n as vectors. Maxima propagate NaN, so a row with a
NaN gives NaN, as in PyTorch.
"""
cimport numpy as cnp
from cython.parallel cimport parallel, prange, threadid
from fastcnn._kernels._omp cimport fp_enter

from fastcnn._kernels._typedefs cimport floating, index_t
from fastcnn._kernels._activation cimport activate, max_nan, _exp, _log, ACT_COUNT

cnp.import_array()

cdef enum:
    CHUNK = 16384          # elements per element-wise task


cdef inline index_t _ceil_div(index_t a, index_t b) noexcept nogil:
    return (a + b - 1) // b


# ---------------------------------------------------------------- element-wise

cdef void _elementwise(const floating* x, floating* y, index_t n, int act, double alpha,
                       double beta, double gamma, int num_threads) noexcept nogil:
    cdef index_t c, start
    cdef index_t chunks = _ceil_div(n, CHUNK)
    with parallel(num_threads=num_threads):
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


# ---------------------------------------------------------------- softmax

cdef inline void _softmax_row(const floating* xr, floating* yr, index_t n,
                              bint log) noexcept nogil:
    """Softmax of one contiguous row. Max and sum use 16 interleaved partial
    results (vectorised), combined in a fixed order."""
    cdef index_t i, j
    cdef floating m, e, lse, inv
    cdef floating mx[16]
    cdef double s[16]
    cdef double total
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
    cdef index_t r
    with parallel(num_threads=num_threads):
        fp_enter()
        for r in prange(rows, schedule='static'):
            _softmax_row(x + r * n, y + r * n, n, log)


cdef extern from "vecmath.h" nogil:
    void fcnn_exp_diff_sum_f32(const float* x, const float* m, float* s, float* y, long n)


cdef inline void _exp_diff_sum(const floating* x, const floating* m, floating* s, floating* y,
                               index_t n) noexcept nogil:
    """s[j] += e and y[j] = e (y may be NULL) for e = exp(x[j] - m[j])."""
    cdef index_t j
    cdef floating e
    if floating is float:
        fcnn_exp_diff_sum_f32(x, m, s, y, n)
    elif y == NULL:
        for j in range(n):
            s[j] = s[j] + _exp(x[j] - m[j])
    else:
        for j in range(n):
            e = _exp(x[j] - m[j])
            s[j] = s[j] + e
            y[j] = e


cdef void _softmax_inner(const floating* x, floating* y, index_t outer, index_t n,
                         index_t inner, bint log, floating* ws, index_t ws_per_thread,
                         int num_threads) noexcept nogil:
    """Softmax along the middle axis of (outer, n, inner): each task takes a
    block of inner positions and reduces across n with vector operations."""
    cdef index_t blocks = _ceil_div(inner, INNER_BLOCK)
    cdef index_t task, o, j0, j1, c, j, w
    cdef floating* m
    cdef floating* s
    cdef const floating* xc
    cdef floating* yc
    cdef floating e
    cdef floating one = 1
    with parallel(num_threads=num_threads):
        fp_enter()
        for task in prange(outer * blocks, schedule='static'):
            o = task // blocks
            j0 = (task % blocks) * INNER_BLOCK
            j1 = min(j0 + INNER_BLOCK, inner)
            w = j1 - j0
            m = ws + threadid() * ws_per_thread
            s = m + INNER_BLOCK
            xc = x + o * n * inner + j0
            yc = y + o * n * inner + j0
            for j in range(w):
                m[j] = xc[j]
                s[j] = 0
            for c in range(1, n):
                for j in range(w):
                    m[j] = max_nan(m[j], xc[c * inner + j])
            if log:
                for c in range(n):
                    _exp_diff_sum(xc + c * inner, m, s, NULL, w)
                for j in range(w):
                    m[j] = m[j] + _log(s[j])
                for c in range(n):
                    for j in range(w):
                        yc[c * inner + j] = xc[c * inner + j] - m[j]
            else:
                for c in range(n):
                    _exp_diff_sum(xc + c * inner, m, s, yc + c * inner, w)
                for j in range(w):
                    s[j] = one / s[j]
                for c in range(n):
                    for j in range(w):
                        yc[c * inner + j] = yc[c * inner + j] * s[j]


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
        _softmax_inner(x, y, outer, n, inner, log, ws, SOFTMAX_WS_PER_THREAD, num_threads)


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
    import numpy as np
    cdef void* xp = cnp.PyArray_DATA(x)
    cdef void* yp = cnp.PyArray_DATA(y)
    cdef index_t ws_per_thread = SOFTMAX_WS_PER_THREAD
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

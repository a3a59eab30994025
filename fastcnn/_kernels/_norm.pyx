"""Normalization kernels: batch, instance, group and layer norm, and LRN.

The input is viewed as (N, C, S); every normalization differs only in which
elements a statistics group gathers:

    batch     group c       = every (n, c) plane       affine per channel
    instance  group (n, c)  = plane (n, c)             affine per channel
    group     group (n, g)  = planes (n, c), c in g    affine per channel
    layer     group n       = plane (n, 0), C == 1     affine per element

Planes are cut into fixed chunks (by shape alone, so results do not depend
on the thread count) and one parallel region runs three phases:
  1. partial sums of (x - K) and (x - K)^2 per chunk, in double (vectorised
     through reduce.h), K the group's first value (a shift that keeps the
     variance exact when |mean| >> std);
  2. per group, the chunks' sums combined in a fixed order into mean and
     1 / sqrt(var + eps) (biased variance, as PyTorch normalizes);
  3. per chunk, y = x * scale + shift with the group's statistics and the
     channel's (or element's) affine, then the fused activation.
Eval-mode batch norm (and instance norm with running statistics) skips
straight to phase 3 with the given statistics. When groups are small (at most
GROUP_LOCAL_BYTES) and several, each task instead takes whole groups and runs
the three phases on one group at a time, reading it from memory once; the
chunk sums and their order are the same, so are the results.
"""
import numpy as np
cimport numpy as cnp
from fastcnn._kernels._omp cimport fp_enter, thread_doubles, thread_run
from cython.parallel cimport parallel, prange, threadid
from libc.math cimport pow, sqrt

from fastcnn._kernels._typedefs cimport floating, index_t
from fastcnn._kernels._activation cimport bias_activation, fcnn_exp, fcnn_log

cnp.import_array()

cdef enum:
    CHUNK = 8192
    LRN_BLOCK = 256         # positions per LRN step (their window sums stay in L1)
    # A group at most this large is handled whole by one task: its statistics,
    # then its normalization while the data is still in L2 (one read from memory).
    GROUP_LOCAL_BYTES = 1024 * 1024
    GROUP_LOCAL_MIN_GROUPS = 4


cdef inline index_t _ceil_div(index_t a, index_t b) noexcept nogil:
    return (a + b - 1) // b


cdef inline index_t _n_groups(const NormGeom* g) noexcept nogil:
    if g.kind == NORM_BATCH:
        return g.channels
    if g.kind == NORM_INSTANCE:
        return g.batch * g.channels
    if g.kind == NORM_GROUP:
        return g.batch * g.groups
    return g.batch


cdef inline index_t _group_of(const NormGeom* g, index_t n, index_t c) noexcept nogil:
    if g.kind == NORM_BATCH:
        return c
    if g.kind == NORM_INSTANCE:
        return n * g.channels + c
    if g.kind == NORM_GROUP:
        return n * g.groups + c // (g.channels // g.groups)
    return n


cdef inline const floating* _group_first(const NormGeom* g, const floating* x,
                                         index_t group) noexcept nogil:
    """The group's first element: the shift K of its sums."""
    if g.kind == NORM_BATCH:
        return x + group * g.spatial
    if g.kind == NORM_INSTANCE or g.kind == NORM_LAYER:
        return x + group * g.spatial
    return x + (group // g.groups * g.channels
                + group % g.groups * (g.channels // g.groups)) * g.spatial


cdef extern from "reduce.h" nogil:
    void fcnn_shifted_sums_f32(const float* x, long n, double k, double* s)
    void fcnn_shifted_sums_f64(const double* x, long n, double k, double* s)


cdef inline void _chunk_sums(const floating* x, index_t n, double k, double* out) noexcept nogil:
    """out[0] = sum(x - k), out[1] = sum((x - k)^2), in double."""
    if floating is float:
        fcnn_shifted_sums_f32(x, n, k, out)
    else:
        fcnn_shifted_sums_f64(x, n, k, out)


cdef inline void _group_planes(const NormGeom* g, index_t group, index_t* n0, index_t* n1,
                               index_t* c0, index_t* c1) noexcept nogil:
    """The (n, c) planes of a group: n in [n0, n1), c in [c0, c1)."""
    if g.kind == NORM_BATCH:
        n0[0], n1[0], c0[0], c1[0] = 0, g.batch, group, group + 1
    elif g.kind == NORM_INSTANCE:
        n0[0], n1[0] = group // g.channels, group // g.channels + 1
        c0[0], c1[0] = group % g.channels, group % g.channels + 1
    elif g.kind == NORM_GROUP:
        n0[0], n1[0] = group // g.groups, group // g.groups + 1
        c0[0] = group % g.groups * (g.channels // g.groups)
        c1[0] = c0[0] + g.channels // g.groups
    else:
        n0[0], n1[0], c0[0], c1[0] = group, group + 1, 0, 1


cdef inline void _group_stats(const NormGeom* g, const floating* x, const double* partial,
                              index_t group, double eps, double* mean, double* var,
                              double* rstd) noexcept nogil:
    """Combine the group's chunk sums, plane by plane in order."""
    cdef index_t n, c, k, planes, n0, n1, c0, c1
    cdef double s1 = 0, s2 = 0, cnt, m, v
    cdef double shift = _group_first(g, x, group)[0]
    _group_planes(g, group, &n0, &n1, &c0, &c1)
    for n in range(n0, n1):
        for c in range(c0, c1):
            for k in range(g.chunks_per_plane):
                s1 += partial[2 * ((n * g.channels + c) * g.chunks_per_plane + k)]
                s2 += partial[2 * ((n * g.channels + c) * g.chunks_per_plane + k) + 1]
    planes = (n1 - n0) * (c1 - c0)
    cnt = <double>(planes * g.spatial)
    m = s1 / cnt
    v = s2 / cnt - m * m
    v = v if v > 0 else 0
    mean[group] = shift + m
    var[group] = v
    rstd[group] = 1.0 / sqrt(v + eps)


cdef inline void _normalize_chunk(const floating* x, floating* y, index_t n, floating mean_hi,
                                  floating mean_lo, floating scale, floating shift) noexcept nogil:
    """y = ((x - mean_hi) - mean_lo) * scale + shift. The mean is split into two
    floats so x - mean_hi is exact for values near the mean: no cancellation
    when |mean| >> std, as x * scale + (shift - mean * scale) would suffer."""
    cdef index_t i
    for i in range(n):
        y[i] = ((x[i] - mean_hi) - mean_lo) * scale + shift


cdef inline void _normalize_chunk_elementwise(const floating* x, floating* y, index_t n,
                                              floating mean_hi, floating mean_lo, floating rstd,
                                              const floating* w, const floating* b) noexcept nogil:
    """LayerNorm's per-element affine: ((x - mean) * rstd) * w + b."""
    cdef index_t i
    if w != NULL and b != NULL:
        for i in range(n):
            y[i] = (((x[i] - mean_hi) - mean_lo) * rstd) * w[i] + b[i]
    elif w != NULL:
        for i in range(n):
            y[i] = (((x[i] - mean_hi) - mean_lo) * rstd) * w[i]
    elif b != NULL:
        for i in range(n):
            y[i] = (((x[i] - mean_hi) - mean_lo) * rstd) + b[i]
    else:
        for i in range(n):
            y[i] = ((x[i] - mean_hi) - mean_lo) * rstd


cdef inline void _normalize_plane_chunk(const NormGeom* g, const floating* x, floating* y,
                                        const floating* weight, const floating* bias,
                                        const double* given_mean, const double* given_var,
                                        double eps, const double* mean, const double* rstd,
                                        int activation, index_t chunk) noexcept nogil:
    """Phase 3 for one chunk: scale and shift with its group's statistics (or
    the given running statistics), then the activation."""
    cdef index_t plane = chunk // g.chunks_per_plane
    cdef index_t n = plane // g.channels, c = plane % g.channels
    cdef index_t s0 = (chunk % g.chunks_per_plane) * CHUNK
    cdef index_t cnt = min(<index_t>CHUNK, g.spatial - s0)
    cdef index_t grp
    cdef double sc, m
    cdef floating m_hi, m_lo
    if given_mean != NULL:
        m = given_mean[c]
        sc = 1.0 / sqrt(given_var[c] + eps)
    else:
        grp = _group_of(g, n, c)
        m = mean[grp]
        sc = rstd[grp]
    m_hi = <floating>m
    m_lo = <floating>(m - m_hi)
    if g.kind == NORM_LAYER:
        _normalize_chunk_elementwise(x + plane * g.spatial + s0, y + plane * g.spatial + s0, cnt,
                                     m_hi, m_lo, <floating>sc,
                                     weight + s0 if weight != NULL else NULL,
                                     bias + s0 if bias != NULL else NULL)
    else:
        if weight != NULL:
            sc = sc * weight[c]
        _normalize_chunk(x + plane * g.spatial + s0, y + plane * g.spatial + s0, cnt,
                         m_hi, m_lo, <floating>sc, bias[c] if bias != NULL else <floating>0)
    if activation != 0:
        bias_activation(y + plane * g.spatial + s0, cnt, 0, False, activation)


cdef inline void _partial_sums(const NormGeom* g, const floating* x, double* partial,
                               index_t chunk) noexcept nogil:
    """Phase 1 for one chunk: its sums relative to its group's first value."""
    cdef index_t plane = chunk // g.chunks_per_plane
    cdef index_t s0 = (chunk % g.chunks_per_plane) * CHUNK
    cdef const floating* first = _group_first(
        g, x, _group_of(g, plane // g.channels, plane % g.channels))
    _chunk_sums(x + plane * g.spatial + s0, min(<index_t>CHUNK, g.spatial - s0),
                <double>first[0], partial + 2 * chunk)


cdef inline void _whole_group(const NormGeom* g, const floating* x, floating* y,
                              const floating* weight, const floating* bias, double eps,
                              double* partial, double* mean, double* var, double* rstd,
                              int activation, index_t group) noexcept nogil:
    """All three phases for one group, its data staying in cache between them."""
    cdef index_t n, c, k, n0, n1, c0, c1
    _group_planes(g, group, &n0, &n1, &c0, &c1)
    for n in range(n0, n1):
        for c in range(c0, c1):
            for k in range(g.chunks_per_plane):
                _partial_sums(g, x, partial, (n * g.channels + c) * g.chunks_per_plane + k)
    _group_stats(g, x, partial, group, eps, mean, var, rstd)
    for n in range(n0, n1):
        for c in range(c0, c1):
            for k in range(g.chunks_per_plane):
                _normalize_plane_chunk(g, x, y, weight, bias, NULL, NULL, eps, mean, rstd,
                                       activation, (n * g.channels + c) * g.chunks_per_plane + k)


cdef void _norm(const NormGeom* g, const floating* x, floating* y, const floating* weight,
                const floating* bias, const double* given_mean, const double* given_var,
                double eps, double* partial, double* mean, double* var, double* rstd,
                int activation, int num_threads) noexcept nogil:
    cdef index_t n_chunks = g.batch * g.channels * g.chunks_per_plane
    cdef index_t n_groups = _n_groups(g)
    cdef index_t group_elems = g.batch * g.channels * g.spatial // max(n_groups, 1)
    cdef bint group_local = (given_mean == NULL and n_groups >= GROUP_LOCAL_MIN_GROUPS
                             and group_elems * <index_t>sizeof(floating) <= GROUP_LOCAL_BYTES)
    cdef index_t chunk, grp
    if n_chunks <= 0:
        return
    with parallel(num_threads=num_threads):
        fp_enter()
        if group_local:
            for grp in prange(n_groups, schedule='static'):
                _whole_group(g, x, y, weight, bias, eps, partial, mean, var, rstd, activation, grp)
        else:
            if given_mean == NULL:
                for chunk in prange(n_chunks, schedule='static'):
                    _partial_sums(g, x, partial, chunk)
                for grp in prange(n_groups, schedule='static'):
                    _group_stats(g, x, partial, grp, eps, mean, var, rstd)
            for chunk in prange(n_chunks, schedule='static'):
                _normalize_plane_chunk(g, x, y, weight, bias, given_mean, given_var, eps, mean,
                                       rstd, activation, chunk)


cdef NormGeom norm_geom(int kind, index_t batch, index_t channels, index_t spatial,
                        index_t groups) noexcept nogil:
    cdef NormGeom g
    g.batch, g.channels, g.spatial, g.groups, g.kind = batch, channels, spatial, groups, kind
    g.chunks_per_plane = _ceil_div(spatial, CHUNK) if spatial > 0 else 0
    return g


cdef index_t norm_groups(const NormGeom* g) noexcept nogil:
    return _n_groups(g)


cdef index_t norm_partial_size(const NormGeom* g) noexcept nogil:
    return max(2 * g.batch * g.channels * g.chunks_per_plane, 1)


cdef void norm_forward_f32(const NormGeom* g, const float* x, float* y, const float* weight,
                           const float* bias, const double* given_mean, const double* given_var,
                           double eps, double* partial, double* mean, double* var, double* rstd,
                           int activation, int num_threads) noexcept nogil:
    _norm(g, x, y, weight, bias, given_mean, given_var, eps, partial, mean, var, rstd,
          activation, num_threads)


cdef void norm_forward_f64(const NormGeom* g, const double* x, double* y, const double* weight,
                           const double* bias, const double* given_mean,
                           const double* given_var, double eps, double* partial, double* mean,
                           double* var, double* rstd, int activation,
                           int num_threads) noexcept nogil:
    _norm(g, x, y, weight, bias, given_mean, given_var, eps, partial, mean, var, rstd,
          activation, num_threads)


def normalize(int kind, cnp.ndarray x, cnp.ndarray y, index_t batch, index_t channels,
              index_t spatial, index_t groups, object weight, object bias, object given_mean,
              object given_var, double eps, int activation, int num_threads):
    """Normalize x (viewed as (batch, channels, spatial), C-contiguous) into y
    (may be x). Returns (mean, var) per group as float64 arrays (biased var),
    or None when given_mean / given_var (per channel, float64) were used."""
    cdef NormGeom g = norm_geom(kind, batch, channels, spatial, groups)
    cdef index_t n_groups = _n_groups(&g)
    cdef cnp.ndarray partial = np.empty(norm_partial_size(&g), np.float64)
    cdef cnp.ndarray mean = np.empty(max(n_groups, 1), np.float64)
    cdef cnp.ndarray var = np.empty(max(n_groups, 1), np.float64)
    cdef cnp.ndarray rstd = np.empty(max(n_groups, 1), np.float64)
    cdef void* xp = cnp.PyArray_DATA(x)
    cdef void* yp = cnp.PyArray_DATA(y)
    cdef void* wp = NULL if weight is None else cnp.PyArray_DATA(<cnp.ndarray>weight)
    cdef void* bp = NULL if bias is None else cnp.PyArray_DATA(<cnp.ndarray>bias)
    cdef double* gm = NULL if given_mean is None else <double*>cnp.PyArray_DATA(<cnp.ndarray>given_mean)
    cdef double* gv = NULL if given_var is None else <double*>cnp.PyArray_DATA(<cnp.ndarray>given_var)
    cdef double* pp = <double*>cnp.PyArray_DATA(partial)
    cdef double* mp = <double*>cnp.PyArray_DATA(mean)
    cdef double* vp = <double*>cnp.PyArray_DATA(var)
    cdef double* rp = <double*>cnp.PyArray_DATA(rstd)
    if x.dtype.num == cnp.NPY_FLOAT32:
        with nogil:
            _norm(&g, <float*>xp, <float*>yp, <float*>wp, <float*>bp, gm, gv, eps, pp, mp, vp,
                  rp, activation, num_threads)
    else:
        with nogil:
            _norm(&g, <double*>xp, <double*>yp, <double*>wp, <double*>bp, gm, gv, eps, pp, mp,
                  vp, rp, activation, num_threads)
    if given_mean is not None:
        return None
    return mean[:n_groups], var[:n_groups]


# ---------------------------------------------------------------- local response norm

cdef void _lrn(const floating* x, floating* y, index_t batch, index_t channels, index_t spatial,
               index_t size, double alpha, double beta, double k, double* ws,
               int num_threads) noexcept nogil:
    """y = x / (k + alpha / size * sum of x^2 over the channel window)^beta,
    the window [c - size // 2, c + (size - 1) // 2] clipped to the channels
    (PyTorch zero-pads the channel axis and divides by size regardless).
    Blocks of LRN_BLOCK positions: the window's squares summed channel by
    channel (in double, window order), then base^-beta as exp(-beta log base)
    with fastcnn's vectorisable exp and log (libm's pow is a call per value).
    ws: thread_doubles(LRN_BLOCK, num_threads) doubles."""
    cdef index_t blocks = _ceil_div(spatial, LRN_BLOCK) if spatial > 0 else 0
    cdef index_t task, n, s0, cnt, c, cc, i, lo, hi
    cdef const floating* xn
    cdef const floating* xc
    cdef floating* yn
    cdef double scale = alpha / size
    cdef double base
    cdef int nonpositive
    cdef double* acc
    with parallel(num_threads=num_threads):
        fp_enter()
        acc = thread_run(ws, LRN_BLOCK, threadid())     # the thread's window sums
        for task in prange(batch * blocks, schedule='static'):
            n = task // blocks
            s0 = (task % blocks) * LRN_BLOCK
            cnt = min(<index_t>LRN_BLOCK, spatial - s0)
            xn = x + n * channels * spatial + s0
            yn = y + n * channels * spatial + s0
            for c in range(channels):
                lo = max(0, c - size // 2)
                hi = min(channels, c + (size - 1) // 2 + 1)
                for i in range(cnt):
                    acc[i] = 0
                for cc in range(lo, hi):
                    xc = xn + cc * spatial
                    for i in range(cnt):
                        acc[i] = acc[i] + <double>xc[i] * xc[i]
                xc = xn + c * spatial
                nonpositive = 0
                for i in range(cnt):
                    base = k + scale * acc[i]
                    nonpositive = nonpositive | (base <= 0)
                    yn[c * spatial + i] = <floating>(xc[i] * fcnn_exp(-beta * fcnn_log(base)))
                if nonpositive:
                    # a negative k or alpha: log has no value there, pow has
                    # (pow(-inf, -beta) = 0, and integer powers of negatives)
                    for i in range(cnt):
                        base = k + scale * acc[i]
                        if base <= 0:
                            yn[c * spatial + i] = <floating>(xc[i] * pow(base, -beta))


def local_response_norm(cnp.ndarray x, cnp.ndarray y, index_t batch, index_t channels,
                        index_t spatial, index_t size, double alpha, double beta, double k,
                        int num_threads):
    cdef void* xp = cnp.PyArray_DATA(x)
    cdef void* yp = cnp.PyArray_DATA(y)
    cdef cnp.ndarray ws = np.empty(thread_doubles(LRN_BLOCK, num_threads), np.float64)
    cdef double* wp = <double*>cnp.PyArray_DATA(ws)
    if x.dtype.num == cnp.NPY_FLOAT32:
        with nogil:
            _lrn(<float*>xp, <float*>yp, batch, channels, spatial, size, alpha, beta, k, wp,
                 num_threads)
    else:
        with nogil:
            _lrn(<double*>xp, <double*>yp, batch, channels, spatial, size, alpha, beta, k, wp,
                 num_threads)

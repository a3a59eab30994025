"""Pooling kernels: max, average and power-average (LP) over sliding windows,
adaptive pooling, and global average pooling, on (planes, D, H, W) arrays.

Every op runs as 3-D pooling over the planes (N * C); 1-D and 2-D set the
leading sizes to 1. Tasks are planes (split into row blocks when there are
few planes), chosen from the shape alone, so results do not depend on the
thread count. The 2-D max and average paths first reduce the window's input
rows into one row (vectorised), then slide along it. The general path
(return_indices, LP, 3-D windows) works a row of outputs at a time: float32
max pooling keeps 16 outputs' maxima and indices in registers over their
whole windows (pool_idx.h), the rest sweeps each input row tap by tap over
the output row.

Max pooling propagates NaN: a NaN anywhere in a window is the result, and with
return_indices the index is PyTorch's (the last NaN, else the first maximum,
in window order).
"""
import numpy as np
cimport numpy as cnp
from cython.parallel cimport parallel, prange, threadid
from fastcnn._kernels._omp cimport fp_enter, thread_doubles, thread_run
from libc.math cimport pow, sqrt, INFINITY
from libc.stdint cimport int64_t

from fastcnn._kernels._typedefs cimport floating, index_t
from fastcnn._kernels._activation cimport max_nan

cnp.import_array()

cdef enum:
    MIN_TASKS = 8
    ROWS_2X2 = 64           # output rows per task of the all-planes 2x2 path


cdef inline index_t _ceil_div(index_t a, index_t b) noexcept nogil:
    return (a + b - 1) // b


cdef inline bint _is_greater(floating v, floating best) noexcept nogil:
    """PyTorch's max-pool update rule: larger, or NaN (so NaN wins and sticks)."""
    return (v > best) | (v != v)


# ---------------------------------------------------------------- generic windows

cdef inline void _taps(index_t o, index_t stride, index_t pad, index_t dilation, index_t kernel,
                       index_t size, index_t* lo, index_t* hi) noexcept nogil:
    """The taps k in [lo, hi) of output o's window that fall inside the input
    (input position o * stride - pad + k * dilation in [0, size)); lo is the
    first tap at or past 0 even when none is inside (PyTorch's index then)."""
    cdef index_t start = o * stride - pad
    if dilation == 1:           # no integer divisions (tens of cycles each, per output row)
        lo[0] = -start if start < 0 else 0
        hi[0] = min(kernel, size - start) if size > start else 0
    else:
        lo[0] = _ceil_div(-start, dilation) if start < 0 else 0
        hi[0] = min(kernel, _ceil_div(size - start, dilation)) if size > start else 0
    hi[0] = max(hi[0], lo[0])


cdef inline void _outputs_inside(index_t off, index_t stride, index_t out_w, index_t in_w,
                                 index_t* o0, index_t* o1) noexcept nogil:
    """The outputs [o0, o1) of a row whose tap at input ow * stride + off lies
    inside [0, in_w): counted from the edges, not divided, as only border
    outputs drop out."""
    o0[0] = 0
    while o0[0] < out_w and o0[0] * stride + off < 0:
        o0[0] += 1
    o1[0] = out_w
    while o1[0] > o0[0] and (o1[0] - 1) * stride + off >= in_w:
        o1[0] -= 1


cdef extern from "pool_idx.h" nogil:
    bint FCNN_POOL_IDX_VECTOR
    long fcnn_max_idx_interior_f32(const float* x, float* yr, int64_t* ir, long ow0, long ow1,
                                   long stride, long pad, long k_w, long dilation, long base0,
                                   long n_d, long depth_step, long n_h, long row_step)


cdef inline void _sweep_tap(int mode, double p, const floating* xs, floating* yr, int64_t* ir,
                            double* acc, index_t o0, index_t o1, index_t stride,
                            index_t first) noexcept nogil:
    """One tap over outputs o0..o1-1 of a row: its input for output ow is
    xs[ow * stride], at flat index first + ow * stride."""
    cdef index_t ow
    cdef floating v, b
    cdef bint gt
    if mode == POOL_MAX and ir != NULL:
        for ow in range(o0, o1):
            v = xs[ow * stride]
            b = yr[ow]
            gt = _is_greater(v, b)
            yr[ow] = v if gt else b
            ir[ow] = first + ow * stride if gt else ir[ow]
    elif mode == POOL_MAX:
        for ow in range(o0, o1):
            yr[ow] = max_nan(yr[ow], xs[ow * stride])
    elif mode == POOL_AVG or p == 1:
        for ow in range(o0, o1):
            acc[ow] = acc[ow] + xs[ow * stride]
    elif p == 2:
        for ow in range(o0, o1):
            acc[ow] = acc[ow] + <double>xs[ow * stride] * xs[ow * stride]
    else:
        for ow in range(o0, o1):
            acc[ow] = acc[ow] + pow(xs[ow * stride], p)


cdef inline void _max_window(const float* x, float* yr, int64_t* ir, index_t ow, index_t stride,
                             index_t pad, index_t k_w, index_t dilation, index_t in_w,
                             index_t base0, index_t n_d, index_t depth_step, index_t n_h,
                             index_t row_step) noexcept nogil:
    """Output ow of a row, window by window (its taps as fcnn_max_idx_interior_f32
    lays them out, the horizontal ones clipped to the row)."""
    cdef index_t kw0, kw1, d, h, kw, i, row
    cdef index_t best_i
    cdef float v, best = -INFINITY
    cdef bint gt
    _taps(ow, stride, pad, dilation, k_w, in_w, &kw0, &kw1)
    best_i = base0 + ow * stride - pad + kw0 * dilation
    for d in range(n_d):
        for h in range(n_h):
            row = base0 + d * depth_step + h * row_step + ow * stride - pad
            for kw in range(kw0, kw1):
                i = row + kw * dilation
                v = x[i]
                gt = _is_greater(v, best)       # selects, not branches: the data decides
                best = v if gt else best
                best_i = i if gt else best_i
    yr[ow] = best
    if ir != NULL:
        ir[ow] = best_i


cdef void _window_rows(const PoolGeom* g, const floating* x, floating* y, int64_t* idx,
                       double* acc, index_t row0, index_t row1) noexcept nogil:
    """Output rows row0..row1-1 (over out_d * out_h) of one plane. Max pooling
    in float32 with AVX-512 and a horizontal stride of 1 or 2: the interior
    outputs (every horizontal tap inside the row) 16 at a time in registers,
    the border ones window by window. Otherwise each input row a window row
    reads is swept tap by tap (kw) over the outputs whose tap lies inside it,
    updating the whole output row (or acc, the sums of average and LP
    windows) at once: loops the compiler vectorises. Either way every window
    sees its taps in order (kd, kh, kw)."""
    # the geometry in locals: stores through idx could otherwise alias its fields
    cdef index_t in_d = g.in_d, in_h = g.in_h, in_w = g.in_w, out_h = g.out_h, out_w = g.out_w
    cdef index_t k_d = g.kernel_d, k_h = g.kernel_h, k_w = g.kernel_w
    cdef index_t s_d = g.stride_d, s_h = g.stride_h, s_w = g.stride_w
    cdef index_t p_d = g.pad_d, p_h = g.pad_h, p_w = g.pad_w
    cdef index_t d_d = g.dilation_d, d_h = g.dilation_h, d_w = g.dilation_w
    cdef int mode = g.mode
    cdef double p = g.norm_type
    cdef index_t in_hw = in_h * in_w
    cdef index_t r, od, oh, ow, kd, kh, kw, kd0, kd1, kh0, kh1, kw0, kw1, o0, o1, off, base, count
    cdef index_t skip0, skip1, kw_lo, kw_hi
    cdef floating* yr
    cdef int64_t* ir
    cdef const floating* xr
    # the horizontal taps that land inside the row for some output (a window
    # may be far wider than the input: only these are swept)
    kw_lo = 0 if p_w <= (out_w - 1) * s_w else _ceil_div(p_w - (out_w - 1) * s_w, d_w)
    kw_hi = max(kw_lo, min(k_w, (in_w - 1 + p_w) // d_w + 1))
    od = row0 // out_h
    oh = row0 % out_h - 1
    for r in range(row0, row1):
        # the next row's (od, oh), counted rather than divided
        oh += 1
        if oh == out_h:
            oh = 0
            od += 1
        _taps(od, s_d, p_d, d_d, k_d, in_d, &kd0, &kd1)
        _taps(oh, s_h, p_h, d_h, k_h, in_h, &kh0, &kh1)
        yr = y + r * out_w
        ir = idx + r * out_w if idx != NULL else NULL
        if floating is float and FCNN_POOL_IDX_VECTOR and mode == POOL_MAX and (s_w == 1 or s_w == 2):
            # 16 interior outputs at a time in registers (every horizontal tap
            # inside the row), the few at the borders window by window
            base = (od * s_d - p_d + kd0 * d_d) * in_hw + (oh * s_h - p_h + kh0 * d_h) * in_w
            _outputs_inside(-p_w, s_w, out_w, in_w, &skip0, &o1)                  # first tap
            _outputs_inside((k_w - 1) * d_w - p_w, s_w, out_w, in_w, &o0, &skip1)  # last tap
            skip1 = fcnn_max_idx_interior_f32(x, yr, ir, skip0, max(skip1, skip0), s_w, p_w, k_w,
                                              d_w, base, kd1 - kd0, d_d * in_hw, kh1 - kh0,
                                              d_h * in_w)
            for ow in range(skip0):
                _max_window(x, yr, ir, ow, s_w, p_w, k_w, d_w, in_w, base, kd1 - kd0,
                            d_d * in_hw, kh1 - kh0, d_h * in_w)
            for ow in range(skip1, out_w):
                _max_window(x, yr, ir, ow, s_w, p_w, k_w, d_w, in_w, base, kd1 - kd0,
                            d_d * in_hw, kh1 - kh0, d_h * in_w)
            continue
        if mode == POOL_MAX:
            # PyTorch's start: -inf at the first tap (a window of -inf, or
            # entirely in padding, reports it)
            for ow in range(out_w):
                yr[ow] = -INFINITY
            if ir != NULL:
                base = (od * s_d - p_d + kd0 * d_d) * in_hw + (oh * s_h - p_h + kh0 * d_h) * in_w
                for ow in range(out_w):
                    # the first tap at or past the left edge (a division only there)
                    off = ow * s_w - p_w
                    ir[ow] = base + (off if off >= 0 else off + _ceil_div(-off, d_w) * d_w)
        else:
            for ow in range(out_w):
                acc[ow] = 0
        for kd in range(kd0, kd1):
            for kh in range(kh0, kh1):
                base = (od * s_d - p_d + kd * d_d) * in_hw + (oh * s_h - p_h + kh * d_h) * in_w
                xr = x + base
                for kw in range(kw_lo, kw_hi):
                    off = kw * d_w - p_w
                    _outputs_inside(off, s_w, out_w, in_w, &o0, &o1)
                    _sweep_tap(mode, p, xr + off, yr, ir, acc, o0, o1, s_w, base + off)
        if mode == POOL_MAX:
            continue
        for ow in range(out_w):
            # average and LP windows (no dilation): the divisor counts padding
            # as PyTorch does (up to the padded end, or only the input)
            if g.divisor_override:
                count = g.divisor_override
            elif g.count_include_pad:
                count = ((min(od * s_d - p_d + k_d, in_d + p_d) - (od * s_d - p_d))
                         * (min(oh * s_h - p_h + k_h, in_h + p_h) - (oh * s_h - p_h))
                         * (min(ow * s_w - p_w + k_w, in_w + p_w) - (ow * s_w - p_w)))
            else:
                _taps(ow, s_w, p_w, 1, k_w, in_w, &kw0, &kw1)
                count = (kd1 - kd0) * (kh1 - kh0) * (kw1 - kw0)
            if mode == POOL_AVG:
                yr[ow] = <floating>(acc[ow] / count)
            else:
                # PyTorch: (avg of x^p) * kernel volume, then ^(1/p)
                acc[ow] = acc[ow] / count * (<double>k_d * k_h * k_w)
                yr[ow] = <floating>(sqrt(acc[ow]) if p == 2 else pow(acc[ow], 1.0 / p))


# ---------------------------------------------------------------- 2-D fast paths

cdef inline floating _hmax_edge(const floating* row, index_t j, index_t in_w, index_t kw,
                               index_t pw) noexcept nogil:
    cdef floating m = -INFINITY
    cdef index_t t, iw
    for t in range(kw):
        iw = 2 * j - pw + t
        if 0 <= iw < in_w:
            m = max_nan(m, row[iw])
    return m


cdef inline void _hmax_row(const floating* row, floating* h, index_t in_w, index_t out_w,
                           index_t kw, index_t pw) noexcept nogil:
    """h[j] = max of row[2j - pw .. 2j - pw + kw - 1] (stride 2, kw of 2 or 3),
    taps outside the row skipped. Interior loops read one strided row and write
    one contiguous row, the shape the compiler vectorises."""
    cdef index_t j
    cdef index_t lo = min(out_w, (pw + 1) // 2)
    cdef index_t hi = max(lo, min(out_w, (in_w - kw + pw) // 2 + 1)) if in_w - kw + pw >= 0 else lo
    cdef const floating* r = row - pw
    if kw == 2:
        for j in range(lo, hi):
            h[j] = max_nan(r[2 * j], r[2 * j + 1])
    else:
        for j in range(lo, hi):
            h[j] = max_nan(max_nan(r[2 * j], r[2 * j + 1]), r[2 * j + 2])
    for j in range(lo):
        h[j] = _hmax_edge(row, j, in_w, kw, pw)
    for j in range(hi, out_w):
        h[j] = _hmax_edge(row, j, in_w, kw, pw)


cdef void _max_rows_hfirst(const PoolGeom* g, const floating* x, floating* y, floating* hbuf,
                           index_t oh0, index_t oh1) noexcept nogil:
    """Max pooling with windows of 2 or 3 (stride 2 along rows, no dilation).

    First the horizontal maxima of every input row the output rows need, into
    hbuf. When out_w == in_w / 2, tap t of output column j of row i is flat
    index 2 (i * out_w + j) - pad_w + t, so one long loop covers all rows at
    once and only the edge columns (whose taps leave the row) are redone one
    by one. Then each output row is the element-wise max of up to three rows
    of hbuf."""
    cdef index_t in_w = g.in_w, out_w = g.out_w, pw = g.pad_w, kw = g.kernel_w
    cdef index_t ih0 = max(0, oh0 * g.stride_h - g.pad_h)
    cdef index_t ih1 = min(g.in_h, (oh1 - 1) * g.stride_h - g.pad_h + g.kernel_h)
    cdef index_t lo = min(out_w, (pw + 1) // 2)
    cdef index_t hi = max(lo, min(out_w, (in_w - kw + pw) // 2 + 1)) if in_w - kw + pw >= 0 else lo
    cdef index_t ih, k, k0, k1, j, oh, kh, n
    cdef const floating* r
    cdef floating* h
    cdef floating* rows[3]
    cdef floating* yrow
    cdef floating* a
    cdef floating* b
    cdef floating* c
    if ih1 <= ih0:
        for oh in range(oh0, oh1):
            for j in range(out_w):
                y[oh * out_w + j] = -INFINITY
        return
    if 2 * out_w == in_w:
        # flat pass over rows ih0 .. ih1-1; k indexes hbuf, the input starts at row ih0
        r = x + ih0 * in_w - pw
        k0 = 1 if pw > 0 else 0         # k = 0 would read before the first row
        k1 = (ih1 - ih0) * out_w
        if kw == 2:
            for k in range(k0, k1):
                hbuf[k] = max_nan(r[2 * k], r[2 * k + 1])
        else:
            for k in range(k0, k1):
                hbuf[k] = max_nan(max_nan(r[2 * k], r[2 * k + 1]), r[2 * k + 2])
        if kw == 3 and pw == 1 and lo == 1 and hi == out_w:
            # the only edge is column 0, whose window is the row's first two values
            for ih in range(ih0, ih1):
                hbuf[(ih - ih0) * out_w] = max_nan(x[ih * in_w], x[ih * in_w + 1])
        else:
            for ih in range(ih0, ih1):
                h = hbuf + (ih - ih0) * out_w
                for j in range(lo):
                    h[j] = _hmax_edge(x + ih * in_w, j, in_w, kw, pw)
                for j in range(hi, out_w):
                    h[j] = _hmax_edge(x + ih * in_w, j, in_w, kw, pw)
    else:
        for ih in range(ih0, ih1):
            _hmax_row(x + ih * in_w, hbuf + (ih - ih0) * out_w, in_w, out_w, kw, pw)
    for oh in range(oh0, oh1):
        n = 0
        for kh in range(g.kernel_h):
            ih = oh * g.stride_h - g.pad_h + kh
            if 0 <= ih < g.in_h and n < 3:
                rows[n] = hbuf + (ih - ih0) * out_w
                n += 1
        yrow = y + oh * out_w
        a = rows[0]
        if n == 1:
            for j in range(out_w):
                yrow[j] = a[j]
        elif n == 2:
            b = rows[1]
            for j in range(out_w):
                yrow[j] = max_nan(a[j], b[j])
        else:
            b = rows[1]
            c = rows[2]
            for j in range(out_w):
                yrow[j] = max_nan(max_nan(a[j], b[j]), c[j])


cdef inline bint _hfirst_applies(const PoolGeom* g) noexcept nogil:
    return (2 <= g.kernel_w <= 3 and 1 <= g.kernel_h <= 3 and g.stride_w == 2
            and g.dilation_h == 1 and g.dilation_w == 1)


cdef void _avg_2x2s2(const PoolGeom* g, const floating* x, floating* y,
                     index_t oh0, index_t oh1) noexcept nogil:
    """Average pooling 2x2, stride 2, no padding: one pass per output row,
    summed in PyTorch's window order."""
    cdef index_t in_w = g.in_w, out_w = g.out_w
    cdef index_t oh, ow
    cdef const floating* r0
    cdef const floating* r1
    cdef floating* yrow
    cdef floating inv = <floating>1 / <floating>(g.divisor_override if g.divisor_override else 4)
    for oh in range(oh0, oh1):
        r0 = x + 2 * oh * in_w
        r1 = r0 + in_w
        yrow = y + oh * out_w
        for ow in range(out_w):
            yrow[ow] = (((r0[2 * ow] + r0[2 * ow + 1]) + r1[2 * ow]) + r1[2 * ow + 1]) * inv


cdef inline bint _is_2x2_tiling(const PoolGeom* g) noexcept nogil:
    """2x2 windows, stride 2, that tile each plane exactly: a plane's output
    row R reads input rows 2R and 2R + 1, and so do the rows of consecutive
    planes, so all planes pool as one run of row pairs."""
    return (g.in_d == 1 and g.kernel_d == 1 and _is_2x2s2(g)
            and g.in_h == 2 * g.out_h and g.in_w == 2 * g.out_w)


cdef void _pool_2x2_rows(const PoolGeom* g, const floating* x, floating* y, floating* h,
                         index_t r0, index_t r1) noexcept nogil:
    """Output rows r0 .. r1-1 counted over all planes. Max: the pair maxima
    of input rows 2 r0 .. 2 r1 - 1 in one flat loop, then each output row is
    the maximum of two of those rows. Average: the upper rows' pair sums, then
    each output row, keeping PyTorch's order ((a + b) + c) + d.

    Short rows run whole vectors (width w16, a multiple of 16): the extra
    lanes of a row land in the rows after it, which are written later; only
    rows whose extra lanes would leave the block (another task's rows) run
    exact."""
    cdef index_t out_w = g.out_w, in_w = g.in_w
    cdef index_t w16 = ((out_w + 15) // 16) * 16 if out_w < 64 else out_w
    cdef index_t k, r, j, width
    cdef const floating* src = x + 2 * r0 * in_w
    cdef const floating* up
    cdef const floating* low
    cdef floating* top
    cdef floating* bottom
    cdef floating* yr
    cdef floating inv = <floating>1 / <floating>(g.divisor_override if g.divisor_override else 4)
    if g.mode == POOL_MAX:
        for k in range(2 * (r1 - r0) * out_w):
            h[k] = max_nan(src[2 * k], src[2 * k + 1])
        for r in range(r1 - r0):
            top = h + 2 * r * out_w
            bottom = top + out_w
            yr = y + (r0 + r) * out_w
            width = w16 if r * out_w + w16 <= (r1 - r0) * out_w else out_w
            for j in range(width):
                yr[j] = max_nan(top[j], bottom[j])
        return
    for r in range(r1 - r0):
        top = h + r * out_w
        up = src + 2 * r * in_w
        width = w16 if r * out_w + w16 <= (r1 - r0) * out_w else out_w
        for j in range(width):
            top[j] = up[2 * j] + up[2 * j + 1]
    for r in range(r1 - r0):
        top = h + r * out_w
        low = src + (2 * r + 1) * in_w
        yr = y + (r0 + r) * out_w
        width = w16 if r * out_w + w16 <= (r1 - r0) * out_w else out_w
        for j in range(width):
            yr[j] = ((top[j] + low[2 * j]) + low[2 * j + 1]) * inv


cdef inline bint _is_2x2s2(const PoolGeom* g) noexcept nogil:
    return (g.kernel_h == 2 and g.kernel_w == 2 and g.stride_h == 2 and g.stride_w == 2
            and g.pad_h == 0 and g.pad_w == 0 and g.dilation_h == 1 and g.dilation_w == 1
            and g.out_h * 2 <= g.in_h and g.out_w * 2 <= g.in_w)


cdef inline floating _max_edge(const floating* row, index_t iw0, index_t kwn, index_t dw,
                              index_t in_w) noexcept nogil:
    """Max of the taps iw0 + kw * dw inside [0, in_w); -inf if none."""
    cdef floating m = -INFINITY
    cdef index_t kw, iw
    cdef bint first = True
    for kw in range(kwn):
        iw = iw0 + kw * dw
        if 0 <= iw < in_w:
            m = row[iw] if first else max_nan(m, row[iw])
            first = False
    return m


cdef void _max_rows_2d(const PoolGeom* g, const floating* x, floating* y, floating* row,
                       index_t oh0, index_t oh1) noexcept nogil:
    """2-D max pooling of output rows oh0..oh1-1: the window's valid input rows
    are reduced into `row`, then the output slides along it."""
    cdef index_t in_w = g.in_w, out_w = g.out_w, s = g.stride_w, dw = g.dilation_w
    cdef index_t pw = g.pad_w, kwn = g.kernel_w
    cdef index_t oh, kh, ih, iw, ow, kw, lo, hi, first
    cdef const floating* src
    cdef floating* yrow
    # interior outputs: every tap inside [0, in_w)
    lo = min(out_w, _ceil_div(pw, s))
    hi = max(lo, min(out_w, (in_w - 1 - (kwn - 1) * dw + pw) // s + 1)) \
        if in_w - 1 - (kwn - 1) * dw + pw >= 0 else lo
    for oh in range(oh0, oh1):
        first = 1
        for kh in range(g.kernel_h):
            ih = oh * g.stride_h - g.pad_h + kh * g.dilation_h
            if ih < 0 or ih >= g.in_h:
                continue
            src = x + ih * in_w
            if first:
                for iw in range(in_w):
                    row[iw] = src[iw]
                first = 0
            else:
                for iw in range(in_w):
                    row[iw] = max_nan(row[iw], src[iw])
        if first:
            for iw in range(in_w):      # no input row in the window: padding only
                row[iw] = -INFINITY
        yrow = y + oh * out_w
        if kwn == 2 and s == 2 and dw == 1:
            for ow in range(lo, hi):
                yrow[ow] = max_nan(row[2 * ow - pw], row[2 * ow - pw + 1])
        elif kwn == 3 and s == 2 and dw == 1:
            for ow in range(lo, hi):
                yrow[ow] = max_nan(max_nan(row[2 * ow - pw], row[2 * ow - pw + 1]),
                                    row[2 * ow - pw + 2])
        else:
            # tap by tap over the whole row (loops the compiler vectorises),
            # each window still taking its taps in order
            for ow in range(lo, hi):
                yrow[ow] = row[ow * s - pw]
            for kw in range(1, kwn):
                _sweep_tap(POOL_MAX, 0, row + kw * dw - pw, yrow, NULL, NULL, lo, hi, s, 0)
        for ow in range(lo):
            yrow[ow] = _max_edge(row, ow * s - pw, kwn, dw, in_w)
        for ow in range(hi, out_w):
            yrow[ow] = _max_edge(row, ow * s - pw, kwn, dw, in_w)


cdef inline floating _avg_edge(const PoolGeom* g, const floating* row, index_t ow,
                              index_t hcount) noexcept nogil:
    """One edge column of average pooling: the window clipped to the row,
    divided by PyTorch's count."""
    cdef index_t ws = ow * g.stride_w - g.pad_w
    cdef index_t we = min(ws + g.kernel_w, g.in_w + g.pad_w)
    cdef index_t wcount = we - ws
    cdef index_t count, iw
    cdef floating acc = 0
    ws = max(ws, 0)
    we = min(we, g.in_w)
    if not g.count_include_pad:
        wcount = we - ws
    count = g.divisor_override if g.divisor_override else hcount * wcount
    for iw in range(ws, we):
        acc = acc + row[iw]
    return acc / count


cdef void _avg_rows_2d(const PoolGeom* g, const floating* x, floating* y, floating* row,
                       index_t oh0, index_t oh1) noexcept nogil:
    """2-D average pooling of output rows oh0..oh1-1: valid input rows summed
    into `row`, then window sums along it, divided per PyTorch's rules."""
    cdef index_t in_w = g.in_w, out_w = g.out_w, s = g.stride_w, pw = g.pad_w
    cdef index_t kwn = g.kernel_w
    cdef index_t oh, ih, iw, ow, kw, hs, he, hcount, lo, hi
    cdef const floating* src
    cdef floating inv
    cdef floating* yrow
    lo = min(out_w, _ceil_div(pw, s))
    hi = max(lo, min(out_w, (in_w - kwn + pw) // s + 1)) if in_w - kwn + pw >= 0 else lo
    for oh in range(oh0, oh1):
        hs = oh * g.stride_h - g.pad_h
        he = min(hs + g.kernel_h, g.in_h + g.pad_h)
        hcount = he - hs
        hs = max(hs, 0)
        he = min(he, g.in_h)
        for iw in range(in_w):
            row[iw] = 0
        for ih in range(hs, he):
            src = x + ih * in_w
            for iw in range(in_w):
                row[iw] = row[iw] + src[iw]
        if not g.count_include_pad:
            hcount = he - hs
        yrow = y + oh * out_w
        # interior columns: whole window inside the row, kernel_w elements
        inv = <floating>1 / <floating>(g.divisor_override if g.divisor_override else hcount * kwn)
        if kwn == 2 and s == 2:
            for ow in range(lo, hi):
                yrow[ow] = (row[2 * ow - pw] + row[2 * ow - pw + 1]) * inv
        elif kwn == 3 and s == 2:
            for ow in range(lo, hi):
                yrow[ow] = (row[2 * ow - pw] + row[2 * ow - pw + 1] + row[2 * ow - pw + 2]) * inv
        else:
            # tap by tap over the whole row (vectorised), the sums in tap order
            for ow in range(lo, hi):
                yrow[ow] = row[ow * s - pw]
            for kw in range(1, kwn):
                src = row + kw - pw
                for ow in range(lo, hi):
                    yrow[ow] = yrow[ow] + src[ow * s]
            for ow in range(lo, hi):
                yrow[ow] = yrow[ow] * inv
        for ow in range(lo):
            yrow[ow] = _avg_edge(g, row, ow, hcount)
        for ow in range(hi, out_w):
            yrow[ow] = _avg_edge(g, row, ow, hcount)


# ---------------------------------------------------------------- driver

cdef void _pool_forward(const PoolGeom* g, const floating* x, floating* y, int64_t* idx,
                        floating* workspace, index_t ws_per_thread, int num_threads) noexcept nogil:
    cdef index_t rows = g.out_d * g.out_h
    cdef index_t in_plane = g.in_d * g.in_h * g.in_w
    cdef index_t out_plane = rows * g.out_w
    cdef index_t blocks, rows_per_block, task, plane, r0, r1
    cdef bint fast2d = (g.in_d == 1 and g.kernel_d == 1 and idx == NULL
                        and g.mode != POOL_LP and g.dilation_h >= 1)
    cdef floating* row
    if g.planes <= 0 or out_plane <= 0 or in_plane <= 0:
        return
    if idx == NULL and g.mode != POOL_LP and _is_2x2_tiling(g):
        rows = g.planes * g.out_h
        blocks = _ceil_div(rows, ROWS_2X2)
        with parallel(num_threads=num_threads):
            fp_enter()
            row = workspace + threadid() * ws_per_thread
            for task in prange(blocks, schedule='static'):
                _pool_2x2_rows(g, x, y, row, task * ROWS_2X2, min(rows, (task + 1) * ROWS_2X2))
        return
    blocks = _ceil_div(MIN_TASKS, g.planes) if g.planes < MIN_TASKS else 1
    blocks = min(blocks, rows)
    rows_per_block = _ceil_div(rows, blocks)
    blocks = _ceil_div(rows, rows_per_block)
    with parallel(num_threads=num_threads):
        fp_enter()
        row = workspace + threadid() * ws_per_thread
        for task in prange(g.planes * blocks, schedule='static'):
            plane = task // blocks
            r0 = (task % blocks) * rows_per_block
            r1 = min(r0 + rows_per_block, rows)
            if fast2d and g.mode == POOL_MAX and _hfirst_applies(g):
                _max_rows_hfirst(g, x + plane * in_plane, y + plane * out_plane, row, r0, r1)
            elif fast2d and g.mode == POOL_MAX:
                _max_rows_2d(g, x + plane * in_plane, y + plane * out_plane, row, r0, r1)
            elif fast2d and g.mode == POOL_AVG and _is_2x2s2(g):
                _avg_2x2s2(g, x + plane * in_plane, y + plane * out_plane, r0, r1)
            elif fast2d and g.mode == POOL_AVG:
                _avg_rows_2d(g, x + plane * in_plane, y + plane * out_plane, row, r0, r1)
            else:
                _window_rows(g, x + plane * in_plane, y + plane * out_plane,
                             idx + plane * out_plane if idx != NULL else NULL,
                             <double*>(row + <size_t>row % 8 // sizeof(floating)), r0, r1)


# ---------------------------------------------------------------- adaptive

cdef inline index_t _start(index_t i, index_t out, index_t size) noexcept nogil:
    return (i * size) // out


cdef inline index_t _end(index_t i, index_t out, index_t size) noexcept nogil:
    return ((i + 1) * size + out - 1) // out


cdef void _adaptive_plane(const floating* x, floating* y, int64_t* idx, bint is_max,
                          index_t in_d, index_t in_h, index_t in_w,
                          index_t out_d, index_t out_h, index_t out_w,
                          double* colbuf) noexcept nogil:
    """One plane. Per output row, the window rows reduced column by column
    (vectorised) into colbuf: sums in double for average, maxima for max;
    then each output reduces its columns. Max with indices goes window by
    window instead, taps in order (PyTorch's index: the first maximum, a NaN
    wins), with selects rather than branches; so does max without a
    colbuf."""
    cdef index_t od, oh, ow, id_, ih, iw, ds, de, hs, he, ws, we, best_i, o, i
    cdef floating v, best
    cdef double acc
    cdef bint gt
    cdef const floating* row
    cdef floating* colmax = <floating*>colbuf
    cdef bint by_columns = not is_max or (idx == NULL and colbuf != NULL)
    for od in range(out_d):
        ds = _start(od, out_d, in_d)
        de = _end(od, out_d, in_d)
        for oh in range(out_h):
            hs = _start(oh, out_h, in_h)
            he = _end(oh, out_h, in_h)
            if is_max and by_columns:
                for iw in range(in_w):
                    colmax[iw] = -INFINITY
                for id_ in range(ds, de):
                    for ih in range(hs, he):
                        row = x + (id_ * in_h + ih) * in_w
                        for iw in range(in_w):
                            colmax[iw] = max_nan(colmax[iw], row[iw])
            elif not is_max:
                for iw in range(in_w):
                    colbuf[iw] = 0
                for id_ in range(ds, de):
                    # four rows at a time into colbuf (a quarter of the
                    # read-modify-writes), then the rest one by one
                    row = x + (id_ * in_h + hs) * in_w
                    ih = hs
                    while ih + 4 <= he:
                        for iw in range(in_w):
                            colbuf[iw] = colbuf[iw] + ((<double>row[iw] + row[in_w + iw])
                                                       + (<double>row[2 * in_w + iw]
                                                          + row[3 * in_w + iw]))
                        row = row + 4 * in_w
                        ih = ih + 4
                    while ih < he:
                        for iw in range(in_w):
                            colbuf[iw] = colbuf[iw] + row[iw]
                        row = row + in_w
                        ih = ih + 1
            for ow in range(out_w):
                ws = _start(ow, out_w, in_w)
                we = _end(ow, out_w, in_w)
                o = (od * out_h + oh) * out_w + ow
                if is_max and by_columns:
                    best = colmax[ws]
                    for iw in range(ws + 1, we):
                        best = max_nan(best, colmax[iw])
                    y[o] = best
                elif is_max:
                    best_i = (ds * in_h + hs) * in_w + ws
                    best = x[best_i]
                    for id_ in range(ds, de):
                        for ih in range(hs, he):
                            for iw in range(ws, we):
                                i = (id_ * in_h + ih) * in_w + iw
                                v = x[i]
                                gt = _is_greater(v, best)
                                best = v if gt else best
                                best_i = i if gt else best_i
                    y[o] = best
                    if idx != NULL:
                        idx[o] = best_i
                else:
                    acc = 0
                    for iw in range(ws, we):
                        acc = acc + colbuf[iw]
                    y[o] = <floating>(acc / ((de - ds) * (he - hs) * (we - ws)))


cdef extern from "reduce.h" nogil:
    double fcnn_sum_f32(const float* x, long n)
    double fcnn_sum_f64(const double* x, long n)


cdef inline floating _plane_mean(const floating* x, index_t n) noexcept nogil:
    """Mean of n values, summed in double in vector lanes (reduce.h): the
    same order for any thread count. A 7x7 plane is a few vector steps:
    global average pooling of 1280 planes of 7x7 on 1 thread took 12 / 8.7
    / 13 us (avx512 / avx2 / baseline) against 27 / 15 / 18 with 16 scalar
    partial sums per plane; 64 planes of 56x56 17 / 20 / 39 against 16 /
    21 / 30 (one accumulator chain, which long planes on 16-byte vectors
    feel)."""
    if floating is float:
        return <floating>(fcnn_sum_f32(x, n) / n)
    else:
        return <floating>(fcnn_sum_f64(x, n) / n)


# ---------------------------------------------------------------- C entry points

cdef index_t pool_workspace_per_thread(const PoolGeom* g) noexcept nogil:
    """One input row, or the horizontal maxima of the input rows a task's
    output rows read, or the 2x2 path's row pairs, or a row of double sums
    (at most 2 * out_w + 1 elements); whole cache lines."""
    cdef index_t rows = g.out_d * g.out_h
    cdef index_t blocks = min(rows, (MIN_TASKS + g.planes - 1) // g.planes) if 0 < g.planes < MIN_TASKS else 1
    cdef index_t rows_per_task = (rows + blocks - 1) // blocks if blocks > 0 else rows
    cdef index_t in_rows = min(g.in_h, rows_per_task * g.stride_h + g.kernel_h)
    return (max(max(g.in_w, in_rows * g.out_w), 2 * ROWS_2X2 * g.out_w) + 15) // 16 * 16 + 32


cdef void pool_forward_f32(const PoolGeom* g, const float* x, float* y, int64_t* idx,
                           float* workspace, index_t ws_per_thread, int num_threads) noexcept nogil:
    _pool_forward(g, x, y, idx, workspace, ws_per_thread, num_threads)


cdef void pool_forward_f64(const PoolGeom* g, const double* x, double* y, int64_t* idx,
                           double* workspace, index_t ws_per_thread,
                           int num_threads) noexcept nogil:
    _pool_forward(g, x, y, idx, workspace, ws_per_thread, num_threads)


cdef index_t adaptive_workspace(index_t in_w, int num_threads) noexcept nogil:
    return thread_doubles(in_w, num_threads)


cdef void _adaptive_forward(index_t planes, index_t in_d, index_t in_h, index_t in_w,
                            index_t out_d, index_t out_h, index_t out_w, bint is_max,
                            const floating* x, floating* y, int64_t* idx,
                            double* workspace, int num_threads) noexcept nogil:
    cdef index_t in_plane = in_d * in_h * in_w, out_plane = out_d * out_h * out_w
    cdef bint global_avg = not is_max and out_plane == 1
    cdef index_t p
    cdef double* colsum
    if global_avg:
        with parallel(num_threads=num_threads):
            fp_enter()
            for p in prange(planes, schedule='static'):
                y[p] = _plane_mean(x + p * in_plane, in_plane)
        return
    with parallel(num_threads=num_threads):
        fp_enter()
        colsum = NULL
        if workspace != NULL:
            colsum = thread_run(workspace, in_w, threadid())
        for p in prange(planes, schedule='static'):
            _adaptive_plane(x + p * in_plane, y + p * out_plane,
                            idx + p * out_plane if idx != NULL else NULL, is_max,
                            in_d, in_h, in_w, out_d, out_h, out_w, colsum)


cdef void adaptive_forward_f32(index_t planes, index_t in_d, index_t in_h, index_t in_w,
                               index_t out_d, index_t out_h, index_t out_w, bint is_max,
                               const float* x, float* y, int64_t* idx, double* workspace,
                               int num_threads) noexcept nogil:
    _adaptive_forward(planes, in_d, in_h, in_w, out_d, out_h, out_w, is_max, x, y, idx,
                      workspace, num_threads)


cdef void adaptive_forward_f64(index_t planes, index_t in_d, index_t in_h, index_t in_w,
                               index_t out_d, index_t out_h, index_t out_w, bint is_max,
                               const double* x, double* y, int64_t* idx, double* workspace,
                               int num_threads) noexcept nogil:
    _adaptive_forward(planes, in_d, in_h, in_w, out_d, out_h, out_w, is_max, x, y, idx,
                      workspace, num_threads)


# ---------------------------------------------------------------- Python entry

cdef void _geom_from_tuple(tuple geom, PoolGeom* g):
    (g.planes, g.in_d, g.in_h, g.in_w, g.out_d, g.out_h, g.out_w,
     g.kernel_d, g.kernel_h, g.kernel_w, g.stride_d, g.stride_h, g.stride_w,
     g.pad_d, g.pad_h, g.pad_w, g.dilation_d, g.dilation_h, g.dilation_w) = geom


def pool_workspace(tuple geom, int num_threads):
    """Elements (of the input's dtype) of the workspace pool() needs."""
    cdef PoolGeom g
    _geom_from_tuple(geom, &g)
    return pool_workspace_per_thread(&g) * num_threads


def pool(tuple geom, int mode, bint count_include_pad, index_t divisor_override,
         double norm_type, cnp.ndarray x, cnp.ndarray y, object indices, int num_threads,
         object workspace=None):
    """y (and int64 indices) = pooling of x, both C-contiguous (planes, D, H, W).
    workspace: at least pool_workspace(geom, num_threads) elements of x's
    dtype (compiled plans keep one), or None to allocate it."""
    cdef PoolGeom g
    _geom_from_tuple(geom, &g)
    g.mode = mode
    g.count_include_pad = count_include_pad
    g.divisor_override = divisor_override
    g.norm_type = norm_type
    cdef int64_t* ip = NULL if indices is None else <int64_t*>cnp.PyArray_DATA(<cnp.ndarray>indices)
    cdef index_t ws_per_thread = pool_workspace_per_thread(&g)
    cdef cnp.ndarray ws = workspace if (
        workspace is not None and workspace.dtype == x.dtype
        and workspace.size >= ws_per_thread * num_threads) else \
        np.empty(ws_per_thread * num_threads, dtype=x.dtype)
    cdef void* xp = cnp.PyArray_DATA(x)
    cdef void* yp = cnp.PyArray_DATA(y)
    cdef void* wp = cnp.PyArray_DATA(ws)
    if x.dtype.num == cnp.NPY_FLOAT32:
        with nogil:
            _pool_forward(&g, <float*>xp, <float*>yp, ip, <float*>wp, ws_per_thread, num_threads)
    else:
        with nogil:
            _pool_forward(&g, <double*>xp, <double*>yp, ip, <double*>wp, ws_per_thread, num_threads)


def adaptive_workspace_size(index_t in_w, int num_threads):
    """Elements (float64) of the workspace adaptive() needs."""
    return adaptive_workspace(in_w, num_threads)


def adaptive(tuple sizes, bint is_max, cnp.ndarray x, cnp.ndarray y, object indices,
             int num_threads, object workspace=None):
    """Adaptive average or max pooling over planes; sizes = (planes, in d h w, out d h w).
    workspace: at least adaptive_workspace_size(in_w, num_threads) float64
    elements, or None to allocate it."""
    cdef index_t planes, in_d, in_h, in_w, out_d, out_h, out_w
    planes, in_d, in_h, in_w, out_d, out_h, out_w = sizes
    cdef int64_t* ip = NULL if indices is None else <int64_t*>cnp.PyArray_DATA(<cnp.ndarray>indices)
    cdef void* xp = cnp.PyArray_DATA(x)
    cdef void* yp = cnp.PyArray_DATA(y)
    cdef cnp.ndarray ws = workspace if (
        workspace is not None and workspace.dtype == np.float64
        and workspace.size >= adaptive_workspace(in_w, num_threads)) else \
        np.empty(adaptive_workspace(in_w, num_threads), np.float64)
    cdef double* wp = <double*>cnp.PyArray_DATA(ws)
    if x.dtype.num == cnp.NPY_FLOAT32:
        with nogil:
            _adaptive_forward(planes, in_d, in_h, in_w, out_d, out_h, out_w, is_max,
                              <float*>xp, <float*>yp, ip, wp, num_threads)
    else:
        with nogil:
            _adaptive_forward(planes, in_d, in_h, in_w, out_d, out_h, out_w, is_max,
                              <double*>xp, <double*>yp, ip, wp, num_threads)


# ---------------------------------------------------------------- resizing by taps

cdef void _taps_rows(const floating* x, floating* y, index_t outer, index_t n_in,
                     index_t n_out, index_t inner, index_t width, const int64_t* idx,
                     const floating* coef, int num_threads) noexcept nogil:
    """y[o, i, :] = sum_k coef[i, k] * x[o, idx[i, k], :] over contiguous rows of
    `inner` values (the axis resized is not the last); each output row is one
    task, its taps summed in order, so results do not depend on the threads."""
    cdef index_t task, o, i, k, j, src
    cdef floating c
    cdef floating* row
    cdef const floating* s
    with parallel(num_threads=num_threads):
        fp_enter()
        for task in prange(outer * n_out, schedule='static'):
            o = task // n_out
            i = task - o * n_out
            row = y + task * inner
            src = idx[i * width]
            c = coef[i * width]
            s = x + (o * n_in + src) * inner
            for j in range(inner):
                row[j] = c * s[j]
            for k in range(1, width):
                c = coef[i * width + k]
                s = x + (o * n_in + idx[i * width + k]) * inner
                for j in range(inner):
                    row[j] = row[j] + c * s[j]


cdef void _taps_last(const floating* x, floating* y, index_t outer, index_t n_in,
                     index_t n_out, index_t width, const int64_t* idx, const floating* coef,
                     int num_threads) noexcept nogil:
    """y[o, i] = sum_k coef[i, k] * x[o, idx[i, k]]: the last axis resized."""
    cdef index_t o, i, k
    cdef floating acc
    cdef const floating* s
    cdef floating* row
    with parallel(num_threads=num_threads):
        fp_enter()
        for o in prange(outer, schedule='static'):
            s = x + o * n_in
            row = y + o * n_out
            for i in range(n_out):
                acc = coef[i * width] * s[idx[i * width]]
                for k in range(1, width):
                    acc = acc + coef[i * width + k] * s[idx[i * width + k]]
                row[i] = acc


def resize_axis(cnp.ndarray x, cnp.ndarray y, index_t outer, index_t n_in, index_t n_out,
                index_t inner, cnp.ndarray indices, cnp.ndarray coefficients, int num_threads):
    """One axis of a separable resize: x (outer, n_in, inner) -> y (outer, n_out,
    inner), C-contiguous, float32 or float64; indices int64 and coefficients
    (of x's dtype) are (n_out, width) C-contiguous with indices in [0, n_in)."""
    cdef index_t width = indices.shape[1]
    cdef void* xp = cnp.PyArray_DATA(x)
    cdef void* yp = cnp.PyArray_DATA(y)
    cdef const int64_t* ip = <const int64_t*>cnp.PyArray_DATA(indices)
    cdef void* cp = cnp.PyArray_DATA(coefficients)
    if x.dtype.num == cnp.NPY_FLOAT32:
        with nogil:
            if inner == 1:
                _taps_last(<const float*>xp, <float*>yp, outer, n_in, n_out, width, ip,
                           <const float*>cp, num_threads)
            else:
                _taps_rows(<const float*>xp, <float*>yp, outer, n_in, n_out, inner, width,
                           ip, <const float*>cp, num_threads)
    else:
        with nogil:
            if inner == 1:
                _taps_last(<const double*>xp, <double*>yp, outer, n_in, n_out, width, ip,
                           <const double*>cp, num_threads)
            else:
                _taps_rows(<const double*>xp, <double*>yp, outer, n_in, n_out, inner, width,
                           ip, <const double*>cp, num_threads)


cdef void _nearest_2d(const floating* x, floating* y, index_t outer, index_t n_rows,
                      index_t n_cols, index_t o_rows, index_t o_cols, const int64_t* rows,
                      const int64_t* cols, index_t factor, int num_threads) noexcept nogil:
    """y[o, i, j] = x[o, rows[i], cols[j]] in one pass, an output row a task;
    factor > 0: cols[j] = j // factor (an integer upscale: each value copied
    factor times, 2 as one loop the compiler vectorizes)."""
    cdef index_t task, o, i, j, t
    cdef floating v
    cdef floating* d
    cdef const floating* s
    with parallel(num_threads=num_threads):
        for task in prange(outer * o_rows, schedule='static'):
            o = task // o_rows
            i = task - o * o_rows
            d = y + task * o_cols
            s = x + (o * n_rows + rows[i]) * n_cols
            if factor == 2:
                for j in range(n_cols):
                    d[2 * j] = s[j]
                    d[2 * j + 1] = s[j]
            elif factor > 0:
                for j in range(n_cols):
                    v = s[j]
                    for t in range(factor):
                        d[j * factor + t] = v
            else:
                for j in range(o_cols):
                    d[j] = s[cols[j]]


def resize_nearest_2d(cnp.ndarray x, cnp.ndarray y, cnp.ndarray rows, cnp.ndarray cols,
                      int num_threads):
    """Nearest resize of the last two axes: x (outer, n_rows, n_cols) -> y
    (outer, len(rows), len(cols)), C-contiguous, one float dtype, y[o, i, j] =
    x[o, rows[i], cols[j]]; rows and cols int64 indices into those axes."""
    cdef index_t i, factor
    if x.ndim != 3 or y.ndim != 3 or not x.flags.c_contiguous or not y.flags.c_contiguous \
            or x.dtype != y.dtype or x.dtype.num not in (cnp.NPY_FLOAT32, cnp.NPY_FLOAT64):
        raise ValueError("resize_nearest_2d: expected C-contiguous 3-D float32 or float64 "
                         "arrays of one dtype")
    if rows.ndim != 1 or cols.ndim != 1 or rows.dtype != np.int64 or cols.dtype != np.int64 \
            or y.shape[0] != x.shape[0] or y.shape[1] != rows.shape[0] \
            or y.shape[2] != cols.shape[0]:
        raise ValueError("resize_nearest_2d: expected int64 row and column indices, one per "
                         "output row and column")
    rows = np.ascontiguousarray(rows)
    cols = np.ascontiguousarray(cols)
    if y.size == 0:
        return
    if (rows.size and (rows.min() < 0 or rows.max() >= x.shape[1])) \
            or (cols.size and (cols.min() < 0 or cols.max() >= x.shape[2])):
        raise ValueError("resize_nearest_2d: an index outside the input")
    factor = y.shape[2] // x.shape[2] if y.shape[2] % x.shape[2] == 0 else 0
    if factor and not np.array_equal(cols, np.arange(y.shape[2]) // factor):
        factor = 0
    cdef const int64_t* rp = <const int64_t*>cnp.PyArray_DATA(rows)
    cdef const int64_t* cp = <const int64_t*>cnp.PyArray_DATA(cols)
    cdef void* xp = cnp.PyArray_DATA(x)
    cdef void* yp = cnp.PyArray_DATA(y)
    if x.dtype.num == cnp.NPY_FLOAT32:
        with nogil:
            _nearest_2d(<const float*>xp, <float*>yp, x.shape[0], x.shape[1], x.shape[2],
                        y.shape[1], y.shape[2], rp, cp, factor, num_threads)
    else:
        with nogil:
            _nearest_2d(<const double*>xp, <double*>yp, x.shape[0], x.shape[1], x.shape[2],
                        y.shape[1], y.shape[2], rp, cp, factor, num_threads)

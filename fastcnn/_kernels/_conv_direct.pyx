"""Direct convolution, one output plane per task: grouped convolutions with
few input channels per group (depthwise and the like), any kernel, stride,
dilation and padding, 1-, 2- and 3-D. 3x3 depthwise planes run the
vectorised kernels of conv_dw.h; everything else the plane loop below.
"""
from cython.parallel cimport parallel, prange, threadid
from libc.string cimport memset
from fastcnn._kernels._omp cimport fp_enter
from fastcnn._kernels._typedefs cimport floating, index_t
from fastcnn._kernels._activation cimport (ACT_NONE, ACT_RELU, ACT_RELU6,
                                           bias_residual_activation)
from fastcnn._kernels._conv_types cimport ConvGeom, ConvPlan, ConvTuning
from fastcnn._kernels._conv_common cimport ceil_div_stride
from fastcnn._kernels._conv_dw cimport (fcnn_dw3x3_plane_f32, fcnn_dw3x3_plane_f64,
                                        fcnn_dw3x3_workspace, fcnn_dw3x3_rows_f32,
                                        fcnn_dw3x3_rows_f64, fcnn_dw3x3_rows_s2_f32,
                                        fcnn_dw3x3_rows_s2_f64, dw_lanes, clamp_top)

cdef enum:
    DIRECT_WIDE_BELOW = 32                # depthwise 3x3 outputs this wide: padded rows


cdef inline bint _direct_wide(const ConvGeom* g) noexcept nogil:
    """Narrow stride-1 3x3 depthwise outputs use the padded-plane kernel."""
    return g.out_w < DIRECT_WIDE_BELOW and g.stride_w == 1 and g.stride_h == 1


cdef inline bint _direct_rows(const ConvGeom* g) noexcept nogil:
    """Wide 3x3 depthwise outputs at stride 1 or 2 use the padded-rows
    kernels (narrower rows leave their per-row work too few vectors)."""
    return (g.out_w >= DIRECT_WIDE_BELOW and g.stride_w == g.stride_h
            and (g.stride_w == 1 or g.stride_w == 2))


cdef inline index_t _wide_width(const ConvGeom* g) noexcept nogil:
    """Row length of the zero-padded plane used for narrow 3x3 depthwise outputs."""
    return max(g.in_w + g.pad_w, (g.out_w - 1) * g.stride_w + 3) + 1


cdef inline index_t _wide_scratch(const ConvGeom* g) noexcept nogil:
    cdef index_t wp = _wide_width(g)
    cdef index_t hp = max(g.in_h + g.pad_h, (g.out_h - 1) * g.stride_h + 3)
    return (hp + 1) * wp + g.out_h * wp


cdef void direct_plan(const ConvGeom* g, const ConvTuning* t, index_t itemsize,
                      ConvPlan* p) noexcept nogil:
    p.n_tasks = g.batch * g.out_channels
    # a row of zeros for the padding rows, the padded plane of narrow
    # outputs or the padded rows of wide ones
    p.workspace_per_thread = g.in_w
    if _direct_wide(g):
        p.workspace_per_thread = max(g.in_w, _wide_scratch(g))
    elif _direct_rows(g):
        p.workspace_per_thread = max(g.in_w, fcnn_dw3x3_workspace(
            g.out_w, dw_lanes(itemsize), g.stride_w))


cdef void _direct_task(const ConvGeom* g, const floating* x, const floating* w,
                       const floating* bias, floating* y, const floating* res,
                       floating* zero_row, int activation, index_t task) noexcept nogil:
    """One output plane (image, output channel) of a grouped convolution with
    few input channels per group (depthwise and the like). zero_row: the
    thread's workspace, zeroed before its first task (the 3x3 kernels keep
    their padding there)."""
    cdef index_t cin_group = g.in_channels // g.groups
    cdef index_t m_group = g.out_channels // g.groups
    cdef index_t kvol = g.kernel_d * g.kernel_h * g.kernel_w
    cdef index_t plane = g.in_d * g.in_h * g.in_w
    cdef index_t oc = task % g.out_channels
    cdef index_t n = task // g.out_channels
    cdef index_t grp = oc // m_group
    cdef const floating* xg = x + (n * g.in_channels + grp * cin_group) * plane
    cdef const floating* wk = w + oc * cin_group * kvol
    cdef floating* yp = y + (n * g.out_channels + oc) * (g.out_d * g.out_h * g.out_w)
    cdef floating b = bias[oc] if bias != NULL else 0
    if (cin_group == 1 and g.kernel_d == 1 and g.kernel_h == 3 and g.kernel_w == 3
            and g.dilation_h == 1 and g.dilation_w == 1 and g.in_d == 1):
        if _direct_rows(g) and res == NULL and (activation == ACT_NONE or activation == ACT_RELU
                                                or activation == ACT_RELU6):
            _direct_plane_3x3_rows(g, xg, wk, b, yp, zero_row, activation)
            return          # the epilogue is done in the kernel
        elif _direct_rows(g):
            _direct_plane_3x3_rows(g, xg, wk, b, yp, zero_row, ACT_NONE)
        elif _direct_wide(g):
            _direct_plane_3x3_wide(g, xg, wk, b, yp, zero_row)
        else:
            _direct_plane_3x3(g, xg, wk, b, yp, zero_row)
    else:
        _direct_plane(g, xg, wk, yp, b)
    bias_residual_activation(yp, g.out_d * g.out_h * g.out_w, 0, False,
                             res + (yp - y) if res != NULL else NULL, activation)


cdef inline void _direct_plane(const ConvGeom* g, const floating* xg, const floating* wk,
                               floating* yp, floating b) noexcept nogil:
    """Any kernel: the output row stays in L1 while each tap adds its shifted
    input row (then bias)."""
    cdef index_t cin_group = g.in_channels // g.groups
    cdef index_t plane = g.in_d * g.in_h * g.in_w
    cdef index_t in_w = g.in_w, out_w = g.out_w, stride_w = g.stride_w
    cdef index_t od, oh, c, kd, kh, kw, id_, ih, iw0, lo, hi, j
    cdef floating* yrow
    cdef const floating* src
    cdef floating wv
    for od in range(g.out_d):
        for oh in range(g.out_h):
            yrow = yp + (od * g.out_h + oh) * out_w
            for j in range(out_w):
                yrow[j] = 0
            for c in range(cin_group):
                for kd in range(g.kernel_d):
                    id_ = od * g.stride_d - g.pad_d + kd * g.dilation_d
                    if id_ < 0 or id_ >= g.in_d:
                        continue
                    for kh in range(g.kernel_h):
                        ih = oh * g.stride_h - g.pad_h + kh * g.dilation_h
                        if ih < 0 or ih >= g.in_h:
                            continue
                        src = xg + c * plane + (id_ * g.in_h + ih) * in_w
                        for kw in range(g.kernel_w):
                            wv = wk[((c * g.kernel_d + kd) * g.kernel_h + kh) * g.kernel_w + kw]
                            iw0 = kw * g.dilation_w - g.pad_w
                            lo = 0 if iw0 >= 0 else min(out_w, ceil_div_stride(-iw0, stride_w))
                            hi = 0 if iw0 >= in_w else min(out_w, ceil_div_stride(in_w - iw0, stride_w))
                            if stride_w == 1:
                                for j in range(lo, hi):
                                    yrow[j] += wv * src[iw0 + j]
                            else:
                                for j in range(lo, hi):
                                    yrow[j] += wv * src[iw0 + j * stride_w]
            for j in range(out_w):
                yrow[j] = yrow[j] + b


cdef inline void _direct_plane_3x3_wide(const ConvGeom* g, const floating* xc,
                                        const floating* wk, floating b, floating* yp,
                                        floating* scratch) noexcept nogil:
    """Narrow stride-1 3x3 depthwise outputs: copy the plane into a zero-padded
    buffer of row length wp, then compute every output row in one contiguous
    loop over q = oh * wp + ow (columns ow >= out_w are computed and dropped).
    The buffer's border is zeroed once per thread and never written."""
    cdef index_t wp = _wide_width(g)
    cdef index_t hp = max(g.in_h + g.pad_h, (g.out_h - 1) * g.stride_h + 3)
    cdef floating* pad = scratch
    cdef floating* wide = scratch + (hp + 1) * wp
    cdef index_t nq = (g.out_h - 1) * wp + g.out_w
    cdef floating w0 = wk[0], w1 = wk[1], w2 = wk[2], w3 = wk[3], w4 = wk[4]
    cdef floating w5 = wk[5], w6 = wk[6], w7 = wk[7], w8 = wk[8]
    cdef index_t r, q, oh, c
    cdef const floating* r0 = pad
    cdef const floating* r1 = pad + wp
    cdef const floating* r2 = pad + 2 * wp

    for r in range(g.in_h):
        for c in range(g.in_w):
            pad[(r + g.pad_h) * wp + g.pad_w + c] = xc[r * g.in_w + c]
    for q in range(nq):
        wide[q] = (w0 * r0[q] + w1 * r0[q + 1] + w2 * r0[q + 2]
                   + w3 * r1[q] + w4 * r1[q + 1] + w5 * r1[q + 2]
                   + w6 * r2[q] + w7 * r2[q + 1] + w8 * r2[q + 2] + b)
    for oh in range(g.out_h):
        for c in range(g.out_w):
            yp[oh * g.out_w + c] = wide[oh * wp + c]


cdef inline void _direct_plane_3x3_rows(const ConvGeom* g, const floating* xc,
                                        const floating* wk, floating b, floating* yp,
                                        floating* ws, int activation) noexcept nogil:
    """Wide 3x3 depthwise outputs at stride 1 or 2: whole vectors over
    zero-padded rows (conv_dw.h), with ReLU or ReLU6 (or no activation)
    applied as each vector is stored."""
    cdef int clamp = activation == ACT_RELU or activation == ACT_RELU6
    cdef floating lo = 0, hi = clamp_top(activation)
    if floating is float:
        (fcnn_dw3x3_rows_s2_f32 if g.stride_w == 2 else fcnn_dw3x3_rows_f32)(
            yp, xc, g.in_h, g.in_w, g.out_h, g.out_w, g.pad_h, g.pad_w, wk, b, clamp, lo, hi,
            ws)
    else:
        (fcnn_dw3x3_rows_s2_f64 if g.stride_w == 2 else fcnn_dw3x3_rows_f64)(
            yp, xc, g.in_h, g.in_w, g.out_h, g.out_w, g.pad_h, g.pad_w, wk, b, clamp, lo, hi,
            ws)


cdef inline void _direct_plane_3x3(const ConvGeom* g, const floating* xc, const floating* wk,
                                   floating b, floating* yp, const floating* zero_row) noexcept nogil:
    """3x3 depthwise, any stride and padding (conv_dw.h); zero_row stands for
    the rows above and below the input."""
    cdef index_t in_w = g.in_w, out_w = g.out_w, s = g.stride_w, pw = g.pad_w
    cdef index_t lo, hi
    # interior columns: the whole window inside [0, in_w)
    lo = min(out_w, ceil_div_stride(pw, s))
    hi = max(lo, min(out_w, (in_w - 3 + pw) // s + 1)) if in_w + pw >= 3 else lo
    if floating is float:
        fcnn_dw3x3_plane_f32(yp, xc, zero_row, g.in_h, in_w, g.out_h, out_w, g.stride_h, s,
                             g.pad_h, pw, lo, hi, wk, b)
    else:
        fcnn_dw3x3_plane_f64(yp, xc, zero_row, g.in_h, in_w, g.out_h, out_w, g.stride_h, s,
                             g.pad_h, pw, lo, hi, wk, b)


cdef void direct_forward(const ConvGeom* g, const ConvPlan* plan, const floating* x,
                         const floating* w, const floating* bias, floating* y,
                         const floating* res, floating* workspace, int activation,
                         int num_threads) noexcept nogil:
    cdef index_t task
    cdef floating* zero_row
    with parallel(num_threads=num_threads):
        fp_enter()
        zero_row = workspace + plan.workspace_shared + threadid() * plan.workspace_per_thread
        memset(zero_row, 0, plan.workspace_per_thread * sizeof(floating))
        for task in prange(plan.n_tasks, schedule='static'):
            _direct_task(g, x, w, bias, y, res, zero_row, activation, task)

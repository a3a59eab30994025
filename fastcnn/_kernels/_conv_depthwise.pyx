"""Depthwise convolution over channel vectors (2-D, one input channel per
output channel).

Small depthwise planes (7x7, 14x14) leave a per-plane kernel only short rows
to vectorise; here vector lanes hold channels (conv_dw.h). A task pads and
interleaves the input rows its output rows need, for one block of channels,
computes every output position as one vector per tap, and writes the
channels' rows back, with bias, residual and activation.
"""
from cython.parallel cimport parallel, prange, threadid
from fastcnn._kernels._omp cimport fp_enter
from fastcnn._kernels._typedefs cimport floating, index_t
from fastcnn._kernels._activation cimport (ACT_NONE, ACT_RELU, ACT_RELU6,
                                           bias_residual_activation)
from fastcnn._kernels._transpose cimport transpose
from fastcnn._kernels._conv_types cimport (ConvGeom, ConvPlan, ConvTuning, DepthwisePlan)
from fastcnn._kernels._conv_common cimport (MIN_TASKS, ceil_div, round_up, blocked_applies,
                                            pack_channel_blocks)
from fastcnn._kernels._conv_dw cimport fcnn_dw_rows_f32, fcnn_dw_rows_f64, dw_lanes, clamp_top


cdef bint depthwise_applies(const ConvGeom* g) noexcept nogil:
    return (blocked_applies(g) and g.groups == g.in_channels
            and g.groups == g.out_channels)


cdef inline index_t _dw_rows_read(const ConvGeom* g, index_t out_rows) noexcept nogil:
    return (out_rows - 1) * g.stride_h + (g.kernel_h - 1) * g.dilation_h + 1


cdef void depthwise_plan(const ConvGeom* g, const ConvTuning* t, index_t itemsize,
                         ConvPlan* p) noexcept nogil:
    cdef index_t vl = dw_lanes(itemsize)
    cdef index_t units, rows, row_bytes
    cdef DepthwisePlan* q = &p.depthwise
    q.m_block = vl
    q.n_m_blocks = ceil_div(g.out_channels, vl)
    q.wq = (g.out_w - 1) * g.stride_w + (g.kernel_w - 1) * g.dilation_w + 1
    # rows per task: its padded input rows and outputs within t.dw_task_bytes
    row_bytes = (g.stride_h * q.wq + g.out_w) * vl * itemsize
    rows = max(1, min(g.out_h, t.dw_task_bytes // row_bytes))
    units = g.batch * q.n_m_blocks
    if units * ceil_div(g.out_h, rows) < MIN_TASKS:
        rows = max(1, ceil_div(g.out_h, ceil_div(MIN_TASKS, units)))
    q.rows_per_task = rows
    q.row_blocks = ceil_div(g.out_h, rows)
    p.n_tasks = units * q.row_blocks
    p.workspace_per_thread = (_dw_rows_read(g, rows) * q.wq + rows * g.out_w) * vl


cdef void _depthwise_task(const ConvGeom* g, const DepthwisePlan* plan, const floating* x,
                          const floating* packed, const floating* bias, floating* y,
                          const floating* res, floating* scratch, int activation,
                          index_t task) noexcept nogil:
    cdef index_t vl = plan.m_block, taps = g.kernel_h * g.kernel_w
    cdef index_t rb = task % plan.row_blocks
    cdef index_t cb = (task // plan.row_blocks) % plan.n_m_blocks
    cdef index_t n = task // (plan.row_blocks * plan.n_m_blocks)
    cdef index_t oh0 = rb * plan.rows_per_task, oh1 = min(g.out_h, oh0 + plan.rows_per_task)
    cdef index_t c0 = cb * vl, planes = min(vl, g.out_channels - c0)
    cdef index_t count = (oh1 - oh0) * g.out_w
    cdef floating* out = scratch + _dw_rows_read(g, plan.rows_per_task) * plan.wq * vl
    cdef const floating* xb = x + (n * g.in_channels + c0) * g.in_h * g.in_w
    cdef index_t c
    cdef floating* yrow
    cdef floating lanes_bias[16]        # the block's biases, zero past its channels
    # bias and ReLU / ReLU6 are applied in the kernel, on the channel vectors;
    # a residual or another activation in a pass over the output rows after
    cdef bint fused = res == NULL and (activation == ACT_NONE or activation == ACT_RELU
                                       or activation == ACT_RELU6)
    cdef int clamp = fused and activation != ACT_NONE
    cdef floating lo = 0, hi = clamp_top(activation)
    for c in range(vl):
        lanes_bias[c] = bias[c0 + c] if bias != NULL and c < planes else 0
    if floating is float:
        fcnn_dw_rows_f32(xb, planes, g.in_h, g.in_w, packed + cb * taps * vl, g.kernel_h,
                         g.kernel_w, g.stride_h, g.stride_w, g.pad_h, g.pad_w, g.dilation_h,
                         g.dilation_w, g.out_w, oh0, oh1, plan.wq, fused and bias != NULL,
                         lanes_bias, clamp, lo, hi, scratch, out)
    else:
        fcnn_dw_rows_f64(xb, planes, g.in_h, g.in_w, packed + cb * taps * vl, g.kernel_h,
                         g.kernel_w, g.stride_h, g.stride_w, g.pad_h, g.pad_w, g.dilation_h,
                         g.dilation_w, g.out_w, oh0, oh1, plan.wq, fused and bias != NULL,
                         lanes_bias, clamp, lo, hi, scratch, out)
    transpose(out, vl, count, planes, y + ((n * g.out_channels + c0) * g.out_h + oh0) * g.out_w,
              g.out_h * g.out_w)
    if fused:
        return
    for c in range(planes):
        yrow = y + ((n * g.out_channels + c0 + c) * g.out_h + oh0) * g.out_w
        bias_residual_activation(yrow, count, bias[c0 + c] if bias != NULL else 0,
                                 bias != NULL, res + (yrow - y) if res != NULL else NULL,
                                 activation)


cdef index_t depthwise_packed_size(const ConvGeom* g, const ConvPlan* cp,
                                   index_t itemsize) noexcept nogil:
    return round_up(g.out_channels, dw_lanes(itemsize)) * g.kernel_h * g.kernel_w


cdef void depthwise_pack(const ConvGeom* g, const ConvPlan* cp, const floating* w,
                         floating* packed, int num_threads) noexcept nogil:
    """One group of all the channels, one input channel each, in blocks of a
    vector's channels."""
    pack_channel_blocks(w, 1, g.out_channels, g.kernel_h * g.kernel_w,
                        dw_lanes(sizeof(floating)), 1, packed, num_threads)


cdef void depthwise_forward(const ConvGeom* g, const ConvPlan* cp, const floating* x,
                            const floating* packed, const floating* bias, floating* y,
                            const floating* res, floating* workspace, int activation,
                            int num_threads) noexcept nogil:
    cdef index_t task
    cdef floating* scratch
    cdef const DepthwisePlan* plan = &cp.depthwise
    with parallel(num_threads=num_threads):
        fp_enter()
        scratch = workspace + threadid() * cp.workspace_per_thread
        for task in prange(cp.n_tasks, schedule='static'):
            _depthwise_task(g, plan, x, packed, bias, y, res, scratch, activation, task)

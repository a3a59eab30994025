"""Pointwise convolution: a 1x1 layer at stride 1 without padding, its input
read as it lies.

The block kernel with the pointwise tile (conv_block.h) takes FCNN_POINT_OCB
output channels x one block of positions (whole vectors) per call, one tap,
ld_c = the plane size, and writes its tile straight into the output rows.
A task takes col_tile positions (several blocks, so the epilogue runs over
long rows) and a run of channel blocks, and goes over the input channels in
chunks whose columns (chunk x col_tile) stay in L1 while the weights (packed
[block][channel][FCNN_POINT_OCB]) stream past. The last, partial block of
positions is copied into a zero-padded panel first; it and a partial last
channel block compute into per-thread scratch.
"""
from cython.parallel cimport parallel, prange, threadid
from libc.string cimport memset, memcpy
from fastcnn._kernels._omp cimport fp_enter
from fastcnn._kernels._typedefs cimport floating, index_t
from fastcnn._kernels._activation cimport bias_residual_activation
from fastcnn._kernels._block_gemm cimport block_splat
from fastcnn._kernels._conv_types cimport (ConvGeom, ConvPlan, ConvTuning, PointwisePlan)
from fastcnn._kernels._conv_common cimport (MIN_TASKS, ceil_div, group_blocks_size,
                                            pack_group_blocks)
from fastcnn._kernels._conv_block cimport (FCNN_POINT_OCB, FCNN_POINT_LANES_F32,
                                           FCNN_POINT_LANES_F64, fcnn_block_kernel_f32_point,
                                           fcnn_block_kernel_f64_point)

cdef enum:
    POINTWISE_MIN_CHUNK = 64            # input channels per pass, at least (or all)


cdef inline index_t _point_lanes(index_t itemsize) noexcept nogil:
    return FCNN_POINT_LANES_F32 if itemsize == 4 else FCNN_POINT_LANES_F64


cdef inline void _point_kernel(const floating* x, index_t ld_c, const floating* w,
                               index_t cin, floating* out, index_t ld_out,
                               int accumulate) noexcept nogil:
    cdef long tap0 = 0
    if floating is float:
        fcnn_block_kernel_f32_point(x, ld_c, w, &tap0, 1, cin, out, ld_out, accumulate)
    else:
        fcnn_block_kernel_f64_point(x, ld_c, w, &tap0, 1, cin, out, ld_out, accumulate)


cdef void pointwise_plan(const ConvGeom* g, const ConvTuning* t, index_t itemsize,
                         ConvPlan* p) noexcept nogil:
    cdef index_t cin = g.in_channels // g.groups
    cdef index_t lanes = _point_lanes(itemsize)
    cdef index_t blocks = ceil_div(g.out_d * g.out_h * g.out_w, lanes)
    cdef index_t units, per_task
    cdef PointwisePlan* q = &p.pointwise
    # as many blocks of positions per task as keep a chunk of at least
    # POINTWISE_MIN_CHUNK channels (or all of them) within the L1 budget
    per_task = t.oc_weight_bytes // (min(cin, <index_t>POINTWISE_MIN_CHUNK) * lanes * itemsize)
    per_task = max(1, min(blocks, per_task))
    q.col_tile = per_task * lanes
    q.n_col_tiles = ceil_div(blocks, per_task)
    q.m_block = FCNN_POINT_OCB
    q.n_m_blocks = ceil_div(g.out_channels // g.groups, FCNN_POINT_OCB)
    q.chunk_channels = max(1, min(cin, t.oc_weight_bytes // (q.col_tile * itemsize)))
    units = g.batch * g.groups * q.n_col_tiles
    q.row_blocks = max(1, min(q.n_m_blocks, ceil_div(MIN_TASKS, units)))
    q.rows_per_task = ceil_div(q.n_m_blocks, q.row_blocks)
    q.row_blocks = ceil_div(q.n_m_blocks, q.rows_per_task)
    p.n_tasks = units * q.row_blocks
    p.workspace_per_thread = q.rows_per_task * FCNN_POINT_OCB * q.col_tile + cin * lanes


cdef void _pointwise_task(const ConvGeom* g, const PointwisePlan* plan, const floating* x,
                          const floating* packed, const floating* bias, floating* y,
                          const floating* res, floating* scratch, int activation,
                          index_t task) noexcept nogil:
    cdef index_t cin = g.in_channels // g.groups, m_group = g.out_channels // g.groups
    cdef index_t positions = g.out_d * g.out_h * g.out_w
    cdef index_t lanes = _point_lanes(sizeof(floating)), ocb = plan.m_block
    cdef index_t width = plan.col_tile
    cdef index_t run = task % plan.row_blocks
    cdef index_t tile = (task // plan.row_blocks) % plan.n_col_tiles
    cdef index_t grp = (task // (plan.row_blocks * plan.n_col_tiles)) % g.groups
    cdef index_t n = task // (plan.row_blocks * plan.n_col_tiles * g.groups)
    cdef index_t p0 = tile * width, valid = min(width, positions - p0)
    cdef index_t whole = valid // lanes                 # blocks of positions all inside
    cdef index_t nblk = ceil_div(valid, lanes)
    cdef index_t b0 = run * plan.rows_per_task, b1 = min(plan.n_m_blocks, b0 + plan.rows_per_task)
    cdef const floating* xs = x + (n * g.in_channels + grp * cin) * positions + p0
    cdef const floating* xq
    cdef const floating* wb
    cdef floating* panel = scratch + plan.rows_per_task * ocb * width
    cdef floating* yblk
    cdef floating* yrow
    cdef index_t c, c0, kc, b, j, o, oc, mcount, ldq
    cdef bint direct
    if whole < nblk:                    # the ragged end: a zero-padded copy
        for c in range(cin):
            memcpy(panel + c * lanes, xs + c * positions + whole * lanes,
                   (valid - whole * lanes) * sizeof(floating))
            memset(panel + c * lanes + valid - whole * lanes, 0,
                   (lanes - (valid - whole * lanes)) * sizeof(floating))
    c0 = 0
    while c0 < cin:
        kc = min(plan.chunk_channels, cin - c0)
        for b in range(b0, b1):
            wb = packed + ((grp * plan.n_m_blocks + b) * cin + c0) * ocb * block_splat(sizeof(floating))
            direct = (b + 1) * ocb <= m_group
            yblk = y + (n * g.out_channels + grp * m_group + b * ocb) * positions + p0
            for j in range(nblk):
                xq = xs + c0 * positions + j * lanes if j < whole else panel + c0 * lanes
                ldq = positions if j < whole else lanes
                if direct and j < whole:            # a whole tile: straight into y
                    _point_kernel(xq, ldq, wb, kc, yblk + j * lanes, positions, c0 > 0)
                else:
                    _point_kernel(xq, ldq, wb, kc, scratch + (b - b0) * ocb * width + j * lanes,
                                  width, c0 > 0)
        c0 += kc
    for b in range(b0, b1):
        mcount = min(ocb, m_group - b * ocb)
        for o in range(mcount):
            oc = grp * m_group + b * ocb + o
            yrow = y + (n * g.out_channels + oc) * positions + p0
            if mcount < ocb:
                memcpy(yrow, scratch + ((b - b0) * ocb + o) * width, valid * sizeof(floating))
            elif whole < nblk:
                memcpy(yrow + whole * lanes, scratch + ((b - b0) * ocb + o) * width
                       + whole * lanes, (valid - whole * lanes) * sizeof(floating))
            bias_residual_activation(yrow, valid, bias[oc] if bias != NULL else 0,
                                     bias != NULL, res + (yrow - y) if res != NULL else NULL,
                                     activation)


cdef index_t pointwise_packed_size(const ConvGeom* g, const ConvPlan* cp,
                                   index_t itemsize) noexcept nogil:
    return group_blocks_size(g, FCNN_POINT_OCB, block_splat(itemsize))


cdef void pointwise_pack(const ConvGeom* g, const ConvPlan* cp, const floating* w,
                         floating* packed, int num_threads) noexcept nogil:
    pack_group_blocks(g, w, FCNN_POINT_OCB, block_splat(sizeof(floating)), packed, num_threads)


cdef void pointwise_forward(const ConvGeom* g, const ConvPlan* cp, const floating* x,
                            const floating* packed, const floating* bias, floating* y,
                            const floating* res, floating* workspace, int activation,
                            int num_threads) noexcept nogil:
    cdef index_t task
    cdef floating* scratch
    cdef const PointwisePlan* plan = &cp.pointwise
    with parallel(num_threads=num_threads):
        fp_enter()
        scratch = workspace + threadid() * cp.workspace_per_thread
        for task in prange(cp.n_tasks, schedule='static'):
            _pointwise_task(g, plan, x, packed, bias, y, res, scratch, activation, task)

"""Blocked direct convolution (2-D): vectors over output pixels, a few
output channels in registers (few output channels, stems).

Each image channel is copied once into a zero-padded plane, split into
stride_h x stride_w phase planes (phase (a, b) holds padded rows a, a + s_h,
... and columns b, b + s_w, ...). Then output (oh, ow) is lane
q = oh * wq + ow, and tap (kh, kw) of every lane reads phase
((kh d_h) % s_h, (kw d_w) % s_w) at q + ((kh d_h) // s_h) wq + (kw d_w) // s_w:
a fixed offset, so the kernel (conv_block.h) reads each tap of a block of
lanes as whole vectors. Lanes with ow >= out_w are computed and dropped.
"""
from cython.parallel cimport parallel, prange, threadid
from fastcnn._kernels._omp cimport fp_enter
from fastcnn._kernels._typedefs cimport floating, index_t
from fastcnn._kernels._activation cimport store_bias_residual_activation
from fastcnn._kernels._block_gemm cimport block_splat
from fastcnn._kernels._conv_types cimport (ConvGeom, ConvPlan, ConvTuning, BlockedPlan)
from fastcnn._kernels._conv_common cimport (BLOCK_PAD_BYTES, ceil_div, round_up,
                                            tap_offsets_size, group_blocks_size,
                                            pack_group_blocks, pad_channel)
from fastcnn._kernels._conv_block cimport (FCNN_BLOCK_OCB, FCNN_BLOCK_LANES_F32,
                                           FCNN_BLOCK_LANES_F64, FCNN_BLOCK_NARROW_OCB,
                                           FCNN_BLOCK_NARROW_LANES_F32,
                                           FCNN_BLOCK_NARROW_LANES_F64, fcnn_block_kernel_f32,
                                           fcnn_block_kernel_f64, fcnn_block_kernel_f32_narrow,
                                           fcnn_block_kernel_f64_narrow)


cdef inline index_t _block_lanes(index_t itemsize, bint narrow=False) noexcept nogil:
    if narrow:
        return FCNN_BLOCK_NARROW_LANES_F32 if itemsize == 4 else FCNN_BLOCK_NARROW_LANES_F64
    return FCNN_BLOCK_LANES_F32 if itemsize == 4 else FCNN_BLOCK_LANES_F64


cdef inline bint _block_narrow(index_t m_group) noexcept nogil:
    """Whether the narrow tile (half the channels, more lanes) pads a
    group's output channels less than the wide one; ties go wide."""
    return (round_up(m_group, FCNN_BLOCK_NARROW_OCB) < round_up(m_group, FCNN_BLOCK_OCB))


cdef void blocked_plan(const ConvGeom* g, const ConvTuning* t, index_t itemsize,
                       ConvPlan* p) noexcept nogil:
    cdef index_t reach_h = ((g.kernel_h - 1) * g.dilation_h) // g.stride_h
    cdef index_t reach_w = ((g.kernel_w - 1) * g.dilation_w) // g.stride_w
    cdef index_t m_group = g.out_channels // g.groups
    cdef bint narrow = _block_narrow(m_group)
    cdef index_t lanes = _block_lanes(itemsize, narrow)
    cdef index_t image
    cdef BlockedPlan* q = &p.blocked
    q.wq = g.out_w + reach_w
    q.hq = g.out_h + reach_h
    q.lanes = (g.out_h - 1) * q.wq + g.out_w
    # the last block of lanes reads up to `lanes` past the last phase plane
    q.channel_stride = round_up(g.stride_h * g.stride_w * q.hq * q.wq + lanes, 16)
    q.col_tile = lanes
    q.n_col_tiles = ceil_div(q.lanes, lanes)
    q.m_block = FCNN_BLOCK_NARROW_OCB if narrow else FCNN_BLOCK_OCB
    q.n_m_blocks = ceil_div(m_group, q.m_block)
    image = g.in_channels * q.channel_stride
    q.images_per_chunk = max(1, min(g.batch, BLOCK_PAD_BYTES // (image * itemsize)))
    p.n_tasks = g.batch * g.groups * q.n_m_blocks * q.n_col_tiles
    p.workspace_shared = tap_offsets_size(g, itemsize) + q.images_per_chunk * image
    p.workspace_per_thread = q.m_block * lanes


cdef index_t blocked_packed_size(const ConvGeom* g, const ConvPlan* cp,
                                 index_t itemsize) noexcept nogil:
    return group_blocks_size(g, cp.blocked.m_block, block_splat(itemsize))


cdef void blocked_pack(const ConvGeom* g, const ConvPlan* cp, const floating* w,
                       floating* packed, int num_threads) noexcept nogil:
    pack_group_blocks(g, w, cp.blocked.m_block, block_splat(sizeof(floating)), packed,
                      num_threads)


cdef inline void _block_kernel(const floating* x, index_t ld_c, const floating* w,
                               const long* toff, index_t ntaps, index_t cin,
                               floating* out, index_t ld_out, int accumulate,
                               bint narrow=False) noexcept nogil:
    if floating is float:
        if narrow:
            fcnn_block_kernel_f32_narrow(x, ld_c, w, toff, ntaps, cin, out, ld_out, accumulate)
        else:
            fcnn_block_kernel_f32(x, ld_c, w, toff, ntaps, cin, out, ld_out, accumulate)
    elif narrow:
        fcnn_block_kernel_f64_narrow(x, ld_c, w, toff, ntaps, cin, out, ld_out, accumulate)
    else:
        fcnn_block_kernel_f64(x, ld_c, w, toff, ntaps, cin, out, ld_out, accumulate)


cdef void _blocked_task(const ConvGeom* g, const BlockedPlan* plan, const floating* xpad,
                        index_t n0, const floating* packed, const long* toff,
                        const floating* bias, floating* y, const floating* res,
                        floating* tile, int activation, index_t task) noexcept nogil:
    """One block of plan.m_block output channels x plan.col_tile lanes of one
    (image, group); the image's padded channels start at xpad (image n0 first)."""
    cdef index_t cin = g.in_channels // g.groups, m_group = g.out_channels // g.groups
    cdef index_t taps = g.kernel_h * g.kernel_w
    cdef index_t lanes = plan.col_tile, wq = plan.wq
    cdef index_t qb = task % plan.n_col_tiles
    cdef index_t ocb = (task // plan.n_col_tiles) % plan.n_m_blocks
    cdef index_t grp = (task // (plan.n_col_tiles * plan.n_m_blocks)) % g.groups
    cdef index_t n = task // (plan.n_col_tiles * plan.n_m_blocks * g.groups)
    cdef index_t q0 = qb * lanes, q1 = min(q0 + lanes, plan.lanes)
    cdef index_t m0 = ocb * plan.m_block
    cdef index_t mcount = min(plan.m_block, m_group - m0)
    cdef index_t o, oc, q, oh, ow, seg
    cdef floating* yrow
    _block_kernel(xpad + ((n - n0) * g.in_channels + grp * cin) * plan.channel_stride + q0,
                  plan.channel_stride,
                  packed + (grp * plan.n_m_blocks + ocb) * plan.m_block * cin * taps
                  * block_splat(sizeof(floating)),
                  toff, taps, cin, tile, lanes, 0, plan.m_block == FCNN_BLOCK_NARROW_OCB)
    for o in range(mcount):
        oc = grp * m_group + m0 + o
        q = q0
        oh = q0 // wq
        ow = q0 - oh * wq
        while q < q1:
            if ow >= g.out_w:                   # lanes past the row's end
                q += wq - ow
                oh += 1
                ow = 0
                continue
            seg = min(g.out_w - ow, q1 - q)
            yrow = y + ((n * g.out_channels + oc) * g.out_h + oh) * g.out_w + ow
            store_bias_residual_activation(tile + o * lanes + (q - q0), yrow, seg,
                                           bias[oc] if bias != NULL else 0, bias != NULL,
                                           res + (yrow - y) if res != NULL else NULL,
                                           activation)
            q += seg
            ow += seg


cdef void blocked_forward(const ConvGeom* g, const ConvPlan* cp, const floating* x,
                          const floating* packed, const floating* bias, floating* y,
                          const floating* res, floating* workspace, int activation,
                          int num_threads) noexcept nogil:
    cdef const BlockedPlan* plan = &cp.blocked
    cdef index_t taps = g.kernel_h * g.kernel_w
    cdef index_t plane = plan.hq * plan.wq
    cdef index_t per_image = cp.n_tasks // g.batch
    cdef index_t kh, kw, rh, rw, n0, n1, task
    cdef long* toff = <long*>workspace
    cdef floating* tile
    workspace += tap_offsets_size(g, sizeof(floating))
    for kh in range(g.kernel_h):
        for kw in range(g.kernel_w):
            rh = kh * g.dilation_h
            rw = kw * g.dilation_w
            toff[kh * g.kernel_w + kw] = (((rh % g.stride_h) * g.stride_w + rw % g.stride_w) * plane
                                          + (rh // g.stride_h) * plan.wq + rw // g.stride_w)
    n0 = 0
    while n0 < g.batch:
        n1 = min(g.batch, n0 + plan.images_per_chunk)
        with parallel(num_threads=num_threads):
            fp_enter()
            tile = workspace + (cp.workspace_shared - tap_offsets_size(g, sizeof(floating))
                                + threadid() * cp.workspace_per_thread)
            for task in prange((n1 - n0) * g.in_channels, schedule='static'):
                pad_channel(g, plan.wq, plan.hq, plan.channel_stride, g.stride_h, g.stride_w,
                            x + (n0 * g.in_channels + task) * g.in_h * g.in_w,
                            workspace + task * plan.channel_stride)
            for task in prange(n0 * per_image, n1 * per_image, schedule='static'):
                _blocked_task(g, plan, workspace, n0, packed, toff, bias, y, res, tile,
                              activation, task)
        n0 = n1

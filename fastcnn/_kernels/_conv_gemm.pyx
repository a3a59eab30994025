"""Convolution by GEMM: 1x1 layers at stride 1 (the input already is the
GEMM operand) and im2col (column tiles gathered per task, then one GEMM per
task), any geometry, 1-, 2- and 3-D.

Tasks are (image, group, column tile, output-channel block); each thread
gathers its own im2col tile into its slice of the workspace (sized to stay
in L2), runs a single-threaded GEMM on it, and applies bias and the fused
activation to the output tile while it is still in cache.
"""
from cython.parallel cimport parallel, prange, threadid
from fastcnn._kernels._omp cimport fp_enter
from fastcnn._kernels._typedefs cimport floating, index_t
from fastcnn._kernels._blas cimport gemm, blas_enter, blas_leave, gemm_tasks, gemm_tiles
from fastcnn._kernels._activation cimport bias_residual_activation
from fastcnn._kernels._im2col cimport im2col_rows
from fastcnn._kernels._conv_types cimport (ConvGeom, ConvPlan, ConvTuning, GemmPlan,
                                           CONV_GEMM_1X1, CONV_IM2COL)
from fastcnn._kernels._conv_common cimport MIN_TASKS, ceil_div, round_up

# GEMM blocking. OpenBLAS multiplies small problems (m * n * k <= 1e6) with a
# kernel that skips packing (where its core has one: ConvTuning.small_gemm), which
# beats its packed path on conv-sized matrices, so every GEMM is issued as blocks of
# at most GEMM_MB output channels x COL_TILE positions x GEMM_KB reduction, which
# keeps each call inside that limit (96 * 64 * 160 < 1e6).
cdef enum:
    COL_TILE = 64
    MAX_COL_TILE = 2048
    GEMM_MB = 96
    GEMM_KB = 160
    SHARED_COL_BYTES = 64 * 1024 * 1024   # limit on columns gathered up front


cdef void gemm_plan(const ConvGeom* g, const ConvTuning* t, index_t itemsize,
                    ConvPlan* p) noexcept nogil:
    """p.algorithm: CONV_GEMM_1X1 or CONV_IM2COL."""
    cdef int algorithm = p.algorithm
    cdef index_t cin_group = g.in_channels // g.groups
    cdef index_t m_group = g.out_channels // g.groups
    cdef index_t k = cin_group * g.kernel_d * g.kernel_h * g.kernel_w
    cdef index_t positions = g.out_d * g.out_h * g.out_w
    cdef index_t units, tile, work, parts
    cdef GemmPlan* q = &p.gemm
    q.split = t.small_gemm
    q.im2col = algorithm == CONV_IM2COL
    if algorithm == CONV_GEMM_1X1 and not t.small_gemm:
        _packed_gemm_1x1_plan(g, p)
        return
    # Tiles a multiple of 16 wide (the GEMM kernel's vector), the last one shorter.
    # With few output channels and a short reduction, widen the tiles so each
    # GEMM call still does about as much work as GEMM_MB x COL_TILE x GEMM_KB:
    # per-call overhead would dominate tiny calls.
    tile = COL_TILE
    work = min(m_group, <index_t>GEMM_MB) * min(k, <index_t>GEMM_KB)
    if work * COL_TILE < GEMM_MB * COL_TILE * GEMM_KB // 2:
        tile = min(<index_t>MAX_COL_TILE, max(<index_t>COL_TILE,
                                              (GEMM_MB * COL_TILE * GEMM_KB) // work // 16 * 16))
    q.n_col_tiles = max(1, ceil_div(positions, tile))
    q.col_tile = max(1, min(positions, round_up(ceil_div(positions, q.n_col_tiles), 16)))
    q.n_col_tiles = max(1, ceil_div(positions, q.col_tile))
    q.m_block = m_group
    q.n_m_blocks = 1
    q.shared_col = False
    p.workspace_shared = 0
    units = g.batch * g.groups * q.n_col_tiles
    if 0 < units < MIN_TASKS and m_group >= 32:
        # Few tiles (batch 1, small maps): split the output channels so every
        # thread has work, and with im2col gather each tile once up front for
        # all the channel blocks rather than once per block.
        q.shared_col = (algorithm == CONV_IM2COL
                        and units * k * q.col_tile * itemsize <= SHARED_COL_BYTES)
        if q.shared_col or algorithm == CONV_GEMM_1X1:
            q.m_block = max(16, round_up(ceil_div(m_group, MIN_TASKS), 16))
    elif algorithm == CONV_GEMM_1X1 and units > 1:
        # Weights larger than half of L2 (late 1x1 layers, over several
        # images or tiles): blocks of output channels whose weights stay in
        # L2 while a thread's consecutive tasks take them over every image
        # and tile, instead of streaming them all in again for each.
        parts = ceil_div(m_group * k * itemsize, t.l2_bytes // 2)
        if parts > 1:
            q.m_block = max(16, round_up(ceil_div(m_group, parts), 16))
    q.n_m_blocks = ceil_div(m_group, q.m_block)
    p.n_tasks = units * q.n_m_blocks
    if algorithm == CONV_IM2COL:
        if q.shared_col:
            p.workspace_shared = units * k * q.col_tile
        else:
            p.workspace_per_thread = k * q.col_tile


cdef void _packed_gemm_1x1_plan(const ConvGeom* g, ConvPlan* p) noexcept nogil:
    """1x1 by GEMM with a BLAS that packs both operands on every call: a few
    large, square tiles per layer (gemm_tiles), each one GEMM call, instead
    of the small blocks a small-matrix kernel wants, which would pack the
    weights again for every 64 positions."""
    cdef index_t m_group = g.out_channels // g.groups
    cdef index_t k = g.in_channels // g.groups
    cdef index_t positions = g.out_d * g.out_h * g.out_w
    cdef index_t units = g.batch * g.groups
    cdef index_t want = ceil_div(gemm_tasks(<double>units * m_group * positions * k), units)
    cdef GemmPlan* q = &p.gemm
    gemm_tiles(m_group, positions, want, &q.m_block, &q.col_tile)
    q.n_col_tiles = ceil_div(positions, q.col_tile)
    q.n_m_blocks = ceil_div(m_group, q.m_block)
    p.n_tasks = units * q.n_col_tiles * q.n_m_blocks
    q.shared_col = False


cdef void vol2col_tile(const ConvGeom* g, const floating* x, index_t p0, index_t ncols,
                       index_t c0, index_t c1, floating* col) noexcept nogil:
    """col[r, t] for r over (channel, kd, kh, kw) of channels c0 .. c1-1 of one
    group and t over the output positions p0 .. p0 + ncols - 1 of one image
    (im2col.h); zero where the window is in padding. x points at the group's
    first channel, col at the first row of channel c0."""
    cdef long size[3]
    cdef long out[3]
    cdef long kernel[3]
    cdef long stride[3]
    cdef long pad[3]
    cdef long dil[3]
    cdef index_t c, kd, kh
    size[0], size[1], size[2] = g.in_d, g.in_h, g.in_w
    out[0], out[1], out[2] = g.out_d, g.out_h, g.out_w
    kernel[0], kernel[1], kernel[2] = g.kernel_d, g.kernel_h, g.kernel_w
    stride[0], stride[1], stride[2] = g.stride_d, g.stride_h, g.stride_w
    pad[0], pad[1], pad[2] = g.pad_d, g.pad_h, g.pad_w
    dil[0], dil[1], dil[2] = g.dilation_d, g.dilation_h, g.dilation_w
    for c in range(c0, c1):
        for kd in range(g.kernel_d):
            for kh in range(g.kernel_h):
                # one image: image_len is never stepped
                im2col_rows(x, 0, c, kd, kh, size, out, kernel, stride, pad, dil, p0, ncols,
                            col, ncols)
                col += g.kernel_w * ncols


cdef inline void _gemm_blocked(index_t m, index_t n, index_t k, const floating* a,
                               const floating* b, index_t ldb, floating* c,
                               index_t ldc, bint split) noexcept nogil:
    """Row-major C[m, n] (ld ldc) = A[m, k] (ld k) @ B[k, n] (ld ldb), issued
    (split) as balanced blocks of at most GEMM_MB x n x GEMM_KB for a
    small-matrix GEMM (see the constants), else as one call to a BLAS that
    packs its operands."""
    cdef index_t n_mb = ceil_div(m, GEMM_MB), n_kb = ceil_div(k, GEMM_KB)
    cdef index_t mb, kb
    cdef index_t i, l, i0, l0
    if not split:                   # a packing GEMM blocks for itself
        n_mb = n_kb = 1
    mb = ceil_div(m, n_mb)
    kb = ceil_div(k, n_kb)
    for i in range(n_mb):
        i0 = i * mb
        for l in range(n_kb):
            l0 = l * kb
            gemm(False, False, <int>min(mb, m - i0), <int>n, <int>min(kb, k - l0),
                 <floating>1, a + i0 * k + l0, <int>k, b + l0 * ldb, <int>ldb,
                 <floating>(0 if l == 0 else 1), c + i0 * ldc, <int>ldc)


cdef inline void _gemm_tile(const ConvGeom* g, const GemmPlan* plan, index_t n,
                            index_t grp, index_t tile, index_t mb, const floating* b_op,
                            index_t ldb, const floating* w, const floating* bias,
                            floating* y, const floating* res, int activation) noexcept nogil:
    """Output channels of block mb of group grp, positions of tile, image n:
    GEMM with the tile's columns b_op, then bias, residual and activation
    while hot."""
    cdef index_t m_group = g.out_channels // g.groups
    cdef index_t k = (g.in_channels // g.groups) * g.kernel_d * g.kernel_h * g.kernel_w
    cdef index_t positions = g.out_d * g.out_h * g.out_w
    cdef index_t p0 = tile * plan.col_tile
    cdef index_t ncols = min(plan.col_tile, positions - p0)
    cdef index_t m0 = grp * m_group + mb * plan.m_block
    cdef index_t mcount = min(plan.m_block, m_group - mb * plan.m_block)
    cdef floating* yt = y + (n * g.out_channels + m0) * positions + p0
    cdef index_t m
    _gemm_blocked(mcount, ncols, k, w + m0 * k, b_op, ldb, yt, positions, plan.split)
    for m in range(mcount):
        bias_residual_activation(yt + m * positions, ncols,
                                 bias[m0 + m] if bias != NULL else 0, bias != NULL,
                                 res + (yt - y) + m * positions if res != NULL else NULL,
                                 activation)


cdef void _gemm_task(const ConvGeom* g, const GemmPlan* plan, const floating* x,
                     const floating* w, const floating* bias, floating* y,
                     const floating* res, floating* col, int activation,
                     index_t task) noexcept nogil:
    """One (group, channel block, image, tile) task. Tiles vary fastest, so a
    thread's consecutive tasks reuse the same block of weights."""
    cdef index_t cin_group = g.in_channels // g.groups
    cdef index_t k = cin_group * g.kernel_d * g.kernel_h * g.kernel_w
    cdef index_t positions = g.out_d * g.out_h * g.out_w
    cdef index_t tile = task % plan.n_col_tiles
    cdef index_t n = (task // plan.n_col_tiles) % g.batch
    cdef index_t mb = (task // (plan.n_col_tiles * g.batch)) % plan.n_m_blocks
    cdef index_t grp = task // (plan.n_col_tiles * g.batch * plan.n_m_blocks)
    cdef index_t p0 = tile * plan.col_tile
    cdef index_t ncols = min(plan.col_tile, positions - p0)
    cdef index_t unit = (n * g.groups + grp) * plan.n_col_tiles + tile
    cdef const floating* xg = x + (n * g.in_channels + grp * cin_group) * (g.in_d * g.in_h * g.in_w)
    if not plan.im2col:                 # gemm_1x1: the input is the operand
        _gemm_tile(g, plan, n, grp, tile, mb, xg + p0, positions, w, bias, y, res, activation)
    elif plan.shared_col:
        _gemm_tile(g, plan, n, grp, tile, mb, col + unit * k * plan.col_tile, ncols,
                   w, bias, y, res, activation)
    else:
        vol2col_tile(g, xg, p0, ncols, 0, cin_group, col)
        _gemm_tile(g, plan, n, grp, tile, mb, col, ncols, w, bias, y, res, activation)


cdef void _gather_columns(const ConvGeom* g, const GemmPlan* plan, const floating* x,
                          floating* col, index_t row_task) noexcept nogil:
    """Shared mode, first phase: the im2col rows of one input channel for every
    tile of one (image, group); tile blocks are K x ncols, one after another."""
    cdef index_t cin_group = g.in_channels // g.groups
    cdef index_t kvol = g.kernel_d * g.kernel_h * g.kernel_w
    cdef index_t k = cin_group * kvol
    cdef index_t positions = g.out_d * g.out_h * g.out_w
    cdef index_t c = row_task % cin_group
    cdef index_t ng = row_task // cin_group           # n * groups + grp
    cdef index_t n = ng // g.groups, grp = ng % g.groups
    cdef const floating* xg = x + (n * g.in_channels + grp * cin_group) * (g.in_d * g.in_h * g.in_w)
    cdef index_t tile, p0, ncols
    cdef floating* block
    for tile in range(plan.n_col_tiles):
        p0 = tile * plan.col_tile
        ncols = min(plan.col_tile, positions - p0)
        block = col + (ng * plan.n_col_tiles + tile) * k * plan.col_tile
        vol2col_tile(g, xg, p0, ncols, c, c + 1, block + c * kvol * ncols)


cdef void gemm_forward(const ConvGeom* g, const ConvPlan* cp, const floating* x,
                       const floating* w, const floating* bias, floating* y,
                       const floating* res, floating* workspace, int activation,
                       int num_threads) noexcept nogil:
    cdef index_t task
    cdef floating* col
    cdef const GemmPlan* plan = &cp.gemm
    blas_enter()
    with parallel(num_threads=num_threads):
        fp_enter()
        col = workspace + cp.workspace_shared + threadid() * cp.workspace_per_thread
        if plan.shared_col:
            col = workspace
            for task in prange(g.batch * g.in_channels, schedule='static'):
                _gather_columns(g, plan, x, col, task)
        for task in prange(cp.n_tasks, schedule='static'):
            _gemm_task(g, plan, x, w, bias, y, res, col, activation, task)
    blas_leave()

"""Blocked direct convolution over output channels (2-D, stride 1 or 2 along
rows): vectors over output channels, a register tile of pixels.

Each image channel is copied once into a zero-padded plane of hq rows of
wq (what the output rows read), unless everything read lies inside the
input: then the kernels read the input's planes as they lie. A kernel call
computes up to P pixels of one output row for m_block output channels (a
row in the fewest calls, of widths differing by at most 1); tap (kh, kw) of
pixel j reads the plane at (oh s_h + kh d_h) wq + (ow0 + j) s_w + kw d_w.
A task runs its rows in passes over chunk_channels input channels at a
time, keeping partial sums in per-thread scratch, so each chunk's weights
are read from memory once and then from L1 for every row.

With a max pool fused (blocked_oc_pool_plan, for a plan's conv_max_pool
step), a task's sums stay in its scratch: it pools them there and writes
only the pooled rows.
"""
from cython.parallel cimport parallel, prange, threadid
from libc.string cimport memset, memcpy
from fastcnn._kernels._omp cimport fp_enter
from fastcnn._kernels._typedefs cimport floating, index_t
from libc.math cimport INFINITY
from fastcnn._kernels._activation cimport (ACT_NONE, ACT_RELU, ACT_RELU6,
                                           bias_residual_activation)
from fastcnn._kernels._transpose cimport transpose_epilogue
from fastcnn._kernels._conv_types cimport (ConvGeom, ConvPlan, ConvTuning, BlockedOcPlan,
                                           MaxPoolWindow, CONV_BLOCKED_OC_UNPACKED)
from fastcnn._kernels._conv_common cimport (MIN_TASKS, BLOCK_PAD_BYTES, ceil_div, round_up,
                                            blocked_applies, pointwise_applies,
                                            tap_offsets_size, pack_block_columns,
                                            group_blocks_size, pack_group_blocks, pad_channel)
from fastcnn._kernels._conv_block cimport (
    FCNN_OC_WIDE_P, FCNN_OC_WIDE_V, FCNN_OC_TALL_P, FCNN_OC_TALL_V, FCNN_OC_VL_F32,
    FCNN_OC_VL_F64, fcnn_oc_pool_row_f32, fcnn_oc_pool_row_f64, fcnn_oc_kernel_f32,
    fcnn_oc_kernel_f64)

cdef enum:
    # Below this many tasks per thread, an uneven share of whole tasks costs
    # more than reading one channel block's weights on two threads
    # (_rows_shared).
    SHARED_ROWS_TASKS = 8

cdef extern from *:
    void __builtin_prefetch(const void* addr, int rw, int locality) nogil


cdef bint blocked_oc_applies(const ConvGeom* g) noexcept nogil:
    return blocked_applies(g) and g.stride_w <= 2


cdef inline index_t _oc_lanes(index_t itemsize) noexcept nogil:
    return FCNN_OC_VL_F32 if itemsize == 4 else FCNN_OC_VL_F64


cdef inline index_t _oc_pix(bint tall) noexcept nogil:
    return FCNN_OC_TALL_P if tall else FCNN_OC_WIDE_P


cdef inline index_t _oc_vectors(bint tall) noexcept nogil:
    return FCNN_OC_TALL_V if tall else FCNN_OC_WIDE_V


cdef enum:
    # Independent accumulators a register tile needs to keep the multiply-add
    # pipes busy (their latency x their count, and slack for the loads): a
    # tile with fewer takes as long as one with this many. Both targets' full
    # tiles hold at least this many. On a stride-2 layer of 32-pixel rows
    # (AVX-512) the 4-pixel x 2-vector tile (8 accumulators) ran at 0.66x the
    # rate per multiply-add of the 28-accumulator tile, as 8 / 12 predicts.
    OC_MIN_ACCUMULATORS = 12


cdef inline index_t _oc_cost(index_t out_w, index_t m_group, index_t vl, bint tall) noexcept nogil:
    """Multiply-add slots per (input channel, tap) that a row of out_w pixels
    takes with the tall or the wide tile over every channel block: the row
    split into as few tiles as hold it, of widths differing by at most 1
    (_oc_tile), each costing at least OC_MIN_ACCUMULATORS."""
    cdef index_t v = _oc_vectors(tall), n = ceil_div(out_w, _oc_pix(tall))
    cdef index_t narrow = out_w // n, wider = out_w % n, least = OC_MIN_ACCUMULATORS
    return ceil_div(m_group, v * vl) * (wider * max((narrow + 1) * v, least)
                                        + (n - wider) * max(narrow * v, least))


cdef inline bint _oc_tall(index_t out_w, index_t m_group, index_t vl) noexcept nogil:
    """Whether the tall tile costs less than the wide one (ties go wide).
    MobileNetV2's 320 -> 1280 at 7x7 (AVX-512): 7 pixels x 2 vectors over 40
    blocks, against 7 x 3 over 27 (the padded count's choice), ran 0.90x the
    time on 1 thread, 0.93x on 2."""
    return _oc_cost(out_w, m_group, vl, True) < _oc_cost(out_w, m_group, vl, False)


cdef inline index_t _oc_row_cost(index_t out_w, index_t m_group, index_t vl) noexcept nogil:
    return _oc_cost(out_w, m_group, vl, _oc_tall(out_w, m_group, vl))


cdef inline index_t _oc_tile(index_t out_w, index_t n_tiles, index_t r) noexcept nogil:
    """The first pixel of tile r of a row of out_w pixels in n_tiles tiles
    of widths differing by at most 1 (tile r ends where r + 1 starts): no
    narrow last tile short of accumulators (32 pixels in 14-pixel tiles:
    11 + 11 + 10, not 14 + 14 + 4)."""
    return r * out_w // n_tiles


cdef bint _oc_flattens(const ConvGeom* g, const ConvTuning* t, index_t itemsize) noexcept nogil:
    """Whether a layer runs as one row: a 1x1 layer at stride 1 without
    padding reads each plane as it lies, so it runs as one row of
    out_h * out_w pixels where that costs the register tiles less (_oc_cost;
    a 7x7 plane with 8-lane vectors: 49 pixels in 13 tiles of 3-4, not 7
    rows of 2 tiles; MobileNetV2's 320 -> 1280 at 7x7 on Zen 4, avx2: 0.468
    -> 0.410 ms), as long as the row's partial sums fit their budget and the
    channel blocks alone give every thread tasks."""
    cdef index_t vl = _oc_lanes(itemsize), m_group = g.out_channels // g.groups
    cdef index_t flat = g.out_h * g.out_w
    cdef bint tall = _oc_tall(flat, m_group, vl)
    if not pointwise_applies(g) or not blocked_applies(g) or g.out_h == 1:
        return False
    if _oc_row_cost(flat, m_group, vl) >= g.out_h * _oc_row_cost(g.out_w, m_group, vl):
        return False
    return (round_up(flat, _oc_pix(tall)) * _oc_vectors(tall) * vl * itemsize
            <= t.oc_partial_bytes
            and g.batch * g.groups * ceil_div(m_group, _oc_vectors(tall) * vl) >= MIN_TASKS)


cdef inline ConvGeom _oc_geometry(const ConvGeom* g, const BlockedOcPlan* plan) noexcept nogil:
    """The geometry blocked_oc runs: the layer's, or its planes as one row
    (plan.flat, see _oc_flattens)."""
    cdef ConvGeom f = g[0]
    if plan.flat:
        f.in_h = f.out_h = 1
        f.in_w = f.out_w = g.out_h * g.out_w
    return f


cdef void blocked_oc_plan(const ConvGeom* layer, const ConvTuning* t, index_t itemsize,
                          ConvPlan* p) noexcept nogil:
    """p.algorithm: CONV_BLOCKED_OC, or CONV_BLOCKED_OC_UNPACKED (each thread
    packs the channel block it computes into its scratch)."""
    cdef ConvGeom flat
    cdef const ConvGeom* g = &flat
    cdef BlockedOcPlan* q = &p.blocked_oc
    q.flat = _oc_flattens(layer, t, itemsize)
    flat = _oc_geometry(layer, q)
    cdef index_t vl = _oc_lanes(itemsize)
    cdef index_t m_group = g.out_channels // g.groups
    cdef index_t taps = g.kernel_h * g.kernel_w
    cdef index_t pix, rows_budget, units, image
    q.tall = _oc_tall(g.out_w, m_group, vl)
    pix = _oc_pix(q.tall)
    q.m_block = _oc_vectors(q.tall) * vl
    q.n_m_blocks = ceil_div(m_group, q.m_block)
    q.n_col_tiles = ceil_div(g.out_w, pix)
    q.wq = (g.out_w - 1) * g.stride_w + (g.kernel_w - 1) * g.dilation_w + 1
    q.hq = (g.out_h - 1) * g.stride_h + (g.kernel_h - 1) * g.dilation_h + 1
    # Where the rows and columns read lie inside the input (no padding on
    # any side: a geometry may pad only past the end, as a transposed
    # convolution's phases do), the kernels read the input's planes as they
    # lie: no copy, and no pass over the input before the tasks start
    # (MobileNetV2's 320 -> 1280 1x1 at 7x7, batch 1: 0.88x the time on 1
    # thread, 0.79x on 2; ResNet-18's strided 1x1 layers 0.81x and 0.75x).
    q.unpadded = (g.pad_h == 0 and g.pad_w == 0 and q.hq <= g.in_h and q.wq <= g.in_w)
    if q.unpadded:
        q.wq, q.hq, q.channel_stride = g.in_w, g.in_h, g.in_h * g.in_w
    else:
        q.channel_stride = round_up(q.hq * q.wq, 16)
    # as few passes as keep a chunk's weights within their budget, of even
    # sizes: 32 channels in two passes of 16, not 28 and then 4 (the short
    # pass reloads and stores every partial sum for little work)
    q.chunk_channels = max(1, min(g.in_channels // g.groups,
                                  t.oc_weight_bytes // (taps * q.m_block * itemsize)))
    q.chunk_channels = ceil_div(g.in_channels // g.groups,
                                ceil_div(g.in_channels // g.groups, q.chunk_channels))
    rows_budget = max(1, t.oc_partial_bytes // (q.n_col_tiles * pix * q.m_block * itemsize))
    q.row_blocks = ceil_div(g.out_h, min(g.out_h, rows_budget))
    units = g.batch * g.groups * q.n_m_blocks
    if units * q.row_blocks < MIN_TASKS:
        q.row_blocks = min(g.out_h, ceil_div(MIN_TASKS, units))
    q.rows_per_task = ceil_div(g.out_h, q.row_blocks)
    q.row_blocks = ceil_div(g.out_h, q.rows_per_task)
    image = g.in_channels * q.channel_stride
    # images padded at a time; read as they lie, all of them at once
    q.images_per_chunk = max(1, g.batch if q.unpadded
                             else min(g.batch, BLOCK_PAD_BYTES // (image * itemsize)))
    p.n_tasks = units * q.row_blocks
    # Taken image by image, each thread reads every block's weights for each of
    # its images, and the images it padded itself; block by block, each reads
    # its blocks' weights once (from L2 image after image) but every padded
    # image, half of them padded on the other core. The first wins when the
    # weights are the smaller (512 -> 512 at 7x7, batch 8, 2 threads: 5.0 ->
    # 4.6 ms; 64 -> 128 / 2 at 56x56: 2.0 -> 2.3 ms the other way).
    q.block_major = (g.out_channels * g.in_channels // g.groups * taps
                     > g.groups * q.n_m_blocks * image)
    p.workspace_shared = tap_offsets_size(g, itemsize) + (
        0 if q.unpadded else q.images_per_chunk * image)
    p.workspace_per_thread = q.rows_per_task * g.out_w * q.m_block
    if p.algorithm == CONV_BLOCKED_OC_UNPACKED:
        # after the partial sums: the packed block (16-element aligned),
        # and its key (block index + 1; 0: none yet) in the 16 before it
        q.pack_offset = round_up(p.workspace_per_thread, 16) + 16
        p.workspace_per_thread = q.pack_offset + (g.in_channels // g.groups) * taps * q.m_block


cdef index_t blocked_oc_packed_size(const ConvGeom* g, const ConvPlan* cp,
                                    index_t itemsize) noexcept nogil:
    """Prepacked (CONV_BLOCKED_OC) weights; the unpacked variant packs none."""
    if cp.algorithm == CONV_BLOCKED_OC_UNPACKED:
        return 0
    return group_blocks_size(g, cp.blocked_oc.m_block, 1)


cdef void blocked_oc_pack(const ConvGeom* g, const ConvPlan* cp, const floating* w,
                          floating* packed, int num_threads) noexcept nogil:
    pack_group_blocks(g, w, cp.blocked_oc.m_block, 1, packed, num_threads)


cdef inline void _oc_kernel(const ConvGeom* g, const BlockedOcPlan* plan, index_t p,
                            const floating* x, const floating* w, const long* toff,
                            index_t ntaps, index_t cin, floating* acc, int accumulate,
                            const floating* prefetch, long pf) noexcept nogil:
    """The register tile of the plan's shape and p pixels (the row's last tile
    may be narrower) over cin input channels."""
    if floating is float:
        fcnn_oc_kernel_f32(plan.tall, g.stride_w, p)(x, plan.channel_stride, w, toff, ntaps, cin,
                                                     acc, accumulate, prefetch, pf)
    else:
        fcnn_oc_kernel_f64(plan.tall, g.stride_w, p)(x, plan.channel_stride, w, toff, ntaps, cin,
                                                     acc, accumulate, prefetch, pf)


cdef inline void _prefetch_rows(const floating* w, index_t ld, index_t i0, index_t i1,
                                index_t nbytes) noexcept nogil:
    """Fetch nbytes of rows i0 ... i1 - 1 of w (ld elements apart) towards L2."""
    cdef index_t i, l
    for i in range(i0, i1):
        l = 0
        while l < nbytes:
            __builtin_prefetch(<const char*>(w + i * ld) + l, 0, 2)
            l += 64


cdef inline index_t _task_block(const ConvGeom* g, const BlockedOcPlan* plan, index_t task,
                                index_t row_blocks, index_t* n, index_t* grp,
                                index_t* ocb) noexcept nogil:
    """Task `task` of (image, group, channel block, row block), row_blocks a
    block: its image, group and channel block; returns its row block."""
    ocb[0] = (task // row_blocks) % plan.n_m_blocks
    grp[0] = (task // (row_blocks * plan.n_m_blocks)) % g.groups
    n[0] = task // (row_blocks * plan.n_m_blocks * g.groups)
    return task % row_blocks


cdef void _oc_accumulate(const ConvGeom* g, const BlockedOcPlan* plan, const floating* xpad,
                         index_t n0, const floating* packed, const long* toff, floating* acc,
                         index_t n, index_t grp, index_t ocb, index_t oh0,
                         index_t oh1) noexcept nogil:
    """acc = rows oh0 .. oh1 - 1 of channel block ocb of (image n, group grp),
    without bias: pixels x channels, out_w pixels of m_block channels a row,
    row after row."""
    cdef index_t cin = g.in_channels // g.groups, m_group = g.out_channels // g.groups
    cdef index_t taps = g.kernel_h * g.kernel_w
    cdef index_t runs = plan.n_col_tiles, mb = plan.m_block
    cdef index_t m0 = ocb * mb, mcount = min(mb, m_group - m0)
    cdef index_t c0, kc, oh, r, p0, p1
    cdef const floating* xg = xpad + ((n - n0) * g.in_channels + grp * cin) * plan.channel_stride
    cdef const floating* wb
    cdef const floating* raw = NULL
    cdef index_t held, key = grp * plan.n_m_blocks + ocb + 1, q, next_bytes
    cdef index_t calls = (oh1 - oh0) * runs, chunk_bytes, share, step
    # Unpacked weights: the thread packs its block chunk by chunk into its
    # scratch (unless the scratch holds that block already, as the key before
    # it says), and while a chunk computes it fetches the next chunk's rows:
    # short strided runs that the hardware prefetcher would not see coming.
    if plan.pack_offset > 0:                 # blocked_oc_unpacked
        wb = acc + plan.pack_offset
        memcpy(&held, wb - 16, sizeof(index_t))
        if held != key:
            raw = packed + (grp * m_group + m0) * cin * taps
    else:
        wb = packed + (grp * plan.n_m_blocks + ocb) * cin * taps * mb
    c0 = 0
    while c0 < cin:
        kc = min(plan.chunk_channels, cin - c0)
        if raw != NULL:
            pack_block_columns(raw, cin * taps, mcount, mb, c0 * taps, (c0 + kc) * taps,
                               <floating*>wb)
            next_bytes = min(plan.chunk_channels, cin - c0 - kc) * taps * sizeof(floating)
        # Each of the chunk's calls fetches a share of the next chunk's packed
        # weights (past the last chunk: the next channel block's first, this
        # thread's next task), step bytes per input channel it runs: one
        # prefetch per channel, so under a line a step several channels name
        # the same line. Spread over every call, the fetches never outrun what
        # the core has in flight: a 1x1 layer's few long calls had fetched the
        # chunk in its first two calls, and the next chunk then still waited
        # on memory (MobileNetV2's 320 -> 1280 at 7x7 with its weights cold).
        chunk_bytes = min(plan.chunk_channels, cin if c0 + kc == cin else cin - c0 - kc) \
            * taps * mb * sizeof(floating)
        share = round_up(ceil_div(chunk_bytes, calls), 64)
        step = ceil_div(share, kc)
        for oh in range(oh0, oh1):
            for r in range(runs):
                q = (oh - oh0) * runs + r
                if raw != NULL:     # a share of the next chunk's rows per call
                    _prefetch_rows(raw + (c0 + kc) * taps, cin * taps, q * mcount // calls,
                                   (q + 1) * mcount // calls, next_bytes)
                p0 = _oc_tile(g.out_w, runs, r)
                p1 = _oc_tile(g.out_w, runs, r + 1)
                _oc_kernel(g, plan, p1 - p0, xg + c0 * plan.channel_stride
                           + oh * g.stride_h * plan.wq + p0 * g.stride_w,
                           wb + c0 * taps * mb, toff, taps, kc,
                           acc + ((oh - oh0) * g.out_w + p0) * mb, c0 > 0,
                           <const floating*>(<const char*>(wb + (c0 + kc) * taps * mb)
                                             + q * share), step)
        c0 += kc
    if raw != NULL:
        memcpy(<floating*>wb - 16, &key, sizeof(index_t))


cdef void _blocked_oc_task(const ConvGeom* g, const BlockedOcPlan* plan, const floating* xpad,
                           index_t n0, const floating* packed, const long* toff,
                           const floating* bias, floating* y, const floating* res,
                           floating* acc, int activation, index_t task, index_t r0,
                           index_t r1) noexcept nogil:
    """Rows r0 .. r1 - 1 of the task's rows (rb * rows_per_task ...) of one
    channel block of one (image, group)."""
    cdef index_t m_group = g.out_channels // g.groups, mb = plan.m_block
    cdef index_t n, grp, ocb
    cdef index_t rb = _task_block(g, plan, task, plan.row_blocks, &n, &grp, &ocb)
    cdef index_t oh0 = rb * plan.rows_per_task + r0
    cdef index_t oh1 = min(g.out_h, rb * plan.rows_per_task + r1)
    cdef index_t m0 = ocb * mb, mcount = min(mb, m_group - m0)
    cdef index_t o, oc
    cdef floating* part
    cdef floating* yrow
    cdef bint fused, clamp
    cdef const floating* bias_b
    cdef floating hi
    _oc_accumulate(g, plan, xpad, n0, packed, toff, acc, n, grp, ocb, oh0, oh1)
    # acc holds pixels x channels; the output wants channels x pixels. The
    # rows are contiguous in both (acc holds out_w pixels a row), so one
    # transpose takes them all and its vectors run across row ends: rows
    # shorter than a vector (14 pixels, AVX2's 8 lanes) are not left to its
    # element-by-element edge. Bias and a ReLU or ReLU6 are applied as it
    # stores (one pass over the output). A residual is added after it, channel
    # row by channel row: read inside the transpose it would be one more
    # stream for each of the channel rows the tile writes, and that measured
    # slower on large planes.
    yrow = y + ((n * g.out_channels + grp * m_group + m0) * g.out_h + oh0) * g.out_w
    fused = res == NULL and (activation == ACT_NONE or activation == ACT_RELU
                             or activation == ACT_RELU6)
    bias_b = bias + grp * m_group + m0 if bias != NULL and fused else NULL
    clamp = fused and activation != ACT_NONE
    hi = 6 if activation == ACT_RELU6 else INFINITY
    transpose_epilogue(acc, mb, (oh1 - oh0) * g.out_w, mcount, yrow, g.out_h * g.out_w,
                       bias_b, clamp, hi)
    if fused:
        return
    for o in range(mcount):
        oc = grp * m_group + m0 + o
        part = yrow + o * g.out_h * g.out_w
        bias_residual_activation(part, (oh1 - oh0) * g.out_w, bias[oc] if bias != NULL else 0,
                                 bias != NULL, res + (part - y) if res != NULL else NULL,
                                 activation)


cdef bint blocked_oc_pool_applies(const ConvGeom* g, const ConvTuning* t, index_t itemsize,
                                  const MaxPoolWindow* pool) noexcept nogil:
    """Whether blocked_oc can pool its output: a 2-D layer whose rows it
    computes as rows (not flattened), and a window that fits its output
    (its sizes those the window gives: _conv's _pool_window)."""
    return (blocked_oc_applies(g) and g.out_d == 1 and not _oc_flattens(g, t, itemsize)
            and pool.kernel_h >= 1 and pool.kernel_w >= 1
            and pool.stride_h >= 1 and pool.stride_w >= 1
            and 0 <= 2 * pool.pad_h <= pool.kernel_h and 0 <= 2 * pool.pad_w <= pool.kernel_w
            and pool.out_h >= 1 and pool.out_w >= 1)


cdef void blocked_oc_pool_plan(const ConvGeom* g, const ConvTuning* t, index_t itemsize,
                               const MaxPoolWindow* pool, ConvPlan* p) noexcept nogil:
    """p (blocked_oc_plan's, packed weights) made to pool: a task is a run of
    pooled rows of one channel block, and computes the convolution rows
    their windows cover (the rows a window shares with the next task's are
    computed by both) into its scratch, pools them there and writes only the
    pooled rows. Runs are as long as keeps those partial sums within a
    quarter of L2, and as short as gives MIN_TASKS tasks."""
    cdef BlockedOcPlan* q = &p.blocked_oc
    cdef index_t units = g.batch * g.groups * q.n_m_blocks
    cdef index_t row_elems = g.out_w * q.m_block
    cdef index_t rows_budget = max(pool.kernel_h, t.l2_bytes // 4 // (row_elems * itemsize))
    cdef index_t per_task = max(1, (rows_budget - pool.kernel_h) // pool.stride_h + 1)
    cdef index_t blocks = max(ceil_div(pool.out_h, per_task),
                              min(pool.out_h, ceil_div(MIN_TASKS, max(1, units))))
    cdef index_t conv_rows
    q.pool_rows_per_task = ceil_div(pool.out_h, blocks)
    q.pool_row_blocks = ceil_div(pool.out_h, q.pool_rows_per_task)
    conv_rows = min(g.out_h, (q.pool_rows_per_task - 1) * pool.stride_h + pool.kernel_h)
    q.pool_tile_offset = round_up(conv_rows * row_elems, 16)
    p.workspace_per_thread = (q.pool_tile_offset
                              + q.pool_rows_per_task * pool.out_w * q.m_block)
    p.n_tasks = units * q.pool_row_blocks


cdef void _blocked_oc_pool_task(const ConvGeom* g, const BlockedOcPlan* plan,
                                const MaxPoolWindow* pool, const floating* xpad, index_t n0,
                                const floating* packed, const long* toff,
                                const floating* bias, floating* y, floating* acc,
                                int activation, index_t task) noexcept nogil:
    """Pooled rows of one channel block (see blocked_oc_pool_plan). The
    windows are taken over the raw sums; bias and clamp follow, as they
    keep order (a max of x + b is the max of x, plus b; a clamp likewise).
    NaN wins, as in max_pool2d."""
    cdef index_t m_group = g.out_channels // g.groups
    cdef index_t mb = plan.m_block
    cdef index_t n, grp, ocb
    cdef index_t pr0 = _task_block(g, plan, task, plan.pool_row_blocks, &n, &grp, &ocb) \
        * plan.pool_rows_per_task
    cdef index_t pr1 = min(pool.out_h, pr0 + plan.pool_rows_per_task)
    cdef index_t cr0 = max(0, pr0 * pool.stride_h - pool.pad_h)
    cdef index_t cr1 = min(g.out_h, (pr1 - 1) * pool.stride_h - pool.pad_h + pool.kernel_h)
    cdef index_t m0 = ocb * mb, mcount = min(mb, m_group - m0)
    cdef index_t pr, h0, h1
    cdef floating* tile = acc + plan.pool_tile_offset
    cdef const floating* bias_b = bias + grp * m_group + m0 if bias != NULL else NULL
    _oc_accumulate(g, plan, xpad, n0, packed, toff, acc, n, grp, ocb, cr0, cr1)
    for pr in range(pr0, pr1):
        h0 = max(0, pr * pool.stride_h - pool.pad_h)
        h1 = min(g.out_h, pr * pool.stride_h - pool.pad_h + pool.kernel_h)
        if floating is float:
            fcnn_oc_pool_row_f32(acc, g.out_w, mb, h0 - cr0, h1 - cr0, pool.kernel_w,
                                 pool.stride_w, pool.pad_w, g.out_w, pool.out_w,
                                 tile + (pr - pr0) * pool.out_w * mb)
        else:
            fcnn_oc_pool_row_f64(acc, g.out_w, mb, h0 - cr0, h1 - cr0, pool.kernel_w,
                                 pool.stride_w, pool.pad_w, g.out_w, pool.out_w,
                                 tile + (pr - pr0) * pool.out_w * mb)
    transpose_epilogue(tile, mb, (pr1 - pr0) * pool.out_w, mcount,
                       y + ((n * g.out_channels + grp * m_group + m0) * pool.out_h + pr0)
                       * pool.out_w, pool.out_h * pool.out_w, bias_b,
                       activation != ACT_NONE, 6 if activation == ACT_RELU6 else INFINITY)


cdef inline index_t _oc_task(const ConvGeom* g, const BlockedOcPlan* plan, index_t n0, index_t n1,
                             index_t i) noexcept nogil:
    """The i-th task of images n0 .. n1 - 1, image by image or (the plan's
    choice) channel block by channel block."""
    if not plan.block_major:
        return n0 * g.groups * plan.n_m_blocks * plan.row_blocks + i
    cdef index_t per_block = (n1 - n0) * plan.row_blocks
    cdef index_t n = n0 + i % per_block // plan.row_blocks
    return (n * g.groups * plan.n_m_blocks + i // per_block) * plan.row_blocks + i % plan.row_blocks


cdef inline bint _rows_shared(const ConvGeom* g, const BlockedOcPlan* plan, index_t tasks,
                              int num_threads) noexcept nogil:
    """Whether the threads split the tasks' rows evenly between them (see
    _blocked_oc_part) rather than take whole tasks: where whole tasks leave
    the threads unevenly loaded, few as they are and each all of a channel
    block's rows. ResNet-18's 512-channel layers at 7x7 have 11 blocks of 48
    channels: 6 against 5 on 2 threads, where rows give 38.5 each (in the
    compiled network, AVX-512, 2 threads: 0.67-0.69 -> 0.58-0.63 ms a layer)."""
    return (num_threads > 1 and tasks % num_threads != 0
            and tasks < SHARED_ROWS_TASKS * num_threads
            and plan.row_blocks == 1 and g.out_h > 1)


cdef void _blocked_oc_part(const ConvGeom* g, const BlockedOcPlan* plan, const floating* xpad,
                           index_t n0, index_t n1, const floating* packed, const long* toff,
                           const floating* bias, floating* y, const floating* res,
                           floating* acc, int activation, index_t part,
                           index_t parts) noexcept nogil:
    """Part `part` of `parts` of the tasks of images n0 .. n1 - 1, each task
    all out_h rows of one channel block: the tasks' rows counted in order,
    one contiguous run of them per part, so a task the run cuts has its
    rows computed by two threads (each reading that block's weights).
    Every output is the same sum as in a whole task."""
    cdef index_t units = (n1 - n0) * g.groups * plan.n_m_blocks * g.out_h
    cdef index_t u = part * units // parts, u1 = (part + 1) * units // parts, r0, r1
    while u < u1:
        r0 = u % g.out_h
        r1 = min(g.out_h, r0 + u1 - u)
        _blocked_oc_task(g, plan, xpad, n0, packed, toff, bias, y, res, acc, activation,
                         _oc_task(g, plan, n0, n1, u // g.out_h), r0, r1)
        u += r1 - r0


cdef void blocked_oc_forward(const ConvGeom* layer, const ConvPlan* cp, const floating* x,
                             const floating* packed, const floating* bias, floating* y,
                             const floating* res, floating* workspace, int activation,
                             int num_threads) noexcept nogil:
    _oc_run(layer, cp, NULL, x, packed, bias, y, res, workspace, activation, num_threads)


cdef void blocked_oc_pool_forward(const ConvGeom* layer, const ConvPlan* cp,
                                  const MaxPoolWindow* pool, const floating* x,
                                  const floating* packed, const floating* bias, floating* y,
                                  floating* workspace, int activation,
                                  int num_threads) noexcept nogil:
    """y = max_pool(act(conv(x) + bias)) with the plan of blocked_oc_pool_plan;
    activation: none, ReLU or ReLU6."""
    _oc_run(layer, cp, pool, x, packed, bias, y, NULL, workspace, activation, num_threads)


cdef void _oc_run(const ConvGeom* layer, const ConvPlan* cp, const MaxPoolWindow* pool,
                  const floating* x, const floating* packed, const floating* bias, floating* y,
                  const floating* res, floating* workspace, int activation,
                  int num_threads) noexcept nogil:
    cdef const BlockedOcPlan* plan = &cp.blocked_oc
    cdef ConvGeom flat = _oc_geometry(layer, plan)
    cdef const ConvGeom* g = &flat
    cdef index_t taps = g.kernel_h * g.kernel_w
    cdef index_t per_image = cp.n_tasks // g.batch
    cdef index_t kh, kw, n0, n1, task, part
    cdef long* toff = <long*>workspace
    cdef floating* acc
    cdef floating* scratch
    cdef const floating* planes
    workspace += tap_offsets_size(g, sizeof(floating))
    for kh in range(g.kernel_h):
        for kw in range(g.kernel_w):
            toff[kh * g.kernel_w + kw] = kh * g.dilation_h * plan.wq + kw * g.dilation_w
    scratch = workspace + cp.workspace_shared - tap_offsets_size(g, sizeof(floating))
    if cp.algorithm == CONV_BLOCKED_OC_UNPACKED:      # no thread holds a packed block yet
        for task in range(num_threads):
            memset(scratch + task * cp.workspace_per_thread + plan.pack_offset - 16, 0,
                   sizeof(index_t))
    n0 = 0
    while n0 < g.batch:
        n1 = min(g.batch, n0 + plan.images_per_chunk)
        # the planes the kernels read: the input's own, or the chunk's padded copies
        planes = x + n0 * g.in_channels * plan.channel_stride if plan.unpadded else workspace
        with parallel(num_threads=num_threads):
            fp_enter()
            acc = scratch + threadid() * cp.workspace_per_thread
            if not plan.unpadded:
                for task in prange((n1 - n0) * g.in_channels, schedule='static'):
                    pad_channel(g, plan.wq, plan.hq, plan.channel_stride, 1, 1,
                                x + (n0 * g.in_channels + task) * g.in_h * g.in_w,
                                workspace + task * plan.channel_stride)
            if pool != NULL:
                for task in prange((n1 - n0) * per_image, schedule='static'):
                    _blocked_oc_pool_task(g, plan, pool, planes, n0, packed, toff, bias, y,
                                          acc, activation, n0 * per_image + task)
            elif _rows_shared(g, plan, (n1 - n0) * per_image, num_threads):
                for part in prange(num_threads, schedule='static'):
                    _blocked_oc_part(g, plan, planes, n0, n1, packed, toff, bias, y, res,
                                     acc, activation, part, num_threads)
            else:
                for task in prange((n1 - n0) * per_image, schedule='static'):
                    _blocked_oc_task(g, plan, planes, n0, packed, toff, bias, y, res, acc,
                                     activation, _oc_task(g, plan, n0, n1, task), 0,
                                     plan.rows_per_task)
        n0 = n1

"""Winograd F(4x4, 3x3) and F(4x4, 2x2) convolution (2-D, stride 1, one group).

Y = A^T [(G g G^T) . (B^T d B)] A per a x a input tile d and 4x4 output tile,
a = 6 for 3x3 kernels (Lavin and Gray, points 0, +-1, +-2, inf) and a = 5
for 2x2 ones (points 0, +-1, 2, inf: 25 products for 64 multiplies; the
phases of a 3x3 stride-2 transposed convolution, merged, are one such
convolution). The weights are packed once as
U[xi][out block][in][FCNN_BLOCK_OCB][splat] (xi = a^2 transform points; the output
channels padded to whole blocks). A task takes a block of tile rows of one
image: transform its tiles into V[xi][in][tile], run a^2 products
M[xi] = U[xi] @ V[xi] with the register-blocked kernel (conv_block.h: V is
read as it lies and U is already in the kernel's order, so nothing is
repacked per call, as a BLAS GEMM would), and transform M back into output
rows, adding bias and the activation before they are written. Transforms
run across tiles so the compiler vectorises them: the input transform over
all of the block's tiles at once (see wino_input), the output transform
along tile rows. Rows of V and M are padded to whole vectors (_wino_ld),
the padding of V zeroed.
"""
from cython.parallel cimport parallel, prange, threadid
from libc.string cimport memcpy
from fastcnn._kernels._omp cimport fp_enter
from fastcnn._kernels._typedefs cimport floating, index_t
from fastcnn._kernels._activation cimport bias_residual_activation
from fastcnn._kernels._block_gemm cimport FCNN_BLOCK_OCB, block_gemm, block_splat, block_vector
from fastcnn._kernels._winograd cimport wino_at, wino_input, wino_input_scratch, wino_gt
from fastcnn._kernels._conv_types cimport (ConvGeom, ConvPlan, ConvTuning, WinogradPlan)
from fastcnn._kernels._conv_common cimport MIN_TASKS, ceil_div, round_up, splat_in_place

cdef enum:
    # Tasks a Winograd layer is cut into at least (blocks of tile rows of one
    # image at batch 1): every task reads all the transformed weights again
    # and multiplies them over its tiles only, so fewer, larger tasks run
    # faster; four keep 1, 2 and 4 threads evenly busy. ResNet-18's 64-channel
    # 3x3 layer at 56x56, batch 1, compiled, 8 -> 4 tasks, both in one process
    # (two runs each, Xeon): AVX-512 1.58-1.61 -> 1.33-1.41 ms on 1 thread,
    # 0.80-0.81 -> 0.71-0.72 on 2; AVX2 1.74-1.79 -> 1.56-1.61, 0.88-0.91 -> 0.72-0.77.
    WINO_MIN_TASKS = 4
    # At most this many tiles in all (batch-1 late layers): transform them once
    # into a shared V and give each task a block of output channels, so the
    # transformed weights are read once rather than once per task.
    WINO_SHARED_TILES = 64
    # Or, on more tiles, where the tasks of tile rows would read U (36 x the
    # filters) more than WINO_SHARED_READS x the transformed input V that the
    # channel blocks read instead (out_channels x tasks against that many x
    # tiles), while V stays within WINO_SHARED_L2S x L2. ResNet-18's 256-channel
    # layers at 14x14, batch 8: 8 tasks, each reading all 9.4 MB of U from
    # memory in a compiled network (13.8 ms against 9.4 with U in cache).
    WINO_SHARED_READS = 5
    WINO_SHARED_L2S = 8


cdef bint winograd_applies(const ConvGeom* g) noexcept nogil:
    return (g.groups == 1 and g.kernel_d == 1 and g.kernel_h == g.kernel_w
            and (g.kernel_h == 3 or g.kernel_h == 2)
            and g.stride_h == 1 and g.stride_w == 1 and g.stride_d == 1
            and g.dilation_h == 1 and g.dilation_w == 1
            and g.in_d == 1 and g.out_d == 1 and g.pad_d == 0)


cdef inline index_t _wino_points(const ConvGeom* g) noexcept nogil:
    """Transform points per tile: a^2, a = 4 + kernel - 1."""
    return (g.kernel_h + 3) * (g.kernel_h + 3)


cdef inline index_t _wino_scratch(const ConvGeom* g, index_t tiles_w, index_t rows,
                                  index_t tiles) noexcept nogil:
    # half transforms (a^2 rows of `tiles` elements, the block's tiles), the
    # input transform's scratch for `rows` tile rows, and one output row
    return (_wino_points(g) * tiles + wino_input_scratch(g.kernel_h + 3, rows, tiles_w)
            + 4 * tiles_w)


cdef inline index_t _wino_ld(index_t tiles, index_t itemsize) noexcept nogil:
    """Elements per row of V and M: the tiles in whole vectors (the kernel
    reads and writes whole vectors)."""
    return round_up(tiles, block_vector(itemsize))


cdef inline void _wino_products(index_t points, const floating* u, index_t u_rows,
                                const floating* v, floating* mo, index_t m_rows, index_t rows,
                                index_t cin, index_t tiles, index_t ld) noexcept nogil:
    """M[xi][m][t] = sum_c U[xi][m][c] V[xi][c][t] for the first `rows`
    output channels (whole blocks), each xi in turn; U and M hold u_rows and
    m_rows channels per xi, V cin, rows ld elements apart."""
    cdef index_t xi, b
    cdef const floating* ux
    for xi in range(points):
        for b in range(rows // FCNN_BLOCK_OCB):
            ux = u + (xi * u_rows + b * FCNN_BLOCK_OCB) * cin * block_splat(sizeof(floating))
            block_gemm(v + xi * cin * ld, ld, ux, cin, mo + (xi * m_rows + b * FCNN_BLOCK_OCB) * ld,
                       ld, tiles)


cdef void winograd_plan(const ConvGeom* g, const ConvTuning* t, index_t itemsize,
                        ConvPlan* p) noexcept nogil:
    cdef index_t points = _wino_points(g)
    cdef index_t per_tile = points * (g.in_channels + g.out_channels) * itemsize
    cdef index_t rows_budget, want_blocks, tiles_image, total, ld
    cdef WinogradPlan* q = &p.winograd
    q.tiles_h = ceil_div(g.out_h, 4)
    q.tiles_w = ceil_div(g.out_w, 4)
    tiles_image = q.tiles_h * q.tiles_w
    total = g.batch * tiles_image
    # Tasks of tile rows of one image: each multiplies all of U over its tiles.
    rows_budget = max(1, t.wino_budget_bytes // (per_tile * q.tiles_w))
    want_blocks = ceil_div(WINO_MIN_TASKS, g.batch)
    q.tasks_per_image = min(q.tiles_h, max(want_blocks, ceil_div(q.tiles_h, rows_budget)))
    # The rows dealt out evenly (14 rows in 4 blocks: 4 3 4 3, see
    # _winograd_task); rows_per_task: the most a block has.
    q.rows_per_task = ceil_div(q.tiles_h, q.tasks_per_image)
    q.tiles_per_task = q.rows_per_task * q.tiles_w
    p.n_tasks = g.batch * q.tasks_per_image
    q.shared = g.out_channels >= 32 and (
        total <= WINO_SHARED_TILES
        or (g.out_channels * p.n_tasks >= WINO_SHARED_READS * total
            and points * g.in_channels * total * itemsize <= WINO_SHARED_L2S * t.l2_bytes))
    if q.shared:
        q.rows_per_task = q.tiles_h
        q.tasks_per_image = 1
        q.tiles_per_task = total
        # MIN_TASKS channel blocks of at least 16 channels, whole kernel
        # blocks dealt out evenly (see _winograd_shared_task); m_block: the largest
        q.n_m_blocks = max(1, min(<index_t>MIN_TASKS, g.out_channels // 16))
        q.m_block = ceil_div(ceil_div(g.out_channels, FCNN_BLOCK_OCB), q.n_m_blocks) * FCNN_BLOCK_OCB
        p.n_tasks = q.n_m_blocks
        # shared: V for every tile; per thread: M for one channel block, and
        # the transforms' scratch for one image
        ld = _wino_ld(total, itemsize)
        p.workspace_shared = points * g.in_channels * ld
        p.workspace_per_thread = (points * q.m_block * ld
                                  + _wino_scratch(g, q.tiles_w, q.tiles_h, tiles_image))
        return
    ld = _wino_ld(q.tiles_per_task, itemsize)
    p.workspace_per_thread = (points * (g.in_channels + round_up(g.out_channels, FCNN_BLOCK_OCB))
                              * ld + _wino_scratch(g, q.tiles_w, q.rows_per_task, ld))


# kron(G, G): U[xi][f] = sum_k KRON[xi][k] w[f][k] transforms every filter
# (U = KRON @ W^T, W the (filters, taps) weights; see _winograd_pack_chunk),
# one table per kernel size: 3x3 (36 x 9) and 2x2 (25 x 4).
cdef float _KRON3_F32[36 * 9]
cdef double _KRON3_F64[36 * 9]
cdef float _KRON2_F32[25 * 4]
cdef double _KRON2_F64[25 * 4]


cdef list _g3():
    """F(4x4, 3x3)'s G (6x3), read off wino_gt (its transpose) row by row."""
    cdef double unit[6]
    cdef double col[3]
    cdef int i
    rows = []
    for i in range(6):
        for j in range(6):
            unit[j] = 1.0 if i == j else 0.0
        wino_gt(&unit[0], &unit[1], &unit[2], &unit[3], &unit[4], &unit[5], &col[0], 1, 1, 1)
        rows.append([col[0], col[1], col[2]])
    return rows


cdef void _fill_kron(list G, float* f32, double* f64):
    """f[(i a + j) r^2 + k r + l] = G[i][k] G[j][l], G a x r."""
    cdef int a = len(G), r = len(G[0]), i, j, k, l, at
    for i in range(a):
        for j in range(a):
            for k in range(r):
                for l in range(r):
                    at = (i * a + j) * r * r + k * r + l
                    f64[at] = G[i][k] * G[j][l]
                    f32[at] = <float>f64[at]


_fill_kron(_g3(), _KRON3_F32, _KRON3_F64)
_fill_kron([[0.5, 0.0], [-0.5, -0.5], [-1.0 / 6, 1.0 / 6], [1.0 / 6, 1.0 / 3], [0.0, 1.0]],
           _KRON2_F32, _KRON2_F64)


cdef enum:
    WINO_PACK_CHUNK = 256     # filters per pack task: their taps, transposed, stay in L1


cdef void winograd_pack(const ConvGeom* g, const ConvPlan* plan, const floating* w,
                        floating* u, int num_threads) noexcept nogil:
    """U[xi][block][c][o] = (G g G^T)[xi] for each filter g = w[block
    OCB + o, c] (zero past the last output channel), by chunks of a block's
    filters (see _winograd_pack_chunk)."""
    cdef index_t cin = g.in_channels, rows = round_up(g.out_channels, FCNN_BLOCK_OCB)
    cdef index_t per_chunk = WINO_PACK_CHUNK // FCNN_BLOCK_OCB
    cdef index_t n_chunks = ceil_div(cin, per_chunk)
    cdef index_t task, b, c0
    cdef const floating* kron
    if floating is float:
        kron = &_KRON3_F32[0] if g.kernel_h == 3 else &_KRON2_F32[0]
    else:
        kron = &_KRON3_F64[0] if g.kernel_h == 3 else &_KRON2_F64[0]
    with parallel(num_threads=num_threads):
        fp_enter()
        for task in prange(rows // FCNN_BLOCK_OCB * n_chunks, schedule='static'):
            b = task // n_chunks
            c0 = (task % n_chunks) * per_chunk
            _winograd_pack_chunk(g, w, u, kron, b * FCNN_BLOCK_OCB, c0,
                                 min(per_chunk, cin - c0))


cdef void _winograd_pack_chunk(const ConvGeom* g, const floating* w, floating* u,
                               const floating* kron, index_t m0, index_t c0,
                               index_t count) noexcept nogil:
    """The filters of output channels m0 .. m0 + OCB - 1 and input channels
    c0 .. c0 + count - 1: their taps gathered into one row each in U's order
    (channel, then output), then each of U's a^2 rows a fixed sum of the 9
    (or 4) tap rows scaled by kron(G, G), written out so that it vectorises
    across the filters, and stored as one run. (A GEMM of 9-deep products
    spends most of its time packing.)"""
    cdef floating taps[9 * WINO_PACK_CHUNK]
    cdef index_t cin = g.in_channels, rows = round_up(g.out_channels, FCNN_BLOCK_OCB)
    cdef index_t n = count * FCNN_BLOCK_OCB, splat = block_splat(sizeof(floating))
    cdef index_t nk = g.kernel_h * g.kernel_w, points = _wino_points(g)
    cdef index_t j, k, xi, c, o
    cdef floating* dst
    cdef floating c_0, c_1, c_2, c_3, c_4, c_5, c_6, c_7, c_8
    for c in range(count):
        for o in range(FCNN_BLOCK_OCB):
            j = c * FCNN_BLOCK_OCB + o
            for k in range(nk):
                taps[k * WINO_PACK_CHUNK + j] = (
                    w[((m0 + o) * cin + c0 + c) * nk + k] if m0 + o < g.out_channels else 0)
    for xi in range(points):
        dst = u + ((xi * rows + m0) * cin + c0 * FCNN_BLOCK_OCB) * splat
        c_0, c_1, c_2, c_3 = kron[xi * nk], kron[xi * nk + 1], kron[xi * nk + 2], kron[xi * nk + 3]
        if nk == 4:
            for j in range(n):
                dst[j] = (c_0 * taps[j] + c_1 * taps[WINO_PACK_CHUNK + j]
                          + c_2 * taps[2 * WINO_PACK_CHUNK + j]
                          + c_3 * taps[3 * WINO_PACK_CHUNK + j])
        else:
            c_4, c_5 = kron[xi * nk + 4], kron[xi * nk + 5]
            c_6, c_7, c_8 = kron[xi * nk + 6], kron[xi * nk + 7], kron[xi * nk + 8]
            for j in range(n):
                dst[j] = (c_0 * taps[j] + c_1 * taps[WINO_PACK_CHUNK + j]
                          + c_2 * taps[2 * WINO_PACK_CHUNK + j]
                          + c_3 * taps[3 * WINO_PACK_CHUNK + j]
                          + c_4 * taps[4 * WINO_PACK_CHUNK + j]
                          + c_5 * taps[5 * WINO_PACK_CHUNK + j]
                          + c_6 * taps[6 * WINO_PACK_CHUNK + j]
                          + c_7 * taps[7 * WINO_PACK_CHUNK + j]
                          + c_8 * taps[8 * WINO_PACK_CHUNK + j])
        splat_in_place(dst, n, splat)


cdef inline void _interleave4(const floating* phases, index_t ld, floating* dst,
                              index_t n) noexcept nogil:
    """dst[4 t + j] = phases[j ld + t] for t < n, j < 4: a row of tiles'
    four output columns, side by side."""
    cdef index_t t
    for t in range(n):
        dst[4 * t] = phases[t]
        dst[4 * t + 1] = phases[ld + t]
        dst[4 * t + 2] = phases[2 * ld + t]
        dst[4 * t + 3] = phases[3 * ld + t]


cdef inline void _wino_output(const ConvGeom* g, const floating* mo, index_t ld_xi,
                              index_t th0, index_t th1, index_t tiles_w, index_t ld,
                              floating* tmp, floating* phases, floating* rows, floating* yc,
                              const floating* rc, floating bias, bint has_bias,
                              int activation) noexcept nogil:
    """Output rows 4*th0 .. 4*th1-1 of one channel from M[xi * ld_xi + t]
    (tmp: a^2 rows of ld, phases: 4 rows of ld, rows: one output row)."""
    cdef index_t nt = (th1 - th0) * tiles_w, a = g.kernel_h + 3
    cdef index_t b, i, th, oh
    cdef const floating* src
    cdef bint direct = g.out_w == 4 * tiles_w
    cdef floating* dst
    # A^T down columns, over all the block's tiles: tmp[i * a + b][t]
    for b in range(a):
        wino_at(a, mo + b * ld_xi, mo + (a + b) * ld_xi, mo + (2 * a + b) * ld_xi,
                mo + (3 * a + b) * ld_xi, mo + (4 * a + b) * ld_xi, mo + (5 * a + b) * ld_xi,
                tmp + b * ld, a * ld, 1, nt)
    # then A^T along the rows, over all the block's tiles again (their four
    # output columns as four rows of phases: a tile row at a time, the 4-apart
    # stores of an output row did not vectorise, and 7 tiles a row fill half
    # a vector), interleaved into output rows (straight into y when the
    # tiles cover the row exactly)
    for i in range(4):
        src = tmp + (i * a) * ld
        wino_at(a, src, src + ld, src + 2 * ld, src + 3 * ld, src + 4 * ld, src + 5 * ld,
                phases, ld, 1, nt)
        for th in range(th0, th1):
            oh = 4 * th + i
            if oh >= g.out_h:
                break
            dst = yc + oh * g.out_w if direct else rows
            _interleave4(phases + (th - th0) * tiles_w, ld, dst, tiles_w)
            if not direct:
                memcpy(yc + oh * g.out_w, rows, g.out_w * sizeof(floating))
    # then bias and activation over all those rows at once: row by row, each
    # row's vector loads read back the narrower stores just made, which
    # cannot be forwarded (a fifth of the output transform's time at 56x56)
    oh = min(4 * th1, g.out_h)
    bias_residual_activation(yc + 4 * th0 * g.out_w, (oh - 4 * th0) * g.out_w, bias, has_bias,
                             rc + 4 * th0 * g.out_w if rc != NULL else NULL, activation)


cdef void _winograd_task(const ConvGeom* g, const WinogradPlan* plan, const floating* x,
                         const floating* u, const floating* bias, floating* y,
                         const floating* res, floating* ws, int activation,
                         index_t task) noexcept nogil:
    cdef index_t cin = g.in_channels, cout = g.out_channels
    cdef index_t tw_count = plan.tiles_w, tb = plan.tiles_per_task
    cdef index_t n = task // plan.tasks_per_image
    cdef index_t block = task % plan.tasks_per_image, blocks = plan.tasks_per_image
    cdef index_t th0 = block * plan.tiles_h // blocks
    cdef index_t th1 = (block + 1) * plan.tiles_h // blocks
    cdef index_t ntiles = (th1 - th0) * tw_count
    cdef index_t in_plane = g.in_h * g.in_w, out_plane = g.out_h * g.out_w
    cdef index_t ld = _wino_ld(tb, sizeof(floating)), rows_u = round_up(cout, FCNN_BLOCK_OCB)
    cdef floating* v = ws                          # V[xi][c][tile], xi stride cin * ld
    cdef index_t points = _wino_points(g)
    cdef floating* mo = v + points * cin * ld      # M[xi][m][tile], xi stride rows_u * ld
    cdef floating* tmp = mo + points * rows_u * ld
    cdef floating* in_scratch = tmp + points * ld  # then the output phases
    cdef floating* rows = in_scratch + wino_input_scratch(g.kernel_h + 3, plan.rows_per_task, tw_count)
    cdef index_t c, m
    cdef const floating* xn = x + n * cin * in_plane
    cdef floating* yn = y + n * cout * out_plane
    for c in range(cin):
        wino_input(g.kernel_h + 3, g.in_h, g.in_w, g.pad_h, g.pad_w, xn + c * in_plane, th0, th1, tw_count, ld, in_scratch, tmp,
                   v + c * ld, cin * ld, _wino_ld(ntiles, sizeof(floating)) - ntiles)
    _wino_products(points, u, rows_u, v, mo, rows_u, rows_u, cin, ntiles, ld)
    for m in range(cout):
        _wino_output(g, mo + m * ld, rows_u * ld, th0, th1, tw_count, ld, tmp, in_scratch, rows,
                     yn + m * out_plane,
                     res + (n * cout + m) * out_plane if res != NULL else NULL,
                     bias[m] if bias != NULL else 0, bias != NULL, activation)


cdef void _winograd_shared_input(const ConvGeom* g, const WinogradPlan* plan, const floating* x,
                                 floating* v, floating* ws, index_t task) noexcept nogil:
    """Shared Winograd, phase 1: the tiles of one (image, channel) into V."""
    cdef index_t tiles_image = plan.tiles_h * plan.tiles_w, tt = plan.tiles_per_task
    cdef index_t ld = _wino_ld(tt, sizeof(floating))
    cdef index_t n = task // g.in_channels, c = task % g.in_channels
    cdef floating* tmp = ws + _wino_points(g) * plan.m_block * ld
    cdef floating* in_scratch = tmp + _wino_points(g) * tiles_image
    wino_input(g.kernel_h + 3, g.in_h, g.in_w, g.pad_h, g.pad_w, x + (n * g.in_channels + c) * g.in_h * g.in_w, 0, plan.tiles_h, plan.tiles_w,
               tiles_image, in_scratch, tmp, v + c * ld + n * tiles_image, g.in_channels * ld,
               ld - tt if n == g.batch - 1 else 0)


cdef void _winograd_shared_task(const ConvGeom* g, const WinogradPlan* plan, const floating* u,
                                const floating* bias, const floating* v, floating* y,
                                const floating* res, floating* ws, int activation,
                                index_t task) noexcept nogil:
    """Shared Winograd, phase 2: one block of output channels over every tile."""
    cdef index_t cin = g.in_channels, cout = g.out_channels, tt = plan.tiles_per_task
    cdef index_t tiles_image = plan.tiles_h * plan.tiles_w
    cdef index_t ld = _wino_ld(tt, sizeof(floating)), rows_u = round_up(cout, FCNN_BLOCK_OCB)
    cdef index_t units = rows_u // FCNN_BLOCK_OCB
    # the kernel's blocks of channels dealt out evenly over the tasks
    cdef index_t m0 = task * units // plan.n_m_blocks * FCNN_BLOCK_OCB
    cdef index_t mb = min((task + 1) * units // plan.n_m_blocks * FCNN_BLOCK_OCB, cout) - m0
    cdef floating* mo = ws                          # M[xi][m][tile], xi stride m_block * ld
    cdef index_t points = _wino_points(g)
    cdef floating* tmp = mo + points * plan.m_block * ld
    # the input transform's scratch (not used here) holds the output phases
    cdef floating* phases = tmp + points * tiles_image
    cdef floating* rows = phases + wino_input_scratch(g.kernel_h + 3, plan.tiles_h, plan.tiles_w)
    cdef index_t m, n
    _wino_products(points, u + m0 * cin * block_splat(sizeof(floating)), rows_u, v, mo,
                   plan.m_block, round_up(mb, FCNN_BLOCK_OCB), cin, tt, ld)
    for m in range(mb):
        for n in range(g.batch):
            _wino_output(g, mo + m * ld + n * tiles_image, plan.m_block * ld, 0, plan.tiles_h,
                         plan.tiles_w, tiles_image, tmp, phases, rows,
                         y + (n * cout + m0 + m) * g.out_h * g.out_w,
                         res + (n * cout + m0 + m) * g.out_h * g.out_w if res != NULL else NULL,
                         bias[m0 + m] if bias != NULL else 0, bias != NULL, activation)


cdef index_t winograd_packed_size(const ConvGeom* g, const ConvPlan* cp,
                                  index_t itemsize) noexcept nogil:
    """U: a^2 points x the output channels in whole blocks x the input channels."""
    return (_wino_points(g) * round_up(g.out_channels, FCNN_BLOCK_OCB) * g.in_channels
            * block_splat(itemsize))


cdef void winograd_forward(const ConvGeom* g, const ConvPlan* cp, const floating* x,
                           const floating* u, const floating* bias, floating* y,
                           const floating* res, floating* workspace, int activation,
                           int num_threads) noexcept nogil:
    cdef index_t task
    cdef floating* ws
    cdef const WinogradPlan* plan = &cp.winograd
    with parallel(num_threads=num_threads):
        fp_enter()
        ws = workspace + cp.workspace_shared + threadid() * cp.workspace_per_thread
        if plan.shared:
            for task in prange(g.batch * g.in_channels, schedule='static'):
                _winograd_shared_input(g, plan, x, workspace, ws, task)
            for task in prange(cp.n_tasks, schedule='static'):
                _winograd_shared_task(g, plan, u, bias, workspace, y, res, ws, activation,
                                      task)
        else:
            for task in prange(cp.n_tasks, schedule='static'):
                _winograd_task(g, plan, x, u, bias, y, res, ws, activation, task)

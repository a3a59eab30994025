"""Convolution kernels: 1x1 GEMM, im2col + GEMM, and direct (depthwise).

The Python layer validates everything; these trust their inputs. One parallel
region per call: tasks are (image, group, column tile, output-channel block)
for the GEMM paths and (image, output channel) for the direct path. Each
thread gathers its own im2col tile into its slice of the workspace (sized to
stay in L2), runs a single-threaded GEMM on it, and applies bias and the
fused activation to the output tile while it is still in cache.
"""
cimport numpy as cnp
from cython.parallel cimport parallel, prange, threadid
from libc.string cimport memset, memcpy

from fastcnn._kernels._typedefs cimport floating, index_t
from fastcnn._kernels._blas cimport gemm, blas_enter, blas_leave
from fastcnn._kernels._activation cimport bias_activation

cnp.import_array()

# im2col tile budget: K x col_tile elements per thread kept within about half
# of this machine class's 2 MiB L2, next to the GEMM's packed panels.
# Below MIN_TASKS tasks, split the output channels too, so that both cores
# (and more) get work on batch-1 layers with small feature maps.
cdef enum:
    COL_TILE_BYTES = 384 * 1024
    MIN_COL_TILE = 64
    MIN_TASKS = 8


cdef inline index_t _ceil_div(index_t a, index_t b) noexcept nogil:
    return (a + b - 1) // b


cdef inline index_t _round_up(index_t a, index_t b) noexcept nogil:
    return _ceil_div(a, b) * b


cdef int conv_select_algorithm(const ConvGeom* g) noexcept nogil:
    cdef index_t cin_group = g.in_channels // g.groups
    if g.groups > 1 and cin_group <= 4:
        return CONV_DIRECT
    if (g.kernel_d == 1 and g.kernel_h == 1 and g.kernel_w == 1
            and g.stride_d == 1 and g.stride_h == 1 and g.stride_w == 1
            and g.pad_d == 0 and g.pad_h == 0 and g.pad_w == 0
            and g.out_d == g.in_d and g.out_h == g.in_h and g.out_w == g.in_w):
        return CONV_GEMM_1X1
    return CONV_IM2COL


cdef ConvPlan conv_make_plan(const ConvGeom* g, int algorithm, index_t itemsize) noexcept nogil:
    cdef ConvPlan p
    cdef index_t cin_group = g.in_channels // g.groups
    cdef index_t m_group = g.out_channels // g.groups
    cdef index_t k = cin_group * g.kernel_d * g.kernel_h * g.kernel_w
    cdef index_t positions = g.out_d * g.out_h * g.out_w
    cdef index_t tile_max, base, want
    p.algorithm = algorithm
    p.workspace_per_thread = 0
    if algorithm == CONV_DIRECT:
        p.col_tile = positions
        p.n_col_tiles = 1
        p.m_block = 1
        p.n_m_blocks = m_group
        p.n_tasks = g.batch * g.out_channels
        return p
    tile_max = max(MIN_COL_TILE, (COL_TILE_BYTES // (k * itemsize)) // 16 * 16)
    p.n_col_tiles = max(1, _ceil_div(positions, tile_max))
    # Equal tiles, a multiple of 16 wide (the GEMM kernel's vector width).
    p.col_tile = min(positions, _round_up(_ceil_div(positions, p.n_col_tiles), 16))
    p.col_tile = max(1, p.col_tile)
    p.n_col_tiles = max(1, _ceil_div(positions, p.col_tile))
    p.m_block = m_group
    p.n_m_blocks = 1
    base = g.batch * g.groups * p.n_col_tiles
    if 0 < base < MIN_TASKS and m_group >= 32:
        want = _ceil_div(MIN_TASKS, base)
        p.m_block = max(16, _round_up(_ceil_div(m_group, want), 16))
        p.n_m_blocks = _ceil_div(m_group, p.m_block)
    p.n_tasks = base * p.n_m_blocks
    if algorithm == CONV_IM2COL:
        p.workspace_per_thread = k * p.col_tile
    return p


cdef void vol2col_tile(const ConvGeom* g, const floating* x, index_t p0,
                       index_t ncols, floating* col) noexcept nogil:
    """col[r, t] for r over (channel, kd, kh, kw) of one group and t over the
    output positions p0 .. p0 + ncols - 1; zero where the window is in padding."""
    cdef index_t cin_group = g.in_channels // g.groups
    cdef index_t plane = g.in_d * g.in_h * g.in_w
    cdef index_t out_hw = g.out_h * g.out_w
    cdef index_t in_w = g.in_w
    cdef index_t stride_w = g.stride_w
    cdef index_t c, kd, kh, kw, t, seg, od, oh, ow, id_, ih, iw0, lo, hi, j
    cdef floating* row = col
    cdef const floating* xc
    cdef const floating* src
    for c in range(cin_group):
        xc = x + c * plane
        for kd in range(g.kernel_d):
            for kh in range(g.kernel_h):
                for kw in range(g.kernel_w):
                    od = p0 // out_hw
                    oh = (p0 // g.out_w) % g.out_h
                    ow = p0 % g.out_w
                    t = 0
                    while t < ncols:
                        seg = min(g.out_w - ow, ncols - t)
                        id_ = od * g.stride_d - g.pad_d + kd * g.dilation_d
                        ih = oh * g.stride_h - g.pad_h + kh * g.dilation_h
                        if id_ < 0 or id_ >= g.in_d or ih < 0 or ih >= g.in_h:
                            memset(row + t, 0, seg * sizeof(floating))
                        else:
                            src = xc + (id_ * g.in_h + ih) * in_w
                            iw0 = ow * stride_w - g.pad_w + kw * g.dilation_w
                            # column j reads iw0 + j * stride_w, valid in [0, in_w)
                            lo = 0 if iw0 >= 0 else min(seg, _ceil_div(-iw0, stride_w))
                            hi = 0 if iw0 >= in_w else min(seg, _ceil_div(in_w - iw0, stride_w))
                            hi = max(hi, lo)
                            for j in range(lo):
                                row[t + j] = 0
                            if stride_w == 1:
                                memcpy(row + t + lo, src + iw0 + lo, (hi - lo) * sizeof(floating))
                            else:
                                for j in range(lo, hi):
                                    row[t + j] = src[iw0 + j * stride_w]
                            for j in range(hi, seg):
                                row[t + j] = 0
                        t += seg
                        ow = 0
                        oh += 1
                        if oh == g.out_h:
                            oh = 0
                            od += 1
                    row += ncols


cdef void _gemm_task(const ConvGeom* g, const ConvPlan* plan, const floating* x,
                     const floating* w, const floating* bias, floating* y,
                     floating* col, int activation, index_t task) noexcept nogil:
    cdef index_t cin_group = g.in_channels // g.groups
    cdef index_t m_group = g.out_channels // g.groups
    cdef index_t k = cin_group * g.kernel_d * g.kernel_h * g.kernel_w
    cdef index_t positions = g.out_d * g.out_h * g.out_w
    cdef index_t plane = g.in_d * g.in_h * g.in_w
    cdef index_t rest = task
    cdef index_t mb = rest % plan.n_m_blocks
    rest = rest // plan.n_m_blocks
    cdef index_t tile = rest % plan.n_col_tiles
    rest = rest // plan.n_col_tiles
    cdef index_t grp = rest % g.groups
    cdef index_t n = rest // g.groups
    cdef index_t p0 = tile * plan.col_tile
    cdef index_t ncols = min(plan.col_tile, positions - p0)
    cdef index_t m0 = grp * m_group + mb * plan.m_block
    cdef index_t mcount = min(plan.m_block, m_group - mb * plan.m_block)
    cdef const floating* xg = x + (n * g.in_channels + grp * cin_group) * plane
    cdef const floating* b_op
    cdef index_t ldb, m
    cdef floating* yt = y + (n * g.out_channels + m0) * positions + p0
    if plan.algorithm == CONV_IM2COL:
        vol2col_tile(g, xg, p0, ncols, col)
        b_op = col
        ldb = ncols
    else:
        b_op = xg + p0
        ldb = positions
    gemm(False, False, <int>mcount, <int>ncols, <int>k, <floating>1, w + m0 * k, <int>k,
         b_op, <int>ldb, <floating>0, yt, <int>positions)
    for m in range(mcount):
        bias_activation(yt + m * positions, ncols,
                        bias[m0 + m] if bias != NULL else 0, bias != NULL, activation)


cdef void _direct_task(const ConvGeom* g, const floating* x, const floating* w,
                       const floating* bias, floating* y, int activation,
                       index_t task) noexcept nogil:
    """One output plane, accumulated row by row in the output itself (L1-hot)."""
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
    cdef index_t in_w = g.in_w
    cdef index_t out_w = g.out_w
    cdef index_t stride_w = g.stride_w
    cdef index_t od, oh, c, kd, kh, kw, id_, ih, iw0, lo, hi, j
    cdef floating* yrow
    cdef const floating* src
    cdef floating wv
    for od in range(g.out_d):
        for oh in range(g.out_h):
            yrow = yp + (od * g.out_h + oh) * out_w
            memset(yrow, 0, out_w * sizeof(floating))
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
                            lo = 0 if iw0 >= 0 else min(out_w, _ceil_div(-iw0, stride_w))
                            hi = 0 if iw0 >= in_w else min(out_w, _ceil_div(in_w - iw0, stride_w))
                            if stride_w == 1:
                                for j in range(lo, hi):
                                    yrow[j] += wv * src[iw0 + j]
                            else:
                                for j in range(lo, hi):
                                    yrow[j] += wv * src[iw0 + j * stride_w]
            bias_activation(yrow, out_w, bias[oc] if bias != NULL else 0,
                            bias != NULL, activation)


cdef void _conv_forward(const ConvGeom* g, const ConvPlan* plan, const floating* x,
                        const floating* w, const floating* bias, floating* y,
                        floating* workspace, int activation, int num_threads) noexcept nogil:
    cdef index_t task
    cdef floating* col
    if plan.n_tasks <= 0:
        return
    num_threads = <int>max(1, min(<index_t>num_threads, plan.n_tasks))
    blas_enter()
    with parallel(num_threads=num_threads):
        col = workspace + threadid() * plan.workspace_per_thread
        for task in prange(plan.n_tasks, schedule='static'):
            if plan.algorithm == CONV_DIRECT:
                _direct_task(g, x, w, bias, y, activation, task)
            else:
                _gemm_task(g, plan, x, w, bias, y, col, activation, task)
    blas_leave()


cdef void conv_forward_f32(const ConvGeom* g, const ConvPlan* plan,
                           const float* x, const float* w, const float* bias,
                           float* y, float* workspace, int activation,
                           int num_threads) noexcept nogil:
    _conv_forward(g, plan, x, w, bias, y, workspace, activation, num_threads)


cdef void conv_forward_f64(const ConvGeom* g, const ConvPlan* plan,
                           const double* x, const double* w, const double* bias,
                           double* y, double* workspace, int activation,
                           int num_threads) noexcept nogil:
    _conv_forward(g, plan, x, w, bias, y, workspace, activation, num_threads)


# ---------------------------------------------------------------- Python entry

cdef ConvGeom _geom_from_tuple(tuple t) except *:
    cdef ConvGeom g
    (g.batch, g.in_channels, g.out_channels, g.groups,
     g.in_d, g.in_h, g.in_w, g.out_d, g.out_h, g.out_w,
     g.kernel_d, g.kernel_h, g.kernel_w, g.stride_d, g.stride_h, g.stride_w,
     g.pad_d, g.pad_h, g.pad_w, g.dilation_d, g.dilation_h, g.dilation_w) = t
    return g


def plan(tuple geom, int itemsize):
    """(algorithm name, workspace elements per thread, number of tasks) for a geometry."""
    cdef ConvGeom g = _geom_from_tuple(geom)
    cdef int algorithm = conv_select_algorithm(&g)
    cdef ConvPlan p = conv_make_plan(&g, algorithm, itemsize)
    name = {CONV_GEMM_1X1: "gemm_1x1", CONV_IM2COL: "im2col", CONV_DIRECT: "direct"}[algorithm]
    return name, p.workspace_per_thread, p.n_tasks


def forward(tuple geom, cnp.ndarray x, cnp.ndarray w, object bias, cnp.ndarray y,
            object workspace, int activation, int num_threads):
    """y = conv(x, w) + bias, activated; all arrays C-contiguous and of one dtype,
    shapes already checked; workspace holds num_threads * per-thread elements."""
    cdef ConvGeom g = _geom_from_tuple(geom)
    cdef int algorithm = conv_select_algorithm(&g)
    cdef ConvPlan p = conv_make_plan(&g, algorithm, x.itemsize)
    cdef void* b = NULL if bias is None else cnp.PyArray_DATA(<cnp.ndarray>bias)
    cdef void* ws = NULL if workspace is None else cnp.PyArray_DATA(<cnp.ndarray>workspace)
    cdef void* xp = cnp.PyArray_DATA(x)
    cdef void* wp = cnp.PyArray_DATA(w)
    cdef void* yp = cnp.PyArray_DATA(y)
    if p.workspace_per_thread > 0:
        if workspace is None or (<cnp.ndarray>workspace).size < p.workspace_per_thread * num_threads:
            raise ValueError("conv: workspace too small")
    if x.dtype.num == cnp.NPY_FLOAT32:
        with nogil:
            conv_forward_f32(&g, &p, <float*>xp, <float*>wp, <float*>b, <float*>yp,
                             <float*>ws, activation, num_threads)
    else:
        with nogil:
            conv_forward_f64(&g, &p, <double*>xp, <double*>wp, <double*>b, <double*>yp,
                             <double*>ws, activation, num_threads)

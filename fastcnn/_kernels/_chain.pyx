"""Chains of convolutions run band by band (conv_chain.h): an optional 1x1
expansion, a depthwise convolution and a 1x1 projection, with the tensors
between them kept in each thread's scratch (MobileNetV2's inverted residual
blocks in compiled plans and ONNX models). float32 only.

The chain's geometry is a tuple (cin, in_h, in_w, cexp, cout, out_h, out_w,
kh, kw, sh, sw, ph, pw, dh, dw, x_h, x_w, ek, es, ep): cin input channels of
x_h x x_w; the expansion's square kernel ek, stride es and padding ep (1, 1, 0:
a 1x1 expansion, and x_h, x_w = in_h, in_w), in_h x in_w its output, the
depthwise layer's input; cexp is the depthwise layer's channels (= cin
without an expansion), kh .. dw its kernel, stride, padding before each axis
and dilation.
"""
import numpy as np
cimport numpy as cnp
from cython.parallel cimport parallel, prange, threadid
from libc.math cimport INFINITY
from fastcnn._kernels._omp cimport fp_enter
from fastcnn._kernels._activation cimport ACT_NONE, ACT_RELU, ACT_RELU6

cnp.import_array()

cdef extern from "conv_chain.h" nogil:
    enum:
        FCNN_HAS_FMA
        FCNN_CHAIN_VL
        FCNN_CHAIN_PAD_BLOCKS
    ctypedef struct fcnn_chain_geom:
        long cin, in_h, in_w, cexp, cout, out_h, out_w
        long kh, kw, sh, sw, ph, pw, dh, dw
        long xc, xh, xw, ek, es, ep
        int expand
        long blocks, wp, band_rows
    ctypedef struct fcnn_chain_task:
        pass
    long fcnn_chain_rows_read(const fcnn_chain_geom* g, long rows)
    long fcnn_chain_scratch(const fcnn_chain_geom* g, long rows)
    fcnn_chain_task fcnn_chain_layout(const fcnn_chain_geom* g, long oh0, long oh1,
                                      float* shared, float* own)
    void fcnn_chain_expand_depthwise_part(const fcnn_chain_geom* g, const fcnn_chain_task* t,
                                          const float* x, const float* we, const float* be,
                                          int clamp_e, float hi_e, const float* wd,
                                          const float* bd, int clamp_d, float hi_d, long oh0,
                                          long part, long parts)
    void fcnn_chain_project_part(const fcnn_chain_geom* g, const fcnn_chain_task* t,
                                 const float* wp, const float* bp, const float* res,
                                 int clamp_p, float hi_p, long oh0, long part, long parts,
                                 float* y)
    void fcnn_chain_band(const fcnn_chain_geom* g, const float* x, const float* we,
                         const float* be, int clamp_e, float hi_e, const float* wd,
                         const float* bd, int clamp_d, float hi_d, const float* wp,
                         const float* bp, const float* res, int clamp_p, float hi_p,
                         long oh0, long oh1, float* scratch, float* y)

# Below this many tasks (images x bands) per thread, the threads share each
# task instead (whole tasks would leave threads idle or unevenly loaded),
# unless they are a multiple of the thread count of bands with at least
# MIN_BAND_PIXELS outputs each (_whole_tasks, _balanced_bands).
cdef enum:
    SPLIT_TASKS_PER_THREAD = 4
    MIN_BAND_PIXELS = 32

# The activations the chain applies in its epilogues: a clamp to [0, hi].
_CLAMPS = {ACT_NONE: (0, 0.0), ACT_RELU: (1, INFINITY), ACT_RELU6: (1, 6.0)}
ACTIVATIONS = frozenset(_CLAMPS)


cdef inline long _ceil_div(long a, long b) noexcept nogil:
    return (a + b - 1) // b


cdef fcnn_chain_geom _geom(tuple t, bint expand, long l2_bytes) except *:
    """The kernel's geometry, with its bands: the whole image while a task's
    scratch fits in 3/4 of L2 (one band recomputes no halo rows), else as
    many output rows per band as keep it within half of L2 (the other half
    holds the weights and the rows it reads), evened out over the bands;
    but where bands that short would recompute over a quarter of the
    expanded rows as halos, the whole image while it fits in 5/4 of L2.
    (MobileNetV2's 96->576->96 block at 14x14, AVX-512: one band of 14 rows
    0.41-0.43 ms against two of 7 at 0.46-0.51, Xeon, 2 MiB L2; on Zen 4,
    1 MiB L2, one band of 1.04 MiB against three of 5 rows (40 % halo):
    0.50 / 0.25 ms against 0.54 / 0.30 on 1 / 2 threads, batch 8 4.10-4.16 /
    2.04-2.08 against 4.49 / 2.32.)"""
    cdef fcnn_chain_geom g
    cdef long rows, bands, halo
    if len(t) != 20:
        raise ValueError(f"conv_chain: a geometry has 20 fields, got {len(t)}")
    (g.xc, g.in_h, g.in_w, g.cexp, g.cout, g.out_h, g.out_w, g.kh, g.kw, g.sh, g.sw,
     g.ph, g.pw, g.dh, g.dw, g.xh, g.xw, g.ek, g.es, g.ep) = t
    if min(t) < 0 or min(g.xc, g.cexp, g.cout, g.in_h, g.in_w, g.out_h, g.out_w,
                          g.kh, g.kw, g.sh, g.sw, g.dh, g.dw, g.xh, g.xw, g.ek, g.es) < 1:
        raise ValueError(f"conv_chain: invalid geometry {t}")
    if (g.ek == 1 and (g.es, g.ep, g.xh, g.xw) != (1, 0, g.in_h, g.in_w)) or (
            g.ek > 1 and (not expand or g.in_h != (g.xh + 2 * g.ep - g.ek) // g.es + 1
                          or g.in_w != (g.xw + 2 * g.ep - g.ek) // g.es + 1)):
        raise ValueError(f"conv_chain: the expansion's kernel {g.ek}, stride {g.es} and "
                         f"padding {g.ep} do not take {g.xh}x{g.xw} to {g.in_h}x{g.in_w}")
    g.cin = g.xc * g.ek * g.ek
    if not expand and g.cin != g.cexp:
        raise ValueError("conv_chain: without an expansion the depthwise channels are the "
                         f"input's, got {g.cin} and {g.cexp}")
    g.expand = expand
    g.blocks = _ceil_div(g.cexp, FCNN_CHAIN_VL)
    g.wp = (g.out_w - 1) * g.sw + (g.kw - 1) * g.dw + 1
    rows = g.out_h
    if fcnn_chain_scratch(&g, rows) * <long>sizeof(float) > l2_bytes // 4 * 3:
        while rows > 1 and fcnn_chain_scratch(&g, rows) * <long>sizeof(float) > l2_bytes // 2:
            rows -= 1
        halo = fcnn_chain_rows_read(&g, rows) - rows * g.sh    # input rows a band re-reads
        if (4 * halo > rows * g.sh and fcnn_chain_scratch(&g, g.out_h) * <long>sizeof(float)
                <= l2_bytes // 4 * 5):
            rows = g.out_h
    bands = _ceil_div(g.out_h, rows)
    g.band_rows = _ceil_div(g.out_h, bands)
    return g


cdef bint _whole_tasks(const fcnn_chain_geom* g, long tasks, long bands,
                       int num_threads) noexcept nogil:
    """Whether each thread runs whole tasks (bands of images) in its own
    scratch: with enough tasks, or as many per thread of at least
    MIN_BAND_PIXELS outputs each; else the threads share each task."""
    return tasks >= SPLIT_TASKS_PER_THREAD * num_threads or (
        tasks % num_threads == 0 and g.out_h * g.out_w >= MIN_BAND_PIXELS * bands)


cdef long _balanced_bands(const fcnn_chain_geom* g, long n_img, int num_threads) noexcept nogil:
    """Bands per image: the L2 budget's (_geom), or, where the threads would
    share its tasks, the next count that deals whole ones evenly, if there
    are enough rows and outputs. Whole tasks keep each core's expanded rows
    in its own L2 and need no barriers; sharing a task costs two barriers
    and moves the depthwise output between the cores, while whole bands
    recompute their halo rows and read every weight on each core.
    MobileNetV2 at batch 1 on 2 threads (Zen 4, AVX2): the 28x28 and 14x14
    blocks ran 1.2-1.4x faster as whole bands (3 -> 4 bands at 28x28, 1 -> 2
    at 14x14), the 7x7 blocks (24 outputs a band) 0.95-1.05x: they share."""
    cdef long bands = _ceil_div(g.out_h, g.band_rows), even = bands
    if _whole_tasks(g, n_img * bands, bands, num_threads):
        return bands
    while (n_img * even) % num_threads:
        even += 1
    if even <= g.out_h and _whole_tasks(g, n_img * even, even, num_threads):
        return even
    return bands


cdef long _padded_blocks(long channels):
    """Blocks of VL channels the packed weights hold: whole tiles of either shape."""
    return _ceil_div(_ceil_div(channels, FCNN_CHAIN_VL), FCNN_CHAIN_PAD_BLOCKS) * FCNN_CHAIN_PAD_BLOCKS


cdef tuple _offsets(const fcnn_chain_geom* g):
    """Where each part of the packed weights starts: (expansion weights,
    expansion biases, depthwise weights, depthwise biases, projection weights,
    projection biases, end)."""
    cdef long vl = FCNN_CHAIN_VL
    cdef long exp_blocks = _padded_blocks(g.cexp) if g.expand else 0
    cdef long out_blocks = _padded_blocks(g.cout)
    cdef long cpad = g.blocks * vl
    sizes = (exp_blocks * g.cin * vl, exp_blocks * vl, g.blocks * g.kh * g.kw * vl, cpad,
             out_blocks * cpad * vl, out_blocks * vl)
    out, at = [], 0
    for s in sizes:
        out.append(at)
        at += s
    out.append(at)
    return tuple(out)


def pays(bint expand):
    """Whether the chain beats its layers run one by one (each with the
    algorithm the dispatcher picks): with an expansion, on targets with fused
    multiply-adds. Compiled MobileNetV2 with every block a chain against
    only its 112x112 and 56x56 blocks (Xeon, 2 MiB L2, alternating runs):
    batch 1, AVX-512: as fast on 1 thread, 9 % faster on 2; AVX2: 9 % and
    16 % faster; batch 8 within 2 %. Block by block the chains run 1.0-1.6x
    their layers' speed where the expanded tensor leaves L2, and about as fast
    where it stays. On SSE (no FMA, a shuffle per broadcast) chains ran
    0.77-1.25x; without an expansion (MobileNetV2's first block, whose
    depthwise kernel must transpose its own input rows) 0.56-0.73x."""
    return bool(expand and FCNN_HAS_FMA)


def plan(tuple geom, bint expand, long l2_bytes):
    """(output rows per band, bands per image, scratch elements per thread,
    packed weight elements)."""
    cdef fcnn_chain_geom g = _geom(geom, expand, l2_bytes)
    return (g.band_rows, _ceil_div(g.out_h, g.band_rows), fcnn_chain_scratch(&g, g.band_rows),
            _offsets(&g)[6])


def pack(tuple geom, object we, object be, object wd, object bd, object wp, object bp,
         long l2_bytes):
    """The chain's weights in the kernel's order, as one float32 array.
    we (cexp, cin, ek, ek) or None (no expansion), wd (cexp, 1, kh, kw),
    wp (cout, cexp, 1, 1); biases 1-D or None."""
    cdef bint expand = we is not None
    cdef fcnn_chain_geom g = _geom(geom, expand, l2_bytes)
    cdef long vl = FCNN_CHAIN_VL
    off = _offsets(&g)
    packed = np.zeros(off[6], np.float32)
    cpad = g.blocks * vl

    def blocks(w, rows, cols, padded_rows):
        """w (rows, cols) zero-padded to padded_rows x cols and laid out
        [block of VL rows][cols][VL]."""
        out = np.zeros((padded_rows, cols), np.float32)
        out[:rows] = w
        return out.reshape(padded_rows // vl, vl, cols).transpose(0, 2, 1).ravel()

    def bias(b, n, size):
        out = np.zeros(size, np.float32)
        if b is not None:
            out[:n] = np.asarray(b, np.float32).reshape(n)
        return out

    if expand:
        rows = _padded_blocks(g.cexp) * vl
        packed[off[0]:off[1]] = blocks(np.asarray(we, np.float32).reshape(g.cexp, g.cin),
                                       g.cexp, g.cin, rows)
        packed[off[1]:off[2]] = bias(be, g.cexp, rows)
    packed[off[2]:off[3]] = blocks(np.asarray(wd, np.float32).reshape(g.cexp, g.kh * g.kw),
                                   g.cexp, g.kh * g.kw, cpad)
    packed[off[3]:off[4]] = bias(bd, g.cexp, cpad)
    rows = _padded_blocks(g.cout) * vl
    w = np.zeros((g.cout, cpad), np.float32)
    w[:, :g.cexp] = np.asarray(wp, np.float32).reshape(g.cout, g.cexp)
    packed[off[4]:off[5]] = blocks(w, g.cout, cpad, rows)
    packed[off[5]:off[6]] = bias(bp, g.cout, rows)
    return packed


cdef class Bound:
    """A chain's run on arrays checked once (bind()): each call takes only a
    workspace and a thread count. Holds its arrays, so their memory lives as
    long as it does."""
    cdef fcnn_chain_geom g
    cdef long scratch, n_img, x_image, y_image
    cdef long off[6]
    cdef const float* xp
    cdef const float* pp
    cdef const float* rp
    cdef float* yp
    cdef int clamp_e, clamp_d, clamp_p
    cdef float hi_e, hi_d, hi_p
    cdef object arrays

    def __call__(self, cnp.ndarray workspace, int num_threads):
        """Run on num_threads threads; workspace: float32, C-contiguous,
        num_threads x the scratch of plan()."""
        if (workspace.descr.type_num != cnp.NPY_FLOAT32
                or not cnp.PyArray_IS_C_CONTIGUOUS(workspace)):
            raise ValueError("conv_chain: workspace must be a C-contiguous float32 array")
        if num_threads < 1:
            raise ValueError(f"conv_chain: num_threads must be >= 1, got {num_threads}")
        if workspace.size < self.scratch * num_threads:
            raise ValueError("conv_chain: workspace too small")
        with nogil:
            self._run(<float*>cnp.PyArray_DATA(workspace), num_threads)

    cdef void _run(self, float* ws, int num_threads) noexcept nogil:
        cdef long bands = _balanced_bands(&self.g, self.n_img, num_threads)
        cdef long tasks = self.n_img * bands, task, img, oh0, oh1, unit
        cdef const fcnn_chain_geom* g = &self.g
        cdef const float* pp = self.pp
        cdef const float* rp = self.rp
        cdef long p0 = self.off[0], p1 = self.off[1], p2 = self.off[2], p3 = self.off[3]
        cdef long p4 = self.off[4], p5 = self.off[5]
        cdef long scratch = self.scratch, x_image = self.x_image, y_image = self.y_image
        cdef fcnn_chain_task t
        if tasks == 0:
            return
        if _whole_tasks(g, tasks, bands, num_threads):
            # each thread runs whole tasks in its own scratch (bands of
            # out_h / bands rows, rounded: none longer than the L2 budget's)
            with parallel(num_threads=num_threads):
                fp_enter()
                for task in prange(tasks, schedule='static'):
                    img = task // bands
                    oh0 = (task % bands) * g.out_h // bands
                    oh1 = (task % bands + 1) * g.out_h // bands
                    fcnn_chain_band(g, self.xp + img * x_image, pp + p0, pp + p1, self.clamp_e,
                                    self.hi_e, pp + p2, pp + p3, self.clamp_d, self.hi_d,
                                    pp + p4, pp + p5,
                                    rp + img * y_image if rp != NULL else NULL, self.clamp_p,
                                    self.hi_p, oh0, oh1, ws + threadid() * scratch,
                                    self.yp + img * y_image)
            return
        # few tasks (one image's few bands): the threads share each task in the
        # first thread's scratch, the expansion and depthwise steps split into
        # runs of whole tiles of channel blocks (each part reads back only what
        # it wrote: no barrier between them), the projection into runs of its
        # tiles; every output is the same sum either way
        for task in range(tasks):
            img = task // bands
            oh0 = (task % bands) * g.out_h // bands
            oh1 = (task % bands + 1) * g.out_h // bands
            with parallel(num_threads=num_threads):
                fp_enter()
                t = fcnn_chain_layout(g, oh0, oh1, ws, ws + threadid() * scratch)
                for unit in prange(num_threads, schedule='static'):
                    fcnn_chain_expand_depthwise_part(g, &t, self.xp + img * x_image, pp + p0,
                                                     pp + p1, self.clamp_e, self.hi_e, pp + p2,
                                                     pp + p3, self.clamp_d, self.hi_d, oh0, unit,
                                                     num_threads)
                for unit in prange(num_threads, schedule='static'):
                    fcnn_chain_project_part(g, &t, pp + p4, pp + p5,
                                            rp + img * y_image if rp != NULL else NULL,
                                            self.clamp_p, self.hi_p, oh0, unit, num_threads,
                                            self.yp + img * y_image)


def bind(tuple geom, bint expand, cnp.ndarray x, cnp.ndarray packed, object residual,
         cnp.ndarray y, int act_e, int act_d, int act_p, long l2_bytes):
    """The chain's run y = clamp_p(project(clamp_d(depthwise(clamp_e(expand(x)))))
    + residual), its arrays checked now: x (N, cin, x_h, x_w), y and residual
    (N, cout, out_h, out_w): float32, C-contiguous; packed from pack(). A plan
    binds each chain step to its buffers once."""
    cdef Bound r = Bound.__new__(Bound)
    r.g = _geom(geom, expand, l2_bytes)
    r.scratch = fcnn_chain_scratch(&r.g, r.g.band_rows)
    off = _offsets(&r.g)
    for name, a in (("input", x), ("packed weights", packed), ("output", y)) + (
            (("residual", residual),) if residual is not None else ()):
        if not isinstance(a, np.ndarray) or a.dtype != np.float32 or not a.flags.c_contiguous:
            raise ValueError(f"conv_chain: {name} must be a C-contiguous float32 array")
    r.n_img = x.shape[0] if x.ndim == 4 else -1
    if x.ndim != 4 or (x.shape[1], x.shape[2], x.shape[3]) != (r.g.xc, r.g.xh, r.g.xw):
        raise ValueError(f"conv_chain: expected input (N, {r.g.xc}, {r.g.xh}, {r.g.xw}), "
                         f"got {(<object>x).shape}")
    if (<object>y).shape != (r.n_img, r.g.cout, r.g.out_h, r.g.out_w):
        raise ValueError(f"conv_chain: expected output "
                         f"{(r.n_img, r.g.cout, r.g.out_h, r.g.out_w)}, got {(<object>y).shape}")
    if residual is not None and residual.shape != (<object>y).shape:
        raise ValueError(f"conv_chain: residual must be shaped as the output "
                         f"{(<object>y).shape}, got {residual.shape}")
    if packed.size < off[6]:
        raise ValueError("conv_chain: packed weights too small")
    for a in (act_e, act_d, act_p):
        if a not in _CLAMPS:
            raise ValueError(f"conv_chain: activation code {a} is not fused by the chain")
    r.clamp_e, r.hi_e = _CLAMPS[act_e]
    r.clamp_d, r.hi_d = _CLAMPS[act_d]
    r.clamp_p, r.hi_p = _CLAMPS[act_p]
    for k in range(6):
        r.off[k] = off[k]
    r.x_image = r.g.xc * r.g.xh * r.g.xw
    r.y_image = r.g.cout * r.g.out_h * r.g.out_w
    r.xp = <const float*>cnp.PyArray_DATA(x)
    r.pp = <const float*>cnp.PyArray_DATA(packed)
    r.yp = <float*>cnp.PyArray_DATA(y)
    r.rp = NULL if residual is None else <const float*>cnp.PyArray_DATA(<cnp.ndarray>residual)
    r.arrays = (x, packed, residual, y)
    return r


def forward(tuple geom, bint expand, cnp.ndarray x, cnp.ndarray packed, object residual,
            cnp.ndarray y, cnp.ndarray workspace, int act_e, int act_d, int act_p,
            int num_threads, long l2_bytes):
    """y = clamp_p(project(clamp_d(depthwise(clamp_e(expand(x))))) + residual):
    bind() and run once. workspace: num_threads x the scratch of plan()."""
    bind(geom, expand, x, packed, residual, y, act_e, act_d, act_p, l2_bytes)(
        workspace, num_threads)

"""Convolution kernels: 1x1 GEMM, im2col + GEMM, direct (depthwise), Winograd,
blocked (over pixels or output channels), depthwise over channels.

The Python layer validates everything; these trust their inputs. One parallel
region per call. GEMM paths: tasks are (image, group, column tile,
output-channel block); each thread gathers its own im2col tile into its slice
of the workspace (sized to stay in L2), runs a single-threaded GEMM on it, and
applies bias and the fused activation to the output tile while it is still in
cache. Direct path: one task per (image, output channel) plane. Winograd
F(4x4, 3x3): tasks are (image, block of tile rows); see that section.
"""
cimport numpy as cnp
from cython.parallel cimport parallel, prange, threadid
from fastcnn._kernels._omp cimport fp_enter
from libc.string cimport memset, memcpy
from cpython.mem cimport PyMem_Malloc, PyMem_Free

cdef extern from *:
    void __builtin_prefetch(const void* addr, int rw, int locality) nogil

from fastcnn._kernels._typedefs cimport floating, index_t
from fastcnn._kernels._blas cimport gemm, blas_enter, blas_leave, gemm_tasks, gemm_tiles
from fastcnn._kernels._activation cimport ACT_NONE, ACT_RELU, ACT_RELU6, bias_residual_activation
from libc.math cimport INFINITY
from fastcnn._kernels._transpose cimport transpose
from fastcnn._kernels._im2col cimport im2col_rows
from fastcnn._kernels._block_gemm cimport block_gemm, block_splat, block_vector
from fastcnn._kernels._winograd cimport wino_at, wino_input, wino_gt

cdef extern from "conv_block.h" nogil:
    enum:
        FCNN_HAS_FMA
        FCNN_BLOCK_OCB
        FCNN_BLOCK_QV
        FCNN_BLOCK_LANES_F32
        FCNN_BLOCK_LANES_F64
        FCNN_BLOCK_NARROW_OCB
        FCNN_BLOCK_NARROW_LANES_F32
        FCNN_BLOCK_NARROW_LANES_F64
        FCNN_POINT_OCB
        FCNN_POINT_LANES_F32
        FCNN_POINT_LANES_F64
        FCNN_OC_WIDE_P
        FCNN_OC_WIDE_V
        FCNN_OC_TALL_P
        FCNN_OC_TALL_V
        FCNN_OC_VL_F32
        FCNN_OC_VL_F64
    void fcnn_oc_kernel_f32_wide_s1(const float*, long, const float*, const long*, long, long, float*, int, const float*)
    void fcnn_oc_kernel_f32_wide_s2(const float*, long, const float*, const long*, long, long, float*, int, const float*)
    void fcnn_oc_kernel_f32_tall_s1(const float*, long, const float*, const long*, long, long, float*, int, const float*)
    void fcnn_oc_kernel_f32_tall_s2(const float*, long, const float*, const long*, long, long, float*, int, const float*)
    void fcnn_oc_kernel_f64_wide_s1(const double*, long, const double*, const long*, long, long, double*, int, const double*)
    void fcnn_oc_kernel_f64_wide_s2(const double*, long, const double*, const long*, long, long, double*, int, const double*)
    void fcnn_oc_kernel_f64_tall_s1(const double*, long, const double*, const long*, long, long, double*, int, const double*)
    void fcnn_oc_kernel_f64_tall_s2(const double*, long, const double*, const long*, long, long, double*, int, const double*)
    void fcnn_block_kernel_f32_point(const float* x, long ld_c, const float* w, const long* toff,
                                     long ntaps, long cin, float* out, long ld_out, int accumulate)
    void fcnn_block_kernel_f64_point(const double* x, long ld_c, const double* w,
                                     const long* toff, long ntaps, long cin, double* out,
                                     long ld_out, int accumulate)
    void fcnn_block_kernel_f32(const float* x, long ld_c, const float* w, const long* toff,
                               long ntaps, long cin, float* out, long ld_out, int accumulate)
    void fcnn_block_kernel_f64(const double* x, long ld_c, const double* w, const long* toff,
                               long ntaps, long cin, double* out, long ld_out,
                               int accumulate)
    void fcnn_block_kernel_f32_narrow(const float* x, long ld_c, const float* w,
                                      const long* toff, long ntaps, long cin, float* out,
                                      long ld_out, int accumulate)
    void fcnn_block_kernel_f64_narrow(const double* x, long ld_c, const double* w,
                                      const long* toff, long ntaps, long cin, double* out,
                                      long ld_out, int accumulate)

cdef extern from "conv_dw.h" nogil:
    enum:
        FCNN_DW_VL_F32
        FCNN_DW_VL_F64
    void fcnn_dw_rows_f32(const float* x, long planes, long in_h, long in_w, const float* w,
                          long kh, long kw, long sh, long sw, long ph, long pw, long dh,
                          long dw, long out_w, long oh0, long oh1, long wp, int has_bias,
                          const float* bias, int clamp, float lo, float hi, float* buf, float* out)
    void fcnn_dw3x3_plane_f32(float* y, const float* x, const float* zero, long in_h,
                              long in_w, long out_h, long out_w, long sh, long sw, long ph,
                              long pw, long lo, long hi, const float* w, float b)
    void fcnn_dw3x3_plane_f64(double* y, const double* x, const double* zero, long in_h,
                              long in_w, long out_h, long out_w, long sh, long sw, long ph,
                              long pw, long lo, long hi, const double* w, double b)
    long fcnn_dw3x3_workspace(long out_w, long vl, long stride)
    void fcnn_dw3x3_rows_f32(float* y, const float* x, long in_h, long in_w, long out_h,
                             long out_w, long ph, long pw, const float* w, float b,
                             int clamp, float lo, float hi, float* ws)
    void fcnn_dw3x3_rows_f64(double* y, const double* x, long in_h, long in_w, long out_h,
                             long out_w, long ph, long pw, const double* w, double b,
                             int clamp, double lo, double hi, double* ws)
    void fcnn_dw3x3_rows_s2_f32(float* y, const float* x, long in_h, long in_w, long out_h,
                                long out_w, long ph, long pw, const float* w, float b,
                                int clamp, float lo, float hi, float* ws)
    void fcnn_dw3x3_rows_s2_f64(double* y, const double* x, long in_h, long in_w,
                                long out_h, long out_w, long ph, long pw, const double* w,
                                double b, int clamp, double lo, double hi, double* ws)
    void fcnn_dw_rows_f64(const double* x, long planes, long in_h, long in_w, const double* w,
                          long kh, long kw, long sh, long sw, long ph, long pw, long dh,
                          long dw, long out_w, long oh0, long oh1, long wp, int has_bias,
                          const double* bias, int clamp, double lo, double hi, double* buf, double* out)

cnp.import_array()

# GEMM blocking. OpenBLAS multiplies small problems (m * n * k <= 1e6) with a
# kernel that skips packing (where its core has one: see _small_gemm), which
# beats its packed path on conv-sized matrices, so every GEMM is issued as blocks of at most
# GEMM_MB output channels x COL_TILE positions x GEMM_KB reduction, which
# keeps each call inside that limit (96 * 64 * 160 < 1e6).
# Below MIN_TASKS tasks, split the output channels too, so that both cores
# (and more) get work on batch-1 layers with small feature maps.
cdef enum:
    COL_TILE = 64
    MAX_COL_TILE = 2048
    GEMM_MB = 96
    GEMM_KB = 160
    MIN_TASKS = 8
    SHARED_COL_BYTES = 64 * 1024 * 1024   # limit on columns gathered up front
    DIRECT_WIDE_BELOW = 32                # depthwise 3x3 outputs this wide: padded rows
    WINO_MIN_TILES = 32
    # Tasks a Winograd layer is cut into at least (blocks of tile rows of one
    # image at batch 1): every task reads all the transformed weights again
    # and multiplies them over its tiles only, so fewer, larger tasks run
    # faster; four keep 1, 2 and 4 threads evenly busy. ResNet-18's 64-channel
    # 3x3 layer at 56x56, batch 1, compiled, 8 -> 4 tasks, both in one process
    # (two runs each, Xeon): AVX-512 1.58-1.61 -> 1.33-1.41 ms on 1 thread,
    # 0.80-0.81 -> 0.71-0.72 on 2; AVX2 1.74-1.79 -> 1.56-1.61, 0.88-0.91 -> 0.72-0.77.
    WINO_MIN_TASKS = 4
    # Unpacked weights (see _winograd_pays_unpacked): at least this many
    # channels, and this many tiles; or, with twice the channels and at most
    # WINO_FEW_TILES_FILTERS filters (36 x that many transformed), this many.
    WINO_MIN_CHANNELS = 64
    WINO_PACK_TILES = 160
    WINO_FEW_TILES = 48
    WINO_FEW_TILES_FILTERS = 256 * 256
    # With 8-lane vectors (AVX2), twice the channels need only this many tiles
    # (3x3 layers of 128-512 channels at 16-48 tiles: 1.2-1.8x faster than
    # blocked_oc, 1 and 2 threads; 8 tiles: 0.8-1.1x)
    WINO_NARROW_FEW_TILES = 16
    # At most this many tiles in all (batch-1 late layers): transform them once
    # into a shared V and give each task a block of output channels, so the
    # transformed weights are read once rather than once per task.
    WINO_SHARED_TILES = 64
    # 2x2 kernels: tiles an image at least (see _winograd_shape_pays); 7x7
    # planes (4 tiles) ran 1.2x slower than blocked_oc on SSE at batch 8
    WINO2_MIN_IMAGE_TILES = 16
    WINO2_MIN_IMAGE_TILES_WIDE = 64     # with 16-lane (64-byte) vectors
    BLOCK_PAD_BYTES = 64 * 1024 * 1024    # limit on the padded input held at once
    BLOCK_MAX_STRIDED_K = 256             # strided: blocked only for short reductions
    BLOCK_PACK_POSITIONS = 256            # unpacked weights: outputs per call to amortise packing
    BLOCK_MIN_REDUCTION = 72              # input channels x taps for blocked against a small GEMM
    OC_MIN_REDUCTION = 256                # input channels x taps for blocked_oc
    OC_PACK_POSITIONS = 128               # unpacked weights: outputs per call to amortise packing
    OC_INLINE_PACK_POSITIONS = 256        # up to this many outputs of one image: pack in the tasks
    OC_FEW_POSITIONS = 64                 # prepacked expanding 1x1 layers this small: blocked_oc
    BLOCK_MIN_STRIDED_TAPS = 16           # strided: blocked only for large kernels (stems)
    DW_MAX_OUT_W = 16                     # depthwise over channels for outputs this narrow

# Working sets sized from the core's caches (set_cache_sizes, called by the
# loader with the sizes the OS reports; these defaults assume a 48 KiB L1d and
# a 2 MiB L2): one chunk of blocked_oc's weights stays in L1 beside its input
# rows (2/3 of L1); a blocked_oc task's partial sums (4/3 of L1) and a
# depthwise task's padded rows and outputs (2 x L1) stream through L1 into L2.
cdef index_t _oc_weight_bytes = 32 * 1024
cdef index_t _oc_partial_bytes = 64 * 1024
cdef index_t _dw_task_bytes = 96 * 1024
cdef index_t _l2_bytes = 2048 * 1024
# A Winograd task's transformed tiles (V and M): three times L2. Every task
# reads all the transformed weights again, and its 36 products are as wide
# as its tiles, so fewer, larger tasks pay even when their tiles spill from L2
# to L3 (against 1.5 times L2, 1.1-1.25x on ResNet-18's 3x3 layers at batch 8
# and a U-Net 4x4 up-convolution, AVX2 and AVX-512; six times L2 gained no more).
cdef enum:
    WINO_BUDGET_L2S = 3
cdef index_t _wino_budget_bytes = WINO_BUDGET_L2S * _l2_bytes
# Whether the BLAS multiplies small matrices without packing them (OpenBLAS's
# SkylakeX-family kernels do; its Haswell/Zen kernels pack on every call). With
# such a GEMM, im2col and 1x1 GEMM win on small problems; without it, the
# direct kernels do: 1x1 layers whose weights fit in half of L2 (pointwise,
# blocked_oc when strided), stems with short reductions, one image's few outputs.
cdef bint _small_gemm = True


# Whether 16-lane (AVX-512) multiply-adds run at twice the 8-lane rate. Where
# they run on 256-bit units (set_wide_vectors_full_rate(False): AMD Zen 4) the
# direct kernels multiply at AVX2's rate, and Winograd pays as it does there
# (see _winograd_pays_unpacked): ResNet-18 at batch 1 on Zen 4, avx512, its
# layer3 3x3 layers (16 tiles of 256 channels) timed each way in one plan
# (autotune): 15.1 -> 13.8 ms on 2 threads.
cdef bint _wide_full_rate = True


def set_wide_vectors_full_rate(bint full_rate):
    """Tell the dispatcher whether 16-lane multiply-adds run at full rate."""
    global _wide_full_rate
    _wide_full_rate = full_rate


cdef inline bint _narrow_multiplies() noexcept nogil:
    """Whether the direct kernels multiply at the 8-lane rate."""
    return block_vector(4) < 16 or not _wide_full_rate


def set_blas_small_gemm(bint has_small_gemm):
    """Tell the dispatcher whether the BLAS has a small-matrix GEMM path."""
    global _small_gemm
    _small_gemm = has_small_gemm


def set_cache_sizes(l1d_bytes, l2_bytes):
    """Size the kernels' working sets for a core with these L1 data and L2
    caches (bytes, per core). Plans made afterwards use them."""
    global _oc_weight_bytes, _oc_partial_bytes, _dw_task_bytes, _l2_bytes, _wino_budget_bytes
    cdef index_t l1 = max(<index_t>8 * 1024, <index_t>l1d_bytes)
    cdef index_t l2 = max(<index_t>128 * 1024, <index_t>l2_bytes)
    _oc_weight_bytes = l1 * 2 // 3
    _oc_partial_bytes = l1 * 4 // 3
    _dw_task_bytes = l1 * 2
    _l2_bytes = l2
    _wino_budget_bytes = WINO_BUDGET_L2S * l2


def cache_budgets():
    """The working-set sizes in use, in bytes (for show_config and tests)."""
    return {"blocked_oc_weights": _oc_weight_bytes, "blocked_oc_partials": _oc_partial_bytes,
            "depthwise_task": _dw_task_bytes, "winograd_task": _wino_budget_bytes,
            "l2": _l2_bytes}


def dispatch_facts():
    """What the dispatcher knows beyond the shape (for show_config and tests)."""
    return {"blas_small_gemm": bool(_small_gemm),
            "blocked_oc_min_channels": FCNN_OC_WIDE_V * FCNN_OC_VL_F32,
            "fused_multiply_add": bool(FCNN_HAS_FMA),
            "splatted_weights": block_splat(4) > 1,
            "winograd_narrow_vectors": bool(FCNN_HAS_FMA) and _narrow_multiplies(),
            "winograd_2x2_min_image_tiles": _wino2_min_image_tiles()}


cdef inline index_t _ceil_div(index_t a, index_t b) noexcept nogil:
    return (a + b - 1) // b


cdef inline index_t _round_up(index_t a, index_t b) noexcept nogil:
    return _ceil_div(a, b) * b


cdef int conv_select_algorithm(const ConvGeom* g, bint weights_packed) noexcept nogil:
    """The dispatcher: one algorithm per shape. weights_packed says the caller
    holds prepacked (transformed) weights, which makes Winograd pay off sooner."""
    cdef index_t cin_group = g.in_channels // g.groups
    cdef index_t tiles
    if depthwise_applies(g) and g.out_w <= DW_MAX_OUT_W:
        return CONV_DEPTHWISE
    if g.groups > 1 and cin_group <= 4:
        return CONV_DIRECT
    if winograd_applies(g) and _winograd_shape_pays(g):
        tiles = g.batch * _ceil_div(g.out_h, 4) * _ceil_div(g.out_w, 4)
        # prepacked weights only take the transform's cost away: wherever
        # Winograd pays when each call transforms them, it pays here too
        if _winograd_pays_unpacked(g, tiles) or (weights_packed and tiles >= WINO_MIN_TILES):
            return CONV_WINOGRAD
    if pointwise_applies(g):
        if _few_positions_expanding(g, weights_packed):
            return CONV_BLOCKED_OC
        return CONV_POINTWISE if _pointwise_pays(g, weights_packed) else CONV_GEMM_1X1
    # one small image: each channel block's weights are read by one thread,
    # which packs them as it computes instead of in a pass of its own (still
    # only with enough outputs to amortise packing, where a small-matrix GEMM
    # makes im2col the better choice below that)
    if (not weights_packed and g.batch == 1
            and g.out_d * g.out_h * g.out_w <= OC_INLINE_PACK_POSITIONS
            and _blocked_oc_pays(g, False)):
        return CONV_BLOCKED_OC_UNPACKED
    if _blocked_oc_pays(g, weights_packed):
        return CONV_BLOCKED_OC
    if _blocked_pays(g, weights_packed):
        return CONV_BLOCKED
    return CONV_IM2COL


cdef inline index_t _wino2_min_image_tiles() noexcept nogil:
    return WINO2_MIN_IMAGE_TILES_WIDE if block_vector(4) >= 16 else WINO2_MIN_IMAGE_TILES


cdef inline bint _winograd_shape_pays(const ConvGeom* g) noexcept nogil:
    """Enough channels and tiles for Winograd's transforms to pay: 8 channels
    each for 3x3 kernels (4x fewer multiplies). 2x2 ones save 2.56x, so their
    transforms need more: 16 channels in and 32 out (24 -> 24 at 24x24
    measured 3x slower than blocked_oc on AVX2, 16 -> 32 at 32x32 as fast),
    and WINO2_MIN_IMAGE_TILES tiles an image (with 16-lane vectors, the
    transforms run across a tile row, 7 tiles at 28x28: there blocked_oc
    measured 1.2-1.4x faster at batch 8, slower from 32x32 up)."""
    cdef index_t tiles_image = _ceil_div(g.out_h, 4) * _ceil_div(g.out_w, 4)
    if g.kernel_h == 2:
        return (g.in_channels >= 16 and g.out_channels >= 32
                and tiles_image >= _wino2_min_image_tiles())
    return g.in_channels >= 8 and g.out_channels >= 8


cdef bint _winograd_pays_unpacked(const ConvGeom* g, index_t tiles) noexcept nogil:
    """Whether Winograd wins when each call transforms the weights first.
    Its 36 products per block of tiles run well only with enough channels on
    both sides (WINO_MIN_CHANNELS; below that the direct kernels win even on
    many tiles), and the transform writes 4x the weights, which tiles must
    amortise: WINO_PACK_TILES of them, or WINO_FEW_TILES while the
    transformed weights stay small (WINO_FEW_TILES_FILTERS filters). Without
    fused multiply-adds the direct kernels are slow enough that WINO_MIN_TILES
    pay, and WINO_PACK_TILES on any channels; with 8-lane vectors (or
    16-lane ones on 256-bit units, _narrow_multiplies), see
    WINO_NARROW_FEW_TILES."""
    cdef index_t channels = min(g.in_channels, g.out_channels)
    if not FCNN_HAS_FMA:
        return tiles >= (WINO_MIN_TILES if channels >= WINO_MIN_CHANNELS else WINO_PACK_TILES)
    if channels < WINO_MIN_CHANNELS:
        return False
    if _narrow_multiplies():
        # 8-lane vectors (or 16 at their rate): the direct kernels take twice
        # the time per multiply that full-rate 16 lanes take, while the
        # transforms and the packing stream memory at the same rate, so
        # Winograd pays on far fewer tiles
        return tiles >= (WINO_NARROW_FEW_TILES if channels >= 2 * WINO_MIN_CHANNELS
                         else WINO_MIN_TILES)
    if tiles >= WINO_PACK_TILES:
        return True
    return (channels >= 2 * WINO_MIN_CHANNELS and tiles >= WINO_FEW_TILES
            and g.in_channels * g.out_channels <= WINO_FEW_TILES_FILTERS)


cdef bint _blocked_oc_pays(const ConvGeom* g, bint weights_packed) noexcept nogil:
    """Output-channel blocking wins with enough output channels per group to
    fill one register tile's vectors, at stride 1 or 2. Against a small-matrix
    GEMM it also needs a kernel larger than 1x1, a reduction long enough to
    hide turning its tiles back into rows (or a large kernel, as in a 7x7
    stem) and, unpacked, enough positions to amortise packing the weights.
    Against a GEMM that packs on every call it wins on all of those too,
    1x1 layers included while their weights fit in half of L2."""
    cdef index_t taps = g.kernel_h * g.kernel_w
    if not blocked_oc_applies(g):
        return False
    if g.out_channels // g.groups < FCNN_OC_WIDE_V * FCNN_OC_VL_F32:
        return False
    if not _small_gemm:
        return taps > 1 or _weights_fit_half_l2(g)
    if taps == 1:
        return False
    # short reductions only for large kernels (stems: 3 channels x 49 taps)
    if (g.in_channels // g.groups) * taps < OC_MIN_REDUCTION and taps < BLOCK_MIN_STRIDED_TAPS:
        return False
    return weights_packed or g.batch * g.out_h * g.out_w >= OC_PACK_POSITIONS


cdef bint _few_positions_expanding(const ConvGeom* g, bint weights_packed) noexcept nogil:
    """A prepacked 1x1 layer over one small image that widens its channels
    (MobileNetV2's last 1x1 layers at 7x7) runs as blocked_oc: its weights
    stream once, prefetched a chunk ahead, into a few register tiles of
    positions, where a GEMM reads cold weights for 49 columns. In compiled
    MobileNetV2 at batch 1 (Xeon, AVX-512 and AVX2): 320->1280 0.55 -> 0.41 ms,
    160->960 0.21 -> 0.17 ms; at batch 8 and on narrowing layers (960->160)
    the GEMM stays ahead."""
    return (weights_packed and FCNN_HAS_FMA and blocked_oc_applies(g)
            and g.batch * g.out_d * g.out_h * g.out_w <= OC_FEW_POSITIONS
            and g.out_channels >= 2 * g.in_channels
            and g.out_channels >= FCNN_OC_WIDE_V * FCNN_OC_VL_F32)


cdef inline bint _weights_fit_half_l2(const ConvGeom* g) noexcept nogil:
    """Whether the (float32) weights fit in half of L2: direct kernels stream
    them once per block of outputs, which pays only while they stay there."""
    return (2 * g.out_channels * (g.in_channels // g.groups) * g.kernel_d * g.kernel_h
            * g.kernel_w * <index_t>sizeof(float) <= _l2_bytes)


cdef bint _pointwise_pays(const ConvGeom* g, bint weights_packed) noexcept nogil:
    """Against a GEMM that packs on every call, the pointwise kernel wins while
    the weights fit in half of L2; with its weights splatted (SSE, see
    conv_block.h: no shuffles, where the BLAS's SSE kernels shuffle) at any
    size, once they are packed ahead (packing them per call costs 4x)."""
    return not _small_gemm and (_weights_fit_half_l2(g)
                                or (weights_packed and block_splat(4) > 1))


cdef bint _blocked_pays(const ConvGeom* g, bint weights_packed) noexcept nogil:
    """The blocked kernel beats im2col + GEMM where gathering columns is the
    bottleneck (stride 1, or a large kernel over a stem's few input
    channels), as long as most of its lanes hold outputs; unpacked, the
    weights are repacked per call, which needs enough positions to amortise."""
    cdef index_t taps = g.kernel_h * g.kernel_w
    cdef index_t reach_w = ((g.kernel_w - 1) * g.dilation_w) // g.stride_w
    cdef index_t lanes, outputs, red, cout_group
    if not blocked_applies(g) or taps == 1:
        return False
    if not (g.stride_h == 1 and g.stride_w == 1) and (
            (g.in_channels // g.groups) * taps > BLOCK_MAX_STRIDED_K
            or taps < BLOCK_MIN_STRIDED_TAPS):
        return False
    # Against a small-matrix GEMM the blocked kernel needs a reduction long
    # enough to amortise each output tile's setup, unless the output channels
    # are fewer than one vector (the GEMM's rows mostly empty); and once they
    # fill two vectors, a tile of 4 vectors per weight load (AVX-512) and a
    # longer reduction still; a 2-vector tile (AVX2, SSE) then loses outright.
    red = (g.in_channels // g.groups) * taps
    cout_group = g.out_channels // g.groups
    if _small_gemm and (
            (cout_group >= FCNN_OC_VL_F32 and red < BLOCK_MIN_REDUCTION)
            or (cout_group >= 2 * FCNN_OC_VL_F32
                and (FCNN_BLOCK_QV < 4 or red < 2 * BLOCK_MIN_REDUCTION))):
        return False
    outputs = g.out_h * g.out_w
    lanes = _round_up((g.out_h - 1) * (g.out_w + reach_w) + g.out_w, FCNN_BLOCK_LANES_F32)
    if 2 * outputs < lanes:
        return False
    return weights_packed or g.batch * outputs >= BLOCK_PACK_POSITIONS


cdef ConvPlan conv_make_plan(const ConvGeom* g, int algorithm, index_t itemsize) noexcept nogil:
    cdef ConvPlan p
    cdef ConvGeom one
    if g.batch == 0:
        # An empty batch has no tasks, but its weight layout (block sizes) is
        # that of one image, so packing for it works as for any batch.
        one = _one_image(g)
        p = conv_make_plan(&one, algorithm, itemsize)
        p.n_tasks = 0
        return p
    if (g.batch < 0 or g.groups <= 0 or g.in_channels <= 0 or g.out_channels <= 0
            or g.out_d <= 0 or g.out_h <= 0 or g.out_w <= 0
            or g.in_channels % g.groups or g.out_channels % g.groups):
        memset(&p, 0, sizeof(ConvPlan))     # nothing to do (callers validate first)
        p.algorithm = algorithm
        return p
    p = _make_plan(g, algorithm, itemsize)
    # Whole cache lines per thread, plus one as a gap, so threads' scratch
    # never shares a line (false sharing stalls the small-plane kernels).
    if p.workspace_per_thread > 0:
        p.workspace_per_thread = _round_up(p.workspace_per_thread, 16) + 16
    return p


cdef ConvPlan _make_plan(const ConvGeom* g, int algorithm, index_t itemsize) noexcept nogil:
    cdef ConvPlan p
    cdef index_t cin_group = g.in_channels // g.groups
    cdef index_t m_group = g.out_channels // g.groups
    cdef index_t k = cin_group * g.kernel_d * g.kernel_h * g.kernel_w
    cdef index_t positions = g.out_d * g.out_h * g.out_w
    cdef index_t units, tile, work, parts
    p.algorithm = algorithm
    p.workspace_per_thread = 0
    p.workspace_shared = 0
    p.shared_col = False
    if algorithm == CONV_WINOGRAD:
        _winograd_plan(g, itemsize, &p)
        return p
    if algorithm == CONV_BLOCKED:
        _blocked_plan(g, itemsize, &p)
        return p
    if algorithm == CONV_POINTWISE:
        _pointwise_plan(g, itemsize, &p)
        return p
    if algorithm == CONV_BLOCKED_OC or algorithm == CONV_BLOCKED_OC_UNPACKED:
        _blocked_oc_plan(g, itemsize, &p)
        if algorithm == CONV_BLOCKED_OC_UNPACKED:
            # after the partial sums: the packed block (16-element aligned),
            # and its key (block index + 1; 0: none yet) in the 16 before it
            p.oc_pack_offset = _round_up(p.workspace_per_thread, 16) + 16
            p.workspace_per_thread = p.oc_pack_offset + k * p.m_block
        return p
    if algorithm == CONV_DEPTHWISE:
        _depthwise_plan(g, itemsize, &p)
        return p
    if algorithm == CONV_DIRECT:
        p.col_tile = positions
        p.n_col_tiles = 1
        p.m_block = 1
        p.n_m_blocks = m_group
        p.n_tasks = g.batch * g.out_channels
        # a row of zeros for the padding rows, the padded plane of narrow
        # outputs or the padded rows of wide ones
        p.workspace_per_thread = g.in_w
        if _direct_wide(g):
            p.workspace_per_thread = max(g.in_w, _wide_scratch(g))
        elif _direct_rows(g):
            p.workspace_per_thread = max(g.in_w, fcnn_dw3x3_workspace(
                g.out_w, _dw_lanes(itemsize), g.stride_w))
        return p
    if algorithm == CONV_GEMM_1X1 and not _small_gemm:
        _packed_gemm_1x1_plan(g, &p)
        return p
    # Tiles a multiple of 16 wide (the GEMM kernel's vector), the last one shorter.
    # With few output channels and a short reduction, widen the tiles so each
    # GEMM call still does about as much work as GEMM_MB x COL_TILE x GEMM_KB:
    # per-call overhead would dominate tiny calls.
    tile = COL_TILE
    work = min(m_group, <index_t>GEMM_MB) * min(k, <index_t>GEMM_KB)
    if work * COL_TILE < GEMM_MB * COL_TILE * GEMM_KB // 2:
        tile = min(<index_t>MAX_COL_TILE, max(<index_t>COL_TILE,
                                             (GEMM_MB * COL_TILE * GEMM_KB) // work // 16 * 16))
    p.n_col_tiles = max(1, _ceil_div(positions, tile))
    p.col_tile = max(1, min(positions, _round_up(_ceil_div(positions, p.n_col_tiles), 16)))
    p.n_col_tiles = max(1, _ceil_div(positions, p.col_tile))
    p.m_block = m_group
    p.n_m_blocks = 1
    p.shared_col = False
    p.workspace_shared = 0
    units = g.batch * g.groups * p.n_col_tiles
    if 0 < units < MIN_TASKS and m_group >= 32:
        # Few tiles (batch 1, small maps): split the output channels so every
        # thread has work, and with im2col gather each tile once up front for
        # all the channel blocks rather than once per block.
        p.shared_col = (algorithm == CONV_IM2COL
                        and units * k * p.col_tile * itemsize <= SHARED_COL_BYTES)
        if p.shared_col or algorithm == CONV_GEMM_1X1:
            p.m_block = max(16, _round_up(_ceil_div(m_group, MIN_TASKS), 16))
    elif algorithm == CONV_GEMM_1X1 and units > 1:
        # Weights larger than half of L2 (late 1x1 layers, over several
        # images or tiles): blocks of output channels whose weights stay in
        # L2 while a thread's consecutive tasks take them over every image
        # and tile, instead of streaming them all in again for each.
        parts = _ceil_div(m_group * k * itemsize, _l2_bytes // 2)
        if parts > 1:
            p.m_block = max(16, _round_up(_ceil_div(m_group, parts), 16))
    p.n_m_blocks = _ceil_div(m_group, p.m_block)
    p.n_tasks = units * p.n_m_blocks
    if algorithm == CONV_IM2COL:
        if p.shared_col:
            p.workspace_shared = units * k * p.col_tile
        else:
            p.workspace_per_thread = k * p.col_tile
    return p


cdef void _packed_gemm_1x1_plan(const ConvGeom* g, ConvPlan* p) noexcept nogil:
    """1x1 by GEMM with a BLAS that packs both operands on every call: a few
    large, square tiles per layer (gemm_tiles), each one GEMM call, instead
    of the small blocks a small-matrix kernel wants, which would pack the
    weights again for every 64 positions."""
    cdef index_t m_group = g.out_channels // g.groups
    cdef index_t k = g.in_channels // g.groups
    cdef index_t positions = g.out_d * g.out_h * g.out_w
    cdef index_t units = g.batch * g.groups
    cdef index_t want = _ceil_div(gemm_tasks(<double>units * m_group * positions * k), units)
    gemm_tiles(m_group, positions, want, &p.m_block, &p.col_tile)
    p.n_col_tiles = _ceil_div(positions, p.col_tile)
    p.n_m_blocks = _ceil_div(m_group, p.m_block)
    p.n_tasks = units * p.n_col_tiles * p.n_m_blocks
    p.shared_col = False


cdef inline index_t _ceil_div_stride(index_t a, index_t stride) noexcept nogil:
    """ceil(a / stride) for a >= 0, without a division for the common strides."""
    if stride == 1:
        return a
    if stride == 2:
        return (a + 1) >> 1
    return (a + stride - 1) // stride


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
                               index_t ldc) noexcept nogil:
    """Row-major C[m, n] (ld ldc) = A[m, k] (ld k) @ B[k, n] (ld ldb), issued as
    balanced blocks of at most GEMM_MB x n x GEMM_KB for a small-matrix GEMM
    (see the constants), as one call to a BLAS that packs its operands."""
    cdef index_t n_mb = _ceil_div(m, GEMM_MB), n_kb = _ceil_div(k, GEMM_KB)
    cdef index_t mb, kb
    cdef index_t i, l, i0, l0
    if not _small_gemm:             # a packing GEMM blocks for itself
        n_mb = n_kb = 1
    mb = _ceil_div(m, n_mb)
    kb = _ceil_div(k, n_kb)
    for i in range(n_mb):
        i0 = i * mb
        for l in range(n_kb):
            l0 = l * kb
            gemm(False, False, <int>min(mb, m - i0), <int>n, <int>min(kb, k - l0),
                 <floating>1, a + i0 * k + l0, <int>k, b + l0 * ldb, <int>ldb,
                 <floating>(0 if l == 0 else 1), c + i0 * ldc, <int>ldc)


cdef inline void _gemm_tile(const ConvGeom* g, const ConvPlan* plan, index_t n,
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
    _gemm_blocked(mcount, ncols, k, w + m0 * k, b_op, ldb, yt, positions)
    for m in range(mcount):
        bias_residual_activation(yt + m * positions, ncols,
                                 bias[m0 + m] if bias != NULL else 0, bias != NULL,
                                 res + (yt - y) + m * positions if res != NULL else NULL,
                                 activation)


cdef void _gemm_task(const ConvGeom* g, const ConvPlan* plan, const floating* x,
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
    if plan.algorithm == CONV_GEMM_1X1:
        _gemm_tile(g, plan, n, grp, tile, mb, xg + p0, positions, w, bias, y, res, activation)
    elif plan.shared_col:
        _gemm_tile(g, plan, n, grp, tile, mb, col + unit * k * plan.col_tile, ncols,
                   w, bias, y, res, activation)
    else:
        vol2col_tile(g, xg, p0, ncols, 0, cin_group, col)
        _gemm_tile(g, plan, n, grp, tile, mb, col, ncols, w, bias, y, res, activation)


cdef void _gather_columns(const ConvGeom* g, const ConvPlan* plan, const floating* x,
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
                            lo = 0 if iw0 >= 0 else min(out_w, _ceil_div_stride(-iw0, stride_w))
                            hi = 0 if iw0 >= in_w else min(out_w, _ceil_div_stride(in_w - iw0, stride_w))
                            if stride_w == 1:
                                for j in range(lo, hi):
                                    yrow[j] += wv * src[iw0 + j]
                            else:
                                for j in range(lo, hi):
                                    yrow[j] += wv * src[iw0 + j * stride_w]
            for j in range(out_w):
                yrow[j] = yrow[j] + b


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


cdef inline double _clamp_top(int activation) noexcept nogil:
    """The upper bound of the clamp the depthwise kernels apply for ReLU
    (none) and ReLU6 (6); their lower bound is 0."""
    return 6 if activation == ACT_RELU6 else INFINITY


cdef inline void _direct_plane_3x3_rows(const ConvGeom* g, const floating* xc,
                                        const floating* wk, floating b, floating* yp,
                                        floating* ws, int activation) noexcept nogil:
    """Wide 3x3 depthwise outputs at stride 1 or 2: whole vectors over
    zero-padded rows (conv_dw.h), with ReLU or ReLU6 (or no activation)
    applied as each vector is stored."""
    cdef int clamp = activation == ACT_RELU or activation == ACT_RELU6
    cdef floating lo = 0, hi = _clamp_top(activation)
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
    lo = min(out_w, _ceil_div_stride(pw, s))
    hi = max(lo, min(out_w, (in_w - 3 + pw) // s + 1)) if in_w + pw >= 3 else lo
    if floating is float:
        fcnn_dw3x3_plane_f32(yp, xc, zero_row, g.in_h, in_w, g.out_h, out_w, g.stride_h, s,
                             g.pad_h, pw, lo, hi, wk, b)
    else:
        fcnn_dw3x3_plane_f64(yp, xc, zero_row, g.in_h, in_w, g.out_h, out_w, g.stride_h, s,
                             g.pad_h, pw, lo, hi, wk, b)


# ---------------------------------------------------------------- depthwise over channels
#
# Small depthwise planes (7x7, 14x14) leave a per-plane kernel only short rows
# to vectorise; here vector lanes hold channels (conv_dw.h). A task pads and
# interleaves the input rows its output rows need, for one block of channels,
# computes every output position as one vector per tap, and writes the
# channels' rows back, with bias, residual and activation.

cdef bint depthwise_applies(const ConvGeom* g) noexcept nogil:
    return (blocked_applies(g) and g.groups == g.in_channels
            and g.groups == g.out_channels)


cdef inline index_t _dw_lanes(index_t itemsize) noexcept nogil:
    return FCNN_DW_VL_F32 if itemsize == 4 else FCNN_DW_VL_F64


cdef inline index_t _dw_rows_read(const ConvGeom* g, index_t out_rows) noexcept nogil:
    return (out_rows - 1) * g.stride_h + (g.kernel_h - 1) * g.dilation_h + 1


cdef void _depthwise_plan(const ConvGeom* g, index_t itemsize, ConvPlan* p) noexcept nogil:
    cdef index_t vl = _dw_lanes(itemsize)
    cdef index_t units, rows, row_bytes
    p.m_block = vl
    p.n_m_blocks = _ceil_div(g.out_channels, vl)
    p.wq = (g.out_w - 1) * g.stride_w + (g.kernel_w - 1) * g.dilation_w + 1
    # rows per task: its padded input rows and outputs within _dw_task_bytes
    row_bytes = (g.stride_h * p.wq + g.out_w) * vl * itemsize
    rows = max(1, min(g.out_h, _dw_task_bytes // row_bytes))
    units = g.batch * p.n_m_blocks
    if units * _ceil_div(g.out_h, rows) < MIN_TASKS:
        rows = max(1, _ceil_div(g.out_h, _ceil_div(MIN_TASKS, units)))
    p.rows_per_task = rows
    p.row_blocks = _ceil_div(g.out_h, rows)
    p.n_tasks = units * p.row_blocks
    p.workspace_per_thread = (_dw_rows_read(g, rows) * p.wq + rows * g.out_w) * vl


cdef void _depthwise_task(const ConvGeom* g, const ConvPlan* plan, const floating* x,
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
    cdef floating lo = 0, hi = _clamp_top(activation)
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


# ---------------------------------------------------------------- Winograd F(4x4, 3x3), F(4x4, 2x2)
#
# Y = A^T [(G g G^T) . (B^T d B)] A per a x a input tile d and 4x4 output tile,
# a = 6 for 3x3 kernels (Lavin and Gray, points 0, +-1, +-2, inf) and a = 5
# for 2x2 ones (points 0, +-1, 2, inf: 25 products for 64 multiplies; the
# phases of a 3x3 stride-2 transposed convolution, merged, are one such
# convolution). The weights are packed once as
# U[xi][out block][in][FCNN_BLOCK_OCB][splat] (xi = a^2 transform points; the output
# channels padded to whole blocks). A task takes a block of tile rows of one
# image: transform its tiles into V[xi][in][tile], run a^2 products
# M[xi] = U[xi] @ V[xi] with the register-blocked kernel (conv_block.h: V is
# read as it lies and U is already in the kernel's order, so nothing is
# repacked per call, as a BLAS GEMM would), and transform M back into output
# rows, adding bias and the activation before they are written. Transforms
# run along tile rows so the compiler vectorises them across tiles. Rows of V
# and M are padded to whole vectors (_wino_ld), the padding of V zeroed.

cdef bint winograd_applies(const ConvGeom* g) noexcept nogil:
    return (g.groups == 1 and g.kernel_d == 1 and g.kernel_h == g.kernel_w
            and (g.kernel_h == 3 or g.kernel_h == 2)
            and g.stride_h == 1 and g.stride_w == 1 and g.stride_d == 1
            and g.dilation_h == 1 and g.dilation_w == 1
            and g.in_d == 1 and g.out_d == 1 and g.pad_d == 0)


cdef inline index_t _wino_points(const ConvGeom* g) noexcept nogil:
    """Transform points per tile: a^2, a = 4 + kernel - 1."""
    return (g.kernel_h + 3) * (g.kernel_h + 3)


cdef inline ConvGeom _one_image(const ConvGeom* g) noexcept nogil:
    cdef ConvGeom one = g[0]
    one.batch = 1
    return one


cdef index_t conv_packed_size(const ConvGeom* g, int algorithm, index_t itemsize) noexcept nogil:
    cdef ConvPlan p
    cdef ConvGeom one
    if g.batch == 0:            # the layout of one image (see conv_make_plan)
        one = _one_image(g)
        return conv_packed_size(&one, algorithm, itemsize)
    if algorithm == CONV_WINOGRAD:
        return (_wino_points(g) * _round_up(g.out_channels, FCNN_BLOCK_OCB) * g.in_channels
                * block_splat(itemsize))
    if algorithm == CONV_POINTWISE:
        return (g.groups * _ceil_div(g.out_channels // g.groups, FCNN_POINT_OCB) * FCNN_POINT_OCB
                * (g.in_channels // g.groups) * g.kernel_d * g.kernel_h * g.kernel_w
                * block_splat(itemsize))
    if algorithm == CONV_BLOCKED or algorithm == CONV_BLOCKED_OC:
        p = conv_make_plan(g, algorithm, itemsize)      # its channel blocks, as packing's
        return (g.groups * p.n_m_blocks * p.m_block * (g.in_channels // g.groups)
                * g.kernel_h * g.kernel_w * (block_splat(itemsize) if algorithm == CONV_BLOCKED else 1))
    if algorithm == CONV_DEPTHWISE:
        return _round_up(g.out_channels, _dw_lanes(itemsize)) * g.kernel_h * g.kernel_w
    return 0


cdef inline index_t _wino_scratch(const ConvGeom* g, index_t tiles_w, index_t tiles) noexcept nogil:
    # half transforms (a^2 rows of the block's tiles), the 4 column phases of an
    # input row, and one output row
    return _wino_points(g) * tiles + 4 * (tiles_w + 1) + 4 * tiles_w


cdef inline index_t _wino_ld(index_t tiles, index_t itemsize) noexcept nogil:
    """Elements per row of V and M: the tiles in whole vectors (the kernel
    reads and writes whole vectors)."""
    return _round_up(tiles, block_vector(itemsize))


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


cdef void _winograd_plan(const ConvGeom* g, index_t itemsize, ConvPlan* p) noexcept nogil:
    cdef index_t points = _wino_points(g)
    cdef index_t per_tile = points * (g.in_channels + g.out_channels) * itemsize
    cdef index_t rows_budget, want_blocks, tiles_image, total, ld
    p.tiles_h = _ceil_div(g.out_h, 4)
    p.tiles_w = _ceil_div(g.out_w, 4)
    tiles_image = p.tiles_h * p.tiles_w
    total = g.batch * tiles_image
    p.col_tile = p.n_col_tiles = 0
    p.wino_shared = total <= WINO_SHARED_TILES and g.out_channels >= 32
    if p.wino_shared:
        p.rows_per_task = p.tiles_h
        p.tasks_per_image = 1
        p.tiles_per_task = total
        # MIN_TASKS channel blocks of at least 16 channels, whole kernel
        # blocks dealt out evenly (see _winograd_shared_task); m_block: the largest
        p.n_m_blocks = max(1, min(<index_t>MIN_TASKS, g.out_channels // 16))
        p.m_block = _ceil_div(_ceil_div(g.out_channels, FCNN_BLOCK_OCB), p.n_m_blocks) * FCNN_BLOCK_OCB
        p.n_tasks = p.n_m_blocks
        # shared: V for every tile; per thread: M for one channel block, and
        # the transforms' scratch for one image
        ld = _wino_ld(total, itemsize)
        p.workspace_shared = points * g.in_channels * ld
        p.workspace_per_thread = points * p.m_block * ld + _wino_scratch(g, p.tiles_w, tiles_image)
        return
    rows_budget = max(1, _wino_budget_bytes // (per_tile * p.tiles_w))
    want_blocks = _ceil_div(WINO_MIN_TASKS, g.batch)
    p.tasks_per_image = min(p.tiles_h, max(want_blocks, _ceil_div(p.tiles_h, rows_budget)))
    # The rows dealt out evenly (14 rows in 4 blocks: 4 3 4 3, see
    # _winograd_task); rows_per_task: the most a block has.
    p.rows_per_task = _ceil_div(p.tiles_h, p.tasks_per_image)
    p.tiles_per_task = p.rows_per_task * p.tiles_w
    p.n_tasks = g.batch * p.tasks_per_image
    ld = _wino_ld(p.tiles_per_task, itemsize)
    p.workspace_per_thread = (points * (g.in_channels + _round_up(g.out_channels, FCNN_BLOCK_OCB))
                              * ld + _wino_scratch(g, p.tiles_w, ld))
    p.m_block = p.n_m_blocks = 0


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


cdef void _winograd_pack(const ConvGeom* g, const floating* w, floating* u,
                         int num_threads) noexcept nogil:
    """U[xi][block][c][o] = (G g G^T)[xi] for each filter g = w[block
    OCB + o, c] (zero past the last output channel), by chunks of a block's
    filters (see _winograd_pack_chunk)."""
    cdef index_t cin = g.in_channels, rows = _round_up(g.out_channels, FCNN_BLOCK_OCB)
    cdef index_t per_chunk = WINO_PACK_CHUNK // FCNN_BLOCK_OCB
    cdef index_t n_chunks = _ceil_div(cin, per_chunk)
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
    cdef index_t cin = g.in_channels, rows = _round_up(g.out_channels, FCNN_BLOCK_OCB)
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
        _splat_in_place(dst, n, splat)


cdef inline void _wino_output(const ConvGeom* g, const floating* mo, index_t ld_xi,
                              index_t th0, index_t th1, index_t tiles_w, index_t ld,
                              floating* tmp, floating* rows, floating* yc,
                              const floating* rc, floating bias, bint has_bias,
                              int activation) noexcept nogil:
    """Output rows 4*th0 .. 4*th1-1 of one channel from M[xi * ld_xi + t]."""
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
    # then A^T along each tile row, stored interleaved as output rows (straight
    # into y when the tiles cover the row exactly), then bias and activation
    for th in range(th0, th1):
        for i in range(4):
            oh = 4 * th + i
            if oh >= g.out_h:
                break
            dst = yc + oh * g.out_w if direct else rows
            src = tmp + (i * a) * ld + (th - th0) * tiles_w
            wino_at(a, src, src + ld, src + 2 * ld, src + 3 * ld, src + 4 * ld, src + 5 * ld,
                     dst, 1, 4, tiles_w)
            bias_residual_activation(dst, g.out_w, bias, has_bias,
                                     rc + oh * g.out_w if rc != NULL else NULL, activation)
            if not direct:
                memcpy(yc + oh * g.out_w, rows, g.out_w * sizeof(floating))


cdef void _winograd_task(const ConvGeom* g, const ConvPlan* plan, const floating* x,
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
    cdef index_t ld = _wino_ld(tb, sizeof(floating)), rows_u = _round_up(cout, FCNN_BLOCK_OCB)
    cdef floating* v = ws                          # V[xi][c][tile], xi stride cin * ld
    cdef index_t points = _wino_points(g)
    cdef floating* mo = v + points * cin * ld      # M[xi][m][tile], xi stride rows_u * ld
    cdef floating* tmp = mo + points * rows_u * ld
    cdef floating* phase = tmp + points * ld
    cdef floating* rows = phase + 4 * (tw_count + 1)
    cdef index_t c, m
    cdef const floating* xn = x + n * cin * in_plane
    cdef floating* yn = y + n * cout * out_plane
    for c in range(cin):
        wino_input(g.kernel_h + 3, g.in_h, g.in_w, g.pad_h, g.pad_w, xn + c * in_plane, th0, th1, tw_count, ld, phase, tmp,
                    v + c * ld, cin * ld, _wino_ld(ntiles, sizeof(floating)) - ntiles)
    _wino_products(points, u, rows_u, v, mo, rows_u, rows_u, cin, ntiles, ld)
    for m in range(cout):
        _wino_output(g, mo + m * ld, rows_u * ld, th0, th1, tw_count, ld, tmp, rows,
                     yn + m * out_plane,
                     res + (n * cout + m) * out_plane if res != NULL else NULL,
                     bias[m] if bias != NULL else 0, bias != NULL, activation)


cdef void _winograd_shared_input(const ConvGeom* g, const ConvPlan* plan, const floating* x,
                                 floating* v, floating* ws, index_t task) noexcept nogil:
    """Shared Winograd, phase 1: the tiles of one (image, channel) into V."""
    cdef index_t tiles_image = plan.tiles_h * plan.tiles_w, tt = plan.tiles_per_task
    cdef index_t ld = _wino_ld(tt, sizeof(floating))
    cdef index_t n = task // g.in_channels, c = task % g.in_channels
    cdef floating* tmp = ws + _wino_points(g) * plan.m_block * ld
    cdef floating* phase = tmp + _wino_points(g) * tiles_image
    wino_input(g.kernel_h + 3, g.in_h, g.in_w, g.pad_h, g.pad_w, x + (n * g.in_channels + c) * g.in_h * g.in_w, 0, plan.tiles_h, plan.tiles_w,
                tiles_image, phase, tmp, v + c * ld + n * tiles_image, g.in_channels * ld,
                ld - tt if n == g.batch - 1 else 0)


cdef void _winograd_shared_task(const ConvGeom* g, const ConvPlan* plan, const floating* u,
                                const floating* bias, const floating* v, floating* y,
                                const floating* res, floating* ws, int activation,
                                index_t task) noexcept nogil:
    """Shared Winograd, phase 2: one block of output channels over every tile."""
    cdef index_t cin = g.in_channels, cout = g.out_channels, tt = plan.tiles_per_task
    cdef index_t tiles_image = plan.tiles_h * plan.tiles_w
    cdef index_t ld = _wino_ld(tt, sizeof(floating)), rows_u = _round_up(cout, FCNN_BLOCK_OCB)
    cdef index_t units = rows_u // FCNN_BLOCK_OCB
    # the kernel's blocks of channels dealt out evenly over the tasks
    cdef index_t m0 = task * units // plan.n_tasks * FCNN_BLOCK_OCB
    cdef index_t mb = min((task + 1) * units // plan.n_tasks * FCNN_BLOCK_OCB, cout) - m0
    cdef floating* mo = ws                          # M[xi][m][tile], xi stride m_block * ld
    cdef index_t points = _wino_points(g)
    cdef floating* tmp = mo + points * plan.m_block * ld
    cdef floating* rows = tmp + points * tiles_image + 4 * (plan.tiles_w + 1)
    cdef index_t m, n
    _wino_products(points, u + m0 * cin * block_splat(sizeof(floating)), rows_u, v, mo,
                   plan.m_block, _round_up(mb, FCNN_BLOCK_OCB), cin, tt, ld)
    for m in range(mb):
        for n in range(g.batch):
            _wino_output(g, mo + m * ld + n * tiles_image, plan.m_block * ld, 0, plan.tiles_h,
                         plan.tiles_w, tiles_image, tmp, rows,
                         y + (n * cout + m0 + m) * g.out_h * g.out_w,
                         res + (n * cout + m0 + m) * g.out_h * g.out_w if res != NULL else NULL,
                         bias[m0 + m] if bias != NULL else 0, bias != NULL, activation)



# ---------------------------------------------------------------- blocked direct

# Each image channel is copied once into a zero-padded plane, split into
# stride_h x stride_w phase planes (phase (a, b) holds padded rows a, a + s_h,
# ... and columns b, b + s_w, ...). Then output (oh, ow) is lane
# q = oh * wq + ow, and tap (kh, kw) of every lane reads phase
# ((kh d_h) % s_h, (kw d_w) % s_w) at q + ((kh d_h) // s_h) wq + (kw d_w) // s_w:
# a fixed offset, so the kernel (conv_block.h) reads each tap of a block of
# lanes as whole vectors. Lanes with ow >= out_w are computed and dropped.

cdef inline index_t _tap_offsets_size(const ConvGeom* g, index_t itemsize) noexcept nogil:
    """Workspace elements holding the blocked kernels' tap offsets (longs),
    first in the shared workspace, a whole number of cache lines."""
    return _round_up(_ceil_div(g.kernel_h * g.kernel_w * <index_t>sizeof(long), itemsize),
                     64 // itemsize)


cdef bint blocked_applies(const ConvGeom* g) noexcept nogil:
    return g.in_d == 1 and g.kernel_d == 1 and g.out_d == 1 and g.pad_d == 0


cdef inline index_t _block_lanes(index_t itemsize, bint narrow=False) noexcept nogil:
    if narrow:
        return FCNN_BLOCK_NARROW_LANES_F32 if itemsize == 4 else FCNN_BLOCK_NARROW_LANES_F64
    return FCNN_BLOCK_LANES_F32 if itemsize == 4 else FCNN_BLOCK_LANES_F64


cdef inline bint _block_narrow(index_t m_group) noexcept nogil:
    """Whether the narrow tile (half the channels, more lanes) pads a
    group's output channels less than the wide one; ties go wide."""
    return (_round_up(m_group, FCNN_BLOCK_NARROW_OCB) < _round_up(m_group, FCNN_BLOCK_OCB))


cdef void _blocked_plan(const ConvGeom* g, index_t itemsize, ConvPlan* p) noexcept nogil:
    cdef index_t reach_h = ((g.kernel_h - 1) * g.dilation_h) // g.stride_h
    cdef index_t reach_w = ((g.kernel_w - 1) * g.dilation_w) // g.stride_w
    cdef index_t m_group = g.out_channels // g.groups
    cdef bint narrow = _block_narrow(m_group)
    cdef index_t lanes = _block_lanes(itemsize, narrow)
    cdef index_t image
    p.wq = g.out_w + reach_w
    p.hq = g.out_h + reach_h
    p.lanes = (g.out_h - 1) * p.wq + g.out_w
    # the last block of lanes reads up to `lanes` past the last phase plane
    p.channel_stride = _round_up(g.stride_h * g.stride_w * p.hq * p.wq + lanes, 16)
    p.col_tile = lanes
    p.n_col_tiles = _ceil_div(p.lanes, lanes)
    p.m_block = FCNN_BLOCK_NARROW_OCB if narrow else FCNN_BLOCK_OCB
    p.n_m_blocks = _ceil_div(m_group, p.m_block)
    image = g.in_channels * p.channel_stride
    p.images_per_chunk = max(1, min(g.batch, BLOCK_PAD_BYTES // (image * itemsize)))
    p.n_tasks = g.batch * g.groups * p.n_m_blocks * p.n_col_tiles
    p.workspace_shared = _tap_offsets_size(g, itemsize) + p.images_per_chunk * image
    p.workspace_per_thread = p.m_block * lanes


cdef void _pack_block_columns(const floating* src, index_t k, index_t valid, index_t mb,
                              index_t j0, index_t j1, floating* dst) noexcept nogil:
    """Columns j0 ... j1 - 1 of one block: dst[j][o] = src[o * k + j] for the
    block's `valid` channels (register transposes), zero up to mb."""
    cdef index_t j, o
    transpose(src + j0, k, valid, j1 - j0, dst + j0 * mb, mb)
    if valid < mb:
        for j in range(j0, j1):
            for o in range(valid, mb):
                dst[j * mb + o] = 0


cdef void _pack_channel_blocks(const floating* w, index_t groups, index_t m_group, index_t k,
                               index_t mb, index_t splat, floating* packed,
                               int num_threads) noexcept nogil:
    """packed[group][channel block][i][o][s] = w[group, block * mb + o, i] for
    the (groups, m_group, k) weights, zero past the group's last channel: the
    layout the blocked and depthwise kernels read (mb channels per block,
    `splat` copies of each: see conv_block.h); blocks are packed in parallel."""
    cdef index_t nb = _ceil_div(m_group, mb)
    cdef index_t blk
    for blk in prange(groups * nb, num_threads=num_threads, schedule='static'):
        _pack_block_columns(w + ((blk // nb) * m_group + (blk % nb) * mb) * k, k,
                            min(mb, m_group - (blk % nb) * mb), mb, 0, k,
                            packed + blk * k * mb * splat)
        _splat_in_place(packed + blk * k * mb * splat, k * mb, splat)


cdef inline void _splat_in_place(floating* p, index_t n, index_t splat) noexcept nogil:
    """p[i * splat + s] = p[i] for the first n values (from the last down)."""
    cdef index_t i, s
    if splat == 1:
        return
    i = n
    while i > 0:
        i -= 1
        for s in range(splat):
            p[i * splat + s] = p[i]


cdef void _pad_channel(const ConvGeom* g, const ConvPlan* plan, index_t sh, index_t sw,
                       const floating* xc, floating* dst) noexcept nogil:
    """One input channel into sh x sw padded phase planes of plan.hq rows of
    plan.wq (zero outside the input); one plane when sh = sw = 1."""
    cdef index_t wq = plan.wq, hq = plan.hq
    cdef index_t a, bph, i, j, r, ih, iw, j0, j1
    cdef floating* prow
    cdef const floating* src
    memset(dst, 0, plan.channel_stride * sizeof(floating))
    for a in range(sh):
        for i in range(hq):
            r = i * sh + a                      # padded row
            ih = r - g.pad_h
            if ih < 0 or ih >= g.in_h:
                continue
            src = xc + ih * g.in_w
            for bph in range(sw):
                prow = dst + ((a * sw + bph) * hq + i) * wq
                # column j holds input column j * sw + bph - pad_w, valid in [0, in_w)
                j0 = _ceil_div_stride(max(<index_t>0, g.pad_w - bph), sw)
                j1 = min(wq, _ceil_div_stride(max(<index_t>0, g.in_w + g.pad_w - bph), sw))
                if sw == 1:
                    if j1 > j0:
                        memcpy(prow + j0, src + j0 - g.pad_w, (j1 - j0) * sizeof(floating))
                else:
                    for j in range(j0, j1):
                        prow[j] = src[j * sw + bph - g.pad_w]


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


cdef void _blocked_task(const ConvGeom* g, const ConvPlan* plan, const floating* xpad,
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
        while q < q1:
            oh = q // wq
            ow = q - oh * wq
            if ow >= g.out_w:                   # lanes past the row's end
                q = (oh + 1) * wq
                continue
            seg = min(g.out_w - ow, q1 - q)
            yrow = y + ((n * g.out_channels + oc) * g.out_h + oh) * g.out_w + ow
            memcpy(yrow, tile + o * lanes + (q - q0), seg * sizeof(floating))
            bias_residual_activation(yrow, seg, bias[oc] if bias != NULL else 0, bias != NULL,
                                     res + (yrow - y) if res != NULL else NULL, activation)
            q += seg


cdef void _blocked_forward(const ConvGeom* g, const ConvPlan* plan, const floating* x,
                           const floating* packed, const floating* bias, floating* y,
                           const floating* res, floating* workspace, int activation,
                           int num_threads) noexcept nogil:
    cdef index_t taps = g.kernel_h * g.kernel_w
    cdef index_t plane = plan.hq * plan.wq
    cdef index_t per_image = plan.n_tasks // g.batch
    cdef index_t kh, kw, rh, rw, n0, n1, task
    cdef long* toff = <long*>workspace
    cdef floating* tile
    workspace += _tap_offsets_size(g, sizeof(floating))
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
            tile = workspace + (plan.workspace_shared - _tap_offsets_size(g, sizeof(floating))
                                + threadid() * plan.workspace_per_thread)
            for task in prange((n1 - n0) * g.in_channels, schedule='static'):
                _pad_channel(g, plan, g.stride_h, g.stride_w,
                             x + (n0 * g.in_channels + task) * g.in_h * g.in_w,
                             workspace + task * plan.channel_stride)
            for task in prange(n0 * per_image, n1 * per_image, schedule='static'):
                _blocked_task(g, plan, workspace, n0, packed, toff, bias, y, res, tile,
                              activation, task)
        n0 = n1



# ---------------------------------------------------------------- pointwise

# 1x1 convolution at stride 1 without padding reads its input as it lies: the
# block kernel with the pointwise tile (conv_block.h) takes FCNN_POINT_OCB
# output channels x one block of positions (whole vectors) per call, one tap,
# ld_c = the plane size, and writes its tile straight into the output rows.
# A task takes col_tile positions (several blocks, so the epilogue runs over
# long rows) and a run of channel blocks, and goes over the input channels in
# chunks whose columns (chunk x col_tile) stay in L1 while the weights (packed
# [block][channel][FCNN_POINT_OCB]) stream past. The last, partial block of positions is copied into a
# zero-padded panel first; it and a partial last channel block compute into
# per-thread scratch.

cdef enum:
    POINTWISE_MIN_CHUNK = 64            # input channels per pass, at least (or all)

cdef bint pointwise_applies(const ConvGeom* g) noexcept nogil:
    return (g.kernel_d == 1 and g.kernel_h == 1 and g.kernel_w == 1
            and g.stride_d == 1 and g.stride_h == 1 and g.stride_w == 1
            and g.pad_d == 0 and g.pad_h == 0 and g.pad_w == 0
            and g.out_d == g.in_d and g.out_h == g.in_h and g.out_w == g.in_w)


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


cdef void _pointwise_plan(const ConvGeom* g, index_t itemsize, ConvPlan* p) noexcept nogil:
    cdef index_t cin = g.in_channels // g.groups
    cdef index_t lanes = _point_lanes(itemsize)
    cdef index_t blocks = _ceil_div(g.out_d * g.out_h * g.out_w, lanes)
    cdef index_t units, per_task
    # as many blocks of positions per task as keep a chunk of at least
    # POINTWISE_MIN_CHUNK channels (or all of them) within the L1 budget
    per_task = _oc_weight_bytes // (min(cin, <index_t>POINTWISE_MIN_CHUNK) * lanes * itemsize)
    per_task = max(1, min(blocks, per_task))
    p.col_tile = per_task * lanes
    p.n_col_tiles = _ceil_div(blocks, per_task)
    p.m_block = FCNN_POINT_OCB
    p.n_m_blocks = _ceil_div(g.out_channels // g.groups, FCNN_POINT_OCB)
    p.chunk_channels = max(1, min(cin, _oc_weight_bytes // (p.col_tile * itemsize)))
    units = g.batch * g.groups * p.n_col_tiles
    p.row_blocks = max(1, min(p.n_m_blocks, _ceil_div(MIN_TASKS, units)))
    p.rows_per_task = _ceil_div(p.n_m_blocks, p.row_blocks)
    p.row_blocks = _ceil_div(p.n_m_blocks, p.rows_per_task)
    p.n_tasks = units * p.row_blocks
    p.workspace_per_thread = p.rows_per_task * FCNN_POINT_OCB * p.col_tile + cin * lanes


cdef void _pointwise_task(const ConvGeom* g, const ConvPlan* plan, const floating* x,
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
    cdef index_t nblk = _ceil_div(valid, lanes)
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


# ---------------------------------------------------------------- blocked over output channels

# Each image channel is copied once into a zero-padded plane of hq rows of
# wq (wide enough for the last call's extra pixels). A kernel call computes
# P pixels of one output row for m_block output channels; tap (kh, kw) of
# pixel j reads the plane at (oh s_h + kh d_h) wq + (ow0 + j) s_w + kw d_w.
# A task runs its rows in passes over chunk_channels input channels at a
# time, keeping partial sums in per-thread scratch, so each chunk's weights
# are read from memory once and then from L1 for every row.

cdef bint blocked_oc_applies(const ConvGeom* g) noexcept nogil:
    return blocked_applies(g) and g.stride_w <= 2


cdef inline index_t _oc_lanes(index_t itemsize) noexcept nogil:
    return FCNN_OC_VL_F32 if itemsize == 4 else FCNN_OC_VL_F64


cdef inline index_t _oc_pix(bint tall) noexcept nogil:
    return FCNN_OC_TALL_P if tall else FCNN_OC_WIDE_P


cdef inline index_t _oc_vectors(bint tall) noexcept nogil:
    return FCNN_OC_TALL_V if tall else FCNN_OC_WIDE_V


cdef inline index_t _oc_padded(index_t out_w, index_t m_group, index_t vl,
                               bint tall) noexcept nogil:
    """Pixels x channels a row of out_w pixels computes with the tall or the
    wide tile, padding included."""
    return _round_up(out_w, _oc_pix(tall)) * _round_up(m_group, _oc_vectors(tall) * vl)


cdef inline bint _oc_tall(index_t out_w, index_t m_group, index_t vl) noexcept nogil:
    """Whether the tall tile computes fewer padding pixels and channels than
    the wide one (ties go wide)."""
    return _oc_padded(out_w, m_group, vl, True) < _oc_padded(out_w, m_group, vl, False)


cdef ConvGeom _oc_geometry(const ConvGeom* g, index_t itemsize) noexcept nogil:
    """The geometry blocked_oc runs: a 1x1 layer at stride 1 without padding
    reads each plane as it lies, so it runs as one row of out_h * out_w
    pixels where that pads the register tiles less (a 7x7 plane with 8-lane
    vectors: 49 pixels in 13 tiles of 4, not 7 rows of 2 tiles; MobileNetV2's
    320 -> 1280 at 7x7 on Zen 4, avx2: 0.468 -> 0.410 ms), as long as the
    row's partial sums fit their budget and the channel blocks alone give
    every thread tasks."""
    cdef ConvGeom f = g[0]
    cdef index_t vl = _oc_lanes(itemsize), m_group = g.out_channels // g.groups
    cdef index_t flat = g.out_h * g.out_w
    cdef bint tall = _oc_tall(flat, m_group, vl)
    if not pointwise_applies(g) or not blocked_applies(g) or g.out_h == 1:
        return f
    if (_oc_padded(flat, m_group, vl, tall)
            >= g.out_h * _oc_padded(g.out_w, m_group, vl, _oc_tall(g.out_w, m_group, vl))):
        return f
    if (_round_up(flat, _oc_pix(tall)) * _oc_vectors(tall) * vl * itemsize > _oc_partial_bytes
            or g.batch * g.groups * _ceil_div(m_group, _oc_vectors(tall) * vl) < MIN_TASKS):
        return f
    f.in_h = f.out_h = 1
    f.in_w = f.out_w = flat
    return f


cdef void _blocked_oc_plan(const ConvGeom* layer, index_t itemsize, ConvPlan* p) noexcept nogil:
    cdef ConvGeom flat = _oc_geometry(layer, itemsize)
    cdef const ConvGeom* g = &flat
    cdef index_t vl = _oc_lanes(itemsize)
    cdef index_t m_group = g.out_channels // g.groups
    cdef index_t taps = g.kernel_h * g.kernel_w
    cdef index_t pix, rows_budget, units, image
    p.oc_tall = _oc_tall(g.out_w, m_group, vl)
    pix = _oc_pix(p.oc_tall)
    p.m_block = _oc_vectors(p.oc_tall) * vl
    p.n_m_blocks = _ceil_div(m_group, p.m_block)
    p.col_tile = pix
    p.n_col_tiles = _ceil_div(g.out_w, pix)
    p.wq = (p.n_col_tiles * pix - 1) * g.stride_w + (g.kernel_w - 1) * g.dilation_w + 1
    p.hq = (g.out_h - 1) * g.stride_h + (g.kernel_h - 1) * g.dilation_h + 1
    p.channel_stride = _round_up(p.hq * p.wq, 16)
    p.lanes = 0
    p.chunk_channels = max(1, min(g.in_channels // g.groups,
                                  _oc_weight_bytes // (taps * p.m_block * itemsize)))
    rows_budget = max(1, _oc_partial_bytes // (p.n_col_tiles * pix * p.m_block * itemsize))
    p.row_blocks = _ceil_div(g.out_h, min(g.out_h, rows_budget))
    units = g.batch * g.groups * p.n_m_blocks
    if units * p.row_blocks < MIN_TASKS:
        p.row_blocks = min(g.out_h, _ceil_div(MIN_TASKS, units))
    p.rows_per_task = _ceil_div(g.out_h, p.row_blocks)
    p.row_blocks = _ceil_div(g.out_h, p.rows_per_task)
    image = g.in_channels * p.channel_stride
    p.images_per_chunk = max(1, min(g.batch, BLOCK_PAD_BYTES // (image * itemsize)))
    p.n_tasks = units * p.row_blocks
    # Taken image by image, each thread reads every block's weights for each of
    # its images, and the images it padded itself; block by block, each reads
    # its blocks' weights once (from L2 image after image) but every padded
    # image, half of them padded on the other core. The first wins when the
    # weights are the smaller (512 -> 512 at 7x7, batch 8, 2 threads: 5.0 ->
    # 4.6 ms; 64 -> 128 / 2 at 56x56: 2.0 -> 2.3 ms the other way).
    p.oc_block_major = (g.out_channels * g.in_channels // g.groups * taps
                        > g.groups * p.n_m_blocks * image)
    p.workspace_shared = _tap_offsets_size(g, itemsize) + p.images_per_chunk * image
    p.workspace_per_thread = p.rows_per_task * p.n_col_tiles * pix * p.m_block


cdef inline void _oc_kernel(const ConvGeom* g, const ConvPlan* plan, const floating* x,
                            const floating* w, const long* toff, index_t ntaps, index_t cin,
                            floating* acc, int accumulate, const floating* prefetch) noexcept nogil:
    cdef long ld = plan.channel_stride
    if floating is float:
        if plan.oc_tall:
            if g.stride_w == 1:
                fcnn_oc_kernel_f32_tall_s1(x, ld, w, toff, ntaps, cin, acc, accumulate, prefetch)
            else:
                fcnn_oc_kernel_f32_tall_s2(x, ld, w, toff, ntaps, cin, acc, accumulate, prefetch)
        elif g.stride_w == 1:
            fcnn_oc_kernel_f32_wide_s1(x, ld, w, toff, ntaps, cin, acc, accumulate, prefetch)
        else:
            fcnn_oc_kernel_f32_wide_s2(x, ld, w, toff, ntaps, cin, acc, accumulate, prefetch)
    else:
        if plan.oc_tall:
            if g.stride_w == 1:
                fcnn_oc_kernel_f64_tall_s1(x, ld, w, toff, ntaps, cin, acc, accumulate, prefetch)
            else:
                fcnn_oc_kernel_f64_tall_s2(x, ld, w, toff, ntaps, cin, acc, accumulate, prefetch)
        elif g.stride_w == 1:
            fcnn_oc_kernel_f64_wide_s1(x, ld, w, toff, ntaps, cin, acc, accumulate, prefetch)
        else:
            fcnn_oc_kernel_f64_wide_s2(x, ld, w, toff, ntaps, cin, acc, accumulate, prefetch)


cdef inline void _prefetch_rows(const floating* w, index_t ld, index_t i0, index_t i1,
                                index_t nbytes) noexcept nogil:
    """Fetch nbytes of rows i0 ... i1 - 1 of w (ld elements apart) towards L2."""
    cdef index_t i, l
    for i in range(i0, i1):
        l = 0
        while l < nbytes:
            __builtin_prefetch(<const char*>(w + i * ld) + l, 0, 2)
            l += 64


cdef void _blocked_oc_task(const ConvGeom* g, const ConvPlan* plan, const floating* xpad,
                           index_t n0, const floating* packed, const long* toff,
                           const floating* bias, floating* y, const floating* res,
                           floating* acc, int activation, index_t task) noexcept nogil:
    """Rows rb * rows_per_task ... of one channel block of one (image, group)."""
    cdef index_t cin = g.in_channels // g.groups, m_group = g.out_channels // g.groups
    cdef index_t taps = g.kernel_h * g.kernel_w
    cdef index_t pix = plan.col_tile, runs = plan.n_col_tiles, mb = plan.m_block
    cdef index_t rb = task % plan.row_blocks
    cdef index_t ocb = (task // plan.row_blocks) % plan.n_m_blocks
    cdef index_t grp = (task // (plan.row_blocks * plan.n_m_blocks)) % g.groups
    cdef index_t n = task // (plan.row_blocks * plan.n_m_blocks * g.groups)
    cdef index_t oh0 = rb * plan.rows_per_task, oh1 = min(g.out_h, oh0 + plan.rows_per_task)
    cdef index_t m0 = ocb * mb, mcount = min(mb, m_group - m0)
    cdef index_t c0, kc, oh, r, o, oc
    cdef const floating* xg = xpad + ((n - n0) * g.in_channels + grp * cin) * plan.channel_stride
    cdef const floating* wb
    cdef floating* part
    cdef floating* yrow
    cdef const floating* raw = NULL
    cdef index_t held, key = grp * plan.n_m_blocks + ocb + 1, q, next_bytes
    cdef index_t calls = (oh1 - oh0) * runs
    # Unpacked weights: the thread packs its block chunk by chunk into its
    # scratch (unless the scratch holds that block already, as the key before
    # it says), and while a chunk computes it fetches the next chunk's rows:
    # short strided runs that the hardware prefetcher would not see coming.
    if plan.algorithm == CONV_BLOCKED_OC_UNPACKED:
        wb = acc + plan.oc_pack_offset
        memcpy(&held, wb - 16, sizeof(index_t))
        if held != key:
            raw = packed + (grp * m_group + m0) * cin * taps
    else:
        wb = packed + (grp * plan.n_m_blocks + ocb) * cin * taps * mb
    c0 = 0
    while c0 < cin:
        kc = min(plan.chunk_channels, cin - c0)
        if raw != NULL:
            _pack_block_columns(raw, cin * taps, mcount, mb, c0 * taps, (c0 + kc) * taps,
                                <floating*>wb)
            next_bytes = min(plan.chunk_channels, cin - c0 - kc) * taps * sizeof(floating)
        for oh in range(oh0, oh1):
            for r in range(runs):
                if raw != NULL:     # a share of the next chunk's rows per call
                    q = (oh - oh0) * runs + r
                    _prefetch_rows(raw + (c0 + kc) * taps, cin * taps, q * mcount // calls,
                                   (q + 1) * mcount // calls, next_bytes)
                # the first call of a chunk fetches the next chunk's weights (past
                # the last chunk: the next channel block's, this thread's next task)
                _oc_kernel(g, plan, xg + c0 * plan.channel_stride
                           + oh * g.stride_h * plan.wq + r * pix * g.stride_w,
                           wb + c0 * taps * mb, toff, taps, kc,
                           acc + ((oh - oh0) * runs + r) * pix * mb, c0 > 0,
                           wb + (c0 + kc) * taps * mb if oh == oh0 and r == 0 else NULL)
        c0 += kc
    if raw != NULL:
        memcpy(<floating*>wb - 16, &key, sizeof(index_t))
    # acc holds pixels x channels; the output wants channels x pixels. Rows
    # whose runs end at the row's end are contiguous in both: one transpose.
    yrow = y + ((n * g.out_channels + grp * m_group + m0) * g.out_h + oh0) * g.out_w
    if runs * pix == g.out_w:
        transpose(acc, mb, (oh1 - oh0) * g.out_w, mcount, yrow, g.out_h * g.out_w)
    else:
        for oh in range(oh0, oh1):
            transpose(acc + (oh - oh0) * runs * pix * mb, mb, g.out_w, mcount,
                      yrow + (oh - oh0) * g.out_w, g.out_h * g.out_w)
    for o in range(mcount):
        oc = grp * m_group + m0 + o
        part = yrow + o * g.out_h * g.out_w
        bias_residual_activation(part, (oh1 - oh0) * g.out_w, bias[oc] if bias != NULL else 0,
                                 bias != NULL, res + (part - y) if res != NULL else NULL,
                                 activation)


cdef inline index_t _oc_task(const ConvGeom* g, const ConvPlan* plan, index_t n0, index_t n1,
                             index_t i) noexcept nogil:
    """The i-th task of images n0 .. n1 - 1, image by image or (the plan's
    choice) channel block by channel block."""
    if not plan.oc_block_major:
        return n0 * plan.n_tasks // g.batch + i
    cdef index_t per_block = (n1 - n0) * plan.row_blocks
    cdef index_t n = n0 + i % per_block // plan.row_blocks
    return (n * g.groups * plan.n_m_blocks + i // per_block) * plan.row_blocks + i % plan.row_blocks


cdef void _blocked_oc_forward(const ConvGeom* layer, const ConvPlan* plan, const floating* x,
                              const floating* packed, const floating* bias, floating* y,
                              const floating* res, floating* workspace, int activation,
                              int num_threads) noexcept nogil:
    cdef ConvGeom flat = _oc_geometry(layer, sizeof(floating))
    cdef const ConvGeom* g = &flat
    cdef index_t taps = g.kernel_h * g.kernel_w
    cdef index_t per_image = plan.n_tasks // g.batch
    cdef index_t kh, kw, n0, n1, task
    cdef long* toff = <long*>workspace
    cdef floating* acc
    cdef floating* scratch
    workspace += _tap_offsets_size(g, sizeof(floating))
    for kh in range(g.kernel_h):
        for kw in range(g.kernel_w):
            toff[kh * g.kernel_w + kw] = kh * g.dilation_h * plan.wq + kw * g.dilation_w
    scratch = workspace + plan.workspace_shared - _tap_offsets_size(g, sizeof(floating))
    if plan.algorithm == CONV_BLOCKED_OC_UNPACKED:      # no thread holds a packed block yet
        for task in range(num_threads):
            memset(scratch + task * plan.workspace_per_thread + plan.oc_pack_offset - 16, 0,
                   sizeof(index_t))
    n0 = 0
    while n0 < g.batch:
        n1 = min(g.batch, n0 + plan.images_per_chunk)
        with parallel(num_threads=num_threads):
            fp_enter()
            acc = scratch + threadid() * plan.workspace_per_thread
            for task in prange((n1 - n0) * g.in_channels, schedule='static'):
                _pad_channel(g, plan, 1, 1, x + (n0 * g.in_channels + task) * g.in_h * g.in_w,
                             workspace + task * plan.channel_stride)
            for task in prange((n1 - n0) * per_image, schedule='static'):
                _blocked_oc_task(g, plan, workspace, n0, packed, toff, bias, y, res, acc,
                                 activation, _oc_task(g, plan, n0, n1, task))
        n0 = n1


cdef void _conv_forward(const ConvGeom* g, const ConvPlan* plan, const floating* x,
                        const floating* w, const floating* bias, floating* y,
                        const floating* res, floating* workspace, int activation,
                        int num_threads) noexcept nogil:
    cdef index_t task
    cdef floating* col
    if plan.n_tasks <= 0:
        return
    num_threads = <int>max(1, min(<index_t>num_threads, plan.n_tasks))
    if plan.algorithm == CONV_BLOCKED:
        _blocked_forward(g, plan, x, w, bias, y, res, workspace, activation, num_threads)
        return
    if plan.algorithm == CONV_BLOCKED_OC or plan.algorithm == CONV_BLOCKED_OC_UNPACKED:
        _blocked_oc_forward(g, plan, x, w, bias, y, res, workspace, activation, num_threads)
        return
    if plan.algorithm == CONV_POINTWISE or plan.algorithm == CONV_DEPTHWISE:
        with parallel(num_threads=num_threads):
            fp_enter()
            col = workspace + threadid() * plan.workspace_per_thread
            for task in prange(plan.n_tasks, schedule='static'):
                if plan.algorithm == CONV_POINTWISE:
                    _pointwise_task(g, plan, x, w, bias, y, res, col, activation, task)
                else:
                    _depthwise_task(g, plan, x, w, bias, y, res, col, activation, task)
        return
    blas_enter()
    if plan.algorithm == CONV_WINOGRAD and plan.wino_shared:
        with parallel(num_threads=num_threads):
            fp_enter()
            col = workspace + plan.workspace_shared + threadid() * plan.workspace_per_thread
            for task in prange(g.batch * g.in_channels, schedule='static'):
                _winograd_shared_input(g, plan, x, workspace, col, task)
            for task in prange(plan.n_tasks, schedule='static'):
                _winograd_shared_task(g, plan, w, bias, workspace, y, res, col, activation, task)
        blas_leave()
        return
    with parallel(num_threads=num_threads):
        fp_enter()
        col = workspace + plan.workspace_shared + threadid() * plan.workspace_per_thread
        if plan.algorithm == CONV_DIRECT:
            memset(col, 0, plan.workspace_per_thread * sizeof(floating))
        if plan.shared_col:
            col = workspace
            for task in prange(g.batch * g.in_channels, schedule='static'):
                _gather_columns(g, plan, x, col, task)
        for task in prange(plan.n_tasks, schedule='static'):
            if plan.algorithm == CONV_DIRECT:
                _direct_task(g, x, w, bias, y, res, col, activation, task)
            elif plan.algorithm == CONV_WINOGRAD:
                _winograd_task(g, plan, x, w, bias, y, res, col, activation, task)
            else:
                _gemm_task(g, plan, x, w, bias, y, res, col, activation, task)
    blas_leave()


cdef void _pack_weights(const ConvGeom* g, int algorithm, const floating* w, floating* packed,
                        int num_threads) noexcept nogil:
    cdef index_t m_group = g.out_channels // g.groups
    cdef index_t k = (g.in_channels // g.groups) * g.kernel_h * g.kernel_w
    cdef ConvPlan plan
    if algorithm == CONV_WINOGRAD:
        _winograd_pack(g, w, packed, num_threads)
    elif algorithm == CONV_POINTWISE:
        _pack_channel_blocks(w, g.groups, m_group, k, FCNN_POINT_OCB, block_splat(sizeof(floating)),
                             packed, num_threads)
    elif algorithm == CONV_BLOCKED or algorithm == CONV_BLOCKED_OC:
        plan = conv_make_plan(g, algorithm, sizeof(floating))
        _pack_channel_blocks(w, g.groups, m_group, k, plan.m_block,
                             block_splat(sizeof(floating)) if algorithm == CONV_BLOCKED else 1,
                             packed, num_threads)
    elif algorithm == CONV_DEPTHWISE:      # one group of all channels, one input channel each
        _pack_channel_blocks(w, 1, g.out_channels, k, _dw_lanes(sizeof(floating)), 1, packed,
                             num_threads)


cdef void conv_pack_weights_f32(const ConvGeom* g, int algorithm, const float* w,
                                float* packed, int num_threads) noexcept nogil:
    _pack_weights(g, algorithm, w, packed, num_threads)


cdef void conv_pack_weights_f64(const ConvGeom* g, int algorithm, const double* w,
                                double* packed, int num_threads) noexcept nogil:
    _pack_weights(g, algorithm, w, packed, num_threads)


cdef void conv_forward_f32(const ConvGeom* g, const ConvPlan* plan,
                           const float* x, const float* w, const float* bias,
                           float* y, const float* residual, float* workspace,
                           int activation, int num_threads) noexcept nogil:
    _conv_forward(g, plan, x, w, bias, y, residual, workspace, activation, num_threads)


cdef void conv_forward_f64(const ConvGeom* g, const ConvPlan* plan,
                           const double* x, const double* w, const double* bias,
                           double* y, const double* residual, double* workspace,
                           int activation, int num_threads) noexcept nogil:
    _conv_forward(g, plan, x, w, bias, y, residual, workspace, activation, num_threads)


# ---------------------------------------------------------------- Python entry

cdef ConvGeom _geom_from_tuple(tuple t) except *:
    cdef ConvGeom g
    (g.batch, g.in_channels, g.out_channels, g.groups,
     g.in_d, g.in_h, g.in_w, g.out_d, g.out_h, g.out_w,
     g.kernel_d, g.kernel_h, g.kernel_w, g.stride_d, g.stride_h, g.stride_w,
     g.pad_d, g.pad_h, g.pad_w, g.dilation_d, g.dilation_h, g.dilation_w) = t
    return g


ALGORITHMS = {CONV_GEMM_1X1: "gemm_1x1", CONV_IM2COL: "im2col", CONV_DIRECT: "direct",
              CONV_WINOGRAD: "winograd", CONV_BLOCKED: "blocked", CONV_BLOCKED_OC: "blocked_oc",
              CONV_DEPTHWISE: "depthwise", CONV_BLOCKED_OC_UNPACKED: "blocked_oc_unpacked",
              CONV_POINTWISE: "pointwise"}
_BY_NAME = {v: k for k, v in ALGORITHMS.items()}


def select(tuple geom, bint weights_packed=False):
    """The algorithm the dispatcher picks for this geometry (a name)."""
    cdef ConvGeom g = _geom_from_tuple(geom)
    return ALGORITHMS[conv_select_algorithm(&g, weights_packed)]


cdef bint _applies(const ConvGeom* g, int algorithm) noexcept nogil:
    if algorithm == CONV_WINOGRAD:
        return winograd_applies(g)
    if algorithm == CONV_BLOCKED:
        return blocked_applies(g)
    if algorithm == CONV_BLOCKED_OC or algorithm == CONV_BLOCKED_OC_UNPACKED:
        return blocked_oc_applies(g)
    if algorithm == CONV_DEPTHWISE:
        return depthwise_applies(g)
    if algorithm == CONV_GEMM_1X1 or algorithm == CONV_POINTWISE:
        return pointwise_applies(g)
    return algorithm == CONV_IM2COL or algorithm == CONV_DIRECT


def applicable(tuple geom, str algorithm):
    """Whether `algorithm` can run this geometry (tests force each one)."""
    cdef ConvGeom g = _geom_from_tuple(geom)
    return algorithm in _BY_NAME and _applies(&g, _BY_NAME[algorithm])


cdef int _algorithm(const ConvGeom* g, str algorithm) except -1:
    """The code of an algorithm named by a caller, which must apply to g:
    the kernels assume their geometry (a forced Winograd on a 1x1 layer
    would read past its input)."""
    if algorithm not in _BY_NAME:
        raise ValueError(f"conv: unknown algorithm {algorithm!r}; expected one of "
                         f"{sorted(_BY_NAME)}")
    if not _applies(g, _BY_NAME[algorithm]):
        raise ValueError(f"conv: algorithm {algorithm!r} does not apply to this geometry "
                         f"(kernel {g.kernel_d}x{g.kernel_h}x{g.kernel_w}, stride "
                         f"{g.stride_d}x{g.stride_h}x{g.stride_w}, groups {g.groups})")
    return _BY_NAME[algorithm]


def plan(tuple geom, str algorithm, int itemsize):
    """(workspace elements: shared, per thread; number of tasks; packed weight elements)."""
    cdef ConvGeom g = _geom_from_tuple(geom)
    cdef int a = _algorithm(&g, algorithm)
    cdef ConvPlan p = conv_make_plan(&g, a, itemsize)
    return p.workspace_shared, p.workspace_per_thread, p.n_tasks, conv_packed_size(&g, a, itemsize)


def pack(tuple geom, str algorithm, cnp.ndarray w, cnp.ndarray packed, int num_threads):
    """Write the algorithm's transformed weights (Winograd U) into `packed`."""
    cdef ConvGeom g = _geom_from_tuple(geom)
    cdef int a = _algorithm(&g, algorithm)
    cdef void* wp = cnp.PyArray_DATA(w)
    cdef void* pp = cnp.PyArray_DATA(packed)
    if packed.size < conv_packed_size(&g, a, w.itemsize):
        raise ValueError("conv: packed weight buffer too small")
    if w.dtype.num == cnp.NPY_FLOAT32:
        with nogil:
            conv_pack_weights_f32(&g, a, <float*>wp, <float*>pp, num_threads)
    else:
        with nogil:
            conv_pack_weights_f64(&g, a, <double*>wp, <double*>pp, num_threads)


def forward(tuple geom, str algorithm, cnp.ndarray x, cnp.ndarray weights, object bias,
            cnp.ndarray y, object workspace, int activation, int num_threads,
            object residual=None):
    """y = act((conv(x, weights) + bias) + residual). All arrays C-contiguous and
    of one dtype, shapes already checked (residual: y's shape, never y's
    memory); weights packed where the algorithm packs; workspace holds the
    shared plus num_threads * per-thread elements."""
    cdef ConvGeom g = _geom_from_tuple(geom)
    cdef int a = _algorithm(&g, algorithm)
    cdef ConvPlan p = conv_make_plan(&g, a, x.itemsize)
    cdef void* b = NULL if bias is None else cnp.PyArray_DATA(<cnp.ndarray>bias)
    cdef void* ws = NULL if workspace is None else cnp.PyArray_DATA(<cnp.ndarray>workspace)
    cdef void* xp = cnp.PyArray_DATA(x)
    cdef void* wp = cnp.PyArray_DATA(weights)
    cdef void* yp = cnp.PyArray_DATA(y)
    cdef void* rp = NULL if residual is None else cnp.PyArray_DATA(<cnp.ndarray>residual)
    if p.workspace_shared + p.workspace_per_thread > 0:
        if workspace is None or (<cnp.ndarray>workspace).size < (
                p.workspace_shared + p.workspace_per_thread * num_threads):
            raise ValueError("conv: workspace too small")
    if x.dtype.num == cnp.NPY_FLOAT32:
        with nogil:
            conv_forward_f32(&g, &p, <float*>xp, <float*>wp, <float*>b, <float*>yp,
                             <float*>rp, <float*>ws, activation, num_threads)
    else:
        with nogil:
            conv_forward_f64(&g, &p, <double*>xp, <double*>wp, <double*>b, <double*>yp,
                             <double*>rp, <double*>ws, activation, num_threads)


def forward_each(list geoms, list algorithms, list xs, list weights, list ys,
                 cnp.ndarray workspace, int num_threads):
    """Independent convolutions (no bias, residual or activation), each on
    one thread, `num_threads` at a time, taken in list order as threads come
    free: for convolutions too small to split well over threads, such as a
    transposed convolution's phases. Each is computed as by forward() on one
    thread. Arrays as forward()'s, of one dtype; workspace holds num_threads
    slices of the largest shared plus per-thread need."""
    cdef Py_ssize_t count = len(geoms), i
    cdef index_t per = 0
    cdef ConvGeom* g
    cdef ConvPlan* p
    cdef void** ptr
    cdef char* ws = <char*>cnp.PyArray_DATA(workspace)
    cdef bint f32 = workspace.dtype.num == cnp.NPY_FLOAT32
    cdef index_t itemsize = workspace.itemsize
    if not (len(algorithms) == len(xs) == len(weights) == len(ys) == count):
        raise ValueError("conv: forward_each needs one algorithm, input, weight and output "
                         "per geometry")
    if num_threads < 1:
        raise ValueError("conv: forward_each needs at least one thread")
    g = <ConvGeom*>PyMem_Malloc(count * sizeof(ConvGeom))
    p = <ConvPlan*>PyMem_Malloc(count * sizeof(ConvPlan))
    ptr = <void**>PyMem_Malloc(3 * count * sizeof(void*))
    if g == NULL or p == NULL or ptr == NULL:
        PyMem_Free(g); PyMem_Free(p); PyMem_Free(ptr)
        raise MemoryError()
    try:
        for i in range(count):
            g[i] = _geom_from_tuple(geoms[i])
            p[i] = conv_make_plan(&g[i], _algorithm(&g[i], algorithms[i]), itemsize)
            per = max(per, p[i].workspace_shared + p[i].workspace_per_thread)
            for k, a in enumerate((xs[i], weights[i], ys[i])):
                if (<cnp.ndarray>a).dtype.num != workspace.dtype.num:
                    raise ValueError("conv: forward_each needs arrays of one dtype")
                ptr[3 * i + k] = cnp.PyArray_DATA(<cnp.ndarray>a)
        if workspace.size < per * num_threads:
            raise ValueError("conv: workspace too small")
        with nogil, parallel(num_threads=num_threads):
            for i in prange(count, schedule='dynamic', chunksize=1):
                if f32:
                    conv_forward_f32(&g[i], &p[i], <float*>ptr[3 * i], <float*>ptr[3 * i + 1],
                                     NULL, <float*>ptr[3 * i + 2], NULL,
                                     <float*>(ws + threadid() * per * itemsize), 0, 1)
                else:
                    conv_forward_f64(&g[i], &p[i], <double*>ptr[3 * i], <double*>ptr[3 * i + 1],
                                     NULL, <double*>ptr[3 * i + 2], NULL,
                                     <double*>(ws + threadid() * per * itemsize), 0, 1)
    finally:
        PyMem_Free(g)
        PyMem_Free(p)
        PyMem_Free(ptr)

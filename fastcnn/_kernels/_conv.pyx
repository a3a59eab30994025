"""Convolution: the dispatcher over the algorithm modules.

Each algorithm lives in a module of its own (_conv_<algorithm>: its plan,
its weight packing and its parallel forward); this one holds what chooses
and drives them: the cost model that picks one algorithm per shape
(conv_select_algorithm), the cache-derived working-set sizes every plan is
made with (ConvTuning), and the entry points the Python layer and the C-API
call (plan, pack, forward).

The Python layer validates everything; these trust their inputs. One
parallel region per call.
"""
cimport numpy as cnp
from cython.parallel cimport parallel, prange, threadid
from libc.string cimport memset
from cpython.mem cimport PyMem_Malloc, PyMem_Free

from fastcnn._kernels._typedefs cimport floating, index_t
from fastcnn._kernels._conv_types cimport (
    ConvTuning, MaxPoolWindow, CONV_GEMM_1X1, CONV_IM2COL, CONV_DIRECT, CONV_WINOGRAD, CONV_BLOCKED,
    CONV_BLOCKED_OC, CONV_DEPTHWISE, CONV_BLOCKED_OC_UNPACKED, CONV_POINTWISE)
from fastcnn._kernels._block_gemm cimport block_splat, block_vector
from fastcnn._kernels._conv_common cimport (ceil_div, round_up, one_image, blocked_applies,
                                            pointwise_applies)
from fastcnn._kernels._conv_block cimport (FCNN_HAS_FMA, FCNN_BLOCK_QV, FCNN_BLOCK_LANES_F32,
                                           FCNN_OC_WIDE_V, FCNN_OC_VL_F32)
from fastcnn._kernels._conv_gemm cimport gemm_plan, gemm_forward
from fastcnn._kernels._conv_direct cimport direct_plan, direct_forward
from fastcnn._kernels._conv_depthwise cimport (depthwise_applies, depthwise_plan,
                                               depthwise_packed_size, depthwise_pack,
                                               depthwise_forward)
from fastcnn._kernels._conv_winograd cimport (winograd_applies, winograd_plan,
                                              winograd_packed_size, winograd_pack,
                                              winograd_forward)
from fastcnn._kernels._conv_blocked cimport (blocked_plan, blocked_packed_size, blocked_pack,
                                             blocked_forward)
from fastcnn._kernels._conv_pointwise cimport (pointwise_plan, pointwise_packed_size,
                                               pointwise_pack, pointwise_forward)
from fastcnn._kernels._conv_blocked_oc cimport (blocked_oc_applies, blocked_oc_plan,
                                                blocked_oc_packed_size, blocked_oc_pack,
                                                blocked_oc_forward, blocked_oc_pool_applies,
                                                blocked_oc_pool_plan, blocked_oc_pool_forward)
from fastcnn._kernels._activation cimport ACT_NONE, ACT_RELU, ACT_RELU6

cnp.import_array()

# The cost model's thresholds (see the functions that read them).
cdef enum:
    WINO_MIN_TILES = 32
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
    # 2x2 kernels: tiles an image at least (see _winograd_shape_pays); 7x7
    # planes (4 tiles) ran 1.2x slower than blocked_oc on SSE at batch 8
    WINO2_MIN_IMAGE_TILES = 16
    WINO2_MIN_IMAGE_TILES_WIDE = 64     # with 16-lane (64-byte) vectors
    BLOCK_MAX_STRIDED_K = 256             # strided: blocked only for short reductions
    BLOCK_PACK_POSITIONS = 256            # unpacked weights: outputs per call to amortise packing
    BLOCK_MIN_REDUCTION = 72              # input channels x taps for blocked against a small GEMM
    OC_MIN_REDUCTION = 256                # input channels x taps for blocked_oc
    OC_PACK_POSITIONS = 128               # unpacked weights: outputs per call to amortise packing
    OC_INLINE_PACK_POSITIONS = 256        # up to this many outputs of one image: pack in the tasks
    OC_FEW_POSITIONS = 512                # prepacked expanding 1x1 layers this small: blocked_oc
    BLOCK_MIN_STRIDED_TAPS = 16           # strided: blocked only for large kernels (stems)
    DW_MAX_OUT_W = 16                     # depthwise over channels for outputs this narrow


# The one ConvTuning every plan is made with. Working sets sized from the
# core's caches (set_cache_sizes, called by the loader with the sizes the OS
# reports; these defaults assume a 48 KiB L1d and a 2 MiB L2):
# - one chunk of blocked_oc's weights stays in L1 beside its input rows (2/3
#   of L1); a blocked_oc task's partial sums (4/3 of L1) and a depthwise
#   task's padded rows and outputs (2 x L1) stream through L1 into L2;
# - a Winograd task's transformed tiles (V and M): three times L2. Every task
#   reads all the transformed weights again, and its 36 products are as wide
#   as its tiles, so fewer, larger tasks pay even when their tiles spill from
#   L2 to L3 (against 1.5 times L2, 1.1-1.25x on ResNet-18's 3x3 layers at
#   batch 8 and a U-Net 4x4 up-convolution, AVX2 and AVX-512; six times L2
#   gained no more).
# small_gemm: whether the BLAS multiplies small matrices without packing them
# (OpenBLAS's SkylakeX-family kernels do; its Haswell/Zen kernels pack on
# every call). With such a GEMM, im2col and 1x1 GEMM win on small problems;
# without it, the direct kernels do: 1x1 layers whose weights fit in half of
# L2 (pointwise, blocked_oc when strided), stems with short reductions, one
# image's few outputs.
cdef enum:
    WINO_BUDGET_L2S = 3
cdef ConvTuning _tuning = ConvTuning(
    oc_weight_bytes=32 * 1024, oc_partial_bytes=64 * 1024, dw_task_bytes=96 * 1024,
    l2_bytes=2048 * 1024, wino_budget_bytes=WINO_BUDGET_L2S * 2048 * 1024, small_gemm=True)


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
    _tuning.small_gemm = has_small_gemm


def set_cache_sizes(l1d_bytes, l2_bytes):
    """Size the kernels' working sets for a core with these L1 data and L2
    caches (bytes, per core). Plans made afterwards use them."""
    cdef index_t l1 = max(<index_t>8 * 1024, <index_t>l1d_bytes)
    cdef index_t l2 = max(<index_t>128 * 1024, <index_t>l2_bytes)
    _tuning.oc_weight_bytes = l1 * 2 // 3
    _tuning.oc_partial_bytes = l1 * 4 // 3
    _tuning.dw_task_bytes = l1 * 2
    _tuning.l2_bytes = l2
    _tuning.wino_budget_bytes = WINO_BUDGET_L2S * l2


def cache_budgets():
    """The working-set sizes in use, in bytes (for show_config and tests)."""
    return {"blocked_oc_weights": _tuning.oc_weight_bytes,
            "blocked_oc_partials": _tuning.oc_partial_bytes,
            "depthwise_task": _tuning.dw_task_bytes, "winograd_task": _tuning.wino_budget_bytes,
            "l2": _tuning.l2_bytes}


def dispatch_facts():
    """What the dispatcher knows beyond the shape (for show_config and tests)."""
    return {"blas_small_gemm": bool(_tuning.small_gemm),
            "blocked_oc_min_channels": FCNN_OC_WIDE_V * FCNN_OC_VL_F32,
            "fused_multiply_add": bool(FCNN_HAS_FMA),
            "splatted_weights": block_splat(4) > 1,
            "winograd_narrow_vectors": bool(FCNN_HAS_FMA) and _narrow_multiplies(),
            "winograd_2x2_min_image_tiles": _wino2_min_image_tiles()}


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
        tiles = g.batch * ceil_div(g.out_h, 4) * ceil_div(g.out_w, 4)
        # prepacked weights only take the transform's cost away: wherever
        # Winograd pays when each call transforms them, it pays here too
        if _winograd_pays_unpacked(g, tiles) or (weights_packed and tiles >= WINO_MIN_TILES):
            return CONV_WINOGRAD
    if _few_positions_expanding(g, weights_packed):
        return CONV_BLOCKED_OC
    if pointwise_applies(g):
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
    cdef index_t tiles_image = ceil_div(g.out_h, 4) * ceil_div(g.out_w, 4)
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
    if not _tuning.small_gemm:
        return taps > 1 or _weights_fit_half_l2(g)
    if taps == 1:
        return False
    # short reductions only for large kernels (stems: 3 channels x 49 taps)
    if (g.in_channels // g.groups) * taps < OC_MIN_REDUCTION and taps < BLOCK_MIN_STRIDED_TAPS:
        return False
    return weights_packed or g.batch * g.out_h * g.out_w >= OC_PACK_POSITIONS


cdef bint _few_positions_expanding(const ConvGeom* g, bint weights_packed) noexcept nogil:
    """A prepacked 1x1 layer over few positions that widens its channels
    (MobileNetV2's last 1x1 layers at 7x7) runs as blocked_oc: its weights
    stream once, prefetched a chunk ahead, into a few register tiles of
    positions, where a GEMM reads cold weights for 49 columns an image. In
    compiled MobileNetV2 (Xeon, AVX-512 and AVX2), batch 1: 320->1280
    0.55 -> 0.41 ms, 160->960 0.21 -> 0.17 ms; batch 8 (392 positions):
    320->1280 0.84x the GEMM's time on AVX2 (4.49 -> 3.77 ms on 1 thread),
    0.83x on AVX-512. Alone with cold caches, from 1568 positions (14x14 at
    batch 8) the GEMM is as fast, and on narrowing layers (960->160) it
    stays ahead. Strided 1x1 layers too: ResNet-18's downsampling, compiled,
    against im2col + GEMM (AVX-512; AVX2), 256->512 at 7x7: batch 1
    0.60-0.72x; 0.73-0.76x the time, batch 8 0.86x; 0.98-1.12x; 128->256 at
    14x14, batch 1 on AVX-512: 0.92x on 1 thread, 1.07x on 2."""
    return (weights_packed and FCNN_HAS_FMA and blocked_oc_applies(g)
            and g.kernel_d == 1 and g.kernel_h == 1 and g.kernel_w == 1
            and g.pad_d == 0 and g.pad_h == 0 and g.pad_w == 0
            and g.batch * g.out_d * g.out_h * g.out_w <= OC_FEW_POSITIONS
            and g.out_channels >= 2 * g.in_channels
            and g.out_channels >= FCNN_OC_WIDE_V * FCNN_OC_VL_F32)


cdef inline bint _weights_fit_half_l2(const ConvGeom* g) noexcept nogil:
    """Whether the (float32) weights fit in half of L2: direct kernels stream
    them once per block of outputs, which pays only while they stay there."""
    return (2 * g.out_channels * (g.in_channels // g.groups) * g.kernel_d * g.kernel_h
            * g.kernel_w * <index_t>sizeof(float) <= _tuning.l2_bytes)


cdef bint _pointwise_pays(const ConvGeom* g, bint weights_packed) noexcept nogil:
    """Against a GEMM that packs on every call, the pointwise kernel wins while
    the weights fit in half of L2; with its weights splatted (SSE, see
    conv_block.h: no shuffles, where the BLAS's SSE kernels shuffle) at any
    size, once they are packed ahead (packing them per call costs 4x)."""
    return not _tuning.small_gemm and (_weights_fit_half_l2(g)
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
    if _tuning.small_gemm and (
            (cout_group >= FCNN_OC_VL_F32 and red < BLOCK_MIN_REDUCTION)
            or (cout_group >= 2 * FCNN_OC_VL_F32
                and (FCNN_BLOCK_QV < 4 or red < 2 * BLOCK_MIN_REDUCTION))):
        return False
    outputs = g.out_h * g.out_w
    lanes = round_up((g.out_h - 1) * (g.out_w + reach_w) + g.out_w, FCNN_BLOCK_LANES_F32)
    if 2 * outputs < lanes:
        return False
    return weights_packed or g.batch * outputs >= BLOCK_PACK_POSITIONS


cdef ConvPlan conv_make_plan(const ConvGeom* g, int algorithm, index_t itemsize) noexcept nogil:
    cdef ConvPlan p
    cdef ConvGeom one
    if g.batch == 0:
        # An empty batch has no tasks, but its weight layout (block sizes) is
        # that of one image, so packing for it works as for any batch.
        one = one_image(g)
        p = conv_make_plan(&one, algorithm, itemsize)
        p.n_tasks = 0
        return p
    memset(&p, 0, sizeof(ConvPlan))
    p.algorithm = algorithm
    if (g.batch < 0 or g.groups <= 0 or g.in_channels <= 0 or g.out_channels <= 0
            or g.out_d <= 0 or g.out_h <= 0 or g.out_w <= 0
            or g.in_channels % g.groups or g.out_channels % g.groups):
        return p                            # nothing to do (callers validate first)
    if algorithm == CONV_WINOGRAD:
        winograd_plan(g, &_tuning, itemsize, &p)
    elif algorithm == CONV_BLOCKED:
        blocked_plan(g, &_tuning, itemsize, &p)
    elif algorithm == CONV_POINTWISE:
        pointwise_plan(g, &_tuning, itemsize, &p)
    elif algorithm == CONV_BLOCKED_OC or algorithm == CONV_BLOCKED_OC_UNPACKED:
        blocked_oc_plan(g, &_tuning, itemsize, &p)
    elif algorithm == CONV_DEPTHWISE:
        depthwise_plan(g, &_tuning, itemsize, &p)
    elif algorithm == CONV_DIRECT:
        direct_plan(g, &_tuning, itemsize, &p)
    else:
        gemm_plan(g, &_tuning, itemsize, &p)
    _line_gap(&p)
    return p


cdef inline void _line_gap(ConvPlan* p) noexcept nogil:
    """Whole cache lines per thread, plus one as a gap, so threads' scratch
    never shares a line (false sharing stalls the small-plane kernels)."""
    if p.workspace_per_thread > 0:
        p.workspace_per_thread = round_up(p.workspace_per_thread, 16) + 16


cdef index_t conv_packed_size(const ConvGeom* g, int algorithm, index_t itemsize) noexcept nogil:
    cdef ConvPlan p = conv_make_plan(g, algorithm, itemsize)   # its channel blocks
    if algorithm == CONV_WINOGRAD:
        return winograd_packed_size(g, &p, itemsize)
    if algorithm == CONV_POINTWISE:
        return pointwise_packed_size(g, &p, itemsize)
    if algorithm == CONV_BLOCKED:
        return blocked_packed_size(g, &p, itemsize)
    if algorithm == CONV_BLOCKED_OC or algorithm == CONV_BLOCKED_OC_UNPACKED:
        return blocked_oc_packed_size(g, &p, itemsize)
    if algorithm == CONV_DEPTHWISE:
        return depthwise_packed_size(g, &p, itemsize)
    return 0


cdef void _conv_forward(const ConvGeom* g, const ConvPlan* plan, const floating* x,
                        const floating* w, const floating* bias, floating* y,
                        const floating* res, floating* workspace, int activation,
                        int num_threads) noexcept nogil:
    if plan.n_tasks <= 0:
        return
    num_threads = <int>max(1, min(<index_t>num_threads, plan.n_tasks))
    if plan.algorithm == CONV_WINOGRAD:
        winograd_forward(g, plan, x, w, bias, y, res, workspace, activation, num_threads)
    elif plan.algorithm == CONV_BLOCKED:
        blocked_forward(g, plan, x, w, bias, y, res, workspace, activation, num_threads)
    elif plan.algorithm == CONV_POINTWISE:
        pointwise_forward(g, plan, x, w, bias, y, res, workspace, activation, num_threads)
    elif plan.algorithm == CONV_BLOCKED_OC or plan.algorithm == CONV_BLOCKED_OC_UNPACKED:
        blocked_oc_forward(g, plan, x, w, bias, y, res, workspace, activation, num_threads)
    elif plan.algorithm == CONV_DEPTHWISE:
        depthwise_forward(g, plan, x, w, bias, y, res, workspace, activation, num_threads)
    elif plan.algorithm == CONV_DIRECT:
        direct_forward(g, plan, x, w, bias, y, res, workspace, activation, num_threads)
    else:
        gemm_forward(g, plan, x, w, bias, y, res, workspace, activation, num_threads)


cdef void _pack_weights(const ConvGeom* g, int algorithm, const floating* w, floating* packed,
                        int num_threads) noexcept nogil:
    cdef ConvPlan plan = conv_make_plan(g, algorithm, sizeof(floating))   # its channel blocks
    if algorithm == CONV_WINOGRAD:
        winograd_pack(g, &plan, w, packed, num_threads)
    elif algorithm == CONV_POINTWISE:
        pointwise_pack(g, &plan, w, packed, num_threads)
    elif algorithm == CONV_BLOCKED:
        blocked_pack(g, &plan, w, packed, num_threads)
    elif algorithm == CONV_BLOCKED_OC:
        blocked_oc_pack(g, &plan, w, packed, num_threads)
    elif algorithm == CONV_DEPTHWISE:
        depthwise_pack(g, &plan, w, packed, num_threads)


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

cdef ConvGeom _geom_from_tuple(object t) except *:
    """A ConvGeom from its 22 fields in order (a ConvGeometry, or any sequence)."""
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


def select(geom, bint weights_packed=False):
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


def applicable(geom, str algorithm):
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


def plan(geom, str algorithm, int itemsize):
    """(workspace elements: shared, per thread; number of tasks; packed weight elements)."""
    cdef ConvGeom g = _geom_from_tuple(geom)
    cdef int a = _algorithm(&g, algorithm)
    cdef ConvPlan p = conv_make_plan(&g, a, itemsize)
    return p.workspace_shared, p.workspace_per_thread, p.n_tasks, conv_packed_size(&g, a, itemsize)


def pack(geom, str algorithm, cnp.ndarray w, cnp.ndarray packed, int num_threads):
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


def forward(geom, str algorithm, cnp.ndarray x, cnp.ndarray weights, object bias,
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


# ---------------------------------------------------------------- a max pool fused

# The activations applied before a fused max pool: those that keep order
# (a clamp to [0, hi]), so they commute with the maximum.
POOL_ACTIVATIONS = frozenset((ACT_NONE, ACT_RELU, ACT_RELU6))


cdef MaxPoolWindow _pool_window(const ConvGeom* g, object window) except *:
    """(kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w) over g's output,
    with the pooled size it gives (rounding down)."""
    cdef MaxPoolWindow p
    p.kernel_h, p.kernel_w, p.stride_h, p.stride_w, p.pad_h, p.pad_w = window
    p.out_h = (g.out_h + 2 * p.pad_h - p.kernel_h) // p.stride_h + 1 if p.stride_h > 0 else 0
    p.out_w = (g.out_w + 2 * p.pad_w - p.kernel_w) // p.stride_w + 1 if p.stride_w > 0 else 0
    return p


def max_pool_output(geom, window):
    """(out_h, out_w): the pooled size of the convolution's output."""
    cdef ConvGeom g = _geom_from_tuple(geom)
    cdef MaxPoolWindow p = _pool_window(&g, window)
    return p.out_h, p.out_w


def max_pool_applies(geom, window, int itemsize):
    """Whether blocked_oc can run this convolution with a max pool of
    `window` (kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w) fused."""
    cdef ConvGeom g = _geom_from_tuple(geom)
    cdef MaxPoolWindow p = _pool_window(&g, window)
    return g.batch >= 0 and blocked_oc_pool_applies(&g, &_tuning, itemsize, &p)


cdef ConvPlan _max_pool_plan(const ConvGeom* g, const MaxPoolWindow* pool,
                             index_t itemsize) noexcept nogil:
    cdef ConvPlan p = conv_make_plan(g, CONV_BLOCKED_OC, itemsize)
    if g.batch > 0:
        blocked_oc_pool_plan(g, &_tuning, itemsize, pool, &p)
        _line_gap(&p)
    return p


def max_pool_plan(geom, window, int itemsize):
    """(workspace elements: shared, per thread) of the fused run; its
    weights are blocked_oc's, packed as pack(geom, "blocked_oc", ...) packs them."""
    cdef ConvGeom g = _geom_from_tuple(geom)
    cdef MaxPoolWindow w = _pool_window(&g, window)
    cdef ConvPlan p = _max_pool_plan(&g, &w, itemsize)
    return p.workspace_shared, p.workspace_per_thread


cdef class MaxPoolRun:
    """A convolution with its max pool fused, on arrays checked once
    (max_pool_bind()): each call takes only a workspace and a thread count.
    Holds its arrays, so their memory lives as long as it does."""
    cdef ConvGeom g
    cdef MaxPoolWindow w
    cdef ConvPlan p
    cdef int activation
    cdef bint f32
    cdef void* xp
    cdef void* wp
    cdef void* bp
    cdef void* yp
    cdef object arrays

    def __call__(self, object workspace, int num_threads):
        """Run on num_threads threads; workspace: the dtype's, holding the
        shared plus num_threads x the per-thread elements of max_pool_plan()."""
        cdef void* ws
        if workspace is None or (<cnp.ndarray>workspace).size < (
                self.p.workspace_shared + self.p.workspace_per_thread * num_threads):
            raise ValueError("conv: workspace too small")
        if self.p.n_tasks <= 0:
            return
        ws = cnp.PyArray_DATA(<cnp.ndarray>workspace)
        num_threads = <int>max(1, min(<index_t>num_threads, self.p.n_tasks))
        if self.f32:
            with nogil:
                blocked_oc_pool_forward(&self.g, &self.p, &self.w, <float*>self.xp,
                                        <float*>self.wp, <float*>self.bp, <float*>self.yp,
                                        <float*>ws, self.activation, num_threads)
        else:
            with nogil:
                blocked_oc_pool_forward(&self.g, &self.p, &self.w, <double*>self.xp,
                                        <double*>self.wp, <double*>self.bp, <double*>self.yp,
                                        <double*>ws, self.activation, num_threads)


def max_pool_bind(geom, window, cnp.ndarray x, cnp.ndarray weights, object bias,
                  cnp.ndarray y, int activation):
    """The run y = max_pool(act(conv(x) + bias)), its arguments checked now: y
    of the pooled shape; arrays as forward()'s (weights packed for
    blocked_oc), activation in POOL_ACTIVATIONS. A plan binds its step once."""
    cdef MaxPoolRun r = MaxPoolRun.__new__(MaxPoolRun)
    r.g = _geom_from_tuple(geom)
    r.w = _pool_window(&r.g, window)
    if not blocked_oc_pool_applies(&r.g, &_tuning, x.itemsize, &r.w):
        raise ValueError(f"conv: a max pool of window {tuple(window)} cannot be fused into "
                         f"this convolution (blocked_oc, output {r.g.out_h}x{r.g.out_w})")
    if activation not in POOL_ACTIVATIONS:
        raise ValueError(f"conv: activation code {activation} does not keep order; a fused "
                         f"max pool takes none, relu or relu6")
    if y.size != r.g.batch * r.g.out_channels * r.w.out_h * r.w.out_w:
        raise ValueError("conv: the pooled output has the wrong size")
    r.p = _max_pool_plan(&r.g, &r.w, x.itemsize)
    r.activation = activation
    r.f32 = x.dtype.num == cnp.NPY_FLOAT32
    r.xp = cnp.PyArray_DATA(x)
    r.wp = cnp.PyArray_DATA(weights)
    r.bp = NULL if bias is None else cnp.PyArray_DATA(<cnp.ndarray>bias)
    r.yp = cnp.PyArray_DATA(y)
    r.arrays = (x, weights, bias, y)
    return r


def max_pool_forward(geom, window, cnp.ndarray x, cnp.ndarray weights, object bias,
                     cnp.ndarray y, object workspace, int activation, int num_threads):
    """y = max_pool(act(conv(x) + bias)): max_pool_bind() and run once."""
    max_pool_bind(geom, window, x, weights, bias, y, activation)(workspace, num_threads)

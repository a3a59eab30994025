# What the convolution algorithms share (_conv and _conv_<algorithm>):
# integer helpers, the geometry tests several of them apply, and the two
# layouts several of them use: weights packed in channel blocks, and input
# channels copied into zero-padded (phase) planes.
from cython.parallel cimport prange
from libc.string cimport memset, memcpy
from fastcnn._kernels._typedefs cimport floating, index_t
from fastcnn._kernels._conv_types cimport ConvGeom
from fastcnn._kernels._transpose cimport transpose

cdef enum:
    # Below this many tasks a plan splits its work further (output channels,
    # rows), so that both cores (and more) get work on batch-1 layers with
    # small feature maps.
    MIN_TASKS = 8
    BLOCK_PAD_BYTES = 64 * 1024 * 1024    # limit on the padded input held at once


cdef inline index_t ceil_div(index_t a, index_t b) noexcept nogil:
    return (a + b - 1) // b


cdef inline index_t round_up(index_t a, index_t b) noexcept nogil:
    return ceil_div(a, b) * b


cdef inline index_t ceil_div_stride(index_t a, index_t stride) noexcept nogil:
    """ceil(a / stride) for a >= 0, without a division for the common strides."""
    if stride == 1:
        return a
    if stride == 2:
        return (a + 1) >> 1
    return (a + stride - 1) // stride


cdef inline ConvGeom one_image(const ConvGeom* g) noexcept nogil:
    cdef ConvGeom one = g[0]
    one.batch = 1
    return one


cdef inline bint blocked_applies(const ConvGeom* g) noexcept nogil:
    return g.in_d == 1 and g.kernel_d == 1 and g.out_d == 1 and g.pad_d == 0


cdef inline bint pointwise_applies(const ConvGeom* g) noexcept nogil:
    return (g.kernel_d == 1 and g.kernel_h == 1 and g.kernel_w == 1
            and g.stride_d == 1 and g.stride_h == 1 and g.stride_w == 1
            and g.pad_d == 0 and g.pad_h == 0 and g.pad_w == 0
            and g.out_d == g.in_d and g.out_h == g.in_h and g.out_w == g.in_w)


cdef inline index_t tap_offsets_size(const ConvGeom* g, index_t itemsize) noexcept nogil:
    """Workspace elements holding the blocked kernels' tap offsets (longs),
    first in the shared workspace, a whole number of cache lines."""
    return round_up(ceil_div(g.kernel_h * g.kernel_w * <index_t>sizeof(long), itemsize),
                    64 // itemsize)


cdef inline void splat_in_place(floating* p, index_t n, index_t splat) noexcept nogil:
    """p[i * splat + s] = p[i] for the first n values (from the last down)."""
    cdef index_t i, s
    if splat == 1:
        return
    i = n
    while i > 0:
        i -= 1
        for s in range(splat):
            p[i * splat + s] = p[i]


cdef inline void pack_block_columns(const floating* src, index_t k, index_t valid, index_t mb,
                                    index_t j0, index_t j1, floating* dst) noexcept nogil:
    """Columns j0 ... j1 - 1 of one block: dst[j][o] = src[o * k + j] for the
    block's `valid` channels (register transposes), zero up to mb."""
    cdef index_t j, o
    transpose(src + j0, k, valid, j1 - j0, dst + j0 * mb, mb)
    if valid < mb:
        for j in range(j0, j1):
            for o in range(valid, mb):
                dst[j * mb + o] = 0


cdef inline void pack_channel_blocks(const floating* w, index_t groups, index_t m_group, index_t k,
                                     index_t mb, index_t splat, floating* packed,
                                     int num_threads) noexcept nogil:
    """packed[group][channel block][i][o][s] = w[group, block * mb + o, i] for
    the (groups, m_group, k) weights, zero past the group's last channel: the
    layout the blocked and depthwise kernels read (mb channels per block,
    `splat` copies of each: see conv_block.h); blocks are packed in parallel."""
    cdef index_t nb = ceil_div(m_group, mb)
    cdef index_t blk
    for blk in prange(groups * nb, num_threads=num_threads, schedule='static'):
        pack_block_columns(w + ((blk // nb) * m_group + (blk % nb) * mb) * k, k,
                           min(mb, m_group - (blk % nb) * mb), mb, 0, k,
                           packed + blk * k * mb * splat)
        splat_in_place(packed + blk * k * mb * splat, k * mb, splat)


cdef inline void pad_channel(const ConvGeom* g, index_t wq, index_t hq, index_t channel_stride,
                             index_t sh, index_t sw, const floating* xc,
                             floating* dst) noexcept nogil:
    """One input channel into sh x sw padded phase planes of hq rows of wq
    (zero outside the input; channel_stride elements in all); one plane when
    sh = sw = 1. Each element is written once: only what the input does not
    cover is zeroed (a memset of the whole plane first took a third of the
    copy's time on a 32-channel stride-2 layer at 64x64)."""
    cdef index_t a, bph, i, j, r, ih, j0, j1
    cdef index_t planes_end = sh * sw * hq * wq
    cdef floating* prow
    cdef const floating* src
    memset(dst + planes_end, 0, (channel_stride - planes_end) * sizeof(floating))
    for a in range(sh):
        for i in range(hq):
            r = i * sh + a                      # padded row
            ih = r - g.pad_h
            src = xc + ih * g.in_w if 0 <= ih < g.in_h else xc
            for bph in range(sw):
                prow = dst + ((a * sw + bph) * hq + i) * wq
                # column j holds input column j * sw + bph - pad_w, valid in [0, in_w)
                j0 = min(wq, ceil_div_stride(max(<index_t>0, g.pad_w - bph), sw))
                j1 = min(wq, ceil_div_stride(max(<index_t>0, g.in_w + g.pad_w - bph), sw))
                if ih < 0 or ih >= g.in_h or j1 <= j0:
                    memset(prow, 0, wq * sizeof(floating))
                    continue
                memset(prow, 0, j0 * sizeof(floating))
                if sw == 1:
                    memcpy(prow + j0, src + j0 - g.pad_w, (j1 - j0) * sizeof(floating))
                else:
                    for j in range(j0, j1):
                        prow[j] = src[j * sw + bph - g.pad_w]
                memset(prow + j1, 0, (wq - j1) * sizeof(floating))


cdef inline index_t group_blocks_size(const ConvGeom* g, index_t mb, index_t splat) noexcept nogil:
    """Elements pack_group_blocks writes: each group's output channels in
    whole blocks of mb, each channel with the group's input channels x taps,
    splat copies of each weight."""
    return (g.groups * round_up(g.out_channels // g.groups, mb) * (g.in_channels // g.groups)
            * g.kernel_d * g.kernel_h * g.kernel_w * splat)


cdef inline void pack_group_blocks(const ConvGeom* g, const floating* w, index_t mb,
                                   index_t splat, floating* packed,
                                   int num_threads) noexcept nogil:
    """The layer's (out, in / groups, *kernel) weights as pack_channel_blocks
    lays them out, per group, in blocks of mb output channels."""
    pack_channel_blocks(w, g.groups, g.out_channels // g.groups,
                        (g.in_channels // g.groups) * g.kernel_d * g.kernel_h * g.kernel_w,
                        mb, splat, packed, num_threads)

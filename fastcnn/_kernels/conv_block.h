/* The register-blocked direct convolution kernel (the "blocked" algorithm).
 *
 * Output positions are lanes of a padded, phase-split plane (see _conv_blocked.pyx):
 * output (oh, ow) is lane q = oh * wq + ow, and tap t of every lane reads
 * x[q + toff[t]], so one tap is one unaligned vector load per vector of
 * lanes. A call computes FCNN_BLOCK_OCB output channels x FCNN_BLOCK_LANES
 * lanes, summing over every input channel and tap, with the accumulators in
 * registers: per (channel, tap) it loads FCNN_BLOCK_QV input vectors and
 * FCNN_BLOCK_OCB weights and issues OCB x QV fused multiply-adds.
 *
 * Written with GCC vector extensions, so it compiles for any target: 64-byte
 * vectors with AVX-512 (6 x 4 accumulators of 32 registers), 32-byte ones
 * with AVX2 and 16-byte ones with SSE (6 x 2 of 16). A narrow tile of half
 * the channels and more lanes (3 x 8; 3 x 3 of 16 registers) serves layers whose
 * output channels it pads less, such as 3 (an image's colours: the last
 * layer of a decoder or generator, the input gradient of a stem), where the
 * wide tile would spend half its multiply-adds on padding. The summation
 * order is fixed (channels, then taps), whatever the thread count.
 *
 * Also here: the output-channel kernel ("blocked_oc"). Vector types and
 * transposition: transpose.h.
 */
#ifndef FASTCNN_CONV_BLOCK_H
#define FASTCNN_CONV_BLOCK_H

#include "transpose.h"

#if FCNN_VEC_BYTES == 64
#define FCNN_BLOCK_QV 4
#define FCNN_BLOCK_NARROW_QV 8
#else
#define FCNN_BLOCK_QV 2
#define FCNN_BLOCK_NARROW_QV 3      /* 3 x 4 and the operands would not fit 16 registers */
#endif
#define FCNN_BLOCK_OCB 6
#define FCNN_BLOCK_NARROW_OCB 3
#ifndef FCNN_BLOCK_PREFETCH
#define FCNN_BLOCK_PREFETCH 4096    /* bytes of weights fetched ahead */
#endif
/* How many copies of each weight the packed panels hold. With 16-byte
 * vectors (SSE) a broadcast is a scalar load and a shuffle, and the shuffles
 * compete with the multiplies and adds for the same pipes: there each weight
 * is stored splatted across a whole vector and loaded as one. With AVX and
 * later a broadcast is a plain load: one copy, and 4x less weight traffic. */
#define FCNN_BLOCK_SPLAT(VL) (FCNN_VEC_BYTES == 16 ? (VL) : 1)
#define FCNN_BLOCK_SPLAT_F32 FCNN_BLOCK_SPLAT(FCNN_VEC_BYTES / 4)
#define FCNN_BLOCK_SPLAT_F64 FCNN_BLOCK_SPLAT(FCNN_VEC_BYTES / 8)
#if FCNN_VEC_BYTES == 16
#define FCNN_BLOCK_WEIGHT(VT, w, o, SPLAT) (*(const VT *)((w) + (o) * (SPLAT)))
#else
#define FCNN_BLOCK_WEIGHT(VT, w, o, SPLAT) ((w)[o])
#endif
#define FCNN_BLOCK_LANES_F32 (FCNN_BLOCK_QV * FCNN_VEC_BYTES / 4)
#define FCNN_BLOCK_LANES_F64 (FCNN_BLOCK_QV * FCNN_VEC_BYTES / 8)
#define FCNN_BLOCK_NARROW_LANES_F32 (FCNN_BLOCK_NARROW_QV * FCNN_VEC_BYTES / 4)
#define FCNN_BLOCK_NARROW_LANES_F64 (FCNN_BLOCK_NARROW_QV * FCNN_VEC_BYTES / 8)

/* Weights stream from memory: fetch the n elements a channel uses
 * FCNN_BLOCK_PREFETCH bytes ahead, into L2 and not past it (locality 2, not
 * 0), because a thread's next call often reads the same weights again: each
 * Winograd task multiplies all of U. ResNet-18's 64-channel 56x56 layer with
 * cold caches, 1 thread: 1.16-1.23 -> 0.96-0.98 ms; the compiled network at
 * batch 8: 145-149 -> 119-120 ms. */
#define FCNN_BLOCK_PREFETCH_WEIGHTS(T, w, n)                                              \
    for (long l = 0; l < (n) * (long)sizeof(T); l += 64)                                  \
        __builtin_prefetch((const char *)(w) + FCNN_BLOCK_PREFETCH + l, 0, 2);

/* One (input channel, tap): QV input vectors at xp, OCB weights at w, OCB x QV
 * multiply-adds into acc. */
#define FCNN_BLOCK_STEP(SUFFIX, OCB, QV, SPLAT, acc, xp, w)                               \
    {                                                                                     \
        fcnn_vec_##SUFFIX xv[QV];                                                         \
        _Pragma("GCC unroll 8")                                                           \
        for (int v = 0; v < QV; v++)                                                      \
            xv[v] = *(const fcnn_vec_##SUFFIX *)((xp) + VL * v);                          \
        _Pragma("GCC unroll 8")                                                           \
        for (int o = 0; o < OCB; o++) {                                                   \
            _Pragma("GCC unroll 8")                                                       \
            for (int v = 0; v < QV; v++)                                                  \
                acc[o][v] += FCNN_BLOCK_WEIGHT(fcnn_vec_##SUFFIX, w, o, SPLAT) * xv[v];   \
        }                                                                                 \
    }

/* x: the first lane's input in channel 0; ld_c: elements between channels;
 * w: packed weights [channel][tap][OCB][SPLAT]; out: OCB rows of LANES, ld_out
 * elements apart, added to when accumulate is set (the caller splits the
 * channels into chunks). */
#define FCNN_DEFINE_BLOCK_KERNEL(SUFFIX, NAME, T, OCB, QV)                                \
static inline void fcnn_block_kernel_##SUFFIX##NAME(const T *x, long ld_c, const T *w,    \
                                              const long *toff, long ntaps, long cin,     \
                                              T *out, long ld_out, int accumulate)        \
{                                                                                         \
    enum { VL = FCNN_VEC_BYTES / sizeof(T), SPLAT = FCNN_BLOCK_SPLAT(VL) };               \
    fcnn_vec_##SUFFIX acc[OCB][QV];                                                       \
    _Pragma("GCC unroll 8")                                                               \
    for (int o = 0; o < OCB; o++) {                                                       \
        _Pragma("GCC unroll 8")                                                           \
        for (int v = 0; v < QV; v++)                                                      \
            acc[o][v] = accumulate ? *(const fcnn_vec_##SUFFIX *)(out + o * ld_out + v * VL) \
                                   : (fcnn_vec_##SUFFIX){0};                              \
    }                                                                                     \
    if (ntaps == 1) { /* 1x1: no tap loop around each block of multiply-adds */          \
        const T *xp = x + toff[0];                                                        \
        for (long c = 0; c < cin; c++, xp += ld_c, w += OCB * SPLAT) {                    \
            FCNN_BLOCK_PREFETCH_WEIGHTS(T, w, OCB * SPLAT)                                \
            FCNN_BLOCK_STEP(SUFFIX, OCB, QV, SPLAT, acc, xp, w)                           \
        }                                                                                 \
    } else                                                                                \
    for (long c = 0; c < cin; c++) {                                                      \
        const T *xc = x + c * ld_c;                                                       \
        FCNN_BLOCK_PREFETCH_WEIGHTS(T, w, ntaps * OCB * SPLAT)                            \
        for (long t = 0; t < ntaps; t++) {                                                \
            const T *xp = xc + toff[t];                                                   \
            FCNN_BLOCK_STEP(SUFFIX, OCB, QV, SPLAT, acc, xp, w)                           \
            w += OCB * SPLAT;                                                             \
        }                                                                                 \
    }                                                                                     \
    _Pragma("GCC unroll 8")                                                               \
    for (int o = 0; o < OCB; o++) {                                                       \
        _Pragma("GCC unroll 8")                                                           \
        for (int v = 0; v < QV; v++)                                                      \
            *(fcnn_vec_##SUFFIX *)(out + o * ld_out + v * VL) = acc[o][v];                \
    }                                                                                     \
}

FCNN_DEFINE_BLOCK_KERNEL(f32, , float, FCNN_BLOCK_OCB, FCNN_BLOCK_QV)
FCNN_DEFINE_BLOCK_KERNEL(f64, , double, FCNN_BLOCK_OCB, FCNN_BLOCK_QV)
FCNN_DEFINE_BLOCK_KERNEL(f32, _narrow, float, FCNN_BLOCK_NARROW_OCB, FCNN_BLOCK_NARROW_QV)
FCNN_DEFINE_BLOCK_KERNEL(f64, _narrow, double, FCNN_BLOCK_NARROW_OCB, FCNN_BLOCK_NARROW_QV)
/* The tails of fcnn_block_gemm: fewer vectors of lanes (any target uses some). */
FCNN_DEFINE_BLOCK_KERNEL(f32, _q1, float, FCNN_BLOCK_OCB, 1)
FCNN_DEFINE_BLOCK_KERNEL(f64, _q1, double, FCNN_BLOCK_OCB, 1)
#if FCNN_BLOCK_QV > 2
FCNN_DEFINE_BLOCK_KERNEL(f32, _q2, float, FCNN_BLOCK_OCB, 2)
FCNN_DEFINE_BLOCK_KERNEL(f64, _q2, double, FCNN_BLOCK_OCB, 2)
FCNN_DEFINE_BLOCK_KERNEL(f32, _q3, float, FCNN_BLOCK_OCB, 3)
FCNN_DEFINE_BLOCK_KERNEL(f64, _q3, double, FCNN_BLOCK_OCB, 3)
#endif

/* The pointwise algorithm's tile (1x1 layers read as they lie, _conv_pointwise.pyx).
 * With AVX2, 4 channels x 3 vectors: the same 12 accumulators as 6 x 2 with
 * one load fewer per 12 multiply-adds, and no padding on channel counts that
 * are multiples of 4 (the 6-channel tile computes 18 rows for 16 and 36 for
 * 32). Zen 4, AVX2, 1 thread: 32 -> 16 at 112x112 0.176 -> 0.155 ms, 32 -> 24
 * 0.232 -> 0.220, 64 -> 64 at 56x56 0.264 -> 0.255. With AVX-512 the 4 x 6
 * shape lost on 64 channels (0.250 -> 0.265 ms), so the block tile stays. */
#if FCNN_VEC_BYTES == 32
#define FCNN_POINT_OCB 4
#define FCNN_POINT_QV 3
FCNN_DEFINE_BLOCK_KERNEL(f32, _point, float, FCNN_POINT_OCB, FCNN_POINT_QV)
FCNN_DEFINE_BLOCK_KERNEL(f64, _point, double, FCNN_POINT_OCB, FCNN_POINT_QV)
#else
#define FCNN_POINT_OCB FCNN_BLOCK_OCB
#define FCNN_POINT_QV FCNN_BLOCK_QV
#define fcnn_block_kernel_f32_point fcnn_block_kernel_f32
#define fcnn_block_kernel_f64_point fcnn_block_kernel_f64
#endif
#define FCNN_POINT_LANES_F32 (FCNN_POINT_QV * FCNN_VEC_BYTES / 4)
#define FCNN_POINT_LANES_F64 (FCNN_POINT_QV * FCNN_VEC_BYTES / 8)

/* A GEMM with the block kernel: out (OCB rows of `lanes`, ld_out apart) =
 * w^T x, w packed [cin][OCB][SPLAT], x cin rows of `lanes` (ld_c apart). The lanes
 * are rounded up to whole vectors: x's rows and out's must hold that many.
 * As few calls as hold them, of vector counts differing by at most 1 (13
 * vectors with AVX-512: 4 + 3 + 3 + 3, not 4 + 4 + 4 + 1, whose last call
 * has too few accumulators to fill the pipes: ResNet-18's Winograd layers at
 * batch 8, 0.95-0.96x the time); each output is one kernel's fixed sum over
 * the channels, whichever call computes it. */
#define FCNN_DEFINE_BLOCK_GEMM(SUFFIX, T)                                                 \
static inline void fcnn_block_gemm_##SUFFIX(const T *x, long ld_c, const T *w, long cin,   \
                                            T *out, long ld_out, long lanes)              \
{                                                                                         \
    enum { VL = FCNN_VEC_BYTES / sizeof(T), QV = FCNN_BLOCK_QV };                         \
    static const long tap0 = 0;                                                           \
    const long nv = (lanes + VL - 1) / VL, calls = (nv + QV - 1) / QV;                    \
    for (long k = 0; k < calls; k++) {                                                    \
        const long j = k * nv / calls * VL;                                               \
        switch ((k + 1) * nv / calls - k * nv / calls) {                                  \
        case QV:                                                                          \
            fcnn_block_kernel_##SUFFIX(x + j, ld_c, w, &tap0, 1, cin, out + j, ld_out, 0); \
            break;                                                                        \
        case 1:                                                                           \
            fcnn_block_kernel_##SUFFIX##_q1(x + j, ld_c, w, &tap0, 1, cin, out + j, ld_out, 0); \
            break;                                                                        \
        FCNN_BLOCK_GEMM_WIDE_TAILS(SUFFIX)                                                \
        }                                                                                 \
    }                                                                                     \
}
#if FCNN_BLOCK_QV > 2
#define FCNN_BLOCK_GEMM_WIDE_TAILS(SUFFIX)                                                \
    case 2: fcnn_block_kernel_##SUFFIX##_q2(x + j, ld_c, w, &tap0, 1, cin, out + j, ld_out, 0); \
        break;                                                                            \
    case 3: fcnn_block_kernel_##SUFFIX##_q3(x + j, ld_c, w, &tap0, 1, cin, out + j, ld_out, 0); \
        break;
#else
#define FCNN_BLOCK_GEMM_WIDE_TAILS(SUFFIX)
#endif
FCNN_DEFINE_BLOCK_GEMM(f32, float)
FCNN_DEFINE_BLOCK_GEMM(f64, double)



/* The output-channel kernel (the "blocked_oc" algorithm): vectors hold
 * output channels, registers hold P consecutive output pixels of one row.
 * Per (input channel, tap) it loads V weight vectors and broadcasts P input
 * values (pixel j reads x[j * SW + toff[t]] of a zero-padded plane), then
 * issues P x V fused multiply-adds: no lane is wasted on padding, and any
 * row width or stride 1 or 2 runs at full width.
 *
 * acc: P rows of V vectors; with accumulate, the call adds to it (the
 * caller splits the input channels into chunks whose weights stay in L1).
 * prefetch (or NULL): weights the caller needs next, prefetch_step bytes of
 * them per input channel step, which the call fetches towards L2, so
 * streaming cold weights overlaps compute. The caller spreads a chunk's
 * worth over the calls of the chunk before it: ResNet-18's 512-channel 3x3
 * layers at 7x7, their weights from memory, ran about 10 % faster so than
 * with every prefetch issued in the chunk's first call.
 * Two shapes per target: WIDE (more pixels) and TALL (more channels). */
#if defined(__AVX512F__)
#define FCNN_OC_WIDE_P 14
#define FCNN_OC_WIDE_V 2
#define FCNN_OC_TALL_P 7
#define FCNN_OC_TALL_V 3
#else
#define FCNN_OC_WIDE_P 6
#define FCNN_OC_WIDE_V 2
#define FCNN_OC_TALL_P 4
#define FCNN_OC_TALL_V 3
#endif
#define FCNN_OC_VL_F32 (FCNN_VEC_BYTES / 4)
#define FCNN_OC_VL_F64 (FCNN_VEC_BYTES / 8)

/* One (input channel, tap) of the output-channel kernel: V weight vectors at
 * w, P inputs SW apart at xp broadcast, P x V multiply-adds into acc. */
#define FCNN_OC_STEP(SUFFIX, T, P, V, SW, acc, xp, w)                                     \
    {                                                                                    \
        fcnn_vec_##SUFFIX wv[V];                                                         \
        _Pragma("GCC unroll 8")                                                          \
        for (int v = 0; v < V; v++)                                                      \
            wv[v] = *(const fcnn_vec_##SUFFIX *)((w) + v * VL);                          \
        _Pragma("GCC unroll 16")                                                         \
        for (int j = 0; j < P; j++) {                                                    \
            T b = (xp)[j * SW];                                                          \
            _Pragma("GCC unroll 8")                                                      \
            for (int v = 0; v < V; v++)                                                  \
                acc[j][v] += b * wv[v];                                                  \
        }                                                                                \
    }

/* Input channel step c's share of the weights to prefetch: step bytes at
 * pf + c * step, towards L2. */
#define FCNN_OC_PREFETCH(pf, step, c)                                                    \
    for (long l = 0; l < (step); l += 64)                                                \
        __builtin_prefetch((const char *)(pf) + (c) * (step) + l, 0, 2);

#define FCNN_DEFINE_OC_KERNEL(SUFFIX, T, NAME, P, V, SW)                                  \
static inline void fcnn_oc_kernel_##SUFFIX##_##NAME##_s##SW(                              \
    const T *x, long ld_c, const T *w, const long *toff, long ntaps, long cin,           \
    T *acc_io, int accumulate, const T *prefetch, long prefetch_step)                    \
{                                                                                        \
    enum { VL = FCNN_VEC_BYTES / sizeof(T) };                                      \
    fcnn_vec_##SUFFIX acc[P][V];                                                         \
    _Pragma("GCC unroll 16")                                                             \
    for (int j = 0; j < P; j++) {                                                        \
        _Pragma("GCC unroll 8")                                                          \
        for (int v = 0; v < V; v++)                                                      \
            acc[j][v] = accumulate ? *(const fcnn_vec_##SUFFIX *)(acc_io + (j * V + v) * VL) \
                                   : (fcnn_vec_##SUFFIX){0};                             \
    }                                                                                    \
    /* One tap (1x1 layers): the channel loop alone, so each step carries no tap         \
     * loop or test (beside AVX2's 12 multiply-adds a step, that overhead left the       \
     * issue width short: 320 -> 1280 at 7x7 ran at 92 % of the AVX-512 build on         \
     * Zen 4). */                                                                        \
    if (ntaps == 1) {                                                                    \
        const T *xp = x + toff[0];                                                       \
        if (!prefetch)                                                                   \
            for (long c = 0; c < cin; c++, xp += ld_c, w += V * VL)                      \
                FCNN_OC_STEP(SUFFIX, T, P, V, SW, acc, xp, w)                            \
        else                                                                             \
            for (long c = 0; c < cin; c++, xp += ld_c, w += V * VL) {                    \
                FCNN_OC_PREFETCH(prefetch, prefetch_step, c)                             \
                FCNN_OC_STEP(SUFFIX, T, P, V, SW, acc, xp, w)                            \
            }                                                                            \
    } else                                                                               \
    for (long c = 0; c < cin; c++) {                                                     \
        const T *xc = x + c * ld_c;                                                      \
        if (prefetch) /* the caller's next weights, into L2 while these compute */       \
            FCNN_OC_PREFETCH(prefetch, prefetch_step, c)                                 \
        for (long t = 0; t < ntaps; t++) {                                               \
            const T *xp = xc + toff[t];                                                  \
            FCNN_OC_STEP(SUFFIX, T, P, V, SW, acc, xp, w)                                \
            w += V * VL;                                                                 \
        }                                                                                \
    }                                                                                    \
    _Pragma("GCC unroll 16")                                                             \
    for (int j = 0; j < P; j++) {                                                        \
        _Pragma("GCC unroll 8")                                                          \
        for (int v = 0; v < V; v++)                                                      \
            *(fcnn_vec_##SUFFIX *)(acc_io + (j * V + v) * VL) = acc[j][v];              \
    }                                                                                    \
}

/* Each shape comes with P = 1 ... its full width: a row whose width is not a
 * multiple of the tile's ends in a tile of its own width instead of a full one
 * over padding pixels (a 32-pixel row in AVX-512's 14-pixel tiles: 14 + 14 +
 * 4, not 42 pixels' work). FCNN_OC_WIDE_WIDTHS(X, A, B) calls X(A, B, P) for
 * each P = 1 ... FCNN_OC_WIDE_P (checked below), FCNN_OC_TALL_WIDTHS likewise. */
#if defined(__AVX512F__)
#define FCNN_OC_WIDE_WIDTHS(X, A, B)                                                     \
    X(A, B, 1) X(A, B, 2) X(A, B, 3) X(A, B, 4) X(A, B, 5) X(A, B, 6) X(A, B, 7)           \
    X(A, B, 8) X(A, B, 9) X(A, B, 10) X(A, B, 11) X(A, B, 12) X(A, B, 13) X(A, B, 14)
#define FCNN_OC_TALL_WIDTHS(X, A, B)                                                     \
    X(A, B, 1) X(A, B, 2) X(A, B, 3) X(A, B, 4) X(A, B, 5) X(A, B, 6) X(A, B, 7)
#else
#define FCNN_OC_WIDE_WIDTHS(X, A, B)                                                     \
    X(A, B, 1) X(A, B, 2) X(A, B, 3) X(A, B, 4) X(A, B, 5) X(A, B, 6)
#define FCNN_OC_TALL_WIDTHS(X, A, B)                                                     \
    X(A, B, 1) X(A, B, 2) X(A, B, 3) X(A, B, 4)
#endif

#define FCNN_OC_COUNT(A, B, P) + 1
_Static_assert(0 FCNN_OC_WIDE_WIDTHS(FCNN_OC_COUNT, , ) == FCNN_OC_WIDE_P, "wide tile widths");
_Static_assert(0 FCNN_OC_TALL_WIDTHS(FCNN_OC_COUNT, , ) == FCNN_OC_TALL_P, "tall tile widths");

#define FCNN_DEFINE_OC_WIDE(SUFFIX, T, P)                                                 \
FCNN_DEFINE_OC_KERNEL(SUFFIX, T, wide##P, P, FCNN_OC_WIDE_V, 1)                           \
FCNN_DEFINE_OC_KERNEL(SUFFIX, T, wide##P, P, FCNN_OC_WIDE_V, 2)
#define FCNN_DEFINE_OC_TALL(SUFFIX, T, P)                                                 \
FCNN_DEFINE_OC_KERNEL(SUFFIX, T, tall##P, P, FCNN_OC_TALL_V, 1)                           \
FCNN_DEFINE_OC_KERNEL(SUFFIX, T, tall##P, P, FCNN_OC_TALL_V, 2)
#define FCNN_OC_WIDE_ENTRY(SUFFIX, SW, P) fcnn_oc_kernel_##SUFFIX##_wide##P##_s##SW,
#define FCNN_OC_TALL_ENTRY(SUFFIX, SW, P) fcnn_oc_kernel_##SUFFIX##_tall##P##_s##SW,

/* fcnn_oc_kernel_f32 / _f64(tall, sw, p): the kernel of that shape, stride
 * (1 or 2) and width p (1 ... the shape's full width). */
#define FCNN_DEFINE_OC_KERNELS(SUFFIX, T)                                                \
FCNN_OC_WIDE_WIDTHS(FCNN_DEFINE_OC_WIDE, SUFFIX, T)                                       \
FCNN_OC_TALL_WIDTHS(FCNN_DEFINE_OC_TALL, SUFFIX, T)                                       \
typedef void (*fcnn_oc_kernel_##SUFFIX##_t)(const T *, long, const T *, const long *, long, \
                                             long, T *, int, const T *, long);            \
static inline fcnn_oc_kernel_##SUFFIX##_t fcnn_oc_kernel_##SUFFIX(int tall, int sw, long p) \
{                                                                                        \
    static const fcnn_oc_kernel_##SUFFIX##_t wide[2][FCNN_OC_WIDE_P] = {                 \
        {FCNN_OC_WIDE_WIDTHS(FCNN_OC_WIDE_ENTRY, SUFFIX, 1)},                             \
        {FCNN_OC_WIDE_WIDTHS(FCNN_OC_WIDE_ENTRY, SUFFIX, 2)}};                            \
    static const fcnn_oc_kernel_##SUFFIX##_t tall_[2][FCNN_OC_TALL_P] = {                \
        {FCNN_OC_TALL_WIDTHS(FCNN_OC_TALL_ENTRY, SUFFIX, 1)},                             \
        {FCNN_OC_TALL_WIDTHS(FCNN_OC_TALL_ENTRY, SUFFIX, 2)}};                            \
    return tall ? tall_[sw - 1][p - 1] : wide[sw - 1][p - 1];                            \
}

FCNN_DEFINE_OC_KERNELS(f32, float)
FCNN_DEFINE_OC_KERNELS(f64, double)

/* One pooled row of a max pool over the output-channel kernel's sums (rows of
 * row_len pixels of mb channels, mb a whole number of vectors): dst[pc] = the
 * maximum over rows [h0, h1) of acc and columns [pc * sw - pw, + kw) clipped
 * to [0, in_w). NaN wins, as in max_pool2d: the maxima skip NaN (x86's max
 * returns its second operand, the running one, when either is NaN) and a
 * mask remembers them. Each vector's maximum stays in a register through its
 * window; consecutive windows are independent, so their chains overlap. */
#if defined(FCNN_VMAX_f32)
#define FCNN_OC_POOL_MAX(SUFFIX, v, m) FCNN_VMAX_##SUFFIX(v, m)
#else
#define FCNN_OC_POOL_MAX(SUFFIX, v, m)                                                   \
    ((fcnn_vec_##SUFFIX)(((fcnn_tr_mask_##SUFFIX)(v) & ((v) > (m)))                     \
                         | ((fcnn_tr_mask_##SUFFIX)(m) & ~((v) > (m)))))
#endif
#define FCNN_DEFINE_OC_POOL_ROW(SUFFIX, T)                                                \
static inline void fcnn_oc_pool_row_##SUFFIX(const T *acc, long row_len, long mb, long h0, \
                                             long h1, long kw, long sw, long pw, long in_w, \
                                             long out_w, T *dst)                          \
{                                                                                        \
    enum { VL = FCNN_VEC_BYTES / sizeof(T) };                                            \
    typedef fcnn_vec_##SUFFIX vec;                                                       \
    typedef fcnn_tr_mask_##SUFFIX mask;                                                  \
    const vec nan = (vec){0} + (T)__builtin_nan("");                                     \
    for (long pc = 0; pc < out_w; pc++) {                                                \
        const long w0 = pc * sw - pw < 0 ? 0 : pc * sw - pw;                             \
        const long w1 = pc * sw - pw + kw > in_w ? in_w : pc * sw - pw + kw;             \
        for (long l = 0; l < mb; l += VL) {                                              \
            vec m = *(const vec *)(acc + (h0 * row_len + w0) * mb + l);                  \
            mask seen = (mask){0};                                                       \
            for (long h = h0; h < h1; h++)                                               \
                for (long w = w0; w < w1; w++) {                                         \
                    const vec v = *(const vec *)(acc + (h * row_len + w) * mb + l);      \
                    seen |= v != v;                                                      \
                    m = FCNN_OC_POOL_MAX(SUFFIX, v, m);                                  \
                }                                                                        \
            *(vec *)(dst + pc * mb + l) = (vec)(((mask)m & ~seen) | ((mask)nan & seen)); \
        }                                                                                \
    }                                                                                    \
}
FCNN_DEFINE_OC_POOL_ROW(f32, float)
FCNN_DEFINE_OC_POOL_ROW(f64, double)

#endif

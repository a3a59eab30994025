/* The channel-vectorised depthwise kernel (the "depthwise" algorithm).
 *
 * Depthwise planes that are small (late MobileNet layers: 7x7, 14x14) give a
 * per-plane kernel only a few short rows to vectorise. Here vector lanes hold
 * channels instead: a block of up to VL channels is interleaved into a
 * zero-padded buffer buf[row][column][lane], every output position is then
 * one vector per tap (taps in row-major order, summed from zero), and the
 * results are written back to the channels' planes. The padding is real zeros,
 * so NaN and Inf weights meet them as the definition says.
 *
 * Uses the vector types and transposition of transpose.h (64-byte vectors
 * with AVX-512).
 */
#ifndef FASTCNN_CONV_DW_H
#define FASTCNN_CONV_DW_H

#if defined(__SSE2__)
#include <immintrin.h>
#endif

#include "transpose.h"

#define FCNN_DW_VL_F32 (FCNN_VEC_BYTES / 4)
#define FCNN_DW_VL_F64 (FCNN_VEC_BYTES / 8)


/* Output positions computed together by the channels-in-lanes kernel: enough
 * independent sums to cover the FMA latency, few enough that they and the
 * nine 3x3 weights stay in registers (32 vector registers with AVX-512, 16
 * otherwise). */
#define FCNN_DW_POSITIONS (FCNN_VEC_BYTES == 64 ? 8 : 4)

/* out[p][lane] for output rows oh0 .. oh1 - 1 (p = (oh - oh0) * out_w + ow),
 * from a buffer whose row 0 is input row oh0 * sh - ph and column 0 is input
 * column -pw. Positions go FCNN_DW_POSITIONS at a time, across row ends, each
 * a sum of its taps in row-major order from zero; then the channels' biases
 * (has_bias) and the clamp to [lo, hi] (clamp). Written with the kernel size
 * as arguments so that calls with constants (3x3) are unrolled with the
 * weights held in registers. */
#define FCNN_DEFINE_DW_TAPS(SUFFIX, T)                                                    \
static inline __attribute__((always_inline)) void fcnn_dw_taps_##SUFFIX(                 \
    const T *buf, long wp, const T *w, long kh, long kw, long sh, long sw, long dh,      \
    long dw, long rows, long out_w, int has_bias, const T *bias, int clamp, T lo, T hi,  \
    T *out)                                                                              \
{                                                                                        \
    enum { VL = FCNN_VEC_BYTES / sizeof(T), U = FCNN_DW_POSITIONS };                     \
    typedef fcnn_vec_##SUFFIX vec;                                                       \
    const vec bv = has_bias ? *(const vec *)bias : (vec){0};                             \
    const vec lov = (vec){0} + lo, hiv = (vec){0} + hi;                                  \
    const long count = rows * out_w;                                                     \
    long r = 0, ow = 0;                                                                  \
    for (long p = 0; p < count; p += U) {                                                \
        const int n = count - p < U ? (int)(count - p) : U;                              \
        vec acc[U];                                                                      \
        for (int u = 0; u < U; u++)                                                      \
            acc[u] = (vec){0};                                                           \
        if (n == U && ow + U <= out_w) {                                                 \
            /* one row: one pointer, the positions sw * VL apart (pointers per  */       \
            /* position spilled to the stack with 16 registers, AVX2)           */       \
            const T *at = buf + (r * sh * wp + ow * sw) * VL;                            \
            for (long i = 0; i < kh; i++)                                                \
                for (long j = 0; j < kw; j++) {                                          \
                    const vec wv = *(const vec *)(w + (i * kw + j) * VL);                \
                    const T *tap = at + (i * dh * wp + j * dw) * VL;                     \
                    for (int u = 0; u < U; u++)                                          \
                        acc[u] += wv * *(const vec *)(tap + u * sw * VL);                \
                }                                                                        \
            if ((ow += U) == out_w) {                                                    \
                ow = 0;                                                                  \
                r++;                                                                     \
            }                                                                            \
        } else {                                                                         \
            const T *at[U];                                                              \
            for (int u = 0; u < U; u++) {   /* past the last position: the first again */ \
                at[u] = u < n ? buf + (r * sh * wp + ow * sw) * VL : at[0];              \
                if (u < n && ++ow == out_w) {                                            \
                    ow = 0;                                                              \
                    r++;                                                                 \
                }                                                                        \
            }                                                                            \
            for (long i = 0; i < kh; i++)                                                \
                for (long j = 0; j < kw; j++) {                                          \
                    const vec wv = *(const vec *)(w + (i * kw + j) * VL);                \
                    const long off = (i * dh * wp + j * dw) * VL;                        \
                    for (int u = 0; u < U; u++)                                          \
                        acc[u] += wv * *(const vec *)(at[u] + off);                      \
                }                                                                        \
        }                                                                                \
        for (int u = 0; u < n; u++) {                                                    \
            vec v = has_bias ? acc[u] + bv : acc[u];                                     \
            *(vec *)(out + (p + u) * VL) = clamp ? fcnn_clamp_##SUFFIX(v, lov, hiv) : v;    \
        }                                                                                \
    }                                                                                    \
}

/* Output rows oh0 .. oh1 - 1 of `planes` (<= VL) consecutive channels.
 * x: the first channel's input plane; w: packed weights [tap][VL], zero in
 * lanes past `planes`; buf: (rows read) * wp * VL elements, wp = the padded
 * row length; out: (oh1 - oh0) * out_w * VL elements, channels in lanes. */
#define FCNN_DEFINE_DW_KERNEL(SUFFIX, T)                                                  \
FCNN_DEFINE_DW_TAPS(SUFFIX, T)                                                           \
static inline void fcnn_dw_rows_##SUFFIX(                                                \
    const T *x, long planes, long in_h, long in_w, const T *w, long kh, long kw,         \
    long sh, long sw, long ph, long pw, long dh, long dw, long out_w, long oh0, long oh1, \
    long wp, int has_bias, const T *bias, int clamp, T lo, T hi, T *buf, T *out)         \
{                                                                                        \
    enum { VL = FCNN_VEC_BYTES / sizeof(T) };                                      \
    long ih0 = oh0 * sh - ph;                                                            \
    long nrows = (oh1 - 1 - oh0) * sh + (kh - 1) * dh + 1;                               \
    long first = ih0 > 0 ? ih0 : 0, last = ih0 + nrows < in_h ? ih0 + nrows : in_h;      \
    long plane = in_h * in_w, p = first * in_w, end = last * in_w, ih = first, iw = 0;   \
    fcnn_vec_##SUFFIX r[VL];                                                             \
    for (long i = 0; i < nrows * wp; i++)                                                \
        *(fcnn_vec_##SUFFIX *)(buf + i * VL) = (fcnn_vec_##SUFFIX){0};                   \
    /* the rows read, VL pixels at a time: VL channels' runs of pixels,      */          \
    /* transposed into VL pixels' channel vectors, stored at their columns   */          \
    for (; p + VL <= end; p += VL) {                                                     \
        for (int c = 0; c < VL; c++)                                                     \
            r[c] = c < planes ? *(const fcnn_vec_##SUFFIX *)(x + c * plane + p)          \
                              : (fcnn_vec_##SUFFIX){0};                                  \
        fcnn_transpose_##SUFFIX(r);                                                      \
        for (int k = 0; k < VL; k++) {                                                   \
            if (pw + iw < wp)                                                            \
                *(fcnn_vec_##SUFFIX *)(buf + ((ih - ih0) * wp + pw + iw) * VL) = r[k];   \
            if (++iw == in_w) {                                                          \
                iw = 0;                                                                  \
                ih++;                                                                    \
            }                                                                            \
        }                                                                                \
    }                                                                                    \
    for (; p < end; p++) {                                                               \
        if (pw + iw < wp)                                                                \
            for (long c = 0; c < planes; c++)                                            \
                buf[((ih - ih0) * wp + pw + iw) * VL + c] = x[c * plane + p];            \
        if (++iw == in_w) {                                                              \
            iw = 0;                                                                      \
            ih++;                                                                        \
        }                                                                                \
    }                                                                                    \
    if (kh == 3 && kw == 3 && dh == 1 && dw == 1 && sw == 1)                             \
        fcnn_dw_taps_##SUFFIX(buf, wp, w, 3, 3, sh, 1, 1, 1, oh1 - oh0, out_w, has_bias, \
                              bias, clamp, lo, hi, out);                                 \
    else if (kh == 3 && kw == 3 && dh == 1 && dw == 1 && sw == 2)                        \
        fcnn_dw_taps_##SUFFIX(buf, wp, w, 3, 3, sh, 2, 1, 1, oh1 - oh0, out_w, has_bias, \
                              bias, clamp, lo, hi, out);                                 \
    else                                                                                 \
        fcnn_dw_taps_##SUFFIX(buf, wp, w, kh, kw, sh, sw, dh, dw, oh1 - oh0, out_w,      \
                              has_bias, bias, clamp, lo, hi, out);                       \
}

FCNN_DEFINE_DW_KERNEL(f32, float)
FCNN_DEFINE_DW_KERNEL(f64, double)

/* The per-plane 3x3 depthwise kernel (wide planes): one channel's output
 * plane, any stride and padding. Output columns lo .. hi - 1 (whole window
 * inside the input row) are vectorised; the edge columns take only the taps
 * inside the row. Rows above and below the input read `zero`, a zeroed row of
 * in_w elements. Every output sums its nine taps in row-major order, plus b.
 * With stride 1 two output rows are computed together: they share two of the
 * input rows they read, so each input vector is loaded once for both. A
 * function of its own (never inlined): inlined into the parallel region
 * around it, the nine weights and the row pointers were spilled to the stack
 * on every column. */
#define FCNN_DW3X3_SUM(ra, rb, rc, c)                                                    \
    (w0 * ra[c] + w1 * ra[(c) + 1] + w2 * ra[(c) + 2] + w3 * rb[c] + w4 * rb[(c) + 1]    \
     + w5 * rb[(c) + 2] + w6 * rc[c] + w7 * rc[(c) + 1] + w8 * rc[(c) + 2] + b)

#define FCNN_DEFINE_DW3X3_PLANE(SUFFIX, T)                                                \
static inline T fcnn_dw3x3_edge_##SUFFIX(const T *r0, const T *r1, const T *r2,          \
                                         const T *w, long c, long in_w, T b)             \
{                                                                                        \
    const T *rows[3] = {r0, r1, r2};                                                     \
    T acc = 0;                                                                           \
    for (int kh = 0; kh < 3; kh++)                                                       \
        for (int kw = 0; kw < 3; kw++)                                                   \
            if (c + kw >= 0 && c + kw < in_w)                                            \
                acc += w[kh * 3 + kw] * rows[kh][c + kw];                                \
    return acc + b;                                                                      \
}                                                                                        \
                                                                                         \
static __attribute__((noinline)) void fcnn_dw3x3_plane_##SUFFIX(                         \
    T *restrict y, const T *x, const T *zero, long in_h, long in_w, long out_h,          \
    long out_w, long sh, long sw, long ph, long pw, long lo, long hi, const T *w, T b)   \
{                                                                                        \
    const T w0 = w[0], w1 = w[1], w2 = w[2], w3 = w[3], w4 = w[4];                       \
    const T w5 = w[5], w6 = w[6], w7 = w[7], w8 = w[8];                                  \
    for (long oh = 0; oh < out_h; oh++) {                                                \
        long ih = oh * sh - ph;                                                          \
        const T *r0 = ih >= 0 && ih < in_h ? x + ih * in_w : zero;                       \
        const T *r1 = ih + 1 >= 0 && ih + 1 < in_h ? x + (ih + 1) * in_w : zero;         \
        const T *r2 = ih + 2 >= 0 && ih + 2 < in_h ? x + (ih + 2) * in_w : zero;         \
        T *y0 = y + oh * out_w;                                                          \
        if (sw == 1 && sh == 1 && oh + 1 < out_h) {                                      \
            const T *r3 = ih + 3 >= 0 && ih + 3 < in_h ? x + (ih + 3) * in_w : zero;     \
            T *y1 = y0 + out_w;                                                          \
            for (long j = lo; j < hi; j++) {                                             \
                y0[j] = FCNN_DW3X3_SUM(r0, r1, r2, j - pw);                              \
                y1[j] = FCNN_DW3X3_SUM(r1, r2, r3, j - pw);                              \
            }                                                                            \
            for (long j = 0; j < lo; j++)                                                \
                y1[j] = fcnn_dw3x3_edge_##SUFFIX(r1, r2, r3, w, j - pw, in_w, b);        \
            for (long j = hi; j < out_w; j++)                                            \
                y1[j] = fcnn_dw3x3_edge_##SUFFIX(r1, r2, r3, w, j - pw, in_w, b);        \
            oh++;                                                                        \
        } else if (sw == 1) {                                                            \
            for (long j = lo; j < hi; j++)                                               \
                y0[j] = FCNN_DW3X3_SUM(r0, r1, r2, j - pw);                              \
        } else if (sw == 2) {                                                            \
            for (long j = lo; j < hi; j++)                                               \
                y0[j] = FCNN_DW3X3_SUM(r0, r1, r2, 2 * j - pw);                          \
        } else {                                                                         \
            for (long j = lo; j < hi; j++)                                               \
                y0[j] = FCNN_DW3X3_SUM(r0, r1, r2, j * sw - pw);                         \
        }                                                                                \
        for (long j = 0; j < lo; j++)                                                    \
            y0[j] = fcnn_dw3x3_edge_##SUFFIX(r0, r1, r2, w, j * sw - pw, in_w, b);       \
        for (long j = hi; j < out_w; j++)                                                \
            y0[j] = fcnn_dw3x3_edge_##SUFFIX(r0, r1, r2, w, j * sw - pw, in_w, b);       \
    }                                                                                    \
}

FCNN_DEFINE_DW3X3_PLANE(f32, float)
FCNN_DEFINE_DW3X3_PLANE(f64, double)

/* The 3x3 depthwise kernels for wide planes at stride 1 or 2 (both ways):
 * one channel's output plane, any padding. Each input row read is copied once
 * into a zero-padded row (a ring of eight, filled one step ahead of the step
 * that reads it, so rows shared by consecutive outputs are prepared once), so
 * every output column, edges included, is a whole vector of the same nine
 * taps over real zeros (NaN and Inf weights meet the padding as the
 * definition says). At stride 1 two output rows are computed together: they
 * share two of the four input rows they read; at stride 2 a tap is the even
 * or odd columns of two vectors, by a shuffle. Every output sums its nine
 * taps in row-major order, then b; with clamp set, each output vector is
 * clamped to [lo, hi] as it is stored (the ReLU and ReLU6 epilogues: the
 * bound where v < lo or v > hi, else v, so NaN passes), which saves a pass
 * over the plane. Narrower outputs (fcnn_dw3x3_plane, the padded plane)
 * leave the per-row work here too few vectors.
 *
 * ws: fcnn_dw3x3_workspace(out_w, VL, stride) elements, zeroed before the
 * first plane and otherwise written only where input columns go, so the
 * padding stays zero. */
static inline long fcnn_dw3x3_slot(long out_w, long vl, long stride)
{
    return stride * ((out_w + vl - 1) / vl + 1) * vl;
}

/* The first n lanes of v stored at p, by a masked store where the target has
 * one (AVX-512; 1: done); otherwise 0, and the caller goes through memory.
 * A row's last, partial vector is most of the work left over where the row
 * is not a multiple of the vector (56 outputs: 3 x 16 + 8). */
#if defined(__AVX512F__)
#define FCNN_DW_STORE_PART_f32(p, n, v) (fcnn_store_part_f32((p), (n), (v)), 1)
#define FCNN_DW_STORE_PART_f64(p, n, v)                                                   \
    (_mm512_mask_storeu_pd((p), (__mmask8)((1u << (n)) - 1), (__m512d)(v)), 1)
#else
#define FCNN_DW_STORE_PART_f32(p, n, v) 0
#define FCNN_DW_STORE_PART_f64(p, n, v) 0
#endif

/* lane l of the even (b = 0) or odd (b = 1) columns of two vectors */
#define FCNN_DW_LANE(l, b, VL) (2 * (l) + (b))

/* the zero row, the ring of eight rows and one vector for a row's last
 * outputs, from the first vector-aligned element (so one more vector) */
static inline long fcnn_dw3x3_workspace(long out_w, long vl, long stride)
{
    return 9 * fcnn_dw3x3_slot(out_w, vl, stride) + 2 * vl;
}


/* What both padded-rows kernels hold: the nine weights and the bias as
 * vectors, the row slots (slot elements each after the zero row), the padded
 * columns read, a vector for partial stores and the ring's row numbers. */
#define FCNN_DW3X3_SETUP(SUFFIX, T, STRIDE)                                               \
    enum { VL = FCNN_VEC_BYTES / sizeof(T) };                                            \
    typedef fcnn_vec_##SUFFIX vec;                                                       \
    ws = (T *)(((uintptr_t)ws + FCNN_VEC_BYTES - 1) & ~(uintptr_t)(FCNN_VEC_BYTES - 1)); \
    const long slot = fcnn_dw3x3_slot(out_w, VL, STRIDE);                                \
    const long used = (out_w - 1) * (STRIDE) + 3;                                        \
    const vec w0 = (vec){0} + w[0], w1 = (vec){0} + w[1], w2 = (vec){0} + w[2];          \
    const vec w3 = (vec){0} + w[3], w4 = (vec){0} + w[4], w5 = (vec){0} + w[5];          \
    const vec w6 = (vec){0} + w[6], w7 = (vec){0} + w[7], w8 = (vec){0} + w[8];          \
    const vec bv = (vec){0} + b, lov = (vec){0} + lo, hiv = (vec){0} + hi;              \
    T *tail = ws + 9 * slot;                                                             \
    long ring[8] = {-1, -1, -1, -1, -1, -1, -1, -1};

#define FCNN_DW3X3_TAPS(V, a, b, c)                                                      \
    (w0 * V(a, 0) + w1 * V(a, 1) + w2 * V(a, 2) + w3 * V(b, 0) + w4 * V(b, 1)             \
     + w5 * V(b, 2) + w6 * V(c, 0) + w7 * V(c, 1) + w8 * V(c, 2) + bv)

#define FCNN_DEFINE_DW3X3_ROWS(SUFFIX, T)                                                \
/* dst[i] = src[i] for i < n, whole vectors then one at a time (a call to */           \
/* memcpy would spill the nine weight vectors around it)                   */            \
static inline void fcnn_dw3x3_copy_##SUFFIX(const T *src, long n, T *dst)                 \
{                                                                                        \
    enum { VL = FCNN_VEC_BYTES / sizeof(T) };                                            \
    long i = 0;                                                                          \
    for (; i + VL <= n; i += VL)                                                         \
        *(fcnn_vec_##SUFFIX *)(dst + i) = *(const fcnn_vec_##SUFFIX *)(src + i);         \
    for (; i < n; i++)                                                                   \
        dst[i] = src[i];                                                                 \
}                                                                                        \
                                                                                         \
/* The padded row of input row r: the shared zero row outside the input. */              \
static inline const T *fcnn_dw3x3_row_##SUFFIX(                                          \
    const T *x, long in_h, long in_w, long r, long pw, long used, long slot, T *ws,      \
    long *ring)                                                                          \
{                                                                                        \
    if (r < 0 || r >= in_h)                                                              \
        return ws;                                                                       \
    T *row = ws + (1 + (r & 7)) * slot;                                                  \
    if (ring[r & 7] != r) {                                                              \
        const T *src = x + r * in_w;                                                     \
        long end = pw + in_w < used ? pw + in_w : used;                                  \
        fcnn_dw3x3_copy_##SUFFIX(src, end - pw, row + pw);                               \
        ring[r & 7] = r;                                                                 \
    }                                                                                    \
    return row;                                                                          \
}                                                                                        \
                                                                                         \
/* r[i] = padded row first + i (i < n), then the next step's n_next rows from */        \
/* next prepared ahead: loads right after the copy's stores would wait on     */        \
/* store forwarding                                                            */        \
static inline void fcnn_dw3x3_rows_at_##SUFFIX(                                          \
    const T *x, long in_h, long in_w, long first, int n, long next, int n_next, long pw, \
    long used, long slot, T *ws, long *ring, const T **r)                                \
{                                                                                        \
    for (int i = 0; i < n; i++)                                                          \
        r[i] = fcnn_dw3x3_row_##SUFFIX(x, in_h, in_w, first + i, pw, used, slot, ws, ring); \
    for (int i = 0; i < n_next; i++)                                                     \
        fcnn_dw3x3_row_##SUFFIX(x, in_h, in_w, next + i, pw, used, slot, ws, ring);      \
}                                                                                        \
                                                                                         \
static inline void fcnn_dw3x3_store_##SUFFIX(T *y, long j, long out_w,                   \
                                             fcnn_vec_##SUFFIX v, T *tail, int clamp,    \
                                             fcnn_vec_##SUFFIX lo, fcnn_vec_##SUFFIX hi) \
{                                                                                        \
    enum { VL = FCNN_VEC_BYTES / sizeof(T) };                                            \
    if (clamp)                                                                           \
        v = fcnn_clamp_##SUFFIX(v, lo, hi);                                              \
    if (j + VL <= out_w) {                                                               \
        *(fcnn_vec_##SUFFIX *)(y + j) = v;                                               \
    } else if (!FCNN_DW_STORE_PART_##SUFFIX(y + j, out_w - j, v)) {                      \
        *(fcnn_vec_##SUFFIX *)tail = v;                                                  \
        for (long k = 0; k < out_w - j; k++)                                             \
            y[j + k] = tail[k];                                                          \
    }                                                                                    \
}                                                                                        \
                                                                                         \
static __attribute__((noinline)) void fcnn_dw3x3_rows_##SUFFIX(                          \
    T *restrict y, const T *x, long in_h, long in_w, long out_h, long out_w, long ph,    \
    long pw, const T *w, T b, int clamp, T lo, T hi, T *ws)                              \
{                                                                                        \
    FCNN_DW3X3_SETUP(SUFFIX, T, 1)                                                       \
    const fcnn_tr_mask_##SUFFIX by1 = FCNN_TR_LIST_##SUFFIX(FCNN_DW_SHIFT, 1);           \
    const fcnn_tr_mask_##SUFFIX by2 = FCNN_TR_LIST_##SUFFIX(FCNN_DW_SHIFT, 2);           \
    for (long oh = 0; oh < out_h; oh += 2) {                                             \
        const T *r[4];                                                                   \
        fcnn_dw3x3_rows_at_##SUFFIX(x, in_h, in_w, oh - ph, 4, oh + 2 - ph,              \
                                    oh + 2 < out_h ? 4 : 0, pw, used, slot, ws, ring, r); \
        T *y0 = y + oh * out_w;                                                          \
        for (long j = 0; j < out_w; j += VL) {                                           \
            vec t[4][3];                                                                 \
            for (int i = 0; i < 4; i++) {                                                \
                const vec cur = *(const vec *)(r[i] + j), next = *(const vec *)(r[i] + j + VL); \
                t[i][0] = cur;                                                           \
                t[i][1] = FCNN_DW_SHUFFLE_TAPS ? __builtin_shuffle(cur, next, by1)       \
                                               : *(const vec *)(r[i] + j + 1);           \
                t[i][2] = FCNN_DW_SHUFFLE_TAPS ? __builtin_shuffle(cur, next, by2)       \
                                               : *(const vec *)(r[i] + j + 2);           \
            }                                                                            \
            fcnn_dw3x3_store_##SUFFIX(y0, j, out_w,                                      \
                FCNN_DW3X3_TAPS(FCNN_DW3X3_TAP, t[0], t[1], t[2]), tail, clamp, lov, hiv); \
            if (oh + 1 < out_h)                                                          \
                fcnn_dw3x3_store_##SUFFIX(y0 + out_w, j, out_w,                          \
                    FCNN_DW3X3_TAPS(FCNN_DW3X3_TAP, t[1], t[2], t[3]), tail, clamp, lov, hiv); \
        }                                                                                \
    }                                                                                    \
}                                                                                        \
                                                                                         \
/* Stride 2 both ways: output row oh reads rows 2 oh - ph .. + 2, one of them */         \
/* shared with the next; a tap of VL outputs is the even or odd columns of   */          \
/* two vectors, taken by a shuffle.                                          */          \
static __attribute__((noinline)) void fcnn_dw3x3_rows_s2_##SUFFIX(                       \
    T *restrict y, const T *x, long in_h, long in_w, long out_h, long out_w, long ph,    \
    long pw, const T *w, T b, int clamp, T lo, T hi, T *ws)                              \
{                                                                                        \
    FCNN_DW3X3_SETUP(SUFFIX, T, 2)                                                       \
    const fcnn_tr_mask_##SUFFIX even = FCNN_TR_LIST_##SUFFIX(FCNN_DW_LANE, 0);           \
    const fcnn_tr_mask_##SUFFIX odd = FCNN_TR_LIST_##SUFFIX(FCNN_DW_LANE, 1);            \
    const fcnn_tr_mask_##SUFFIX by1 = FCNN_TR_LIST_##SUFFIX(FCNN_DW_SHIFT, 1);           \
    for (long oh = 0; oh < out_h; oh++) {                                                \
        const T *r[3];                                                                   \
        fcnn_dw3x3_rows_at_##SUFFIX(x, in_h, in_w, 2 * oh - ph, 3, 2 * oh + 2 - ph,      \
                                    oh + 1 < out_h ? 3 : 0, pw, used, slot, ws, ring, r); \
        vec evens[3];                       /* each row's even columns from 2 j */       \
        for (int i = 0; i < 3; i++)                                                      \
            evens[i] = __builtin_shuffle(((const vec *)r[i])[0], ((const vec *)r[i])[1], even); \
        for (long j = 0; j < out_w; j += VL) {                                           \
            vec t[3][3];                                                                 \
            for (int i = 0; i < 3; i++) {                                                \
                const vec *v = (const vec *)(r[i] + 2 * j);                              \
                t[i][1] = __builtin_shuffle(v[0], v[1], odd);                            \
                if (FCNN_DW_SHUFFLE_TAPS) {                                              \
                    const vec next = __builtin_shuffle(v[2], v[3], even);                \
                    t[i][0] = evens[i];                                                  \
                    t[i][2] = __builtin_shuffle(evens[i], next, by1);                    \
                    evens[i] = next;                                                     \
                } else {                                                                 \
                    t[i][0] = __builtin_shuffle(v[0], v[1], even);                       \
                    t[i][2] = __builtin_shuffle(*(const vec *)(r[i] + 2 * j + 2),        \
                                                *(const vec *)(r[i] + 2 * j + 2 + VL), even); \
                }                                                                        \
            }                                                                            \
            fcnn_dw3x3_store_##SUFFIX(y + oh * out_w, j, out_w,                          \
                FCNN_DW3X3_TAPS(FCNN_DW3X3_TAP, t[0], t[1], t[2]), tail, clamp, lov, hiv); \
        }                                                                                \
    }                                                                                    \
}

/* tap k (0, 1, 2) of VL outputs: t[k] of their row. At stride 2 the even
 * (k = 0) or odd (k = 1) columns of the two vectors from the window's start.
 * With AVX-512 (FCNN_DW_SHUFFLE_TAPS) every tap comes from whole aligned
 * vectors by shuffles, since a 64-byte load at any other offset straddles
 * two cache lines: at stride 1 the row's vector shifted by k columns, at
 * stride 2 for k = 2 the even columns shifted by one, the next vector's
 * first even columns (carried to the next step as its k = 0) coming in.
 * With 32- or 16-byte vectors the shifted taps are loads, and at stride 2
 * k = 2 is the even columns of the two vectors one column on: the AVX-512
 * forms measured 4-15 % slower on AVX2. */
#define FCNN_DW_SHUFFLE_TAPS (FCNN_VEC_BYTES == 64)
#define FCNN_DW_SHIFT(l, k, VL) ((l) + (k))
#define FCNN_DW3X3_TAP(t, k) ((t)[k])

FCNN_DEFINE_DW3X3_ROWS(f32, float)
FCNN_DEFINE_DW3X3_ROWS(f64, double)

#endif

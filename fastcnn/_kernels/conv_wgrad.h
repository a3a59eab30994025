/* The weight gradient of a convolution with few output channels, direct.
 *
 * gw[co][c][kd][kh][kw] = sum over images and output positions of
 * gy[n][co][od][oh][ow] * x[n][c][od*sd + kd*dd - pd][oh*sh + kh*dh - ph][ow*sw + kw*dw - pw].
 * With few output channels an im2col GEMM is all packing (its M is tiny).
 * Here the caller lays the operands out so that every tap reads one
 * contiguous run per output plane:
 *   xp: each input plane zero-padded and split into "phase" rows: phase p
 *       of a padded row holds its elements p, p + sw, p + 2 sw, ... (plen
 *       of them), so a tap's elements along an output row are contiguous at
 *       any stride; rows from -ph on, sh spare rows at the end and enough
 *       more that a vector read past the last output position stays inside
 *       the plane;
 *   gp: each output plane with rows of R = sh * sw * plen elements (zeros
 *       past the output width), the distance between the input rows two
 *       consecutive output rows read, and zeros after its last row up to a
 *       whole number of FCNN_WGRAD_PLANE_ALIGN elements (so whole vectors
 *       cover it: no scalar tail).
 * Then output position q = oh * R + ow of tap (kh, kw) reads xp at a fixed
 * offset plus q, and a task (input channel, 2 or 4 output channels
 * (fcnn_wgrad_tile), a run of kernel rows (kd, kh)) runs vectors over q,
 * row by row of the run, with one accumulator per (output channel, kw) in
 * registers (a loop compiled per channel count and
 * kernel width, so they stay there), summing the lanes in a fixed order at
 * the end. The padded positions multiply zeros (the caller keeps non-finite inputs away). Each
 * gw element is computed by one task in one order: results do not depend
 * on the thread count.
 *
 * Uses the vector types of transpose.h (the target's width).
 */
#ifndef FASTCNN_CONV_WGRAD_H
#define FASTCNN_CONV_WGRAD_H

#include "transpose.h"

#define FCNN_WGRAD_KW_MAX 8     /* kernel widths up to this take the direct path */
#define FCNN_WGRAD_COUT_MAX 16  /* output channels up to this take the direct path */
#define FCNN_WGRAD_PLANE_ALIGN 16  /* elements: a multiple of every target's vector */

#define FCNN_WGRAD_CO_MAX 4      /* output channels a task, at most */
#define FCNN_WGRAD_ROWS_MAX 8    /* kernel rows (kd, kh) a task, at most */

/* Output channels a task for kernel width kw: four where 32 vector registers
 * hold their 4 x kw accumulators, the gradient rows and an input vector
 * (AVX-512, kw <= 6), else two. Each gw element sums the same products in
 * the same order either way. */
static inline long fcnn_wgrad_tile(long kw)
{
    return FCNN_VEC_BYTES == 64 && kw <= 6 ? 4 : 2;
}

/* One load per input vector: GCC otherwise folds the (unaligned, often
 * line-splitting) load into each of the NCO multiply-adds that use it, which
 * measured 1.45x slower with 2 channels on AVX2 (and several times slower
 * with 4 on AVX-512). The empty asm makes the value a register operand. */
#if defined(__GNUC__)
#define FCNN_WGRAD_IN_REGISTER(v) __asm__("" : "+v"(v))
#else
#define FCNN_WGRAD_IN_REGISTER(v) ((void)0)
#endif

/* acc[t][k] += sum over q < len (whole vectors) of g[t][q] * x0[offset[k] + q],
 * t < NCO, for NCO output channels and a kernel width KWC known at compile time. */
#define FCNN_DEFINE_WGRAD_ROWS(SUFFIX, T, NCO, KWC)                                       \
static inline void fcnn_wgrad_rows_##SUFFIX##_##NCO##_##KWC(                              \
    const T *x0, const T *const *g, const long *offset, long len,                          \
    fcnn_vec_##SUFFIX acc[FCNN_WGRAD_CO_MAX][FCNN_WGRAD_KW_MAX])                           \
{                                                                                          \
    enum { VL = FCNN_VEC_BYTES / sizeof(T) };                                              \
    typedef fcnn_vec_##SUFFIX vec;                                                         \
    vec s[NCO][KWC];                                                                       \
    const T *xk[KWC];                                                                      \
    _Pragma("GCC unroll 8")                                                                \
    for (int k = 0; k < KWC; k++) {                                                        \
        _Pragma("GCC unroll 4")                                                            \
        for (int t = 0; t < NCO; t++)                                                      \
            s[t][k] = acc[t][k];                                                           \
        xk[k] = x0 + offset[k];                                                            \
    }                                                                                      \
    for (long q = 0; q < len; q += VL) {                                                   \
        vec gv[NCO];                                                                       \
        _Pragma("GCC unroll 4")                                                            \
        for (int t = 0; t < NCO; t++)                                                      \
            gv[t] = *(const vec *)(g[t] + q);                                              \
        _Pragma("GCC unroll 8")                                                            \
        for (int k = 0; k < KWC; k++) {                                                    \
            vec xv = *(const vec *)(xk[k] + q);                                            \
            FCNN_WGRAD_IN_REGISTER(xv);                                                    \
            _Pragma("GCC unroll 4")                                                        \
            for (int t = 0; t < NCO; t++)                                                  \
                s[t][k] += gv[t] * xv;                                                     \
        }                                                                                  \
    }                                                                                      \
    _Pragma("GCC unroll 8")                                                                \
    for (int k = 0; k < KWC; k++) {                                                        \
        _Pragma("GCC unroll 4")                                                            \
        for (int t = 0; t < NCO; t++)                                                      \
            acc[t][k] = s[t][k];                                                           \
    }                                                                                      \
}

#define FCNN_DEFINE_WGRAD_ROWS_ALL(SUFFIX, T)                                             \
    FCNN_DEFINE_WGRAD_ROWS(SUFFIX, T, 2, 1) FCNN_DEFINE_WGRAD_ROWS(SUFFIX, T, 2, 2)       \
    FCNN_DEFINE_WGRAD_ROWS(SUFFIX, T, 2, 3) FCNN_DEFINE_WGRAD_ROWS(SUFFIX, T, 2, 4)       \
    FCNN_DEFINE_WGRAD_ROWS(SUFFIX, T, 2, 5) FCNN_DEFINE_WGRAD_ROWS(SUFFIX, T, 2, 6)       \
    FCNN_DEFINE_WGRAD_ROWS(SUFFIX, T, 2, 7) FCNN_DEFINE_WGRAD_ROWS(SUFFIX, T, 2, 8)       \
    FCNN_DEFINE_WGRAD_ROWS(SUFFIX, T, 4, 1) FCNN_DEFINE_WGRAD_ROWS(SUFFIX, T, 4, 2)       \
    FCNN_DEFINE_WGRAD_ROWS(SUFFIX, T, 4, 3) FCNN_DEFINE_WGRAD_ROWS(SUFFIX, T, 4, 4)       \
    FCNN_DEFINE_WGRAD_ROWS(SUFFIX, T, 4, 5) FCNN_DEFINE_WGRAD_ROWS(SUFFIX, T, 4, 6)

FCNN_DEFINE_WGRAD_ROWS_ALL(f32, float)
FCNN_DEFINE_WGRAD_ROWS_ALL(f64, double)

/* Rows r0 .. r0 + nrows - 1 (r = kd * kernel_h + kh, nrows at most
 * FCNN_WGRAD_ROWS_MAX) of input channel c and output channels co0 ... of gw:
 * image by image, every row's taps read the image's planes while they sit
 * in L1 (one pass over gp and xp for all rows). plane_len: elements of one
 * padded input plane in xp; out_len: of one padded output plane in gp (od
 * planes of oh rows of R). */
#define FCNN_DEFINE_WGRAD(SUFFIX, T)                                                      \
static void fcnn_wgrad_##SUFFIX(const T *xp, const T *gp, T *gw, long images, long channels, \
                                long cout, long c, long co0, long r0, long nrows,          \
                                const long *in, const long *out, const long *kernel,       \
                                const long *stride, const long *pad, const long *dil,      \
                                long plen, long plane_len, long out_len)                  \
{                                                                                          \
    enum { VL = FCNN_VEC_BYTES / sizeof(T) };                                              \
    typedef fcnn_vec_##SUFFIX vec;                                                         \
    const long KW = kernel[2], sw = stride[2], dw = dil[2];                                \
    const long R = stride[1] * sw * plen, rows_len = plane_len / in[0];                 \
    /* whole vectors over the plane's positions: gp's zeros pad it (see above) */         \
    const long len = (out[1] * R + VL - 1) / VL * VL;                                      \
    const long tile = fcnn_wgrad_tile(KW);                                                 \
    const long nco = cout - co0 < tile ? cout - co0 : tile;                                \
    long offset[FCNN_WGRAD_ROWS_MAX][FCNN_WGRAD_KW_MAX], kds[FCNN_WGRAD_ROWS_MAX];         \
    vec acc[FCNN_WGRAD_ROWS_MAX][FCNN_WGRAD_CO_MAX][FCNN_WGRAD_KW_MAX];                   \
    for (long r = 0; r < nrows; r++) {                                                     \
        const long kh = (r0 + r) % kernel[1];                                              \
        kds[r] = (r0 + r) / kernel[1];                                                     \
        for (long k = 0; k < KW; k++)                                                      \
            offset[r][k] = (k * dw % sw) * plen + k * dw / sw + kh * dil[1] * sw * plen;   \
        for (long t = 0; t < tile; t++)                                                    \
            for (long k = 0; k < KW; k++)                                                  \
                acc[r][t][k] = (vec){0};                                                   \
    }                                                                                      \
    for (long n = 0; n < images; n++)                                                      \
    for (long od = 0; od < out[0]; od++) {                                                 \
        const T *g[FCNN_WGRAD_CO_MAX];                                                     \
        /* a channel past cout reads the first one's rows again (never stored) */          \
        for (long t = 0; t < tile; t++)                                                    \
            g[t] = gp + ((n * cout + co0 + (t < nco ? t : 0)) * out[0] + od)               \
                        * (out_len / out[0]);                                              \
        for (long r = 0; r < nrows; r++) {                                                 \
            long id = od * stride[0] + kds[r] * dil[0] - pad[0];                           \
            if (id < 0 || id >= in[0])                                                     \
                continue;                                                                  \
            const T *x0 = xp + (n * channels + c) * plane_len + id * rows_len;             \
            if (nco > 2) {                                                                 \
                switch (KW) {                                                              \
                case 1: fcnn_wgrad_rows_##SUFFIX##_4_1(x0, g, offset[r], len, acc[r]); break; \
                case 2: fcnn_wgrad_rows_##SUFFIX##_4_2(x0, g, offset[r], len, acc[r]); break; \
                case 3: fcnn_wgrad_rows_##SUFFIX##_4_3(x0, g, offset[r], len, acc[r]); break; \
                case 4: fcnn_wgrad_rows_##SUFFIX##_4_4(x0, g, offset[r], len, acc[r]); break; \
                case 5: fcnn_wgrad_rows_##SUFFIX##_4_5(x0, g, offset[r], len, acc[r]); break; \
                default: fcnn_wgrad_rows_##SUFFIX##_4_6(x0, g, offset[r], len, acc[r]); break; \
                }                                                                          \
                continue;                                                                  \
            }                                                                              \
            switch (KW) {                                                                  \
            case 1: fcnn_wgrad_rows_##SUFFIX##_2_1(x0, g, offset[r], len, acc[r]); break;  \
            case 2: fcnn_wgrad_rows_##SUFFIX##_2_2(x0, g, offset[r], len, acc[r]); break;  \
            case 3: fcnn_wgrad_rows_##SUFFIX##_2_3(x0, g, offset[r], len, acc[r]); break;  \
            case 4: fcnn_wgrad_rows_##SUFFIX##_2_4(x0, g, offset[r], len, acc[r]); break;  \
            case 5: fcnn_wgrad_rows_##SUFFIX##_2_5(x0, g, offset[r], len, acc[r]); break;  \
            case 6: fcnn_wgrad_rows_##SUFFIX##_2_6(x0, g, offset[r], len, acc[r]); break;  \
            case 7: fcnn_wgrad_rows_##SUFFIX##_2_7(x0, g, offset[r], len, acc[r]); break;  \
            default: fcnn_wgrad_rows_##SUFFIX##_2_8(x0, g, offset[r], len, acc[r]); break; \
            }                                                                              \
        }                                                                                  \
    }                                                                                      \
    for (long r = 0; r < nrows; r++)                                                       \
        for (long t = 0; t < nco; t++)                                                     \
            for (long k = 0; k < KW; k++) {                                                \
                T s = 0;                                                                   \
                for (long l = 0; l < VL; l++)                                              \
                    s += acc[r][t][k][l];                                                  \
                gw[(((co0 + t) * channels + c) * kernel[0] * kernel[1] + r0 + r) * KW + k] \
                    = s;                                                                   \
            }                                                                              \
}

FCNN_DEFINE_WGRAD(f32, float)
FCNN_DEFINE_WGRAD(f64, double)

#endif

/* Max pooling (with or without indices), float32, over the interior outputs of one output
 * row: those whose every horizontal tap lies inside the input row (the
 * caller handles the border outputs tap by tap).
 *
 * Output ow's window reads, for each window row r (n_d depth taps times n_h
 * row taps, in order), x[base(r) + ow * stride - pad + kw * dilation] for kw
 * in [0, k_w), with base(r) = base0 + (r / n_h) * depth_step + (r % n_h) *
 * row_step. The result is PyTorch's: -inf at the first tap to start with,
 * then the first maximum in window order, a NaN wins and the last NaN
 * sticks; ir (if not NULL) gets the flat input index.
 *
 * With AVX-512 and a stride of 1 or 2, 16 outputs at a time (the last
 * vector masked) keep their running maximum and index in registers over the
 * whole window; returns ow1. Otherwise it does nothing and returns ow0: the
 * outputs are the caller's.
 */
#ifndef FASTCNN_POOL_IDX_H
#define FASTCNN_POOL_IDX_H

#include <stdint.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#include "vecmath.h"
#define FCNN_POOL_IDX_VECTOR 1      /* the kernel below does the work */
#else
#define FCNN_POOL_IDX_VECTOR 0      /* it does nothing: the caller's path is the one */
#endif

#if defined(__AVX512F__)
/* The running maximum and flat indices of 16 outputs (8 + 8 indices). */
typedef struct {
    __m512 best;
    __m512i i_lo, i_hi;
    __mmask16 lo, hi;           /* the input lanes the loads may touch */
} fcnn_max_idx_acc;

static inline __attribute__((always_inline)) void
fcnn_max_idx_start(fcnn_max_idx_acc *a, long ow, long ow1, long stride, long first,
                   __m512i lanes_lo, __m512i lanes_hi)
{
    long n = 2 * (ow1 - ow) - 1;            /* stride 2: the elements the lanes read */
    a->lo = stride == 1 ? (ow < ow1 ? fcnn_tail_mask(ow1, ow) : 0)
                        : (n > 0 ? fcnn_tail_mask(n, 0) : 0);
    a->hi = n > 16 ? fcnn_tail_mask(n, 16) : 0;
    a->best = _mm512_set1_ps(-__builtin_inff());
    a->i_lo = _mm512_add_epi64(_mm512_set1_epi64(first), lanes_lo);
    a->i_hi = _mm512_add_epi64(_mm512_set1_epi64(first), lanes_hi);
}

/* One tap of the window at flat input index `at` for the 16 outputs. */
static inline __attribute__((always_inline)) void
fcnn_max_idx_tap(fcnn_max_idx_acc *a, const float *x, long at, long stride, int indices,
                 __m512i even, __m512i lanes_lo, __m512i lanes_hi)
{
    __m512 v = _mm512_maskz_loadu_ps(a->lo, x + at);
    if (stride == 2)
        v = _mm512_permutex2var_ps(v, even, _mm512_maskz_loadu_ps(a->hi, x + at + 16));
    __mmask16 win = _mm512_cmp_ps_mask(v, a->best, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    a->best = _mm512_mask_blend_ps(win, a->best, v);
    if (!indices)
        return;
    __m512i at_v = _mm512_set1_epi64(at);
    a->i_lo = _mm512_mask_blend_epi64((__mmask8)win, a->i_lo, _mm512_add_epi64(at_v, lanes_lo));
    a->i_hi = _mm512_mask_blend_epi64((__mmask8)(win >> 8), a->i_hi, _mm512_add_epi64(at_v, lanes_hi));
}

static inline __attribute__((always_inline)) void
fcnn_max_idx_store(const fcnn_max_idx_acc *a, float *yr, int64_t *ir, long ow, long ow1)
{
    if (ow >= ow1)
        return;
    __mmask16 t = fcnn_tail_mask(ow1, ow);
    _mm512_mask_storeu_ps(yr + ow, t, a->best);
    if (ir) {
        _mm512_mask_storeu_epi64(ir + ow, (__mmask8)t, a->i_lo);
        _mm512_mask_storeu_epi64(ir + ow + 8, (__mmask8)(t >> 8), a->i_hi);
    }
}

/* The interior loop, written once; the entry below compiles copies with the
 * common stride, window width and indices flag as constants, so the taps
 * unroll and nothing is re-tested per tap. */
static inline __attribute__((always_inline)) long
fcnn_max_idx_interior_body(const float *x, float *yr, int64_t *ir, long ow0, long ow1,
                           long stride, long pad, long k_w, long dilation, long base0, long n_d,
                           long depth_step, long n_h, long row_step, int indices)
{
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26,
                                           28, 30);
    /* lane * stride for the two halves of 8 indices */
    const __m512i lanes_lo = _mm512_slli_epi64(_mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7),
                                               stride - 1);
    const __m512i lanes_hi = _mm512_add_epi64(lanes_lo, _mm512_set1_epi64(8 * stride));
    /* 32 outputs a step, as two independent sets of 16: each tap's compare and
     * blends wait on the previous tap's, so two chains keep the core busy; the
     * last vectors masked (lanes past ow1 neither read nor written) */
    for (long ow = ow0; ow < ow1; ow += 32) {
        long first = base0 + ow * stride - pad;
        fcnn_max_idx_acc a, b;
        fcnn_max_idx_start(&a, ow, ow1, stride, first, lanes_lo, lanes_hi);
        fcnn_max_idx_start(&b, ow + 16, ow1, stride, first + 16 * stride, lanes_lo, lanes_hi);
        for (long d = 0; d < n_d; d++)
            for (long h = 0; h < n_h; h++)
                for (long kw = 0; kw < k_w; kw++) {
                    long at = first + d * depth_step + h * row_step + kw * dilation;
                    fcnn_max_idx_tap(&a, x, at, stride, indices, even, lanes_lo, lanes_hi);
                    fcnn_max_idx_tap(&b, x, at + 16 * stride, stride, indices, even, lanes_lo,
                                     lanes_hi);
                }
        fcnn_max_idx_store(&a, yr, indices ? ir : 0, ow, ow1);
        fcnn_max_idx_store(&b, yr, indices ? ir : 0, ow + 16, ow1);
    }
    return ow1;
}
#endif

static inline long fcnn_max_idx_interior_f32(const float *x, float *yr, int64_t *ir, long ow0,
                                             long ow1, long stride, long pad, long k_w,
                                             long dilation, long base0, long n_d,
                                             long depth_step, long n_h, long row_step)
{
#if defined(__AVX512F__)
#define FCNN_MAX_IDX_CASE(S, K, I)                                                         \
    if (stride == (S) && k_w == (K) && (ir != 0) == (I))                                  \
        return fcnn_max_idx_interior_body(x, yr, ir, ow0, ow1, S, pad, K, dilation, base0, \
                                          n_d, depth_step, n_h, row_step, I);
    FCNN_MAX_IDX_CASE(2, 3, 1) FCNN_MAX_IDX_CASE(2, 3, 0)
    FCNN_MAX_IDX_CASE(2, 2, 1) FCNN_MAX_IDX_CASE(2, 2, 0)
    FCNN_MAX_IDX_CASE(1, 3, 1) FCNN_MAX_IDX_CASE(1, 3, 0)
    FCNN_MAX_IDX_CASE(1, 2, 1) FCNN_MAX_IDX_CASE(1, 2, 0)
#undef FCNN_MAX_IDX_CASE
    if (stride != 1 && stride != 2)
        return ow0;
    return fcnn_max_idx_interior_body(x, yr, ir, ow0, ow1, stride, pad, k_w, dilation, base0,
                                      n_d, depth_step, n_h, row_step, ir != 0);
#else
    (void)x, (void)yr, (void)ir, (void)ow1, (void)stride, (void)pad, (void)k_w;
    (void)dilation, (void)base0, (void)n_d, (void)depth_step, (void)n_h, (void)row_step;
    return ow0;
#endif
}

#endif

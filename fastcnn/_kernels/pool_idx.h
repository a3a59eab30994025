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

static inline long fcnn_max_idx_interior_f32(const float *x, float *yr, int64_t *ir, long ow0,
                                             long ow1, long stride, long pad, long k_w,
                                             long dilation, long base0, long n_d,
                                             long depth_step, long n_h, long row_step)
{
#if defined(__AVX512F__)
    if (stride != 1 && stride != 2)
        return ow0;
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26,
                                           28, 30);
    /* lane * stride for the two halves of 8 indices */
    const __m512i lanes_lo = _mm512_slli_epi64(_mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7),
                                               stride - 1);
    const __m512i lanes_hi = _mm512_add_epi64(lanes_lo, _mm512_set1_epi64(8 * stride));
    for (long ow = ow0; ow < ow1; ow += 16) {
        /* the last vector masked: lanes past ow1 neither read nor written */
        __mmask16 t = fcnn_tail_mask(ow1, ow);
        long n = 2 * (ow1 - ow) - 1;        /* stride 2: the elements the lanes read */
        __mmask16 lo = stride == 1 ? t : fcnn_tail_mask(n, 0);
        __mmask16 hi = n > 16 ? fcnn_tail_mask(n, 16) : 0;
        long first = base0 + ow * stride - pad;
        __m512 best = _mm512_set1_ps(-__builtin_inff());
        __m512i i_lo = _mm512_add_epi64(_mm512_set1_epi64(first), lanes_lo);
        __m512i i_hi = _mm512_add_epi64(_mm512_set1_epi64(first), lanes_hi);
        for (long d = 0; d < n_d; d++)
            for (long h = 0; h < n_h; h++)
                for (long kw = 0; kw < k_w; kw++) {
                    long at = first + d * depth_step + h * row_step + kw * dilation;
                    __m512 v = _mm512_maskz_loadu_ps(lo, x + at);
                    if (stride == 2)
                        v = _mm512_permutex2var_ps(v, even, _mm512_maskz_loadu_ps(hi, x + at + 16));
                    __mmask16 win = _mm512_cmp_ps_mask(v, best, _CMP_GT_OQ)
                                    | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
                    best = _mm512_mask_blend_ps(win, best, v);
                    if (!ir)
                        continue;
                    __m512i a = _mm512_set1_epi64(at);
                    i_lo = _mm512_mask_blend_epi64((__mmask8)win, i_lo,
                                                   _mm512_add_epi64(a, lanes_lo));
                    i_hi = _mm512_mask_blend_epi64((__mmask8)(win >> 8), i_hi,
                                                   _mm512_add_epi64(a, lanes_hi));
                }
        _mm512_mask_storeu_ps(yr + ow, t, best);
        if (ir) {
            _mm512_mask_storeu_epi64(ir + ow, (__mmask8)t, i_lo);
            _mm512_mask_storeu_epi64(ir + ow + 8, (__mmask8)(t >> 8), i_hi);
        }
    }
    return ow1;
#else
    (void)x, (void)yr, (void)ir, (void)ow1, (void)stride, (void)pad, (void)k_w;
    (void)dilation, (void)base0, (void)n_d, (void)depth_step, (void)n_h, (void)row_step;
    return ow0;
#endif
}

#endif

/* One step of softmax's block pipeline (_act.pyx _softmax_blocks) over
 * `rows` consecutive rows (1, 2 or 4), float32; row q of each array starts q
 * strides on (xs for xn, xc and yp; es for ec; as for ap):
 *
 *   next block:     mn[j] = max over the rows (and mn[j] unless first) of xn  j < wn
 *   current block:  e = exp(xc[j] - mc[j]); s[j] += e; ec[j] = e   row by row, j < wc
 *                   (ec may be NULL)
 *   previous block: yp[j] = sub ? ap[j] - r[j] : ap[j] * r[j]            j < wp
 *
 * A width of 0 skips its part. With AVX-512 one loop runs the three parts
 * together, so the next block's reads from memory and the previous block's
 * writes overlap the current block's exponents (separate loops leave them
 * one after another: a third slower); rows stepped together share the loads
 * and stores of mn, mc, s and r and give independent exponents (two rows 5-8 %
 * faster than one, four another 4 %; eight spill registers). Sums still add
 * row by row, so the results are those of one row a step. The max may skip a
 * NaN x: the NaN still reaches every output of its column through exp(x - m).
 *
 * With stream, yp's whole 64-byte lines are written with non-temporal
 * stores: a large output goes to memory without first being read into the
 * cache (a third less traffic). The partial lines at either end are written
 * normally; with several rows, they must start at the same offset in a line
 * (xs a multiple of 16). The thread calls fcnn_stream_fence() before its
 * results are read elsewhere.
 */
#ifndef FASTCNN_SOFTMAX_H
#define FASTCNN_SOFTMAX_H

#include <stdint.h>
#include "vecmath.h"

static inline __attribute__((always_inline)) void
fcnn_softmax_step_rows_f32(const float *xn, float *mn, long wn, int first, const float *xc,
                           const float *mc, float *s, float *ec, long wc, const float *ap,
                           const float *r, float *yp, long wp, int sub, int stream, int rows,
                           long xs, long es, long as)
{
#if defined(__AVX512F__)
    /* the previous block's output starts with h elements up to a line boundary */
    long h = 0;
    if (stream && ((uintptr_t)yp & 3) == 0)
        h = (long)((64 - ((uintptr_t)yp & 63)) & 63) / 4;
    else
        stream = 0;
    h = h < wp ? h : wp;
    long kn = wn / 16, kc = wc / 16, kp = (wp - h) / 16;
    long steps = kn > kc ? kn : kc;
    steps = steps > kp ? steps : kp;
    for (long k = 0; k < steps; k++) {
        long j = 16 * k;
        if (k < kn) {
            __m512 v = _mm512_loadu_ps(xn + j);
            for (int q = 1; q < rows; q++)
                v = _mm512_max_ps(_mm512_loadu_ps(xn + q * xs + j), v);
            _mm512_storeu_ps(mn + j, first ? v : _mm512_max_ps(v, _mm512_loadu_ps(mn + j)));
        }
        if (k < kc) {
            __m512 m = _mm512_loadu_ps(mc + j), sum = _mm512_loadu_ps(s + j);
            for (int q = 0; q < rows; q++) {
                __m512 e = fcnn_expf_below89_v16(_mm512_sub_ps(_mm512_loadu_ps(xc + q * xs + j), m));
                sum = _mm512_add_ps(sum, e);
                if (ec)
                    _mm512_storeu_ps(ec + q * es + j, e);
            }
            _mm512_storeu_ps(s + j, sum);
        }
        if (k < kp) {
            long jo = h + j;
            __m512 b = _mm512_loadu_ps(r + jo);
            for (int q = 0; q < rows; q++) {
                __m512 a = _mm512_loadu_ps(ap + q * as + jo);
                __m512 o = sub ? _mm512_sub_ps(a, b) : _mm512_mul_ps(a, b);
                if (stream)
                    _mm512_stream_ps(yp + q * xs + jo, o);
                else
                    _mm512_storeu_ps(yp + q * xs + jo, o);
            }
        }
    }
    /* partial vectors, masked: every element takes the vector path */
    if (16 * kn < wn) {
        long j = 16 * kn;
        __mmask16 t = fcnn_tail_mask(wn, j);
        __m512 v = _mm512_maskz_loadu_ps(t, xn + j);
        for (int q = 1; q < rows; q++)
            v = _mm512_max_ps(_mm512_maskz_loadu_ps(t, xn + q * xs + j), v);
        _mm512_mask_storeu_ps(mn + j, t, first ? v : _mm512_max_ps(v, _mm512_maskz_loadu_ps(t, mn + j)));
    }
    if (16 * kc < wc) {
        long j = 16 * kc;
        __mmask16 t = fcnn_tail_mask(wc, j);
        __m512 m = _mm512_maskz_loadu_ps(t, mc + j), sum = _mm512_maskz_loadu_ps(t, s + j);
        for (int q = 0; q < rows; q++) {
            __m512 e = fcnn_expf_below89_v16(_mm512_sub_ps(_mm512_maskz_loadu_ps(t, xc + q * xs + j), m));
            sum = _mm512_add_ps(sum, e);
            if (ec)
                _mm512_mask_storeu_ps(ec + q * es + j, t, e);
        }
        _mm512_mask_storeu_ps(s + j, t, sum);
    }
    long ends[2][2] = {{0, h}, {h + 16 * kp, wp}};
    for (int i = 0; i < 2; i++)
        for (long j = ends[i][0]; j < ends[i][1]; j += 16) {
            __mmask16 t = fcnn_tail_mask(ends[i][1], j);
            __m512 b = _mm512_maskz_loadu_ps(t, r + j);
            for (int q = 0; q < rows; q++) {
                __m512 a = _mm512_maskz_loadu_ps(t, ap + q * as + j);
                _mm512_mask_storeu_ps(yp + q * xs + j, t, sub ? _mm512_sub_ps(a, b) : _mm512_mul_ps(a, b));
            }
        }
#else
    (void)stream;
    for (int q = 0; q < rows; q++) {
        for (long j = 0; j < wn; j++)
            mn[j] = first && q == 0 ? xn[j] : (xn[j] > mn[j] ? xn[j] : mn[j]);
        for (long j = 0; j < wc; j++) {
            float e = fcnn_expf(xc[j] - mc[j]);
            s[j] += e;
            if (ec)
                ec[j] = e;
        }
        for (long j = 0; j < wp; j++)
            yp[j] = sub ? ap[j] - r[j] : ap[j] * r[j];
        xn += xs, xc += xs, yp += xs, ap += as;
        if (ec)
            ec += es;
    }
#endif
}

/* The step for rows 1, 2 or 4, each a copy compiled with its row count a
 * constant (the per-row loops unrolled). */
static inline void fcnn_softmax_step_f32(const float *xn, float *mn, long wn, int first,
                                         const float *xc, const float *mc, float *s, float *ec,
                                         long wc, const float *ap, const float *r, float *yp,
                                         long wp, int sub, int stream, int rows, long xs,
                                         long es, long as)
{
    if (rows == 4)
        fcnn_softmax_step_rows_f32(xn, mn, wn, first, xc, mc, s, ec, wc, ap, r, yp, wp, sub,
                                   stream, 4, xs, es, as);
    else if (rows == 2)
        fcnn_softmax_step_rows_f32(xn, mn, wn, first, xc, mc, s, ec, wc, ap, r, yp, wp, sub,
                                   stream, 2, xs, es, as);
    else
        fcnn_softmax_step_rows_f32(xn, mn, wn, first, xc, mc, s, ec, wc, ap, r, yp, wp, sub,
                                   stream, 1, xs, es, as);
}

/* Softmax (or log-softmax) of `rows` consecutive rows of n floats (1, 2 or
 * 4, row q at x + q n), float32: the max, then exp(x - max) stored and
 * summed, then a scale (or a shift) pass. Rows stepped together run in
 * lockstep, so short rows (a row's passes are chains of dependent
 * reductions) overlap; each row's arithmetic is that of one row alone, so
 * its result never depends on its neighbours. Per row, max and sum take
 * four vectors at a time into one partial vector, the last partial vector
 * masked. A NaN skipped by the max still makes the whole row NaN through its
 * exponent. */
static inline __attribute__((always_inline)) void
fcnn_softmax_rows_step_f32(const float *x, float *y, long n, int log, int rows)
{
#if defined(__AVX512F__)
    __m512 acc[4], mv[4], r[4];
    float m[4];
    long j;
    for (int q = 0; q < rows; q++)
        acc[q] = _mm512_set1_ps(-__builtin_inff());
    for (j = 0; j + 64 <= n; j += 64)
        for (int q = 0; q < rows; q++) {
            const float *xq = x + q * n + j;
            __m512 a = _mm512_max_ps(_mm512_loadu_ps(xq), _mm512_loadu_ps(xq + 16));
            __m512 b = _mm512_max_ps(_mm512_loadu_ps(xq + 32), _mm512_loadu_ps(xq + 48));
            acc[q] = _mm512_max_ps(_mm512_max_ps(a, b), acc[q]);
        }
    for (; j < n; j += 16) {
        __mmask16 t = fcnn_tail_mask(n, j);
        for (int q = 0; q < rows; q++)
            acc[q] = _mm512_mask_max_ps(acc[q], t, _mm512_maskz_loadu_ps(t, x + q * n + j), acc[q]);
    }
    for (int q = 0; q < rows; q++) {
        m[q] = _mm512_reduce_max_ps(acc[q]);
        mv[q] = _mm512_set1_ps(m[q]);
        acc[q] = _mm512_setzero_ps();
    }
    for (j = 0; j + 64 <= n; j += 64)
        for (int q = 0; q < rows; q++) {
            __m512 e[4];
            for (int u = 0; u < 4; u++) {
                e[u] = fcnn_expf_below89_v16(_mm512_sub_ps(_mm512_loadu_ps(x + q * n + j + 16 * u), mv[q]));
                if (!log)
                    _mm512_storeu_ps(y + q * n + j + 16 * u, e[u]);
            }
            acc[q] = _mm512_add_ps(acc[q], _mm512_add_ps(_mm512_add_ps(e[0], e[1]),
                                                         _mm512_add_ps(e[2], e[3])));
        }
    for (; j < n; j += 16) {
        __mmask16 t = fcnn_tail_mask(n, j);
        for (int q = 0; q < rows; q++) {
            __m512 e = fcnn_expf_below89_v16(_mm512_sub_ps(_mm512_maskz_loadu_ps(t, x + q * n + j), mv[q]));
            acc[q] = _mm512_mask_add_ps(acc[q], t, acc[q], e);
            if (!log)
                _mm512_mask_storeu_ps(y + q * n + j, t, e);
        }
    }
    for (int q = 0; q < rows; q++) {
        float sum = _mm512_reduce_add_ps(acc[q]);
        r[q] = log ? _mm512_set1_ps(m[q] + fcnn_logf(sum)) : _mm512_set1_ps(1.0f / sum);
    }
    for (j = 0; j < n; j += 16) {
        __mmask16 t = fcnn_tail_mask(n, j);
        for (int q = 0; q < rows; q++) {
            float *yq = y + q * n + j;
            _mm512_mask_storeu_ps(yq, t, log ? _mm512_sub_ps(_mm512_maskz_loadu_ps(t, x + q * n + j), r[q])
                                             : _mm512_mul_ps(_mm512_maskz_loadu_ps(t, yq), r[q]));
        }
    }
#else
    for (int q = 0; q < rows; q++, x += n, y += n) {
        float m = -__builtin_inff(), sum = 0.0f;
        for (long j = 0; j < n; j++)
            m = x[j] > m ? x[j] : m;
        for (long j = 0; j < n; j++) {
            float e = fcnn_expf(x[j] - m);
            sum += e;
            if (!log)
                y[j] = e;
        }
        if (log) {
            float lse = m + fcnn_logf(sum);
            for (long j = 0; j < n; j++)
                y[j] = x[j] - lse;
        } else {
            float r = 1.0f / sum;
            for (long j = 0; j < n; j++)
                y[j] *= r;
        }
    }
#endif
}

/* Softmax (or log-softmax) of `rows` contiguous rows of n floats: four rows a
 * step (then two, then one); rows longer than FCNN_SOFTMAX_LOCKSTEP_MAX have
 * parallelism enough within themselves and go one by one. */
#define FCNN_SOFTMAX_LOCKSTEP_MAX 1024
static inline void fcnn_softmax_rows_f32(const float *x, float *y, long rows, long n, int log)
{
    long q = 0;
    if (n <= FCNN_SOFTMAX_LOCKSTEP_MAX) {
        for (; q + 4 <= rows; q += 4)
            fcnn_softmax_rows_step_f32(x + q * n, y + q * n, n, log, 4);
        for (; q + 2 <= rows; q += 2)
            fcnn_softmax_rows_step_f32(x + q * n, y + q * n, n, log, 2);
    }
    for (; q < rows; q++)
        fcnn_softmax_rows_step_f32(x + q * n, y + q * n, n, log, 1);
}

/* Orders a thread's non-temporal stores before whatever it does next. */
static inline void fcnn_stream_fence(void)
{
#if defined(__AVX512F__)
    _mm_sfence();
#endif
}

#endif

/* A matrix-vector product for Linear at batch 1: y[r] = sum_j a[r][j] x[j].
 *
 * At one input row the layer is bound by streaming its weights (a 1280 ->
 * 1000 classifier reads 5 MB to do 1.3 M multiply-adds), so the kernel's
 * only job is to keep the loads going: FCNN_GEMV_ROWS rows at a time, one
 * vector accumulator per row, x read once per step for all of them (it stays
 * in L1). Against OpenBLAS's sgemv on Zen 4 (weights evicted before each
 * call, 1 thread, AVX-512): 1280 -> 1000 0.163 -> 0.134 ms, 4096 -> 4096
 * 2.69 -> 2.35 ms; a software prefetch 1 KB ahead in each row ran slower.
 * Each y[r] is one fixed sum whatever the thread count: the lanes' partial
 * sums over j = 0, VL, 2 VL ... in order, added up lane by lane, then the
 * tail (k not a multiple of VL) in order. Vector types: transpose.h.
 */
#ifndef FASTCNN_GEMV_H
#define FASTCNN_GEMV_H

#include "transpose.h"

#define FCNN_GEMV_ROWS 8

#define FCNN_DEFINE_GEMV(SUFFIX, T)                                                       \
static inline T fcnn_gemv_finish_##SUFFIX(fcnn_vec_##SUFFIX acc, const T *a, const T *x, \
                                          long j0, long k)                                \
{                                                                                         \
    enum { VL = FCNN_VEC_BYTES / sizeof(T) };                                             \
    T s = acc[0];                                                                         \
    for (int l = 1; l < VL; l++)                                                          \
        s += acc[l];                                                                      \
    for (long j = j0; j < k; j++)                                                         \
        s += a[j] * x[j];                                                                 \
    return s;                                                                             \
}                                                                                         \
                                                                                          \
static void fcnn_gemv_##SUFFIX(long rows, long k, const T *a, long lda, const T *x, T *y) \
{                                                                                         \
    enum { VL = FCNN_VEC_BYTES / sizeof(T), R = FCNN_GEMV_ROWS };                         \
    typedef fcnn_vec_##SUFFIX vec;                                                        \
    const long kv = k / VL * VL;                                                          \
    long r = 0;                                                                           \
    for (; r + R <= rows; r += R) {                                                       \
        const T *ar = a + r * lda;                                                        \
        vec acc[R];                                                                       \
        _Pragma("GCC unroll 16")                                                          \
        for (int i = 0; i < R; i++)                                                       \
            acc[i] = (vec){0};                                                            \
        for (long j = 0; j < kv; j += VL) {                                               \
            const vec xv = *(const vec *)(x + j);                                         \
            _Pragma("GCC unroll 16")                                                      \
            for (int i = 0; i < R; i++)                                                   \
                acc[i] += *(const vec *)(ar + i * lda + j) * xv;                          \
        }                                                                                 \
        for (int i = 0; i < R; i++)                                                       \
            y[r + i] = fcnn_gemv_finish_##SUFFIX(acc[i], ar + i * lda, x, kv, k);         \
    }                                                                                     \
    for (; r < rows; r++) {                                                               \
        const T *ar = a + r * lda;                                                        \
        vec acc = (vec){0};                                                               \
        for (long j = 0; j < kv; j += VL)                                                 \
            acc += *(const vec *)(ar + j) * *(const vec *)(x + j);                        \
        y[r] = fcnn_gemv_finish_##SUFFIX(acc, ar, x, kv, k);                              \
    }                                                                                     \
}

FCNN_DEFINE_GEMV(f32, float)
FCNN_DEFINE_GEMV(f64, double)

#endif

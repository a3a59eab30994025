/* Max pooling's gradient for 2x2 windows at stride 2, one output row:
 * each window's four cells (a b / c e, rows r0 and r1) get gy where the
 * window's first cell equal to the output lies, 0 elsewhere; an output
 * that is NaN sends it to the window's last NaN (PyTorch's indices).
 *
 * The selects are integer masks on the values' bits, never branches: 16-byte
 * vectors of windows (a row of LeNet-5's pools has 5 or 14 windows, fewer
 * than a 32- or 64-byte vector holds: there the compiler's own loop ran
 * scalar code with data-dependent branches, 2-3x slower), then the last
 * windows one by one. A second loop mends the rare NaN windows. */
#ifndef FASTCNN_POOL_GRAD_H
#define FASTCNN_POOL_GRAD_H

#include <stdint.h>

typedef float fcnn_pg_f32 __attribute__((vector_size(16), aligned(4)));
typedef uint32_t fcnn_pg_bits_f32 __attribute__((vector_size(16), aligned(4)));
typedef double fcnn_pg_f64 __attribute__((vector_size(16), aligned(8)));
typedef uint64_t fcnn_pg_bits_f64 __attribute__((vector_size(16), aligned(8)));

/* Lanes L = 16 / sizeof(T); EVEN / ODD pick a window's left / right cells
 * from two vectors of a row, LO / HI interleave two vectors of lanes back. */
#define FCNN_PG_SHUFFLES_f32 (0, 2, 4, 6), (1, 3, 5, 7), (0, 4, 1, 5), (2, 6, 3, 7)
#define FCNN_PG_SHUFFLES_f64 (0, 2), (1, 3), (0, 2), (1, 3)
#define FCNN_PG_SH(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#define FCNN_PG_PICK(a, b, idx) FCNN_PG_SH(a, b, FCNN_PG_UNPAREN idx)
#define FCNN_PG_UNPAREN(...) __VA_ARGS__
#define FCNN_PG_ARG0(a, b, c, d) a
#define FCNN_PG_ARG1(a, b, c, d) b
#define FCNN_PG_ARG2(a, b, c, d) c
#define FCNN_PG_ARG3(a, b, c, d) d
#define FCNN_PG_EXPAND(m, args) m args

#define FCNN_MAX_POOL_2X2_ROW(SUFFIX, T, U)                                           \
static inline void fcnn_max_pool_2x2_row_##SUFFIX(                                    \
    const T *restrict r0, const T *restrict r1, const T *restrict y,                  \
    const T *restrict gy, T *restrict d0, T *restrict d1, long ow)                    \
{                                                                                     \
    typedef fcnn_pg_##SUFFIX vec;                                                     \
    typedef fcnn_pg_bits_##SUFFIX uvec;                                                       \
    enum { L = 16 / sizeof(T) };                                                      \
    long j = 0;                                                                       \
    for (; j + L <= ow; j += L) {                                                     \
        vec p0 = *(const vec *)(r0 + 2 * j), q0 = *(const vec *)(r0 + 2 * j + L);     \
        vec p1 = *(const vec *)(r1 + 2 * j), q1 = *(const vec *)(r1 + 2 * j + L);     \
        vec v = *(const vec *)(y + j);                                                \
        uvec left = (uvec)*(const vec *)(gy + j);                                     \
        vec a = FCNN_PG_PICK(p0, q0, FCNN_PG_EXPAND(FCNN_PG_ARG0, (FCNN_PG_SHUFFLES_##SUFFIX))); \
        vec b = FCNN_PG_PICK(p0, q0, FCNN_PG_EXPAND(FCNN_PG_ARG1, (FCNN_PG_SHUFFLES_##SUFFIX))); \
        vec c = FCNN_PG_PICK(p1, q1, FCNN_PG_EXPAND(FCNN_PG_ARG0, (FCNN_PG_SHUFFLES_##SUFFIX))); \
        vec e = FCNN_PG_PICK(p1, q1, FCNN_PG_EXPAND(FCNN_PG_ARG1, (FCNN_PG_SHUFFLES_##SUFFIX))); \
        uvec ha = (uvec)(a == v), hb = (uvec)(b == v), hc = (uvec)(c == v), he = (uvec)(e == v); \
        uvec oa = left & ha;                                                          \
        left &= ~ha;                                                                  \
        uvec ob = left & hb;                                                          \
        left &= ~hb;                                                                  \
        uvec oc = left & hc;                                                          \
        left &= ~hc;                                                                  \
        uvec oe = left & he;                                                          \
        *(vec *)(d0 + 2 * j) = (vec)FCNN_PG_PICK(oa, ob, FCNN_PG_EXPAND(FCNN_PG_ARG2, (FCNN_PG_SHUFFLES_##SUFFIX))); \
        *(vec *)(d0 + 2 * j + L) = (vec)FCNN_PG_PICK(oa, ob, FCNN_PG_EXPAND(FCNN_PG_ARG3, (FCNN_PG_SHUFFLES_##SUFFIX))); \
        *(vec *)(d1 + 2 * j) = (vec)FCNN_PG_PICK(oc, oe, FCNN_PG_EXPAND(FCNN_PG_ARG2, (FCNN_PG_SHUFFLES_##SUFFIX))); \
        *(vec *)(d1 + 2 * j + L) = (vec)FCNN_PG_PICK(oc, oe, FCNN_PG_EXPAND(FCNN_PG_ARG3, (FCNN_PG_SHUFFLES_##SUFFIX))); \
    }                                                                                 \
    for (; j < ow; j++) {                                                             \
        const T cell[4] = {r0[2 * j], r0[2 * j + 1], r1[2 * j], r1[2 * j + 1]};       \
        T out[4];                                                                     \
        U left, bits[4];                                                              \
        __builtin_memcpy(&left, gy + j, sizeof(U));                                   \
        for (int k = 0; k < 4; k++) {                                                 \
            U hit = (U)0 - (U)(cell[k] == y[j]);                                      \
            bits[k] = left & hit;                                                     \
            left &= ~hit;                                                             \
        }                                                                             \
        __builtin_memcpy(out, bits, sizeof(bits));                                    \
        d0[2 * j] = out[0];                                                           \
        d0[2 * j + 1] = out[1];                                                       \
        d1[2 * j] = out[2];                                                           \
        d1[2 * j + 1] = out[3];                                                       \
    }                                                                                 \
    for (j = 0; j < ow; j++) {                                                        \
        if (y[j] == y[j])                                                             \
            continue;                                                                 \
        T *cell[4] = {d0 + 2 * j, d0 + 2 * j + 1, d1 + 2 * j, d1 + 2 * j + 1};        \
        const T *src[4] = {r0 + 2 * j, r0 + 2 * j + 1, r1 + 2 * j, r1 + 2 * j + 1};   \
        int last = -1;                                                                \
        for (int k = 0; k < 4; k++) {                                                 \
            *cell[k] = 0;                                                             \
            if (*src[k] != *src[k])                                                   \
                last = k;                                                             \
        }                                                                             \
        if (last >= 0)                                                                \
            *cell[last] = gy[j];                                                      \
    }                                                                                 \
}

FCNN_MAX_POOL_2X2_ROW(f32, float, uint32_t)
FCNN_MAX_POOL_2X2_ROW(f64, double, uint64_t)

#endif

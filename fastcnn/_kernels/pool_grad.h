/* Max pooling's gradient for 2x2 windows at stride 2, one output row:
 * each window's four cells (a b / c e, rows r0 and r1) get gy where the
 * window's first cell equal to the output lies, 0 elsewhere; an output
 * that is NaN sends it to the window's last NaN (PyTorch's indices).
 * The first loop is float selects only (no branches, no integer masks),
 * which the compiler vectorises across windows at every target; the
 * second mends the rare NaN windows. */
#ifndef FASTCNN_POOL_GRAD_H
#define FASTCNN_POOL_GRAD_H

#define FCNN_MAX_POOL_2X2_ROW(T, NAME)                                                \
static inline void NAME(const T *restrict r0, const T *restrict r1,                  \
                        const T *restrict y, const T *restrict gy, T *restrict d0,    \
                        T *restrict d1, long ow)                                      \
{                                                                                     \
    for (long j = 0; j < ow; j++) {                                                   \
        T v = y[j], left = gy[j];                                                     \
        T a = r0[2 * j], b = r0[2 * j + 1], c = r1[2 * j], e = r1[2 * j + 1];         \
        d0[2 * j] = a == v ? left : (T)0;                                             \
        left = a == v ? (T)0 : left;                                                  \
        d0[2 * j + 1] = b == v ? left : (T)0;                                         \
        left = b == v ? (T)0 : left;                                                  \
        d1[2 * j] = c == v ? left : (T)0;                                             \
        left = c == v ? (T)0 : left;                                                  \
        d1[2 * j + 1] = e == v ? left : (T)0;                                         \
    }                                                                                 \
    for (long j = 0; j < ow; j++) {                                                   \
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

FCNN_MAX_POOL_2X2_ROW(float, fcnn_max_pool_2x2_row_f32)
FCNN_MAX_POOL_2X2_ROW(double, fcnn_max_pool_2x2_row_f64)

#endif

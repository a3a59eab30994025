/* The register-blocked direct convolution kernel (the "blocked" algorithm).
 *
 * Output positions are lanes of a padded, phase-split plane (see _conv.pyx):
 * output (oh, ow) is lane q = oh * wq + ow, and tap t of every lane reads
 * x[q + toff[t]], so one tap is one unaligned vector load per vector of
 * lanes. A call computes FCNN_BLOCK_OCB output channels x FCNN_BLOCK_LANES
 * lanes, summing over every input channel and tap, with the accumulators in
 * registers: per (channel, tap) it loads FCNN_BLOCK_QV input vectors and
 * FCNN_BLOCK_OCB weights and issues OCB x QV fused multiply-adds.
 *
 * Written with GCC vector extensions, so it compiles for any target: 64-byte
 * vectors with AVX-512 (6 x 4 accumulators of 32 registers), 32-byte ones
 * otherwise (6 x 2 of 16). The summation order is fixed (channels, then
 * taps), whatever the thread count.
 */
#ifndef FASTCNN_CONV_BLOCK_H
#define FASTCNN_CONV_BLOCK_H

#if defined(__AVX512F__)
#define FCNN_BLOCK_VEC_BYTES 64
#define FCNN_BLOCK_QV 4
#else
#define FCNN_BLOCK_VEC_BYTES 32
#define FCNN_BLOCK_QV 2
#endif
#define FCNN_BLOCK_OCB 6
#ifndef FCNN_BLOCK_PREFETCH
#define FCNN_BLOCK_PREFETCH 4096    /* bytes of weights fetched ahead */
#endif
#define FCNN_BLOCK_LANES_F32 (FCNN_BLOCK_QV * FCNN_BLOCK_VEC_BYTES / 4)
#define FCNN_BLOCK_LANES_F64 (FCNN_BLOCK_QV * FCNN_BLOCK_VEC_BYTES / 8)

/* x: the first lane's input in channel 0; ld_c: elements between channels;
 * w: packed weights [channel][tap][OCB]; out: OCB rows of LANES. */
#define FCNN_DEFINE_BLOCK_KERNEL(SUFFIX, T)                                              \
typedef T fcnn_vec_##SUFFIX __attribute__((vector_size(FCNN_BLOCK_VEC_BYTES), aligned(sizeof(T)))); \
static inline void fcnn_block_kernel_##SUFFIX(const T *x, long ld_c, const T *w,         \
                                              const long *toff, long ntaps, long cin,    \
                                              T *out)                                    \
{                                                                                        \
    enum { VL = FCNN_BLOCK_VEC_BYTES / sizeof(T) };                                      \
    fcnn_vec_##SUFFIX acc[FCNN_BLOCK_OCB][FCNN_BLOCK_QV];                                \
    _Pragma("GCC unroll 8")                                                              \
    for (int o = 0; o < FCNN_BLOCK_OCB; o++) {                                           \
        _Pragma("GCC unroll 8")                                                          \
        for (int v = 0; v < FCNN_BLOCK_QV; v++)                                          \
            acc[o][v] = (fcnn_vec_##SUFFIX){0};                                          \
    }                                                                                    \
    for (long c = 0; c < cin; c++) {                                                     \
        const T *xc = x + c * ld_c;                                                      \
        /* weights stream from memory once per call: fetch them well ahead */            \
        for (long l = 0; l < ntaps * FCNN_BLOCK_OCB * (long)sizeof(T); l += 64)           \
            __builtin_prefetch((const char *)w + FCNN_BLOCK_PREFETCH + l, 0, 0);           \
        for (long t = 0; t < ntaps; t++) {                                               \
            const T *xp = xc + toff[t];                                                  \
            fcnn_vec_##SUFFIX xv[FCNN_BLOCK_QV];                                         \
            _Pragma("GCC unroll 8")                                                      \
            for (int v = 0; v < FCNN_BLOCK_QV; v++)                                      \
                xv[v] = *(const fcnn_vec_##SUFFIX *)(xp + VL * v);                       \
            _Pragma("GCC unroll 8")                                                      \
            for (int o = 0; o < FCNN_BLOCK_OCB; o++) {                                   \
                T wo = w[o];                                                             \
                _Pragma("GCC unroll 8")                                                  \
                for (int v = 0; v < FCNN_BLOCK_QV; v++)                                  \
                    acc[o][v] += wo * xv[v];                                             \
            }                                                                            \
            w += FCNN_BLOCK_OCB;                                                         \
        }                                                                                \
    }                                                                                    \
    _Pragma("GCC unroll 8")                                                              \
    for (int o = 0; o < FCNN_BLOCK_OCB; o++) {                                           \
        _Pragma("GCC unroll 8")                                                          \
        for (int v = 0; v < FCNN_BLOCK_QV; v++)                                          \
            *(fcnn_vec_##SUFFIX *)(out + (o * FCNN_BLOCK_QV + v) * VL) = acc[o][v];     \
    }                                                                                    \
}

FCNN_DEFINE_BLOCK_KERNEL(f32, float)
FCNN_DEFINE_BLOCK_KERNEL(f64, double)

#endif

/* GCC vector types for the blocked kernels, and transposition through them.
 *
 * The target's vector width: 64 bytes with AVX-512, 32 with AVX2, 16 with
 * SSE (the x86-64 baseline) and other targets (VL = lanes per vector); GCC
 * splits wider vectors into several registers, so a width the target lacks
 * would only add moves and spills.
 * fcnn_transpose_* transposes VL vectors of VL lanes in registers;
 * fcnn_transpose_rect_* moves a whole matrix to its transpose VL x VL tiles
 * at a time (weight packing, depthwise results, Linear's transposed form).
 */
#ifndef FASTCNN_TRANSPOSE_H
#define FASTCNN_TRANSPOSE_H

#include <stdint.h>
#if defined(__SSE2__)
#include <immintrin.h>
#endif

#if defined(__AVX512F__)
#define FCNN_VEC_BYTES 64
#elif defined(__AVX__)
#define FCNN_VEC_BYTES 32
#else
#define FCNN_VEC_BYTES 16
#endif
/* Whether the target multiplies and adds in one instruction. Without it the
 * direct kernels lose more to Winograd's fewer multiplies (the dispatcher
 * picks Winograd sooner). */
#if defined(__FMA__)
#define FCNN_HAS_FMA 1
#else
#define FCNN_HAS_FMA 0
#endif
typedef float fcnn_vec_f32 __attribute__((vector_size(FCNN_VEC_BYTES), aligned(sizeof(float))));
typedef double fcnn_vec_f64 __attribute__((vector_size(FCNN_VEC_BYTES), aligned(sizeof(double))));

/* In-register transposition of VL vectors of VL lanes: log2(VL) stages, each
 * swapping the off-diagonal b x b blocks with two-source shuffles. Lane l of
 * the first vector of a pair takes the second's lane l - b where bit b of l
 * is set (FCNN_TR_LO); the second takes the first's lane l + b where it is
 * clear (FCNN_TR_HI). */
#define FCNN_TR_LO(l, b, VL) (((l) & (b)) ? (VL) + (l) - (b) : (l))
#define FCNN_TR_HI(l, b, VL) (((l) & (b)) ? (VL) + (l) : (l) + (b))
#define FCNN_TR_L2(F, b) {F(0, b, 2), F(1, b, 2)}
#define FCNN_TR_L4(F, b) {F(0, b, 4), F(1, b, 4), F(2, b, 4), F(3, b, 4)}
#define FCNN_TR_L8(F, b) {F(0, b, 8), F(1, b, 8), F(2, b, 8), F(3, b, 8), F(4, b, 8),       \
                          F(5, b, 8), F(6, b, 8), F(7, b, 8)}
#define FCNN_TR_L16(F, b) {F(0, b, 16), F(1, b, 16), F(2, b, 16), F(3, b, 16), F(4, b, 16), \
                           F(5, b, 16), F(6, b, 16), F(7, b, 16), F(8, b, 16), F(9, b, 16), \
                           F(10, b, 16), F(11, b, 16), F(12, b, 16), F(13, b, 16),          \
                           F(14, b, 16), F(15, b, 16)}
#if FCNN_VEC_BYTES == 64
#define FCNN_TR_LIST_f32 FCNN_TR_L16
#define FCNN_TR_LIST_f64 FCNN_TR_L8
#elif FCNN_VEC_BYTES == 32
#define FCNN_TR_LIST_f32 FCNN_TR_L8
#define FCNN_TR_LIST_f64 FCNN_TR_L4
#else
#define FCNN_TR_LIST_f32 FCNN_TR_L4
#define FCNN_TR_LIST_f64 FCNN_TR_L2
#endif
typedef int32_t fcnn_tr_mask_f32 __attribute__((vector_size(FCNN_VEC_BYTES)));
typedef int64_t fcnn_tr_mask_f64 __attribute__((vector_size(FCNN_VEC_BYTES)));

#define FCNN_TR_STAGE(SUFFIX, r, VL, b)                                                   \
    if ((b) < (VL)) {                                                                    \
        const fcnn_tr_mask_##SUFFIX lo = FCNN_TR_LIST_##SUFFIX(FCNN_TR_LO, b);           \
        const fcnn_tr_mask_##SUFFIX hi = FCNN_TR_LIST_##SUFFIX(FCNN_TR_HI, b);           \
        for (int i = 0; i < (VL); i++)                                                   \
            if (!(i & (b))) {                                                            \
                fcnn_vec_##SUFFIX first = r[i], second = r[i + (b)];                     \
                r[i] = __builtin_shuffle(first, second, lo);                             \
                r[i + (b)] = __builtin_shuffle(first, second, hi);                       \
            }                                                                            \
    }

#define FCNN_DEFINE_TRANSPOSE(SUFFIX, T)                                                 \
static inline void fcnn_transpose_##SUFFIX(fcnn_vec_##SUFFIX *r)                         \
{                                                                                        \
    enum { VL = FCNN_VEC_BYTES / sizeof(T) };                                      \
    FCNN_TR_STAGE(SUFFIX, r, VL, 8)                                                      \
    FCNN_TR_STAGE(SUFFIX, r, VL, 4)                                                      \
    FCNN_TR_STAGE(SUFFIX, r, VL, 2)                                                      \
    FCNN_TR_STAGE(SUFFIX, r, VL, 1)                                                      \
}

/* v clamped to [lo, hi]: lo where v < lo, hi where v > hi, else v, as the
 * scalar epilogue's selects (NaN fails both comparisons and passes; -0 stays
 * -0): the ReLU and ReLU6 epilogues applied in registers. On x86 that is
 * exactly max(lo, v) then min(hi, v) with the bound first (the instructions
 * return their second operand when the comparison fails): two instructions;
 * elsewhere the selects through masks. */
#if FCNN_VEC_BYTES == 64
#define FCNN_VMAX_f32(a, b) ((fcnn_vec_f32)_mm512_max_ps((__m512)(a), (__m512)(b)))
#define FCNN_VMIN_f32(a, b) ((fcnn_vec_f32)_mm512_min_ps((__m512)(a), (__m512)(b)))
#define FCNN_VMAX_f64(a, b) ((fcnn_vec_f64)_mm512_max_pd((__m512d)(a), (__m512d)(b)))
#define FCNN_VMIN_f64(a, b) ((fcnn_vec_f64)_mm512_min_pd((__m512d)(a), (__m512d)(b)))
#elif FCNN_VEC_BYTES == 32
#define FCNN_VMAX_f32(a, b) ((fcnn_vec_f32)_mm256_max_ps((__m256)(a), (__m256)(b)))
#define FCNN_VMIN_f32(a, b) ((fcnn_vec_f32)_mm256_min_ps((__m256)(a), (__m256)(b)))
#define FCNN_VMAX_f64(a, b) ((fcnn_vec_f64)_mm256_max_pd((__m256d)(a), (__m256d)(b)))
#define FCNN_VMIN_f64(a, b) ((fcnn_vec_f64)_mm256_min_pd((__m256d)(a), (__m256d)(b)))
#elif defined(__SSE2__)
#define FCNN_VMAX_f32(a, b) ((fcnn_vec_f32)_mm_max_ps((__m128)(a), (__m128)(b)))
#define FCNN_VMIN_f32(a, b) ((fcnn_vec_f32)_mm_min_ps((__m128)(a), (__m128)(b)))
#define FCNN_VMAX_f64(a, b) ((fcnn_vec_f64)_mm_max_pd((__m128d)(a), (__m128d)(b)))
#define FCNN_VMIN_f64(a, b) ((fcnn_vec_f64)_mm_min_pd((__m128d)(a), (__m128d)(b)))
#endif

#define FCNN_DEFINE_CLAMP(SUFFIX)                                                         \
static inline fcnn_vec_##SUFFIX fcnn_clamp_##SUFFIX(                                     \
    fcnn_vec_##SUFFIX v, fcnn_vec_##SUFFIX lo, fcnn_vec_##SUFFIX hi)                     \
{                                                                                        \
    FCNN_CLAMP_BODY(SUFFIX)                                                              \
}
#if defined(FCNN_VMAX_f32)
#define FCNN_CLAMP_BODY(SUFFIX)                                                          \
    return FCNN_VMIN_##SUFFIX(hi, FCNN_VMAX_##SUFFIX(lo, v));
#else
#define FCNN_CLAMP_BODY(SUFFIX)                                                          \
    typedef fcnn_tr_mask_##SUFFIX mask;                                                  \
    const mask below = v < lo, above = v > hi;                                           \
    return (fcnn_vec_##SUFFIX)(((mask)v & ~(below | above)) | ((mask)lo & below)         \
                               | ((mask)hi & above));
#endif

FCNN_DEFINE_CLAMP(f32)
FCNN_DEFINE_CLAMP(f64)

/* A layer's epilogue on one value or vector: + bias[j] (with has_bias), then,
 * with clamp, the clamp to [0, hi] (ReLU: hi = inf, ReLU6: hi = 6): the scalar
 * epilogue's order and comparisons (_activation.pxd), as fcnn_clamp_*. */
#define FCNN_DEFINE_EPILOGUE(SUFFIX, T)                                                  \
static inline __attribute__((always_inline)) T                                           \
fcnn_epilogue_##SUFFIX(T v, int has_bias, const T *bias, long j, int clamp, T hi)        \
{                                                                                        \
    if (has_bias)                                                                        \
        v = v + bias[j];                                                                 \
    if (clamp)                                                                           \
        v = v < 0 ? 0 : (v > hi ? hi : v);                                               \
    return v;                                                                            \
}                                                                                        \
static inline __attribute__((always_inline)) fcnn_vec_##SUFFIX                           \
fcnn_epilogue_vec_##SUFFIX(fcnn_vec_##SUFFIX v, int has_bias, const T *bias, long j,     \
                           int clamp, T hi)                                              \
{                                                                                        \
    if (has_bias)                                                                        \
        v = v + bias[j];                                                                 \
    if (clamp) {                                                                         \
        const fcnn_vec_##SUFFIX zero = {0};                                              \
        v = fcnn_clamp_##SUFFIX(v, zero, zero + hi);                                     \
    }                                                                                    \
    return v;                                                                            \
}

/* dst[j * ld_dst + i] = epilogue(src[i * ld_src + j]) for i < rows, j < cols
 * (see FCNN_DEFINE_EPILOGUE): whole VL x VL tiles through registers, the
 * ragged edges one element at a time. The body is compiled once per
 * combination of has_bias and clamp (constants there), so the bare transpose,
 * fcnn_transpose_rect_*, tests nothing per tile. */
#define FCNN_DEFINE_TRANSPOSE_RECT(SUFFIX, T)                                              \
static inline __attribute__((always_inline)) void                                        \
fcnn_transpose_body_##SUFFIX(const T *src, long ld_src, long rows, long cols, T *dst,    \
                             long ld_dst, int has_bias, const T *bias, int clamp, T hi)  \
{                                                                                        \
    enum { VL = FCNN_VEC_BYTES / sizeof(T) };                                            \
    fcnn_vec_##SUFFIX r[VL];                                                             \
    long i0 = 0, j0;                                                                     \
    for (; i0 + VL <= rows; i0 += VL) {                                                  \
        for (j0 = 0; j0 + VL <= cols; j0 += VL) {                                        \
            for (int t = 0; t < VL; t++)                                                 \
                r[t] = *(const fcnn_vec_##SUFFIX *)(src + (i0 + t) * ld_src + j0);       \
            fcnn_transpose_##SUFFIX(r);                                                  \
            for (int t = 0; t < VL; t++)                                                 \
                *(fcnn_vec_##SUFFIX *)(dst + (j0 + t) * ld_dst + i0) =                   \
                    fcnn_epilogue_vec_##SUFFIX(r[t], has_bias, bias, j0 + t, clamp, hi); \
        }                                                                                \
        for (long i = i0; i < i0 + VL; i++)                                              \
            for (long j = j0; j < cols; j++)                                             \
                dst[j * ld_dst + i] = fcnn_epilogue_##SUFFIX(src[i * ld_src + j],        \
                                                             has_bias, bias, j, clamp, hi); \
    }                                                                                    \
    for (long i = i0; i < rows; i++)                                                     \
        for (long j = 0; j < cols; j++)                                                  \
            dst[j * ld_dst + i] = fcnn_epilogue_##SUFFIX(src[i * ld_src + j], has_bias,  \
                                                         bias, j, clamp, hi);            \
}                                                                                        \
static inline void fcnn_transpose_rect_##SUFFIX(const T *src, long ld_src, long rows,     \
                                                long cols, T *dst, long ld_dst)          \
{                                                                                        \
    fcnn_transpose_body_##SUFFIX(src, ld_src, rows, cols, dst, ld_dst, 0, 0, 0, 0);      \
}                                                                                        \
/* bias NULL: none; clamp: to [0, hi]. */                                                \
static inline void fcnn_transpose_epilogue_##SUFFIX(const T *src, long ld_src, long rows,   \
                                                    long cols, T *dst, long ld_dst,         \
                                                    const T *bias, int clamp, T hi)         \
{                                                                                        \
    if (bias && clamp)                                                                   \
        fcnn_transpose_body_##SUFFIX(src, ld_src, rows, cols, dst, ld_dst, 1, bias, 1, hi); \
    else if (bias)                                                                       \
        fcnn_transpose_body_##SUFFIX(src, ld_src, rows, cols, dst, ld_dst, 1, bias, 0, hi); \
    else if (clamp)                                                                      \
        fcnn_transpose_body_##SUFFIX(src, ld_src, rows, cols, dst, ld_dst, 0, 0, 1, hi); \
    else                                                                                 \
        fcnn_transpose_body_##SUFFIX(src, ld_src, rows, cols, dst, ld_dst, 0, 0, 0, hi); \
}

/* The first m < VL floats at p as a vector (the other lanes zero), and v's
 * first m lanes stored at p: nothing read or written past p + m, in a few
 * vector moves (a masked move with AVX-512; 4-, 2- and 1-float pieces
 * otherwise) rather than m scalar ones. */
#if defined(__SSE2__)
static inline __m128 fcnn_load_part_128(const float *p, long k)
{
    if (k == 1)
        return _mm_load_ss(p);
    if (k < 2)
        return _mm_setzero_ps();
    const __m128 two = _mm_castpd_ps(_mm_load_sd((const double *)p));
    return k == 2 ? two : _mm_movelh_ps(two, _mm_load_ss(p + 2));
}
static inline void fcnn_store_part_128(float *p, long k, __m128 v)
{
    if (k >= 2) {
        _mm_store_sd((double *)p, _mm_castps_pd(v));
        v = _mm_movehl_ps(v, v);
        p += 2;
        k -= 2;
    }
    if (k)
        _mm_store_ss(p, v);
}
#endif

static inline fcnn_vec_f32 fcnn_load_part_f32(const float *p, long m)
{
#if FCNN_VEC_BYTES == 64
    return (fcnn_vec_f32)_mm512_maskz_loadu_ps((__mmask16)((1u << m) - 1), p);
#elif FCNN_VEC_BYTES == 32
    const __m128 lo = m >= 4 ? _mm_loadu_ps(p) : fcnn_load_part_128(p, m);
    const __m128 hi = m > 4 ? fcnn_load_part_128(p + 4, m - 4) : _mm_setzero_ps();
    return (fcnn_vec_f32)_mm256_set_m128(hi, lo);
#elif defined(__SSE2__)
    return (fcnn_vec_f32)fcnn_load_part_128(p, m);
#else
    fcnn_vec_f32 v = {0};
    for (long j = 0; j < m; j++)
        v[j] = p[j];
    return v;
#endif
}

static inline void fcnn_store_part_f32(float *p, long m, fcnn_vec_f32 v)
{
#if FCNN_VEC_BYTES == 64
    _mm512_mask_storeu_ps(p, (__mmask16)((1u << m) - 1), (__m512)v);
#elif FCNN_VEC_BYTES == 32
    __m128 rest = _mm256_castps256_ps128((__m256)v);
    if (m >= 4) {
        _mm_storeu_ps(p, rest);
        rest = _mm256_extractf128_ps((__m256)v, 1);
        p += 4;
        m -= 4;
    }
    fcnn_store_part_128(p, m, rest);
#elif defined(__SSE2__)
    fcnn_store_part_128(p, m, (__m128)v);
#else
    for (long j = 0; j < m; j++)
        p[j] = v[j];
#endif
}

FCNN_DEFINE_TRANSPOSE(f32, float)
FCNN_DEFINE_TRANSPOSE(f64, double)
FCNN_DEFINE_EPILOGUE(f32, float)
FCNN_DEFINE_EPILOGUE(f64, double)
FCNN_DEFINE_TRANSPOSE_RECT(f32, float)
FCNN_DEFINE_TRANSPOSE_RECT(f64, double)

#endif

/* Branch-free float32 math that GCC vectorizes inside element loops.
 *
 * glibc offers vector expf only under -ffast-math, which fastcnn cannot use
 * (NaN must propagate). fcnn_expf follows the Cephes expf approach: range
 * reduction by ln 2, a polynomial, and 2^n built in the exponent bits (as two
 * halves, so subnormal results are right). At most 1.06 ulp from exp (every
 * float in [-104, 89] checked, subnormal results included); NaN gives NaN,
 * overflow +inf, underflow 0.
 */
#ifndef FASTCNN_VECMATH_H
#define FASTCNN_VECMATH_H

#include <stdint.h>
#include <string.h>

/* The scalar functions below are written to be vectorised where they are
 * inlined into element loops: forced inline, as GCC's inliner otherwise
 * drops them from some loops of a large caller (a loop with an out-of-line
 * call stays scalar, 10-20x slower). */
#define FCNN_SCALAR_MATH __attribute__((always_inline))

static inline FCNN_SCALAR_MATH float fcnn_pow2i(int32_t n)   /* 2^n for -126 <= n <= 127 */
{
    int32_t bits = (n + 127) << 23;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* exp's degree-6 polynomial (FCNN_EXP_CORE's) at c r: p = exp(c r) for |c r| <= ln2/2,
 * c a power of two folded into the coefficients (exactly: c^k scales only
 * the exponents), so FCNN_EXP_CORE (c = 1) and tanh's exp(2|x|) (c = 2)
 * share it. */
#define FCNN_EXP_POLY(p, r, c)                                                   \
    do {                                                                         \
        p = (r) * (1.384360716e-3f * (c) * (c) * (c) * (c) * (c) * (c))          \
            + 8.374195546e-3f * (c) * (c) * (c) * (c) * (c);                     \
        p = p * (r) + 4.166800529e-2f * (c) * (c) * (c) * (c);                   \
        p = p * (r) + 1.666643023e-1f * (c) * (c) * (c);                         \
        p = p * (r) + 4.999999404e-1f * (c) * (c);                               \
        p = p * (r) + (c);                                                       \
        p = p * (r) + 1.0f;                                                      \
    } while (0)

/* The shared core, written once for floats and for GCC vectors of them: for
 * xc already clamped, xc = nf ln2 + r and p = exp(r) (Cephes' split of ln 2;
 * a degree-6 polynomial fitted to exp on [-ln2/2, ln2/2] for relative error,
 * in Horner form: six FMAs, two fewer than Cephes' degree 7, and fewer
 * results off by more than half an ulp). nf = round(xc / ln 2) by the
 * 1.5 * 2^23 trick: t's low mantissa bits hold it as an integer. */
#define FCNN_EXP_CORE(xc, t, nf, p)                                              \
    do {                                                                         \
        __typeof__(xc) r_;                                                       \
        t = xc * 1.44269504088896341f + 12582912.0f;                             \
        nf = t - 12582912.0f;                                                    \
        r_ = xc - nf * 0.693359375f;                                             \
        r_ = r_ - nf * -2.12194440e-4f;                                          \
        FCNN_EXP_POLY(p, r_, 1.0f);                                              \
    } while (0)

/* FCNN_EXP_CORE on one float: p, and nf as an integer (from t's bits). */
static inline FCNN_SCALAR_MATH float fcnn_exp_core(float xc, int32_t *n)
{
    float t, nf, p;
    int32_t tbits;
    FCNN_EXP_CORE(xc, t, nf, p);
    memcpy(&tbits, &t, sizeof tbits);
    *n = tbits - 0x4B400000;
    return p;
}

static inline FCNN_SCALAR_MATH float fcnn_expf(float x)
{
    /* Clamped to where the formula itself gives +inf (n = 128) and 0
     * (p * 2^-150 rounds to 0), so no selects are needed afterwards; the
     * clamps keep NaN, which the arithmetic then carries to the result. */
    const float hi = 89.0f;
    const float lo = -104.0f;
    float xc = hi < x ? hi : x;         /* x86 min and max, in the operand */
    xc = lo > xc ? lo : xc;             /* order that returns a NaN x      */
    int32_t n;
    float p = fcnn_exp_core(xc, &n);
    int32_t n1 = n >> 1;
    return p * fcnn_pow2i(n1) * fcnn_pow2i(n - n1);
}

/* The low Taylor terms of exp, shared by fcnn_exp and fcnn_expm1f: p, holding
 * the higher terms' Horner sum at x, takes in 1/7! ... 1/2! (in p's type). */
#define FCNN_EXP_TAYLOR_TO_HALF(p, x)                                             \
    do {                                                                         \
        p = p * (x) + (__typeof__(p))(1.0 / 5040);                               \
        p = p * (x) + (__typeof__(p))(1.0 / 720);                                \
        p = p * (x) + (__typeof__(p))(1.0 / 120);                                \
        p = p * (x) + (__typeof__(p))(1.0 / 24);                                 \
        p = p * (x) + (__typeof__(p))(1.0 / 6);                                  \
        p = p * (x) + (__typeof__(p))0.5;                                        \
    } while (0)

/* For the double exp family, x already clamped: x = nf ln2 + r (fdlibm's
 * split of ln 2, n ln2_hi exact), t holding nf as an integer in its low bits,
 * and p = 1/2! + r/3! + ... + r^11/13! (Taylor; truncation below 1e-17 on
 * |r| <= ln2/2). */
#define FCNN_EXP_REDUCE_F64(xc, t, r, p)                                          \
    do {                                                                         \
        double nf_;                                                              \
        t = (xc) * 1.4426950408889634 + 6755399441055744.0;     /* 1.5 * 2^52 */ \
        nf_ = t - 6755399441055744.0;                                            \
        r = (xc) - nf_ * 6.93147180369123816490e-01;                             \
        r = r - nf_ * 1.90821492927058770002e-10;                                \
        p = 1.0 / 6227020800.0;                                   /* 1 / 13! */  \
        p = p * r + 1.0 / 479001600.0;                                           \
        p = p * r + 1.0 / 39916800.0;                                            \
        p = p * r + 1.0 / 3628800.0;                                             \
        p = p * r + 1.0 / 362880.0;                                              \
        p = p * r + 1.0 / 40320.0;                                               \
        FCNN_EXP_TAYLOR_TO_HALF(p, r);                                           \
    } while (0)

/* 2^n, n from t's low bits (FCNN_EXP_REDUCE_F64), as two factors s1 * s2 that
 * are each a normal double (subnormal and near-overflow results right). */
static inline FCNN_SCALAR_MATH int64_t fcnn_pow2_halves(double t, double *s1, double *s2)
{
    int64_t tbits, b1, b2;
    memcpy(&tbits, &t, sizeof tbits);
    int64_t n = tbits - 0x4338000000000000LL;
    int64_t n1 = n >> 1;
    b1 = (n1 + 1023) << 52;
    b2 = (n - n1 + 1023) << 52;
    memcpy(s1, &b1, sizeof *s1);
    memcpy(s2, &b2, sizeof *s2);
    return n;
}

/* exp for doubles, branch-free like fcnn_expf so GCC vectorizes loops of it
 * (glibc's exp is a call per element): fdlibm's split of ln 2 (n ln2_hi is
 * exact), exp(r) on |r| <= ln2/2 by its Taylor polynomial of degree 13
 * (truncation below 1e-17), 2^n in two halves (subnormal results right).
 * Clamped to [-746, 710], where the formula itself gives 0 and +inf; NaN
 * passes through the arithmetic. */
static inline FCNN_SCALAR_MATH double fcnn_exp(double x)
{
    double xc = 710.0 < x ? 710.0 : x;
    xc = -746.0 > xc ? -746.0 : xc;
    double t, r, p, s1, s2;
    FCNN_EXP_REDUCE_F64(xc, t, r, p);
    p = p * r + 1.0;
    p = p * r + 1.0;
    fcnn_pow2_halves(t, &s1, &s2);
    return p * s1 * s2;
}

/* expm1 for doubles, branch-free (vectorises): expm1(r) = r + r^2 p without
 * cancellation, then 2^n expm1(r) + (2^n - 1); where 2^n would overflow
 * (n > 1000), 2^n (1 + expm1(r)) in two halves, the - 1 then immaterial.
 * Clamped to [-40, 710] (-1 and +inf beyond); NaN passes through. */
static inline FCNN_SCALAR_MATH double fcnn_expm1(double x)
{
    double xc = 710.0 < x ? 710.0 : x;
    xc = -40.0 > xc ? -40.0 : xc;
    double t, r, p, s1, s2;
    FCNN_EXP_REDUCE_F64(xc, t, r, p);
    double e = r + r * r * p;                                     /* expm1(r) */
    int64_t n = fcnn_pow2_halves(t, &s1, &s2);
    double s = s1 * s2;
    double small = s * e + (s - 1.0);
    double big = (s1 * (e + 1.0)) * s2;
    return n > 1000 ? big : small;
}

/* tanh for doubles, branch-free: -u / (u + 2) with u = expm1(-2|x|), the sign
 * of x put back (tanh(-0) = -0); |x| clamped at 40, where tanh rounds to 1. */
static inline FCNN_SCALAR_MATH double fcnn_tanh(double x)
{
    double a = __builtin_fabs(x);
    a = a > 40.0 ? 40.0 : a;
    double u = fcnn_expm1(-2.0 * a);
    return __builtin_copysign(-u / (u + 2.0), x);
}

#if defined(__AVX512F__)
#include <immintrin.h>
typedef float fcnn_v16sf __attribute__((vector_size(64)));

/* The lanes of a vector at j that lie below n: all 16, or the partial last. */
static inline __mmask16 fcnn_tail_mask(long n, long j)
{
    return n - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - j)) - 1);
}

/* fcnn_expf on 16 floats whose upper clamp (89) the caller has applied or
 * knows to hold (softmax's x - max <= 0): FCNN_EXP_CORE on vectors, scaled by
 * 2^nf with vscalefps (one rounding, as fcnn_expf's two exact-then-rounding
 * multiplies): a third fewer instructions than the vectorised scalar code,
 * and the same bits. The lower clamp keeps NaN. */
static inline __m512 fcnn_expf_below89_v16(__m512 x)
{
    fcnn_v16sf v = (fcnn_v16sf)_mm512_max_ps(_mm512_set1_ps(-104.0f), x), t, nf, p;
    FCNN_EXP_CORE(v, t, nf, p);
    return _mm512_scalef_ps((__m512)p, (__m512)nf);
}

/* fcnn_expf on 16 floats. */
static inline __m512 fcnn_expf_v16(__m512 x)
{
    return fcnn_expf_below89_v16(_mm512_min_ps(_mm512_set1_ps(89.0f), x));   /* NaN kept */
}
#endif

/* expf whose results below 2^-126 come out as 0 instead of subnormal: for
 * exp(x) added to 1 or more (sigmoid, SiLU, tanh denominators), where that
 * changes nothing, and a quarter faster (one scaling, no subnormal split). */
static inline FCNN_SCALAR_MATH float fcnn_expf_ftz(float x)
{
    const float hi = 88.72283935546875f;
    const float lo = -87.33654475f;         /* exp(lo) = 2^-126 */
    float xc = x > hi ? hi : x;
    xc = xc < lo ? lo : xc;
    int32_t n;
    float y = fcnn_exp_core(xc, &n) * fcnn_pow2i(n);
    y = x > hi ? __builtin_inff() : y;
    return x < lo ? 0.0f : y;           /* NaN passes through the arithmetic */
}

/* expm1(x): a Taylor polynomial near 0 (where exp(x) - 1 would cancel),
 * exp(x) - 1 elsewhere. */
static inline FCNN_SCALAR_MATH float fcnn_expm1f(float x)
{
    float p = 1.0f / 40320;                 /* x^8 / 8! ... x^2 / 2! + x */
    FCNN_EXP_TAYLOR_TO_HALF(p, x);
    float small = (p * x) * x + x;
    float large = fcnn_expf(x) - 1.0f;
    return (x > -0.3f && x < 0.3f) ? small : large;
}

/* log's special values, for floats and doubles: log(0) = -inf, log(x < 0) =
 * NaN, log(inf) = inf, NaN gives NaN. */
#define FCNN_LOG_SPECIALS(x, y, inf, nan)                                         \
    do {                                                                         \
        y = (x) == 0 ? -(inf) : y;                                               \
        y = (x) < 0 ? (nan) : y;                                                 \
        y = (x) == (inf) ? (x) : y;                                              \
        y = (x) != (x) ? (x) : y;                                                \
    } while (0)

/* log(x) for x > 0 (Cephes logf: x = m * 2^e, m in [sqrt(1/2), sqrt(2)),
 * log(m) by a degree-8 polynomial). log(0) = -inf, log(x < 0) = NaN,
 * log(inf) = inf, NaN gives NaN. Subnormal x are scaled up first. */
static inline FCNN_SCALAR_MATH float fcnn_logf(float x)
{
    float xs = x < 1.17549435e-38f ? x * 16777216.0f : x;   /* 2^24 */
    int32_t bias = x < 1.17549435e-38f ? 24 : 0;
    int32_t bits;
    memcpy(&bits, &xs, sizeof bits);
    int32_t e = ((bits >> 23) & 0xff) - 126;
    int32_t mbits = (bits & 0x007fffff) | 0x3f000000;       /* m in [0.5, 1) */
    float m;
    memcpy(&m, &mbits, sizeof m);
    int small = m < 0.707106781186547524f;
    e = small ? e - 1 : e;
    m = small ? m + m - 1.0f : m - 1.0f;
    float z = m * m;
    float p = 7.0376836292E-2f;
    p = p * m - 1.1514610310E-1f;
    p = p * m + 1.1676998740E-1f;
    p = p * m - 1.2420140846E-1f;
    p = p * m + 1.4249322787E-1f;
    p = p * m - 1.6668057665E-1f;
    p = p * m + 2.0000714765E-1f;
    p = p * m - 2.4999993993E-1f;
    p = p * m + 3.3333331174E-1f;
    float ef = (float)(e - bias);
    float y = p * m * z;
    y = y + ef * -2.12194440e-4f;
    y = y - 0.5f * z;
    y = m + y + ef * 0.693359375f;
    FCNN_LOG_SPECIALS(x, y, __builtin_inff(), __builtin_nanf(""));
    return y;
}

/* log1p(x) = log(u) * x / (u - 1) with u = 1 + x (exact where u == 1), for
 * floats (fcnn_log1pf) and doubles (fcnn_log1p, below fcnn_log). */
#define FCNN_DEFINE_LOG1P(name, T, log_fn, inf)                                 \
    static inline FCNN_SCALAR_MATH T name(T x)                                   \
    {                                                                            \
        T u = (T)1 + x;                                                          \
        T d = u - (T)1;                                                          \
        T y = log_fn(u) * (x / (d == (T)0 ? (T)1 : d));                          \
        y = d == (T)0 ? x : y;                                                   \
        return x == (inf) ? x : y;                                               \
    }
FCNN_DEFINE_LOG1P(fcnn_log1pf, float, fcnn_logf, __builtin_inff())

/* tanh(x): Cephes tanhf's odd polynomial below 0.625, 1 - 2 / (exp(2|x|) + 1)
 * above (with the sign put back). */
static inline FCNN_SCALAR_MATH float fcnn_tanhf(float x)
{
    float ax = x < 0.0f ? -x : x;
    float z = x * x;
    float p = -5.70498872745E-3f;
    p = p * z + 2.06390887954E-2f;
    p = p * z - 5.37397155531E-2f;
    p = p * z + 1.33314422036E-1f;
    p = p * z - 3.33332819422E-1f;
    float small = x == 0.0f ? x : p * z * x + x;     /* -0 stays -0 */
    float big = 1.0f - 2.0f / (fcnn_expf_ftz(ax + ax) + 1.0f);
    big = x < 0.0f ? -big : big;
    return ax < 0.625f ? small : big;
}

/* log(x) for doubles, branch-free (vectorises): fdlibm's method, x = 2^k (1 +
 * f) with 1 + f in [sqrt(1/2), sqrt(2)), s = f / (2 + f), log(1 + f) = f -
 * f^2/2 + s (f^2/2 + R(s^2)) with fdlibm's degree-14 minimax R, k ln 2 in
 * two parts. Subnormal x scaled up first; log(0) = -inf, log(x < 0) = NaN,
 * log(inf) = inf, NaN gives NaN. */
static inline FCNN_SCALAR_MATH double fcnn_log(double x)
{
    int tiny = x < 2.2250738585072014e-308;
    double xs = tiny ? x * 18014398509481984.0 : x;           /* 2^54 */
    int64_t bits;
    memcpy(&bits, &xs, sizeof bits);
    int64_t k = ((bits >> 52) & 0x7ff) - 1023 - (tiny ? 54 : 0);
    int64_t mbits = (bits & 0x000fffffffffffffLL) | 0x3ff0000000000000LL;   /* m in [1, 2) */
    double m;
    memcpy(&m, &mbits, sizeof m);
    int big = m > 1.4142135623730951;
    k = big ? k + 1 : k;
    double f = (big ? 0.5 * m : m) - 1.0;
    double hfsq = 0.5 * f * f;
    double sv = f / (2.0 + f), z = sv * sv, w = z * z;
    double t1 = w * (3.999999999940941908e-01 + w * (2.222219843214978396e-01
                                                     + w * 1.531383769920937332e-01));
    double t2 = z * (6.666666666666735130e-01 + w * (2.857142874366239149e-01
                     + w * (1.818357216161805012e-01 + w * 1.479819860511658591e-01)));
    double kd = (double)k;
    double y = kd * 6.93147180369123816490e-01
               - ((hfsq - (sv * (hfsq + t2 + t1) + kd * 1.90821492927058770002e-10)) - f);
    FCNN_LOG_SPECIALS(x, y, __builtin_inf(), __builtin_nan(""));
    return y;
}

FCNN_DEFINE_LOG1P(fcnn_log1p, double, fcnn_log, __builtin_inf())

/* erf for doubles, branch-free (vectorises; libm's is a call per element):
 * fdlibm's pieces with its coefficients, every lane computing all of them and
 * keeping its own, the pieces' quotients sharing one division:
 *   |x| < 0.84375       x + x P(x^2) / Q(x^2)
 *   |x| < 1.25          erx + P(|x| - 1) / Q(|x| - 1)
 *   |x| < 6             1 - exp(-z^2 - 0.5625) exp((z - |x|)(z + |x|) + R(s) / S(s)) / |x|,
 *                       s = 1 / x^2, R/S from the set for below or above 1/0.35, z
 *                       |x| with its low 32 bits cleared (z^2 exact)
 *   beyond, 1 (the third piece, |x| clamped at 6, gives it); the sign of x put
 *   back, NaN passes through. */
static inline FCNN_SCALAR_MATH double fcnn_erf(double x)
{
    double a = __builtin_fabs(x);
    double ac = 6.0 < a ? 6.0 : a;                    /* NaN kept */
    double inv = 1.0 / ac, s = inv * inv, z = a * a, t = a - 1.0;
    double n1 = 1.28379167095512558561e-01 + z * (-3.25042107247001499370e-01 + z * (
                -2.84817495755985104766e-02 + z * (-5.77027029648944159157e-03
                + z * -2.37630166566501626084e-05)));
    double d1 = 1.0 + z * (3.97917223959155352819e-01 + z * (6.50222499887672944485e-02 + z * (
                5.08130628187576562776e-03 + z * (1.32494738004321644526e-04
                + z * -3.96022827877536812320e-06))));
    double n2 = -2.36211856075265944077e-03 + t * (4.14856118683748331666e-01 + t * (
                -3.72207876035701323847e-01 + t * (3.18346619901161753674e-01 + t * (
                -1.10894694282396677476e-01 + t * (3.54783043256182359371e-02
                + t * -2.16637559486879084300e-03)))));
    double d2 = 1.0 + t * (1.06420880400844228286e-01 + t * (5.40397917702171048937e-01 + t * (
                7.18286544141962662868e-02 + t * (1.26171219808761642112e-01 + t * (
                1.36370839120290507362e-02 + t * 1.19844998467991074170e-02)))));
    double ra = -9.86494403484714822705e-03 + s * (-6.93858572707181764372e-01 + s * (
                -1.05586262253232909814e+01 + s * (-6.23753324503260060396e+01 + s * (
                -1.62396669462573470355e+02 + s * (-1.84605092906711035994e+02 + s * (
                -8.12874355063065934246e+01 + s * -9.81432934416914548592e+00))))));
    double sa = 1.0 + s * (1.96512716674392571292e+01 + s * (1.37657754143519042600e+02 + s * (
                4.34565877475229228821e+02 + s * (6.45387271733267880336e+02 + s * (
                4.29008140027567833386e+02 + s * (1.08635005541779435134e+02 + s * (
                6.57024977031928170135e+00 + s * -6.04244152148580987438e-02)))))));
    double rb = -9.86494292470009928597e-03 + s * (-7.99283237680523006574e-01 + s * (
                -1.77579549177547519889e+01 + s * (-1.60636384855821916062e+02 + s * (
                -6.37566443368389627722e+02 + s * (-1.02509513161107724954e+03
                + s * -4.83519191608651397019e+02)))));
    double sb = 1.0 + s * (3.03380607434824582924e+01 + s * (3.25792512996573918826e+02 + s * (
                1.53672958608443695994e+03 + s * (3.19985821950859553908e+03 + s * (
                2.55305040643316442583e+03 + s * (4.74528541206955367215e+02
                + s * -2.24409524465858183362e+01))))));
    int first = a < 0.84375, second = a < 1.25, far = ac >= 2.857142857142857;   /* 1 / 0.35 */
    double num = first ? n1 : (second ? n2 : (far ? rb : ra));
    double den = first ? d1 : (second ? d2 : (far ? sb : sa));
    double q = num / den;
    int64_t bits;
    memcpy(&bits, &ac, sizeof bits);
    bits &= (int64_t)0xffffffff00000000ULL;
    double zt;
    memcpy(&zt, &bits, sizeof zt);
    double tail = 1.0 - fcnn_exp(-zt * zt - 0.5625) * fcnn_exp((zt - ac) * (zt + ac) + q) * inv;
    double y = first ? a + a * q : (second ? 8.45062911510467529297e-01 + q : tail);
    return __builtin_copysign(y, x);
}

/* erf(x) = x * P(x^2) / Q(x^2), a (5, 5) rational fitted (weighted least
 * squares, in double) to erf(x) / x on [0, 4]; |x| is clamped to 4, beyond
 * which erf rounds to +-1 in float32. Max relative error 3.8e-7 (about 3 ulp);
 * one division and no exp, so it vectorises cheaply. FCNN_ERF_PQ: P and Q
 * at z = x^2, for floats and for GCC vectors of them. */
#define FCNN_ERF_PQ(z, p, q)                                                     \
    do {                                                                         \
        p = z * 2.112663311e-06f + 2.826137804e-04f;                             \
        p = p * z + 3.569694956e-03f;                                            \
        p = p * z + 5.213927567e-02f;                                            \
        p = p * z + 1.855381578e-01f;                                            \
        p = p * z + 1.128379166e+00f;                                            \
        q = z * 3.862864452e-05f + 1.119309684e-03f;                             \
        q = q * z + 1.457073891e-02f;                                            \
        q = q * z + 1.121289100e-01f;                                            \
        q = q * z + 4.977621125e-01f;                                            \
        q = q * z + 1.0f;                                                        \
    } while (0)

static inline FCNN_SCALAR_MATH float fcnn_erff(float x)
{
    float xc = x > 4.0f ? 4.0f : x;
    xc = xc < -4.0f ? -4.0f : xc;
    float z = xc * xc, p, q;
    FCNN_ERF_PQ(z, p, q);
    float y = xc * p / q;
    y = y > 1.0f ? 1.0f : y;            /* the fit may overshoot 1 by an ulp near 4 */
    return y < -1.0f ? -1.0f : y;
}

/* erf on 16 floats (AVX-512): Q's division becomes a 14-bit reciprocal
 * estimate and one Newton step (vdivps would bound the loop; max relative
 * error of erf still 3.9e-7). */
#if defined(__AVX512F__)
static inline __m512 fcnn_erff_v16(__m512 x)
{
    __m512 xc = _mm512_min_ps(_mm512_set1_ps(4.0f), x);      /* NaN x stays NaN */
    xc = _mm512_max_ps(_mm512_set1_ps(-4.0f), xc);
    fcnn_v16sf z = (fcnn_v16sf)_mm512_mul_ps(xc, xc), p, q;
    FCNN_ERF_PQ(z, p, q);
    __m512 r = _mm512_rcp14_ps((__m512)q);
    r = _mm512_fmadd_ps(r, _mm512_fnmadd_ps((__m512)q, r, _mm512_set1_ps(1.0f)), r);
    __m512 y = _mm512_mul_ps(_mm512_mul_ps(xc, (__m512)p), r);
    y = _mm512_min_ps(_mm512_set1_ps(1.0f), y);
    return _mm512_max_ps(_mm512_set1_ps(-1.0f), y);
}

static inline __m512 fcnn_erf_or_gelu_v16(__m512 v, int gelu)
{
    if (!gelu)
        return fcnn_erff_v16(v);
    /* v / 2 * (1 + e) as one fused h + h * e: one operation fewer, and no
     * rounding of 1 + e where it cancels (v below -3) */
    __m512 e = fcnn_erff_v16(_mm512_mul_ps(v, _mm512_set1_ps(0.70710678118654752f)));
    __m512 h = _mm512_mul_ps(_mm512_set1_ps(0.5f), v);
    return _mm512_fmadd_ps(h, e, h);
}

/* 1 / (1 + exp(-v)), or v / (1 + exp(-v)) with silu: one true division (its
 * unit runs beside the FMAs of exp, so it costs no more than a reciprocal
 * estimate and a Newton step, and it is exact). Where exp(-v) overflows (v below -88.7)
 * the result is 1 / inf = 0 (SiLU -0). */
static inline __m512 fcnn_sigmoid_or_silu_v16(__m512 v, int silu)
{
    __m512 d = _mm512_add_ps(_mm512_set1_ps(1.0f), fcnn_expf_v16(_mm512_sub_ps(_mm512_setzero_ps(), v)));
    return _mm512_div_ps(silu ? v : _mm512_set1_ps(1.0f), d);
}

/* tanh(v) on 16 floats, fcnn_tanhf's two pieces: the odd polynomial below
 * 0.625, else 1 - 2 / (exp(2|v|) + 1) with the sign of v (a true division:
 * here it costs no more than an estimate and a Newton step; at most 1.36 ulp
 * over all floats). With gelu: v/2 * (1 + tanh(u)), u = sqrt(2/pi) (v +
 * 0.044715 v^3), as one fused h + h * tanh(u). */
static inline __m512 fcnn_tanh_or_gelu_v16(__m512 v, int gelu)
{
    __m512 x = v;
    if (gelu) {
        __m512 k3 = _mm512_mul_ps(_mm512_mul_ps(v, v), _mm512_set1_ps(0.044715f));
        x = _mm512_mul_ps(_mm512_set1_ps(0.7978845608028654f), _mm512_fmadd_ps(k3, v, v));
    }
    __m512 sign = _mm512_set1_ps(-0.0f);
    /* |x| clamped where tanh rounds to 1 (9.01), so exp(2|x|) + 1 stays
     * finite and exp needs no clamps (NaN kept) */
    __m512 ax = _mm512_min_ps(_mm512_set1_ps(9.1f), _mm512_andnot_ps(sign, x));
    fcnn_v16sf z = (fcnn_v16sf)_mm512_mul_ps(x, x), p, t2, nf, q;
    p = z * -5.70498872745E-3f + 2.06390887954E-2f;
    p = p * z - 5.37397155531E-2f;
    p = p * z + 1.33314422036E-1f;
    p = p * z - 3.33332819422E-1f;
    __m512 small = _mm512_fmadd_ps(_mm512_mul_ps((__m512)p, (__m512)z), x, x);
    /* exp(2|x|) = 2^nf exp(2r), |x| = nf ln2/2 + r: the doubling folded into
     * the reduction and into exp's polynomial (FCNN_EXP_POLY at 2r), and
     * ln2/2 as one float (its error, nf * 1e-9, is damped in 1 - 2 / (e + 1)
     * by the same 2^-nf: max error 1.356 ulp over all floats); two
     * operations fewer than reducing |x| and doubling afterwards */
    fcnn_v16sf a = (fcnn_v16sf)ax, r;
    t2 = a * 2.88539008177792681f + 12582912.0f;
    nf = t2 - 12582912.0f;
    r = a - nf * 0.346573590279972655f;
    FCNN_EXP_POLY(q, r, 2.0f);
    __m512 d = _mm512_add_ps(_mm512_set1_ps(1.0f), _mm512_scalef_ps((__m512)q, (__m512)nf));
    __m512 big = _mm512_sub_ps(_mm512_set1_ps(1.0f), _mm512_div_ps(_mm512_set1_ps(2.0f), d));
    __m512 t = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(ax, _mm512_set1_ps(0.625f), _CMP_LT_OQ),
                                    big, small);
    t = _mm512_or_ps(t, _mm512_and_ps(sign, x));    /* big's sign, and -0 for -0 */
    if (!gelu)
        return t;
    __m512 h = _mm512_mul_ps(_mm512_set1_ps(0.5f), v);
    return _mm512_fmadd_ps(h, t, h);
}

/* y[j] = f(x[j], arg) for a vector function f: four independent vectors per
 * step (each f is a long chain of dependent operations; interleaving them
 * keeps both FMA ports busy), the last partial vector masked, so every
 * element takes the same path and its result never depends on where it sits. */
static inline void fcnn_map_v16(const float *x, float *y, long n, __m512 (*f)(__m512, int),
                                int arg)
{
    long j = 0;
    for (; j + 64 <= n; j += 64) {
        __m512 r[4];
        _Pragma("GCC unroll 4")
        for (int u = 0; u < 4; u++)
            r[u] = f(_mm512_loadu_ps(x + j + 16 * u), arg);
        _Pragma("GCC unroll 4")
        for (int u = 0; u < 4; u++)
            _mm512_storeu_ps(y + j + 16 * u, r[u]);
    }
    for (; j < n; j += 16) {
        __mmask16 m = fcnn_tail_mask(n, j);
        _mm512_mask_storeu_ps(y + j, m, f(_mm512_maskz_loadu_ps(m, x + j), arg));
    }
}
#endif

/* The same functions on one float (builds without AVX-512). */
static inline FCNN_SCALAR_MATH float fcnn_erf_or_gelu(float v, int gelu)
{
    return gelu ? 0.5f * v * (1.0f + fcnn_erff(v * 0.70710678118654752f)) : fcnn_erff(v);
}

static inline FCNN_SCALAR_MATH float fcnn_sigmoid_or_silu(float v, int silu)
{
    float d = 1.0f + fcnn_expf_ftz(-v);
    return silu ? v / d : 1.0f / d;
}

static inline FCNN_SCALAR_MATH float fcnn_tanh_or_gelu(float v, int gelu)
{
    if (!gelu)
        return fcnn_tanhf(v);
    float h = 0.5f * v;
    return h + h * fcnn_tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v));
}

/* y[j] = f(x[j], arg): the vector function with AVX-512, else the scalar one. */
#if defined(__AVX512F__)
#define FCNN_MAP_F32(x, y, n, vector_f, scalar_f, arg) fcnn_map_v16(x, y, n, vector_f, arg)
#else
#define FCNN_MAP_F32(x, y, n, vector_f, scalar_f, arg)                           \
    do {                                                                         \
        for (long j_ = 0; j_ < (n); j_++)                                        \
            (y)[j_] = scalar_f((x)[j_], arg);                                    \
    } while (0)
#endif

/* y[j] = erf(x[j]), or with gelu y[j] = x[j] / 2 * (1 + erf(x[j] / sqrt 2)). */
static inline void fcnn_erf_f32(const float *x, float *y, long n, int gelu)
{
    FCNN_MAP_F32(x, y, n, fcnn_erf_or_gelu_v16, fcnn_erf_or_gelu, gelu);
}

/* y[j] = sigmoid(x[j]), or with silu y[j] = x[j] * sigmoid(x[j]). */
static inline void fcnn_sigmoid_f32(const float *x, float *y, long n, int silu)
{
    FCNN_MAP_F32(x, y, n, fcnn_sigmoid_or_silu_v16, fcnn_sigmoid_or_silu, silu);
}

/* y[j] = tanh(x[j]), or with gelu y[j] = GELU(x[j]) in its tanh form. */
static inline void fcnn_tanh_f32(const float *x, float *y, long n, int gelu)
{
    FCNN_MAP_F32(x, y, n, fcnn_tanh_or_gelu_v16, fcnn_tanh_or_gelu, gelu);
}

#endif

/* Branch-free float32 math that GCC vectorizes inside element loops.
 *
 * glibc offers vector expf only under -ffast-math, which fastcnn cannot use
 * (NaN must propagate). fcnn_expf follows the Cephes expf approach: range
 * reduction by ln 2, a degree-6 polynomial, and 2^n built in the exponent
 * bits (as two halves, so subnormal results are right). About 1 ulp from
 * expf over the whole range; NaN gives NaN, overflow +inf, underflow 0.
 */
#ifndef FASTCNN_VECMATH_H
#define FASTCNN_VECMATH_H

#include <stdint.h>
#include <string.h>

static inline float fcnn_pow2i(int32_t n)   /* 2^n for -126 <= n <= 127 */
{
    int32_t bits = (n + 127) << 23;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static inline float fcnn_expf(float x)
{
    const float hi = 88.72283935546875f;    /* largest x with finite expf */
    const float lo = -103.97208404541016f;  /* below this expf rounds to 0 */
    float xc = x > hi ? hi : x;
    xc = xc < lo ? lo : xc;
    /* n = round(x / ln 2) by the 1.5 * 2^23 trick: t's low bits hold n. */
    float t = xc * 1.44269504088896341f + 12582912.0f;
    float n = t - 12582912.0f;
    float r = xc - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500E-4f;
    p = p * r + 1.3981999507E-3f;
    p = p * r + 8.3334519073E-3f;
    p = p * r + 4.1665795894E-2f;
    p = p * r + 1.6666665459E-1f;
    p = p * r + 5.0000001201E-1f;
    p = p * r * r + r + 1.0f;
    int32_t tbits;
    memcpy(&tbits, &t, sizeof tbits);
    int32_t ni = tbits - 0x4B400000;
    int32_t n1 = ni >> 1;
    float y = p * fcnn_pow2i(n1) * fcnn_pow2i(ni - n1);
    y = x > hi ? __builtin_inff() : y;
    y = x < lo ? 0.0f : y;
    return x != x ? x : y;
}

#endif

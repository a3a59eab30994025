/* Vectorised reductions for the normalization statistics.
 *
 * `#pragma omp simd reduction` lets the compiler reassociate these sums into
 * vector lanes without -ffast-math elsewhere. The order of additions is
 * fixed by the compiled code (vector width and lane combination), so results
 * are the same for every thread count and every run.
 */
#ifndef FASTCNN_REDUCE_H
#define FASTCNN_REDUCE_H

/* sum(x), in double (bias gradients). */
static inline double fcnn_sum_f32(const float *x, long n)
{
    double s = 0.0;
#pragma omp simd reduction(+:s)
    for (long i = 0; i < n; i++)
        s += (double)x[i];
    return s;
}

static inline double fcnn_sum_f64(const double *x, long n)
{
    double s = 0.0;
#pragma omp simd reduction(+:s)
    for (long i = 0; i < n; i++)
        s += x[i];
    return s;
}

/* s[0] = sum(x - k), s[1] = sum((x - k)^2), in double. */
static inline void fcnn_shifted_sums_f32(const float *x, long n, double k, double *s)
{
    double s1 = 0.0, s2 = 0.0;
#pragma omp simd reduction(+:s1, s2)
    for (long i = 0; i < n; i++) {
        double d = (double)x[i] - k;
        s1 += d;
        s2 += d * d;
    }
    s[0] = s1;
    s[1] = s2;
}

static inline void fcnn_shifted_sums_f64(const double *x, long n, double k, double *s)
{
    double s1 = 0.0, s2 = 0.0;
#pragma omp simd reduction(+:s1, s2)
    for (long i = 0; i < n; i++) {
        double d = x[i] - k;
        s1 += d;
        s2 += d * d;
    }
    s[0] = s1;
    s[1] = s2;
}

/* The sums a normalization's backward needs over n values:
 * s[0] = sum(gy), s[1] = sum(gy * (x - mean)), in double. */
static inline void fcnn_grad_sums_f32(const float *x, const float *gy, long n, double mean,
                                      double *s)
{
    double s1 = 0.0, s2 = 0.0;
#pragma omp simd reduction(+:s1, s2)
    for (long i = 0; i < n; i++) {
        double g = (double)gy[i];
        s1 += g;
        s2 += g * ((double)x[i] - mean);
    }
    s[0] = s1;
    s[1] = s2;
}

static inline void fcnn_grad_sums_f64(const double *x, const double *gy, long n, double mean,
                                      double *s)
{
    double s1 = 0.0, s2 = 0.0;
#pragma omp simd reduction(+:s1, s2)
    for (long i = 0; i < n; i++) {
        s1 += gy[i];
        s2 += gy[i] * (x[i] - mean);
    }
    s[0] = s1;
    s[1] = s2;
}

/* 1 when no value is NaN or +-Inf: an integer OR over "exponent all ones",
 * which vectorises without any floating-point reassociation. */
static inline int fcnn_all_finite_f32(const float *x, long n)
{
    const unsigned int *u = (const unsigned int *)x;
    unsigned int bad = 0;
#pragma omp simd reduction(|:bad)
    for (long i = 0; i < n; i++)
        bad |= (unsigned int)((u[i] & 0x7f800000u) == 0x7f800000u);
    return bad == 0;
}

static inline int fcnn_all_finite_f64(const double *x, long n)
{
    const unsigned long long *u = (const unsigned long long *)x;
    unsigned long long bad = 0;
#pragma omp simd reduction(|:bad)
    for (long i = 0; i < n; i++)
        bad |= (unsigned long long)((u[i] & 0x7ff0000000000000ull) == 0x7ff0000000000000ull);
    return bad == 0;
}

#endif

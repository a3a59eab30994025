/* What the CPU and the operating system let fastcnn's kernels use: cpuid's
 * feature bits, and XCR0's record of which register state the OS saves on a
 * context switch (AVX needs the YMM state, AVX-512 the opmask and ZMM state;
 * a CPU with AVX-512 under an OS that does not save ZMM must not use it).
 * Built for the baseline target, so the probe itself runs on any x86-64 CPU. */
#ifndef FASTCNN_CPU_FEATURES_H
#define FASTCNN_CPU_FEATURES_H

#include <stdint.h>

enum {
    FCNN_CPU_SSE2, FCNN_CPU_SSE4_2, FCNN_CPU_POPCNT, FCNN_CPU_AVX, FCNN_CPU_AVX2,
    FCNN_CPU_FMA, FCNN_CPU_F16C, FCNN_CPU_BMI1, FCNN_CPU_BMI2, FCNN_CPU_LZCNT,
    FCNN_CPU_MOVBE, FCNN_CPU_OS_YMM, FCNN_CPU_AVX512F, FCNN_CPU_AVX512BW,
    FCNN_CPU_AVX512CD, FCNN_CPU_AVX512DQ, FCNN_CPU_AVX512VL, FCNN_CPU_OS_ZMM,
    FCNN_CPU_COUNT
};

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

static inline uint64_t fcnn_xgetbv0(void)
{
    uint32_t eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((uint64_t)edx << 32) | eax;
}

/* Sets has[FCNN_CPU_*] to 0 or 1; returns 1 (the probe ran). */
static inline int fcnn_cpu_probe(int *has)
{
    uint32_t a, b, c, d, max_leaf, max_ext;
    uint64_t xcr0 = 0;
    for (int i = 0; i < FCNN_CPU_COUNT; i++) has[i] = 0;
    max_leaf = __get_cpuid_max(0, 0);
    if (max_leaf < 1) return 1;
    __cpuid(1, a, b, c, d);
    has[FCNN_CPU_SSE2] = (d >> 26) & 1;
    has[FCNN_CPU_SSE4_2] = (c >> 20) & 1;
    has[FCNN_CPU_POPCNT] = (c >> 23) & 1;
    has[FCNN_CPU_FMA] = (c >> 12) & 1;
    has[FCNN_CPU_MOVBE] = (c >> 22) & 1;
    has[FCNN_CPU_AVX] = (c >> 28) & 1;
    has[FCNN_CPU_F16C] = (c >> 29) & 1;
    if ((c >> 27) & 1)                      /* OSXSAVE: xgetbv is available */
        xcr0 = fcnn_xgetbv0();
    has[FCNN_CPU_OS_YMM] = (xcr0 & 0x6) == 0x6;             /* SSE and AVX state */
    has[FCNN_CPU_OS_ZMM] = (xcr0 & 0xe6) == 0xe6;           /* + opmask, ZMM_Hi256, Hi16_ZMM */
    if (max_leaf >= 7) {
        __cpuid_count(7, 0, a, b, c, d);
        has[FCNN_CPU_BMI1] = (b >> 3) & 1;
        has[FCNN_CPU_AVX2] = (b >> 5) & 1;
        has[FCNN_CPU_BMI2] = (b >> 8) & 1;
        has[FCNN_CPU_AVX512F] = (b >> 16) & 1;
        has[FCNN_CPU_AVX512DQ] = (b >> 17) & 1;
        has[FCNN_CPU_AVX512CD] = (b >> 28) & 1;
        has[FCNN_CPU_AVX512BW] = (b >> 30) & 1;
        has[FCNN_CPU_AVX512VL] = (b >> 31) & 1;
    }
    max_ext = __get_cpuid_max(0x80000000u, 0);
    if (max_ext >= 0x80000001u) {
        __cpuid(0x80000001u, a, b, c, d);
        has[FCNN_CPU_LZCNT] = (c >> 5) & 1;
    }
    return 1;
}

/* Whether the CPU runs 512-bit multiply-adds on 256-bit units, one half after
 * the other (AMD family 19h: Zen 4; Zen 3, the same family, has no AVX-512):
 * there AVX-512 code multiplies no faster than AVX2 code. */
static inline int fcnn_cpu_avx512_on_256_bit_units(void)
{
    uint32_t a, b, c, d, family;
    if (__get_cpuid_max(0, 0) < 1)
        return 0;
    __cpuid(0, a, b, c, d);
    if (!(b == 0x68747541u && d == 0x69746e65u && c == 0x444d4163u))   /* AuthenticAMD */
        return 0;
    __cpuid(1, a, b, c, d);
    family = (a >> 8) & 0xf;
    if (family == 0xf)
        family += (a >> 20) & 0xff;
    return family == 0x19;
}
#else
static inline int fcnn_cpu_probe(int *has)
{
    for (int i = 0; i < FCNN_CPU_COUNT; i++) has[i] = 0;
    return 0;
}

static inline int fcnn_cpu_avx512_on_256_bit_units(void)
{
    return 0;
}
#endif

#endif

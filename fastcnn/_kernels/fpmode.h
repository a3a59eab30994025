/* Flush-to-zero / denormals-are-zero for the calling thread (x86 MXCSR). */
#ifndef FASTCNN_FPMODE_H
#define FASTCNN_FPMODE_H

#if defined(__SSE__) || defined(__x86_64__) || defined(_M_X64)
#include <xmmintrin.h>
#define FCNN_FTZ_DAZ 0x8040u      /* FTZ (bit 15) | DAZ (bit 6) */
static inline int fcnn_ftz_supported(void) { return 1; }
static inline void fcnn_set_ftz_daz(int on)
{
    unsigned int csr = _mm_getcsr();
    unsigned int want = on ? (csr | FCNN_FTZ_DAZ) : (csr & ~FCNN_FTZ_DAZ);
    if (want != csr)
        _mm_setcsr(want);
}
static inline int fcnn_get_ftz_daz(void) { return (_mm_getcsr() & FCNN_FTZ_DAZ) == FCNN_FTZ_DAZ; }
#else
static inline int fcnn_ftz_supported(void) { return 0; }
static inline void fcnn_set_ftz_daz(int on) { (void)on; }
static inline int fcnn_get_ftz_daz(void) { return 0; }
#endif

#endif

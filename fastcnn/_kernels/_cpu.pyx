"""The CPU feature probe (cpuid and XCR0), built for the baseline target so it
runs on any CPU; the loader in fastcnn/_kernels/__init__.py reads it to choose
the kernels' target."""

cdef extern from "cpu_features.h" nogil:
    enum:
        FCNN_CPU_COUNT
    int fcnn_cpu_probe(int* has)
    int fcnn_cpu_avx512_on_256_bit_units()

# Names in the order of cpu_features.h's enum (the names _isa.py's table uses).
FEATURE_NAMES = ("sse2", "sse4_2", "popcnt", "avx", "avx2", "fma", "f16c", "bmi1", "bmi2",
                 "lzcnt", "movbe", "os_ymm", "avx512f", "avx512bw", "avx512cd", "avx512dq",
                 "avx512vl", "os_zmm")
assert len(FEATURE_NAMES) == FCNN_CPU_COUNT


def features():
    """The features this CPU and OS provide, as a frozenset of names (empty
    where the architecture has no cpuid)."""
    cdef int has[FCNN_CPU_COUNT]
    if not fcnn_cpu_probe(has):
        return frozenset()
    return frozenset(name for i, name in enumerate(FEATURE_NAMES) if has[i])


def avx512_on_256_bit_units():
    """Whether this CPU runs AVX-512 multiply-adds on 256-bit units (AMD Zen
    4): AVX-512 code then multiplies at AVX2's rate (see _conv's dispatcher)."""
    return bool(fcnn_cpu_avx512_on_256_bit_units())

# Activations fused into kernel epilogues (conv, norm), and the element-wise kernels.
# Written so NaN passes through as IEEE says (comparisons with NaN are false).
from fastcnn._kernels._typedefs cimport floating, index_t

cdef enum:
    ACT_NONE = 0
    ACT_RELU = 1
    ACT_RELU6 = 2
    ACT_SILU = 3


cdef extern from "<math.h>" nogil:
    double exp(double)

cdef extern from "vecmath.h" nogil:
    float fcnn_expf(float)


cdef inline floating _exp(floating v) noexcept nogil:
    if floating is float:
        return fcnn_expf(v)
    else:
        return exp(v)


cdef inline void bias_activation(floating* row, index_t n, floating bias,
                                 bint has_bias, int act) noexcept nogil:
    """row[i] = act(row[i] + bias), one branch per call so each loop vectorizes."""
    cdef index_t i
    cdef floating v
    # typed constants: Cython writes bare literals as double, which would
    # force these loops into scalar double arithmetic
    cdef floating zero = 0, one = 1, six = 6
    if act == ACT_NONE:
        if has_bias:
            for i in range(n):
                row[i] = row[i] + bias
    elif act == ACT_RELU:
        for i in range(n):
            v = row[i] + bias
            row[i] = zero if v < zero else v
    elif act == ACT_RELU6:
        for i in range(n):
            v = row[i] + bias
            row[i] = zero if v < zero else (six if v > six else v)
    elif act == ACT_SILU:
        for i in range(n):
            v = row[i] + bias
            row[i] = v / (one + _exp(-v))

# Element-wise activations: one loop per op so each vectorises, written once
# over the fused float type. Both float32 and float64 use vecmath.h's
# branch-free functions (libm's are a call per element; sqrt is an
# instruction). Each follows PyTorch's CPU formula, and NaN passes
# through as IEEE says (comparisons with NaN are false). Used by the
# activation ops and, for the ops an epilogue can fuse, by conv and norm kernels.
from fastcnn._kernels._typedefs cimport floating, index_t

# The C-API's codes (values in fastcnn.h, the one place they are written),
# then codes only the Python API uses.
from fastcnn.kernels cimport (
    FCNN_ACT_NONE as ACT_NONE, FCNN_ACT_RELU as ACT_RELU, FCNN_ACT_RELU6 as ACT_RELU6,
    FCNN_ACT_SILU as ACT_SILU, FCNN_ACT_LEAKY_RELU as ACT_LEAKY_RELU, FCNN_ACT_ELU as ACT_ELU,
    FCNN_ACT_HARDTANH as ACT_HARDTANH, FCNN_ACT_SIGMOID as ACT_SIGMOID,
    FCNN_ACT_TANH as ACT_TANH, FCNN_ACT_HARDSWISH as ACT_HARDSWISH,
    FCNN_ACT_HARDSIGMOID as ACT_HARDSIGMOID, FCNN_ACT_GELU as ACT_GELU,
    FCNN_ACT_GELU_TANH as ACT_GELU_TANH, FCNN_ACT_MISH as ACT_MISH,
    FCNN_ACT_SOFTPLUS as ACT_SOFTPLUS, FCNN_ACT_FUSABLE_LAST as ACT_FUSABLE_LAST,
    FCNN_ACT_PUBLIC_LAST as ACT_PUBLIC_LAST)

# leaky_relu alpha: negative slope; elu alpha (SELU and CELU through
# EXPM1_SCALED); hardtanh alpha: min, beta: max; softplus alpha: beta, beta: threshold
cdef enum:
    ACT_EXPM1_SCALED = ACT_PUBLIC_LAST + 1  # x > 0 ? beta * x : alpha * expm1(x * gamma)
    ACT_ERF
    ACT_EXP
    ACT_LOG
    ACT_SQRT
    ACT_COUNT

cdef extern from "<math.h>" nogil:
    double sqrt(double)
    float sqrtf(float)

cdef extern from "vecmath.h" nogil:
    double fcnn_exp(double)
    double fcnn_expm1(double)
    double fcnn_tanh(double)
    double fcnn_log(double)
    double fcnn_log1p(double)
    double fcnn_erf(double)
    float fcnn_expf(float)
    float fcnn_expm1f(float)
    float fcnn_logf(float)
    float fcnn_log1pf(float)
    float fcnn_tanhf(float)
    float fcnn_erff(float)
    void fcnn_erf_f32(const float* x, float* y, long n, int gelu)
    void fcnn_sigmoid_f32(const float* x, float* y, long n, int silu)
    void fcnn_tanh_f32(const float* x, float* y, long n, int gelu)


cdef inline floating max_nan(floating m, floating v) noexcept nogil:
    """max(m, v) where NaN wins and sticks and ties keep m (PyTorch's rule for
    max pooling and softmax). `v if v > m else m` is exactly x86's max
    instruction (m when either is NaN); the second select lets a NaN v win:
    three vector operations, branch-free."""
    cdef floating t = v if v > m else m
    return v if v != v else t


cdef inline floating _exp(floating v) noexcept nogil:
    if floating is float:
        return fcnn_expf(v)
    else:
        return fcnn_exp(v)


cdef inline floating _expm1(floating v) noexcept nogil:
    if floating is float:
        return fcnn_expm1f(v)
    else:
        return fcnn_expm1(v)


cdef inline floating _log(floating v) noexcept nogil:
    if floating is float:
        return fcnn_logf(v)
    else:
        return fcnn_log(v)


cdef inline floating _log1p(floating v) noexcept nogil:
    if floating is float:
        return fcnn_log1pf(v)
    else:
        return fcnn_log1p(v)


cdef inline floating _tanh(floating v) noexcept nogil:
    if floating is float:
        return fcnn_tanhf(v)
    else:
        return fcnn_tanh(v)


cdef inline floating _sqrt(floating v) noexcept nogil:
    if floating is float:
        return sqrtf(v)
    else:
        return sqrt(v)


cdef inline void activate(const floating* x, floating* y, index_t n, int act,
                          double alpha, double beta, double gamma) noexcept nogil:
    """y[i] = act(x[i]); y may be x (in place)."""
    cdef index_t i
    cdef floating v, t
    # Typed constants: Cython writes bare literals as double, which would
    # force these loops into scalar double arithmetic.
    cdef floating zero = 0, one = 1, two = 2, three = 3, six = 6, half = 0.5
    cdef floating a = <floating>alpha, b = <floating>beta, c = <floating>gamma
    cdef floating sqrt_half = <floating>0.70710678118654752440
    cdef floating sqrt_2_over_pi = <floating>0.79788456080286535588
    cdef floating gelu_k = <floating>0.044715
    if act == ACT_NONE:
        if x != y:
            for i in range(n):
                y[i] = x[i]
    elif act == ACT_RELU:
        for i in range(n):
            v = x[i]
            y[i] = zero if v < zero else v
    elif act == ACT_RELU6:
        for i in range(n):
            v = x[i]
            y[i] = zero if v < zero else (six if v > six else v)
    elif act == ACT_SILU:
        if floating is float:
            fcnn_sigmoid_f32(x, y, n, 1)
        else:
            for i in range(n):
                v = x[i]
                y[i] = v / (one + _exp(-v))
    elif act == ACT_LEAKY_RELU:
        for i in range(n):
            v = x[i]
            y[i] = v if v > zero else v * a
    elif act == ACT_ELU:
        for i in range(n):
            v = x[i]
            y[i] = v if v > zero else a * _expm1(v)
    elif act == ACT_EXPM1_SCALED:
        for i in range(n):
            v = x[i]
            y[i] = b * v if v > zero else a * _expm1(v * c)
    elif act == ACT_HARDTANH:
        for i in range(n):
            v = x[i]
            y[i] = a if v < a else (b if v > b else v)
    elif act == ACT_SIGMOID:
        if floating is float:
            fcnn_sigmoid_f32(x, y, n, 0)
        else:
            for i in range(n):
                y[i] = one / (one + _exp(-x[i]))
    elif act == ACT_TANH:
        if floating is float:
            fcnn_tanh_f32(x, y, n, 0)
        else:
            for i in range(n):
                y[i] = _tanh(x[i])
    elif act == ACT_HARDSWISH:
        for i in range(n):
            v = x[i]
            t = v + three
            t = zero if t < zero else (six if t > six else t)
            y[i] = v * t / six
    elif act == ACT_HARDSIGMOID:
        for i in range(n):
            t = x[i] + three
            t = zero if t < zero else (six if t > six else t)
            y[i] = t / six
    elif act == ACT_GELU:
        if floating is float:
            fcnn_erf_f32(x, y, n, 1)
        else:
            for i in range(n):
                v = x[i]
                # fcnn_erf called directly: through a wrapper GCC would not
                # inline it into this loop (too large), and the loop stayed scalar
                y[i] = half * v * (one + fcnn_erf(v * sqrt_half))
    elif act == ACT_GELU_TANH:
        if floating is float:
            fcnn_tanh_f32(x, y, n, 1)
        else:
            for i in range(n):
                v = x[i]
                y[i] = half * v * (one + _tanh(sqrt_2_over_pi * (v + gelu_k * v * v * v)))
    elif act == ACT_MISH:
        for i in range(n):
            v = x[i]
            y[i] = v * _tanh(_log1p(_exp(v)))
    elif act == ACT_SOFTPLUS:
        for i in range(n):
            # both sides computed, then a select: GCC will not if-convert the
            # branch form, and the scalar loop was 10x slower
            v = x[i]
            t = _log1p(_exp(v * a)) / a
            y[i] = v if v * a > b else t
    elif act == ACT_ERF:
        if floating is float:
            fcnn_erf_f32(x, y, n, 0)
        else:
            for i in range(n):
                y[i] = fcnn_erf(x[i])
    elif act == ACT_EXP:
        for i in range(n):
            y[i] = _exp(x[i])
    elif act == ACT_LOG:
        for i in range(n):
            y[i] = _log(x[i])
    elif act == ACT_SQRT:
        for i in range(n):
            y[i] = _sqrt(x[i])


cdef inline void store_bias_residual_activation(const floating* src, floating* dst,
                                                index_t n, floating bias, bint has_bias,
                                                const floating* res, int act) noexcept nogil:
    """dst[i] = act((src[i] + bias) + res[i]) (res NULL: none; no bias: no
    add) for the activations an epilogue fuses; one loop per case so each
    vectorises. dst may be src (in place, the forms below). An epilogue
    moving a tile's rows into place passes the tile as src: one pass, and no
    load reads back the narrower stores just made (which the CPU cannot
    forward)."""
    cdef index_t i
    cdef floating v
    cdef floating zero = 0, six = 6
    if res != NULL:
        if has_bias:
            for i in range(n):
                dst[i] = (src[i] + bias) + res[i]
        else:
            for i in range(n):
                dst[i] = src[i] + res[i]
        if act != ACT_NONE:
            activate(dst, dst, n, act, 0, 0, 0)
    elif act == ACT_RELU and has_bias:
        for i in range(n):
            v = src[i] + bias
            dst[i] = zero if v < zero else v
    elif act == ACT_RELU:
        for i in range(n):
            v = src[i]
            dst[i] = zero if v < zero else v
    elif act == ACT_RELU6 and has_bias:
        for i in range(n):
            v = src[i] + bias
            dst[i] = zero if v < zero else (six if v > six else v)
    elif act == ACT_RELU6:
        for i in range(n):
            v = src[i]
            dst[i] = zero if v < zero else (six if v > six else v)
    elif has_bias:
        for i in range(n):
            dst[i] = src[i] + bias
        if act != ACT_NONE:
            activate(dst, dst, n, act, 0, 0, 0)
    else:
        activate(src, dst, n, act, 0, 0, 0)         # none: a copy unless in place


cdef inline void bias_residual_activation(floating* row, index_t n, floating bias,
                                          bint has_bias, const floating* res,
                                          int act) noexcept nogil:
    """row[i] = act((row[i] + bias) + res[i]) in place: a layer's epilogue
    with a residual connection added (res NULL: none)."""
    store_bias_residual_activation(row, row, n, bias, has_bias, res, act)


cdef inline void bias_activation(floating* row, index_t n, floating bias,
                                 bint has_bias, int act) noexcept nogil:
    """row[i] = act(row[i] + bias) in place (relu, relu6, silu)."""
    store_bias_residual_activation(row, row, n, bias, has_bias, NULL, act)

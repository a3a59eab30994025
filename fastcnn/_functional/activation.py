"""Activations, PReLU, softmax and log_softmax, as torch.nn.functional.

Activations run in place with inplace=True where PyTorch's take it, and
all with out=input. A non-contiguous input is computed into a contiguous
buffer and copied back.
"""
import math
import warnings

import numpy as np

from fastcnn import _threads
from fastcnn import _kernels
from fastcnn._graph import traceable
from fastcnn._validation import as_array, check_float, check_out, contiguous, shape_str

__all__ = ["relu", "relu_", "relu6", "leaky_relu", "leaky_relu_", "elu", "elu_", "selu", "celu",
           "hardtanh", "hardtanh_", "sigmoid", "tanh", "silu", "hardswish", "hardsigmoid",
           "gelu", "mish", "softplus", "prelu", "softmax", "log_softmax", "softmin"]

# The kernels' codes (fastcnn.h and _kernels/_activation.pxd hold the values)
_CODES = _kernels._act.CODES
RELU, RELU6, SILU, LEAKY_RELU, ELU, HARDTANH, SIGMOID, TANH = (
    _CODES[n] for n in ("relu", "relu6", "silu", "leaky_relu", "elu", "hardtanh", "sigmoid",
                        "tanh"))
HARDSWISH, HARDSIGMOID, GELU, GELU_TANH, MISH, SOFTPLUS, EXPM1_SCALED = (
    _CODES[n] for n in ("hardswish", "hardsigmoid", "gelu", "gelu_tanh", "mish", "softplus",
                        "expm1_scaled"))
ERF, EXP, LOG, SQRT = (_CODES[n] for n in ("erf", "exp", "log", "sqrt"))

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def _same_memory(a, b):
    """a and b are the same array through different objects (in-place)."""
    return isinstance(a, np.ndarray) and _kernels._act.same_buffer(a, b)


def apply(op, code, input, inplace=False, out=None, alpha=0.0, beta=0.0, gamma=0.0):
    """Run element-wise op `code` on input: in place, into out, or into a new array."""
    x = as_array(input, op)
    check_float(x, op)
    nthreads = _threads.get_num_threads()
    if inplace or (out is not None and (out is x or _same_memory(out, x))):
        if not isinstance(input, np.ndarray):
            raise TypeError(f"{op}: inplace needs a numpy.ndarray input, got {type(input).__name__}")
        if not x.flags.writeable:
            raise ValueError(f"{op}: inplace on a read-only array")
        if x.flags.c_contiguous and x.flags.aligned and x.dtype.isnative:
            _kernels._act.elementwise(code, x, x, alpha, beta, gamma, nthreads)
        else:
            buf = np.ascontiguousarray(x, dtype=x.dtype.newbyteorder("="))
            _kernels._act.elementwise(code, buf, buf, alpha, beta, gamma, nthreads)
            x[...] = buf
        return x
    if out is not None:
        y = check_out(out, x.shape, x.dtype, op, (x,))
    else:
        y = np.empty(x.shape, x.dtype)
    _kernels._act.elementwise(code, contiguous(x), y, alpha, beta, gamma, nthreads)
    return y


@traceable("relu")
def relu(input, inplace=False, *, out=None):
    """max(x, 0); NaN stays NaN."""
    return apply("relu", RELU, input, inplace, out)


@traceable("relu_")
def relu_(input):
    return relu(input, inplace=True)


@traceable("relu6")
def relu6(input, inplace=False, *, out=None):
    """min(max(x, 0), 6)."""
    return apply("relu6", RELU6, input, inplace, out)


@traceable("leaky_relu")
def leaky_relu(input, negative_slope=0.01, inplace=False, *, out=None):
    """x if x > 0 else negative_slope * x."""
    return apply("leaky_relu", LEAKY_RELU, input, inplace, out, float(negative_slope))


@traceable("leaky_relu_")
def leaky_relu_(input, negative_slope=0.01):
    return leaky_relu(input, negative_slope, inplace=True)


@traceable("elu")
def elu(input, alpha=1.0, inplace=False, *, out=None):
    """x if x > 0 else alpha * (exp(x) - 1), computed with expm1 as PyTorch."""
    return apply("elu", ELU, input, inplace, out, float(alpha))


@traceable("elu_")
def elu_(input, alpha=1.0):
    return elu(input, alpha, inplace=True)


@traceable("selu")
def selu(input, inplace=False, *, out=None):
    """scale * (x if x > 0 else alpha * (exp(x) - 1)), PyTorch's constants."""
    return apply("selu", EXPM1_SCALED, input, inplace, out, SELU_ALPHA * SELU_SCALE,
                 SELU_SCALE, 1.0)


@traceable("celu")
def celu(input, alpha=1.0, inplace=False, *, out=None):
    """x if x > 0 else alpha * (exp(x / alpha) - 1)."""
    alpha = float(alpha)
    if alpha == 0:
        raise ValueError("celu: alpha must be non-zero")
    return apply("celu", EXPM1_SCALED, input, inplace, out, alpha, 1.0, 1.0 / alpha)


@traceable("hardtanh")
def hardtanh(input, min_val=-1.0, max_val=1.0, inplace=False, *, out=None):
    """Clamp to [min_val, max_val]; a NaN bound gives NaN everywhere, as PyTorch."""
    if min_val > max_val:
        raise ValueError(f"hardtanh: min_val ({min_val}) cannot be greater than max_val ({max_val})")
    y = apply("hardtanh", HARDTANH, input, inplace, out, float(min_val), float(max_val))
    if math.isnan(min_val) or math.isnan(max_val):
        y[...] = np.nan
    return y


@traceable("hardtanh_")
def hardtanh_(input, min_val=-1.0, max_val=1.0):
    return hardtanh(input, min_val, max_val, inplace=True)


@traceable("sigmoid")
def sigmoid(input, *, out=None):
    return apply("sigmoid", SIGMOID, input, False, out)


@traceable("tanh")
def tanh(input, *, out=None):
    return apply("tanh", TANH, input, False, out)


@traceable("silu")
def silu(input, inplace=False, *, out=None):
    """x * sigmoid(x)."""
    return apply("silu", SILU, input, inplace, out)


@traceable("hardswish")
def hardswish(input, inplace=False, *, out=None):
    """x * relu6(x + 3) / 6."""
    return apply("hardswish", HARDSWISH, input, inplace, out)


@traceable("hardsigmoid")
def hardsigmoid(input, inplace=False, *, out=None):
    """relu6(x + 3) / 6."""
    return apply("hardsigmoid", HARDSIGMOID, input, inplace, out)


@traceable("gelu")
def gelu(input, approximate="none", *, out=None):
    """x * Phi(x) with erf ('none') or PyTorch's tanh approximation ('tanh')."""
    if approximate == "none":
        return apply("gelu", GELU, input, False, out)
    if approximate == "tanh":
        return apply("gelu", GELU_TANH, input, False, out)
    raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")


@traceable("mish")
def mish(input, inplace=False, *, out=None):
    """x * tanh(softplus(x))."""
    return apply("mish", MISH, input, inplace, out)


@traceable("softplus")
def softplus(input, beta=1.0, threshold=20.0, *, out=None):
    """log(1 + exp(beta * x)) / beta, and x where beta * x > threshold."""
    beta = float(beta)
    if beta == 0:
        raise ValueError("softplus: beta must be non-zero")
    return apply("softplus", SOFTPLUS, input, False, out, beta, float(threshold))


@traceable("prelu")
def prelu(input, weight, *, out=None):
    """x if x > 0 else weight[c] * x, with one slope per channel (dim 1) or one shared."""
    op = "prelu"
    x = as_array(input, op)
    w = as_array(weight, op, "weight")
    check_float(x, op)
    if w.dtype != x.dtype:
        raise TypeError(f"{op}: weight dtype {w.dtype} does not match input dtype {x.dtype}")
    if w.ndim > 1:
        raise ValueError(f"{op}: expected weight to be a scalar or 1-D array, got shape "
                         f"{shape_str(w.shape)}")
    w = contiguous(w.reshape(-1))
    channels = x.shape[1] if x.ndim >= 2 else 1
    if w.size not in (1, channels):
        raise ValueError(f"{op}: weight must have 1 or {channels} elements (the input's "
                         f"channels), got shape {shape_str(np.shape(weight))}")
    if out is not None:
        y = check_out(out, x.shape, x.dtype, op, (x,)) if out is not x else x
    else:
        y = np.empty(x.shape, x.dtype)
    if x.ndim >= 2:
        planes = x.shape[0] * channels
        inner = math.prod(x.shape[2:])
    else:
        planes, inner = 1, x.size
    xc = contiguous(x)
    target = y if y.flags.c_contiguous else np.empty(x.shape, x.dtype)
    _kernels._act.prelu(xc, w, target, planes, channels if w.size > 1 else 1, inner,
               _threads.get_num_threads())
    if target is not y:
        y[...] = target
    return y


def softmax_dim(ndim, dim, op):
    if dim is None:
        warnings.warn(f"Implicit dimension choice for {op} has been deprecated. Change the call "
                      f"to include dim=X as an argument.", stacklevel=4)
        return 0 if ndim in (0, 1, 3) else 1
    try:
        dim = int(dim)
    except (TypeError, ValueError):
        raise TypeError(f"{op}: dim must be an int, got {dim!r}") from None
    lo, hi = (-1, 0) if ndim == 0 else (-ndim, ndim - 1)
    if not lo <= dim <= hi:
        raise ValueError(f"{op}: dim {dim} is out of range for an input with {ndim} "
                         f"dimension(s) (expected to be in range of [{lo}, {hi}])")
    return dim % max(ndim, 1)


def _softmax(op, input, dim, dtype, log, out):
    x = as_array(input, op)
    if dtype is not None:
        x = x.astype(dtype)
    check_float(x, op)
    dim = softmax_dim(x.ndim, dim, op)
    shape = x.shape
    if x.ndim == 0:
        outer, n, inner = 1, 1, 1
    else:
        outer, n, inner = math.prod(shape[:dim]), shape[dim], math.prod(shape[dim + 1:])
    if out is not None:
        y = check_out(out, shape, x.dtype, op, (x,))
    else:
        y = np.empty(shape, x.dtype)
    _kernels._act.softmax(contiguous(x), y, outer, n, inner, log, _threads.get_num_threads())
    return y


@traceable("softmax")
def softmax(input, dim=None, _stacklevel=3, dtype=None, *, out=None):
    """exp(x - max) / sum(exp(x - max)) along dim (max-subtracted, so stable)."""
    return _softmax("softmax", input, dim, dtype, False, out)


@traceable("log_softmax")
def log_softmax(input, dim=None, _stacklevel=3, dtype=None, *, out=None):
    """x - max - log(sum(exp(x - max))) along dim."""
    return _softmax("log_softmax", input, dim, dtype, True, out)


@traceable("softmin")
def softmin(input, dim=None, _stacklevel=3, dtype=None, *, out=None):
    """softmax(-x) along dim."""
    x = as_array(input, "softmin")
    if dtype is not None:
        x = x.astype(dtype)
    check_float(x, "softmin")
    return _softmax("softmin", -x, dim, None, False, out)

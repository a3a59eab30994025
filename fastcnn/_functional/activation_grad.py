"""Gradients of the activations, softmax / log_softmax and linear, and the
sum of two gradients of one tensor."""
import math

import numpy as np

from fastcnn import _kernels
from fastcnn import _threads
from fastcnn._functional import activation as _act
from fastcnn._validation import as_array, check_float, contiguous

__all__ = ["activation_grad", "softmax_grad", "linear_grad", "sum_grads", "ACTIVATIONS"]

# op -> (kernel code, what the derivative reads: "x" input, "y" output, "xy" both,
# the parameters (alpha, beta, gamma) from the call's arguments)
ACTIVATIONS = {
    "relu": (_act.RELU, "y", lambda a: (0, 0, 0)),
    "relu_": (_act.RELU, "y", lambda a: (0, 0, 0)),
    "relu6": (_act.RELU6, "x", lambda a: (0, 0, 0)),
    "leaky_relu": (_act.LEAKY_RELU, "x", lambda a: (a.get("negative_slope", 0.01), 0, 0)),
    "leaky_relu_": (_act.LEAKY_RELU, "x", lambda a: (a.get("negative_slope", 0.01), 0, 0)),
    "elu": (_act.ELU, "xy", lambda a: (a.get("alpha", 1.0), 0, 0)),
    "elu_": (_act.ELU, "xy", lambda a: (a.get("alpha", 1.0), 0, 0)),
    "selu": (_act.EXPM1_SCALED, "x",
             lambda a: (_act.SELU_ALPHA * _act.SELU_SCALE, _act.SELU_SCALE, 1.0)),
    "celu": (_act.EXPM1_SCALED, "x",
             lambda a: (a.get("alpha", 1.0), 1.0, 1.0 / a.get("alpha", 1.0))),
    "hardtanh": (_act.HARDTANH, "x", lambda a: (a.get("min_val", -1.0), a.get("max_val", 1.0), 0)),
    "hardtanh_": (_act.HARDTANH, "x", lambda a: (a.get("min_val", -1.0), a.get("max_val", 1.0), 0)),
    "sigmoid": (_act.SIGMOID, "y", lambda a: (0, 0, 0)),
    "tanh": (_act.TANH, "y", lambda a: (0, 0, 0)),
    "silu": (_act.SILU, "x", lambda a: (0, 0, 0)),
    "hardswish": (_act.HARDSWISH, "x", lambda a: (0, 0, 0)),
    "hardsigmoid": (_act.HARDSIGMOID, "x", lambda a: (0, 0, 0)),
    "gelu": (None, "x", lambda a: (0, 0, 0)),          # code from `approximate`
    "mish": (_act.MISH, "x", lambda a: (0, 0, 0)),
    "softplus": (_act.SOFTPLUS, "x", lambda a: (a.get("beta", 1.0), a.get("threshold", 20.0), 0)),
}


def activation_grad(op, grad_output, input=None, output=None, **params):
    """The gradient of activation `op` (a name of ACTIVATIONS, e.g. "relu",
    "gelu") at input x with output y = op(x): grad_output * op'(x). Pass
    what the derivative reads (ACTIVATIONS[op][1]: input, output or both)
    and the op's own keyword arguments (negative_slope=, alpha=, approximate=...)."""
    if op not in ACTIVATIONS:
        raise ValueError(f"activation_grad: unknown activation {op!r}; one of "
                         f"{sorted(ACTIVATIONS)}")
    code, reads, parameters = ACTIVATIONS[op]
    if op == "gelu":
        code = _act.GELU_TANH if params.get("approximate", "none") == "tanh" else _act.GELU
    gy = as_array(grad_output, op, "grad_output")
    check_float(gy, op)
    arrays = []
    for name, value, needed in (("input", input, "x" in reads), ("output", output, "y" in reads)):
        if not needed:
            arrays.append(None)
            continue
        if value is None:
            raise ValueError(f"activation_grad: the gradient of {op} needs its {name}")
        a = as_array(value, op, name)
        if a.shape != gy.shape or a.dtype != gy.dtype:
            raise ValueError(f"activation_grad: {op}'s {name} must match grad_output "
                             f"({gy.shape}, {gy.dtype}), got ({a.shape}, {a.dtype})")
        arrays.append(contiguous(a))
    alpha, beta, gamma = parameters(params)
    gx = np.empty(gy.shape, gy.dtype)
    _kernels._grad.activation_backward(code, arrays[0], arrays[1], contiguous(gy), gx,
                                       float(alpha), float(beta), float(gamma),
                                       _threads.get_num_threads())
    return gx


def softmax_grad(grad_output, output, dim, log=False):
    """The gradient of softmax (log_softmax with log=True) along dim, from its output."""
    op = "log_softmax_grad" if log else "softmax_grad"
    y = as_array(output, op, "output")
    gy = as_array(grad_output, op, "grad_output")
    check_float(y, op)
    if gy.shape != y.shape:
        raise ValueError(f"{op}: grad_output must have the output's shape {y.shape}, got "
                         f"{gy.shape}")
    gy = gy.astype(y.dtype, copy=False)
    dim = _act.softmax_dim(y.ndim, dim, op)
    shape = y.shape
    outer, n, inner = (1, 1, 1) if y.ndim == 0 else (
        math.prod(shape[:dim]), shape[dim], math.prod(shape[dim + 1:]))
    gx = np.empty(shape, y.dtype)
    if gx.size:
        _kernels._grad.softmax_backward(contiguous(y), contiguous(gy), gx, outer, n, inner, log,
                                        _threads.get_num_threads())
    return gx


def linear_grad(input, weight, grad_output, want_input=True, want_weight=True, want_bias=True):
    """(grad input, grad weight, grad bias) of linear(input, weight, bias);
    None for what is not wanted. Two GEMMs on fastcnn's threads."""
    x = as_array(input, "linear_grad", "input")
    w = as_array(weight, "linear_grad", "weight")
    gy = as_array(grad_output, "linear_grad", "grad_output")
    out_features, in_features = w.shape
    if gy.shape != x.shape[:-1] + (out_features,):
        raise ValueError(f"linear_grad: grad_output must have shape "
                         f"{x.shape[:-1] + (out_features,)}, got {gy.shape}")
    threads = _threads.get_num_threads()
    g2 = contiguous(gy).reshape(-1, out_features)
    x2 = contiguous(x).reshape(-1, in_features)
    gx = gw = gb = None
    if want_input:
        gx = np.empty((g2.shape[0], in_features), gy.dtype)
        _kernels._linear.linear(g2, np.ascontiguousarray(w.T), None, gx, 0, threads)
        gx = gx.reshape(x.shape)
    if want_weight:
        gw = np.empty((out_features, in_features), gy.dtype)
        _kernels._linear.linear(np.ascontiguousarray(g2.T), np.ascontiguousarray(x2.T), None, gw,
                                0, threads)
    if want_bias:
        sums = np.empty(out_features, np.float64)
        _kernels._grad.channel_sums(g2, sums, g2.shape[0], out_features, 1, threads)
        gb = sums.astype(gy.dtype)
    return gx, gw, gb


def sum_grads(a, b):
    """a + b, two gradients of one tensor (a residual's input gets one from
    each branch): on every thread where both are C-contiguous float arrays of
    one shape and dtype, else NumPy's (broadcasting) sum."""
    if (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.shape == b.shape
            and a.dtype == b.dtype and a.dtype in (np.float32, np.float64)
            and a.flags.c_contiguous and b.flags.c_contiguous):
        out = np.empty(a.shape, a.dtype)
        _kernels._act.add(a, b, out, _threads.get_num_threads())
        return out
    return a + b

"""Gradients of batch, instance, group and layer normalization: grad input,
weight (gamma) and bias (beta) in one kernel pass (statistics recomputed
from the input in double)."""
import math

import numpy as np

from fastcnn import _kernels
from fastcnn import _threads
from fastcnn._validation import as_array, check_float, contiguous

__all__ = ["batch_norm_grad", "group_norm_grad", "layer_norm_grad", "instance_norm_grad"]


def _operands(op, input, grad_output):
    x = as_array(input, op, "input")
    gy = as_array(grad_output, op, "grad_output")
    check_float(x, op)
    if gy.shape != x.shape:
        raise ValueError(f"{op}: grad_output must have the input's shape {x.shape}, got {gy.shape}")
    return contiguous(x), contiguous(gy.astype(x.dtype, copy=False))


def _weight(weight, size, dtype):
    return None if weight is None else contiguous(np.asarray(weight, dtype).reshape(size))


def batch_norm_grad(input, grad_output, weight=None, running_mean=None, running_var=None,
                    training=True, eps=1e-5, want_input=True):
    """(grad input, grad weight, grad bias) of batch_norm: with the batch's
    statistics when training, else with running_mean / running_var."""
    op = "batch_norm_grad"
    x, gy = _operands(op, input, grad_output)
    if x.ndim < 2:
        raise ValueError(f"{op}: expected (N, C, ...) input, got shape {x.shape}")
    n, c = x.shape[:2]
    inner = math.prod(x.shape[2:])
    mean = invstd = None
    if not training:
        mean = np.ascontiguousarray(running_mean, np.float64)
        invstd = 1.0 / np.sqrt(np.asarray(running_var, np.float64) + eps)
    gx = np.empty(x.shape, x.dtype) if want_input else None
    gw, gb = np.zeros(c), np.zeros(c)
    if x.size:
        _kernels._grad.batch_norm_backward(x, gy, gx, _weight(weight, c, x.dtype), mean, invstd,
                                           float(eps), bool(training), gw, gb, n, c, inner,
                                           _threads.get_num_threads())
    return gx, gw.astype(x.dtype), gb.astype(x.dtype)


def _rows(op, x, gy, weight, eps, rows, groups, row_channels, inner, want_input):
    gx = np.empty(x.shape, x.dtype) if want_input else None
    pdy = np.zeros((rows, row_channels))
    pdyx = np.zeros((rows, row_channels))
    if x.size:
        _kernels._grad.rows_norm_backward(x, gy, gx, weight, float(eps), rows, groups,
                                          row_channels, inner, pdy, pdyx,
                                          _threads.get_num_threads())
    return gx, pdy, pdyx


def group_norm_grad(input, grad_output, num_groups, weight=None, eps=1e-5, want_input=True):
    """(grad input, grad weight, grad bias) of group_norm."""
    op = "group_norm_grad"
    x, gy = _operands(op, input, grad_output)
    n, c = x.shape[:2]
    per = c // num_groups
    gx, pdy, pdyx = _rows(op, x, gy, _weight(weight, c, x.dtype), eps, n * num_groups,
                          num_groups, per, math.prod(x.shape[2:]), want_input)
    return (gx, pdyx.reshape(n, c).sum(0).astype(x.dtype),
            pdy.reshape(n, c).sum(0).astype(x.dtype))


def instance_norm_grad(input, grad_output, weight=None, eps=1e-5, want_input=True):
    """(grad input, grad weight, grad bias) of instance_norm with the input's statistics."""
    op = "instance_norm_grad"
    x, gy = _operands(op, input, grad_output)
    n, c = x.shape[:2]
    gx, pdy, pdyx = _rows(op, x, gy, _weight(weight, c, x.dtype), eps, n * c, c, 1,
                          math.prod(x.shape[2:]), want_input)
    return (gx, pdyx.reshape(n, c).sum(0).astype(x.dtype),
            pdy.reshape(n, c).sum(0).astype(x.dtype))


def layer_norm_grad(input, grad_output, normalized_shape, weight=None, eps=1e-5,
                    want_input=True):
    """(grad input, grad weight, grad bias) of layer_norm over the trailing
    normalized_shape axes (weight and bias gradients of that shape)."""
    op = "layer_norm_grad"
    x, gy = _operands(op, input, grad_output)
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    m = math.prod(shape)
    rows = x.size // m if m else 0
    gx, pdy, pdyx = _rows(op, x, gy, _weight(weight, m, x.dtype), eps, rows, 1, m, 1,
                          want_input)
    return gx, pdyx.sum(0).astype(x.dtype).reshape(shape), pdy.sum(0).astype(x.dtype).reshape(shape)

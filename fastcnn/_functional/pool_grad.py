"""Gradients of max pooling (from the forward's indices), average pooling
and adaptive average pooling, 1-D to 3-D."""
import math

import numpy as np

from fastcnn import _kernels
from fastcnn import _threads
from fastcnn._validation import as_array, check_float, contiguous, ntuple

__all__ = ["max_pool_grad", "max_pool_grad_from_output", "avg_pool_grad",
           "adaptive_avg_pool_grad"]


def _planes(op, grad_output, input_shape, nd):
    gy = as_array(grad_output, op, "grad_output")
    check_float(gy, op)
    input_shape = tuple(int(s) for s in input_shape)
    if len(input_shape) not in (nd + 1, nd + 2) or gy.ndim != len(input_shape) or \
            gy.shape[:-nd] != input_shape[:-nd]:
        raise ValueError(f"{op}: grad_output {gy.shape} does not match an input of shape "
                         f"{input_shape} with {nd} spatial axes")
    planes = math.prod(input_shape[:-nd])
    return contiguous(gy), input_shape, planes


def _lead3(values, fill):
    return (fill,) * (3 - len(values)) + tuple(values)


def max_pool_grad(grad_output, indices, input_shape, nd):
    """The gradient of max pooling (or adaptive max pooling) with nd spatial
    axes: each output's gradient added at its index (flat within its input
    plane, as return_indices gives)."""
    op = "max_pool_grad"
    gy, input_shape, planes = _planes(op, grad_output, input_shape, nd)
    idx = np.ascontiguousarray(indices, dtype=np.int64)
    if idx.shape != gy.shape:
        raise ValueError(f"{op}: indices must have grad_output's shape {gy.shape}, got {idx.shape}")
    gx = np.empty(input_shape, gy.dtype)
    if gx.size:
        _kernels._grad.max_pool_backward(gy, idx, gx, planes, math.prod(gy.shape[-nd:]),
                                         math.prod(input_shape[-nd:]),
                                         _threads.get_num_threads())
    return gx


def max_pool_grad_from_output(grad_output, input, output, kernel_size, stride=None, padding=0,
                              dilation=1):
    """The gradient of max_pool{1,2,3}d (nd from kernel_size's length, or the
    input's rank) from its input and output instead of indices: each output's
    gradient goes to the first position of its window holding the maximum
    (the last NaN when the maximum is NaN), as PyTorch's indices point."""
    op = "max_pool_grad_from_output"
    x = as_array(input, op, "input")
    nd = len(kernel_size) if isinstance(kernel_size, (tuple, list)) else x.ndim - 2
    gy, input_shape, planes = _planes(op, grad_output, x.shape, nd)
    y = as_array(output, op, "output")
    if y.shape != gy.shape:
        raise ValueError(f"{op}: output must have grad_output's shape {gy.shape}, got {y.shape}")
    kernel = ntuple(kernel_size, nd, op, "kernel_size", minimum=1)
    stride = kernel if stride is None or (isinstance(stride, (list, tuple)) and not stride) \
        else ntuple(stride, nd, op, "stride", minimum=1)
    pads = ntuple(padding, nd, op, "padding", minimum=0)
    dilation = ntuple(dilation, nd, op, "dilation", minimum=1)
    gx = np.empty(input_shape, gy.dtype)
    if gx.size:
        geom = ((planes, 1) + _lead3(input_shape[-nd:], 1) + _lead3(gy.shape[-nd:], 1)
                + _lead3(kernel, 1) + _lead3(stride, 1) + _lead3(pads, 0)
                + _lead3(dilation, 1))
        _kernels._grad.max_pool_backward_search(geom, contiguous(x), contiguous(y), gy, gx,
                                                _threads.get_num_threads())
    return gx


def avg_pool_grad(grad_output, input_shape, kernel_size, stride=None, padding=0,
                  count_include_pad=True, divisor_override=None):
    """The gradient of avg_pool{1,2,3}d (nd from kernel_size's length, or
    input_shape's rank when it is an int: N, C and the spatial axes)."""
    op = "avg_pool_grad"
    nd = len(kernel_size) if isinstance(kernel_size, (tuple, list)) else len(input_shape) - 2
    gy, input_shape, planes = _planes(op, grad_output, input_shape, nd)
    kernel = ntuple(kernel_size, nd, op, "kernel_size", minimum=1)
    stride = kernel if stride is None or (isinstance(stride, (list, tuple)) and not stride) \
        else ntuple(stride, nd, op, "stride", minimum=1)
    pads = ntuple(padding, nd, op, "padding", minimum=0)
    gx = np.empty(input_shape, gy.dtype)
    if gx.size:
        geom = ((planes, 1) + _lead3(input_shape[-nd:], 1) + _lead3(gy.shape[-nd:], 1)
                + _lead3(kernel, 1) + _lead3(stride, 1) + _lead3(pads, 0) + (1, 1, 1))
        _kernels._grad.avg_pool_backward(geom, bool(count_include_pad),
                                         int(divisor_override or 0), gy, gx,
                                         _threads.get_num_threads())
    return gx


def adaptive_avg_pool_grad(grad_output, input_shape, nd):
    """The gradient of adaptive_avg_pool{nd}d."""
    op = "adaptive_avg_pool_grad"
    gy, input_shape, planes = _planes(op, grad_output, input_shape, nd)
    gx = np.empty(input_shape, gy.dtype)
    if gx.size:
        geom = ((planes, 1) + _lead3(input_shape[-nd:], 1) + _lead3(gy.shape[-nd:], 1)
                + (1,) * 12)
        _kernels._grad.adaptive_avg_backward(geom, gy, gx, _threads.get_num_threads())
    return gx

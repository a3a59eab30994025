"""linear: y = x @ weight.T + bias over BLAS, for any leading shape (..., in_features)."""
import math

import numpy as np

from fastcnn import _threads
from fastcnn import _kernels
from fastcnn._graph import traceable
from fastcnn._validation import (activation_code, as_array, check_float, check_out,
                                 contiguous, shape_str)

__all__ = ["linear"]

_INT32_MAX = 2**31 - 1


@traceable("linear")
def linear(input, weight, bias=None, *, out=None, activation=None):
    """x (..., in_features), weight (out_features, in_features) -> (..., out_features)."""
    op = "linear"
    x = as_array(input, op)
    w = as_array(weight, op, "weight")
    check_float(x, op)
    if w.dtype != x.dtype:
        raise TypeError(f"{op}: input dtype {x.dtype} does not match weight dtype {w.dtype}")
    if w.ndim != 2:
        raise ValueError(f"{op}: weight must have shape (out_features, in_features), got "
                         f"{shape_str(w.shape)}")
    if x.ndim < 1:
        raise ValueError(f"{op}: input must have at least one dimension, got a scalar")
    out_features, in_features = w.shape
    if max(out_features, in_features) > _INT32_MAX:
        raise ValueError(f"{op}: weight {shape_str(w.shape)} is too large for 32-bit BLAS sizes")
    if x.shape[-1] != in_features:
        raise ValueError(f"{op}: input of shape {shape_str(x.shape)} has {x.shape[-1]} features "
                         f"in its last dimension, but weight {shape_str(w.shape)} expects "
                         f"{in_features}")
    if bias is not None:
        b = as_array(bias, op, "bias")
        if b.dtype != x.dtype:
            raise TypeError(f"{op}: bias dtype {b.dtype} does not match input dtype {x.dtype}")
        if b.shape != (out_features,):
            raise ValueError(f"{op}: bias must have shape ({out_features},), got {shape_str(b.shape)}")
        bias = contiguous(b)
    act = activation_code(activation, op)
    out_shape = x.shape[:-1] + (out_features,)
    if out is None:
        y = np.empty(out_shape, x.dtype)
    else:
        y = check_out(out, out_shape, x.dtype, op, (x, w, bias))
    rows = math.prod(x.shape[:-1])
    x2 = contiguous(x).reshape(rows, in_features)
    _kernels._linear.linear(x2, contiguous(w), bias, y.reshape(rows, out_features), act,
                   _threads.get_num_threads())
    return y

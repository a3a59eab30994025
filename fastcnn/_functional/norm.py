"""Normalization: batch, instance, group, layer and local response norm, as
torch.nn.functional, with an optional fused activation (relu, relu6, silu)."""
import math
import numbers
import struct

import numpy as np

from fastcnn import _threads
from fastcnn import _kernels
from fastcnn._graph import traceable
from fastcnn._validation import (activation_code, as_array, check_float, check_out,
                                 contiguous, shape_str)

__all__ = ["batch_norm", "instance_norm", "group_norm", "layer_norm", "local_response_norm"]

_BATCH, _INSTANCE, _GROUP, _LAYER = 0, 1, 2, 3


def _prepare(op, input, min_dim=2):
    x = as_array(input, op)
    check_float(x, op)
    if x.ndim < min_dim:
        raise ValueError(f"{op}: expected an input with at least {min_dim} dimensions "
                         f"(N, C, ...), got shape {shape_str(x.shape)}")
    return x


def _vector(value, name, size, dtype, op):
    """A per-channel parameter or statistic: None, or a 1-D array of `size`."""
    if value is None:
        return None
    v = as_array(value, op, name)
    if v.shape != (size,):
        raise ValueError(f"{op}: {name} must have shape ({size},) to match the input's "
                         f"{size} channels, got {shape_str(v.shape)}")
    if np.dtype(dtype) != v.dtype:
        raise TypeError(f"{op}: {name} dtype {v.dtype} does not match input dtype {dtype}")
    return contiguous(v)


def _stats_vector(value, name, size, op):
    """Running statistics: any float dtype, (size,), read as float64."""
    v = as_array(value, op, name)
    if v.shape != (size,):
        raise ValueError(f"{op}: {name} must have shape ({size},) to match the input's "
                         f"{size} channels, got {shape_str(v.shape)}")
    if v.dtype.kind != "f":             # any float width (a dtype test, not issubdtype: 10x cheaper)
        raise TypeError(f"{op}: {name} must be a float array, got {v.dtype}")
    return np.ascontiguousarray(v, np.float64)


def _output(out, x, op):
    if out is None:
        return np.empty(x.shape, x.dtype)
    if out is x:
        if not (x.flags.c_contiguous and x.flags.writeable):
            raise ValueError(f"{op}: out=input needs a writeable C-contiguous array")
        return x
    return check_out(out, x.shape, x.dtype, op, (x,))


def _run(kind, op, x, out, batch, channels, spatial, groups, weight, bias, mean, var, eps,
         activation):
    y = _output(out, x, op)
    xc = contiguous(x)
    return y, _kernels._norm.normalize(kind, xc, y, batch, channels, spatial, groups, weight, bias,
                              mean, var, float(eps), activation_code(activation, op),
                              _threads.get_num_threads())


def _update(running, batch_stat, momentum):
    """In place, as PyTorch: running = (1 - momentum) * running + momentum * batch."""
    running *= (1 - momentum)
    running += momentum * batch_stat.astype(running.dtype)


@traceable("batch_norm")
def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5, *, out=None, activation=None):
    """Normalize over (N, *spatial) per channel.

    training=True normalizes with the batch statistics (biased variance) and,
    when running_mean / running_var are given, updates them in place with
    momentum and the unbiased variance. training=False uses the running
    statistics (a single pass: x * scale + shift)."""
    op = "batch_norm"
    x = _prepare(op, input)
    n, c = x.shape[0], x.shape[1]
    spatial = math.prod(x.shape[2:])
    w = _vector(weight, "weight", c, x.dtype, op)
    b = _vector(bias, "bias", c, x.dtype, op)
    if training and x.size == 0 and n * spatial != 1:
        # as PyTorch: an empty batch gives an empty output, the running statistics unchanged
        for name, stat in (("running_mean", running_mean), ("running_var", running_var)):
            if stat is not None:
                _stats_vector(stat, name, c, op)
        return _output(out, x, op)
    if training:
        if n * spatial <= 1:
            raise ValueError(f"{op}: expected more than 1 value per channel when training, "
                             f"got input of shape {shape_str(x.shape)}")
        for name, stat in (("running_mean", running_mean), ("running_var", running_var)):
            if stat is not None:
                _stats_vector(stat, name, c, op)
        y, (mean, var) = _run(_BATCH, op, x, out, n, c, spatial, 0, w, b, None, None, eps,
                              activation)
        count = n * spatial
        if running_mean is not None:
            _update(running_mean, mean, momentum)
        if running_var is not None:
            _update(running_var, var * (count / (count - 1)), momentum)
        return y
    if running_mean is None or running_var is None:
        raise ValueError(f"{op}: running_mean and running_var are required when not training")
    mean = _stats_vector(running_mean, "running_mean", c, op)
    var = _stats_vector(running_var, "running_var", c, op)
    y, _ = _run(_BATCH, op, x, out, n, c, spatial, 0, w, b, mean, var, eps, activation)
    return y


@traceable("instance_norm")
def instance_norm(input, running_mean=None, running_var=None, weight=None, bias=None,
                  use_input_stats=True, momentum=0.1, eps=1e-5, *, out=None, activation=None):
    """Normalize each (sample, channel) plane over its spatial positions."""
    op = "instance_norm"
    x = _prepare(op, input)
    n, c = x.shape[0], x.shape[1]
    spatial = math.prod(x.shape[2:])
    w = _vector(weight, "weight", c, x.dtype, op)
    b = _vector(bias, "bias", c, x.dtype, op)
    if use_input_stats and x.size == 0 and spatial != 1:
        return _output(out, x, op)                 # as PyTorch: nothing to normalize
    if use_input_stats:
        if spatial <= 1:
            raise ValueError(f"{op}: expected more than 1 spatial element when training, "
                             f"got input of shape {shape_str(x.shape)}")
        for name, stat in (("running_mean", running_mean), ("running_var", running_var)):
            if stat is not None:
                _stats_vector(stat, name, c, op)
        y, (mean, var) = _run(_INSTANCE, op, x, out, n, c, spatial, 0, w, b, None, None, eps,
                              activation)
        # PyTorch averages the per-instance statistics over the batch.
        if running_mean is not None:
            _update(running_mean, mean.reshape(n, c).mean(axis=0), momentum)
        if running_var is not None:
            unbiased = var.reshape(n, c) * (spatial / (spatial - 1))
            _update(running_var, unbiased.mean(axis=0), momentum)
        return y
    if running_mean is None or running_var is None:
        raise ValueError(f"{op}: running_mean and running_var are required when "
                         f"use_input_stats=False")
    mean = _stats_vector(running_mean, "running_mean", c, op)
    var = _stats_vector(running_var, "running_var", c, op)
    y, _ = _run(_BATCH, op, x, out, n, c, spatial, 0, w, b, mean, var, eps, activation)
    return y


@traceable("group_norm")
def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5, *, out=None,
               activation=None):
    """Normalize each sample's channel groups over (channels in group, *spatial)."""
    op = "group_norm"
    x = _prepare(op, input)
    n, c = x.shape[0], x.shape[1]
    if not isinstance(num_groups, numbers.Integral) or isinstance(num_groups, bool) or num_groups < 1:
        raise ValueError(f"{op}: num_groups must be a positive int, got {num_groups!r}")
    if c % num_groups:
        raise ValueError(f"{op}: expected number of channels in input to be divisible by "
                         f"num_groups, but got input of shape {shape_str(x.shape)} and "
                         f"num_groups={num_groups}")
    spatial = math.prod(x.shape[2:])
    if n * (c // num_groups) * spatial == 1:
        # PyTorch's check (its batch norm's, on the reshaped input)
        raise ValueError(f"{op}: expected more than 1 value per channel when training, got "
                         f"input of shape {shape_str(x.shape)} and num_groups={num_groups}")
    w = _vector(weight, "weight", c, x.dtype, op)
    b = _vector(bias, "bias", c, x.dtype, op)
    y, _ = _run(_GROUP, op, x, out, n, c, spatial, int(num_groups), w, b, None, None, eps,
                activation)
    return y


@traceable("layer_norm")
def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5, *, out=None,
               activation=None):
    """Normalize over the trailing dims given by normalized_shape, with an
    element-wise affine of that shape."""
    op = "layer_norm"
    x = as_array(input, op)
    check_float(x, op)
    if isinstance(normalized_shape, numbers.Integral):
        normalized_shape = (normalized_shape,)
    shape = tuple(int(s) for s in normalized_shape)
    k = len(shape)
    if k == 0 or x.ndim < k or x.shape[x.ndim - k:] != shape:
        raise ValueError(f"{op}: given normalized_shape={list(shape)}, expected input with "
                         f"shape [*, {', '.join(map(str, shape))}], but got input of size "
                         f"{list(x.shape)}")
    inner = math.prod(shape)
    outer = math.prod(x.shape[:x.ndim - k])
    ws = []
    for name, value in (("weight", weight), ("bias", bias)):
        if value is None:
            ws.append(None)
            continue
        v = as_array(value, op, name)
        if v.shape != shape:
            raise ValueError(f"{op}: {name} must have shape {shape}, got {shape_str(v.shape)}")
        if v.dtype != x.dtype:
            raise TypeError(f"{op}: {name} dtype {v.dtype} does not match input dtype {x.dtype}")
        ws.append(contiguous(v).reshape(-1))
    y, _ = _run(_LAYER, op, x, out, outer, 1, inner, 0, ws[0], ws[1], None, None, eps, activation)
    return y


@traceable("local_response_norm")
def local_response_norm(input, size, alpha=1e-4, beta=0.75, k=1.0, *, out=None):
    """x / (k + alpha / size * sum of x^2 over `size` neighbouring channels)^beta."""
    op = "local_response_norm"
    x = _prepare(op, input, 3)
    if not isinstance(size, numbers.Integral) or size < 1:
        raise ValueError(f"{op}: size must be a positive int, got {size!r}")
    n, c = x.shape[0], x.shape[1]
    spatial = math.prod(x.shape[2:])
    y = _output(out, x, op)
    if y is x:
        y = np.empty(x.shape, x.dtype)
        target = x
    else:
        target = None
    # the parameters in the input's precision, as PyTorch computes (alpha=-1e39
    # is -inf in float32: each output is then x / inf = 0, not NaN)
    if x.dtype == np.float32:
        alpha, beta, k = (_as_float32(v) for v in (alpha, beta, k))
    _kernels._norm.local_response_norm(contiguous(x), y, n, c, spatial, int(size),
                                       float(alpha), float(beta), float(k),
                                       _threads.get_num_threads())
    if target is not None:
        target[...] = y
        return target
    return y


# Halfway between float32's largest value and the next power of two: from here
# on, rounding to float32 gives inf (ties go to the even significand, inf's).
_FLOAT32_OVERFLOW = math.ldexp(2 - 2**-24, 127)
_FLOAT32 = struct.Struct("f")


def _as_float32(value):
    """value rounded to float32, as a Python float (beyond float32's range: inf)."""
    value = float(value)
    if abs(value) >= _FLOAT32_OVERFLOW:
        return math.copysign(math.inf, value)
    return _FLOAT32.unpack(_FLOAT32.pack(value))[0]

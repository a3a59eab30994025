"""Dropout: identity unless training; then a mask drawn from a NumPy Generator
(fastcnn.manual_seed seeds the default one) and a 1 / (1 - p) scale."""
import numpy as np

from fastcnn import _kernels
from fastcnn import _threads
from fastcnn._graph import traceable
from fastcnn._random import default_generator
from fastcnn._validation import as_array, check_float

__all__ = ["dropout", "dropout1d", "dropout2d", "dropout3d"]


def _check_p(p, op):
    try:
        p = float(p)
    except (TypeError, ValueError):
        raise TypeError(f"{op}: p must be a number, got {p!r}") from None
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{op}: dropout probability has to be between 0 and 1, but got {p}")
    return p


def _dropout(op, input, p, training, inplace, generator, mask_shape):
    p = _check_p(p, op)
    if not isinstance(training, (bool, np.bool_)):
        raise TypeError(f"{op}: training must be a bool, got {type(training).__name__}")
    x = as_array(input, op)
    check_float(x, op)
    if not training or p == 0.0:
        return x
    if generator is None:
        generator = default_generator()
    shape = mask_shape(x)
    if p == 1.0:
        scaled = np.zeros(shape, x.dtype)
    else:
        keep = generator.random(shape, dtype=np.float64) >= p
        scaled = keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - p))
    if inplace and (not isinstance(input, np.ndarray) or not x.flags.writeable):
        raise ValueError(f"{op}: inplace needs a writeable numpy.ndarray input")
    if scaled.shape != x.shape and x.flags.c_contiguous and x.dtype.isnative and x.size:
        # whole channels: one multiplier per plane, in the threaded kernel
        y = x if inplace else np.empty_like(x)
        _kernels._act.scale_planes(x, np.ascontiguousarray(scaled.reshape(-1)), y,
                          _threads.get_num_threads())
        return y
    # IEEE results without NumPy's warnings: a dropped +-inf gives NaN, as in
    # PyTorch, and a kept value may overflow to inf
    with np.errstate(invalid="ignore", over="ignore"):
        return np.multiply(x, scaled, out=x if inplace else None)


@traceable("dropout")
def dropout(input, p=0.5, training=True, inplace=False, *, generator=None):
    """Zero each element with probability p and scale the rest by 1 / (1 - p)."""
    return _dropout("dropout", input, p, training, inplace, generator, lambda x: x.shape)


def _channel_mask(nd, op):
    def shape(x):
        if x.ndim not in (nd + 1, nd + 2):
            raise ValueError(f"{op}: expected an input with {nd + 1} or {nd + 2} dimensions, "
                             f"got shape {x.shape}")
        lead = x.shape[:x.ndim - nd]
        return lead + (1,) * nd
    return shape


@traceable("dropout1d")
def dropout1d(input, p=0.5, training=True, inplace=False, *, generator=None):
    """Zero whole channels of (N, C, L) or (C, L) inputs."""
    mask = _channel_mask(1, "dropout1d")
    mask(as_array(input, "dropout1d"))          # the rank is checked in eval mode too, as PyTorch
    return _dropout("dropout1d", input, p, training, inplace, generator, mask)


@traceable("dropout2d")
def dropout2d(input, p=0.5, training=True, inplace=False, *, generator=None):
    """Zero whole channels of (N, C, H, W) or (C, H, W) inputs."""
    return _dropout("dropout2d", input, p, training, inplace, generator, _channel_mask(2, "dropout2d"))


@traceable("dropout3d")
def dropout3d(input, p=0.5, training=True, inplace=False, *, generator=None):
    """Zero whole channels of (N, C, D, H, W) or (C, D, H, W) inputs."""
    return _dropout("dropout3d", input, p, training, inplace, generator, _channel_mask(3, "dropout3d"))

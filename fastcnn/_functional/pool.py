"""Pooling: max, average, LP, adaptive (average and max), as torch.nn.functional."""
import math

import numpy as np

from fastcnn import _threads
from fastcnn import _kernels
from fastcnn._graph import traceable
from fastcnn._validation import (as_array, check_float, check_out, contiguous, index_steps,
                                 ntuple, shape_str, spatial_input)

__all__ = ["max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
           "lp_pool1d", "lp_pool2d", "adaptive_avg_pool1d", "adaptive_avg_pool2d",
           "adaptive_avg_pool3d", "adaptive_max_pool1d", "adaptive_max_pool2d",
           "adaptive_max_pool3d", "pool_output_size"]

_MAX, _AVG, _LP = 0, 1, 2


def pool_output_size(size, kernel, stride, pad, dilation, ceil_mode):
    """PyTorch's pooling output size: the last window must start inside the
    input or its left padding."""
    out = (size + 2 * pad - dilation * (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _check_sizes(x, unbatched, op):
    """As PyTorch's pooling: only the batch axis may be empty."""
    if 0 in x.shape[1:]:
        shape = x.shape[1:] if unbatched else x.shape
        raise ValueError(f"{op}: expected an input whose sizes other than the batch are "
                         f"non-zero, got shape {shape_str(shape)}")


def _fmt(values):
    return values[0] if len(set(values)) == 1 else values


def _as_3d(values, fill):
    return (fill,) * (3 - len(values)) + tuple(values)


def _pool(nd, op, mode, input, kernel_size, stride, padding, dilation, ceil_mode,
          count_include_pad=True, divisor_override=None, norm_type=2.0, return_indices=False,
          out=None):
    x = as_array(input, op)
    check_float(x, op)
    x, unbatched = spatial_input(x, nd, op)
    _check_sizes(x, unbatched, op)
    bound = _pool_kernel(nd, op, mode, x.shape, kernel_size, stride, padding, dilation,
                         ceil_mode, count_include_pad, divisor_override, norm_type)
    return _run(op, x, unbatched, bound, return_indices, out)


def _run(op, x, unbatched, bound, return_indices, out):
    """Run a bound pooling, (output shape, run), on the batched input x: the
    result in `out` or a new array, with int64 indices if asked for; an
    unbatched input gives unbatched results."""
    out_shape, run = bound
    if out is None:
        y = np.empty(out_shape, x.dtype)
    else:
        y = check_out(out, out_shape[1:] if unbatched else out_shape, x.dtype, op, (x,))
        y = y.reshape(out_shape)
    indices = np.empty(out_shape, np.int64) if return_indices else None
    run(contiguous(x), y, indices, _threads.get_num_threads())
    result = out if out is not None else (y[0] if unbatched else y)
    if return_indices:
        return result, (indices[0] if unbatched else indices)
    return result


def pool_window(nd, op, kernel_size, stride, padding, dilation):
    """(kernel, stride, padding, dilation), each an nd-tuple, as a pooling
    call's arguments give them (no stride, or an empty one: the kernel's)."""
    kernel = ntuple(kernel_size, nd, op, "kernel_size", minimum=1)
    stride = kernel if stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0) \
        else ntuple(stride, nd, op, "stride", minimum=1)
    return (kernel, stride, ntuple(padding, nd, op, "padding", minimum=0),
            ntuple(dilation, nd, op, "dilation", minimum=1))


def _pool_kernel(nd, op, mode, shape, kernel_size, stride, padding, dilation, ceil_mode,
                 count_include_pad=True, divisor_override=None, norm_type=2.0):
    """The pooling of a batched input of this shape, its arguments checked
    once: (output shape, run), run(x, y, indices, num_threads, workspace=None)
    calling the kernel (a compiled plan binds one and keeps its workspace)."""
    kernel, stride, pads, dilation = pool_window(nd, op, kernel_size, stride, padding,
                                                 dilation)
    if any(p > k // 2 for p, k in zip(pads, kernel)):
        raise ValueError(f"{op}: pad should be at most half of effective kernel size, but got "
                         f"pad={_fmt(pads)}, kernel_size={_fmt(kernel)} and "
                         f"dilation={_fmt(dilation)}")
    if divisor_override is not None:
        divisor_override = ntuple(divisor_override, 1, op, "divisor_override")[0]
        if divisor_override == 0:
            raise ValueError(f"{op}: divisor must be not zero")
    spatial = shape[2:]
    if nd == 3 and mode == _AVG and any(s < k for s, k in zip(spatial, kernel)):
        # PyTorch's avg_pool3d (not its 1-D and 2-D forms) wants the input no smaller than the kernel
        raise ValueError(f"{op}: input image (T: {spatial[0]} H: {spatial[1]} W: {spatial[2]}) "
                         f"smaller than kernel size (kT: {kernel[0]} kH: {kernel[1]} "
                         f"kW: {kernel[2]})")
    out_sp = tuple(pool_output_size(s, k, st, p, d, ceil_mode)
                   for s, k, st, p, d in zip(spatial, kernel, stride, pads, dilation))
    if min(out_sp) < 1:
        raise ValueError(f"{op}: Given input size: ({'x'.join(map(str, shape[1:]))}). "
                         f"Calculated output size: ({'x'.join(map(str, shape[1:2] + out_sp))}). "
                         f"Output size is too small")
    stride, dilation = index_steps(op, spatial, kernel, stride, pads, pads, dilation, out_sp)
    planes = shape[0] * shape[1]
    geom = ((planes,) + _as_3d(spatial, 1) + _as_3d(out_sp, 1) + _as_3d(kernel, 1)
            + _as_3d(stride, 1) + _as_3d(pads, 0) + _as_3d(dilation, 1))
    settings = (mode, bool(count_include_pad), divisor_override or 0, float(norm_type))

    def run(x, y, indices, num_threads, workspace=None):
        if planes and math.prod(spatial):
            _kernels._pool.pool(geom, *settings, x, y, indices, num_threads, workspace)
    run.workspace_size = lambda num_threads: _kernels._pool.pool_workspace(geom, num_threads)
    return tuple(shape[:2]) + out_sp, run


@traceable("max_pool1d")
def max_pool1d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False, *, out=None):
    """Max pooling over (N, C, L) or (C, L); indices are positions within L."""
    return _pool(1, "max_pool1d", _MAX, input, kernel_size, stride, padding, dilation,
                 ceil_mode, return_indices=return_indices, out=out)


@traceable("max_pool2d")
def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False, *, out=None):
    """Max pooling over (N, C, H, W) or (C, H, W), as torch.nn.functional.max_pool2d.
    Indices (int64) are flat positions within each input plane (h * W + w)."""
    return _pool(2, "max_pool2d", _MAX, input, kernel_size, stride, padding, dilation,
                 ceil_mode, return_indices=return_indices, out=out)


@traceable("max_pool3d")
def max_pool3d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False, *, out=None):
    """Max pooling over (N, C, D, H, W) or (C, D, H, W)."""
    return _pool(3, "max_pool3d", _MAX, input, kernel_size, stride, padding, dilation,
                 ceil_mode, return_indices=return_indices, out=out)


@traceable("avg_pool1d")
def avg_pool1d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, *, out=None):
    """Average pooling over (N, C, L) or (C, L) (no divisor_override, as PyTorch)."""
    return _pool(1, "avg_pool1d", _AVG, input, kernel_size, stride, padding, 1, ceil_mode,
                 count_include_pad, out=out)


@traceable("avg_pool2d")
def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None, *, out=None):
    """Average pooling over (N, C, H, W) or (C, H, W), as torch.nn.functional.avg_pool2d."""
    return _pool(2, "avg_pool2d", _AVG, input, kernel_size, stride, padding, 1, ceil_mode,
                 count_include_pad, divisor_override, out=out)


@traceable("avg_pool3d")
def avg_pool3d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None, *, out=None):
    """Average pooling over (N, C, D, H, W) or (C, D, H, W)."""
    return _pool(3, "avg_pool3d", _AVG, input, kernel_size, stride, padding, 1, ceil_mode,
                 count_include_pad, divisor_override, out=out)


def _check_norm(norm_type, op):
    try:
        p = float(norm_type)
    except (TypeError, ValueError):
        raise TypeError(f"{op}: norm_type must be a number, got {norm_type!r}") from None
    if not p > 0 or math.isinf(p):
        raise ValueError(f"{op}: norm_type must be positive and finite, got {norm_type!r}")
    return p


@traceable("lp_pool1d")
def lp_pool1d(input, norm_type, kernel_size, stride=None, ceil_mode=False, *, out=None):
    """Power-average pooling: (sum of x^p over the window)^(1/p), as PyTorch computes it."""
    p = _check_norm(norm_type, "lp_pool1d")
    return _pool(1, "lp_pool1d", _LP, input, kernel_size, stride, 0, 1, ceil_mode,
                 norm_type=p, out=out)


@traceable("lp_pool2d")
def lp_pool2d(input, norm_type, kernel_size, stride=None, ceil_mode=False, *, out=None):
    """Power-average pooling over (N, C, H, W) or (C, H, W)."""
    p = _check_norm(norm_type, "lp_pool2d")
    return _pool(2, "lp_pool2d", _LP, input, kernel_size, stride, 0, 1, ceil_mode,
                 norm_type=p, out=out)


def _adaptive(nd, op, is_max, input, output_size, return_indices=False, out=None):
    x = as_array(input, op)
    check_float(x, op)
    x, unbatched = spatial_input(x, nd, op)
    bound = _adaptive_kernel(nd, op, is_max, x.shape, output_size, unbatched)
    return _run(op, x, unbatched, bound, return_indices, out)


def _adaptive_kernel(nd, op, is_max, shape, output_size, unbatched=False):
    """As _pool_kernel, for adaptive pooling of a batched input of this shape."""
    spatial = shape[2:]
    # PyTorch's rule: non-empty spatial axes; a batched input's channels too
    # for max pooling and in 3-D
    if 0 in spatial or (shape[1] == 0 and not unbatched and (is_max or nd == 3)):
        raise ValueError(f"{op}: expected an input with non-zero sizes for non-batch "
                         f"dimensions, got shape {shape_str(shape[1:] if unbatched else shape)}")
    # As PyTorch: an int, or one entry per spatial axis; None entries (keep
    # that axis's size) only in 2-D and 3-D.
    if isinstance(output_size, (list, tuple)):
        if len(output_size) != nd:
            raise ValueError(f"{op}: output_size must be an int or a tuple of {nd}, got "
                             f"{output_size!r}")
        if nd == 1 and output_size[0] is None:
            raise TypeError(f"{op}: output_size must be an int or a tuple of 1 int, got "
                            f"{output_size!r}")
        sizes = tuple(s if o is None else o for o, s in zip(output_size, spatial))
    elif output_size is None:
        raise TypeError(f"{op}: output_size must be an int or a tuple of {nd}, got None")
    else:
        sizes = (output_size,) * nd
    sizes = ntuple(sizes, nd, op, "output_size")
    if any(o <= 0 for o in sizes):
        raise ValueError(f"{op}: output_size must be positive, got {sizes}")
    planes = shape[0] * shape[1]
    geom = (planes,) + _as_3d(spatial, 1) + _as_3d(sizes, 1)

    def run(x, y, indices, num_threads, workspace=None):
        if planes:
            _kernels._pool.adaptive(geom, is_max, x, y, indices, num_threads, workspace)
    run.workspace_size = lambda num_threads: _kernels._pool.adaptive_workspace_size(
        geom[3], num_threads)
    return tuple(shape[:2]) + sizes, run


# What a compiled plan binds for each pooling op: (spatial axes, kind), kind
# a pooling mode or "adaptive_max" / "adaptive_avg".
PLAN_OPS = {"max_pool1d": (1, _MAX), "max_pool2d": (2, _MAX), "max_pool3d": (3, _MAX),
            "avg_pool1d": (1, _AVG), "avg_pool2d": (2, _AVG), "avg_pool3d": (3, _AVG),
            "lp_pool1d": (1, _LP), "lp_pool2d": (2, _LP),
            "adaptive_avg_pool1d": (1, "adaptive_avg"), "adaptive_avg_pool2d": (2, "adaptive_avg"),
            "adaptive_avg_pool3d": (3, "adaptive_avg"), "adaptive_max_pool1d": (1, "adaptive_max"),
            "adaptive_max_pool2d": (2, "adaptive_max"), "adaptive_max_pool3d": (3, "adaptive_max")}


def plan_kernel(op, shape, arguments):
    """For a compiled plan: pooling `op` (one of PLAN_OPS, its arguments by
    name as the call gave them) over a batched input of this shape, checked
    once; (output shape, run) as _pool_kernel, or None where the plan runs
    the op as called (indices asked for)."""
    nd, kind = PLAN_OPS[op]
    if arguments.get("return_indices"):
        return None
    if kind in ("adaptive_avg", "adaptive_max"):
        return _adaptive_kernel(nd, op, kind == "adaptive_max", shape, arguments["output_size"])
    get = arguments.get
    norm = _check_norm(get("norm_type"), op) if kind == _LP else 2.0
    return _pool_kernel(nd, op, kind, shape, get("kernel_size"), get("stride"),
                        get("padding", 0), get("dilation", 1), get("ceil_mode", False),
                        get("count_include_pad", True), get("divisor_override"), norm)


@traceable("adaptive_avg_pool1d")
def adaptive_avg_pool1d(input, output_size, *, out=None):
    return _adaptive(1, "adaptive_avg_pool1d", False, input, output_size, out=out)


@traceable("adaptive_avg_pool2d")
def adaptive_avg_pool2d(input, output_size, *, out=None):
    """Adaptive average pooling; output_size 1 (global average) has its own fast path.
    None entries keep the input size."""
    return _adaptive(2, "adaptive_avg_pool2d", False, input, output_size, out=out)


@traceable("adaptive_avg_pool3d")
def adaptive_avg_pool3d(input, output_size, *, out=None):
    return _adaptive(3, "adaptive_avg_pool3d", False, input, output_size, out=out)


@traceable("adaptive_max_pool1d")
def adaptive_max_pool1d(input, output_size, return_indices=False, *, out=None):
    return _adaptive(1, "adaptive_max_pool1d", True, input, output_size, return_indices, out)


@traceable("adaptive_max_pool2d")
def adaptive_max_pool2d(input, output_size, return_indices=False, *, out=None):
    return _adaptive(2, "adaptive_max_pool2d", True, input, output_size, return_indices, out)


@traceable("adaptive_max_pool3d")
def adaptive_max_pool3d(input, output_size, return_indices=False, *, out=None):
    return _adaptive(3, "adaptive_max_pool3d", True, input, output_size, return_indices, out)

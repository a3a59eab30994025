"""Resizing by separable taps: along each axis, output index i reads a few
input indices with fixed coefficients, which depend only on the sizes and the
mode (nearest with each rounding, linear, cubic; every ONNX coordinate
transformation; antialiasing). They are computed once per shape; resizing is
then a few gathers and multiply-adds per resized axis. F.interpolate and the
ONNX Resize and Upsample operators use this one engine.
"""
import math

import numpy as np

from fastcnn import _kernels
from fastcnn import _threads
from fastcnn._functional import pool as P
from fastcnn._graph import traceable
from fastcnn._validation import as_array, check_float, check_out, ntuple, shape_str

__all__ = ["axis_weights", "resize_taps", "interpolate"]


# ---------------------------------------------------------------- one axis

def _source(x, in_size, out_size, scale, coord, roi):
    """The input coordinate output index x reads (ONNX's coordinate
    transformations; `width`, the unrounded output length, as its reference)."""
    width = scale * in_size
    if coord == "half_pixel":
        return (x + 0.5) / scale - 0.5
    if coord == "pytorch_half_pixel":
        return (x + 0.5) / scale - 0.5 if width != 1 else -0.5
    if coord == "align_corners":
        return x * (in_size - 1) / (width - 1) if width != 1 else 0.0
    if coord == "asymmetric":
        return x / scale
    if coord == "tf_half_pixel_for_nn":
        return (x + 0.5) / scale
    if coord == "half_pixel_symmetric":
        offset = in_size / 2 * (1 - out_size / width)
        return offset + (x + 0.5) / scale - 0.5
    if coord == "tf_crop_and_resize":
        start, end = roi
        if width == 1:
            return (end - start) * (in_size - 1) / 2 + start * (in_size - 1)
        return x * (end - start) * (in_size - 1) / (width - 1) + start * (in_size - 1)
    raise ValueError(f"coordinate_transformation_mode {coord!r}")


def _cubic(d, a):
    d = abs(d)
    if d <= 1:
        return (a + 2) * d ** 3 - (a + 3) * d ** 2 + 1
    if d < 2:
        return a * d ** 3 - 5 * a * d ** 2 + 8 * a * d - 4 * a
    return 0.0


def _coefficients(ratio, scale, mode, nearest, a, antialias):
    """The weights of the neighbours of a source coordinate whose distance past
    its left neighbour is ratio (in (0, 1]), as ONNX's reference orders them."""
    if mode == "nearest":
        if ratio == 1.0:
            return [0.0, 1.0]
        right = {"round_prefer_floor": ratio > 0.5, "round_prefer_ceil": ratio >= 0.5,
                 "floor": False, "ceil": True}[nearest]
        return [0.0, 1.0] if right else [1.0, 0.0]
    if antialias and scale < 1:            # the filter widened by 1 / scale
        reach = 1 if mode == "linear" else 2
        start = int(math.floor(-reach / scale) + 1)
        taps = [scale * (i - ratio) for i in range(start, 2 - start)]
        w = [max(0.0, 1 - abs(t)) for t in taps] if mode == "linear" else [_cubic(t, a) for t in taps]
        total = sum(w)
        return [v / total for v in w]
    if mode == "linear":
        return [1 - ratio, ratio]
    return [_cubic(ratio + 1, a), _cubic(ratio, a), _cubic(1 - ratio, a), _cubic(2 - ratio, a)]


def axis_weights(in_size, out_size, scale, mode, coord, nearest, a=-0.75,
                 exclude_outside=False, antialias=False, roi=(0.0, 1.0)):
    """(indices, coefficients, outside): output i is sum_k coefficients[i, k] *
    input[indices[i, k]]; outside[i] marks tf_crop_and_resize positions past
    the input (they take the extrapolation value)."""
    rows, weights, outside = [], [], np.zeros(out_size, bool)
    for x in range(out_size):
        src = _source(x, in_size, out_size, scale, coord, roi)
        if coord == "tf_crop_and_resize" and not 0 <= src <= in_size - 1:
            outside[x] = True
        left = math.floor(src)
        ratio = 1.0 if src == left else src - left
        coeffs = _coefficients(ratio, scale, mode, nearest, a, antialias)
        n = len(coeffs)
        pad = math.ceil(n / 2)
        # the n points of the edge-padded axis nearest the source (ties: the lower)
        centre = src + pad
        around = range(max(0, math.floor(centre) - n), min(in_size + 2 * pad,
                                                           math.floor(centre) + n + 2))
        chosen = sorted(sorted(around, key=lambda i: (abs(centre - i), i))[:n])
        idx = [i - pad for i in chosen]
        if exclude_outside:
            coeffs = [c if 0 <= i < in_size else 0.0 for c, i in zip(coeffs, idx)]
            total = sum(coeffs)
            coeffs = [c / total for c in coeffs] if total else coeffs
        rows.append([min(max(i, 0), in_size - 1) for i in idx])
        weights.append(coeffs)
    width = max(len(r) for r in rows) if rows else 1
    indices = np.zeros((out_size, width), np.int64)
    coefficients = np.zeros((out_size, width), np.float64)
    for i, (r, w) in enumerate(zip(rows, weights)):
        indices[i, :len(r)], coefficients[i, :len(w)] = r, w
    if mode == "nearest":                   # one tap: the one with weight 1
        pick = np.argmax(coefficients, axis=1)
        indices = np.take_along_axis(indices, pick[:, None], axis=1)
        coefficients = np.ones_like(indices, np.float64)
    return indices, coefficients, outside


def resize_taps(data, plan, extrapolation=0.0, out=None):
    """plan: per axis, None (unchanged) or axis_weights(...). Floating data is
    computed in its own precision (coefficients rounded to it, as PyTorch):
    float32 and float64 by the kernels, other dtypes by NumPy."""
    if data.dtype in (np.float32, np.float64) and not any(
            w is not None and w[2].any() for w in plan):
        return _resize_kernel(data, plan, out)
    result = data
    outside = []
    real = data.dtype if data.dtype.kind == "f" else np.dtype(np.float64)
    for axis, weights in enumerate(plan):
        if weights is None:
            continue
        indices, coefficients, out_of = weights
        shape = (-1,) + (1,) * (data.ndim - axis - 1)
        if indices.shape[1] == 1 and np.all(coefficients == 1):
            index = indices[:, 0]
            size = result.shape[axis]
            if len(index) % size == 0 and np.array_equal(
                    index, np.arange(size).repeat(len(index) // size)):
                result = np.repeat(result, len(index) // size, axis=axis)  # an integer factor
            else:
                result = np.take(result, index, axis=axis)
        else:
            acc = None
            for k in range(indices.shape[1]):
                term = np.take(result, indices[:, k], axis=axis).astype(real, copy=False)
                term *= coefficients[:, k].astype(real).reshape(shape)
                if acc is None:
                    acc = term
                else:
                    acc += term
            result = acc
        if out_of.any():
            outside.append((axis, out_of))
    result = np.asarray(result)
    if outside:
        result = result.astype(real, copy=True)
        for axis, out_of in outside:
            index = [slice(None)] * result.ndim
            index[axis] = out_of
            result[tuple(index)] = extrapolation
    result = result.astype(data.dtype, copy=False)
    if out is None:
        return result
    np.copyto(out, result)
    return out


def _picks(weights):
    """An axis's nearest-neighbour indices (one tap of weight 1), else None."""
    if weights is None or weights[0].shape[1] != 1 or not np.all(weights[1] == 1):
        return None
    return np.ascontiguousarray(weights[0][:, 0], np.int64)


def _resize_kernel(data, plan, out):
    """One kernel pass per resized axis, the last axis first (its gathers then
    run over the smaller array when enlarging); nearest on the last axis and
    the one before it (or only the last) in one pass."""
    x = np.ascontiguousarray(data)
    threads = _threads.get_num_threads()
    plan = list(plan)
    cols = _picks(plan[-1])
    rows = _picks(plan[-2]) if x.ndim >= 2 and plan[-2] is not None else \
        np.arange(x.shape[-2] if x.ndim >= 2 else 1, dtype=np.int64)
    if cols is not None and rows is not None:
        shape = x.shape[:-2] + (len(rows), len(cols))
        y = np.empty(shape if x.ndim >= 2 else shape[1:], x.dtype)
        if y.size:
            _kernels._pool.resize_nearest_2d(
                x.reshape((-1,) + ((1,) if x.ndim < 2 else x.shape[-2:-1]) + x.shape[-1:]),
                y.reshape((-1, len(rows), len(cols))), rows, cols, threads)
        x = y
        plan[-1] = None
        if x.ndim >= 2:
            plan[-2] = None
    for axis in reversed(range(x.ndim)):
        weights = plan[axis]
        if weights is None:
            continue
        indices, coefficients, _ = weights
        shape = x.shape
        y = np.empty(shape[:axis] + (len(indices),) + shape[axis + 1:], x.dtype)
        if y.size:
            _kernels._pool.resize_axis(
                x, y, math.prod(shape[:axis]), shape[axis], len(indices),
                math.prod(shape[axis + 1:]), np.ascontiguousarray(indices, np.int64),
                np.ascontiguousarray(coefficients, x.dtype), threads)
        x = y
    if out is None:
        return x
    np.copyto(out, x)
    return out


_MODES = {"nearest": 0, "nearest-exact": 0, "linear": 1, "bilinear": 2, "bicubic": 2,
          "trilinear": 3, "area": 0}


def _interpolate_taps(in_sizes, out_sizes, scales, mode, align_corners, antialias):
    """Per axis, the taps PyTorch's interpolate reads (cached per shape)."""
    key = (in_sizes, out_sizes, scales, mode, align_corners, antialias)
    taps = _TAPS.get(key)
    if taps is None:
        taps = []
        for n, o, sc in zip(in_sizes, out_sizes, scales):
            # PyTorch maps with the given scale factor, else with out / in
            scale = sc if sc is not None and not align_corners else o / n
            if mode == "nearest":
                taps.append(axis_weights(n, o, scale, "nearest", "asymmetric", "floor"))
            elif mode == "nearest-exact":
                taps.append(axis_weights(n, o, scale, "nearest", "tf_half_pixel_for_nn",
                                         "floor"))
            else:
                kind = "cubic" if mode == "bicubic" else "linear"
                if antialias:
                    taps.append(_antialias_weights(n, o, sc, kind, align_corners))
                else:
                    taps.append(_torch_weights(n, o, sc, kind, align_corners))
        if len(_TAPS) > 64:
            _TAPS.clear()
        _TAPS[key] = taps = tuple(taps)
    return taps


_TAPS = {}


def _torch_weights(in_size, out_size, scale_factor, kind, align_corners):
    """PyTorch's linear and cubic taps: the neighbours floor(src) and the next
    (linear, src clamped at 0) or floor(src) - 1 .. floor(src) + 2 (cubic,
    A = -0.75), reads clamped to the axis; every tap kept, even at weight 0,
    so NaN and Inf reach the same outputs as in PyTorch (0 * Inf = NaN)."""
    if align_corners:
        ratio = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
    else:
        ratio = 1 / scale_factor if scale_factor is not None else in_size / out_size
    width = 4 if kind == "cubic" else 2
    indices = np.zeros((out_size, width), np.int64)
    coefficients = np.zeros((out_size, width))
    for i in range(out_size):
        src = i * ratio if align_corners else (i + 0.5) * ratio - 0.5
        if kind == "linear":
            src = max(src, 0.0)
            left = int(src)
            t = src - left
            indices[i] = [left, left + 1 if left < in_size - 1 else left]
            coefficients[i] = [1 - t, t]
        else:
            left = math.floor(src)
            t = src - left
            indices[i] = [min(max(left + k, 0), in_size - 1) for k in (-1, 0, 1, 2)]
            coefficients[i] = [_cubic(t + 1, -0.75), _cubic(t, -0.75), _cubic(1 - t, -0.75),
                               _cubic(2 - t, -0.75)]
    return indices, coefficients, np.zeros(out_size, bool)


def _antialias_weights(in_size, out_size, scale_factor, kind, align_corners):
    """PyTorch's antialiased taps (its _upsample_*_aa kernels, as PIL): a filter
    (triangle, or cubic with a = -0.5) centred on (i + 0.5) * ratio, widened by
    the ratio when it shrinks, over the input positions it covers, normalized."""
    if align_corners:
        ratio = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
    else:
        ratio = 1 / scale_factor if scale_factor is not None else in_size / out_size
    reach = 2.0 if kind == "cubic" else 1.0
    support = reach * ratio if ratio >= 1 else reach
    inv = 1 / ratio if ratio >= 1 else 1.0
    rows = []
    for i in range(out_size):
        centre = ratio * (i + 0.5)
        lo = max(int(centre - support + 0.5), 0)
        hi = min(int(centre + support + 0.5), in_size)
        taps = [abs((j - centre + 0.5) * inv) for j in range(lo, hi)]
        w = [max(0.0, 1 - t) for t in taps] if kind == "linear" else [_cubic(t, -0.5) for t in taps]
        total = sum(w)
        rows.append((list(range(lo, hi)), [v / total for v in w] if total else w))
    width = max(1, max(len(r) for r, _ in rows))
    indices = np.zeros((out_size, width), np.int64)
    coefficients = np.zeros((out_size, width))
    for i, (r, w) in enumerate(rows):
        indices[i, :len(r)], coefficients[i, :len(w)] = r, w
    return indices, coefficients, np.zeros(out_size, bool)


@traceable("interpolate")
def interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None,
                recompute_scale_factor=None, antialias=False, *, out=None):
    """Resize (N, C, *spatial) as torch.nn.functional.interpolate: modes nearest,
    nearest-exact, linear (3-D), bilinear and bicubic (4-D), trilinear (5-D)
    and area; align_corners for the linear and cubic modes; antialias for
    bilinear and bicubic."""
    op = "interpolate"
    x = as_array(input, op)
    check_float(x, op)
    if mode not in _MODES:
        raise ValueError(f"{op}: mode must be one of {', '.join(_MODES)}, got {mode!r}")
    nd = x.ndim - 2
    if nd < 1 or (_MODES[mode] and _MODES[mode] != nd):
        need = {1: "3-D", 2: "4-D", 3: "5-D"}.get(_MODES[mode], "3-D to 5-D")
        raise ValueError(f"{op}: mode {mode!r} needs a {need} input (N, C, ...), got shape "
                         f"{shape_str(x.shape)}")
    if nd > 3:
        raise ValueError(f"{op}: expected a 3-D to 5-D input, got shape {shape_str(x.shape)}")
    linear = mode in ("linear", "bilinear", "bicubic", "trilinear")
    if align_corners is not None and not linear:
        raise ValueError(f"{op}: align_corners option can only be set with the interpolating "
                         f"modes: linear | bilinear | bicubic | trilinear")
    if antialias and mode not in ("bilinear", "bicubic"):
        raise ValueError(f"{op}: anti-alias option is only supported for bilinear and "
                         f"bicubic modes, got mode {mode!r}")
    if (size is None) == (scale_factor is None):
        raise ValueError(f"{op}: exactly one of size or scale_factor must be given")
    spatial = x.shape[2:]
    if size is not None:
        out_sizes = ntuple(size, nd, op, "size", minimum=1)
        scales = (None,) * nd
    else:
        factors = scale_factor if isinstance(scale_factor, (tuple, list)) else (scale_factor,) * nd
        if len(factors) != nd:
            raise ValueError(f"{op}: scale_factor must have {nd} entries, got {scale_factor!r}")
        try:
            factors = tuple(float(f) for f in factors)
        except (TypeError, ValueError):
            raise TypeError(f"{op}: scale_factor must be numbers, got {scale_factor!r}") from None
        if not all(math.isfinite(f) and f > 0 for f in factors):
            raise ValueError(f"{op}: scale_factor must be positive and finite, got "
                             f"{scale_factor!r}")
        out_sizes = tuple(int(math.floor(n * f)) for n, f in zip(spatial, factors))
        scales = (None,) * nd if recompute_scale_factor else factors
        if min(out_sizes) < 1:
            raise ValueError(f"{op}: the output would be {out_sizes} for input "
                             f"{tuple(spatial)} and scale_factor {scale_factor!r}")
    if 0 in spatial:
        raise ValueError(f"{op}: expected an input with non-zero spatial sizes, got shape "
                         f"{shape_str(x.shape)}")
    out_shape = x.shape[:2] + tuple(out_sizes)
    y = None if out is None else check_out(out, out_shape, x.dtype, op, (x,))
    if mode == "area":
        return getattr(P, f"adaptive_avg_pool{nd}d")(x, out_sizes, out=y)
    taps = _interpolate_taps(tuple(spatial), tuple(out_sizes), scales, mode,
                             bool(align_corners), bool(antialias))
    plan = (None, None) + taps
    return resize_taps(x, plan, 0.0, out=y)

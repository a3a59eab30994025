"""ONNX Resize and Upsample: every mode (nearest with each rounding, linear,
cubic), coordinate transformation, antialiasing, axes, aspect-ratio policy and
tf_crop_and_resize, as the ONNX reference defines them.

Resizing is separable: along each axis, output index i reads a few input
indices with fixed coefficients. Those (indices, coefficients) depend only
on the shapes and attributes, so they are computed once, when the plan is
built; a call is then a few gathers and multiply-adds per resized axis.
"""
import math

import numpy as np

from fastcnn.onnx._registry import op, put


def _attr_str(node, name, default):
    v = node.attrs.get(name, default)
    return v.decode() if isinstance(v, bytes) else v


def _ints(entry):
    return [int(v) for v in np.asarray(entry.array).reshape(-1)]


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


# ---------------------------------------------------------------- the op

def resize(data, plan, extrapolation, out=None):
    """plan: per axis, None (unchanged) or axis_weights(...)."""
    result = data
    outside = []
    for axis, weights in enumerate(plan):
        if weights is None:
            continue
        indices, coefficients, out_of = weights
        shape = (-1,) + (1,) * (data.ndim - axis - 1)
        if indices.shape[1] == 1 and np.all(coefficients == 1):
            result = np.take(result, indices[:, 0], axis=axis)
        else:
            acc = None
            for k in range(indices.shape[1]):
                term = np.take(result, indices[:, k], axis=axis) * \
                    coefficients[:, k].reshape(shape)
                acc = term if acc is None else acc + term
            result = acc
        if out_of.any():
            outside.append((axis, out_of))
    result = np.asarray(result)
    if outside:
        result = result.astype(np.float64, copy=True)
        for axis, out_of in outside:
            index = [slice(None)] * result.ndim
            index[axis] = out_of
            result[tuple(index)] = extrapolation
    return put(out, result.astype(data.dtype))


def _check(node, opset):
    mode = _attr_str(node, "mode", "nearest")
    if mode not in ("nearest", "linear", "bilinear", "cubic"):
        return f"mode {mode!r} is not an ONNX Resize mode"
    return None


def _sizes_and_scales(b, node, data, scales, sizes, axes):
    """Per-axis output sizes and scales, from scales or sizes given for `axes`."""
    rank = data.ndim
    axes = [a % rank for a in axes] if axes else list(range(rank))
    out_sizes, out_scales = list(data.shape), [1.0] * rank
    if sizes is not None:
        policy = _attr_str(node, "keep_aspect_ratio_policy", "stretch")
        ratios = [sizes[k] / data.shape[a] for k, a in enumerate(axes)]
        if policy != "stretch":
            scale = (min if policy == "not_larger" else max)(ratios)
            ratios = [scale] * len(axes)
            sizes = [int(math.floor(scale * data.shape[a] + 0.5)) for a in axes]
        for k, a in enumerate(axes):
            out_sizes[a], out_scales[a] = int(sizes[k]), ratios[k]
    else:
        for k, a in enumerate(axes):
            out_scales[a] = float(scales[k])
            out_sizes[a] = int(math.floor(data.shape[a] * out_scales[a]))
    return axes, out_sizes, out_scales


@op("Resize", _check)
def op_Resize(b, node, x):
    data = x[0].array
    mode = _attr_str(node, "mode", "nearest")
    mode = "linear" if mode == "bilinear" else mode
    coord = _attr_str(node, "coordinate_transformation_mode",
                      "asymmetric" if b.opset < 11 else "half_pixel")
    nearest = _attr_str(node, "nearest_mode", "round_prefer_floor")
    if b.opset < 11:
        roi_entry, scale_entry, sizes_entry = None, (x[1] if len(x) > 1 else None), None
    else:
        roi_entry = x[1] if len(x) > 1 else None
        scale_entry = x[2] if len(x) > 2 else None
        sizes_entry = x[3] if len(x) > 3 else None
    for e in (roi_entry, scale_entry, sizes_entry):
        if e is not None and not e.const:
            return b.unsupported(node, "roi, scales or sizes that are not constant")
    axes = [int(a) for a in node.attrs.get("axes", [])]
    if sizes_entry is not None and np.size(sizes_entry.array):
        axes, sizes, scales = _sizes_and_scales(b, node, data, None, _ints(sizes_entry), axes)
    elif scale_entry is not None and np.size(scale_entry.array):
        values = [float(v) for v in np.asarray(scale_entry.array).reshape(-1)]
        axes, sizes, scales = _sizes_and_scales(b, node, data, values, None, axes)
    else:
        raise ValueError(f"onnx: Resize {node.name!r}: needs scales or sizes")
    roi = [0.0, 1.0] * data.ndim
    if roi_entry is not None and np.size(roi_entry.array):
        given = [float(v) for v in np.asarray(roi_entry.array).reshape(-1)]
        half = len(given) // 2
        for k, a in enumerate(axes if half == len(axes) else range(data.ndim)):
            roi[2 * a], roi[2 * a + 1] = given[k], given[half + k]
    plan = []
    for a in range(data.ndim):
        if sizes[a] == data.shape[a] and scales[a] == 1.0 and coord != "tf_crop_and_resize":
            plan.append(None)
            continue
        plan.append(axis_weights(
            data.shape[a], sizes[a], scales[a], mode, coord, nearest,
            a=float(node.attrs.get("cubic_coeff_a", -0.75)),
            exclude_outside=bool(node.attrs.get("exclude_outside", 0)),
            antialias=bool(node.attrs.get("antialias", 0)), roi=(roi[2 * a], roi[2 * a + 1])))
    return b.call("resize", resize,
                  [x[0], tuple(plan), float(node.attrs.get("extrapolation_value", 0.0))], {})


@op("Upsample", lambda n, o: None if _attr_str(n, "mode", "nearest") in ("nearest", "linear",
                                                                         "bilinear")
    else "only nearest and linear modes are supported")
def op_Upsample(b, node, x):
    data = x[0].array
    if "scales" in node.attrs:
        scales = [float(s) for s in node.attrs["scales"]]
    else:
        if not x[1].const:
            return b.unsupported(node, "scales that are not constant")
        scales = [float(v) for v in np.asarray(x[1].array).reshape(-1)]
    mode = _attr_str(node, "mode", "nearest")
    mode = "linear" if mode == "bilinear" else mode
    plan = tuple(None if s == 1.0 else
                 axis_weights(n, int(math.floor(n * s)), s, mode, "asymmetric", "floor")
                 for n, s in zip(data.shape, scales))
    return b.call("resize", resize, [x[0], plan, 0.0], {})

"""ONNX Resize and Upsample: every mode (nearest with each rounding, linear,
cubic), coordinate transformation, antialiasing, axes, aspect-ratio policy and
tf_crop_and_resize, as the ONNX reference defines them, on the separable-taps
engine of fastcnn._functional.resize (the taps computed once, when the plan is
built)."""
import math

import numpy as np

from fastcnn._functional.resize import axis_weights, resize_taps
from fastcnn.onnx._registry import attr_str, ints, op




def _check(node, opset):
    mode = attr_str(node, "mode", "nearest")
    if mode not in ("nearest", "linear", "bilinear", "cubic"):
        return f"mode {mode!r} is not an ONNX Resize mode"
    return None


def _sizes_and_scales(b, node, data, scales, sizes, axes):
    """Per-axis output sizes and scales, from scales or sizes given for `axes`."""
    rank = data.ndim
    axes = [a % rank for a in axes] if axes else list(range(rank))
    out_sizes, out_scales = list(data.shape), [1.0] * rank
    if sizes is not None:
        policy = attr_str(node, "keep_aspect_ratio_policy", "stretch")
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
    mode = attr_str(node, "mode", "nearest")
    mode = "linear" if mode == "bilinear" else mode
    coord = attr_str(node, "coordinate_transformation_mode",
                      "asymmetric" if b.opset < 11 else "half_pixel")
    nearest = attr_str(node, "nearest_mode", "round_prefer_floor")
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
        axes, sizes, scales = _sizes_and_scales(b, node, data, None, ints(sizes_entry), axes)
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
    return b.call("resize", resize_taps,
                  [x[0], tuple(plan), float(node.attrs.get("extrapolation_value", 0.0))], {})


@op("Upsample", lambda n, o: None if attr_str(n, "mode", "nearest") in ("nearest", "linear",
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
    mode = attr_str(node, "mode", "nearest")
    mode = "linear" if mode == "bilinear" else mode
    plan = tuple(None if s == 1.0 else
                 axis_weights(n, int(math.floor(n * s)), s, mode, "asymmetric", "floor")
                 for n, s in zip(data.shape, scales))
    return b.call("resize", resize_taps, [x[0], plan, 0.0], {})

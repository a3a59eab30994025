"""ONNX pooling operators: MaxPool, AveragePool, LpPool and their global forms,
on fastcnn's pooling kernels, with a windowed path for what those refuse (pads
past half the window, dilated average and Lp pooling)."""
import numpy as np

from fastcnn._functional import pool as P
from fastcnn.onnx._ops_layers import spatial_attrs
from fastcnn.onnx._registry import op, put

def _pool_fn(nd, kind):
    return getattr(P, f"{kind}_pool{nd}d")


def max_pool(input, kernel, stride, pads_begin, pads_end, dilation, ceil_mode, indices=False,
             out=None):
    nd = len(kernel)
    x = input
    if pads_begin != pads_end:
        # asymmetric: pad with -inf explicitly, pool without padding
        widths = [(0, 0), (0, 0)] + list(zip(pads_begin, pads_end))
        x = np.pad(input, widths, constant_values=-np.inf)
        pads = (0,) * nd
    else:
        pads = pads_begin
    if not indices:
        return _pool_fn(nd, "max")(x, kernel, stride, pads, dilation, bool(ceil_mode), out=out)
    y, idx = _pool_fn(nd, "max")(x, kernel, stride, pads, dilation, bool(ceil_mode),
                                 return_indices=True)
    if pads_begin != pads_end:          # back to coordinates of the unpadded input
        coords = np.unravel_index(idx, x.shape[2:])
        idx = np.ravel_multi_index(tuple(c - p for c, p in zip(coords, pads_begin)),
                                   input.shape[2:])
    # ONNX flattens over the whole tensor, not per plane
    planes = np.arange(input.shape[0] * input.shape[1]).reshape(input.shape[:2] + (1,) * nd)
    idx = idx + planes * int(np.prod(input.shape[2:]))
    return y, idx


def avg_pool(input, kernel, stride, pads_begin, pads_end, ceil_mode, count_include_pad,
             out=None):
    nd = len(kernel)
    fn = _pool_fn(nd, "avg")
    if pads_begin == pads_end:
        return fn(input, kernel, stride, pads_begin, bool(ceil_mode), bool(count_include_pad),
                  out=out)
    widths = [(0, 0), (0, 0)] + list(zip(pads_begin, pads_end))
    padded = np.pad(input, widths)
    total = _pool_sum(fn, padded, kernel, stride, ceil_mode)
    if count_include_pad:
        count = _pool_sum(fn, np.ones_like(padded[:1, :1]), kernel, stride, ceil_mode)
    else:
        count = _pool_sum(fn, np.pad(np.ones_like(input[:1, :1]), widths), kernel, stride,
                          ceil_mode)
    return put(out, total / count)


def _pool_sum(fn, x, kernel, stride, ceil_mode):
    kwargs = {} if len(kernel) == 1 else {"divisor_override": 1}
    y = fn(x, kernel, stride, 0, bool(ceil_mode), True, **kwargs)
    return y if kwargs else y * y.dtype.type(np.prod(kernel))


def lp_pool(input, kernel, stride, pads_begin, pads_end, p, out=None):
    """ONNX LpPool: (sum over the window of |x|^p)^(1/p), padding as zeros."""
    widths = [(0, 0), (0, 0)] + list(zip(pads_begin, pads_end))
    x = np.pad(np.abs(input) ** p, widths)
    total = _pool_sum(_pool_fn(len(kernel), "avg"), x, kernel, stride, False)
    return put(out, total ** (1.0 / p))


def _pool_check(node, opset):
    if node.attrs.get("storage_order", 0) != 0:
        return "storage_order=1 is not supported"
    return None


def _needs_windows(kernel, begin, end, dilation, kind):
    """Pooling fastcnn's kernels refuse, as PyTorch's do: padding past half the
    (dilated) window, or dilated average and Lp windows."""
    for k, pb, pe, d in zip(kernel, begin, end, dilation):
        if max(pb, pe) > ((k - 1) * d + 1) // 2 or (kind != "max" and d != 1):
            return True
    return False


def window_pool(input, kind, kernel, stride, begin, end, dilation, ceil_mode,
                count_include_pad=False, p=2.0, out=None):
    """Any ONNX pooling window, from strided views of the padded input: pads of
    any size and dilations for every kind (ONNX allows what PyTorch does not)."""
    nd = len(kernel)
    spatial = input.shape[2:]
    reach = [(k - 1) * d + 1 for k, d in zip(kernel, dilation)]
    outs = []
    for n, r, s, pb, pe in zip(spatial, reach, stride, begin, end):
        span = n + pb + pe - r
        o = (-(-span // s) if ceil_mode else span // s) + 1
        if ceil_mode and (o - 1) * s >= n + pb:
            o -= 1                              # a window must start inside the input
        outs.append(max(o, 0))
    extra = [max(0, (o - 1) * s + r - (n + pb + pe)) for o, s, r, n, pb, pe in
             zip(outs, stride, reach, spatial, begin, end)]
    widths = [(0, 0), (0, 0)] + [(pb, pe + e) for pb, pe, e in zip(begin, end, extra)]
    inside = np.pad(np.ones(spatial, bool), widths[2:])          # the input's positions
    padded_area = np.pad(np.ones([n + pb + pe for n, pb, pe in zip(spatial, begin, end)], bool),
                         [(0, e) for e in extra])                 # input and its pads
    values = np.pad(input, widths)

    def windows(a, lead):
        v = np.lib.stride_tricks.sliding_window_view(a, reach, axis=tuple(range(lead, lead + nd)))
        v = v[(slice(None),) * lead + tuple(slice(None, o * s, s) for o, s in zip(outs, stride))]
        return v[(Ellipsis,) + tuple(slice(None, None, d) for d in dilation)]
    axes = tuple(range(-nd, 0))
    x, mask = windows(values, 2), windows(inside, 0)
    with np.errstate(all="ignore"):
        if kind == "max":
            y = np.where(mask, x, -np.inf).max(axis=axes)
        elif kind == "avg":
            count = windows(padded_area, 0) if count_include_pad else mask
            y = np.where(mask, x, 0).sum(axis=axes) / count.sum(axis=axes)
        else:
            y = (np.where(mask, np.abs(x), 0) ** p).sum(axis=axes) ** (1.0 / p)
    return put(out, np.asarray(y).astype(input.dtype))


@op("MaxPool", _pool_check)
def op_MaxPool(b, node, x):
    kernel = tuple(node.attrs["kernel_shape"])
    strides, begin, end, dilations = spatial_attrs(node, x[0].array, kernel)
    with_indices = len(node.outputs) > 1 and node.outputs[1] != ""
    if not with_indices and _needs_windows(kernel, begin, end, dilations, "max"):
        return b.call("window_pool", window_pool, [x[0], "max", kernel, strides, begin, end,
                                                   dilations, node.attrs.get("ceil_mode", 0)], {})
    ceil_mode = bool(node.attrs.get("ceil_mode", 0))
    if not with_indices and begin == end:
        # the functional op itself, which compiled plans run as a pooling step
        nd = len(kernel)
        return b.call(f"max_pool{nd}d", _pool_fn(nd, "max"),
                      [x[0], kernel, strides, begin, dilations, ceil_mode], {})
    return b.call("max_pool", max_pool, [x[0], kernel, strides, begin, end, dilations,
                                         ceil_mode, with_indices], {},
                  n_out=2 if with_indices else 1)


@op("AveragePool", _pool_check)
def op_AveragePool(b, node, x):
    kernel = tuple(node.attrs["kernel_shape"])
    strides, begin, end, dilations = spatial_attrs(node, x[0].array, kernel)
    if _needs_windows(kernel, begin, end, dilations, "avg"):
        return b.call("window_pool", window_pool, [
            x[0], "avg", kernel, strides, begin, end, dilations, node.attrs.get("ceil_mode", 0),
            node.attrs.get("count_include_pad", 0)], {})
    ceil_mode = bool(node.attrs.get("ceil_mode", 0))
    count_include_pad = bool(node.attrs.get("count_include_pad", 0))
    if begin == end:
        # the functional op itself, which compiled plans run as a pooling step
        nd = len(kernel)
        return b.call(f"avg_pool{nd}d", _pool_fn(nd, "avg"),
                      [x[0], kernel, strides, begin, ceil_mode, count_include_pad], {})
    return b.call("avg_pool", avg_pool, [x[0], kernel, strides, begin, end, ceil_mode,
                                         count_include_pad], {})


@op("LpPool")
def op_LpPool(b, node, x):
    kernel = tuple(node.attrs["kernel_shape"])
    strides, begin, end, dilations = spatial_attrs(node, x[0].array, kernel)
    if _needs_windows(kernel, begin, end, dilations, "lp") or node.attrs.get("ceil_mode", 0):
        return b.call("window_pool", window_pool, [
            x[0], "lp", kernel, strides, begin, end, dilations, node.attrs.get("ceil_mode", 0),
            False, float(node.attrs.get("p", 2))], {})
    return b.call("lp_pool", lp_pool, [x[0], kernel, strides, begin, end,
                                       float(node.attrs.get("p", 2))], {})


def global_lp_pool(input, p=2.0, out=None):
    axes = tuple(range(2, input.ndim))
    return put(out, (np.abs(input) ** p).sum(axis=axes, keepdims=True) ** (1.0 / p))


def _global_pool(b, node, x, kind):
    """Global average or max pooling as the functional adaptive op of output
    size 1, which compiled plans run as a pooling step."""
    nd = x.array.ndim - 2
    if not 1 <= nd <= 3:
        raise ValueError(f"onnx: {node.op_type} {node.name!r}: expected an input with 1-3 "
                         f"spatial dimensions, got shape {x.array.shape}")
    name = f"adaptive_{kind}_pool{nd}d"
    return b.call(name, getattr(P, name), [x, 1], {})


@op("GlobalAveragePool")
def op_GlobalAveragePool(b, node, x):
    return _global_pool(b, node, x[0], "avg")


@op("GlobalMaxPool")
def op_GlobalMaxPool(b, node, x):
    return _global_pool(b, node, x[0], "max")


@op("GlobalLpPool")
def op_GlobalLpPool(b, node, x):
    return b.call("global_lp_pool", global_lp_pool, [x[0], float(node.attrs.get("p", 2))], {})

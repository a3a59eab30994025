"""ONNX operators that move data: shapes, slicing, gathering, padding,
reductions (resizing: _ops_resize)."""
import math

import numpy as np

from fastcnn.onnx._registry import OPS, ints, op, put, rows_cols


# ---------------------------------------------------------------- shapes and data movement


def reshape(data, shape, out=None):
    return data.reshape(shape)


def _resolve_shape(data_shape, shape, allowzero):
    shape = list(shape)
    if not allowzero:
        shape = [data_shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return tuple(shape)


def _infer_minus_one(data_shape, target, node):
    """target with its -1 resolved. With no elements (an empty batch) the
    size is ambiguous, and ONNX Runtime and PyTorch reject it; fastcnn
    resolves it as if each empty dimension held one element, the shape a
    batch of one would have, so an empty batch flows through a network
    whose graph reshapes to (batch, -1)."""
    known = [s for s in target if s != -1]
    if len(known) < len(target) - 1 or any(s < -1 for s in target):
        raise ValueError(f"onnx: {node.op_type} {node.name!r}: shape {list(target)} may hold one "
                         f"-1 and no other negative size")
    if len(known) == len(target):
        if math.prod(target) != math.prod(data_shape):
            raise ValueError(f"onnx: {node.op_type} {node.name!r}: cannot reshape data of shape "
                             f"{tuple(data_shape)} into {tuple(target)}")
        return tuple(target)
    have = math.prod(max(d, 1) for d in data_shape) if 0 in data_shape else math.prod(data_shape)
    per = math.prod(max(s, 1) for s in known) if 0 in data_shape else math.prod(known)
    if per == 0 or have % per:
        raise ValueError(f"onnx: {node.op_type} {node.name!r}: cannot reshape data of shape "
                         f"{tuple(data_shape)} into {tuple(target)}")
    return tuple(have // per if s == -1 else s for s in target)


@op("Reshape")
def op_Reshape(b, node, x):
    if b.opset < 5:
        shape = node.attrs["shape"]
    else:
        if not x[1].const:
            return b.unsupported(node, "a shape that is not constant")
        shape = ints(x[1])
    target = _resolve_shape(x[0].array.shape, shape, int(node.attrs.get("allowzero", 0)))
    target = _infer_minus_one(x[0].array.shape, target, node)
    return b.call("reshape", reshape, [x[0], target], {}, view=True)




def flatten(data, axis, out=None):
    return data.reshape(rows_cols(data.shape, axis))


@op("Flatten")
def op_Flatten(b, node, x):
    axis = int(node.attrs.get("axis", 1))
    axis = axis + x[0].array.ndim if axis < 0 else axis
    return b.call("reshape", flatten, [x[0], axis], {}, view=True)


def transpose(data, perm, out=None):
    return put(out, np.transpose(data, perm))


@op("Transpose")
def op_Transpose(b, node, x):
    perm = node.attrs.get("perm")
    perm = tuple(perm) if perm is not None else tuple(reversed(range(x[0].array.ndim)))
    return b.call("transpose", transpose, [x[0], perm], {})


def _axes(b, node, x, index):
    if "axes" in node.attrs:
        return [int(a) for a in node.attrs["axes"]]
    if len(x) > index and x[index] is not None:
        if not x[index].const:
            return None
        return ints(x[index])
    return []


def squeeze(data, axes, out=None):
    return np.squeeze(data, axis=axes) if axes else np.squeeze(data)


def unsqueeze(data, axes, out=None):
    return np.expand_dims(data, axes)


@op("Squeeze")
def op_Squeeze(b, node, x):
    axes = _axes(b, node, x, 1)
    if axes is None:
        return b.unsupported(node, "axes that are not constant")
    axes = tuple(a % x[0].array.ndim for a in axes)
    return b.call("reshape", squeeze, [x[0], axes], {}, view=True)


@op("Unsqueeze")
def op_Unsqueeze(b, node, x):
    axes = _axes(b, node, x, 1)
    if axes is None:
        return b.unsupported(node, "axes that are not constant")
    rank = x[0].array.ndim + len(axes)
    return b.call("reshape", unsqueeze, [x[0], tuple(sorted(a % rank for a in axes))], {}, view=True)


def concat(*arrays, axis, out=None):
    return put(out, np.concatenate(arrays, axis=axis))


@op("Concat")
def op_Concat(b, node, x):
    arrays = [e for e in x if e is not None]
    axis = int(node.attrs["axis"]) % max(arrays[0].array.ndim, 1)
    return b.call("concatenate", concat, arrays, {"axis": axis})


def split(data, sections, axis, out=None):
    return tuple(np.split(data, np.cumsum(sections)[:-1], axis=axis))


@op("Split")
def op_Split(b, node, x):
    axis = int(node.attrs.get("axis", 0)) % x[0].array.ndim
    size = x[0].array.shape[axis]
    n = len(node.outputs)
    if "split" in node.attrs:
        sections = [int(s) for s in node.attrs["split"]]
    elif len(x) > 1 and x[1] is not None:
        if not x[1].const:
            return b.unsupported(node, "split sizes that are not constant")
        sections = ints(x[1])
    else:
        n = int(node.attrs.get("num_outputs", n))
        step = -(-size // n)
        sections = [min(step, size - i * step) for i in range(n)]
    return b.call("split", split, [x[0], tuple(sections), axis], {}, n_out=len(sections))


def slice_(data, key, out=None):
    return put(out, data[key])


@op("Slice")
def op_Slice(b, node, x):
    data = x[0].array
    if b.opset < 10:
        starts, ends = node.attrs["starts"], node.attrs["ends"]
        axes = node.attrs.get("axes", list(range(len(starts))))
        steps = [1] * len(starts)
    else:
        if any(e is not None and not e.const for e in x[1:]):
            return b.unsupported(node, "starts, ends, axes or steps that are not constant")
        starts, ends = ints(x[1]), ints(x[2])
        axes = ints(x[3]) if len(x) > 3 and x[3] is not None else list(range(len(starts)))
        steps = ints(x[4]) if len(x) > 4 and x[4] is not None else [1] * len(starts)
    key = [slice(None)] * data.ndim
    for s, e, a, st in zip(starts, ends, axes, steps):
        a = a % data.ndim
        dim = data.shape[a]
        s = max(-dim - 1, min(s, dim)) if abs(s) < 2**62 else (dim if s > 0 else -dim - 1)
        e = max(-dim - 1, min(e, dim)) if abs(e) < 2**62 else (dim if e > 0 else -dim - 1)
        if st < 0:
            s = min(s, dim - 1) if s >= 0 else s
            e = None if e < -dim else e
        key[a] = slice(s, e, st)
    return b.call("slice", slice_, [x[0], tuple(key)], {})


def gather(data, indices, axis, out=None):
    idx = np.where(indices < 0, indices + data.shape[axis], indices)
    return put(out, np.take(data, idx, axis=axis))


@op("Gather")
def op_Gather(b, node, x):
    axis = int(node.attrs.get("axis", 0)) % max(x[0].array.ndim, 1)
    return b.call("gather", gather, [x[0], x[1], axis], {})


def pad(data, pads, mode, value, out=None):
    nd = data.ndim
    widths = list(zip(pads[:nd], pads[nd:]))
    if any(p < 0 for pair in widths for p in pair):
        key = tuple(slice(-b if b < 0 else None, e if e < 0 else None) for b, e in widths)
        data = data[key]
        widths = [(max(b, 0), max(e, 0)) for b, e in widths]
    if mode == "constant":
        return put(out, np.pad(data, widths, constant_values=value))
    return put(out, np.pad(data, widths, mode={"reflect": "reflect", "edge": "edge"}[mode]))


@op("Pad", lambda n, o: None if (n.attrs.get("mode", b"constant").decode()
                                 if isinstance(n.attrs.get("mode", b"constant"), bytes)
                                 else n.attrs.get("mode", "constant")) in ("constant", "reflect", "edge")
    else "only modes constant, reflect and edge are supported")
def op_Pad(b, node, x):
    mode = node.attrs.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if b.opset < 11:
        pads = node.attrs["pads"]
        value = float(node.attrs.get("value", 0.0))
    else:
        if not x[1].const or (len(x) > 2 and x[2] is not None and not x[2].const):
            return b.unsupported(node, "pads that are not constant")
        pads = ints(x[1])
        value = float(np.asarray(x[2].array).reshape(-1)[0]) if len(x) > 2 and x[2] is not None and np.size(x[2].array) else 0.0
        if len(x) > 3 and x[3] is not None:
            axes = [a % x[0].array.ndim for a in ints(x[3])]
            full = [0] * (2 * x[0].array.ndim)
            for k, a in enumerate(axes):
                full[a], full[a + x[0].array.ndim] = pads[k], pads[k + len(axes)]
            pads = full
    return b.call("pad", pad, [x[0], tuple(pads), mode, value], {})


@op("Identity")
def op_Identity(b, node, x):
    return [x[0]]


def dropout_training(data, ratio, seed, out=None):
    """ONNX Dropout with training_mode true: keep each value with probability
    1 - ratio, scaled by 1 / (1 - ratio); the mask drawn as ONNX's reference
    draws it (RandomState(seed).uniform), so a seeded node repeats itself."""
    rng = np.random.RandomState(seed) if seed is not None else np.random.RandomState()
    mask = rng.uniform(0, 1.0, data.shape) >= ratio
    return (mask * data * data.dtype.type(1 / (1 - ratio))).astype(data.dtype), mask


@op("Dropout")
def op_Dropout(b, node, x):
    with_mask = len(node.outputs) > 1 and bool(node.outputs[1])
    training = len(x) > 2 and x[2] is not None
    if training and not x[2].const:
        return b.unsupported(node, "a training_mode that is not constant")
    if training and bool(np.asarray(x[2].array)):
        ratio = x[1] if len(x) > 1 and x[1] is not None else None
        if ratio is not None and not ratio.const:
            return b.unsupported(node, "a ratio that is not constant")
        ratio = 0.5 if ratio is None else float(np.asarray(ratio.array))
        if ratio > 0:
            seed = int(node.attrs["seed"]) if "seed" in node.attrs else None
            outs = b.call("dropout_training", dropout_training, [x[0], ratio, seed], {},
                          n_out=2)
            return outs if with_mask else outs[:1]
    outs = [x[0]]
    if with_mask:
        outs.append(b.const(np.ones(x[0].array.shape, bool)))
    return outs


@op("Constant")
def op_Constant(b, node, x):
    return [b.const(b.constant_value(node))]


@op("ConstantOfShape")
def op_ConstantOfShape(b, node, x):
    if not x[0].const:
        return b.unsupported(node, "a shape that is not constant")
    value = node.attrs.get("value")
    value = np.zeros(1, np.float32) if value is None else b.tensor(value)
    return [b.const(np.full(ints(x[0]), value.reshape(-1)[0], value.dtype))]


@op("Shape")
def op_Shape(b, node, x):
    shape = np.array(x[0].array.shape, np.int64)
    start = int(node.attrs.get("start", 0))
    end = node.attrs.get("end")
    return [b.const(shape[start:None if end is None else int(end)])]


def cast(data, dtype, out=None):
    return put(out, data.astype(dtype))


@op("Cast")
def op_Cast(b, node, x):
    return b.call("cast", cast, [x[0], b.dtype(int(node.attrs["to"]))], {})


def _log_sum_exp(data, axis, keepdims):
    if data.size == 0:
        return np.log(np.sum(np.exp(data), axis=axis, keepdims=keepdims))
    top = np.max(data, axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0)
    y = np.log(np.sum(np.exp(data - top), axis=axis, keepdims=True)) + top
    return y if keepdims else np.squeeze(y, axis=axis)


_REDUCTIONS = {
    "mean": np.mean, "max": np.max, "min": np.min, "sum": np.sum, "prod": np.prod,
    "l1": lambda d, axis, keepdims: np.sum(np.abs(d), axis=axis, keepdims=keepdims),
    "l2": lambda d, axis, keepdims: np.sqrt(np.sum(np.square(d), axis=axis, keepdims=keepdims)),
    "sum_square": lambda d, axis, keepdims: np.sum(np.square(d), axis=axis, keepdims=keepdims),
    "log_sum": lambda d, axis, keepdims: np.log(np.sum(d, axis=axis, keepdims=keepdims)),
    "log_sum_exp": _log_sum_exp,
}


def reduce(data, kind, axes, keepdims, out=None):
    if axes is None:
        axes = tuple(range(data.ndim))
    if data.size == 0 and kind in ("max", "min"):     # ONNX: the identity of the reduction
        shape = tuple(1 if a in axes else n for a, n in enumerate(data.shape)) if keepdims \
            else tuple(n for a, n in enumerate(data.shape) if a not in axes)
        fill = -np.inf if kind == "max" else np.inf
        return put(out, np.full(shape, fill if data.dtype.kind == "f" else
                                (np.iinfo(data.dtype).min if kind == "max"
                                 else np.iinfo(data.dtype).max), data.dtype))
    with np.errstate(all="ignore"):
        y = _REDUCTIONS[kind](data, axis=axes, keepdims=bool(keepdims))
    return put(out, np.asarray(y).astype(data.dtype))


def _reduce_builder(kind, axes_input_from):
    def builder(b, node, x):
        if b.opset >= axes_input_from:
            axes = _axes(b, node, x, 1)
            if axes is None:
                return b.unsupported(node, "axes that are not constant")
        else:
            axes = [int(a) for a in node.attrs.get("axes", [])]
        if not axes:
            if int(node.attrs.get("noop_with_empty_axes", 0)):
                return [x[0]]
            axes = None
        else:
            axes = tuple(a % x[0].array.ndim for a in axes)
        return b.call(f"reduce_{kind}", reduce, [x[0], kind, axes, int(node.attrs.get("keepdims", 1))], {})
    return builder


# ONNX name -> (kind, the opset from which axes are an input rather than an attribute)
for _name, (_kind, _axes_from) in {
        "ReduceMean": ("mean", 18), "ReduceMax": ("max", 18), "ReduceMin": ("min", 18),
        "ReduceSum": ("sum", 13), "ReduceProd": ("prod", 18), "ReduceL1": ("l1", 18),
        "ReduceL2": ("l2", 18), "ReduceSumSquare": ("sum_square", 18),
        "ReduceLogSum": ("log_sum", 18), "ReduceLogSumExp": ("log_sum_exp", 18)}.items():
    OPS[_name] = (_reduce_builder(_kind, _axes_from), None)

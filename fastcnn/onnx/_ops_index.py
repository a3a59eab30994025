"""ONNX operators that index and repeat: ArgMax/ArgMin, TopK, Expand, Tile,
Range, DepthToSpace/SpaceToDepth."""
import numpy as np

from fastcnn.onnx._registry import attr_str, ints, op, put



# ---------------------------------------------------------------- arg max / arg min, top k

def arg_extreme(data, kind, axis, keepdims, select_last, out=None):
    if select_last:                         # the last of equal extremes: search reversed
        flipped = np.flip(data, axis=axis)
        idx = data.shape[axis] - 1 - (np.argmax if kind == "max" else np.argmin)(flipped, axis=axis)
    else:
        idx = (np.argmax if kind == "max" else np.argmin)(data, axis=axis)
    if keepdims:
        idx = np.expand_dims(idx, axis)
    return put(out, idx.astype(np.int64))


def _arg_builder(kind):
    def builder(b, node, x):
        axis = int(node.attrs.get("axis", 0)) % max(x[0].array.ndim, 1)
        return b.call(f"arg{kind}", arg_extreme,
                      [x[0], kind, axis, int(node.attrs.get("keepdims", 1)),
                       int(node.attrs.get("select_last_index", 0))], {})
    return builder


op("ArgMax")(_arg_builder("max"))
op("ArgMin")(_arg_builder("min"))


def top_k(data, k, axis, largest, out=None):
    """ONNX TopK: the k largest (or smallest) along axis, sorted, ties by lower
    index first; values and int64 indices."""
    keys = -data if largest else data
    if data.dtype.kind == "f":               # NaN counts as the largest value
        keys = np.where(np.isnan(data), -np.inf if largest else np.inf, keys)
    idx = np.argsort(keys, axis=axis, kind="stable")
    idx = np.take(idx, np.arange(k), axis=axis)
    return np.take_along_axis(data, idx, axis=axis), idx.astype(np.int64)


@op("TopK", lambda n, o: None if int(n.attrs.get("sorted", 1)) else
    "sorted=0 (fastcnn always sorts; the order is then unspecified in ONNX)")
def op_TopK(b, node, x):
    data = x[0].array
    axis = int(node.attrs.get("axis", -1)) % max(data.ndim, 1)
    if b.opset < 10:
        k = int(node.attrs["k"])
    elif not x[1].const:
        return b.unsupported(node, "a k that is not constant")
    else:
        k = ints(x[1])[0]
    if not 0 <= k <= data.shape[axis]:
        raise ValueError(f"onnx: TopK {node.name!r}: k = {k} is outside 0..{data.shape[axis]}")
    return b.call("top_k", top_k, [x[0], k, axis, int(node.attrs.get("largest", 1))], {},
                  n_out=2)


# ---------------------------------------------------------------- repetition, ranges

def expand(data, shape, out=None):
    return put(out, np.broadcast_to(data, np.broadcast_shapes(data.shape, tuple(shape))).copy())


@op("Expand")
def op_Expand(b, node, x):
    if not x[1].const:
        return b.unsupported(node, "a shape that is not constant")
    return b.call("expand", expand, [x[0], tuple(ints(x[1]))], {})


def tile(data, repeats, out=None):
    return put(out, np.tile(data, repeats))


@op("Tile")
def op_Tile(b, node, x):
    if not x[1].const:
        return b.unsupported(node, "repeats that are not constant")
    return b.call("tile", tile, [x[0], tuple(ints(x[1]))], {})


@op("Range")
def op_Range(b, node, x):
    if not all(e.const for e in x):
        return b.unsupported(node, "start, limit and delta that are not constant")
    start, limit, delta = (np.asarray(e.array).reshape(()) for e in x)
    dtype = np.result_type(start, limit, delta)
    n = max(int(np.ceil((limit - start) / delta)), 0)
    return [b.const((start + np.arange(n, dtype=dtype) * delta).astype(dtype))]


# ---------------------------------------------------------------- depth <-> space

def depth_to_space(data, block, mode, out=None):
    n, c, h, w = data.shape
    if mode == "DCR":
        y = data.reshape(n, block, block, c // block ** 2, h, w).transpose(0, 3, 4, 1, 5, 2)
    else:                                   # CRD, as PyTorch's pixel_shuffle
        y = data.reshape(n, c // block ** 2, block, block, h, w).transpose(0, 1, 4, 2, 5, 3)
    return put(out, y.reshape(n, c // block ** 2, h * block, w * block))


def space_to_depth(data, block, mode, out=None):
    n, c, h, w = data.shape
    y = data.reshape(n, c, h // block, block, w // block, block)
    y = y.transpose(0, 3, 5, 1, 2, 4) if mode == "DCR" else y.transpose(0, 1, 3, 5, 2, 4)
    return put(out, y.reshape(n, c * block ** 2, h // block, w // block))


def _block(node, data, channels_divisible):
    block = int(node.attrs["blocksize"])
    if data.ndim != 4 or block < 1:
        raise ValueError(f"onnx: {node.op_type} {node.name!r}: needs a 4-D input and "
                         f"blocksize >= 1, got shape {data.shape} and blocksize {block}")
    n, c, h, w = data.shape
    if (c % block ** 2) if channels_divisible else (h % block or w % block):
        raise ValueError(f"onnx: {node.op_type} {node.name!r}: shape {data.shape} does not "
                         f"divide by blocksize {block}")
    return block


@op("DepthToSpace")
def op_DepthToSpace(b, node, x):
    mode = attr_str(node, "mode", "DCR")
    return b.call("depth_to_space", depth_to_space,
                  [x[0], _block(node, x[0].array, True), mode], {})


@op("SpaceToDepth")
def op_SpaceToDepth(b, node, x):
    mode = attr_str(node, "mode", "DCR")
    return b.call("space_to_depth", space_to_depth,
                  [x[0], _block(node, x[0].array, False), mode], {})

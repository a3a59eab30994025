"""fastcnn ops in ONNX form, for export: one translator per traced op,
registered in EXPORTS by the op's name. A translator takes the exporter (its
naming and emit), the traced node, the node's bound arguments and the node's
scope, and returns the ONNX name of the node's output."""
import numpy as np

from fastcnn._functional.conv import conv_padding
from fastcnn._graph import Value

EXPORTS = {}     # traced op name -> translator


def exports(*ops):
    def register(fn):
        for op in ops:
            EXPORTS[op] = fn
        return fn
    return register


def activation(ex, x, name, scope):
    if name is None:
        return x
    if name == "relu":
        return ex.emit("Relu", [x], scope)
    if name == "relu6":
        return ex.emit("Clip", [x, ex.const(np.float32(0)), ex.const(np.float32(6))], scope)
    if name == "silu":
        return ex.emit("Mul", [x, ex.emit("Sigmoid", [x], scope)], scope)
    raise ValueError(f"fastcnn.onnx.export: fused activation {name!r} has no ONNX form")


@exports("conv1d", "conv2d", "conv3d", "conv")
def conv(ex, node, b, scope):
    if b.get("padding_mode", "zeros") != "zeros":
        raise ValueError(f"fastcnn.onnx.export: {scope}: padding_mode "
                         f"{b['padding_mode']!r} has no ONNX Conv form")
    nd, w = b["nd"], b["weight"]
    kernel = tuple(w.shape[2:])
    stride = _tup(b["stride"], nd)
    dilation = _tup(b["dilation"], nd)
    before, after = conv_padding(b["padding"], nd, kernel, stride, dilation, "export")
    inputs = [ex.name(b["input"]), ex.name(w)]
    if b.get("bias") is not None:
        inputs.append(ex.name(b["bias"]))
    y = ex.emit("Conv", inputs, scope, kernel_shape=list(kernel), strides=list(stride),
                  pads=list(before) + list(after), dilations=list(dilation),
                  group=int(b["groups"]))
    return activation(ex, y, b.get("activation"), scope)


@exports("conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "conv_transpose")
def conv_transpose(ex, node, b, scope):
    w = b["weight"]
    nd = len(w.shape) - 2
    inputs = [ex.name(b["input"]), ex.name(w)]
    if b.get("bias") is not None:
        inputs.append(ex.name(b["bias"]))
    pads = _tup(b.get("padding", 0), nd)
    return ex.emit("ConvTranspose", inputs, scope, kernel_shape=list(w.shape[2:]),
                   strides=list(_tup(b.get("stride", 1), nd)), pads=list(pads) * 2,
                   output_padding=list(_tup(b.get("output_padding", 0), nd)),
                   dilations=list(_tup(b.get("dilation", 1), nd)), group=int(b.get("groups", 1)))


@exports("pixel_shuffle")
def pixel_shuffle(ex, node, b, scope):
    if len(b["input"].shape) != 4:
        raise ValueError(f"fastcnn.onnx.export: {scope}: pixel_shuffle of a "
                         f"{len(b['input'].shape)}-D input has no ONNX form (DepthToSpace is 4-D)")
    return ex.emit("DepthToSpace", [ex.name(b["input"])], scope,
                   blocksize=int(b["upscale_factor"]), mode="CRD")


@exports("pixel_unshuffle")
def pixel_unshuffle(ex, node, b, scope):
    """Reshape, Transpose, Reshape (SpaceToDepth's CRD order needs opset 25)."""
    x = b["input"]
    if len(x.shape) != 4:
        raise ValueError(f"fastcnn.onnx.export: {scope}: pixel_unshuffle of a "
                         f"{len(x.shape)}-D input has no ONNX form fastcnn writes")
    _, c, h, w = x.shape
    r = int(b["downscale_factor"])
    y = ex.emit("Reshape", [ex.name(x), ex.const(np.array([-1, c, h // r, r, w // r, r],
                                                           np.int64), "shape")], scope)
    y = ex.emit("Transpose", [y], scope, perm=[0, 1, 3, 5, 2, 4])
    return ex.emit("Reshape", [y, ex.const(np.array([-1, c * r * r, h // r, w // r], np.int64),
                                           "shape")], scope)


@exports("pad")
def pad(ex, node, b, scope):
    x = b["input"]
    amounts = [int(v) for v in b["pad"]]
    axes = len(amounts) // 2
    rank = len(x.shape)
    begin = [0] * (rank - axes) + [amounts[2 * k] for k in reversed(range(axes))]
    end = [0] * (rank - axes) + [amounts[2 * k + 1] for k in reversed(range(axes))]
    mode = {"constant": "constant", "reflect": "reflect", "replicate": "edge",
            "circular": "wrap"}[b.get("mode", "constant")]
    if mode == "wrap" and ex.opset < 19:
        raise ValueError(f"fastcnn.onnx.export: {scope}: circular padding needs opset 19")
    inputs = [ex.name(x), ex.const(np.array(begin + end, np.int64), "pads")]
    if mode == "constant":
        inputs.append(ex.const(np.array(b.get("value") or 0, x.dtype), "value"))
    return ex.emit("Pad", inputs, scope, mode=mode)


@exports("interpolate")
def interpolate(ex, node, b, scope):
    x = b["input"]
    mode = b.get("mode", "nearest")
    nd = len(x.shape) - 2
    if mode == "area" or b.get("antialias"):
        raise ValueError(f"fastcnn.onnx.export: {scope}: interpolate mode {mode!r}"
                         f"{' with antialias' if b.get('antialias') else ''} has no ONNX "
                         f"Resize form fastcnn writes")
    align = bool(b.get("align_corners"))
    attrs = {"nearest": dict(mode="nearest", coordinate_transformation_mode="asymmetric",
                             nearest_mode="floor"),
             "nearest-exact": dict(mode="nearest", nearest_mode="floor",
                                   coordinate_transformation_mode="tf_half_pixel_for_nn")
             }.get(mode, dict(mode="cubic" if mode == "bicubic" else "linear",
                              coordinate_transformation_mode="align_corners" if align
                              else "half_pixel", cubic_coeff_a=-0.75))
    scale = b.get("scale_factor")
    roi = ex.const(np.array([], np.float32), "roi")
    if scale is not None and not b.get("recompute_scale_factor") and not align:
        factors = list(scale) if isinstance(scale, (tuple, list)) else [scale] * nd
        inputs = [ex.name(x), roi, ex.const(np.array([1.0, 1.0] + [float(f) for f in factors],
                                                     np.float32), "scales")]
    else:
        sizes = list(node.outputs[0].shape)
        inputs = [ex.name(x), roi, ex.const(np.array([], np.float32), "scales")]
        if ex.dynamic_batch:            # sizes of the resized axes only (the batch stays open)
            return ex.emit("Resize", inputs + [ex.const(np.array(sizes[2:], np.int64),
                                                          "sizes")],
                           scope, axes=list(range(2, 2 + nd)), **attrs) if ex.opset >= 18 \
                else _resize_sizes(ex, x, inputs, sizes, scope, attrs)
        inputs.append(ex.const(np.array(sizes, np.int64), "sizes"))
    return ex.emit("Resize", inputs, scope, **attrs)


def _resize_sizes(ex, x, inputs, sizes, scope, attrs):
    """Opset 17: sizes for every axis, the batch and channels from the input's shape."""
    lead = ex.emit("Slice", [ex.emit("Shape", [ex.name(x)], scope),
                             ex.const(np.array([0], np.int64)), ex.const(np.array([2], np.int64))],
                   scope)
    full = ex.emit("Concat", [lead, ex.const(np.array(sizes[2:], np.int64))], scope, axis=0)
    return ex.emit("Resize", inputs + [full], scope, **attrs)


@exports("linear")
def linear(ex, node, b, scope):
    x, w, bias = b["input"], b["weight"], b.get("bias")
    if len(x.shape) == 2:
        inputs = [ex.name(x), ex.name(w)] + ([ex.name(bias)] if bias is not None else [])
        y = ex.emit("Gemm", inputs, scope, transB=1)
    else:
        wt = ex.const(np.ascontiguousarray(w.const.T), "weight_t")
        y = ex.emit("MatMul", [ex.name(x), wt], scope)
        if bias is not None:
            y = ex.emit("Add", [y, ex.name(bias)], scope)
    return activation(ex, y, b.get("activation"), scope)


def _affine_defaults(ex, b, c, dtype):
    w = b.get("weight")
    bias = b.get("bias")
    w = ex.name(w) if w is not None else ex.const(np.ones(c, dtype), "ones")
    bias = ex.name(bias) if bias is not None else ex.const(np.zeros(c, dtype), "zeros")
    return w, bias


@exports("batch_norm")
def batch_norm(ex, node, b, scope):
    if b.get("training"):
        raise ValueError(f"fastcnn.onnx.export: {scope}: batch_norm in training mode")
    x = b["input"]
    w, bias = _affine_defaults(ex, b, x.shape[1], x.dtype)
    y = ex.emit("BatchNormalization", [ex.name(x), w, bias, ex.name(b["running_mean"]),
                                         ex.name(b["running_var"])], scope,
                  epsilon=float(b["eps"]))
    return activation(ex, y, b.get("activation"), scope)


@exports("instance_norm")
def instance_norm(ex, node, b, scope):
    x = b["input"]
    if not b.get("use_input_stats", True):
        raise ValueError(f"fastcnn.onnx.export: {scope}: instance_norm with running "
                         f"statistics has no ONNX form")
    w, bias = _affine_defaults(ex, b, x.shape[1], x.dtype)
    y = ex.emit("InstanceNormalization", [ex.name(x), w, bias], scope,
                  epsilon=float(b["eps"]))
    return activation(ex, y, b.get("activation"), scope)


@exports("group_norm")
def group_norm(ex, node, b, scope):
    """(N, C, ...) -> (N, G, -1), instance-normalized, back, then the
    per-channel affine: valid in every opset."""
    x = b["input"]
    g, c = int(b["num_groups"]), x.shape[1]
    dtype = x.dtype
    xs = ex.name(x)
    grouped = ex.emit("Reshape", [xs, ex.const(np.array([0, g, -1], np.int64))], scope)
    normed = ex.emit("InstanceNormalization", [grouped, ex.const(np.ones(g, dtype)),
                                                 ex.const(np.zeros(g, dtype))], scope,
                       epsilon=float(b["eps"]))
    y = ex.emit("Reshape", [normed, ex.emit("Shape", [xs], scope)], scope)
    bshape = (c,) + (1,) * (len(x.shape) - 2)
    for key, op in (("weight", "Mul"), ("bias", "Add")):
        p = b.get(key)
        if p is not None:
            hint = ex.param_names.get(id(p.const), f"group_norm_{key}")
            y = ex.emit(op, [y, ex.const(p.const.reshape(bshape), hint)], scope)
    return activation(ex, y, b.get("activation"), scope)


@exports("layer_norm")
def layer_norm(ex, node, b, scope):
    x = b["input"]
    shape = tuple(np.atleast_1d(b["normalized_shape"]))
    w, bias = _affine_defaults(ex, b, 1, x.dtype)
    if b.get("weight") is None:
        w = ex.const(np.ones(shape, x.dtype), "ones")
    if b.get("bias") is None:
        bias = ex.const(np.zeros(shape, x.dtype), "zeros")
    y = ex.emit("LayerNormalization", [ex.name(x), w, bias], scope, axis=-len(shape),
                  epsilon=float(b["eps"]))
    return activation(ex, y, b.get("activation"), scope)


# ------------------------------------------------------------ element-wise
def _unary(op, onnx_op):
    def run(ex, node, b, scope):
        return ex.emit(onnx_op, [ex.name(b["input"])], scope)
    EXPORTS[op] = run


for _op, _onnx_op in (("relu", "Relu"), ("sigmoid", "Sigmoid"), ("tanh", "Tanh"),
                      ("hardswish", "HardSwish")):
    _unary(_op, _onnx_op)


@exports("mish")
def mish(ex, node, b, scope):
    x = ex.name(b["input"])
    if ex.opset >= 18:
        return ex.emit("Mish", [x], scope)
    return ex.emit("Mul", [x, ex.emit("Tanh", [ex.emit("Softplus", [x], scope)], scope)],
                     scope)


@exports("relu6")
def relu6(ex, node, b, scope):
    return activation(ex, ex.name(b["input"]), "relu6", scope)


@exports("silu")
def silu(ex, node, b, scope):
    return activation(ex, ex.name(b["input"]), "silu", scope)


@exports("hardtanh")
def hardtanh(ex, node, b, scope):
    return ex.emit("Clip", [ex.name(b["input"]), ex.const(np.float32(b["min_val"])),
                              ex.const(np.float32(b["max_val"]))], scope)


@exports("leaky_relu")
def leaky_relu(ex, node, b, scope):
    return ex.emit("LeakyRelu", [ex.name(b["input"])], scope,
                     alpha=float(b["negative_slope"]))


@exports("elu")
def elu(ex, node, b, scope):
    return ex.emit("Elu", [ex.name(b["input"])], scope, alpha=float(b["alpha"]))


@exports("hardsigmoid")
def hardsigmoid(ex, node, b, scope):
    return ex.emit("HardSigmoid", [ex.name(b["input"])], scope, alpha=1 / 6, beta=0.5)


@exports("gelu")
def gelu(ex, node, b, scope):
    x = ex.name(b["input"])
    if ex.opset >= 20:
        return ex.emit("Gelu", [x], scope, approximate=b.get("approximate", "none"))
    if b.get("approximate", "none") != "none":
        raise ValueError("fastcnn.onnx.export: gelu(approximate='tanh') needs opset 20")
    dt = np.dtype(b["input"].dtype)
    half = ex.emit("Mul", [x, ex.const(np.array(0.5, dt))], scope)
    erf = ex.emit("Erf", [ex.emit("Mul", [x, ex.const(np.array(2 ** -0.5, dt))], scope)],
                    scope)
    return ex.emit("Mul", [half, ex.emit("Add", [erf, ex.const(np.array(1, dt))], scope)],
                     scope)


@exports("softmax")
def softmax(ex, node, b, scope, kind="Softmax"):
    x = b["input"]
    dim = b.get("dim")
    dim = (0 if len(x.shape) in (0, 1, 3) else 1) if dim is None else dim
    return ex.emit(kind, [ex.name(x)], scope, axis=int(dim))


@exports("log_softmax")
def log_softmax(ex, node, b, scope):
    return softmax(ex, node, b, scope, "LogSoftmax")


def _binary(op, onnx_op):
    def run(ex, node, b, scope):
        args = b["args"]
        dtype = next(a.dtype for a in args if isinstance(a, Value))
        return ex.emit(onnx_op, [ex.name(a, dtype) for a in args], scope)
    EXPORTS[op] = run


for _op, _onnx_op in (("add", "Add"), ("subtract", "Sub"), ("multiply", "Mul"),
                      ("true_divide", "Div"), ("divide", "Div"), ("maximum", "Max"),
                      ("minimum", "Min")):
    _binary(_op, _onnx_op)


# ------------------------------------------------------------ pooling
def _pool(ex, b, scope, kind, nd):
    kernel = _tup(b["kernel_size"], nd)
    stride = _tup(b.get("stride") or kernel, nd)
    pad = _tup(b.get("padding", 0), nd)
    attrs = dict(kernel_shape=list(kernel), strides=list(stride), pads=list(pad) * 2,
                 ceil_mode=int(bool(b.get("ceil_mode", False))))
    if kind == "MaxPool":
        if b.get("return_indices"):
            raise ValueError(f"fastcnn.onnx.export: {scope}: max pooling with indices")
        attrs["dilations"] = list(_tup(b.get("dilation", 1), nd))
    else:
        if b.get("divisor_override") is not None:
            raise ValueError(f"fastcnn.onnx.export: {scope}: avg pooling with divisor_override")
        attrs["count_include_pad"] = int(bool(b.get("count_include_pad", True)))
    return ex.emit(kind, [ex.name(b["input"])], scope, **attrs)


def _pooling(op, kind, nd):
    def run(ex, node, b, scope):
        return _pool(ex, b, scope, kind, nd)
    EXPORTS[op] = run


for _nd in (1, 2, 3):
    _pooling(f"max_pool{_nd}d", "MaxPool", _nd)
    _pooling(f"avg_pool{_nd}d", "AveragePool", _nd)


def _adaptive(ex, node, b, scope, kind):
    x = b["input"]
    src, dst = x.shape[2:], node.outputs[0].shape[2:]
    if all(d == 1 for d in dst):
        return ex.emit(f"Global{kind}", [ex.name(x)], scope)
    if any(s % d for s, d in zip(src, dst)):
        raise ValueError(f"fastcnn.onnx.export: {scope}: adaptive pooling from {src} to "
                         f"{dst} (not a whole-window pooling) has no ONNX form")
    k = [s // d for s, d in zip(src, dst)]
    return ex.emit(kind, [ex.name(x)], scope, kernel_shape=k, strides=k)


@exports("adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_avg_pool3d")
def adaptive_avg_pool1d(ex, node, b, scope):
    return _adaptive(ex, node, b, scope, "AveragePool")


@exports("adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d")
def adaptive_max_pool1d(ex, node, b, scope):
    if b.get("return_indices"):
        raise ValueError(f"fastcnn.onnx.export: {scope}: max pooling with indices")
    return _adaptive(ex, node, b, scope, "MaxPool")


# ------------------------------------------------------------ shapes
def _target_shape(ex, node):
    shape = list(node.outputs[0].shape)
    src = node.inputs()[0].shape
    if ex.dynamic_batch and shape and src and shape[0] == src[0] == ex.batch:
        shape[0] = 0              # Reshape: copy the (open) batch dimension
    return ex.const(np.array(shape, np.int64), "shape")


@exports("reshape", "unflatten", "squeeze", "expand_dims", "ravel")
def reshape(ex, node, b, scope):
    return ex.emit("Reshape", [ex.name(node.inputs()[0]), _target_shape(ex, node)], scope)


@exports("flatten")
def flatten(ex, node, b, scope):
    x = b["input"]
    rank = max(len(x.shape), 1)
    if b.get("start_dim", 0) % rank == 1 and b.get("end_dim", -1) % rank == rank - 1:
        return ex.emit("Flatten", [ex.name(x)], scope, axis=1)
    return reshape(ex, node, b, scope)


@exports("transpose")
def transpose(ex, node, b, scope):
    x = node.inputs()[0]
    axes = node.args[1] if len(node.args) > 1 else None
    perm = list(axes) if axes else list(reversed(range(len(x.shape))))
    return ex.emit("Transpose", [ex.name(x)], scope, perm=perm)


@exports("concatenate")
def concatenate(ex, node, b, scope):
    arrays = node.args[0]
    axis = node.kwargs.get("axis", node.args[1] if len(node.args) > 1 else 0)
    return ex.emit("Concat", [ex.name(a) for a in arrays], scope,
                     axis=int(axis) % len(node.outputs[0].shape))


@exports("mean")
def mean(ex, node, b, scope):
    x = node.args[0]
    axis = node.kwargs.get("axis", node.args[1] if len(node.args) > 1 else None)
    keep = int(bool(node.kwargs.get("keepdims", False)))
    axes = list(range(len(x.shape))) if axis is None else list(np.atleast_1d(axis))
    return ex.emit("ReduceMean", [ex.name(x), ex.const(np.array(axes, np.int64))],
                     scope, keepdims=keep) if ex.opset >= 18 else \
        ex.emit("ReduceMean", [ex.name(x)], scope, axes=[int(a) for a in axes], keepdims=keep)


def _tup(v, n):
    return tuple(int(i) for i in v) if isinstance(v, (tuple, list)) else (int(v),) * n

"""ONNX operators (default domain) on NumPy arrays and fastcnn kernels.

Each ONNX node is translated by a builder `op_<Type>(b, node, x)` that calls
b.call(op, fn, args, kwargs): with constant inputs the result is folded into a
constant; otherwise a graph node is recorded (its result computed on the
sample input, so shapes are known). Functions given to b.call accept out=, so
the planner can run them into preallocated buffers.
"""
import math

import numpy as np

from fastcnn._functional import activation as A
from fastcnn._functional import linear as L
from fastcnn._functional import norm as N
from fastcnn._functional import pool as P
from fastcnn._functional.conv import conv_nd

# op_type -> (builder, check(node, opset) -> reason it cannot run, or None)
OPS = {}
SUPPORTED_MIN_OPSET = 7


def op(name, check=None):
    def register(fn):
        OPS[name] = (fn, check)
        return fn
    return register


def _put(out, result):
    """Write result into out (when the planner gave one) and return it."""
    if out is None:
        return result
    np.copyto(out, result, casting="unsafe")
    return out


# ---------------------------------------------------------------- convolution

def conv(nd, op, input, weight, bias, stride, padding, dilation, groups, activation=None,
         out=None, residual=None):
    """N-d convolution with per-axis (before, after) padding, on the kernels
    (validated as the functional convolutions)."""
    return conv_nd(nd, op, input, weight, bias, stride, padding, dilation, groups, out,
                   activation, residual=residual)


def _spatial_attrs(node, x, kernel):
    nd = len(kernel)
    strides = tuple(node.attrs.get("strides", [1] * nd))
    dilations = tuple(node.attrs.get("dilations", [1] * nd))
    auto_pad = node.attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    spatial = x.shape[2:]
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for s, k, st, d in zip(spatial, kernel, strides, dilations):
            out = math.ceil(s / st)
            total = max(0, (out - 1) * st + (k - 1) * d + 1 - s)
            small, big = total // 2, total - total // 2
            begin.append(small if auto_pad == "SAME_UPPER" else big)
            end.append(big if auto_pad == "SAME_UPPER" else small)
        return strides, tuple(begin), tuple(end), dilations
    if auto_pad == "VALID":
        return strides, (0,) * nd, (0,) * nd, dilations
    pads = tuple(node.attrs.get("pads", [0] * (2 * nd)))
    return strides, pads[:nd], pads[nd:], dilations


@op("Conv")
def op_Conv(b, node, x):
    data, weight = x[0], x[1]
    bias = x[2] if len(x) > 2 else None
    kernel = tuple(node.attrs.get("kernel_shape", weight.array.shape[2:]))
    strides, begin, end, dilations = _spatial_attrs(node, data.array, kernel)
    return b.call("conv", conv, [len(kernel), f"Conv {node.name}", data, weight, bias, strides,
                                 tuple(zip(begin, end)), dilations,
                                 int(node.attrs.get("group", 1))], {})


# ---------------------------------------------------------------- pooling

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
    return _put(out, total / count)


def _pool_sum(fn, x, kernel, stride, ceil_mode):
    kwargs = {} if len(kernel) == 1 else {"divisor_override": 1}
    y = fn(x, kernel, stride, 0, bool(ceil_mode), True, **kwargs)
    return y if kwargs else y * np.prod(kernel)


def lp_pool(input, kernel, stride, pads_begin, pads_end, p, out=None):
    """ONNX LpPool: (sum over the window of |x|^p)^(1/p), padding as zeros."""
    widths = [(0, 0), (0, 0)] + list(zip(pads_begin, pads_end))
    x = np.pad(np.abs(input) ** p, widths)
    total = _pool_sum(_pool_fn(len(kernel), "avg"), x, kernel, stride, False)
    return _put(out, total ** (1.0 / p))


def _pool_check(node, opset):
    if node.attrs.get("storage_order", 0) != 0:
        return "storage_order=1 is not supported"
    if node.op_type == "AveragePool" and any(d != 1 for d in node.attrs.get("dilations", [])):
        return "dilations are not supported in AveragePool"
    return None


@op("MaxPool", _pool_check)
def op_MaxPool(b, node, x):
    kernel = tuple(node.attrs["kernel_shape"])
    strides, begin, end, dilations = _spatial_attrs(node, x[0].array, kernel)
    with_indices = len(node.outputs) > 1 and node.outputs[1] != ""
    return b.call("max_pool", max_pool, [x[0], kernel, strides, begin, end, dilations,
                                         node.attrs.get("ceil_mode", 0), with_indices], {},
                  n_out=2 if with_indices else 1)


@op("AveragePool", _pool_check)
def op_AveragePool(b, node, x):
    kernel = tuple(node.attrs["kernel_shape"])
    strides, begin, end, _ = _spatial_attrs(node, x[0].array, kernel)
    return b.call("avg_pool", avg_pool, [x[0], kernel, strides, begin, end,
                                         node.attrs.get("ceil_mode", 0),
                                         node.attrs.get("count_include_pad", 0)], {})


@op("LpPool")
def op_LpPool(b, node, x):
    kernel = tuple(node.attrs["kernel_shape"])
    strides, begin, end, _ = _spatial_attrs(node, x[0].array, kernel)
    return b.call("lp_pool", lp_pool, [x[0], kernel, strides, begin, end,
                                       float(node.attrs.get("p", 2))], {})


def global_pool(input, kind, p=2.0, out=None):
    nd = input.ndim - 2
    if kind in ("avg", "max"):
        return getattr(P, f"adaptive_{kind}_pool{nd}d")(input, 1, out=out)
    axes = tuple(range(2, input.ndim))
    return _put(out, (np.abs(input) ** p).sum(axis=axes, keepdims=True) ** (1.0 / p))


@op("GlobalAveragePool")
def op_GlobalAveragePool(b, node, x):
    return b.call("adaptive_avg_pool", global_pool, [x[0], "avg"], {})


@op("GlobalMaxPool")
def op_GlobalMaxPool(b, node, x):
    return b.call("adaptive_max_pool", global_pool, [x[0], "max"], {})


@op("GlobalLpPool")
def op_GlobalLpPool(b, node, x):
    return b.call("global_lp_pool", global_pool, [x[0], "lp", float(node.attrs.get("p", 2))], {})


# ---------------------------------------------------------------- normalization

def batch_norm(input, scale, bias, mean, var, eps, activation=None, out=None):
    return N.batch_norm(input, mean, var, scale, bias, False, 0.0, eps, out=out,
                        activation=activation)


@op("BatchNormalization", lambda n, o: "training_mode=1 is not supported"
    if n.attrs.get("training_mode", 0) else ("only the Y output is supported"
                                             if len([v for v in n.outputs if v]) > 1 else None))
def op_BatchNormalization(b, node, x):
    return b.call("batch_norm", batch_norm, [x[0], x[1], x[2], x[3], x[4],
                                             float(node.attrs.get("epsilon", 1e-5))], {})


def instance_norm(input, scale, bias, eps, activation=None, out=None):
    return N.instance_norm(input, None, None, scale, bias, True, 0.1, eps, out=out,
                           activation=activation)


@op("InstanceNormalization")
def op_InstanceNormalization(b, node, x):
    return b.call("instance_norm", instance_norm,
                  [x[0], x[1], x[2], float(node.attrs.get("epsilon", 1e-5))], {})


def layer_norm(input, scale, bias, axis, eps, activation=None, out=None):
    shape = input.shape[axis:]
    w = np.broadcast_to(scale, shape).astype(input.dtype) if scale is not None else None
    bb = np.broadcast_to(bias, shape).astype(input.dtype) if bias is not None else None
    return N.layer_norm(input, shape, w, bb, eps, out=out, activation=activation)


@op("LayerNormalization", lambda n, o: "only the Y output is supported"
    if len([v for v in n.outputs if v]) > 1 else None)
def op_LayerNormalization(b, node, x):
    axis = int(node.attrs.get("axis", -1)) % x[0].array.ndim
    bias = x[2] if len(x) > 2 else None
    return b.call("layer_norm", layer_norm, [x[0], x[1], bias, axis,
                                             float(node.attrs.get("epsilon", 1e-5))], {})


def group_norm(input, scale, bias, groups, eps, activation=None, out=None):
    c = input.shape[1]
    if scale.size == groups and groups != c:       # opset 18: one scale per group
        scale = np.repeat(scale, c // groups)
        bias = np.repeat(bias, c // groups)
    return N.group_norm(input, groups, np.ascontiguousarray(scale, input.dtype),
                        np.ascontiguousarray(bias, input.dtype), eps, out=out,
                        activation=activation)


@op("GroupNormalization")
def op_GroupNormalization(b, node, x):
    return b.call("group_norm", group_norm, [x[0], x[1], x[2], int(node.attrs["num_groups"]),
                                             float(node.attrs.get("epsilon", 1e-5))], {})


def lrn(input, size, alpha, beta, bias, out=None):
    """ONNX LRN: the window over channels is [c - floor((size-1)/2),
    c + ceil((size-1)/2)]; for odd sizes that is the kernel's (PyTorch's)."""
    if size % 2 and input.dtype in (np.float32, np.float64):
        return N.local_response_norm(input, size, alpha, beta, bias, out=out)
    sq = input.astype(np.float64) ** 2
    c = input.shape[1]
    total = np.zeros_like(sq)
    lo, hi = (size - 1) // 2, (size - 1) - (size - 1) // 2
    for ch in range(c):
        total[:, ch] = sq[:, max(0, ch - lo):min(c, ch + hi + 1)].sum(axis=1)
    return _put(out, (input / (bias + alpha / size * total) ** beta).astype(input.dtype))


@op("LRN")
def op_LRN(b, node, x):
    return b.call("lrn", lrn, [x[0], int(node.attrs["size"]), float(node.attrs.get("alpha", 1e-4)),
                               float(node.attrs.get("beta", 0.75)), float(node.attrs.get("bias", 1.0))], {})


# ---------------------------------------------------------------- activations

def _unary(name, fn, **fixed):
    def builder(b, node, x):
        return b.call(name, fn, [x[0]], dict(fixed))
    return builder


def _kernel_act(fn):
    """An element-wise fastcnn op for float inputs, NumPy's for others."""
    def run(input, *args, out=None, **kwargs):
        if input.dtype in (np.float32, np.float64):
            return fn(input, *args, out=out, **kwargs)
        return _put(out, fn(input.astype(np.float64), *args, **kwargs).astype(input.dtype))
    return run


relu = _kernel_act(A.relu)
relu6 = _kernel_act(A.relu6)
sigmoid = _kernel_act(A.sigmoid)
tanh = _kernel_act(A.tanh)
silu = _kernel_act(A.silu)
OPS["Relu"] = (_unary("relu", relu), None)
OPS["Sigmoid"] = (_unary("sigmoid", sigmoid), None)
OPS["Tanh"] = (_unary("tanh", tanh), None)
OPS["Mish"] = (_unary("mish", _kernel_act(A.mish)), None)
OPS["Softplus"] = (_unary("softplus_onnx", lambda x, out=None: _put(
    out, np.logaddexp(x, 0).astype(x.dtype))), None)


@op("LeakyRelu")
def op_LeakyRelu(b, node, x):
    return b.call("leaky_relu", _kernel_act(A.leaky_relu), [x[0], float(node.attrs.get("alpha", 0.01))], {})


@op("Elu")
def op_Elu(b, node, x):
    return b.call("elu", _kernel_act(A.elu), [x[0], float(node.attrs.get("alpha", 1.0))], {})


def selu(input, alpha, gamma, out=None):
    return A.apply("selu", A.EXPM1_SCALED, input, False, out, alpha * gamma, gamma, 1.0)


@op("Selu")
def op_Selu(b, node, x):
    return b.call("selu", selu, [x[0], float(node.attrs.get("alpha", 1.67326319217681884765625)),
                                 float(node.attrs.get("gamma", 1.05070102214813232421875))], {})


def hardsigmoid(input, alpha, beta, out=None):
    return _put(out, np.clip(alpha * input + beta, 0, 1).astype(input.dtype))


@op("HardSigmoid")
def op_HardSigmoid(b, node, x):
    return b.call("hardsigmoid_onnx", hardsigmoid, [x[0], float(node.attrs.get("alpha", 0.2)),
                                                    float(node.attrs.get("beta", 0.5))], {})


@op("HardSwish")
def op_HardSwish(b, node, x):
    return b.call("hardswish", _kernel_act(A.hardswish), [x[0]], {})


def gelu(input, approximate, out=None):
    return A.gelu(input, approximate, out=out)


@op("Gelu")
def op_Gelu(b, node, x):
    approx = node.attrs.get("approximate", b"none")
    approx = approx.decode() if isinstance(approx, bytes) else approx
    return b.call("gelu", gelu, [x[0], approx], {})


def erf(input, out=None):
    if input.dtype in (np.float32, np.float64):
        return A.apply("erf", A.ERF, input, False, out)
    from math import erf as _erf
    return _put(out, np.vectorize(_erf)(input).astype(input.dtype))


OPS["Erf"] = (_unary("erf", erf), None)


def prelu(input, slope, out=None):
    return _put(out, np.where(input < 0, input * slope, input).astype(input.dtype))


@op("PRelu")
def op_PRelu(b, node, x):
    return b.call("prelu_onnx", prelu, [x[0], x[1]], {})


def _scalar(entry):
    """A constant one-element input as a Python number."""
    return np.asarray(entry.array).reshape(-1)[0].item()


def clip(input, lo, hi, out=None):
    lo = -np.inf if lo is None else lo
    hi = np.inf if hi is None else hi
    if np.ndim(lo) == 0 and np.ndim(hi) == 0 and lo > hi:
        return _put(out, np.full_like(input, hi))        # the spec: everything becomes max
    if input.dtype in (np.float32, np.float64) and np.ndim(lo) == 0 and np.ndim(hi) == 0:
        return A.hardtanh(input, float(lo), float(hi), out=out) if out is None or out is not input \
            else A.hardtanh(input, float(lo), float(hi), inplace=True)
    return _put(out, np.clip(input, lo, hi))


@op("Clip")
def op_Clip(b, node, x):
    if b.opset < 11:
        lo = node.attrs.get("min", -3.4028234663852886e38)
        hi = node.attrs.get("max", 3.4028234663852886e38)
    else:
        if (len(x) > 1 and x[1] is not None and not x[1].const) or \
                (len(x) > 2 and x[2] is not None and not x[2].const):
            return b.call("clip", clip, [x[0], x[1], x[2] if len(x) > 2 else None], {})
        lo = _scalar(x[1]) if len(x) > 1 and x[1] is not None else None
        hi = _scalar(x[2]) if len(x) > 2 and x[2] is not None else None
    if lo is not None and hi is not None and float(lo) == 0.0 and float(hi) == 6.0:
        return b.call("relu6", relu6, [x[0]], {})
    if lo is not None and float(lo) == 0.0 and (hi is None or float(hi) >= 3.4e38):
        return b.call("relu", relu, [x[0]], {})
    return b.call("clip", clip, [x[0], None if lo is None else float(lo),
                                 None if hi is None else float(hi)], {})


def _softmax_2d(fn):
    def run(input, axis, coerce, out=None):
        if not coerce:
            return fn(input, axis, out=out)
        shape = input.shape
        flat = np.ascontiguousarray(input).reshape(_rows_cols(shape, axis))
        return _put(out, fn(flat, 1).reshape(shape))
    return run


softmax = _softmax_2d(A.softmax)
log_softmax = _softmax_2d(A.log_softmax)


def _softmax_builder(name, fn):
    def builder(b, node, x):
        default = 1 if b.opset < 13 else -1
        axis = int(node.attrs.get("axis", default)) % max(x[0].array.ndim, 1)
        return b.call(name, fn, [x[0], axis, b.opset < 13], {})
    return builder


OPS["Softmax"] = (_softmax_builder("softmax", softmax), None)
OPS["LogSoftmax"] = (_softmax_builder("log_softmax", log_softmax), None)


# ---------------------------------------------------------------- linear algebra

def linear(input, weight, bias, activation=None, out=None):
    return L.linear(input, weight, bias, out=out, activation=activation)


def gemm(a, b, c, alpha, beta, trans_a, trans_b, out=None):
    a = a.T if trans_a else a
    b = b.T if trans_b else b
    y = alpha * (a @ b)
    if c is not None:
        y = y + beta * c
    return _put(out, y.astype(a.dtype))


@op("Gemm")
def op_Gemm(b, node, x):
    alpha = float(node.attrs.get("alpha", 1.0))
    beta = float(node.attrs.get("beta", 1.0))
    ta, tb = int(node.attrs.get("transA", 0)), int(node.attrs.get("transB", 0))
    c = x[2] if len(x) > 2 else None
    a, w = x[0], x[1]
    if (not ta and alpha == 1.0 and w.const and a.array.dtype in (np.float32, np.float64)
            and w.array.dtype == a.array.dtype
            and (c is None or (c.const and beta == 1.0 and c.array.size == (w.array.shape[0] if tb else w.array.shape[1])))):
        weight = w.array if tb else np.ascontiguousarray(w.array.T)
        bias = None if c is None else np.ascontiguousarray(np.broadcast_to(c.array, (weight.shape[0],)), a.array.dtype)
        return b.call("linear", linear, [a, b.const(weight), None if bias is None else b.const(bias)], {})
    return b.call("gemm", gemm, [a, w, c, alpha, beta, ta, tb], {})


def matmul(a, b, out=None):
    return _put(out, np.matmul(a, b))


@op("MatMul")
def op_MatMul(b, node, x):
    a, w = x
    if (w.const and w.array.ndim == 2 and a.array.ndim >= 1 and a.array.dtype == w.array.dtype
            and a.array.dtype in (np.float32, np.float64)):
        return b.call("linear", linear, [a, b.const(np.ascontiguousarray(w.array.T)), None], {})
    return b.call("matmul", matmul, [a, w], {})


# ---------------------------------------------------------------- element-wise arithmetic

def _binary(ufunc):
    def run(a, b, out=None):
        if out is not None and out.shape == np.broadcast_shapes(np.shape(a), np.shape(b)):
            return ufunc(a, b, out=out, casting="unsafe")
        return _put(out, ufunc(a, b))
    return run


_BINARY = {"Add": ("add", np.add), "Sub": ("subtract", np.subtract),
           "Mul": ("multiply", np.multiply), "Pow": ("power", np.power)}
for _name, (_op, _uf) in _BINARY.items():
    OPS[_name] = ((lambda o, f: lambda b, node, x: b.call(o, _binary(f), [x[0], x[1]], {}))(_op, _uf), None)


def divide(a, b, out=None):
    if np.issubdtype(np.result_type(a, b), np.integer):
        return _put(out, np.trunc(np.divide(a, b)).astype(np.result_type(a, b)))
    return _binary(np.true_divide)(a, b, out=out)


OPS["Div"] = (lambda b, node, x: b.call("divide", divide, [x[0], x[1]], {}), None)


def variadic(ufunc):
    def run(*arrays, out=None):
        result = arrays[0]
        for a in arrays[1:]:
            result = ufunc(result, a)
        return _put(out, np.asarray(result))
    return run


OPS["Sum"] = (lambda b, node, x: b.call("sum_n", variadic(np.add), list(x), {}), None)
OPS["Max"] = (lambda b, node, x: b.call("max_n", variadic(np.maximum), list(x), {}), None)
OPS["Min"] = (lambda b, node, x: b.call("min_n", variadic(np.minimum), list(x), {}), None)


def _ufunc1(ufunc):
    def run(a, out=None):
        return _put(out, ufunc(a))
    return run


for _name, _uf in {"Sqrt": np.sqrt, "Exp": np.exp, "Log": np.log, "Neg": np.negative,
                   "Abs": np.abs, "Reciprocal": np.reciprocal}.items():
    OPS[_name] = ((lambda n, f: lambda b, node, x: b.call(n, _ufunc1(f), [x[0]], {}))(_name.lower(), _uf), None)


# ---------------------------------------------------------------- shapes and data movement

def _ints(entry):
    return [int(v) for v in np.asarray(entry.array).reshape(-1)]


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
        shape = _ints(x[1])
    target = _resolve_shape(x[0].array.shape, shape, int(node.attrs.get("allowzero", 0)))
    target = _infer_minus_one(x[0].array.shape, target, node)
    return b.call("reshape", reshape, [x[0], target], {}, view=True)


def _rows_cols(shape, axis):
    """The 2-D shape ONNX Flatten (and softmax's opset<13 coercion) gives `shape`."""
    return math.prod(shape[:axis]), math.prod(shape[axis:])


def flatten(data, axis, out=None):
    return data.reshape(_rows_cols(data.shape, axis))


@op("Flatten")
def op_Flatten(b, node, x):
    axis = int(node.attrs.get("axis", 1))
    axis = axis + x[0].array.ndim if axis < 0 else axis
    return b.call("reshape", flatten, [x[0], axis], {}, view=True)


def transpose(data, perm, out=None):
    return _put(out, np.transpose(data, perm))


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
        return _ints(x[index])
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
    return _put(out, np.concatenate(arrays, axis=axis))


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
        sections = _ints(x[1])
    else:
        n = int(node.attrs.get("num_outputs", n))
        step = -(-size // n)
        sections = [min(step, size - i * step) for i in range(n)]
    return b.call("split", split, [x[0], tuple(sections), axis], {}, n_out=len(sections))


def slice_(data, key, out=None):
    return _put(out, data[key])


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
        starts, ends = _ints(x[1]), _ints(x[2])
        axes = _ints(x[3]) if len(x) > 3 and x[3] is not None else list(range(len(starts)))
        steps = _ints(x[4]) if len(x) > 4 and x[4] is not None else [1] * len(starts)
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
    return _put(out, np.take(data, idx, axis=axis))


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
        return _put(out, np.pad(data, widths, constant_values=value))
    return _put(out, np.pad(data, widths, mode={"reflect": "reflect", "edge": "edge"}[mode]))


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
        pads = _ints(x[1])
        value = float(np.asarray(x[2].array).reshape(-1)[0]) if len(x) > 2 and x[2] is not None and np.size(x[2].array) else 0.0
        if len(x) > 3 and x[3] is not None:
            axes = [a % x[0].array.ndim for a in _ints(x[3])]
            full = [0] * (2 * x[0].array.ndim)
            for k, a in enumerate(axes):
                full[a], full[a + x[0].array.ndim] = pads[k], pads[k + len(axes)]
            pads = full
    return b.call("pad", pad, [x[0], tuple(pads), mode, value], {})


@op("Identity")
def op_Identity(b, node, x):
    return [x[0]]


@op("Dropout")
def op_Dropout(b, node, x):
    outs = [x[0]]
    if len(node.outputs) > 1 and node.outputs[1]:
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
    return [b.const(np.full(_ints(x[0]), value.reshape(-1)[0], value.dtype))]


@op("Shape")
def op_Shape(b, node, x):
    shape = np.array(x[0].array.shape, np.int64)
    start = int(node.attrs.get("start", 0))
    end = node.attrs.get("end")
    return [b.const(shape[start:None if end is None else int(end)])]


def cast(data, dtype, out=None):
    return _put(out, data.astype(dtype))


@op("Cast")
def op_Cast(b, node, x):
    return b.call("cast", cast, [x[0], b.dtype(int(node.attrs["to"]))], {})


def reduce(data, kind, axes, keepdims, out=None):
    fn = {"mean": np.mean, "max": np.max, "sum": np.sum}[kind]
    return _put(out, np.asarray(fn(data, axis=axes, keepdims=bool(keepdims))).astype(data.dtype))


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


OPS["ReduceMean"] = (_reduce_builder("mean", 18), None)
OPS["ReduceMax"] = (_reduce_builder("max", 18), None)
OPS["ReduceSum"] = (_reduce_builder("sum", 13), None)


# ---------------------------------------------------------------- Resize / Upsample

def _resize_coords(out_size, in_size, scale, mode, length_resized=None):
    """Input coordinate of each output index along one axis."""
    o = np.arange(out_size, dtype=np.float64)
    if mode == "half_pixel":
        return (o + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (o + 0.5) / scale - 0.5 if out_size > 1 else np.zeros(out_size)
    if mode == "align_corners":
        return o * (in_size - 1) / (out_size - 1) if out_size > 1 else np.zeros(out_size)
    if mode == "asymmetric":
        return o / scale
    if mode == "tf_half_pixel_for_nn":
        return (o + 0.5) / scale
    if mode == "half_pixel_symmetric":
        adjustment = out_size / (in_size * scale)
        center = in_size / 2
        offset = center * (1 - adjustment)
        return offset + (o + 0.5) / scale - 0.5
    raise ValueError(mode)


def resize(data, sizes, scales, mode, coord_mode, nearest_mode, out=None):
    result = data
    for axis in range(data.ndim):
        in_size, size, scale = data.shape[axis], sizes[axis], scales[axis]
        if size == in_size and scale == 1.0:
            continue
        coords = _resize_coords(size, in_size, scale, coord_mode)
        if mode == "nearest":
            if nearest_mode == "round_prefer_floor":
                idx = np.where(coords - np.floor(coords) == 0.5, np.floor(coords), np.round(coords))
            elif nearest_mode == "round_prefer_ceil":
                idx = np.where(coords - np.floor(coords) == 0.5, np.ceil(coords), np.round(coords))
            elif nearest_mode == "floor":
                idx = np.floor(coords)
            else:
                idx = np.ceil(coords)
            idx = np.clip(idx, 0, in_size - 1).astype(np.int64)
            result = np.take(result, idx, axis=axis)
        else:
            coords = np.clip(coords, 0, in_size - 1)
            lo = np.floor(coords).astype(np.int64)
            hi = np.minimum(lo + 1, in_size - 1)
            frac = (coords - lo).reshape((-1,) + (1,) * (data.ndim - axis - 1))
            a = np.take(result, lo, axis=axis).astype(np.float64)
            bb = np.take(result, hi, axis=axis).astype(np.float64)
            result = a + (bb - a) * frac
    return _put(out, np.asarray(result).astype(data.dtype))


def _resize_check(node, opset):
    mode = node.attrs.get("mode", b"nearest")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode not in ("nearest", "linear", "bilinear"):
        return f"mode {mode!r} is not supported (nearest and linear are)"
    if node.attrs.get("antialias", 0):
        return "antialias=1 is not supported"
    if "axes" in node.attrs:
        return "the axes attribute is not supported"
    keep = node.attrs.get("keep_aspect_ratio_policy", b"stretch")
    if (keep.decode() if isinstance(keep, bytes) else keep) != "stretch":
        return "keep_aspect_ratio_policy other than stretch is not supported"
    return None


def _attr_str(node, name, default):
    v = node.attrs.get(name, default)
    return v.decode() if isinstance(v, bytes) else v


@op("Resize", _resize_check)
def op_Resize(b, node, x):
    data = x[0].array
    mode = _attr_str(node, "mode", "nearest")
    mode = "linear" if mode == "bilinear" else mode
    coord = _attr_str(node, "coordinate_transformation_mode",
                      "asymmetric" if b.opset < 11 else "half_pixel")
    nearest = _attr_str(node, "nearest_mode", "round_prefer_floor")
    if b.opset < 11:
        scale_entry = x[1] if len(x) > 1 else None
        sizes_entry = None
    else:
        scale_entry = x[2] if len(x) > 2 else None
        sizes_entry = x[3] if len(x) > 3 else None
    for e in (scale_entry, sizes_entry):
        if e is not None and not e.const:
            return b.unsupported(node, "scales or sizes that are not constant")
    if sizes_entry is not None and np.size(sizes_entry.array):
        sizes = _ints(sizes_entry)
        scales = [s / i for s, i in zip(sizes, data.shape)]
    else:
        scales = [float(v) for v in np.asarray(scale_entry.array).reshape(-1)]
        sizes = [int(math.floor(i * s)) for i, s in zip(data.shape, scales)]
    return b.call("resize", resize, [x[0], tuple(sizes), tuple(scales), mode, coord, nearest], {})


@op("Upsample", lambda n, o: None if _attr_str(n, "mode", "nearest") in ("nearest", "linear", "bilinear")
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
    sizes = [int(math.floor(i * s)) for i, s in zip(data.shape, scales)]
    return b.call("resize", resize, [x[0], tuple(sizes), tuple(scales), mode, "asymmetric",
                                     "floor"], {})

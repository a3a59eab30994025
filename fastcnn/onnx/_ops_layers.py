"""ONNX operators of the network layers: convolution (also transposed),
normalization, activations (pooling: _ops_pool)."""
import math

import numpy as np

from fastcnn._functional import activation as A
from fastcnn._functional import norm as N
from fastcnn._functional import conv_transpose as T
from fastcnn._functional.conv import conv_nd
from fastcnn.onnx._registry import OPS, op, put, rows_cols


# ---------------------------------------------------------------- convolution

def conv(nd, op, input, weight, bias, stride, padding, dilation, groups, activation=None,
         out=None, residual=None):
    """N-d convolution with per-axis (before, after) padding, on the kernels
    (validated as the functional convolutions)."""
    return conv_nd(nd, op, input, weight, bias, stride, padding, dilation, groups, out,
                   activation, residual=residual)


def spatial_attrs(node, x, kernel):
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
    strides, begin, end, dilations = spatial_attrs(node, data.array, kernel)
    return b.call("conv", conv, [len(kernel), f"Conv {node.name}", data, weight, bias, strides,
                                 tuple(zip(begin, end)), dilations,
                                 int(node.attrs.get("group", 1))], {})


def conv_transpose(input, weight, bias, strides, begin, end, output_padding, group,
                   dilations, out=None):
    """ONNX ConvTranspose: fastcnn's transposed convolution over the extent the
    taps reach, then the window ONNX's pads (asymmetric, even negative) and
    output_padding select; positions no tap reaches hold the bias."""
    nd = len(strides)
    full = T.conv_transpose_nd(nd, "ConvTranspose", input, weight, bias, strides, 0, 0, group,
                               dilations)
    reach = full.shape[2:]
    size = [f + o - b - e for f, o, b, e in zip(reach, output_padding, begin, end)]
    if min(size) < 1:
        raise ValueError(f"onnx: ConvTranspose: the output would be {tuple(size)}: pads "
                         f"{tuple(begin) + tuple(end)} leave nothing")
    y = np.zeros(full.shape[:2] + tuple(size), full.dtype)
    if bias is not None:
        y += bias.reshape((1, -1) + (1,) * nd)
    src = tuple(slice(max(b, 0), min(f, f + o - e)) for f, o, b, e in
                zip(reach, output_padding, begin, end))
    dst = tuple(slice(s.start - b, s.stop - b) for s, b in zip(src, begin))
    y[(slice(None), slice(None)) + dst] = full[(slice(None), slice(None)) + src]
    return put(out, y)


@op("ConvTranspose")
def op_ConvTranspose(b, node, x):
    data, weight = x[0].array, x[1].array
    nd = data.ndim - 2
    kernel = tuple(node.attrs.get("kernel_shape", weight.shape[2:]))
    strides = tuple(node.attrs.get("strides", [1] * nd))
    dilations = tuple(node.attrs.get("dilations", [1] * nd))
    output_padding = tuple(node.attrs.get("output_padding", [0] * nd))
    group = int(node.attrs.get("group", 1))
    auto_pad = node.attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    spatial = data.shape[2:]
    reach = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    if "output_shape" in node.attrs or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        wanted = list(node.attrs.get("output_shape", [n * s for n, s in zip(spatial, strides)]))
        wanted = wanted[-nd:]
        total = [s * (n - 1) + o + r - w for s, n, o, r, w in
                 zip(strides, spatial, output_padding, reach, wanted)]
        upper = auto_pad == "SAME_UPPER"
        begin = tuple(t // 2 if upper else t - t // 2 for t in total)
        end = tuple(t - t // 2 if upper else t // 2 for t in total)
    elif auto_pad == "VALID":
        begin = end = (0,) * nd
    else:
        pads = tuple(node.attrs.get("pads", [0] * (2 * nd)))
        begin, end = pads[:nd], pads[nd:]
    bias = x[2] if len(x) > 2 else None
    return b.call("conv_transpose_onnx", conv_transpose,
                  [x[0], x[1], bias, strides, begin, end, output_padding, group, dilations],
                  {})


# ---------------------------------------------------------------- normalization

def batch_norm(input, scale, bias, mean, var, eps, activation=None, out=None):
    return N.batch_norm(input, mean, var, scale, bias, False, 0.0, eps, out=out,
                        activation=activation)


def batch_norm_training(input, scale, bias, mean, var, eps, momentum):
    """ONNX BatchNormalization with training_mode=1: normalized by the batch's
    statistics (biased variance); also the updated running mean and variance."""
    axes = (0,) + tuple(range(2, input.ndim))
    shape = (1, -1) + (1,) * (input.ndim - 2)
    batch_mean, batch_var = input.mean(axis=axes), input.var(axis=axes)
    y = (input - batch_mean.reshape(shape)) / np.sqrt(batch_var.reshape(shape) + eps)
    y = y * scale.reshape(shape) + bias.reshape(shape)
    return (y.astype(input.dtype), (mean * momentum + batch_mean * (1 - momentum)).astype(mean.dtype),
            (var * momentum + batch_var * (1 - momentum)).astype(var.dtype))


@op("BatchNormalization")
def op_BatchNormalization(b, node, x):
    eps = float(node.attrs.get("epsilon", 1e-5))
    if node.attrs.get("training_mode", 0):
        n_out = len([v for v in node.outputs if v])
        outs = b.call("batch_norm_training", batch_norm_training,
                      [x[0], x[1], x[2], x[3], x[4], eps,
                       float(node.attrs.get("momentum", 0.9))], {}, n_out=3)
        return outs[:n_out]
    if len([v for v in node.outputs if v]) > 1:
        raise ValueError(f"onnx: BatchNormalization {node.name!r}: running statistics "
                         f"outputs need training_mode=1")
    return b.call("batch_norm", batch_norm, [x[0], x[1], x[2], x[3], x[4], eps], {})


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


def layer_norm_statistics(input, scale, bias, axis, eps):
    """ONNX LayerNormalization with its Mean and InvStdDev outputs (float32
    statistics, stash_type 1)."""
    axes = tuple(range(axis, input.ndim))
    x = input.astype(np.float32 if input.dtype != np.float64 else np.float64)
    mean = x.mean(axis=axes, keepdims=True)
    inv_std = 1 / np.sqrt(((x - mean) ** 2).mean(axis=axes, keepdims=True) + eps)
    y = (x - mean) * inv_std * scale
    if bias is not None:
        y = y + bias
    return y.astype(input.dtype), mean.astype(np.float32), inv_std.astype(np.float32)


@op("LayerNormalization")
def op_LayerNormalization(b, node, x):
    axis = int(node.attrs.get("axis", -1)) % x[0].array.ndim
    bias = x[2] if len(x) > 2 else None
    eps = float(node.attrs.get("epsilon", 1e-5))
    n_out = len(node.outputs)
    if n_out > 1 and any(node.outputs[1:]):
        return b.call("layer_norm_statistics", layer_norm_statistics,
                      [x[0], x[1], bias, axis, eps], {}, n_out=3)[:n_out]
    return b.call("layer_norm", layer_norm, [x[0], x[1], bias, axis, eps], {})


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
    return put(out, (input / (bias + alpha / size * total) ** beta).astype(input.dtype))


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
        return put(out, fn(input.astype(np.float64), *args, **kwargs).astype(input.dtype))
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
OPS["Softplus"] = (_unary("softplus_onnx", lambda x, out=None: put(
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
    return put(out, np.clip(alpha * input + beta, 0, 1).astype(input.dtype))


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
    return put(out, np.vectorize(_erf)(input).astype(input.dtype))


OPS["Erf"] = (_unary("erf", erf), None)


def prelu(input, slope, out=None):
    return put(out, np.where(input < 0, input * slope, input).astype(input.dtype))


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
        return put(out, np.full_like(input, hi))        # the spec: everything becomes max
    if input.dtype in (np.float32, np.float64) and np.ndim(lo) == 0 and np.ndim(hi) == 0:
        return A.hardtanh(input, float(lo), float(hi), out=out) if out is None or out is not input \
            else A.hardtanh(input, float(lo), float(hi), inplace=True)
    return put(out, np.clip(input, lo, hi))


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
        flat = np.ascontiguousarray(input).reshape(rows_cols(shape, axis))
        return put(out, fn(flat, 1).reshape(shape))
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

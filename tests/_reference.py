"""Slow, obvious NumPy implementations: the oracles the kernels are tested against.

Everything is computed in float64 with plain loops or einsum over shifted
slices, so each is easy to check by reading.
"""
import itertools

import numpy as np


def conv_nd(x, w, bias=None, stride=1, pad_before=0, pad_after=None, dilation=1, groups=1):
    """N-d convolution (cross-correlation, as PyTorch) of x (N, C, *S) with
    w (M, C/groups, *K). Scalars apply to every spatial axis."""
    nd = x.ndim - 2
    as_tuple = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v,) * nd
    stride, dilation = as_tuple(stride), as_tuple(dilation)
    pad_before = as_tuple(pad_before)
    pad_after = pad_before if pad_after is None else as_tuple(pad_after)
    x = np.pad(x.astype(np.float64), [(0, 0), (0, 0)] + list(zip(pad_before, pad_after)))
    w = w.astype(np.float64)
    n, c = x.shape[:2]
    m, cg = w.shape[:2]
    kernel = w.shape[2:]
    out_sp = [(x.shape[2 + i] - dilation[i] * (kernel[i] - 1) - 1) // stride[i] + 1
              for i in range(nd)]
    y = np.zeros((n, groups, m // groups) + tuple(out_sp))
    wg = w.reshape((groups, m // groups, cg) + kernel)
    for offs in itertools.product(*[range(k) for k in kernel]):
        sl = tuple(slice(o * d, o * d + s * (osz - 1) + 1, s)
                   for o, d, s, osz in zip(offs, dilation, stride, out_sp))
        patch = x[(slice(None), slice(None)) + sl].reshape((n, groups, cg) + tuple(out_sp))
        y += np.einsum("ngc...,gmc->ngm...", patch, wg[(Ellipsis,) + offs])
    y = y.reshape((n, m) + tuple(out_sp))
    if bias is not None:
        y += bias.astype(np.float64).reshape((1, m) + (1,) * nd)
    return y


def conv_transpose_nd(x, w, bias=None, stride=1, padding=0, output_padding=0, dilation=1,
                      groups=1):
    """Transposed convolution by its definition: every input value, times each
    kernel tap, added at position i * stride + k * dilation - padding of the
    output (taps that land outside are dropped); weight (C_in, C_out/groups, *K)."""
    x, w = x.astype(np.float64), w.astype(np.float64)
    nd = x.ndim - 2
    st, pd, op, dl = (tuple(v) if isinstance(v, (tuple, list)) else (v,) * nd
                      for v in (stride, padding, output_padding, dilation))
    cin_g, cout_g = x.shape[1] // groups, w.shape[1]
    size = [(n - 1) * s - 2 * p + d * (k - 1) + o + 1
            for n, s, p, d, k, o in zip(x.shape[2:], st, pd, dl, w.shape[2:], op)]
    y = np.zeros((x.shape[0], cout_g * groups) + tuple(size))
    for i in itertools.product(*[range(n) for n in x.shape[2:]]):
        for k in itertools.product(*[range(n) for n in w.shape[2:]]):
            o = [a * s + b * d - p for a, b, s, d, p in zip(i, k, st, dl, pd)]
            if all(0 <= v < n for v, n in zip(o, size)):
                for g in range(groups):
                    xs = x[(slice(None), slice(g * cin_g, (g + 1) * cin_g)) + i]
                    ws = w[(slice(g * cin_g, (g + 1) * cin_g), slice(None)) + k]
                    y[(slice(None), slice(g * cout_g, (g + 1) * cout_g)) + tuple(o)] += xs @ ws
    if bias is not None:
        y += np.asarray(bias, np.float64).reshape((1, -1) + (1,) * nd)
    return y


def relu(x):
    return np.where(x < 0, 0.0, x)


def relu6(x):
    return np.minimum(np.maximum(x, 0.0), 6.0)


def silu(x):
    return x / (1.0 + np.exp(-x))


ACTIVATIONS = {None: lambda v: v, "relu": relu, "relu6": relu6, "silu": silu}


# ---------------------------------------------------------------- pooling

def pool_output_size(size, kernel, stride, pad, dilation, ceil_mode):
    """PyTorch's documented rule: floor (or ceil) of the window count, and with
    ceil_mode the last window must start inside the input or left padding."""
    span = size + 2 * pad - dilation * (kernel - 1) - 1
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def pool_nd(x, kernel, stride=None, padding=0, dilation=1, ceil_mode=False, mode="max",
            count_include_pad=True, divisor_override=None, norm_type=2.0):
    """Max, average or LP pooling of x (N, C, *spatial); returns (y, indices)
    (indices only meaningful for max). Window by window, in float64."""
    nd = x.ndim - 2
    tup = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v,) * nd
    kernel = tup(kernel)
    stride = kernel if stride is None else tup(stride)
    padding, dilation = tup(padding), tup(dilation)
    spatial = x.shape[2:]
    out_sp = tuple(pool_output_size(s, k, st, p, d, ceil_mode)
                   for s, k, st, p, d in zip(spatial, kernel, stride, padding, dilation))
    xf = x.astype(np.float64)
    y = np.zeros(x.shape[:2] + out_sp)
    idx = np.zeros(x.shape[:2] + out_sp, np.int64)
    strides = [int(np.prod(spatial[i + 1:])) for i in range(nd)]
    for pos in itertools.product(*[range(o) for o in out_sp]):
        starts = [o * s - p for o, s, p in zip(pos, stride, padding)]
        if mode == "max":
            best = np.full(x.shape[:2], -np.inf)
            best_i = np.full(x.shape[:2], -1, np.int64)
            for taps in itertools.product(*[range(k) for k in kernel]):
                coords = [s + t * d for s, t, d in zip(starts, taps, dilation)]
                if any(c < 0 or c >= size for c, size in zip(coords, spatial)):
                    continue
                v = xf[(slice(None), slice(None)) + tuple(coords)]
                flat = sum(c * st for c, st in zip(coords, strides))
                take = (v > best) | np.isnan(v) | (best_i < 0)
                best = np.where(take, v, best)
                best_i = np.where(take, flat, best_i)
            y[(Ellipsis,) + pos] = best
            idx[(Ellipsis,) + pos] = best_i
        else:
            ends = [min(s + k, size + p) for s, k, size, p in zip(starts, kernel, spatial, padding)]
            count = int(np.prod([e - s for s, e in zip(starts, ends)]))
            lo = [max(s, 0) for s in starts]
            hi = [min(e, size) for e, size in zip(ends, spatial)]
            if not count_include_pad:
                count = int(np.prod([h - l for l, h in zip(lo, hi)]))
            if divisor_override:
                count = divisor_override
            window = xf[(slice(None), slice(None)) + tuple(slice(l, h) for l, h in zip(lo, hi))]
            axes = tuple(range(2, 2 + nd))
            if mode == "avg":
                y[(Ellipsis,) + pos] = window.sum(axis=axes) / count
            else:
                total = (window ** norm_type).sum(axis=axes) / count * np.prod(kernel)
                y[(Ellipsis,) + pos] = total ** (1.0 / norm_type)
    return y, idx


def adaptive_pool_nd(x, output_size, mode="avg"):
    """Adaptive pooling: window i spans [floor(i * L / out), ceil((i + 1) * L / out))."""
    nd = x.ndim - 2
    spatial = x.shape[2:]
    xf = x.astype(np.float64)
    y = np.zeros(x.shape[:2] + tuple(output_size))
    idx = np.zeros(x.shape[:2] + tuple(output_size), np.int64)
    strides = [int(np.prod(spatial[i + 1:])) for i in range(nd)]
    for pos in itertools.product(*[range(o) for o in output_size]):
        lo = [(p * s) // o for p, s, o in zip(pos, spatial, output_size)]
        hi = [-((-(p + 1) * s) // o) for p, s, o in zip(pos, spatial, output_size)]
        window = xf[(slice(None), slice(None)) + tuple(slice(l, h) for l, h in zip(lo, hi))]
        if mode == "avg":
            y[(Ellipsis,) + pos] = window.mean(axis=tuple(range(2, 2 + nd)))
        else:
            best = np.full(x.shape[:2], -np.inf)
            best_i = np.full(x.shape[:2], -1, np.int64)
            for coords in itertools.product(*[range(l, h) for l, h in zip(lo, hi)]):
                v = xf[(slice(None), slice(None)) + coords]
                take = (v > best) | np.isnan(v) | (best_i < 0)
                best = np.where(take, v, best)
                best_i = np.where(take, sum(c * s for c, s in zip(coords, strides)), best_i)
            y[(Ellipsis,) + pos] = best
            idx[(Ellipsis,) + pos] = best_i
    return y, idx


# ---------------------------------------------------------------- activations

_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def _erf(x):
    import math
    return np.vectorize(math.erf, otypes=[np.float64])(x)


def activation(name, x, **kw):
    """The activation `name` in float64, by its textbook formula."""
    x = np.asarray(x, np.float64)
    with np.errstate(all="ignore"):
        if name == "relu":
            return np.where(x < 0, 0.0, x)
        if name == "relu6":
            return np.where(x < 0, 0.0, np.where(x > 6, 6.0, x))
        if name == "leaky_relu":
            return np.where(x > 0, x, x * kw.get("negative_slope", 0.01))
        if name == "elu":
            return np.where(x > 0, x, kw.get("alpha", 1.0) * np.expm1(x))
        if name == "selu":
            return _SELU_SCALE * np.where(x > 0, x, _SELU_ALPHA * np.expm1(x))
        if name == "celu":
            a = kw.get("alpha", 1.0)
            return np.where(x > 0, x, a * np.expm1(x / a))
        if name == "hardtanh":
            lo, hi = kw.get("min_val", -1.0), kw.get("max_val", 1.0)
            return np.where(x < lo, lo, np.where(x > hi, hi, x))
        if name == "sigmoid":
            return 1.0 / (1.0 + np.exp(-x))
        if name == "tanh":
            return np.tanh(x)
        if name == "silu":
            return x / (1.0 + np.exp(-x))
        if name == "hardswish":
            return x * np.clip(x + 3, 0, 6) / 6
        if name == "hardsigmoid":
            return np.clip(x + 3, 0, 6) / 6
        if name == "gelu":
            if kw.get("approximate", "none") == "tanh":
                return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
            return 0.5 * x * (1 + _erf(x / np.sqrt(2)))
        if name == "mish":
            return x * np.tanh(np.log1p(np.exp(x)))
        if name == "softplus":
            b, t = kw.get("beta", 1.0), kw.get("threshold", 20.0)
            return np.where(x * b > t, x, np.log1p(np.exp(x * b)) / b)
    raise KeyError(name)


def softmax(x, dim, log=False):
    x = np.asarray(x, np.float64)
    m = np.max(x, axis=dim, keepdims=True)
    e = np.exp(x - m)
    s = e.sum(axis=dim, keepdims=True)
    return (x - m - np.log(s)) if log else e / s


def linear(x, w, b=None):
    y = np.asarray(x, np.float64) @ np.asarray(w, np.float64).T
    return y if b is None else y + b


# ---------------------------------------------------------------- normalization

def normalize(x, axes, eps):
    """(x - mean) / sqrt(var + eps) over `axes`, biased variance, two-pass in float64."""
    x = np.asarray(x, np.float64)
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(var + eps), mean, var


def channel_affine(y, weight, bias):
    shape = (1, -1) + (1,) * (y.ndim - 2)
    if weight is not None:
        y = y * np.asarray(weight, np.float64).reshape(shape)
    if bias is not None:
        y = y + np.asarray(bias, np.float64).reshape(shape)
    return y


def batch_norm_train(x, weight=None, bias=None, eps=1e-5):
    axes = (0,) + tuple(range(2, x.ndim))
    y, mean, var = normalize(x, axes, eps)
    n = x.size // x.shape[1]
    return channel_affine(y, weight, bias), mean.reshape(-1), var.reshape(-1) * n / (n - 1)


def batch_norm_eval(x, mean, var, weight=None, bias=None, eps=1e-5):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    y = (np.asarray(x, np.float64) - np.reshape(mean, shape)) / np.sqrt(np.reshape(var, shape) + eps)
    return channel_affine(y, weight, bias)


def instance_norm(x, weight=None, bias=None, eps=1e-5):
    y, _, _ = normalize(x, tuple(range(2, x.ndim)), eps)
    return channel_affine(y, weight, bias)


def group_norm(x, groups, weight=None, bias=None, eps=1e-5):
    n, c = x.shape[:2]
    g = np.asarray(x, np.float64).reshape((n, groups, -1))
    y, _, _ = normalize(g, (2,), eps)
    return channel_affine(y.reshape(x.shape), weight, bias)


def layer_norm(x, shape, weight=None, bias=None, eps=1e-5):
    axes = tuple(range(x.ndim - len(shape), x.ndim))
    y, _, _ = normalize(x, axes, eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


def local_response_norm(x, size, alpha=1e-4, beta=0.75, k=1.0):
    x = np.asarray(x, np.float64)
    c = x.shape[1]
    sq = np.zeros_like(x)
    for ch in range(c):
        lo, hi = max(0, ch - size // 2), min(c, ch + (size - 1) // 2 + 1)
        sq[:, ch] = (x[:, lo:hi] ** 2).sum(axis=1)
    return x / (k + alpha / size * sq) ** beta

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


def relu(x):
    return np.where(x < 0, 0.0, x)


def relu6(x):
    return np.minimum(np.maximum(x, 0.0), 6.0)


def silu(x):
    return x / (1.0 + np.exp(-x))


ACTIVATIONS = {None: lambda v: v, "relu": relu, "relu6": relu6, "silu": silu}

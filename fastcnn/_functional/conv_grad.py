"""Gradients of the convolutions, as torch.nn.grad's conv{1,2,3}d_input and
conv{1,2,3}d_weight (and the bias's, a sum).

Grad input is the transposed convolution of the output gradient
(conv_transpose's engine: one stride-1 convolution per output phase on the
forward engine); strided depthwise layers use a direct kernel.
Grad weight is one GEMM per group over im2col columns of the input, all
images side by side (the Caffe / PyTorch CPU design); depthwise layers use a
direct kernel. Every path sums in an order fixed by the shapes alone.
"""
import math

import numpy as np

from fastcnn import _kernels
from fastcnn import _threads
from fastcnn._functional.conv import scratch, conv_padding, pad_input
from fastcnn._functional.conv_transpose import run_transposed
from fastcnn._validation import as_array, check_float, contiguous, conv_output_size, ntuple

__all__ = ["conv_input_grad", "conv_weight_grad", "conv_bias_grad", "conv1d_input",
           "conv2d_input", "conv3d_input", "conv1d_weight", "conv2d_weight", "conv3d_weight",
           "unpad_grad"]

_CHUNK_BYTES = 512 * 1024      # im2col columns per chunk of output positions
_MIN_CHUNK = 256                # ... but at least this many: each GEMM has depth
# A weight gradient this small (elements) over enough positions (_PARTS runs of
# _MIN_CHUNK) is summed in _PARTS runs of positions, each a thread's own: its
# per-chunk GEMMs are too small to share (ResNet's first layer, 64 x 3 x 7 x 7,
# and its 1x1 downsampling layers, batch 8: 1.3-1.8x at 2 threads; a
# 64 x 64 x 3 x 3 one ran 5-10 % slower on AVX-512; AMD EPYC Zen 5).
_PARTS_MAX_WEIGHTS = 2**14
_PARTS = 8
# The GEMMs compute gw's transpose (the columns as their left operand) where the
# columns are the much longer side and the output channels few: ResNet's 3x3
# weight gradients, batch 8, 128 channels: 1.06-1.09x faster so on AVX-512 and
# AVX2; 256: even; 512: 1.07-1.25x slower (all targets; AMD EPYC Zen 5).
_TRANSPOSED_MAX_COUT = 255


class _Geometry:
    """A convolution's sizes from its input shape, weight shape and options."""

    def __init__(self, op, input_shape, weight_shape, stride, padding, dilation, groups,
                 grad_output):
        nd = len(weight_shape) - 2
        self.nd = nd
        self.kernel = tuple(int(k) for k in weight_shape[2:])
        self.stride = ntuple(stride, nd, op, "stride", minimum=1)
        self.dilation = ntuple(dilation, nd, op, "dilation", minimum=1)
        self.before, self.after = conv_padding(padding, nd, self.kernel, self.stride,
                                               self.dilation, op)
        self.groups = ntuple(groups, 1, op, "groups", minimum=1)[0]
        self.input_shape = tuple(int(s) for s in input_shape)
        if len(self.input_shape) != nd + 2:
            raise ValueError(f"{op}: input_size must have {nd + 2} entries (N, C, "
                             f"{nd} spatial), got {self.input_shape}")
        self.out_spatial = tuple(conv_output_size(*a) for a in zip(
            self.input_shape[2:], self.kernel, self.stride, self.before, self.after,
            self.dilation))
        out_channels = weight_shape[0]
        want = (self.input_shape[0], out_channels) + self.out_spatial
        if tuple(grad_output.shape) != want:
            raise ValueError(f"{op}: grad_output must have shape {want} (input {self.input_shape},"
                             f" weight {tuple(weight_shape)}), got {tuple(grad_output.shape)}")
        if self.input_shape[1] != weight_shape[1] * self.groups or out_channels % self.groups:
            raise ValueError(f"{op}: input channels {self.input_shape[1]} and weight "
                             f"{tuple(weight_shape)} do not match groups={self.groups}")

    def kernel_geom(self, images, channels):
        """The (images, channels, size3, out3, kernel3, stride3, pad3, dilation3)
        tuple of the _grad kernels."""
        lead = 3 - self.nd
        return ((images, channels) + (1,) * lead + self.input_shape[2:]
                + (1,) * lead + self.out_spatial + (1,) * lead + self.kernel
                + (1,) * lead + self.stride + (0,) * lead + self.before
                + (1,) * lead + self.dilation)


def _float(a, op, name):
    a = as_array(a, op, name)
    check_float(a, op)
    return a


def conv_input_grad(input_size, weight, grad_output, stride=1, padding=0, dilation=1, groups=1,
                    op="conv_input_grad"):
    """The gradient of conv(input, weight) with respect to input, for an
    input of shape input_size (N, C, *spatial)."""
    w = _float(weight, op, "weight")
    gy = _float(grad_output, op, "grad_output")
    if gy.dtype != w.dtype:
        raise TypeError(f"{op}: grad_output dtype {gy.dtype} does not match weight dtype {w.dtype}")
    g = _Geometry(op, input_size, w.shape, stride, padding, dilation, groups, gy)
    gx = np.empty(g.input_shape, gy.dtype)
    if gx.size == 0:
        return gx
    gy, w = contiguous(gy), contiguous(w)
    if (g.groups == g.input_shape[1] and w.shape[1] == 1
            and any(s > 1 for s in g.stride)):
        _kernels._grad.depthwise_input(g.kernel_geom(*g.input_shape[:2]),
                                       w.shape[0] // g.groups, gy, w, gx,
                                       _threads.get_num_threads())
    else:
        # w (out, in / groups, *k) is the transposed convolution's (in, out / groups, *k)
        run_transposed(gy, w, None, gx, g.groups, g.stride, g.before, g.dilation)
    return gx


def conv_weight_grad(input, weight_size, grad_output, stride=1, padding=0, dilation=1, groups=1,
                     op="conv_weight_grad"):
    """The gradient of conv(input, weight) with respect to a weight of shape
    weight_size (out_channels, in_channels / groups, *kernel)."""
    x = _float(input, op, "input")
    gy = _float(grad_output, op, "grad_output")
    if gy.dtype != x.dtype:
        raise TypeError(f"{op}: grad_output dtype {gy.dtype} does not match input dtype {x.dtype}")
    weight_size = tuple(int(s) for s in weight_size)
    g = _Geometry(op, x.shape, weight_size, stride, padding, dilation, groups, gy)
    n, channels = g.input_shape[:2]
    if n == 0 or math.prod(weight_size) == 0:
        return np.zeros(weight_size, x.dtype)
    gw = np.empty(weight_size, x.dtype)         # every path below writes all of it
    x, gy = contiguous(x), contiguous(gy)
    threads = _threads.get_num_threads()
    cout = weight_size[0]
    if g.groups == channels and weight_size[1] == 1:
        _kernels._grad.depthwise_weight(g.kernel_geom(n, channels), cout // channels, x, gy,
                                        gw, threads)
        return gw
    geom = g.kernel_geom(n, channels)
    if (g.groups == 1 and cout <= _kernels._grad.WGRAD_COUT_MAX
            and g.kernel[-1] <= _kernels._grad.WGRAD_KW_MAX
            and all(s == 1 for s in g.stride[-2:]) and _kernels._act.all_finite(x, threads)):
        # few output channels: an im2col GEMM would be all packing
        xp, gp, partial = _direct_workspace(geom, gw)
        _kernels._grad.conv_weight_direct(geom, x, gy, xp, gp, partial, gw, threads)
        return gw
    if g.groups == 1 and _kernels._grad.winograd_weight_pays(geom, cout, x.itemsize):
        chunk = _kernels._grad.WINOGRAD_WEIGHT_CHUNK_TILES
        work = scratch.get(0, _kernels._grad.winograd_weight_workspace(geom, cout, chunk,
                                                                       threads), x.dtype)
        _kernels._grad.conv_weight_winograd(geom, x, gy, gw, work, chunk, threads)
        # An Inf or NaN in x or gy reaches every M row its tile meets, and so
        # some element of each filter it touches: a finite gw had finite
        # operands. Otherwise the transforms smeared it over whole tiles (or
        # overflowed): the im2col path below gives the definition's values.
        if _kernels._act.all_finite(gw, threads):
            return gw
    taps = math.prod(g.kernel)
    positions = math.prod(g.out_spatial)
    width = weight_size[1] * taps
    # the output gradient channel-major, (cout, images * positions): the GEMM's left operand
    rows = scratch.get(0, gy.size, x.dtype).reshape(cout, n, positions)
    _kernels._linear.channel_major(gy, rows, n, cout, positions, threads)
    # a chunk's columns stay in L2 where they are few enough
    chunk = max(_MIN_CHUNK, _CHUNK_BYTES // (channels * taps * x.itemsize))
    chunk = min(chunk, n * positions)
    if gw.size <= _PARTS_MAX_WEIGHTS and n * positions >= _PARTS * _MIN_CHUNK:
        cols = scratch.get(1, threads * channels * taps * chunk, x.dtype)
        partial = scratch.get(2, _PARTS * gw.size, x.dtype)
        _kernels._grad.conv_weight_parts(geom, g.groups, x, rows, gw, partial, cols, chunk,
                                         _PARTS, threads)
        return gw
    # column blocks: 4 per group, multiples of 16, so two threads share a GEMM's work
    quarter = -(-width // 4)
    col_block = max(16, (quarter + 15) // 16 * 16)
    cols = scratch.get(1, channels * taps * chunk, x.dtype)
    # gw's transpose as the GEMMs' product (_TRANSPOSED_MAX_COUT)
    cout_g = cout // g.groups
    gwt = (scratch.get(2, gw.size, x.dtype)
           if width >= 4 * cout_g and cout_g <= _TRANSPOSED_MAX_COUT else None)
    _kernels._grad.conv_weight(geom, g.groups, x, rows, gw, gwt, cols, chunk,
                               col_block, threads)
    return gw


def _direct_workspace(geom, gw):
    """conv_weight_direct's laid-out operands and partial sums for gw, from
    the thread's scratch (fresh ones would page-fault on every call)."""
    xp_shape, gp_shape, _ = _kernels._grad.direct_layout_shapes(geom, gw.shape[0])
    xp = scratch.get(0, math.prod(xp_shape), gw.dtype).reshape(xp_shape)
    gp = scratch.get(1, math.prod(gp_shape), gw.dtype).reshape(gp_shape)
    partial = scratch.get(2, _kernels._grad.direct_parts(geom[0]) * gw.size, gw.dtype)
    return xp, gp, partial


def conv_bias_grad(grad_output):
    """The gradient of a convolution's (or any per-channel) bias: grad_output
    summed over every axis but the channels (axis 1)."""
    gy = contiguous(grad_output)
    if gy.ndim < 2:
        raise ValueError(f"conv_bias_grad: grad_output must be (N, C, ...), got shape {gy.shape}")
    n, c = gy.shape[:2]
    sums = np.empty(c, np.float64)
    _kernels._grad.channel_sums(gy, sums, n, c, math.prod(gy.shape[2:]),
                                _threads.get_num_threads())
    return sums.astype(gy.dtype)


_NP_MODES = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def unpad_grad(grad, before, after, mode):
    """The gradient of pad_input (reflect, replicate or circular padding of
    the trailing len(before) axes): each padded position's gradient added to
    the input position it copies."""
    nd = len(before)
    g = grad
    for axis in range(g.ndim - nd, g.ndim):
        i = axis - (g.ndim - nd)
        size = g.shape[axis] - before[i] - after[i]
        index = np.pad(np.arange(size), (before[i], after[i]), mode=_NP_MODES[mode])
        moved = np.moveaxis(g, axis, 0)
        acc = np.zeros((size,) + moved.shape[1:], g.dtype)
        np.add.at(acc, index, moved)
        g = np.moveaxis(acc, 0, axis)
    return np.ascontiguousarray(g)


def _nd_pair(nd):
    def input_grad(input_size, weight, grad_output, stride=1, padding=0, dilation=1, groups=1):
        return conv_input_grad(input_size, weight, grad_output, stride, padding, dilation, groups,
                               f"conv{nd}d_input")

    def weight_grad(input, weight_size, grad_output, stride=1, padding=0, dilation=1, groups=1):
        return conv_weight_grad(input, weight_size, grad_output, stride, padding, dilation,
                                groups, f"conv{nd}d_weight")
    input_grad.__name__, weight_grad.__name__ = f"conv{nd}d_input", f"conv{nd}d_weight"
    input_grad.__doc__ = (f"Gradient of conv{nd}d with respect to its input (of shape "
                          f"input_size), as torch.nn.grad.conv{nd}d_input.")
    weight_grad.__doc__ = (f"Gradient of conv{nd}d with respect to its weight (of shape "
                           f"weight_size), as torch.nn.grad.conv{nd}d_weight.")
    return input_grad, weight_grad


conv1d_input, conv1d_weight = _nd_pair(1)
conv2d_input, conv2d_weight = _nd_pair(2)
conv3d_input, conv3d_weight = _nd_pair(3)


def padded_conv_grads(x, weight, grad_output, stride, padding, dilation, groups, padding_mode,
                      want_input, want_weight, op):
    """(grad input, grad weight) of a convolution with padding_mode (any, as
    the Conv layers take it); None for what is not wanted."""
    gx = gw = None
    if padding_mode == "zeros":
        if want_input:
            gx = conv_input_grad(x.shape, weight, grad_output, stride, padding, dilation, groups, op)
        if want_weight:
            gw = conv_weight_grad(x, weight.shape, grad_output, stride, padding, dilation, groups,
                                  op)
        return gx, gw
    nd = x.ndim - 2
    st = ntuple(stride, nd, op, "stride", minimum=1)
    dil = ntuple(dilation, nd, op, "dilation", minimum=1)
    before, after = conv_padding(padding, nd, weight.shape[2:], st, dil, op)
    xp = pad_input(x, before, after, padding_mode, op)
    if want_input:
        g = conv_input_grad(xp.shape, weight, grad_output, st, 0, dil, groups, op)
        gx = unpad_grad(g, before, after, padding_mode)
    if want_weight:
        gw = conv_weight_grad(xp, weight.shape, grad_output, st, 0, dil, groups, op)
    return gx, gw

"""Transposed convolution (the gradient of a convolution with respect to its
input): conv_transpose1d/2d/3d, as torch.nn.functional's.

Two engines, one dispatcher (run_transposed): by output phases, one stride-1
convolution per phase (the outputs whose index is a given value modulo the
stride) on the forward engine, interleaved into the output by one kernel; and the
Caffe / PyTorch CPU design for dilated kernels and small strided outputs, one
GEMM per group over every image's columns (columns = w^T x, tap-major), then
col2im adding each tap's plane at stride steps. Both sum in a fixed order, so
results do not depend on the thread count.
"""
import itertools
import math

import numpy as np

from fastcnn import _threads
from fastcnn import _kernels
from fastcnn._graph import traceable
from fastcnn._functional.conv import channel_bias, conv_operands, conv_run, scratch
from fastcnn._validation import check_out, contiguous, ntuple, shape_str

__all__ = ["conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "conv_transpose_nd",
           "run_transposed",
           "conv_transpose_output_size"]

_COLUMNS_LIMIT = 2**25          # elements of GEMM output per batch of images
# Strided: one convolution per phase pays when each phase has this many
# outputs per image; with fewer, the forward kernels' per-image tiles are
# mostly edges and one GEMM over every image's columns wins.
_PHASE_MIN_POSITIONS = 256


def conv_transpose_output_size(size, kernel, stride, padding, output_padding, dilation):
    """(in - 1) stride - 2 padding + dilation (kernel - 1) + output_padding + 1."""
    return (size - 1) * stride - 2 * padding + dilation * (kernel - 1) + output_padding + 1


@traceable("conv_transpose")
def conv_transpose_nd(nd, op, input, weight, bias=None, stride=1, padding=0, output_padding=0,
                      groups=1, dilation=1, out=None):
    """The transposed convolution behind conv_transpose1d/2d/3d, the
    ConvTranspose layers and ONNX ConvTranspose; `op` names the caller in errors."""
    x, w, unbatched, groups, kernel = conv_operands(
        nd, op, input, weight, groups, "(in_channels, out_channels/groups, ")
    in_channels, cout_group = w.shape[0], w.shape[1]
    if in_channels % groups:
        raise ValueError(f"{op}: in_channels ({in_channels}) must be divisible by groups "
                         f"({groups})")
    if x.shape[1] != in_channels:
        raise ValueError(f"{op}: expected input with {in_channels} channels (weight "
                         f"{shape_str(w.shape)}), got input of shape "
                         f"{shape_str(x.shape if not unbatched else x.shape[1:])}")
    if 0 in x.shape[2:]:
        raise ValueError(f"{op}: expected an input with non-zero spatial sizes, got shape "
                         f"{shape_str(x.shape if not unbatched else x.shape[1:])}")
    stride = ntuple(stride, nd, op, "stride", minimum=1)
    dilation = ntuple(dilation, nd, op, "dilation", minimum=1)
    padding = ntuple(padding, nd, op, "padding", minimum=0)
    output_padding = ntuple(output_padding, nd, op, "output_padding", minimum=0)
    for o, s, d in zip(output_padding, stride, dilation):
        if o >= s and o >= d:
            raise ValueError(f"{op}: output_padding must be smaller than either stride or "
                             f"dilation, got output_padding={output_padding}, "
                             f"stride={stride}, dilation={dilation}")
    spatial = x.shape[2:]
    out_spatial = tuple(conv_transpose_output_size(*a) for a in
                        zip(spatial, kernel, stride, padding, output_padding, dilation))
    if min(out_spatial) < 1:
        raise ValueError(f"{op}: the output would be {out_spatial} for input {spatial}, kernel "
                         f"{kernel}, stride {stride}, padding {padding}, dilation {dilation}: "
                         f"too small")
    if max(max(spatial) * max(stride), max(kernel) * max(dilation), max(padding)) >= 2**40:
        raise ValueError(f"{op}: sizes too large to index")
    out_channels = cout_group * groups
    bias = channel_bias(bias, out_channels, x.dtype, op)
    out_shape = (x.shape[0], out_channels) + out_spatial
    if out is None:
        y = np.empty(out_shape, x.dtype)
    else:
        y = check_out(out, out_shape[1:] if unbatched else out_shape, x.dtype, op,
                      (x, w, bias)).reshape(out_shape)
    run_transposed(x, contiguous(w), bias, y, groups, stride, padding, dilation)
    if out is not None:
        return out
    return y[0] if unbatched else y


def run_transposed(x, w, bias, y, groups, stride, padding, dilation):
    """y = the transposed convolution of validated, batched x with w (in,
    out / groups, *k), its window starting `padding` into the full extent
    (also the gradient of a convolution with respect to its input)."""
    if all(d == 1 for d in dilation) and (
            all(s == 1 for s in stride)
            or math.prod(-(-o // s) for o, s in zip(y.shape[2:], stride)) >= _PHASE_MIN_POSITIONS):
        _by_phases(x, w, bias, y, groups, stride, padding)
    else:
        _by_columns(x, w, y, groups, stride, padding, dilation)
        if bias is not None:
            y += bias.reshape((1, -1) + (1,) * (x.ndim - 2))


def _axis_phases(size_in, size_out, k, s, p):
    """Along one axis, the outputs o = s q + a of each phase a, as a stride-1
    correlation of the input with the taps t0, t0 + s, ... reversed:
    y[s q + a] = sum_j x[q + first + j] w[t0 + s (taps - 1 - j)].
    Yields (a, count, t0, taps, first); taps 0 means the phase is all zeros."""
    for a in range(min(s, size_out)):
        count = -(-(size_out - a) // s)
        t0 = (a + p) % s
        taps = -(-(k - t0) // s) if k > t0 else 0
        first = (a + p - t0) // s - (taps - 1)
        yield a, count, t0, taps, first


def _by_phases(x, w, bias, y, groups, stride, padding):
    """The transposed convolution as stride-1 convolutions on the forward
    engine, one per output phase (sub-pixel position modulo the stride), each
    with the kernel taps that reach that phase, flipped; one pass then
    interleaves the phases into y, adding the bias. Stride 1 is a single phase
    written into y directly, bias included."""
    nd = x.ndim - 2
    n, planes = x.shape[0], x.shape[0] * y.shape[1]
    w_conv = conv_weights(w, groups)
    threads = _threads.get_num_threads()
    pad3, one3 = (0,) * (3 - nd), (1,) * (3 - nd)
    per_axis = [list(_axis_phases(*a)) for a in zip(x.shape[2:], y.shape[2:], w.shape[2:],
                                                    stride, padding)]
    direct = all(s == 1 for s in stride)
    buffer = None if direct else scratch.get(2, y.size, y.dtype)   # the phases, in turn
    sources, used = [], 0
    for phase in itertools.product(*per_axis):
        if any(taps == 0 for _, _, _, taps, _ in phase):
            sources.append(None)        # no tap reaches it: bias or zeros
            continue
        sub = _phase_taps(w_conv, phase, stride)
        # the input rows each phase reads: first .. first + count + taps - 2,
        # zeros outside x (padding when it is within the kernel, else explicit)
        lo = [first for _, _, _, _, first in phase]
        hi = [first + count + taps - 2 for _, count, _, taps, first in phase]
        crop = tuple(slice(max(l, 0), min(h, size - 1) + 1)
                     for l, h, size in zip(lo, hi, x.shape[2:]))
        before = [max(0, -l) for l in lo]
        after = [max(0, h - (size - 1)) for h, size in zip(hi, x.shape[2:])]
        xin = x[(slice(None), slice(None)) + crop]
        if any(b >= taps or e >= taps for b, e, (_, _, _, taps, _) in zip(before, after, phase)):
            xin = np.pad(xin, [(0, 0), (0, 0)] + list(zip(before, after)))
            before = [0] * nd
        xin = contiguous(xin)
        counts = tuple(count for _, count, _, _, _ in phase)
        if direct:
            out = y
        else:
            size = planes * math.prod(counts)
            out = buffer[used:used + size].reshape((n, y.shape[1]) + counts)
            sources.append(out.reshape((planes,) + one3 + counts))
            used += size
        geom = ((n, x.shape[1], y.shape[1], groups) + one3 + xin.shape[2:] + one3 + counts
                + one3 + sub.shape[2:] + (1, 1, 1) + pad3 + tuple(before) + (1, 1, 1))
        conv_run(geom, xin, sub, bias if direct else None, out, 0, threads)
    if not direct:
        _kernels._linear.interleave_phases(sources, y.reshape((planes,) + one3 + y.shape[2:]),
                                           one3 + tuple(stride), bias, threads)


def conv_weights(w, groups):
    """A transposed convolution's weights (in, out / groups, *k) as a
    convolution's (out, in / groups, *k). The swap moves whole kernels (a
    kernel's taps as one element): several times faster than NumPy's
    element-wise transpose of a weight this size."""
    cin_g, cout_g, kernel = w.shape[0] // groups, w.shape[1], w.shape[2:]
    kernels = np.ascontiguousarray(w).reshape(groups, cin_g, cout_g * math.prod(kernel)) \
        .view(np.dtype((np.void, w.itemsize * math.prod(kernel))))
    return np.ascontiguousarray(kernels.swapaxes(1, 2)).view(w.dtype) \
        .reshape((groups * cout_g, cin_g) + kernel)


def _phase_taps(w_conv, phase, stride):
    """The convolution weights of one phase: per axis the taps t0, t0 + s, ...
    in reverse order (a correlation with the flipped sub-kernel)."""
    return np.ascontiguousarray(w_conv[(slice(None), slice(None)) + tuple(
        slice(t0 + s * (taps - 1), t0 - 1 if t0 else None, -s)
        for (_, _, t0, taps, _), s in zip(phase, stride))])


def _by_columns(x, w, y, groups, stride, padding, dilation):
    """The transposed convolution as one GEMM per group (every input
    position's contribution at every tap) and col2im (dilated kernels)."""
    n, nd = x.shape[0], x.ndim - 2
    spatial, kernel = x.shape[2:], w.shape[2:]
    cin_g, cout_g = x.shape[1] // groups, w.shape[1]
    taps = math.prod(kernel)
    positions = math.prod(spatial)
    # the full extent every tap reaches; the output is its window past the padding
    full = tuple(max((i - 1) * s + d * (k - 1) + 1, p + o)
                 for i, s, d, k, p, o in zip(spatial, stride, dilation, kernel, padding,
                                             y.shape[2:]))
    window = (slice(None), slice(None)) + tuple(slice(p, p + o) for p, o in
                                                  zip(padding, y.shape[2:]))
    threads = _threads.get_num_threads()
    chunk = max(1, _COLUMNS_LIMIT // max(1, positions * cout_g * taps))
    # per group, the weights tap-major, (taps * cout_g, cin_g): the GEMM then
    # writes each tap's contributions as one contiguous (cout_g, positions) plane
    w_taps = [contiguous(np.moveaxis(w[g * cin_g:(g + 1) * cin_g], (0, 1), (-1, -2))
                         .reshape(taps * cout_g, cin_g)) for g in range(groups)]
    pad3 = (1,) * (3 - nd)
    size3, kernel3 = pad3 + tuple(spatial), pad3 + tuple(kernel)
    stride3, dilation3, full3 = pad3 + tuple(stride), pad3 + tuple(dilation), pad3 + full
    for start in range(0, n, chunk):
        xs = x[start:start + chunk]
        m = xs.shape[0]
        in_place = full == y.shape[2:]          # nothing cropped: scatter into y itself
        acc = y[start:start + m] if in_place else np.empty((m, y.shape[1]) + full, x.dtype)
        for g in range(groups):
            rows = contiguous(xs[:, g * cin_g:(g + 1) * cin_g].reshape(m, cin_g, positions)
                              .transpose(0, 2, 1)).reshape(m * positions, cin_g)
            cols = np.empty((taps * cout_g, m * positions), x.dtype)
            _kernels._linear.linear(w_taps[g], rows, None, cols, 0, threads)
            _kernels._linear.col2im(cols, acc, m, taps, cout_g, y.shape[1], g * cout_g, size3,
                                    kernel3, stride3, dilation3, full3, threads)
        if not in_place:
            np.copyto(y[start:start + m], acc[window])


@traceable("conv_transpose1d")
def conv_transpose1d(input, weight, bias=None, stride=1, padding=0, output_padding=0,
                     groups=1, dilation=1, *, out=None):
    """1-D transposed convolution over (N, C_in, L) or (C_in, L), as
    torch.nn.functional.conv_transpose1d; weight (C_in, C_out / groups, k)."""
    return conv_transpose_nd(1, "conv_transpose1d", input, weight, bias, stride, padding,
                             output_padding, groups, dilation, out)


@traceable("conv_transpose2d")
def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0,
                     groups=1, dilation=1, *, out=None):
    """2-D transposed convolution over (N, C_in, H, W) or (C_in, H, W), as
    torch.nn.functional.conv_transpose2d; weight (C_in, C_out / groups, kh, kw)."""
    return conv_transpose_nd(2, "conv_transpose2d", input, weight, bias, stride, padding,
                             output_padding, groups, dilation, out)


@traceable("conv_transpose3d")
def conv_transpose3d(input, weight, bias=None, stride=1, padding=0, output_padding=0,
                     groups=1, dilation=1, *, out=None):
    """3-D transposed convolution over (N, C_in, D, H, W) or (C_in, D, H, W), as
    torch.nn.functional.conv_transpose3d."""
    return conv_transpose_nd(3, "conv_transpose3d", input, weight, bias, stride, padding,
                             output_padding, groups, dilation, out)

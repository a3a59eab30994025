"""Transposed convolution (the gradient of a convolution with respect to its
input): conv_transpose1d/2d/3d, as torch.nn.functional's.

Three engines, one dispatcher (run_transposed): by taps where the kernel equals
the stride with no padding (U-Net's up-convolutions; the taps' outputs never
overlap, so one GEMM per tile with the weights as stored gives every tap's
outputs, scattered into place by the same task); by output phases, one
stride-1 convolution per phase (the outputs whose index is a given value
modulo the stride) on the forward engine, interleaved into the output by one
kernel; and the Caffe / PyTorch CPU design for dilated kernels and strided
layers with few outputs per phase, one GEMM per group over every image's
columns (columns = w^T x, the weights as stored), then col2im adding each
tap's plane at stride steps. All sum in
a fixed order, so results do not depend on the thread count.
"""
import itertools
import math
from typing import NamedTuple

import numpy as np

from fastcnn import _threads
from fastcnn import _kernels
from fastcnn._graph import traceable
from fastcnn._functional.conv import (ConvEngine, ConvGeometry, channel_bias, conv_operands,
                                      conv_run, safe_engine, scratch)
from fastcnn._validation import check_out, contiguous, ntuple, shape_str

__all__ = ["conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "conv_transpose_nd",
           "run_transposed", "by_taps", "ByTaps", "by_phases", "Phases",
           "CompiledPhases",
           "conv_transpose_output_size"]

_COLUMNS_LIMIT = 2**25          # elements of GEMM output per batch of images
# Strided: one convolution per phase pays when each phase has this many
# outputs per image; with fewer, the forward kernels' per-image tiles are
# mostly edges and one GEMM over every image's columns wins (3x3 stride 2,
# batch 8, 64 to 512 channels: columns 0.64-0.98x the phases' time at 49-100
# outputs a phase, one 64-channel layer at 2 threads 1.12-1.14x; 0.88-1.22x at
# 121, 0.95-1.13x at 196, 1.2-1.5x at 784; AMD EPYC Zen 5, all targets, 1 and 2
# threads).
_PHASE_MIN_POSITIONS = 112
# Merged into one 2x2 convolution, the phases save few multiplies (4 x 25/16
# against 1 + 2 + 2 + 25/16); what pays is GEMMs four times taller, where each
# phase alone has fewer output channels than this (a U-Net 3x3 layer of 32:
# 1.1-1.6x; 128 and more: up to 1.6x slower, the transformed weights then
# outweighing the products; 64 between, 0.8-1.2x; AMD EPYC Zen 5, all targets).
_MERGE_2X2_MAX_CHANNELS = 64
# Phases run one thread each only where each is small: threading one small
# convolution pays less than running several side by side (batch-1 U-Net
# layers, up to 1.12x), but phases this large run better on every thread in
# turn (ResNet's first layer's grad input, 8 x 3->64 @224 in four 3x3 / 4x4
# phases of 0.3 G multiply-adds each: 1.45x; AMD EPYC Zen 5).
_ONE_THREAD_EACH_MAX_FMAS = 2**26


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
    if by_taps(x.shape, y.shape, w.shape, stride, padding, dilation):
        threads = _threads.get_num_threads()
        ByTaps(x.shape, w, groups, stride, threads)(x, bias, y, threads)
    elif by_phases(y.shape, w.shape, groups, stride, dilation):
        Phases(x.shape, y.shape, w, groups, stride, padding)(x, bias, y,
                                                             _threads.get_num_threads())
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


def by_taps(x_shape, y_shape, w_shape, stride, padding, dilation):
    """Whether the transposed convolution runs by taps: the kernel is the
    stride, undilated and unpadded, with no output padding (each output is
    one tap's), and the GEMM's sizes fit its 32-bit arguments."""
    return (tuple(w_shape[2:]) == tuple(stride) and all(p == 0 for p in padding)
            and all(d == 1 for d in dilation)
            and tuple(y_shape[2:]) == tuple(i * s for i, s in zip(x_shape[2:], stride))
            and max(math.prod(x_shape[2:]), w_shape[1] * math.prod(stride), w_shape[0]) < 2**31)


class ByTaps:
    """A transposed convolution by taps (see by_taps) for one input shape
    and weight, its weights packed for the kernel when built (where the
    kernel packs them). Its scratch (the packed weights included) is the
    thread's shared scratch in eager calls; in a compiled plan
    (own_workspace) its own, allocated for `threads` up front and again only
    if a call brings more threads."""

    def __init__(self, x_shape, w, groups, stride, threads, own_workspace=False):
        self.x_shape, self.groups, self.stride = x_shape, groups, tuple(stride)
        pad3 = (1,) * (3 - len(stride))
        cin_g, cout_g = x_shape[1] // groups, w.shape[1]
        self._args = (x_shape[0], groups, cin_g, cout_g, pad3 + tuple(x_shape[2:]),
                      pad3 + self.stride, w.itemsize)
        w = np.ascontiguousarray(w)
        size = _kernels._linear.by_taps_packed_size(groups, cin_g, cout_g,
                                                    math.prod(self.stride), w.itemsize)
        if size == 0:               # the kernel takes the weights as stored
            self.packed = w
        else:
            self.packed = (np.empty(size, w.dtype) if own_workspace
                           else scratch.get(0, size, w.dtype))
            _kernels._linear.by_taps_pack(w, groups, self.packed, threads)
        self.workspace = np.empty(self._size(threads), w.dtype) if own_workspace else None

    def _size(self, threads):
        return _kernels._linear.by_taps_workspace(*self._args, threads)

    def __call__(self, x, bias, y, threads):
        size = self._size(threads)
        if self.workspace is None:
            workspace = scratch.get(2, size, x.dtype)
        else:
            if self.workspace.size < size:
                self.workspace = np.empty(size, self.workspace.dtype)
            workspace = self.workspace
        _kernels._linear.conv_transpose_by_taps(x, self.packed, bias, y, self.groups,
                                                self.stride, workspace, threads)


def by_phases(y_shape, w_shape, groups, stride, dilation):
    """Whether the transposed convolution runs by output phases (else by
    columns): undilated, and stride 1 or enough outputs per phase."""
    if any(d != 1 for d in dilation):
        return False
    return (all(s == 1 for s in stride)
            or math.prod(-(-o // s) for o, s in zip(y_shape[2:], stride)) >= _PHASE_MIN_POSITIONS)


class _Phase(NamedTuple):
    geom: ConvGeometry       # its stride-1 convolution
    start: tuple             # where its input window starts in the input (any sign:
                             # zeros outside the input, beyond the kernel's padding)
    in_shape: tuple          # the shape of that window
    counts: tuple            # its outputs along each axis
    sub: np.ndarray          # its weights: the taps that reach it, flipped


class Phases:
    """A transposed convolution by output phases (the outputs whose index is a
    given value modulo the stride), resolved for one input and output shape:
    each phase is a stride-1 convolution on the forward engine with the
    kernel taps that reach it, flipped; one pass then interleaves the phases
    into y, adding the bias. Stride 1 is a single phase written into y
    directly, bias included. Eager calls resolve one per call; compiled plans
    resolve one once (CompiledPhases)."""

    def __init__(self, x_shape, y_shape, w, groups, stride, padding, weights_packed=False):
        nd = len(x_shape) - 2
        self.nd, self.groups, self.stride, self.y_shape = nd, groups, tuple(stride), y_shape
        self.direct = all(s == 1 for s in stride)
        self.merged = False
        pad3, one3 = (0,) * (3 - nd), (1,) * (3 - nd)
        n, spatial = x_shape[0], x_shape[2:]
        self.phases = []                # in C order; None: no tap reaches it
        described = []                  # each phase's _axis_phases, for its taps
        for phase in itertools.product(*[_axis_phases(*a) for a in zip(
                spatial, y_shape[2:], w.shape[2:], stride, padding)]):
            described.append(phase)
            if any(taps == 0 for _, _, _, taps, _ in phase):
                self.phases.append(None)
                continue
            # the input rows it reads: first .. first + count + taps - 2, zeros
            # outside x (the kernel's padding when within the kernel, else explicit)
            lo = [first for _, _, _, _, first in phase]
            hi = [first + count + taps - 2 for _, count, _, taps, first in phase]
            start = tuple(max(l, 0) for l in lo)
            in_spatial = tuple(max(0, min(h, size - 1) + 1 - st)
                               for h, size, st in zip(hi, spatial, start))
            before = tuple(max(0, -l) for l in lo)
            after = tuple(max(0, h - (size - 1)) for h, size in zip(hi, spatial))
            if any(b >= t or e >= t for b, e, (_, _, _, t, _) in zip(before, after, phase)):
                start = tuple(lo)
                in_spatial = tuple(i + b + e for i, b, e in zip(in_spatial, before, after))
                before = (0,) * nd
            counts = tuple(count for _, count, _, _, _ in phase)
            kernel = tuple(taps for _, _, _, taps, _ in phase)
            geom = ConvGeometry(n, x_shape[1], y_shape[1], groups, *one3, *in_spatial, *one3,
                                *counts, *one3, *kernel, 1, 1, 1, *pad3, *before, 1, 1, 1)
            self.phases.append(_Phase(geom, start, (n, x_shape[1]) + in_spatial, counts, None))
        if not self._merge(x_shape, y_shape, w, described, weights_packed):
            # each phase's weights (gathered only now: a merged layer needs none)
            sizes = [p and w.shape[0] * w.shape[1] * p.geom.taps
                     for p in self.phases]
            buffer, used = self._weights_buffer(sum(filter(None, sizes)), w.dtype), 0
            for k, (p, d) in enumerate(zip(self.phases, described)):
                if p is not None:
                    self.phases[k] = p._replace(sub=_phase_taps(
                        w, groups, d, stride, buffer[used:used + sizes[k]]))
                    used += sizes[k]

    def _weights_buffer(self, size, dtype):
        """Where the phases' weights go: the thread's scratch (one call uses them)."""
        return scratch.get(3, size, dtype)

    def _merge(self, x_shape, y_shape, w, described, weights_packed):
        """Merge the phases into one k x k convolution with every phase's
        filters (s0 s1 x out channels: each phase's taps placed where its
        window lies in the k x k around its input position, zeros elsewhere;
        k = 2 or 3, the smallest window holding every phase's) where that runs
        as Winograd with fewer multiplies per input position than the phases
        on their own (_multiplies): one input transform for every phase and
        GEMMs s0 s1 times taller. A 3x3 stride-2 kernel merges into 2x2
        (4 x 25/16 against 1 + 2 + 2 + 25/16) with few output channels
        (_MERGE_2X2_MAX_CHANNELS); a 4x4 one stays four 2x2 Winograd phases
        (4 x 25/16 against 4 x 36/16 merged into 3x3)."""
        if (self.nd != 2 or self.groups != 1 or self.stride != (2, 2)
                or any(p is None for p in self.phases)
                or tuple(y_shape[2:]) != tuple(2 * s for s in x_shape[2:])):
            return False
        # phase outputs q read inputs q + first .. q + first + taps - 1
        if any(count != size for d in described for (_, count, _, _, _), size
               in zip(d, x_shape[2:])):
            return False
        lo = min(first for d in described for _, _, _, _, first in d)
        hi = max(first + taps - 1 for d in described for _, _, _, taps, first in d)
        k = hi - lo + 1
        n, cin, cout = x_shape[0], x_shape[1], y_shape[1]
        if not (lo in (-1, 0) and k in (2, 3)) or (k == 2 and cout >= _MERGE_2X2_MAX_CHANNELS):
            return False
        geom = ConvGeometry(n, cin, 4 * cout, 1, 1, *x_shape[2:], 1, *x_shape[2:],
                            1, k, k, 1, 1, 1, 0, -lo, -lo, 1, 1, 1)
        alone = sum(_multiplies(p.geom, weights_packed) for p in self.phases)
        if (_kernels._conv.select(geom, weights_packed) != "winograd"
                or 4 * _multiplies(geom, weights_packed) >= alone):
            return False
        flat = []
        for d in described:
            # the k x k around q: row i reads q + i + lo, the phase's tap i + lo - first
            taps = [[t[i + lo - first] if 0 <= i + lo - first < len(t) else -1
                     for i in range(k)]
                    for t, (_, _, _, _, first) in zip(_reversed_taps(d, self.stride), d)]
            flat.append([r * w.shape[3] + c if r >= 0 and c >= 0 else -1
                         for r in taps[0] for c in taps[1]])
        sub = _gather_weights(w, 1, flat, self._weights_buffer(4 * cout * cin * k * k, w.dtype))
        self.phases = [_Phase(geom, (0, 0), tuple(x_shape), tuple(x_shape[2:]),
                              sub.reshape(4 * cout, cin, k, k))]
        self.merged = True
        return True

    def __call__(self, x, bias, y, threads):
        n, channels, nd = y.shape[0], y.shape[1], self.nd
        one3 = (1,) * (3 - nd)
        if self.merged:
            self._call_merged(x, bias, y, threads)
            return
        buffer = None if self.direct else self._phase_buffer(y)
        sources, live, outs, used = [], [], [], 0
        for k, phase in enumerate(self.phases):
            if phase is None:
                sources.append(None)    # bias or zeros
                continue
            if self.direct:
                out = y
            else:
                size = n * channels * math.prod(phase.counts)
                out = buffer[used:used + size].reshape((n, channels) + phase.counts)
                sources.append(out.reshape((n * channels,) + one3 + phase.counts))
                used += size
            live.append(k)
            outs.append(out)
        if not self.direct and self._one_thread_each(live, threads):
            self._conv_each(live, self._inputs(live, x, threads), outs, threads)
        else:
            for k, out in zip(live, outs):
                self._conv(k, self._inputs([k], x, threads)[0], out,
                           bias if self.direct else None, threads)
        if not self.direct:
            _kernels._linear.interleave_phases(
                sources, y.reshape((n * channels,) + one3 + y.shape[2:]),
                one3 + self.stride, bias, threads)

    def _call_merged(self, x, bias, y, threads):
        """The merged convolution (see _merge), then each image's four phases,
        consecutive channel blocks of its output, interleaved into y."""
        n, channels = y.shape[:2]
        counts = self.phases[0].counts
        out = self._phase_buffer(y)[:y.size].reshape((n, 4 * channels) + counts)
        self._conv(0, self._inputs([0], x, threads)[0], out, None, threads)
        for i in range(n):
            sources = [out[i, k * channels:(k + 1) * channels].reshape((channels, 1) + counts)
                       for k in range(4)]
            _kernels._linear.interleave_phases(
                sources, y[i].reshape((channels, 1) + y.shape[2:]), (1, 2, 2), bias, threads)

    def _one_thread_each(self, live, threads):
        """Whether the phases run one thread each, `threads` at a time, rather
        than one after another on every thread: small phases split over
        threads less well than a whole layer, so this pays when each is small
        (_ONE_THREAD_EACH_MAX_FMAS) and they share the threads evenly (work,
        largest first, to the least loaded thread: within 5 % of an even
        share)."""
        if threads < 2 or len(live) < threads:
            return False
        work = sorted((self.phases[k].geom.positions * self.phases[k].geom.taps
                       for k in live), reverse=True)
        g = self.phases[live[0]].geom
        if (work[0] * g.batch * g.in_channels * (g.out_channels // g.groups)
                > _ONE_THREAD_EACH_MAX_FMAS):
            return False
        loads = [0] * threads
        for w in work:
            loads[loads.index(min(loads))] += w
        return sum(work) >= 0.95 * threads * max(loads)

    def _conv_each(self, live, xins, outs, threads):
        """The phases `live`, one thread each (see _one_thread_each)."""
        engines = [safe_engine(self.phases[k].geom, xin, self.phases[k].sub, threads)
                   for k, xin in zip(live, xins)]
        weights = scratch.get(0, sum(e.packed_size for e in engines), xins[0].dtype)
        packed, used = [], 0
        for k, engine in zip(live, engines):
            packed.append(engine.pack(self.phases[k].sub, threads,
                                      weights[used:used + engine.packed_size]))
            used += engine.packed_size
        workspace = scratch.get(1, max(1, threads * max(e.workspace_size(1) for e in engines)),
                                xins[0].dtype)
        ConvEngine.forward_each(engines, xins, packed, outs, workspace, threads)

    def _phase_buffer(self, y):
        return scratch.get(2, y.size, y.dtype)

    def _inputs(self, live, x, threads):
        """The input windows of the phases `live`: x itself where a phase
        reads all of it, else a copy with zeros outside x (_copy_window)."""
        sizes = [self._window_size(k, x.shape) for k in live]
        buffer, used, inputs = self._input_buffer(sum(sizes), x.dtype), 0, []
        for k, size in zip(live, sizes):
            inputs.append(x if size == 0 else
                          self._copy_window(k, x, buffer[used:used + size], threads))
            used += size
        return inputs

    def _window_size(self, k, x_shape):
        """Elements of phase k's input window: 0 where it is the whole input."""
        phase = self.phases[k]
        if all(s == 0 for s in phase.start) and phase.in_shape == tuple(x_shape):
            return 0
        return math.prod(phase.in_shape)

    def _copy_window(self, k, x, buffer, threads):
        phase, one3 = self.phases[k], (1,) * (3 - self.nd)
        xin = buffer.reshape(phase.in_shape)
        planes = x.shape[0] * x.shape[1]
        _kernels._linear.copy_window(x.reshape((planes,) + one3 + x.shape[2:]),
                                     xin.reshape((planes,) + one3 + phase.in_shape[2:]),
                                     (0,) * (3 - self.nd) + phase.start, threads)
        return xin

    def _input_buffer(self, size, dtype):
        """Where the phases' input windows go: the thread's scratch."""
        return scratch.get(4, size, dtype)

    def _conv(self, k, xin, out, bias, threads):
        phase = self.phases[k]
        conv_run(phase.geom, xin, phase.sub, bias, out, 0, threads)


class CompiledPhases(Phases):
    """Phases for a compiled plan: each phase's algorithm chosen and its
    weights packed once (`packed`, from another executor of the same plan,
    shares them), its input window and the phase outputs in buffers allocated
    once; a call allocates nothing."""

    def __init__(self, x_shape, y_shape, w, groups, stride, padding, num_threads,
                 packed=None):
        super().__init__(x_shape, y_shape, w, groups, stride, padding, weights_packed=True)
        # each phase's engine keeps the kernels it packs for, whatever
        # fastcnn.set_max_isa binds later
        self.all_finite = _kernels._act.all_finite
        dtype = w.dtype
        self.engines = []
        self.packed = packed if packed is not None else []
        for phase in self.phases:
            engine = None if phase is None else safe_engine(phase.geom, None, phase.sub,
                                                            num_threads, weights_packed=True)
            self.engines.append(engine)
            if packed is None:
                self.packed.append(None if engine is None
                                   else engine.pack(phase.sub, num_threads))
        # every phase's input window, one after another (see _inputs)
        self.inputs = np.empty(sum(self._window_size(k, x_shape)
                                   for k, p in enumerate(self.phases) if p is not None), dtype)
        self.buffer = None if self.direct else np.empty(math.prod(y_shape), dtype)
        self.workspace = np.empty(self._workspace_size(num_threads), dtype)

    def _weights_buffer(self, size, dtype):
        """The phases' weights, kept: the plan runs them (or packs them) every call."""
        return np.empty(size, dtype)

    @property
    def weight_nbytes(self):
        return sum(p.nbytes for p in self.packed if p is not None)

    @property
    def nbytes(self):
        return (self.workspace.nbytes + (0 if self.buffer is None else self.buffer.nbytes)
                + self.inputs.nbytes)

    def _workspace_size(self, threads):
        """Elements for the phases one after another or one thread each."""
        return max([max(e.workspace_size(threads), threads * e.workspace_size(1))
                    for e in self.engines if e is not None], default=0)

    def _phase_buffer(self, y):
        return self.buffer

    def _input_buffer(self, size, dtype):
        return self.inputs

    def _conv(self, k, xin, out, bias, threads):
        phase, engine = self.phases[k], self.engines[k]
        if engine.algorithm == "winograd" and not self.all_finite(xin, threads):
            conv_run(phase.geom, xin, phase.sub, bias, out, 0, threads, "im2col")
            return
        engine.forward(xin, self.packed[k], bias, out, self._workspace(threads), 0, threads)

    def _conv_each(self, live, xins, outs, threads):
        if any(self.engines[k].algorithm == "winograd" and not self.all_finite(xin, threads)
               for k, xin in zip(live, xins)):
            for k, xin, out in zip(live, xins, outs):     # im2col where Winograd was
                self._conv(k, xin, out, None, threads)
            return
        ConvEngine.forward_each([self.engines[k] for k in live], xins,
                                [self.packed[k] for k in live], outs, self._workspace(threads),
                                threads)

    def _workspace(self, threads):
        if self.workspace.size < self._workspace_size(threads):
            self.workspace = np.empty(self._workspace_size(threads), self.workspace.dtype)
        return self.workspace


def _phase_taps(w, groups, phase, stride, buffer):
    """The convolution weights (out, in / groups, *taps) of one phase, in
    `buffer`, from the transposed convolution's (in, out / groups, *k): per
    axis the taps t0, t0 + s, ... in reverse order (a correlation with the
    flipped sub-kernel), gathered with the in/out swap in one threaded pass."""
    taps = _reversed_taps(phase, stride)
    flat = np.ravel_multi_index(np.ix_(*taps), w.shape[2:]).ravel()
    return _gather_weights(w, groups, flat, buffer).reshape(
        (groups * w.shape[1], w.shape[0] // groups) + tuple(len(t) for t in taps))


def _multiplies(geom, weights_packed):
    """Multiplies per output position and channel pair of a stride-1
    convolution on the forward engine: its taps, or Winograd's a^2 / 16."""
    if _kernels._conv.select(geom, weights_packed) == "winograd":
        return (geom.kernel_h + 3) ** 2 / 16
    return geom.kernel_h * geom.kernel_w


def _reversed_taps(phase, stride):
    return [np.arange(t0 + s * (count - 1), t0 - 1, -s)
            for (_, _, t0, count, _), s in zip(phase, stride)]


def _gather_weights(w, groups, flat, buffer):
    """(sets * out, in / groups, taps), in `buffer`: w's kernel taps at the
    flat indices `flat` ((sets, taps) or (taps,); -1: zero), in and out
    swapped, every set's filters after the last's (phase_weights)."""
    flat = np.ascontiguousarray(flat, np.int64)
    sets = 1 if flat.ndim == 1 else flat.shape[0]
    out = buffer.reshape(sets * w.shape[1] * groups, w.shape[0] // groups, flat.shape[-1])
    _kernels._linear.phase_weights(np.ascontiguousarray(w), groups, flat, out,
                                   _threads.get_num_threads())
    return out


def _by_columns(x, w, y, groups, stride, padding, dilation):
    """The transposed convolution as one GEMM per group over every image's
    columns (each input position's contribution at every tap), the weights
    as stored, then col2im."""
    n, nd = x.shape[0], x.ndim - 2
    spatial, kernel = x.shape[2:], w.shape[2:]
    cin, channels = x.shape[1], y.shape[1]
    taps = math.prod(kernel)
    positions = math.prod(spatial)
    # the full extent every tap reaches; the output is its window past the padding
    full = tuple(max((i - 1) * s + d * (k - 1) + 1, p + o)
                 for i, s, d, k, p, o in zip(spatial, stride, dilation, kernel, padding,
                                             y.shape[2:]))
    window = (slice(None), slice(None)) + tuple(slice(p, p + o) for p, o in
                                                  zip(padding, y.shape[2:]))
    in_place = full == y.shape[2:]          # nothing cropped: scatter into y itself
    threads = _threads.get_num_threads()
    chunk = max(1, _COLUMNS_LIMIT // max(1, positions * channels * taps))
    x, w = contiguous(x), contiguous(w)
    pad3 = (1,) * (3 - nd)
    size3, kernel3 = pad3 + tuple(spatial), pad3 + tuple(kernel)
    stride3, dilation3, full3 = pad3 + tuple(stride), pad3 + tuple(dilation), pad3 + full
    for start in range(0, n, chunk):
        xs = x[start:start + chunk]
        m = xs.shape[0]
        # the input channel-major, (in, images * positions): the GEMMs' right operand
        xc = scratch.get(0, cin * m * positions, x.dtype).reshape(cin, m, positions)
        _kernels._linear.channel_major(xs, xc, m, cin, positions, threads)
        cols = scratch.get(1, channels * taps * m * positions, x.dtype)
        _kernels._linear.transposed_columns(w, xc.reshape(cin, m * positions), cols, groups,
                                            threads)
        acc = (y[start:start + m] if in_place else
               scratch.get(2, m * channels * math.prod(full), x.dtype)
               .reshape((m, channels) + full))
        _kernels._linear.col2im(cols, acc, m, taps, size3, kernel3, stride3, dilation3, full3,
                                threads)
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

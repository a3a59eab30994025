"""Convolution: conv1d, conv2d, conv3d, and the engine every convolution runs
through (ConvEngine over ConvGeometry: eager calls, compiled plans, the
autotuner and the transposed convolutions; the C-API runs the same
dispatcher, _kernels._conv, from C)."""
import collections
import math
import threading

import numpy as np

from fastcnn import _threads
from fastcnn import _kernels
from fastcnn._graph import traceable
from fastcnn._validation import (activation_code, as_array, check_float, check_out,
                                 contiguous, conv_output_size, index_steps, ntuple, shape_str)

__all__ = ["conv1d", "conv2d", "conv3d", "conv_nd"]

_INT32_MAX = 2**31 - 1
_SPATIAL_NAMES = {1: "(L)", 2: "(H, W)", 3: "(D, H, W)"}


def conv_padding(padding, nd, kernel, stride, dilation, op):
    """Padding before and after each spatial axis, as PyTorch resolves it
    ('valid', 'same', an int or one int per axis), or per-axis
    (before, after) pairs for asymmetric padding."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0,) * nd, (0,) * nd
        if padding == "same":
            if any(s != 1 for s in stride):
                raise ValueError(f"{op}: padding='same' is not supported for strided "
                                 f"convolutions (stride={stride})")
            total = [d * (k - 1) for d, k in zip(dilation, kernel)]
            before = tuple(t // 2 for t in total)
            return before, tuple(t - b for t, b in zip(total, before))
        raise ValueError(f"{op}: padding must be 'valid', 'same', an int or a tuple of "
                         f"{nd} ints, got {padding!r}")
    if isinstance(padding, (list, tuple)) and len(padding) == nd and \
            all(isinstance(p, (list, tuple)) for p in padding):
        # per-axis (before, after) pairs: asymmetric padding, as ONNX pads
        pairs = [ntuple(p, 2, op, "padding pair", minimum=0) for p in padding]
        return tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)
    pads = ntuple(padding, nd, op, "padding", minimum=0)
    return pads, pads


_NP_PAD_MODES = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def pad_input(x, before, after, mode, op):
    """Explicit non-zero padding of the spatial axes (padding_mode of the conv layers),
    with PyTorch's limits on the padding size."""
    spatial = x.shape[x.ndim - len(before):]
    for size, b, a in zip(spatial, before, after):
        if mode == "reflect" and max(b, a) >= size:
            raise ValueError(f"{op}: reflect padding ({b}, {a}) must be smaller than the "
                             f"input size {size} on each side")
        if mode == "circular" and max(b, a) > size:
            raise ValueError(f"{op}: circular padding ({b}, {a}) must be at most the "
                             f"input size {size}")
    widths = [(0, 0)] * (x.ndim - len(before)) + list(zip(before, after))
    return np.pad(x, widths, mode=_NP_PAD_MODES[mode])


def conv_operands(nd, op, input, weight, groups, weight_layout):
    """The checks a convolution and a transposed one share: input and weight as
    float arrays of one dtype and the right ranks (the input batched), groups,
    and a weight without zero-size axes. Returns (x, w, unbatched, groups, kernel)."""
    x = as_array(input, op)
    w = as_array(weight, op, "weight")
    check_float(x, op)
    if w.dtype != x.dtype:
        raise TypeError(f"{op}: input dtype {x.dtype} does not match weight dtype {w.dtype}")
    names = _SPATIAL_NAMES[nd]
    if w.ndim != nd + 2:
        raise ValueError(f"{op}: weight must have shape {weight_layout}{names[1:-1]}), got "
                         f"shape {shape_str(w.shape)}")
    if x.ndim not in (nd + 1, nd + 2):
        raise ValueError(f"{op}: expected input of shape (C, {names[1:-1]}) or "
                         f"(N, C, {names[1:-1]}), got shape {shape_str(x.shape)}")
    unbatched = x.ndim == nd + 1
    if unbatched:
        x = x[None]
    groups = ntuple(groups, 1, op, "groups", minimum=1)[0]
    kernel = tuple(int(k) for k in w.shape[2:])
    if w.shape[0] == 0 or w.shape[1] == 0 or min(kernel) == 0:
        raise ValueError(f"{op}: weight has a zero-size dimension: {shape_str(w.shape)}")
    return x, w, unbatched, groups, kernel


def channel_bias(bias, channels, dtype, op):
    """A convolution's bias as a contiguous (channels,) array of the input's
    dtype, or None."""
    if bias is None:
        return None
    b = as_array(bias, op, "bias")
    if b.dtype != dtype:
        raise TypeError(f"{op}: bias dtype {b.dtype} does not match input dtype {dtype}")
    if b.shape != (channels,):
        raise ValueError(f"{op}: bias must have shape ({channels},), got {shape_str(b.shape)}")
    return contiguous(b)


@traceable("conv")
def conv_nd(nd, op, input, weight, bias, stride, padding, dilation, groups, out,
            activation, padding_mode="zeros", algorithm=None, residual=None):
    """The convolution behind conv1d/2d/3d, the Conv layers and ONNX Conv: nd
    spatial axes, `op` names the caller in errors; padding_mode, a forced
    algorithm and a residual added before the activation beyond PyTorch's."""
    return run_conv_nd(nd, op, input, weight, bias, stride, padding, dilation, groups, out,
                       activation, padding_mode, algorithm, residual)


def run_conv_nd(nd, op, input, weight, bias, stride, padding, dilation, groups, out,
                activation, padding_mode="zeros", algorithm=None, residual=None,
                packed_weights=None):
    """conv_nd, not traced, with packed_weights: a PackedWeights that keeps
    the weights packed between calls (an eval-mode layer's)."""
    x, w, unbatched, groups, kernel = conv_operands(
        nd, op, input, weight, groups, "(out_channels, in_channels/groups, ")
    out_channels, cin_group = w.shape[0], w.shape[1]
    if out_channels % groups:
        raise ValueError(f"{op}: out_channels ({out_channels}) must be divisible by "
                         f"groups ({groups})")
    in_channels = x.shape[1]
    if in_channels != cin_group * groups:
        raise ValueError(f"{op}: expected input with {cin_group * groups} channels (weight "
                         f"{shape_str(w.shape)}, groups={groups}), got input of shape "
                         f"{shape_str(x.shape if not unbatched else x.shape[1:])}")
    stride = ntuple(stride, nd, op, "stride", minimum=1)
    dilation = ntuple(dilation, nd, op, "dilation", minimum=1)
    before, after = conv_padding(padding, nd, kernel, stride, dilation, op)
    bias = channel_bias(bias, out_channels, x.dtype, op)
    act = activation_code(activation, op)

    if padding_mode != "zeros" and (any(before) or any(after)):
        x = pad_input(x, before, after, padding_mode, op)
        before = after = (0,) * nd
    spatial = x.shape[2:]
    out_spatial = tuple(conv_output_size(s, k, st, pb, pa, d) for s, k, st, pb, pa, d
                        in zip(spatial, kernel, stride, before, after, dilation))
    if 0 in spatial:
        raise ValueError(f"{op}: expected an input with non-zero spatial sizes, got shape "
                         f"{shape_str(x.shape if not unbatched else x.shape[1:])}")
    if min(out_spatial) <= 0:
        padded = tuple(s + pb + pa for s, pb, pa in zip(spatial, before, after))
        dilated = tuple(d * (k - 1) + 1 for d, k in zip(dilation, kernel))
        raise ValueError(f"{op}: kernel size {dilated} (after dilation) is larger than the "
                         f"padded input {padded} (input {shape_str(spatial)})")
    stride, dilation = index_steps(op, spatial, kernel, stride, before, after, dilation,
                                  out_spatial)
    k_total = cin_group * math.prod(kernel)
    positions = math.prod(out_spatial)
    if k_total > _INT32_MAX or positions > _INT32_MAX:
        raise ValueError(f"{op}: problem too large for 32-bit BLAS sizes "
                         f"(in_channels/groups * kernel = {k_total}, output positions = {positions})")

    out_shape = (x.shape[0], out_channels) + out_spatial
    w = contiguous(w)
    if out is None:
        y = np.empty(out_shape, x.dtype)
    else:
        y = check_out(out, out_shape[1:] if unbatched else out_shape, x.dtype, op, (x, w, bias))
        y = y.reshape(out_shape)
    if residual is not None:
        # added before the activation, in the same pass (what a plan fuses)
        r = as_array(residual, op, "residual")
        if unbatched and r.ndim == nd + 1:
            r = r[None]
        if r.shape != y.shape or r.dtype != x.dtype:
            raise ValueError(f"{op}: residual must have shape {shape_str(y.shape)} and dtype "
                             f"{x.dtype}, got {shape_str(r.shape)} and {r.dtype}")
        residual = contiguous(r)
        if np.shares_memory(residual, y):
            residual = residual.copy()
    if x.shape[0] == 0:
        return out if out is not None else (y[0] if unbatched else y)
    x = contiguous(x)

    geom = ConvGeometry.of(x.shape[0], in_channels, out_channels, groups, spatial,
                           out_spatial, kernel, stride, before, dilation)
    nthreads = _threads.get_num_threads()
    if packed_weights is not None and algorithm is None and hasattr(weight, "_version"):
        engine, weights = packed_weights.get(geom, weight, w, nthreads)
        if engine.algorithm == "winograd" and not _kernels._act.all_finite(x, nthreads):
            conv_run(geom, x, w, bias, y, act, nthreads, "im2col", residual)    # see ieee_safe
        else:
            ws_size = engine.workspace_size(nthreads)
            engine.forward(x, weights, bias, y,
                           scratch.get(1, ws_size, x.dtype) if ws_size else None, act,
                           nthreads, residual)
    else:
        conv_run(geom, x, w, bias, y, act, nthreads, algorithm, residual)
    if out is not None:
        return out
    return y[0] if unbatched else y


class ConvGeometry(collections.namedtuple(
        "ConvGeometry", "batch in_channels out_channels groups in_d in_h in_w out_d out_h out_w "
        "kernel_d kernel_h kernel_w stride_d stride_h stride_w pad_d pad_h pad_w "
        "dilation_d dilation_h dilation_w")):
    """A convolution as the kernels run it (_kernels._conv's ConvGeom, field
    for field): every convolution runs as 3-D, 1-D and 2-D with leading sizes
    of 1; padding before each axis only (the amount after follows from the
    output size)."""
    __slots__ = ()

    @classmethod
    def of(cls, batch, in_channels, out_channels, groups, spatial, out_spatial, kernel, stride,
           before, dilation):
        """From per-axis sizes of 1 to 3 spatial axes."""
        ones, zeros = (1,) * (3 - len(spatial)), (0,) * (3 - len(spatial))
        return cls(batch, in_channels, out_channels, groups, *ones, *spatial, *ones,
                   *out_spatial, *ones, *kernel, *ones, *stride, *zeros, *before, *ones,
                   *dilation)

    def out_spatial(self, nd):
        """The output's last nd sizes."""
        return (self.out_d, self.out_h, self.out_w)[3 - nd:]

    @property
    def positions(self):
        """Output positions per image and channel."""
        return self.out_d * self.out_h * self.out_w

    @property
    def taps(self):
        """Kernel taps per input channel."""
        return self.kernel_d * self.kernel_h * self.kernel_w

    @property
    def pointwise(self):
        """A 1x1 convolution over one group at stride 1 without padding (2-D)."""
        return (self.groups == 1 and self.kernel_h == self.kernel_w == 1
                and self.stride_h == self.stride_w == 1 and self.pad_h == self.pad_w == 0
                and (self.out_h, self.out_w) == (self.in_h, self.in_w))

    @property
    def depthwise(self):
        """One input and one output channel per group, more than one group."""
        return self.in_channels == self.out_channels == self.groups > 1


def layer_geometry(op, nd, x_shape, w_shape, arguments):
    """A recorded convolution's kernel geometry from its bound arguments
    (stride, padding, dilation, groups: the functional ops' or ONNX's forms)
    and its batched input and weight shapes, as conv_nd resolves them."""
    kernel = tuple(w_shape[2:])
    stride = ntuple(arguments.get("stride", 1), nd, op, "stride")
    dilation = ntuple(arguments.get("dilation", 1), nd, op, "dilation")
    before, after = conv_padding(arguments.get("padding", 0), nd, kernel, stride, dilation,
                                 "conv")
    out_sp = tuple(conv_output_size(s, k, st, pb, pa, d) for s, k, st, pb, pa, d
                   in zip(x_shape[2:], kernel, stride, before, after, dilation))
    stride, dilation = index_steps(op, x_shape[2:], kernel, stride, before, after, dilation,
                                   out_sp)
    return ConvGeometry.of(x_shape[0], x_shape[1], w_shape[0], arguments.get("groups", 1),
                           x_shape[2:], out_sp, kernel, stride, before, dilation)


def ieee_safe(algorithm, x, w, nthreads):
    """The algorithm to run instead when non-finite values would not pass
    through it as IEEE arithmetic does: Winograd mixes each tile's inputs, so
    a NaN or Inf would spread over its whole tile; the direct kernel skips the
    taps that fall on padding, so a NaN or Inf weight would not meet the
    padding's zeros (0 * Inf = NaN). im2col computes the definition's products."""
    if algorithm == "winograd" and x is not None and not _kernels._act.all_finite(x, nthreads):
        return "im2col"
    if algorithm == "direct" and not _kernels._act.all_finite(w, nthreads):
        return "im2col"
    return algorithm


class _Scratch(threading.local):
    """Each Python thread's packed-weight and workspace buffers, reused from
    call to call: fresh multi-megabyte arrays page-fault on every touch."""
    LIMIT = 256 * 2**20             # larger needs are allocated per call

    def __init__(self):
        # 0: packed weights, 1: workspace (conv_run); a transposed
        # convolution's phase outputs (2), weights (3) and input windows (4)
        self.buffers = [np.empty(0, np.uint8) for _ in range(5)]

    def get(self, slot, size, dtype):
        nbytes = size * np.dtype(dtype).itemsize
        if nbytes > self.LIMIT:
            return np.empty(size, dtype)
        if self.buffers[slot].nbytes < nbytes:
            self.buffers[slot] = np.empty(nbytes, np.uint8)
        return self.buffers[slot][:nbytes].view(dtype)


scratch = _Scratch()


class ConvEngine:
    """One convolution as the kernels run it: its geometry, the algorithm
    chosen for it (the dispatcher's cost model unless given), that
    algorithm's workspace and packed-weight sizes, and the kernels of the
    instruction-set target bound when it was made (packed weights are laid
    out for their vector width, so an engine keeps them whatever
    fastcnn.set_max_isa binds later)."""
    __slots__ = ("geometry", "algorithm", "workspace_shared", "workspace_per_thread",
                 "packed_size", "_kernels")

    def __init__(self, geometry, dtype, algorithm=None, weights_packed=False):
        self._kernels = _kernels._conv
        self.geometry = geometry
        self.algorithm = algorithm or self._kernels.select(geometry, weights_packed)
        (self.workspace_shared, self.workspace_per_thread, _,
         self.packed_size) = self._kernels.plan(geometry, self.algorithm,
                                                np.dtype(dtype).itemsize)

    def workspace_size(self, num_threads):
        """Workspace elements for num_threads threads."""
        return self.workspace_shared + self.workspace_per_thread * num_threads

    def pack(self, w, num_threads, out=None):
        """The (out, in / groups, *kernel) weights w as the algorithm reads
        them: w itself where it packs none, else written into `out` (packed_size
        elements; a new array when None)."""
        if not self.packed_size:
            return w
        packed = np.empty(self.packed_size, w.dtype) if out is None else out
        self._kernels.pack(self.geometry, self.algorithm, w, packed, num_threads)
        return packed

    def forward(self, x, weights, bias, y, workspace, activation, num_threads, residual=None):
        """y = act(conv(x) + bias + residual), weights as pack() returned them,
        workspace at least workspace_size(num_threads) elements (None when 0)."""
        self._kernels.forward(self.geometry, self.algorithm, x, weights, bias, y, workspace,
                              activation, num_threads, residual)

    @staticmethod
    def forward_each(engines, xs, weights, ys, workspace, num_threads):
        """Independent convolutions (no bias, residual or activation) of one
        dtype and one set of kernels, each on one thread, num_threads at a
        time (for ones too small to split over threads, such as a transposed
        convolution's phases); workspace: num_threads slices of the largest
        workspace_size(1)."""
        engines[0]._kernels.forward_each([e.geometry for e in engines],
                                         [e.algorithm for e in engines], xs, weights, ys,
                                         workspace, num_threads)


def safe_engine(geom, x, w, nthreads, weights_packed=False):
    """The engine of the algorithm the dispatcher picks, or of im2col where
    non-finite values in x (None: not known yet) or w would not pass through
    it as IEEE arithmetic does (ieee_safe)."""
    return ConvEngine(geom, w.dtype,
                      ieee_safe(_kernels._conv.select(geom, weights_packed), x, w, nthreads))


class PackedWeights:
    """A layer's weights packed for the kernels, kept from call to call (an
    eval-mode Conv layer's), as a compiled plan keeps its own: packed for the
    algorithm that pays with packed weights, again whenever the geometry, the
    weight Parameter (another object, or the same one written: its _version),
    its dtype or the bound instruction-set target changes. Holds one packing
    at a time; copies and pickles of it start empty."""
    __slots__ = ("_entry",)

    def __init__(self):
        self._entry = None      # (key, weight Parameter, its version, engine, packed)

    def clear(self):
        self._entry = None

    def get(self, geom, weight, w, nthreads):
        """(engine, packed weights) for geom and the Parameter `weight`
        (w: its values as the kernels read them; anything with a _version)."""
        key = (geom, w.dtype, _kernels.isa)
        entry = self._entry     # one read: another Python thread may replace it
        if (entry is None or entry[0] != key or entry[1] is not weight
                or entry[2] != weight._version):
            engine = safe_engine(geom, None, w, nthreads, weights_packed=True)
            entry = (key, weight, weight._version, engine, engine.pack(w, nthreads, None))
            self._entry = entry
        return entry[3], entry[4]

    def __deepcopy__(self, memo):
        return PackedWeights()

    def __reduce__(self):
        return PackedWeights, ()


def conv_run(geom, x, w, bias, y, act, nthreads, algorithm=None, residual=None):
    """Run one validated convolution with this thread's scratch buffers: pick
    the algorithm (unless forced), pack the weights if it needs them, run."""
    engine = (safe_engine(geom, x, w, nthreads) if algorithm is None
              else ConvEngine(geom, x.dtype, algorithm))
    weights = engine.pack(w, nthreads, scratch.get(0, engine.packed_size, x.dtype))
    ws_size = engine.workspace_size(nthreads)
    engine.forward(x, weights, bias, y, scratch.get(1, ws_size, x.dtype) if ws_size else None,
                   act, nthreads, residual)


@traceable("conv1d")
def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           out=None, activation=None):
    """1-D convolution over (N, C, L) or (C, L), as torch.nn.functional.conv1d."""
    return conv_nd(1, "conv1d", input, weight, bias, stride, padding, dilation, groups,
                   out, activation)


@traceable("conv2d")
def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           out=None, activation=None):
    """2-D convolution over (N, C, H, W) or (C, H, W), as torch.nn.functional.conv2d.

    padding: int, tuple, 'valid' or 'same' (asymmetric for even kernels, as
    PyTorch). activation: optional 'relu', 'relu6' or 'silu' fused into the
    kernel's epilogue. out: a C-contiguous array of the output's shape and dtype.
    """
    return conv_nd(2, "conv2d", input, weight, bias, stride, padding, dilation, groups,
                   out, activation)


@traceable("conv3d")
def conv3d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *,
           out=None, activation=None):
    """3-D convolution over (N, C, D, H, W) or (C, D, H, W), as torch.nn.functional.conv3d."""
    return conv_nd(3, "conv3d", input, weight, bias, stride, padding, dilation, groups,
                   out, activation)


_conv = conv_nd     # the name the tests written before conv_nd use

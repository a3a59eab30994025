"""Conv1d/2d/3d and ConvTranspose1d/2d/3d: torch.nn's constructor arguments and
state_dict keys."""
import math

import numpy as np

from fastcnn import _graph
from fastcnn._functional import conv as F
from fastcnn._functional import conv_transpose as T
from fastcnn._validation import ntuple
from fastcnn.nn import init
from fastcnn.nn.module import Module, Parameter

__all__ = ["Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d",
           "ConvTranspose3d"]

_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def _check_arguments(name, in_channels, out_channels, groups, device, dtype):
    """The constructor checks every convolution layer makes; returns the dtype."""
    for arg, value in (("in_channels", in_channels), ("out_channels", out_channels),
                       ("groups", groups)):
        ntuple(value, 1, name, arg, minimum=1)
    for arg, value in (("in_channels", in_channels), ("out_channels", out_channels)):
        if value % groups:
            raise ValueError(f"{name}: {arg} ({value}) must be divisible by groups ({groups})")
    if device not in (None, "cpu"):
        raise ValueError(f"{name}: fastcnn runs on the CPU only, got device={device!r}")
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"{name}: dtype must be float32 or float64, got {dtype}")
    return dtype


def _make_parameters(layer, weight_shape, out_channels, bias, dtype):
    """A convolution layer's weight and (optional) bias, initialized as PyTorch's."""
    layer.weight = Parameter(np.empty(weight_shape, dtype))
    if bias:
        layer.bias = Parameter(np.empty(out_channels, dtype))
    else:
        layer.register_parameter("bias", None)
    layer.reset_parameters()


def _describe(layer):
    """The arguments a convolution layer's repr shows, in PyTorch's order."""
    nd = layer._nd
    s = (f"{layer.in_channels}, {layer.out_channels}, kernel_size={layer.kernel_size}, "
         f"stride={layer.stride}")
    if layer.padding != (0,) * nd:
        padding = layer.padding
        s += f", padding={padding if not isinstance(padding, str) else repr(padding)}"
    if getattr(layer, "output_padding", (0,) * nd) != (0,) * nd:
        s += f", output_padding={layer.output_padding}"
    if layer.dilation != (1,) * nd:
        s += f", dilation={layer.dilation}"
    if layer.groups != 1:
        s += f", groups={layer.groups}"
    if layer.bias is None:
        s += ", bias=False"
    if layer.padding_mode != "zeros":
        s += f", padding_mode={layer.padding_mode}"
    if getattr(layer, "activation", None) is not None:
        s += f", activation={layer.activation}"
    return s


class _ConvNd(Module):
    _nd = 0

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True, padding_mode="zeros", device=None,
                 dtype=np.float32):
        super().__init__()
        name = type(self).__name__
        nd = self._nd
        dtype = _check_arguments(name, in_channels, out_channels, groups, device, dtype)
        if padding_mode not in _PADDING_MODES:
            raise ValueError(f"{name}: padding_mode must be one of {_PADDING_MODES}, "
                             f"got {padding_mode!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = ntuple(kernel_size, nd, name, "kernel_size", minimum=1)
        self.stride = ntuple(stride, nd, name, "stride", minimum=1)
        self.dilation = ntuple(dilation, nd, name, "dilation", minimum=1)
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"{name}: padding must be 'valid', 'same' or ints, got {padding!r}")
            if padding == "same" and any(s != 1 for s in self.stride):
                raise ValueError(f"{name}: padding='same' is not supported for strided "
                                 f"convolutions (stride={self.stride})")
            self.padding = padding
        else:
            self.padding = ntuple(padding, nd, name, "padding", minimum=0)
        self.groups = groups
        self.padding_mode = padding_mode
        # Set by fastcnn.fuse(): an activation applied in the conv's epilogue.
        self.activation = None
        _make_parameters(self, (out_channels, in_channels // groups) + self.kernel_size,
                         out_channels, bias, dtype)
        # Eval mode keeps the weights packed for the kernels between calls (see
        # PackedWeights: repacked when the weight is replaced or written;
        # dropped by train() and eval()). Training mode packs per call.
        object.__setattr__(self, "_packed_weights", F.PackedWeights())

    def reset_parameters(self):
        # PyTorch's default: kaiming_uniform with a = sqrt(5), i.e. U(-1/sqrt(fan_in), +).
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.shape[1] * int(np.prod(self.kernel_size))
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            init.uniform_(self.bias, -bound, bound)

    def forward(self, input):
        args = (self._nd, type(self).__name__, input, self.weight, self.bias, self.stride,
                self.padding, self.dilation, self.groups, None, self.activation,
                self.padding_mode)
        if self.training or _graph.tracing():
            return F.conv_nd(*args)
        return F.run_conv_nd(*args, packed_weights=self._packing())

    def _packing(self):
        packed = self.__dict__.get("_packed_weights")
        if packed is None:      # a layer pickled by a fastcnn that kept none
            packed = F.PackedWeights()
            object.__setattr__(self, "_packed_weights", packed)
        return packed

    def _state_changed(self):
        self._packing().clear()

    def extra_repr(self):
        return _describe(self)


class Conv1d(_ConvNd):
    """1-D convolution over (N, C, L) inputs, as torch.nn.Conv1d."""
    _nd = 1


class Conv2d(_ConvNd):
    """2-D convolution over (N, C, H, W) inputs, as torch.nn.Conv2d."""
    _nd = 2


class Conv3d(_ConvNd):
    """3-D convolution over (N, C, D, H, W) inputs, as torch.nn.Conv3d."""
    _nd = 3


class _ConvTransposeNd(Module):
    _nd = 0

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, groups=1, bias=True, dilation=1, padding_mode="zeros",
                 device=None, dtype=np.float32):
        super().__init__()
        name = type(self).__name__
        nd = self._nd
        dtype = _check_arguments(name, in_channels, out_channels, groups, device, dtype)
        if padding_mode != "zeros":
            raise ValueError(f"{name}: only 'zeros' padding mode is supported, got "
                             f"{padding_mode!r} (as PyTorch)")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = ntuple(kernel_size, nd, name, "kernel_size", minimum=1)
        self.stride = ntuple(stride, nd, name, "stride", minimum=1)
        self.padding = ntuple(padding, nd, name, "padding", minimum=0)
        self.output_padding = ntuple(output_padding, nd, name, "output_padding", minimum=0)
        self.dilation = ntuple(dilation, nd, name, "dilation", minimum=1)
        self.padding_mode = padding_mode
        _make_parameters(self, (in_channels, out_channels // groups) + self.kernel_size,
                         out_channels, bias, dtype)

    reset_parameters = _ConvNd.reset_parameters        # fan_in from weight.shape[1], as PyTorch

    def _output_padding(self, input, output_size):
        """output_padding that gives output_size (PyTorch's forward(input, output_size))."""
        if output_size is None:
            return self.output_padding
        nd, name = self._nd, type(self).__name__
        size = list(output_size)
        if len(size) == nd + 2:
            size = size[2:]
        if len(size) != nd:
            raise ValueError(f"{name}: output_size must have {nd} or {nd + 2} elements, got "
                             f"{len(output_size)}")
        spatial = np.shape(input)[-nd:]
        padding = []
        for i, (want, n, k, s, p, d) in enumerate(zip(size, spatial, self.kernel_size,
                                                      self.stride, self.padding,
                                                      self.dilation)):
            low = T.conv_transpose_output_size(n, k, s, p, 0, d)
            if not low <= want <= low + s - 1:
                raise ValueError(f"{name}: requested an output size of {tuple(size)}, but "
                                 f"valid sizes along axis {i} range from {low} to "
                                 f"{low + s - 1} (for an input of {tuple(spatial)})")
            padding.append(want - low)
        return tuple(padding)

    def forward(self, input, output_size=None):
        return T.conv_transpose_nd(self._nd, type(self).__name__, input, self.weight,
                                   self.bias, self.stride, self.padding,
                                   self._output_padding(input, output_size), self.groups,
                                   self.dilation)

    def extra_repr(self):
        return _describe(self)


class ConvTranspose1d(_ConvTransposeNd):
    """1-D transposed convolution over (N, C, L) inputs, as torch.nn.ConvTranspose1d."""
    _nd = 1


class ConvTranspose2d(_ConvTransposeNd):
    """2-D transposed convolution over (N, C, H, W) inputs, as torch.nn.ConvTranspose2d."""
    _nd = 2


class ConvTranspose3d(_ConvTransposeNd):
    """3-D transposed convolution over (N, C, D, H, W) inputs, as torch.nn.ConvTranspose3d."""
    _nd = 3

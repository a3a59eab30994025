"""Normalization layers, as torch.nn: BatchNorm1d/2d/3d, InstanceNorm1d/2d/3d,
GroupNorm, LayerNorm, LocalResponseNorm. Buffers and state_dict keys as PyTorch
(running_mean, running_var, num_batches_tracked)."""
import numbers

import numpy as np

from fastcnn._functional import norm as F
from fastcnn._validation import shape_str
from fastcnn.nn.module import Module, Parameter

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "InstanceNorm1d", "InstanceNorm2d",
           "InstanceNorm3d", "GroupNorm", "LayerNorm", "LocalResponseNorm"]


def _float_dtype(dtype, name):
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"{name}: dtype must be float32 or float64, got {dtype}")
    return dtype


def _affine_parameters(module, size, affine, bias, dtype):
    """weight (ones) and bias (zeros) when affine; bias=False (PyTorch's keyword)
    keeps the weight alone."""
    module.register_parameter("weight", np.ones(size, dtype) if affine else None)
    module.register_parameter("bias", np.zeros(size, dtype) if affine and bias else None)


class _NormBase(Module):
    """Shared by batch and instance norm: affine parameters and running statistics."""

    def __init__(self, num_features, eps, momentum, affine, track_running_stats, dtype, bias):
        super().__init__()
        name = type(self).__name__
        if not isinstance(num_features, numbers.Integral) or num_features < 1:
            raise ValueError(f"{name}: num_features must be a positive int, got {num_features!r}")
        dtype = _float_dtype(dtype, name)
        self.num_features = int(num_features)
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        # Set by fastcnn.fuse() where no conv precedes: applied in the same pass.
        self.activation = None
        _affine_parameters(self, num_features, affine, bias, dtype)
        if track_running_stats:
            self.register_buffer("running_mean", np.zeros(num_features, dtype))
            self.register_buffer("running_var", np.ones(num_features, dtype))
            self.register_buffer("num_batches_tracked", np.array(0, np.int64))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def reset_running_stats(self):
        if self.track_running_stats:
            self.running_mean[...] = 0
            self.running_var[...] = 1
            self.num_batches_tracked[...] = 0

    def reset_parameters(self):
        self.reset_running_stats()
        if self.weight is not None:
            self.weight[...] = 1
        if self.bias is not None:
            self.bias[...] = 0

    def _check_input(self, x):
        x = np.asarray(x) if not isinstance(x, np.ndarray) else x
        if x.ndim not in self._dims:
            raise ValueError(f"{type(self).__name__}: expected {' or '.join(f'{d}D' for d in self._dims)} "
                             f"input (got {x.ndim}D input of shape {shape_str(x.shape)})")
        channel_dim = 1 if x.ndim == max(self._dims) or type(self)._batched_only else 0
        if x.shape[channel_dim] != self.num_features:
            raise ValueError(f"{type(self).__name__}: expected input with {self.num_features} "
                             f"channels (num_features), got input of shape {shape_str(x.shape)}")
        return x

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}")


class _BatchNorm(_NormBase):
    _dims = ()
    _batched_only = True

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, device=None, dtype=np.float32, *,
                 bias=True):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, dtype,
                         bias)

    def forward(self, input):
        x = self._check_input(input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked += 1
            if self.momentum is None:       # cumulative moving average
                factor = 1.0 / float(self.num_batches_tracked)
        use_batch_stats = self.training or self.running_mean is None
        track = not self.training or self.track_running_stats
        try:
            return F.batch_norm(x, self.running_mean if track else None,
                                self.running_var if track else None, self.weight, self.bias,
                                use_batch_stats, factor, self.eps, activation=self.activation)
        except ValueError as exc:
            raise ValueError(str(exc).replace("batch_norm:", f"{type(self).__name__}:", 1)) from None


class BatchNorm1d(_BatchNorm):
    """Over (N, C) or (N, C, L)."""
    _dims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Over (N, C, H, W)."""
    _dims = (4,)


class BatchNorm3d(_BatchNorm):
    """Over (N, C, D, H, W)."""
    _dims = (5,)


class _InstanceNorm(_NormBase):
    _dims = ()
    _batched_only = False

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=False,
                 track_running_stats=False, device=None, dtype=np.float32, *,
                 bias=True):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, dtype,
                         bias)

    def forward(self, input):
        x = self._check_input(input)
        unbatched = x.ndim == min(self._dims)
        if unbatched:
            x = x[None]
        y = F.instance_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            self.training or not self.track_running_stats,
                            0.1 if self.momentum is None else self.momentum, self.eps,
                            activation=self.activation)
        return y[0] if unbatched else y


class InstanceNorm1d(_InstanceNorm):
    """Over (N, C, L) or (C, L)."""
    _dims = (2, 3)


class InstanceNorm2d(_InstanceNorm):
    """Over (N, C, H, W) or (C, H, W)."""
    _dims = (3, 4)


class InstanceNorm3d(_InstanceNorm):
    """Over (N, C, D, H, W) or (C, D, H, W)."""
    _dims = (4, 5)


class GroupNorm(Module):
    """Per sample, normalize each of num_groups channel groups; affine per channel."""

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, device=None,
                 dtype=np.float32, *, bias=True):
        super().__init__()
        for name, value in (("num_groups", num_groups), ("num_channels", num_channels)):
            if not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"GroupNorm: {name} must be a positive int, got {value!r}")
        if num_channels % num_groups:
            raise ValueError(f"GroupNorm: num_channels ({num_channels}) must be divisible by "
                             f"num_groups ({num_groups})")
        dtype = _float_dtype(dtype, "GroupNorm")
        self.num_groups = int(num_groups)
        self.num_channels = int(num_channels)
        self.eps = eps
        self.affine = affine
        self.activation = None
        _affine_parameters(self, num_channels, affine, bias, dtype)

    def forward(self, input):
        x = input if isinstance(input, np.ndarray) else np.asarray(input)
        if x.ndim < 2 or x.shape[1] != self.num_channels:
            raise ValueError(f"GroupNorm: expected input of shape (N, {self.num_channels}, ...), "
                             f"got {shape_str(x.shape)}")
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps,
                            activation=self.activation)

    def extra_repr(self):
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"


class LayerNorm(Module):
    """Normalize over the trailing normalized_shape dims; element-wise affine."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True,
                 device=None, dtype=np.float32):
        super().__init__()
        if isinstance(normalized_shape, numbers.Integral):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = tuple(int(s) for s in normalized_shape)
        if not self.normalized_shape or any(s < 1 for s in self.normalized_shape):
            raise ValueError(f"LayerNorm: normalized_shape must be positive sizes, got "
                             f"{normalized_shape!r}")
        dtype = _float_dtype(dtype, "LayerNorm")
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        self.activation = None
        if elementwise_affine:
            self.weight = Parameter(np.ones(self.normalized_shape, dtype))
            if bias:
                self.bias = Parameter(np.zeros(self.normalized_shape, dtype))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def forward(self, input):
        try:
            return F.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps,
                                activation=self.activation)
        except ValueError as exc:
            raise ValueError(str(exc).replace("layer_norm:", "LayerNorm:", 1)) from None

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}")


class LocalResponseNorm(Module):
    def __init__(self, size, alpha=1e-4, beta=0.75, k=1.0):
        super().__init__()
        self.size = size
        self.alpha = alpha
        self.beta = beta
        self.k = k

    def forward(self, input):
        return F.local_response_norm(input, self.size, self.alpha, self.beta, self.k)

    def extra_repr(self):
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"

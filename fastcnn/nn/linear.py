"""Linear, Flatten, Unflatten and the Dropout layers, as torch.nn."""
import math

import numpy as np

from fastcnn._functional import dropout as D
from fastcnn._functional import linear as L
from fastcnn._functional import shape as S
from fastcnn._validation import ntuple
from fastcnn.nn import init
from fastcnn.nn.module import Module, Parameter

__all__ = ["Linear", "Flatten", "Unflatten", "Dropout", "Dropout1d", "Dropout2d", "Dropout3d"]


class Linear(Module):
    """y = x @ weight.T + bias over (..., in_features)."""

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=np.float32):
        super().__init__()
        ntuple(in_features, 1, "Linear", "in_features", minimum=0)
        ntuple(out_features, 1, "Linear", "out_features", minimum=0)
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise TypeError(f"Linear: dtype must be float32 or float64, got {dtype}")
        self.in_features = in_features
        self.out_features = out_features
        # Set by fastcnn.fuse(): an activation applied in the GEMM's epilogue.
        self.activation = None
        self.weight = Parameter(np.empty((out_features, in_features), dtype))
        if bias:
            self.bias = Parameter(np.empty(out_features, dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features) if self.in_features > 0 else 0
            init.uniform_(self.bias, -bound, bound)

    def forward(self, input):
        try:
            return L.linear(input, self.weight, self.bias, activation=self.activation)
        except ValueError as exc:
            raise ValueError(str(exc).replace("linear:", "Linear:", 1)) from None

    def extra_repr(self):
        s = f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
        if self.activation is not None:
            s += f", activation={self.activation}"
        return s


class Flatten(Module):
    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim = start_dim
        self.end_dim = end_dim

    def forward(self, input):
        return S.flatten(input, self.start_dim, self.end_dim)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Unflatten(Module):
    def __init__(self, dim, unflattened_size):
        super().__init__()
        self.dim = dim
        self.unflattened_size = tuple(unflattened_size)

    def forward(self, input):
        return S.unflatten(input, self.dim, self.unflattened_size)

    def extra_repr(self):
        return f"dim={self.dim}, unflattened_size={self.unflattened_size}"


class _DropoutNd(Module):
    _fn = None

    def __init__(self, p=0.5, inplace=False):
        super().__init__()
        D._check_p(p, type(self).__name__)
        self.p = p
        self.inplace = inplace
        # None: draw from fastcnn's default generator (seeded by fastcnn.manual_seed)
        self.generator = None

    def forward(self, input):
        return type(self)._fn(input, self.p, self.training, self.inplace,
                              generator=self.generator)

    def extra_repr(self):
        return f"p={self.p}, inplace={self.inplace}"


class Dropout(_DropoutNd):
    """Identity in eval mode; in training zero elements with probability p."""
    _fn = staticmethod(D.dropout)


class Dropout1d(_DropoutNd):
    _fn = staticmethod(D.dropout1d)


class Dropout2d(_DropoutNd):
    """Zero whole channels with probability p (training only)."""
    _fn = staticmethod(D.dropout2d)


class Dropout3d(_DropoutNd):
    _fn = staticmethod(D.dropout3d)

"""Twins of torch.nn.functional on NumPy arrays.

Same names, argument order, defaults and results as PyTorch. Each op
validates and normalises its arguments, allocates or checks `out`, and makes
one call into a compiled kernel that runs with the GIL released. fastcnn
additions are keyword-only: `out=` on every op, and `activation=` ('relu',
'relu6', 'silu') on ops that fuse one into their epilogue.
"""
from fastcnn._functional.conv import conv1d, conv2d, conv3d
from fastcnn._functional.conv_transpose import (conv_transpose1d, conv_transpose2d,
                                                conv_transpose3d)
from fastcnn._functional.pool import (
    max_pool1d, max_pool2d, max_pool3d, avg_pool1d, avg_pool2d, avg_pool3d, lp_pool1d,
    lp_pool2d, adaptive_avg_pool1d, adaptive_avg_pool2d, adaptive_avg_pool3d,
    adaptive_max_pool1d, adaptive_max_pool2d, adaptive_max_pool3d)
from fastcnn._functional.activation import (
    relu, relu_, relu6, leaky_relu, leaky_relu_, elu, elu_, selu, celu, hardtanh, hardtanh_,
    sigmoid, tanh, silu, hardswish, hardsigmoid, gelu, mish, softplus, prelu, softmax,
    log_softmax, softmin)
from fastcnn._functional.linear import linear
from fastcnn._functional.resize import interpolate
from fastcnn._functional.padding import pad, pixel_shuffle, pixel_unshuffle
from fastcnn._functional.shape import flatten, unflatten
from fastcnn._functional.dropout import dropout, dropout1d, dropout2d, dropout3d
from fastcnn._functional.norm import (batch_norm, instance_norm, group_norm, layer_norm,
                                      local_response_norm)
from fastcnn._functional.loss import (
    loss_reduction, cross_entropy, cross_entropy_grad, nll_loss, nll_loss_grad, mse_loss,
    mse_loss_grad, binary_cross_entropy_with_logits, binary_cross_entropy_with_logits_grad)

__all__ = [
    "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
    "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
    "lp_pool1d", "lp_pool2d", "adaptive_avg_pool1d", "adaptive_avg_pool2d",
    "adaptive_avg_pool3d", "adaptive_max_pool1d", "adaptive_max_pool2d", "adaptive_max_pool3d",
    "relu", "relu_", "relu6", "leaky_relu", "leaky_relu_", "elu", "elu_", "selu", "celu",
    "hardtanh", "hardtanh_", "sigmoid", "tanh", "silu", "hardswish", "hardsigmoid", "gelu",
    "mish", "softplus", "prelu", "softmax", "log_softmax", "softmin",
    "linear", "interpolate", "pad", "pixel_shuffle", "pixel_unshuffle", "flatten", "unflatten", "dropout", "dropout1d", "dropout2d", "dropout3d",
    "batch_norm", "instance_norm", "group_norm", "layer_norm", "local_response_norm",
    "cross_entropy", "cross_entropy_grad", "nll_loss", "nll_loss_grad", "mse_loss",
    "mse_loss_grad", "binary_cross_entropy_with_logits", "binary_cross_entropy_with_logits_grad",
]

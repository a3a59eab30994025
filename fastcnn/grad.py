"""Backward functions on NumPy arrays, for callers who run their own
backward pass (torch.nn.grad's role, and more): each returns the gradient of
a forward op with respect to its inputs and parameters, from the output
gradient and what the forward saw. Module.backward() uses the same functions.
"""
from fastcnn._functional.conv_grad import (
    conv1d_input, conv2d_input, conv3d_input, conv1d_weight, conv2d_weight, conv3d_weight,
    conv_input_grad, conv_weight_grad, conv_bias_grad)
from fastcnn._functional.activation_grad import activation_grad, softmax_grad, linear_grad
from fastcnn._functional.pool_grad import (max_pool_grad, max_pool_grad_from_output,
                                           avg_pool_grad, adaptive_avg_pool_grad)
from fastcnn._functional.norm_grad import (batch_norm_grad, group_norm_grad, layer_norm_grad,
                                           instance_norm_grad)

__all__ = ["conv1d_input", "conv2d_input", "conv3d_input", "conv1d_weight", "conv2d_weight",
           "conv3d_weight", "conv_input_grad", "conv_weight_grad", "conv_bias_grad",
           "activation_grad", "softmax_grad", "linear_grad", "max_pool_grad",
           "max_pool_grad_from_output", "avg_pool_grad",
           "adaptive_avg_pool_grad", "batch_norm_grad", "group_norm_grad", "layer_norm_grad",
           "instance_norm_grad"]
